//! Recording the forward, step by step as `model::cpu::transformer` computes
//! it: embedding, per layer norm, projections, scaled attention with its
//! entropy, the MLP; then the LM head and the loss.

use super::*;
use crate::gpu::context::Recorder;
use crate::gpu::matmul::Strided;

impl GpuEngine {
    /// y (rows, n) = x (rows, k) W^T + beta y, W the (n, k) matrix of
    /// `slot` (f32 or f16): a `Linear` forward.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        enc: &mut Recorder,
        y: &wgpu::Buffer,
        x: &wgpu::Buffer,
        slot: usize,
        rows: usize,
        k: usize,
        n: usize,
        beta: f32,
    ) -> GpuResult<()> {
        let y = Strided::dense(y, n);
        self.kernels
            .matmul
            .matmul_nt_into(&self.ctx, enc, y, x, self.weight(slot), rows, k, n, 1.0, beta)
    }

    /// dx (rows, k) = dy (rows, n) W + beta dx, W the (n, k) matrix of
    /// `slot`: a `Linear`'s input gradient.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_input_grad(
        &self,
        enc: &mut Recorder,
        dx: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        slot: usize,
        rows: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) -> GpuResult<()> {
        let dy = Strided::dense(dy, n);
        self.kernels
            .matmul
            .matmul_nn_from(&self.ctx, enc, dx, dy, self.weight(slot), rows, n, k, 1.0, beta)
    }

    /// Records the forward through the layers (no LM head): x holds the
    /// last layer's output. With `keep`, layer l's activations stay in
    /// `ws.layers[l]`; `entropy` (L, H, T) receives each layer's entropy.
    pub(super) fn record_layers(
        &self,
        enc: &mut Recorder,
        seq: &SeqInputs,
        keep: bool,
        entropy: Option<&wgpu::Buffer>,
    ) -> GpuResult<()> {
        let (ctx, k, cfg) = (&self.ctx, &self.kernels, &self.config);
        let ws = self.ws.as_ref().expect("workspace");
        let t = seq.t;
        let pages = ws.pages(t);
        let (c, f, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps as f32;
        let shape = cfg.attn_shape(t);
        for p in &pages {
            let (i, n) = (p.index, p.rows);
            for part in &self.weights[0] {
                let rows = part.rows.clone();
                k.embedding
                    .forward_rows(ctx, enc, &ws.x[i], part.weight(), &seq.tokens[i], n, c, vocab, rows)?;
            }
        }
        for l in 0..cfg.num_layers {
            let lb = &ws.layers[if keep { l } else { 0 }];
            let w = |which| self.whole(self.slot(l, which));
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                k.rmsnorm
                    .forward(ctx, enc, &lb.xn1[i], &lb.rstd1[i], &ws.x[i], w(ATTN_NORM), n, c, eps)?;
                self.linear(enc, &lb.q[i], &lb.xn1[i], self.slot(l, WQ), n, c, qd, 0.0)?;
                self.linear(enc, &lb.k[i], &lb.xn1[i], self.slot(l, WK), n, c, kvd, 0.0)?;
                self.linear(enc, &lb.v[i], &lb.xn1[i], self.slot(l, WV), n, c, kvd, 0.0)?;
                if let Some(tables) = ws.rope.get(i) {
                    k.rope.apply(ctx, enc, &lb.q[i], tables, n, hh, hd, false)?;
                    k.rope.apply(ctx, enc, &lb.k[i], tables, n, kvh, hd, false)?;
                }
                // The scale rule: q_i <- r(i) q_i.
                if let Some(factors) = &seq.factors {
                    k.scale_rows.apply(ctx, enc, &lb.q[i], &factors[i], n, qd)?;
                }
            }
            // Query page i over key pages 0..=i, the softmax carried in
            // attn_state; the page's rows are done with its own keys.
            for (qi, &qp) in pages.iter().enumerate() {
                let i = qp.index;
                for &kp in &pages[..=qi] {
                    k.attention.forward_span(
                        ctx,
                        enc,
                        &lb.att[i],
                        &lb.lse[i],
                        &ws.entropy,
                        &ws.attn_state,
                        &lb.q[i],
                        &lb.k[kp.index],
                        &lb.v[kp.index],
                        &self.head_scales[l],
                        shape,
                        span(qp, kp),
                    )?;
                }
                if let Some(all) = entropy {
                    // (H, rows) into (L, H, T): one copy per head, or one
                    // for all when the page is the whole sequence.
                    let n = qp.rows;
                    let runs = if n == t {
                        vec![(0, hh * n)]
                    } else {
                        (0..hh).map(|h| (h, n)).collect()
                    };
                    for (h, len) in runs {
                        let dst = (l * hh + h) * t + qp.first;
                        enc.copy_buffer_to_buffer(
                            &ws.entropy,
                            (h * n * 4) as u64,
                            all,
                            (dst * 4) as u64,
                            (len * 4) as u64,
                        );
                    }
                }
            }
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                if keep {
                    enc.copy_buffer_to_buffer(&ws.x[i], 0, &lb.x_in[i], 0, (n * c * 4) as u64);
                }
                // x += att Wo^T
                self.linear(enc, &ws.x[i], &lb.att[i], self.slot(l, WO), n, qd, c, 1.0)?;
                k.rmsnorm
                    .forward(ctx, enc, &lb.xn2[i], &lb.rstd2[i], &ws.x[i], w(MLP_NORM), n, c, eps)?;
                // [g u] = xn2 [Wg; Wu]^T
                self.linear(enc, &lb.gu[i], &lb.xn2[i], self.slot(l, GATE_UP), n, c, 2 * f, 0.0)?;
                k.swiglu.forward(ctx, enc, &lb.h[i], &lb.gu[i], n, f)?;
                if keep {
                    enc.copy_buffer_to_buffer(&ws.x[i], 0, &lb.x_mid[i], 0, (n * c * 4) as u64);
                }
                // x += h Wd^T
                self.linear(enc, &ws.x[i], &lb.h[i], self.slot(l, W_DOWN), n, f, c, 1.0)?;
            }
        }
        let norm = self.whole(self.norm_slot());
        for p in &pages {
            let (i, n) = (p.index, p.rows);
            k.rmsnorm
                .forward(ctx, enc, &ws.xf[i], &ws.rstd_f[i], &ws.x[i], norm, n, c, eps)?;
        }
        Ok(())
    }

    /// Records the LM head over xf in chunks of rows within each page:
    /// per-row losses into `losses` (T, the last 0) from `losses_offset`
    /// on; the kept rows of logits into `logits` from row `first_kept`.
    /// With `grad_weight`, also dxf and (`weight_grad`) the head's weight
    /// gradient. With `only`, just those rows of the sequence (the ones
    /// whose loss weight is not 0): the others' losses are left as they
    /// are (the caller's zeros) and their dxf rows are 0.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_lm_head(
        &self,
        enc: &mut Recorder,
        seq: &SeqInputs,
        losses: &wgpu::Buffer,
        losses_offset: usize,
        logits: Option<(&wgpu::Buffer, usize)>,
        grad_weight: Option<f32>,
        weight_grad: bool,
        only: Option<&[std::ops::Range<usize>]>,
    ) -> GpuResult<()> {
        let (ctx, k, cfg) = (&self.ctx, &self.kernels, &self.config);
        let ws = self.ws.as_ref().expect("workspace");
        let (c, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let head = &self.weights[self.lm_head_slot()];
        for p in ws.pages(seq.t) {
            let i = p.index;
            // The page's rows to compute, page-relative.
            let segments: Vec<(usize, usize)> = match only {
                None => vec![(0, p.rows)],
                Some(ranges) => ranges
                    .iter()
                    .map(|r| (r.start.max(p.first), r.end.min(p.first + p.rows)))
                    .filter(|(a, b)| a < b)
                    .map(|(a, b)| (a - p.first, b - p.first))
                    .collect(),
            };
            if only.is_some() && grad_weight.is_some() {
                // The rows skipped have no gradient.
                let b = ws.backward.as_ref().expect("backward buffers");
                enc.clear_buffer(&b.dxf[i], 0, Some((p.rows * c * 4) as u64));
            }
            // Each segment in chunks of at most `ws.chunk` rows.
            let chunks = segments
                .into_iter()
                .flat_map(|(a, b)| (a..b).step_by(ws.chunk).map(move |s0| (s0, ws.chunk.min(b - s0))));
            for (s0, n) in chunks {
                let r0 = p.first + s0;
                // The chunk's rows of xf and targets, copied to offset 0 (a
                // binding starts at 0) unless the chunk is the whole page.
                let whole = n == p.rows;
                let xfc = if whole {
                    &ws.xf[i]
                } else {
                    enc.copy_buffer_to_buffer(&ws.xf[i], (s0 * c * 4) as u64, &ws.xf_chunk, 0, (n * c * 4) as u64);
                    &ws.xf_chunk
                };
                let (targets, weights) = if whole {
                    (&seq.targets[i], &seq.weights[i])
                } else {
                    enc.copy_buffer_to_buffer(&seq.targets[i], (s0 * 4) as u64, &ws.target_chunk, 0, (n * 4) as u64);
                    enc.copy_buffer_to_buffer(&seq.weights[i], (s0 * 4) as u64, &ws.weight_chunk, 0, (n * 4) as u64);
                    (&ws.target_chunk, &ws.weight_chunk)
                };
                // z[:, part] = xf W[part]^T, one product per part of W.
                for part in head {
                    let z = Strided {
                        buffer: &ws.z,
                        ld: vocab,
                        offset: part.rows.start,
                    };
                    let rows = part.rows.len();
                    k.matmul
                        .matmul_nt_into(ctx, enc, z, xfc, part.weight(), n, c, rows, 1.0, 0.0)?;
                }
                if let Some((kept, first_kept)) = logits {
                    let from = first_kept.max(r0);
                    if from < r0 + n {
                        let row = (vocab * 4) as u64;
                        enc.copy_buffer_to_buffer(
                            &ws.z,
                            (from - r0) as u64 * row,
                            kept,
                            (from - first_kept) as u64 * row,
                            (r0 + n - from) as u64 * row,
                        );
                    }
                }
                k.cross_entropy.forward_backward(
                    ctx,
                    enc,
                    &ws.loss_chunk,
                    &ws.z,
                    targets,
                    weights,
                    n,
                    vocab,
                    grad_weight,
                )?;
                enc.copy_buffer_to_buffer(
                    &ws.loss_chunk,
                    0,
                    losses,
                    ((losses_offset + r0) * 4) as u64,
                    (n * 4) as u64,
                );
                if grad_weight.is_some() {
                    let b = ws.backward.as_ref().expect("backward buffers");
                    // dxf = dz W, dW += dz^T xf
                    let dxfc = if whole { &b.dxf[i] } else { &b.dxf_chunk };
                    for (j, part) in head.iter().enumerate() {
                        let dz = Strided {
                            buffer: &ws.z,
                            ld: vocab,
                            offset: part.rows.start,
                        };
                        let (rows, beta) = (part.rows.len(), if j == 0 { 0.0 } else { 1.0 });
                        k.matmul
                            .matmul_nn_from(ctx, enc, dxfc, dz, part.weight(), n, rows, c, 1.0, beta)?;
                    }
                    if !whole {
                        enc.copy_buffer_to_buffer(&b.dxf_chunk, 0, &b.dxf[i], (s0 * c * 4) as u64, (n * c * 4) as u64);
                    }
                    if weight_grad {
                        let g = &self.grads.as_ref().expect("gradient buffers")[self.lm_head_slot()];
                        // Full gradients refuse split weights (`check_trainable`).
                        k.matmul.matmul_tn(ctx, enc, g, &ws.z, xfc, vocab, n, c, 1.0, 1.0)?;
                    }
                }
            }
        }
        Ok(())
    }
}
