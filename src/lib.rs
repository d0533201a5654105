//! nopescope: a causal transformer without position encoding (NoPE), its
//! attention entropy as inputs grow, and per-head attention temperatures.
//!
//! Layers depend one way: `model` (config, files, CPU engine) <- `lab`
//! (sweeps, eval, searches, generic over the engine) <- the CLI.

pub mod lab;
pub mod model;
