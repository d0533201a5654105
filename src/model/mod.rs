//! The model's definition and files, and the CPU engine.
//!
//! Owns: the validated configuration, the parameter layout, safetensors and
//! tokenizer files, head scales, the engine contract and the CPU engine (the
//! reference every other engine is checked against). Must not depend on wgpu
//! or egui: the GPU engine and the app build on this module, never the
//! other way round.

pub mod check;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod files;
pub mod head_scales;
pub mod memory;
pub mod optim;
pub mod params;
pub mod real;
pub mod rng;
pub mod shapes;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm_sgemm;

pub use config::{HfConfig, ModelConfig, PositionEncoding};
pub use engine::{Engine, ForwardOptions, ForwardOutput, GradMode, Gradients, LogitsRequest};
pub use error::{Error, Result};
pub use head_scales::HeadScales;
pub use params::{ParamLayout, Params};
