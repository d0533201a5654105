//! Everything the paper measures or searches, written once against the
//! [`Engine`](crate::model::Engine) trait: evaluation over lengths, the
//! benchmark. Must not depend on a particular engine's internals.

pub mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod figures;
pub mod passkey;
#[cfg(not(target_arch = "wasm32"))]
pub mod reproduce;
#[cfg(not(target_arch = "wasm32"))]
pub mod scales_report;
pub mod search;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
