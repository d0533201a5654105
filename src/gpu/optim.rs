//! The optimizer's kernels: the global gradient norm and its clipping
//! scale (`shaders/grad_norm.wgsl`, two passes in a fixed order, no float
//! atomics), scaling a gradient by it (`shaders/grad_clip.wgsl`), and the
//! AdamW step (`shaders/adamw.wgsl`), which applies the clipping scale
//! itself so a training step needs no pass over the gradient in between and
//! no read-back. The CPU twins are `model::optim::{grad_norm,
//! clip_grad_norm, AdamWState::update}`.
//!
//! Which parameters get weight decay is one bit per element
//! (`pack_decay_flags`), 1/32 of the parameters' memory. The step counter
//! and the bias corrections stay on the host (`AdamWParams::new`), computed
//! as the twin computes them.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::{Error, Result};
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::{ELEMENT_WG, ROW_WG};
use crate::model::optim::AdamWConfig;

/// Elements each invocation of the norm's first pass adds: a workgroup
/// covers `NORM_CHUNK` elements.
pub const NORM_PER_INVOCATION: u32 = 16;
/// Elements per partial sum of the norm's first pass.
pub const NORM_CHUNK: u32 = ROW_WG * NORM_PER_INVOCATION;

/// PyTorch's `clip_grad_norm_` guard, as `model::optim::clip_grad_norm` adds it.
pub const CLIP_GUARD: f32 = 1e-6;

/// f32 elements of the stats buffer: (norm, clipping scale).
pub const STATS_LEN: usize = 2;

/// Mirrors `Params` in grad_norm.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct NormParams {
    pub n: u32,
    pub chunks: u32,
    pub max_norm: f32,
    pub guard: f32,
    pub clip: u32,
    pub first: u32,
}

/// Mirrors `Params` in grad_clip.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ClipParams {
    pub n: u32,
}

/// Mirrors `Params` in adamw.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AdamWParams {
    pub n: u32,
    pub beta1: f32,
    pub beta2: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub step_size: f32,
    pub inv_bc2_sqrt: f32,
    pub shrink: f32,
}

impl AdamWParams {
    /// The step's constants for `step` (1-based, after incrementing), with
    /// the twin's arithmetic: bias corrections in f64, rounded once.
    pub fn new(n: u32, cfg: &AdamWConfig, lr: f32, step: u64) -> Self {
        let t = step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (cfg.beta1 as f64).powi(t);
        let bc2 = 1.0 - (cfg.beta2 as f64).powi(t);
        AdamWParams {
            n,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            one_minus_beta1: 1.0 - cfg.beta1,
            one_minus_beta2: 1.0 - cfg.beta2,
            eps: cfg.eps,
            step_size: (lr as f64 / bc1) as f32,
            inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
            shrink: 1.0 - lr * cfg.weight_decay,
        }
    }
}

