//! Which engine runs, chosen at run time, and the one `auto` rule that the
//! CLI, the desktop app and the web page share: the WGSL engine on a real
//! GPU; the CPU engine on a CPU / fallback adapter (lavapipe, SwiftShader,
//! WARP are slower than it), where there is no adapter, where the adapter
//! has no compute shaders (WebGL2) or where the GPU engine fails to start.
//!
//! Owns no device: the caller hands in the GPU context it has (eframe's own
//! device in the app, a fresh one in the CLI), so there is never a second
//! device.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gpu::shader::Elem;
use crate::gpu::{GpuContext, GpuEngine};
use crate::model::cpu::CpuEngine;
use crate::model::engine::{Engine, ForwardOptions, ForwardOutput, GradMode, Gradients, StepStats};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;
use crate::model::optim::{AdamWConfig, AdamWState};
use crate::model::params::Params;
use crate::model::ModelConfig;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Gpu,
    #[default]
    Auto,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
            Backend::Auto => "auto",
        })
    }
}

/// Either engine; `lab/` stays generic over `Engine`. One engine lives per
/// model, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyEngine {
    Cpu(CpuEngine),
    Gpu(GpuEngine),
}

impl AnyEngine {
    pub fn is_gpu(&self) -> bool {
        matches!(self, AnyEngine::Gpu(_))
    }
}

/// An engine and one sentence saying why it was picked.
pub struct Chosen {
    pub engine: AnyEngine,
    pub reason: String,
}

/// True when `auto` should run the WGSL engine on this adapter.
pub fn auto_prefers_gpu(ctx: &GpuContext) -> bool {
    !ctx.report().is_cpu
}

fn cpu(config: ModelConfig, params: Params<f32>, reason: String) -> Result<Chosen> {
    Ok(Chosen {
        engine: AnyEngine::Cpu(CpuEngine::new(config, params)?),
        reason,
    })
}

/// Picks the engine for `backend`. `gpu` is the device to use, or why there
/// is none. `Backend::Gpu` without a usable device is an error that
/// suggests the CPU engine; `Auto` falls back to the CPU engine and says why.
pub async fn choose_engine(
    backend: Backend,
    gpu: std::result::Result<GpuContext, String>,
    config: ModelConfig,
    params: Params<f32>,
) -> Result<Chosen> {
    match backend {
        Backend::Cpu => cpu(config, params, "the CPU engine, as asked".into()),
        Backend::Gpu => {
            let ctx = gpu.map_err(|e| Error::Engine(format!("no usable GPU ({e}); use the CPU engine")))?;
            let adapter = ctx.adapter();
            let engine = GpuEngine::new(ctx, config, params)
                .await
                .map_err(|e| Error::Engine(format!("the GPU engine failed on {adapter}: {e}; use the CPU engine")))?;
            Ok(Chosen {
                engine: AnyEngine::Gpu(engine),
                reason: format!("the GPU engine on {adapter}, as asked"),
            })
        }
        Backend::Auto => {
            let ctx = match gpu {
                Ok(ctx) => ctx,
                Err(e) => return cpu(config, params, format!("auto: no usable GPU ({e}); the CPU engine")),
            };
            if !auto_prefers_gpu(&ctx) {
                let reason = format!(
                    "auto: {} is a CPU / fallback adapter, slower than the CPU engine; the CPU engine",
                    ctx.adapter()
                );
                return cpu(config, params, reason);
            }
            let adapter = ctx.adapter();
            match GpuEngine::new(ctx, config.clone(), params.clone()).await {
                Ok(e) => Ok(Chosen {
                    engine: AnyEngine::Gpu(e),
                    reason: format!("auto: the GPU engine on {adapter}"),
                }),
                Err(e) => cpu(
                    config,
                    params,
                    format!("auto: the GPU engine failed on {adapter} ({e}); the CPU engine"),
                ),
            }
        }
    }
}

/// Where the engine for a backend will run, resolved before a model is
/// loaded (as `choose_engine` resolves `auto`), to check its memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Cpu,
    /// The WGSL engine; `shares_host` on a CPU adapter (lavapipe,
    /// SwiftShader), whose device memory is this machine's memory; its
    /// weight matrices held as `elem`.
    Gpu {
        adapter: String,
        shares_host: bool,
        elem: Elem,
    },
}

