//! Embedding gather and its scatter-add backward
//! (`shaders/embedding_forward.wgsl`, `shaders/embedding_backward.wgsl`).
//! The CPU twins are `model::cpu::ops::{embedding_forward, embedding_backward}`.
//!
//! The backward needs no atomics and is deterministic: the token ids are on
//! the host anyway, so the host groups each distinct token's positions (a
//! stable counting sort, `TokenGroups`) and the GPU sums each group's rows
//! of the gradient in position order, the same additions in the same order
//! as the CPU twin.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::{Error, Result};
use super::shader::{self, uniform_layout, Access, Elem, ShaderSource, Weight};
use super::ELEMENT_WG;

/// Mirrors `Params` in embedding_forward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ForwardParams {
    pub tokens: u32,
    pub c: u32,
    pub vocab: u32,
    /// The first row of the table that `embed` holds, and how many.
    pub row0: u32,
    pub rows: u32,
}

/// Mirrors `Params` in embedding_backward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BackwardParams {
    pub groups: u32,
    pub c: u32,
}

pub fn shaders() -> [ShaderSource; 2] {
    use Access::{Read, ReadWrite};
    [
        ShaderSource::new(
            "embedding_forward.wgsl",
            include_str!("../../shaders/embedding_forward.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(
            &[("out", ReadWrite), ("embed", Read), ("tokens", Read)],
            uniform_layout!(ForwardParams: tokens, c, vocab, row0, rows),
        ),
        ShaderSource::new(
            "embedding_backward.wgsl",
            include_str!("../../shaders/embedding_backward.wgsl"),
            &[("WG", ELEMENT_WG)],
        )
        .bind(
            &[
                ("dembed", ReadWrite),
                ("dout", Read),
                ("rows", Read),
                ("starts", Read),
                ("positions", Read),
            ],
            uniform_layout!(BackwardParams: groups, c),
        ),
    ]
}

/// The gather from an f16 table (sums none: values widened to f32).
pub fn f16_shaders() -> [ShaderSource; 1] {
    let [forward, _] = shaders();
    [forward.with_f16_weights("embedding_forward.wgsl (f16 weights)")]
}

/// The positions of each distinct token, grouped: token `rows[u]` occurs at
/// `positions[starts[u]..starts[u + 1]]`, ascending; `rows` ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGroups {
    /// The vocabulary the ids were checked against.
    pub vocab: usize,
    pub rows: Vec<u32>,
    pub starts: Vec<u32>,
    pub positions: Vec<u32>,
}

impl TokenGroups {
    /// A stable counting sort of the positions by token id; Err names the
    /// first token id past the vocabulary.
    pub fn new(tokens: &[u32], vocab: usize) -> Result<Self> {
        let op = "embedding_backward";
        shader::to_u32(op, "tokens", tokens.len())?;
        let mut counts = vec![0u32; vocab];
        for (i, &t) in tokens.iter().enumerate() {
            let slot = counts.get_mut(t as usize).ok_or_else(|| Error::Shape {
                op,
                message: format!("token id {t} at position {i} is past the vocabulary of {vocab}"),
            })?;
            *slot += 1;
        }
        let (mut rows, mut starts) = (Vec::new(), vec![0u32]);
        // first[v]: where token v's positions begin in `positions`.
        let mut first = vec![0u32; vocab];
        let mut next = 0u32;
        for (v, &n) in counts.iter().enumerate() {
            if n > 0 {
                rows.push(v as u32);
                first[v] = next;
                next += n;
                starts.push(next);
            }
        }
        let mut positions = vec![0u32; tokens.len()];
        for (i, &t) in tokens.iter().enumerate() {
            let slot = &mut first[t as usize];
            positions[*slot as usize] = i as u32;
            *slot += 1;
        }
        Ok(TokenGroups {
            vocab,
            rows,
            starts,
            positions,
        })
    }
}

/// `TokenGroups` on the device, uploaded once per batch.
#[derive(Debug)]
pub struct TokenGroupsBuffers {
    pub rows: wgpu::Buffer,
    pub starts: wgpu::Buffer,
    pub positions: wgpu::Buffer,
    /// Distinct tokens.
    pub groups: usize,
    /// Positions (T).
    pub tokens: usize,
    pub vocab: usize,
}

impl TokenGroupsBuffers {
    pub async fn upload(ctx: &GpuContext, groups: &TokenGroups) -> Result<Self> {
        Ok(TokenGroupsBuffers {
            rows: ctx.upload("embedding token rows", &groups.rows).await?,
            starts: ctx.upload("embedding token starts", &groups.starts).await?,
            positions: ctx.upload("embedding token positions", &groups.positions).await?,
            groups: groups.rows.len(),
            tokens: groups.positions.len(),
            vocab: groups.vocab,
        })
    }
}

#[derive(Debug)]
pub struct Embedding {
    forward_layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    /// The gather from an f16 table, where the device has `shader-f16`.
    forward_f16: Option<wgpu::ComputePipeline>,
    backward_layout: wgpu::BindGroupLayout,
    backward: wgpu::ComputePipeline,
}

