//! The CPU engine against the committed PyTorch fixtures (see tests/common).

mod common;

use nopescope::model::cpu::CpuEngine;

#[test]
fn nope_matches_pytorch() {
    common::check_engine_against_fixture("tiny-nope", |c, p| CpuEngine::new(c, p).unwrap());
}

#[test]
fn rope_matches_pytorch() {
    common::check_engine_against_fixture("tiny-rope", |c, p| CpuEngine::new(c, p).unwrap());
}