impl Target {
    /// Where `backend` will run, given the adapter there is (its name and
    /// whether it is a CPU / fallback adapter): `choose_engine`'s rule.
    pub fn of(backend: Backend, adapter: Option<(&str, bool)>, elem: Elem) -> Target {
        match (backend, adapter) {
            (Backend::Cpu, _) | (_, None) | (Backend::Auto, Some((_, true))) => Target::Cpu,
            (_, Some((name, is_cpu))) => Target::Gpu {
                adapter: name.to_string(),
                shares_host: is_cpu,
                elem,
            },
        }
    }
}

/// What a model needs where it will run, estimated before loading it
/// (`model::memory`), against what is available.
#[derive(Debug, Clone)]
pub struct MemoryCheck {
    /// Peak bytes of this machine's memory: loading (the files and the f32
    /// weights together), then the engine (and a CPU adapter's device).
    pub host_needed: u64,
    pub host_available: Option<u64>,
    /// Bytes on a real GPU's device. WebGPU does not report a device's
    /// free memory, so this is printed, not checked; running out there is
    /// the engine's allocation error.
    pub device_needed: Option<u64>,
}

impl MemoryCheck {
    pub fn summary(&self) -> String {
        use crate::model::memory::human;
        let mut s = format!("needs about {} of memory", human(self.host_needed));
        if let Some(a) = self.host_available {
            s += &format!(" ({} available)", human(a));
        }
        if let Some(d) = self.device_needed {
            s += &format!(" and {} on the GPU", human(d));
        }
        s
    }
}

/// The memory `config` needs on `target` for forwards of up to `t` tokens,
/// its weight files being `file_bytes`: Err (`Error::Memory`, both numbers
/// and what they are made of) when this machine's available memory is
/// less than the peak.
pub fn check_memory(
    config: &ModelConfig,
    file_bytes: u64,
    target: &Target,
    t: usize,
    threads: usize,
    host_available: Option<u64>,
) -> Result<MemoryCheck> {
    use crate::model::memory::{self, human};
    // f16 weights are read from the files into f16 on the host
    // (`files::load_params_as`), f32 ones into f32; the host copy stays
    // until the upload is done, and each part passes through one converted
    // copy (at most the largest matrix) on its way.
    let host_elem = match target {
        Target::Gpu { elem, .. } => *elem,
        Target::Cpu => Elem::F32,
    };
    let host_weights = host_elem.bytes(memory::weights_bytes(config) as usize / 4);
    let loading = file_bytes + host_weights;
    let (engine, host_needed, device_needed, footprint) = match target {
        Target::Cpu => {
            let f = memory::cpu_engine(config, t, threads);
            ("the CPU engine".to_string(), loading.max(f.total()), None, f)
        }
        Target::Gpu {
            adapter,
            shares_host,
            elem,
        } => {
            let f = crate::gpu::engine::footprint(config, t, *elem);
            let convert = match elem {
                Elem::F32 => 0,
                Elem::F16 => elem.bytes(config.vocab_size * config.hidden_size),
            };
            match shares_host {
                true => (
                    format!("the GPU engine on {adapter} (device memory is this machine's)"),
                    loading.max(host_weights + f.total() + convert),
                    None,
                    f,
                ),
                false => (
                    format!("the GPU engine on {adapter}"),
                    loading.max(host_weights + convert),
                    Some(f.total()),
                    f,
                ),
            }
        }
    };
    let check = MemoryCheck {
        host_needed,
        host_available,
        device_needed,
    };
    if let Some(available) = host_available {
        if host_needed > available {
            return Err(Error::Memory(format!(
                "this model needs about {} of memory on {engine} and this machine has {} available: {} of {} \
                 weights, {} of working memory for {t} tokens, {} while loading ({} of weight files and the {} \
                 weights together); try fewer tokens{}",
                human(host_needed),
                human(available),
                human(footprint.weights),
                if host_elem == Elem::F16 { "f16" } else { "f32" },
                human(footprint.working),
                human(loading),
                human(file_bytes),
                if host_elem == Elem::F16 { "f16" } else { "f32" },
                match target {
                    Target::Cpu => "",
                    Target::Gpu { .. } => " or a real GPU",
                }
            )));
        }
    }
    Ok(check)
}

