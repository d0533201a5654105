//! RoPE forward and backward (`shaders/rope.wgsl`): Hugging Face's
//! rotate-half convention, in place; the backward is the inverse rotation.
//! The CPU twin is `model::cpu::ops::rope_apply`.
//!
//! Angles are not formed on the GPU: position * inv_freq in f32 is off by
//! up to position * 2^-24 radians (1e-3 at 16384). The host computes cos
//! and sin in f64, exactly as the twin does, and uploads them once per
//! (length, head dim, theta) as `RopeTables`; the kernel only rotates.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::{Error, Result};
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::ELEMENT_WG;

/// Mirrors `Params` in rope.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RopeParams {
    pub t: u32,
    pub heads: u32,
    pub hd: u32,
    pub half: u32,
    pub inverse: u32,
}

pub fn shaders() -> [ShaderSource; 1] {
    [ShaderSource::new(
        "rope.wgsl",
        include_str!("../../shaders/rope.wgsl"),
        &[("WG", ELEMENT_WG)],
    )
    .bind(
        &[
            ("x", Access::ReadWrite),
            ("cos_t", Access::Read),
            ("sin_t", Access::Read),
        ],
        uniform_layout!(RopeParams: t, heads, hd, half, inverse),
    )]
}

/// cos and sin (positions, hd / 2) of position * theta^(-2i/hd), computed
/// in f64 and rounded once, the twin's values.
pub fn rope_tables(positions: usize, hd: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    rope_table_rows(0..positions, hd, theta)
}

/// `rope_tables`' rows for `positions` only (one page of a long sequence).
pub fn rope_table_rows(positions: std::ops::Range<usize>, hd: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = hd / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| theta.powf(-((2 * i) as f64) / hd as f64)).collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for pos in positions {
        for &f in &inv_freq {
            let (s, c) = (pos as f64 * f).sin_cos();
            cos.push(c as f32);
            sin.push(s as f32);
        }
    }
    (cos, sin)
}

/// `rope_tables` on the device: serves every sequence up to `positions`
/// long with this head dim and theta, or (`upload_rows`) the rows of one
/// page of a sequence from position `first`.
#[derive(Debug)]
pub struct RopeTables {
    pub cos: wgpu::Buffer,
    pub sin: wgpu::Buffer,
    pub first: usize,
    pub positions: usize,
    pub hd: usize,
    pub theta: f64,
}

impl RopeTables {
    pub async fn upload(ctx: &GpuContext, positions: usize, hd: usize, theta: f64) -> Result<Self> {
        Self::upload_rows(ctx, 0, positions, hd, theta).await
    }

    /// The tables of positions first..first + positions: x's row r is
    /// rotated as position first + r.
    pub async fn upload_rows(ctx: &GpuContext, first: usize, positions: usize, hd: usize, theta: f64) -> Result<Self> {
        let (cos, sin) = rope_table_rows(first..first + positions, hd, theta);
        Ok(RopeTables {
            cos: ctx.upload("rope cos table", &cos).await?,
            sin: ctx.upload("rope sin table", &sin).await?,
            first,
            positions,
            hd,
            theta,
        })
    }
}

#[derive(Debug)]
pub struct Rope {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl Rope {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [src] = shaders();
        let (layout, mut p) = shader::build(ctx, &src, &["rope_apply"]).await?;
        Ok(Rope {
            layout,
            pipeline: p.remove(0),
        })
    }

    /// Rotates x (t, heads * hd) in place by the tables' angles; `inverse`
    /// rotates back (the backward pass).
    pub fn apply(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        x: &wgpu::Buffer,
        tables: &RopeTables,
        t: usize,
        heads: usize,
        hd: usize,
        inverse: bool,
    ) -> Result<()> {
        let op = "rope_apply";
        if tables.hd != hd || tables.positions < t {
            return Err(Error::Shape {
                op,
                message: format!(
                    "tables for {} positions of head dim {}, asked for {t} positions of head dim {hd}",
                    tables.positions, tables.hd
                ),
            });
        }
        let half = hd / 2;
        shader::to_u32(op, "t * heads * hd", t as u64 * heads as u64 * hd as u64)?;
        shader::to_u32(op, "positions * hd / 2", tables.positions as u64 * half as u64)?;
        let params = RopeParams {
            t: t as u32,
            heads: heads as u32,
            hd: hd as u32,
            half: half as u32,
            inverse: inverse as u32,
        };
        ctx.check_binding(op, "x", x, t * heads * hd)?;
        ctx.check_binding(op, "cos", &tables.cos, t * half)?;
        ctx.check_binding(op, "sin", &tables.sin, t * half)?;
        if t * heads * half == 0 {
            return Ok(());
        }
        let params = ctx.uniform("rope_apply params", &params);
        let bind_group = ctx.bind(
            "rope_apply bind group",
            &self.layout,
            &[(x, t * heads * hd), (&tables.cos, t * half), (&tables.sin, t * half)],
            &params,
        );
        let workgroups = ctx.grid(op, ((t * heads * half) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.pipeline, &bind_group, workgroups);
        Ok(())
    }
}
