//! Cross-entropy over rows of logits, forward and backward in one pass
//! (`shaders/cross_entropy.wgsl`): one workgroup per row, the max and the
//! sum of exponentials reduced in workgroup memory. The CPU twin is
//! `model::cpu::ops::cross_entropy_row`: per row, loss = lse - z[target]
//! and, optionally, the row overwritten by (softmax - onehot) * weight,
//! the weight being a common factor times the row's own loss weight.
//!
//! Targets come as a buffer with `NO_TARGET` where a row predicts nothing
//! (a sequence's last position): its loss is 0 and its gradient row 0, as
//! the CPU engine's LM head does. Losses stay per row; the caller sums them.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::Result;
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::ROW_WG;

/// The target of a row that predicts nothing.
pub const NO_TARGET: u32 = u32::MAX;

/// Mirrors `Params` in cross_entropy.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct CrossEntropyParams {
    pub rows: u32,
    pub vocab: u32,
    pub grad_weight: f32,
    pub write_grad: u32,
}

pub fn shaders() -> [ShaderSource; 1] {
    [ShaderSource::new(
        "cross_entropy.wgsl",
        &shader::include(
            include_str!("../../shaders/cross_entropy.wgsl"),
            &[shader::WORKGROUP_REDUCE],
        ),
        &[("ROW_WG", ROW_WG), ("NO_TARGET", NO_TARGET)],
    )
    .bind(
        &[
            ("losses", Access::ReadWrite),
            ("z", Access::ReadWrite),
            ("targets", Access::Read),
            ("row_weights", Access::Read),
        ],
        uniform_layout!(CrossEntropyParams: rows, vocab, grad_weight, write_grad),
    )]
}

/// The targets of a sequence's rows of logits: row i predicts token i + 1;
/// the last row predicts nothing.
pub fn next_token_targets(tokens: &[u32]) -> Vec<u32> {
    tokens
        .iter()
        .skip(1)
        .copied()
        .chain(tokens.first().map(|_| NO_TARGET))
        .collect()
}

#[derive(Debug)]
pub struct CrossEntropy {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl CrossEntropy {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [src] = shaders();
        let (layout, mut p) = shader::build(ctx, &src, &["cross_entropy"]).await?;
        Ok(CrossEntropy {
            layout,
            pipeline: p.remove(0),
        })
    }

    /// losses (rows) = lse(z) - z[target] per row of z (rows, vocab); with
    /// `grad_weight`, z is overwritten by (softmax(z) - onehot) *
    /// grad_weight * row_weights[row]. Targets (rows) must be below `vocab`
    /// or `NO_TARGET` (checked where they come from, on the host).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        losses: &wgpu::Buffer,
        z: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        row_weights: &wgpu::Buffer,
        rows: usize,
        vocab: usize,
        grad_weight: Option<f32>,
    ) -> Result<()> {
        let op = "cross_entropy";
        shader::to_u32(op, "rows * vocab", rows as u64 * vocab as u64)?;
        let params = CrossEntropyParams {
            rows: shader::to_u32(op, "rows", rows)?,
            vocab: shader::to_u32(op, "vocab", vocab)?,
            grad_weight: grad_weight.unwrap_or(0.0),
            write_grad: grad_weight.is_some() as u32,
        };
        ctx.check_binding(op, "losses", losses, rows)?;
        ctx.check_binding(op, "z", z, rows * vocab)?;
        ctx.check_binding(op, "targets", targets, rows)?;
        ctx.check_binding(op, "row_weights", row_weights, rows)?;
        if rows == 0 || vocab == 0 {
            return Ok(());
        }
        let params = ctx.uniform("cross_entropy params", &params);
        let bind_group = ctx.bind(
            "cross_entropy bind group",
            &self.layout,
            &[(losses, rows), (z, rows * vocab), (targets, rows), (row_weights, rows)],
            &params,
        );
        let workgroups = ctx.grid(op, rows as u64)?;
        ctx.dispatch(encoder, op, &self.pipeline, &bind_group, workgroups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_row_predicts_nothing() {
        assert_eq!(next_token_targets(&[5, 6, 7]), vec![6, 7, NO_TARGET]);
        assert_eq!(next_token_targets(&[5]), vec![NO_TARGET]);
        assert!(next_token_targets(&[]).is_empty());
    }
}
