//! Row scaling in place (`shaders/scale_rows.wgsl`): x[r, :] *= factors[r].
//! The engine applies a head-scale rule's per-position factor r(i) to the
//! query rows after projection (and RoPE), and to the query gradient before
//! going back through them. The CPU twin is `model::cpu::ops::scale_rows`.
//! The factors are computed on the host (`HeadScales::position_factors`),
//! so both engines use the same f32 values.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::Result;
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::ELEMENT_WG;

/// Mirrors `Params` in scale_rows.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ScaleRowsParams {
    pub rows: u32,
    pub width: u32,
}

pub fn shaders() -> [ShaderSource; 1] {
    [ShaderSource::new(
        "scale_rows.wgsl",
        include_str!("../../shaders/scale_rows.wgsl"),
        &[("WG", ELEMENT_WG)],
    )
    .bind(
        &[("x", Access::ReadWrite), ("factors", Access::Read)],
        uniform_layout!(ScaleRowsParams: rows, width),
    )]
}

#[derive(Debug)]
pub struct ScaleRows {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl ScaleRows {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [src] = shaders();
        let (layout, mut p) = shader::build(ctx, &src, &["scale_rows"]).await?;
        Ok(ScaleRows {
            layout,
            pipeline: p.remove(0),
        })
    }

    /// x (rows, width) row r times factors[r], in place.
    pub fn apply(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        x: &wgpu::Buffer,
        factors: &wgpu::Buffer,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        let op = "scale_rows";
        shader::to_u32(op, "rows * width", rows as u64 * width as u64)?;
        let params = ScaleRowsParams {
            rows: rows as u32,
            width: width as u32,
        };
        ctx.check_binding(op, "x", x, rows * width)?;
        ctx.check_binding(op, "factors", factors, rows)?;
        if rows * width == 0 {
            return Ok(());
        }
        let params = ctx.uniform("scale_rows params", &params);
        let bind_group = ctx.bind(
            "scale_rows bind group",
            &self.layout,
            &[(x, rows * width), (factors, rows)],
            &params,
        );
        let workgroups = ctx.grid(op, ((rows * width) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.pipeline, &bind_group, workgroups);
        Ok(())
    }
}
