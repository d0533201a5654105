//! RMSNorm forward and backward (`shaders/rmsnorm_forward.wgsl`,
//! `rmsnorm_backward.wgsl` for dx, `rmsnorm_backward_dw.wgsl` for dw). The
//! CPU twins are `model::cpu::ops::{rmsnorm_forward, rmsnorm_backward}`.
//!
//! Forward and dx run one workgroup per row with a tree reduction in
//! workgroup memory. dw sums over every row: rather than float atomics (not
//! in WGSL, and their order would vary), a first pass sums chunks of
//! `DW_CHUNK_ROWS` rows per column into scratch and a second adds the
//! chunks in order.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::Result;
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::{ELEMENT_WG, ROW_WG};

/// Rows summed by one invocation of dw's first pass.
pub const DW_CHUNK_ROWS: u32 = 64;

/// Mirrors `Params` in rmsnorm_forward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ForwardParams {
    pub rows: u32,
    pub c: u32,
    pub eps: f32,
}

/// Mirrors `Params` in rmsnorm_backward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BackwardParams {
    pub rows: u32,
    pub c: u32,
}

/// Mirrors `Params` in rmsnorm_backward_dw.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct DwParams {
    pub rows: u32,
    pub c: u32,
    pub chunks: u32,
}

pub fn shaders() -> [ShaderSource; 3] {
    [
        ShaderSource::new(
            "rmsnorm_forward.wgsl",
            &shader::include(
                include_str!("../../shaders/rmsnorm_forward.wgsl"),
                &[shader::WORKGROUP_REDUCE],
            ),
            &[("ROW_WG", ROW_WG)],
        )
        .bind(
            &[
                ("out", Access::ReadWrite),
                ("rstd", Access::ReadWrite),
                ("x", Access::Read),
                ("w", Access::Read),
            ],
            uniform_layout!(ForwardParams: rows, c, eps),
        ),
        ShaderSource::new(
            "rmsnorm_backward.wgsl",
            &shader::include(
                include_str!("../../shaders/rmsnorm_backward.wgsl"),
                &[shader::WORKGROUP_REDUCE],
            ),
            &[("ROW_WG", ROW_WG)],
        )
        .bind(
            &[
                ("dx", Access::ReadWrite),
                ("dout", Access::Read),
                ("x", Access::Read),
                ("rstd", Access::Read),
                ("w", Access::Read),
            ],
            uniform_layout!(BackwardParams: rows, c),
        ),
        ShaderSource::new(
            "rmsnorm_backward_dw.wgsl",
            include_str!("../../shaders/rmsnorm_backward_dw.wgsl"),
            &[("WG", ELEMENT_WG), ("CHUNK_ROWS", DW_CHUNK_ROWS)],
        )
        .bind(
            &[
                ("dw", Access::ReadWrite),
                ("partials", Access::ReadWrite),
                ("dout", Access::Read),
                ("x", Access::Read),
                ("rstd", Access::Read),
            ],
            uniform_layout!(DwParams: rows, c, chunks),
        ),
    ]
}

/// The scratch `backward_dw` needs, in f32 elements: (chunks, C).
pub fn dw_partials_len(rows: usize, c: usize) -> usize {
    rows.div_ceil(DW_CHUNK_ROWS as usize) * c
}

#[derive(Debug)]
pub struct RmsNorm {
    forward_layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    dx_layout: wgpu::BindGroupLayout,
    dx: wgpu::ComputePipeline,
    dw_layout: wgpu::BindGroupLayout,
    dw_partial: wgpu::ComputePipeline,
    dw_reduce: wgpu::ComputePipeline,
}

