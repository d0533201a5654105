//! The temperature search (`lab::search`) on the tiny fixture model: a
//! short per-head search lowers its objective and keeps every s >= 1; the
//! same 3-step search gives the same scales on the CPU and the GPU engine
//! (lavapipe here); cancelling returns what was done; bad settings are
//! errors naming the setting. CI runs this file (`cargo test --release`).

use nopescope::gpu::{GpuContext, GpuEngine};
use nopescope::lab::search::{
    self, head_search, objective, uniform_search, HeadSearchConfig, Quiet, SearchData, SearchProgress, SearchStep,
};
use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::CpuEngine;
use nopescope::model::files::load_model_dir;
use nopescope::model::head_scales::{HeadScales, ScaleRule};
use nopescope::model::rng::Rng;
use nopescope::model::Engine;
use pollster::block_on;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-nope");

/// The tiny model (L = 37) and a "text" of random tokens to search on.
fn tiny() -> (CpuEngine, Vec<u32>) {
    let m = load_model_dir(std::path::Path::new(TINY)).unwrap();
    let mut rng = Rng::new(9);
    let text = (0..4000).map(|_| rng.below(m.config.vocab_size) as u32).collect();
    (CpuEngine::new(m.config, m.params).unwrap(), text)
}

fn recipe(steps: usize) -> HeadSearchConfig {
    HeadSearchConfig {
        steps,
        batch: 4,
        ..HeadSearchConfig::default()
    }
}

#[test]
fn a_short_search_lowers_the_objective_and_keeps_scales_at_least_one() {
    let (mut cpu, text) = tiny();
    // Twice the training length, on one fixed batch for before/after.
    let data = SearchData::text(74, &text, None).unwrap();
    let check = data.batch(8, 12345).unwrap();
    let ones = HeadScales::ones(cpu.config());
    let before = block_on(objective(&mut cpu, &check, &ones)).unwrap();
    let r = block_on(head_search(&mut cpu, &data, &recipe(10), &mut Quiet)).unwrap();
    assert_eq!(r.steps_run, 10);
    assert!(!r.cancelled);
    assert!(r.scales.values.iter().all(|&s| s >= 1.0), "{:?}", r.scales.values);
    assert!(
        r.scales.values.iter().any(|&s| s > 1.0),
        "nothing moved: {:?}",
        r.scales.values
    );
    let after = block_on(objective(&mut cpu, &check, &r.scales)).unwrap();
    eprintln!(
        "objective on a held batch: {before:.5} -> {after:.5}; scales {:?}",
        r.scales.values
    );
    assert!(after < before, "{before} -> {after}");
}

#[test]
fn three_steps_give_the_same_scales_on_both_engines() {
    let ctx = GpuContext::new_default().unwrap_or_else(|e| panic!("this test needs a GPU adapter (lavapipe): {e}"));
    let (mut cpu, text) = tiny();
    let m = load_model_dir(std::path::Path::new(TINY)).unwrap();
    let mut gpu = block_on(GpuEngine::new(ctx, m.config, m.params)).unwrap();
    let data = SearchData::text(60, &text, None).unwrap();
    for rule in [ScaleRule::Constant, ScaleRule::LogN { training_length: 37 }] {
        let cfg = HeadSearchConfig {
            rule,
            init: 1.2,
            ..recipe(3)
        };
        let a = block_on(head_search(&mut cpu, &data, &cfg, &mut Quiet)).unwrap();
        let b = block_on(head_search(&mut gpu, &data, &cfg, &mut Quiet)).unwrap();
        assert_eq!(b.scales.rule, rule);
        assert_close(
            &format!("scales after 3 steps, {rule:?}"),
            &b.scales.values,
            &a.scales.values.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            Tolerance::new(1e-4, 0.0),
        );
    }
}

struct StopAfter(usize, Vec<usize>);
impl SearchProgress for StopAfter {
    fn step(&mut self, s: &SearchStep) -> bool {
        self.1.push(s.step);
        s.step < self.0
    }
}

#[test]
fn cancelling_returns_the_steps_done() {
    let (mut cpu, text) = tiny();
    let data = SearchData::text(40, &text, None).unwrap();
    let mut stop = StopAfter(2, Vec::new());
    let r = block_on(head_search(&mut cpu, &data, &recipe(50), &mut stop)).unwrap();
    assert!(r.cancelled);
    assert_eq!((r.steps_run, stop.1), (2, vec![1, 2]));
}

