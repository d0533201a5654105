//! nopescope: a causal transformer without position encoding (NoPE), its
//! attention entropy as inputs grow, and per-head attention temperatures.
//!
//! Layers depend one way: `model` (config, files, CPU engine) <- `lab`
//! (sweeps, eval, searches, generic over the engine) <- the CLI; `gpu`
//! (the WGSL engine) depends on `model`, never the other way.

/// The egui/eframe app, desktop and web (feature `app`).
#[cfg(feature = "app")]
pub mod app;
pub mod gpu;
pub mod lab;
pub mod model;