pub fn shaders() -> [ShaderSource; 3] {
    [
        ShaderSource::new(
            "grad_norm.wgsl",
            &shader::include(include_str!("../../shaders/grad_norm.wgsl"), &[shader::WORKGROUP_REDUCE]),
            &[("ROW_WG", ROW_WG), ("PER_INVOCATION", NORM_PER_INVOCATION)],
        )
        .bind(&[("stats", Access::ReadWrite), ("partials", Access::ReadWrite), ("grads", Access::Read)], uniform_layout!(NormParams: n, chunks, max_norm, guard, clip, first)),
        ShaderSource::new(
            "grad_clip.wgsl",
            include_str!("../../shaders/grad_clip.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(&[("grads", Access::ReadWrite), ("stats", Access::Read)], uniform_layout!(ClipParams: n)),
        ShaderSource::new(
            "adamw.wgsl",
            include_str!("../../shaders/adamw.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(&[("weights", Access::ReadWrite), ("m", Access::ReadWrite), ("v", Access::ReadWrite), ("grads", Access::Read), ("decay", Access::Read), ("stats", Access::Read)], uniform_layout!(AdamWParams: n, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, step_size, inv_bc2_sqrt, shrink)),
    ]
}

/// The scratch `grad_norm` needs, in f32 elements.
pub fn norm_partials_len(n: usize) -> usize {
    n.div_ceil(NORM_CHUNK as usize)
}

/// The scratch `grad_norm_parts` needs for parts of these lengths.
pub fn norm_partials_len_parts(lens: impl IntoIterator<Item = usize>) -> usize {
    lens.into_iter().map(norm_partials_len).sum()
}

/// u32 words of the packed decay flags of `n` parameters.
pub fn decay_words(n: usize) -> usize {
    n.div_ceil(32)
}

/// Weight-decay flags packed one bit per parameter (bit e % 32 of word
/// e / 32); None: every parameter decays.
pub fn pack_decay_flags(flags: Option<&[bool]>, n: usize) -> Vec<u32> {
    let mut words = vec![0u32; decay_words(n)];
    for e in 0..n {
        if flags.is_none_or(|f| f[e]) {
            words[e / 32] |= 1 << (e % 32);
        }
    }
    words
}

#[derive(Debug)]
pub struct Optim {
    norm_layout: wgpu::BindGroupLayout,
    norm_partial: wgpu::ComputePipeline,
    norm_final: wgpu::ComputePipeline,
    clip_layout: wgpu::BindGroupLayout,
    clip: wgpu::ComputePipeline,
    adamw_layout: wgpu::BindGroupLayout,
    adamw: wgpu::ComputePipeline,
}

impl Optim {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [norm_src, clip_src, adamw_src] = shaders();
        let (norm_layout, p) = shader::build(ctx, &norm_src, &["grad_norm_partial", "grad_norm_final"]).await?;
        let [norm_partial, norm_final]: [wgpu::ComputePipeline; 2] = p.try_into().expect("two passes");
        let (clip_layout, mut p) = shader::build(ctx, &clip_src, &["grad_clip"]).await?;
        let clip = p.remove(0);
        let (adamw_layout, mut p) = shader::build(ctx, &adamw_src, &["adamw"]).await?;
        let adamw = p.remove(0);
        Ok(Optim {
            norm_layout,
            norm_partial,
            norm_final,
            clip_layout,
            clip,
            adamw_layout,
            adamw,
        })
    }

    /// stats (2) = (|grads|, scale): the global L2 norm of grads (n) and,
    /// with `max_norm`, the clipping scale max_norm / (norm + 1e-6) where
    /// that is below 1, else 1. `partials` is scratch of
    /// `norm_partials_len(n)` elements.
    pub fn grad_norm(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        stats: &wgpu::Buffer,
        partials: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        n: usize,
        max_norm: Option<f32>,
    ) -> Result<()> {
        self.grad_norm_parts(ctx, encoder, stats, partials, &[(grads, n)], max_norm)
    }

    /// `grad_norm` of one gradient held in several buffers, (buffer,
    /// elements) in order (the engine's weight slots, each within the max
    /// storage binding where the whole might not be); `partials` is
    /// scratch of `norm_partials_len_parts` of their lengths.
    pub fn grad_norm_parts(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        stats: &wgpu::Buffer,
        partials: &wgpu::Buffer,
        parts: &[(&wgpu::Buffer, usize)],
        max_norm: Option<f32>,
    ) -> Result<()> {
        let op = "grad_norm";
        let total = norm_partials_len_parts(parts.iter().map(|&(_, n)| n));
        let base = NormParams {
            n: 0,
            chunks: shader::to_u32(op, "chunks", total)?,
            max_norm: max_norm.unwrap_or(0.0),
            guard: CLIP_GUARD,
            clip: max_norm.is_some() as u32,
            first: 0,
        };
        ctx.check_binding(op, "stats", stats, STATS_LEN)?;
        ctx.check_binding(op, "partials", partials, total)?;
        for &(grads, n) in parts {
            shader::to_u32(op, "n", n)?;
            ctx.check_binding(op, "grads", grads, n)?;
        }
        let Some(&(last, last_n)) = parts.last() else {
            return Err(Error::Shape {
                op,
                message: "no gradient buffers".into(),
            });
        };
        let bind = |grads: &wgpu::Buffer, n: usize, params: &NormParams| {
            let params = ctx.uniform("grad_norm params", params);
            ctx.bind(
                "grad_norm bind group",
                &self.norm_layout,
                &[(stats, STATS_LEN), (partials, total), (grads, n)],
                &params,
            )
        };
        let mut first = 0;
        for &(grads, n) in parts {
            let chunks = norm_partials_len(n);
            let params = NormParams {
                n: n as u32,
                chunks: chunks as u32,
                first: first as u32,
                ..base
            };
            let workgroups = ctx.grid(op, chunks as u64)?;
            ctx.dispatch(
                encoder,
                "grad_norm_partial",
                &self.norm_partial,
                &bind(grads, n, &params),
                workgroups,
            );
            first += chunks;
        }
        // Also with no elements, so that stats always holds (0, 1) afterwards.
        let final_group = bind(last, last_n, &base);
        ctx.dispatch(encoder, "grad_norm_final", &self.norm_final, &final_group, [1, 1, 1]);
        Ok(())
    }

    /// grads (n) *= stats[1], the scale `grad_norm` left there.
    pub fn clip(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        grads: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        n: usize,
    ) -> Result<()> {
        let op = "grad_clip";
        let params = ClipParams {
            n: shader::to_u32(op, "n", n)?,
        };
        ctx.check_binding(op, "grads", grads, n)?;
        ctx.check_binding(op, "stats", stats, STATS_LEN)?;
        if n == 0 {
            return Ok(());
        }
        let params = ctx.uniform("grad_clip params", &params);
        let bind_group = ctx.bind(
            "grad_clip bind group",
            &self.clip_layout,
            &[(grads, n), (stats, STATS_LEN)],
            &params,
        );
        let workgroups = ctx.grid(op, (n as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.clip, &bind_group, workgroups);
        Ok(())
    }

    /// One AdamW step of weights (n) and the moments m, v (n) with
    /// grads (n) * stats[1]; `decay` holds `pack_decay_flags` words;
    /// `step` counts this step (1 on the first).
    pub fn adamw(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        weights: &wgpu::Buffer,
        m: &wgpu::Buffer,
        v: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        decay: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        n: usize,
        cfg: &AdamWConfig,
        lr: f32,
        step: u64,
    ) -> Result<()> {
        let op = "adamw";
        if step == 0 {
            return Err(Error::Shape {
                op,
                message: "step 0: steps count from 1 (the bias corrections divide by 1 - beta^step)".into(),
            });
        }
        let params = AdamWParams::new(shader::to_u32(op, "n", n)?, cfg, lr, step);
        for (name, buffer) in [("weights", weights), ("m", m), ("v", v), ("grads", grads)] {
            ctx.check_binding(op, name, buffer, n)?;
        }
        ctx.check_binding(op, "decay", decay, decay_words(n))?;
        ctx.check_binding(op, "stats", stats, STATS_LEN)?;
        if n == 0 {
            return Ok(());
        }
        let params = ctx.uniform("adamw params", &params);
        let bind_group = ctx.bind(
            "adamw bind group",
            &self.adamw_layout,
            &[
                (weights, n),
                (m, n),
                (v, n),
                (grads, n),
                (decay, decay_words(n)),
                (stats, STATS_LEN),
            ],
            &params,
        );
        let workgroups = ctx.grid(op, (n as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.adamw, &bind_group, workgroups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_flags_pack_one_bit_per_parameter() {
        let flags: Vec<bool> = (0..70).map(|e| e % 3 != 0 && e != 40).collect();
        let words = pack_decay_flags(Some(&flags), 70);
        assert_eq!(words.len(), 3);
        for (e, &f) in flags.iter().enumerate() {
            assert_eq!((words[e / 32] >> (e % 32)) & 1 == 1, f, "{e}");
        }
        assert_eq!(pack_decay_flags(None, 33), vec![u32::MAX, 1]);
        assert!(pack_decay_flags(None, 0).is_empty());
    }
}