impl Embedding {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [forward_src, backward_src] = shaders();
        let (forward_layout, mut p) = shader::build(ctx, &forward_src, &["embedding_forward"]).await?;
        let forward = p.remove(0);
        let forward_f16 = match ctx.has_f16() {
            true => {
                let [src] = f16_shaders();
                Some(shader::build(ctx, &src, &["embedding_forward"]).await?.1.remove(0))
            }
            false => None,
        };
        let (backward_layout, mut p) = shader::build(ctx, &backward_src, &["embedding_backward"]).await?;
        let backward = p.remove(0);
        Ok(Embedding {
            forward_layout,
            forward,
            forward_f16,
            backward_layout,
            backward,
        })
    }

    /// out (t, c) = embed (vocab, c) [tokens (t)]. Token ids must be below
    /// `vocab` (checked where they come from, on the host).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        out: &wgpu::Buffer,
        embed: &wgpu::Buffer,
        tokens: &wgpu::Buffer,
        t: usize,
        c: usize,
        vocab: usize,
    ) -> Result<()> {
        self.forward_rows(ctx, encoder, out, Weight::f32(embed), tokens, t, c, vocab, 0..vocab)
    }

    /// The gather from one part of a table split by rows: `part` holds
    /// rows `rows` of the (vocab, c) table, and out (t, c) receives the
    /// rows of the tokens in that range, the other rows left as they are.
    /// One dispatch per part, in any order, makes the whole gather.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        out: &wgpu::Buffer,
        part: Weight,
        tokens: &wgpu::Buffer,
        t: usize,
        c: usize,
        vocab: usize,
        rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let op = "embedding_forward";
        if rows.end > vocab || rows.start > rows.end {
            return Err(Error::Shape {
                op,
                message: format!("rows {rows:?} of a table of {vocab} rows"),
            });
        }
        if vocab == 0 && t > 0 {
            return Err(Error::Shape {
                op,
                message: format!("{t} tokens and an empty vocabulary"),
            });
        }
        let n_rows = rows.end - rows.start;
        let params = ForwardParams {
            tokens: shader::to_u32(op, "t", t)?,
            c: shader::to_u32(op, "c", c)?,
            vocab: shader::to_u32(op, "vocab", vocab)?,
            row0: shader::to_u32(op, "first row", rows.start)?,
            rows: shader::to_u32(op, "rows", n_rows)?,
        };
        shader::to_u32(op, "t * c", t as u64 * c as u64)?;
        shader::to_u32(op, "rows * c", n_rows as u64 * c as u64)?;
        ctx.check_binding(op, "out", out, t * c)?;
        let part_words = part.elem.words(n_rows * c);
        ctx.check_binding(op, "embed", part.buffer, part_words)?;
        ctx.check_binding(op, "tokens", tokens, t)?;
        if t == 0 || c == 0 || n_rows == 0 {
            return Ok(());
        }
        let params = ctx.uniform("embedding_forward params", &params);
        let bind_group = ctx.bind(
            "embedding_forward bind group",
            &self.forward_layout,
            &[(out, t * c), (part.buffer, part_words), (tokens, t)],
            &params,
        );
        let pipeline = match part.elem {
            Elem::F32 => &self.forward,
            Elem::F16 => self.forward_f16.as_ref().ok_or_else(|| Error::Shape {
                op,
                message: format!("an f16 table, and {} has no shader-f16", ctx.adapter()),
            })?,
        };
        let workgroups = ctx.grid(op, ((t * c) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
        Ok(())
    }

    /// dembed (vocab, c) [tokens[i]] += dout (t, c) [i], through the
    /// host-grouped positions.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dembed: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        groups: &TokenGroupsBuffers,
        c: usize,
        vocab: usize,
    ) -> Result<()> {
        let op = "embedding_backward";
        let t = groups.tokens;
        if groups.vocab != vocab {
            return Err(Error::Shape {
                op,
                message: format!(
                    "token groups were checked against a vocabulary of {}, dembed has {vocab} rows",
                    groups.vocab
                ),
            });
        }
        let params = BackwardParams {
            groups: shader::to_u32(op, "groups", groups.groups)?,
            c: shader::to_u32(op, "c", c)?,
        };
        shader::to_u32(op, "t * c", t as u64 * c as u64)?;
        shader::to_u32(op, "vocab * c", vocab as u64 * c as u64)?;
        ctx.check_binding(op, "dembed", dembed, vocab * c)?;
        ctx.check_binding(op, "dout", dout, t * c)?;
        ctx.check_binding(op, "rows", &groups.rows, groups.groups)?;
        ctx.check_binding(op, "starts", &groups.starts, groups.groups + 1)?;
        ctx.check_binding(op, "positions", &groups.positions, t)?;
        if t == 0 || c == 0 {
            return Ok(());
        }
        let params = ctx.uniform("embedding_backward params", &params);
        let bind_group = ctx.bind(
            "embedding_backward bind group",
            &self.backward_layout,
            &[
                (dembed, vocab * c),
                (dout, t * c),
                (&groups.rows, groups.groups),
                (&groups.starts, groups.groups + 1),
                (&groups.positions, t),
            ],
            &params,
        );
        let workgroups = ctx.grid(op, ((groups.groups * c) as u64).div_ceil(ELEMENT_WG as u64))?;
        ctx.dispatch(encoder, op, &self.backward, &bind_group, workgroups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_groups_are_a_stable_counting_sort() {
        let g = TokenGroups::new(&[3, 1, 3, 0, 1, 3], 5).unwrap();
        assert_eq!(g.rows, vec![0, 1, 3]);
        assert_eq!(g.starts, vec![0, 1, 3, 6]);
        assert_eq!(g.positions, vec![3, 1, 4, 0, 2, 5]);
        let empty = TokenGroups::new(&[], 5).unwrap();
        assert_eq!((empty.rows.len(), empty.starts, empty.positions.len()), (0, vec![0], 0));
        let e = TokenGroups::new(&[0, 7], 5).unwrap_err().to_string();
        assert!(e.contains("token id 7 at position 1"), "{e}");
    }
}