/// Natively: where `backend` will run for the model in `dir` and whether
/// it fits (`check_memory`, at up to `t` tokens), from the config and the
/// weight files' sizes, before reading the weights. Finds the adapter
/// kind by listing adapters (no device is opened).
#[cfg(not(target_arch = "wasm32"))]
pub fn check_memory_native(dir: &std::path::Path, backend: Backend, t: usize, elem: Elem) -> Result<MemoryCheck> {
    use crate::model::{files, memory};
    let config = files::load_config(dir)?;
    let file_bytes = files::weights_file_bytes(dir)?;
    // The default adapter is a real GPU where there is one.
    let adapters = match backend {
        Backend::Cpu => Vec::new(),
        Backend::Gpu | Backend::Auto => GpuContext::list_adapters(),
    };
    let adapter = adapters.iter().find(|a| !a.is_cpu).or(adapters.first());
    let target = Target::of(backend, adapter.map(|a| (a.name.as_str(), a.is_cpu)), elem);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_memory(&config, file_bytes, &target, t, threads, memory::available_host())
}

/// Natively: opens the default adapter only when the choice may use it, and
/// picks the engine (what the CLI does).
#[cfg(not(target_arch = "wasm32"))]
pub fn choose_engine_native(backend: Backend, config: ModelConfig, params: Params<f32>) -> Result<Chosen> {
    let gpu = match backend {
        Backend::Cpu => Err("not asked for".to_string()),
        _ => GpuContext::new_default().map_err(|e| e.to_string()),
    };
    pollster::block_on(choose_engine(backend, gpu, config, params))
}

impl Engine for AnyEngine {
    fn name(&self) -> String {
        match self {
            AnyEngine::Cpu(e) => e.name(),
            AnyEngine::Gpu(e) => e.name(),
        }
    }

    fn kernels(&self) -> Option<String> {
        match self {
            AnyEngine::Cpu(e) => e.kernels(),
            AnyEngine::Gpu(e) => e.kernels(),
        }
    }

    fn device_work(&self) -> Option<crate::model::engine::DeviceWork> {
        match self {
            AnyEngine::Cpu(e) => e.device_work(),
            AnyEngine::Gpu(e) => e.device_work(),
        }
    }

    fn profile_start(&self) -> bool {
        match self {
            AnyEngine::Cpu(e) => e.profile_start(),
            AnyEngine::Gpu(e) => e.profile_start(),
        }
    }

    async fn profile_finish(&self) -> crate::model::Result<Vec<crate::model::engine::KernelTime>> {
        match self {
            AnyEngine::Cpu(e) => e.profile_finish().await,
            AnyEngine::Gpu(e) => e.profile_finish().await,
        }
    }

    fn config(&self) -> &ModelConfig {
        match self {
            AnyEngine::Cpu(e) => e.config(),
            AnyEngine::Gpu(e) => e.config(),
        }
    }

    async fn forward(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        match self {
            AnyEngine::Cpu(e) => e.forward(tokens, head_scales, options).await,
            AnyEngine::Gpu(e) => e.forward(tokens, head_scales, options).await,
        }
    }

    async fn weighted_gradients(
        &mut self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
        mode: GradMode,
    ) -> Result<Gradients> {
        match self {
            AnyEngine::Cpu(e) => e.weighted_gradients(batch, loss_weights, head_scales, mode).await,
            AnyEngine::Gpu(e) => e.weighted_gradients(batch, loss_weights, head_scales, mode).await,
        }
    }

    async fn train_step(
        &mut self,
        batch: &[Vec<u32>],
        head_scales: &HeadScales,
        optimizer: &AdamWConfig,
        lr: f32,
    ) -> Result<StepStats> {
        match self {
            AnyEngine::Cpu(e) => e.train_step(batch, head_scales, optimizer, lr).await,
            AnyEngine::Gpu(e) => e.train_step(batch, head_scales, optimizer, lr).await,
        }
    }

    async fn params(&mut self) -> Result<Params<f32>> {
        match self {
            AnyEngine::Cpu(e) => e.params().await,
            AnyEngine::Gpu(e) => e.params().await,
        }
    }