impl RmsNorm {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [forward_src, dx_src, dw_src] = shaders();
        let (forward_layout, mut p) = shader::build(ctx, &forward_src, &["rmsnorm_forward"]).await?;
        let forward = p.remove(0);
        let (dx_layout, mut p) = shader::build(ctx, &dx_src, &["rmsnorm_backward"]).await?;
        let dx = p.remove(0);
        let (dw_layout, p) = shader::build(ctx, &dw_src, &["rmsnorm_dw_partial", "rmsnorm_dw_reduce"]).await?;
        let [dw_partial, dw_reduce]: [wgpu::ComputePipeline; 2] = p.try_into().expect("two passes");
        Ok(RmsNorm {
            forward_layout,
            forward,
            dx_layout,
            dx,
            dw_layout,
            dw_partial,
            dw_reduce,
        })
    }

    /// out (rows, c) = x * rstd * w per row; rstd (rows) = 1 / sqrt(mean(x^2) + eps).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        out: &wgpu::Buffer,
        rstd: &wgpu::Buffer,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        rows: usize,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "rmsnorm_forward";
        let params = ForwardParams {
            rows: shader::to_u32(op, "rows", rows)?,
            c: shader::to_u32(op, "c", c)?,
            eps,
        };
        shader::to_u32(op, "rows * c", rows as u64 * c as u64)?;
        ctx.check_binding(op, "out", out, rows * c)?;
        ctx.check_binding(op, "rstd", rstd, rows)?;
        ctx.check_binding(op, "x", x, rows * c)?;
        ctx.check_binding(op, "w", w, c)?;
        if rows == 0 || c == 0 {
            return Ok(());
        }
        let params = ctx.uniform("rmsnorm_forward params", &params);
        let bind_group = ctx.bind(
            "rmsnorm_forward bind group",
            &self.forward_layout,
            &[(out, rows * c), (rstd, rows), (x, rows * c), (w, c)],
            &params,
        );
        let workgroups = ctx.grid(op, rows as u64)?;
        ctx.dispatch(encoder, op, &self.forward, &bind_group, workgroups);
        Ok(())
    }

    /// dx (rows, c) += rstd * (g - xhat * mean(g * xhat)), g = dout * w,
    /// xhat = x * rstd.
    pub fn backward_dx(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dx: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        x: &wgpu::Buffer,
        rstd: &wgpu::Buffer,
        w: &wgpu::Buffer,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let op = "rmsnorm_backward";
        let params = BackwardParams {
            rows: shader::to_u32(op, "rows", rows)?,
            c: shader::to_u32(op, "c", c)?,
        };
        shader::to_u32(op, "rows * c", rows as u64 * c as u64)?;
        for (name, buffer) in [("dx", dx), ("dout", dout), ("x", x)] {
            ctx.check_binding(op, name, buffer, rows * c)?;
        }
        ctx.check_binding(op, "rstd", rstd, rows)?;
        ctx.check_binding(op, "w", w, c)?;
        if rows == 0 || c == 0 {
            return Ok(());
        }
        let params = ctx.uniform("rmsnorm_backward params", &params);
        let bind_group = ctx.bind(
            "rmsnorm_backward bind group",
            &self.dx_layout,
            &[(dx, rows * c), (dout, rows * c), (x, rows * c), (rstd, rows), (w, c)],
            &params,
        );
        let workgroups = ctx.grid(op, rows as u64)?;
        ctx.dispatch(encoder, op, &self.dx, &bind_group, workgroups);
        Ok(())
    }

    /// dw (c) += sum over rows of dout * x * rstd, through `partials`
    /// (scratch of `dw_partials_len(rows, c)` elements).
    pub fn backward_dw(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dw: &wgpu::Buffer,
        partials: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        x: &wgpu::Buffer,
        rstd: &wgpu::Buffer,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let op = "rmsnorm_backward_dw";
        let chunks = rows.div_ceil(DW_CHUNK_ROWS as usize);
        let params = DwParams {
            rows: shader::to_u32(op, "rows", rows)?,
            c: shader::to_u32(op, "c", c)?,
            chunks: chunks as u32,
        };
        shader::to_u32(op, "rows * c", rows as u64 * c as u64)?;
        ctx.check_binding(op, "dw", dw, c)?;
        ctx.check_binding(op, "partials", partials, chunks * c)?;
        ctx.check_binding(op, "dout", dout, rows * c)?;
        ctx.check_binding(op, "x", x, rows * c)?;
        ctx.check_binding(op, "rstd", rstd, rows)?;
        if rows == 0 || c == 0 {
            return Ok(());
        }
        let params = ctx.uniform("rmsnorm_backward_dw params", &params);
        let bind_group = ctx.bind(
            "rmsnorm_backward_dw bind group",
            &self.dw_layout,
            &[
                (dw, c),
                (partials, chunks * c),
                (dout, rows * c),
                (x, rows * c),
                (rstd, rows),
            ],
            &params,
        );
        let wg = ELEMENT_WG as u64;
        let partial_groups = ctx.grid(op, ((chunks * c) as u64).div_ceil(wg))?;
        ctx.dispatch(
            encoder,
            "rmsnorm_dw_partial",
            &self.dw_partial,
            &bind_group,
            partial_groups,
        );
        let reduce_groups = ctx.grid(op, (c as u64).div_ceil(wg))?;
        ctx.dispatch(
            encoder,
            "rmsnorm_dw_reduce",
            &self.dw_reduce,
            &bind_group,
            reduce_groups,
        );
        Ok(())
    }
}