#[test]
fn the_uniform_search_refines_around_the_best_grid_point() {
    let (mut cpu, text) = tiny();
    let data = SearchData::text(74, &text, None).unwrap();
    let r = block_on(uniform_search(&mut cpu, &data, 2, ScaleRule::Constant, 1, &mut Quiet)).unwrap();
    assert!(r.curve.len() > 21, "{}", r.curve.len());
    assert!(r.curve.windows(2).all(|w| w[0].0 < w[1].0));
    let min = r.curve.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    assert_eq!(r.best_loss, min);
    assert!((1.0..=2.05).contains(&r.best_scale));
}

#[test]
fn bad_settings_are_errors_naming_them() {
    let (mut cpu, text) = tiny();
    assert!(SearchData::text(1, &text, None)
        .err()
        .unwrap()
        .to_string()
        .contains("below 2"));
    assert!(SearchData::text(5000, &text, None)
        .err()
        .unwrap()
        .to_string()
        .contains("4000 tokens"));
    let data = SearchData::text(40, &text, None).unwrap();
    for (cfg, word) in [
        (
            HeadSearchConfig {
                lr: f32::NAN,
                ..recipe(3)
            },
            "lr",
        ),
        (HeadSearchConfig { lr: 0.0, ..recipe(3) }, "lr"),
        (HeadSearchConfig { steps: 0, ..recipe(3) }, "steps"),
    ] {
        let e = block_on(head_search(&mut cpu, &data, &cfg, &mut Quiet))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(word), "{e}");
    }
    // A step far too large stays within the range a head-scales file
    // holds (1 to 1000), so the result can be saved: it ran every step and
    // then failed to save as out of range.
    let wild = HeadSearchConfig { lr: 1e30, ..recipe(2) };
    let r = block_on(head_search(&mut cpu, &data, &wild, &mut Quiet)).unwrap();
    assert!(
        r.scales.values.iter().all(|&s| (1.0..=1000.0).contains(&s)),
        "{:?}",
        r.scales.values
    );
    r.scales.validate(None).unwrap();
    // Longer than the engine's window? The CPU engine has none; the model
    // runs any length. A GPU past its device limit says so (gpu_engine.rs).
    assert_eq!(
        search::Objective::parse("x").unwrap_err().to_string(),
        "unknown objective `x`: expected passkey or text"
    );
}

/// Stops (as a pause does) after `after` steps or points, keeping the
/// last checkpoint.
struct PauseAfter {
    after: usize,
    seen: usize,
    state: Option<search::HeadSearchState>,
    curve: Vec<(f32, f64)>,
}

impl SearchProgress for PauseAfter {
    fn step(&mut self, _: &SearchStep) -> bool {
        self.seen += 1;
        self.seen < self.after
    }
    fn point(&mut self, s: f32, loss: f64, _: usize, _: usize) -> bool {
        self.curve.push((s, loss));
        self.seen += 1;
        self.seen < self.after
    }
    fn checkpoint(&mut self, state: &search::HeadSearchState) {
        self.state = Some(state.clone());
    }
}

#[test]
fn a_stopped_search_continues_exactly_where_it_stopped() {
    let (mut cpu, text) = tiny();
    let data = SearchData::text(60, &text, None).unwrap();
    let cfg = HeadSearchConfig { init: 1.1, ..recipe(5) };
    let whole = block_on(head_search(&mut cpu, &data, &cfg, &mut Quiet)).unwrap();
    let mut stop = PauseAfter {
        after: 2,
        seen: 0,
        state: None,
        curve: Vec::new(),
    };
    let first = block_on(head_search(&mut cpu, &data, &cfg, &mut stop)).unwrap();
    assert!(first.cancelled);
    assert_eq!(first.steps_run, 2);
    let mut state = stop.state.expect("a checkpoint after each step");
    assert_eq!(state.step, 2);
    let ran_out = block_on(search::head_search_from(&mut cpu, &data, &cfg, &mut state, &mut Quiet)).unwrap();
    assert!(ran_out && state.finished(&cfg));
    let resumed = state.result(false);
    assert_eq!(resumed.losses, whole.losses);
    assert_eq!(resumed.scales, whole.scales);

    // The uniform search too: 5 points, then the rest.
    let full = block_on(uniform_search(&mut cpu, &data, 2, ScaleRule::Constant, 7, &mut Quiet)).unwrap();
    let mut stop = PauseAfter {
        after: 5,
        seen: 0,
        state: None,
        curve: Vec::new(),
    };
    let part = block_on(uniform_search(&mut cpu, &data, 2, ScaleRule::Constant, 7, &mut stop)).unwrap();
    assert!(part.cancelled && stop.curve.len() == 5);
    let rest = block_on(search::uniform_search_from(
        &mut cpu,
        &data,
        2,
        ScaleRule::Constant,
        7,
        &stop.curve,
        &mut Quiet,
    ))
    .unwrap();
    assert_eq!(rest.curve, full.curve);
    assert_eq!(rest.best_scale, full.best_scale);
}