    async fn optimizer_state(&mut self) -> Result<Option<AdamWState>> {
        match self {
            AnyEngine::Cpu(e) => e.optimizer_state().await,
            AnyEngine::Gpu(e) => e.optimizer_state().await,
        }
    }

    async fn set_optimizer_state(&mut self, state: AdamWState) -> Result<()> {
        match self {
            AnyEngine::Cpu(e) => e.set_optimizer_state(state).await,
            AnyEngine::Gpu(e) => e.set_optimizer_state(state).await,
        }
    }

    async fn attention_rows(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        layer: usize,
        head: usize,
        queries: &[usize],
    ) -> Result<Vec<f32>> {
        match self {
            AnyEngine::Cpu(e) => e.attention_rows(tokens, head_scales, layer, head, queries).await,
            AnyEngine::Gpu(e) => e.attention_rows(tokens, head_scales, layer, head, queries).await,
        }
    }

    async fn pooled_attention(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        layer: usize,
        head: usize,
        cells: usize,
    ) -> Result<(Vec<f32>, usize)> {
        match self {
            AnyEngine::Cpu(e) => e.pooled_attention(tokens, head_scales, layer, head, cells).await,
            AnyEngine::Gpu(e) => e.pooled_attention(tokens, head_scales, layer, head, cells).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule `choose_engine` applies, before any device is opened.
    #[test]
    fn the_target_follows_the_auto_rule() {
        let gpu = |shares_host| Target::Gpu {
            adapter: "a".into(),
            shares_host,
            elem: Elem::F32,
        };
        assert_eq!(Target::of(Backend::Cpu, Some(("a", false)), Elem::F32), Target::Cpu);
        assert_eq!(Target::of(Backend::Auto, None, Elem::F32), Target::Cpu);
        assert_eq!(Target::of(Backend::Auto, Some(("a", true)), Elem::F32), Target::Cpu);
        assert_eq!(Target::of(Backend::Auto, Some(("a", false)), Elem::F32), gpu(false));
        assert_eq!(Target::of(Backend::Gpu, Some(("a", true)), Elem::F32), gpu(true));
        assert_eq!(Target::of(Backend::Gpu, None, Elem::F32), Target::Cpu);
    }

    /// The paper's model does not fit 1 GiB, on either engine, and the
    /// error gives both numbers; it fits 64 GiB on the CPU engine.
    #[test]
    fn a_model_too_big_for_the_memory_is_refused_before_loading() {
        let cfg = ModelConfig::tinyllama_nope();
        let weights = crate::model::memory::weights_bytes(&cfg);
        assert_eq!(weights, 1_100_048_384 * 4);
        let gib = 1u64 << 30;
        for target in [
            Target::Cpu,
            Target::Gpu {
                adapter: "llvmpipe".into(),
                shares_host: true,
                elem: Elem::F32,
            },
        ] {
            let e = check_memory(&cfg, weights / 2, &target, 2048, 2, Some(gib)).unwrap_err();
            assert_eq!(e.kind(), crate::model::error::ErrorKind::Memory);
            let e = e.to_string();
            assert!(
                e.contains("1.00 GiB available") && e.contains("4.10 GiB of f32 weights"),
                "{e}"
            );
        }
        let ok = check_memory(&cfg, weights / 2, &Target::Cpu, 2048, 2, Some(64 * gib)).unwrap();
        // Loading holds the bf16 files and the f32 weights together.
        assert_eq!(ok.host_needed, weights / 2 + weights);
        assert!(ok.summary().contains("64.00 GiB available"), "{}", ok.summary());
        // A real GPU's memory is not reported: printed, not checked.
        let gpu = |elem| Target::Gpu {
            adapter: "a GPU".into(),
            shares_host: false,
            elem,
        };
        let ok = check_memory(&cfg, weights / 2, &gpu(Elem::F32), 2048, 2, Some(64 * gib)).unwrap();
        assert!(ok.device_needed.unwrap() > weights);
        // f16 weights: half the weights' bytes on the device.
        let half = check_memory(&cfg, weights / 2, &gpu(Elem::F16), 2048, 2, Some(64 * gib)).unwrap();
        assert_eq!(ok.device_needed.unwrap() - half.device_needed.unwrap(), weights / 2);
    }
}
