//! SwiGLU forward and backward (`shaders/swiglu_forward.wgsl`,
//! `shaders/swiglu_backward.wgsl`), one invocation per element of h. The
//! CPU twins are `model::cpu::ops::{swiglu_forward, swiglu_backward}`, with
//! the same layout: gu (T, 2F) holds each row's gate, then its up.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::Result;
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::ELEMENT_WG;

/// Mirrors `Params` in swiglu_forward.wgsl and swiglu_backward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SwigluParams {
    pub rows: u32,
    pub f: u32,
}

pub fn shaders() -> [ShaderSource; 2] {
    [
        ShaderSource::new(
            "swiglu_forward.wgsl",
            include_str!("../../shaders/swiglu_forward.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(
            &[("h", Access::ReadWrite), ("gu", Access::Read)],
            uniform_layout!(SwigluParams: rows, f),
        ),
        ShaderSource::new(
            "swiglu_backward.wgsl",
            include_str!("../../shaders/swiglu_backward.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(
            &[("dgu", Access::ReadWrite), ("dh", Access::Read), ("gu", Access::Read)],
            uniform_layout!(SwigluParams: rows, f),
        ),
    ]
}

#[derive(Debug)]
pub struct Swiglu {
    forward_layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    backward_layout: wgpu::BindGroupLayout,
    backward: wgpu::ComputePipeline,
}

impl Swiglu {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [forward_src, backward_src] = shaders();
        let (forward_layout, mut p) = shader::build(ctx, &forward_src, &["swiglu_forward"]).await?;
        let forward = p.remove(0);
        let (backward_layout, mut p) = shader::build(ctx, &backward_src, &["swiglu_backward"]).await?;
        let backward = p.remove(0);
        Ok(Swiglu {
            forward_layout,
            forward,
            backward_layout,
            backward,
        })
    }

    /// The parameters, after checking that every flat index fits u32.
    fn params(op: &'static str, rows: usize, f: usize) -> Result<SwigluParams> {
        shader::to_u32(op, "rows * 2f", rows as u64 * 2 * f as u64)?;
        Ok(SwigluParams {
            rows: shader::to_u32(op, "rows", rows)?,
            f: shader::to_u32(op, "f", f)?,
        })
    }

    /// h (rows, f) = silu(g) * u, overwritten, from gu (rows, 2f).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        h: &wgpu::Buffer,
        gu: &wgpu::Buffer,
        rows: usize,
        f: usize,
    ) -> Result<()> {
        let op = "swiglu_forward";
        let params = Self::params(op, rows, f)?;
        ctx.check_binding(op, "h", h, rows * f)?;
        ctx.check_binding(op, "gu", gu, rows * 2 * f)?;
        if rows == 0 || f == 0 {
            return Ok(());
        }
        let params = ctx.uniform("swiglu_forward params", &params);
        let bind_group = ctx.bind(
            "swiglu_forward bind group",
            &self.forward_layout,
            &[(h, rows * f), (gu, rows * 2 * f)],
            &params,
        );
        let workgroups = ctx.grid(op, ((rows * f) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.forward, &bind_group, workgroups);
        Ok(())
    }

    /// dgu (rows, 2f) = [dh * u * silu'(g), dh * silu(g)], overwritten,
    /// from dh (rows, f) and gu (rows, 2f).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dgu: &wgpu::Buffer,
        dh: &wgpu::Buffer,
        gu: &wgpu::Buffer,
        rows: usize,
        f: usize,
    ) -> Result<()> {
        let op = "swiglu_backward";
        let params = Self::params(op, rows, f)?;
        ctx.check_binding(op, "dgu", dgu, rows * 2 * f)?;
        ctx.check_binding(op, "dh", dh, rows * f)?;
        ctx.check_binding(op, "gu", gu, rows * 2 * f)?;
        if rows == 0 || f == 0 {
            return Ok(());
        }
        let params = ctx.uniform("swiglu_backward params", &params);
        let bind_group = ctx.bind(
            "swiglu_backward bind group",
            &self.backward_layout,
            &[(dgu, rows * 2 * f), (dh, rows * f), (gu, rows * 2 * f)],
            &params,
        );
        let workgroups = ctx.grid(op, ((rows * f) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.backward, &bind_group, workgroups);
        Ok(())
    }
}
