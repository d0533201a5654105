//! The gradient run: the backward recorded layer by layer in reverse, the
//! batch's checks, the weights' and head scales' gradients, the optimizer's
//! state.

use super::*;
use crate::gpu::context::Recorder;

/// AdamW's state on the device.
#[derive(Debug)]
pub(super) struct OptState {
    pub(super) m: Vec<wgpu::Buffer>,
    pub(super) v: Vec<wgpu::Buffer>,
    pub(super) decay: Vec<wgpu::Buffer>,
    pub(super) stats: wgpu::Buffer,
    /// The gradient norm's partial sums over every slot.
    pub(super) partials: wgpu::Buffer,
    pub(super) step: u64,
}

/// The runs of predictions whose loss weight is not 0: a row of weight 0
/// adds nothing to the loss or to any gradient, so the LM head skips it
/// (a pass-key objective scores 5 positions of a document).
fn scored_rows(weights: &[f32]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, _) in weights.iter().enumerate().filter(|(_, &w)| w != 0.0) {
        match runs.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

impl GpuEngine {
    /// Records one sequence's backward (after `record_layers` with keep):
    /// weight gradients accumulated into `self.grads` when `full` (with
    /// the embedding's from `groups`, one per page), each layer's
    /// head-scale gradient copied into `dscales` at `dscale_offset + l * H`,
    /// the losses into `losses` at `losses_offset`. `scored`: the rows whose
    /// loss weight is not 0 (None: all), the only ones the LM head computes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_backward(
        &self,
        enc: &mut Recorder,
        seq: &SeqInputs,
        groups: Option<&[TokenGroupsBuffers]>,
        grad_weight: f32,
        full: bool,
        losses: &wgpu::Buffer,
        losses_offset: usize,
        dscales: &wgpu::Buffer,
        dscale_offset: usize,
        scored: Option<&[std::ops::Range<usize>]>,
    ) -> GpuResult<()> {
        self.record_lm_head(enc, seq, losses, losses_offset, None, Some(grad_weight), full, scored)?;
        let (ctx, k, cfg) = (&self.ctx, &self.kernels, &self.config);
        let ws = self.ws.as_ref().expect("workspace");
        let b = ws.backward.as_ref().expect("backward buffers");
        let t = seq.t;
        let pages = ws.pages(t);
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let shape = cfg.attn_shape(t);
        let mm = &k.matmul;
        let grads = if full { self.grads.as_deref() } else { None };
        let g = |slot: usize| grads.map(|g| &g[slot]);
        // Final norm: dx = RMSNorm'(dxf)
        let norm = self.norm_slot();
        for p in &pages {
            let (i, n) = (p.index, p.rows);
            enc.clear_buffer(&b.dx[i], 0, Some((n * c * 4) as u64));
            k.rmsnorm.backward_dx(
                ctx,
                enc,
                &b.dx[i],
                &b.dxf[i],
                &ws.x[i],
                &ws.rstd_f[i],
                self.whole(norm),
                n,
                c,
            )?;
            if let Some(dw) = g(norm) {
                k.rmsnorm
                    .backward_dw(ctx, enc, dw, &b.dw_partials, &b.dxf[i], &ws.x[i], &ws.rstd_f[i], n, c)?;
            }
        }
        for l in (0..cfg.num_layers).rev() {
            let lb = &ws.layers[l];
            let s = |which| self.slot(l, which);
            let w = |which| self.whole(s(which));
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                // MLP: x_out = x_mid + h Wd^T
                self.linear_input_grad(enc, &b.dh[i], &b.dx[i], s(W_DOWN), n, c, f, 0.0)?;
                if let Some(gw) = g(s(W_DOWN)) {
                    mm.matmul_tn(ctx, enc, gw, &b.dx[i], &lb.h[i], c, n, f, 1.0, 1.0)?;
                }
                k.swiglu.backward(ctx, enc, &b.dgu[i], &b.dh[i], &lb.gu[i], n, f)?;
                self.linear_input_grad(enc, &b.dxn[i], &b.dgu[i], s(GATE_UP), n, 2 * f, c, 0.0)?;
                if let Some(gw) = g(s(GATE_UP)) {
                    mm.matmul_tn(ctx, enc, gw, &b.dgu[i], &lb.xn2[i], 2 * f, n, c, 1.0, 1.0)?;
                }
                k.rmsnorm.backward_dx(
                    ctx,
                    enc,
                    &b.dx[i],
                    &b.dxn[i],
                    &lb.x_mid[i],
                    &lb.rstd2[i],
                    w(MLP_NORM),
                    n,
                    c,
                )?;
                if let Some(dw) = g(s(MLP_NORM)) {
                    k.rmsnorm.backward_dw(
                        ctx,
                        enc,
                        dw,
                        &b.dw_partials,
                        &b.dxn[i],
                        &lb.x_mid[i],
                        &lb.rstd2[i],
                        n,
                        c,
                    )?;
                }
                // Attention: x_mid = x_in + att Wo^T
                self.linear_input_grad(enc, &b.datt[i], &b.dx[i], s(WO), n, c, qd, 0.0)?;
                if let Some(gw) = g(s(WO)) {
                    mm.matmul_tn(ctx, enc, gw, &b.dx[i], &lb.att[i], c, n, qd, 1.0, 1.0)?;
                }
            }
            // dq and the scale gradient per query page over its key pages;
            // dk and dv per key page over its query pages.
            let attn = &k.attention;
            let hs = &self.head_scales[l];
            for (qi, &qp) in pages.iter().enumerate() {
                let i = qp.index;
                attn.backward_rowstats(
                    ctx,
                    enc,
                    &b.rowstats[i],
                    &b.datt[i],
                    &lb.att[i],
                    &lb.lse[i],
                    shape,
                    qp.rows,
                )?;
                for &kp in &pages[..=qi] {
                    let j = kp.index;
                    attn.backward_dq(
                        ctx,
                        enc,
                        &b.dq[i],
                        &b.dscale_partials,
                        &b.datt[i],
                        &lb.q[i],
                        &lb.k[j],
                        &lb.v[j],
                        &b.rowstats[i],
                        hs,
                        shape,
                        span(qp, kp),
                    )?;
                }
                attn.backward_dscale(ctx, enc, &b.ds, &b.dscale_partials, shape, qp.rows, qi > 0)?;
            }
            for (ki, &kp) in pages.iter().enumerate() {
                let j = kp.index;
                for &qp in &pages[ki..] {
                    let i = qp.index;
                    attn.backward_dkdv(
                        ctx,
                        enc,
                        &b.dk[j],
                        &b.dv[j],
                        &b.datt[i],
                        &lb.q[i],
                        &lb.k[j],
                        &lb.v[j],
                        &b.rowstats[i],
                        hs,
                        shape,
                        span(qp, kp),
                    )?;
                }
            }
            enc.copy_buffer_to_buffer(
                &b.ds,
                0,
                dscales,
                ((dscale_offset + l * hh) * 4) as u64,
                (hh * 4) as u64,
            );
            if l == 0 && !full {
                break; // a frozen model needs nothing below the first attention
            }
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                // Back through q_i <- r(i) q_i.
                if let Some(factors) = &seq.factors {
                    k.scale_rows.apply(ctx, enc, &b.dq[i], &factors[i], n, qd)?;
                }
                if let Some(tables) = ws.rope.get(i) {
                    k.rope.apply(ctx, enc, &b.dq[i], tables, n, hh, hd, true)?;
                    k.rope.apply(ctx, enc, &b.dk[i], tables, n, kvh, hd, true)?;
                }
                // dxn = dq Wq + dk Wk + dv Wv; dW{q,k,v} += d{q,k,v}^T xn1
                self.linear_input_grad(enc, &b.dxn[i], &b.dq[i], s(WQ), n, qd, c, 0.0)?;
                self.linear_input_grad(enc, &b.dxn[i], &b.dk[i], s(WK), n, kvd, c, 1.0)?;
                self.linear_input_grad(enc, &b.dxn[i], &b.dv[i], s(WV), n, kvd, c, 1.0)?;
                if full {
                    for (which, d, width) in [(WQ, &b.dq[i], qd), (WK, &b.dk[i], kvd), (WV, &b.dv[i], kvd)] {
                        let gw = g(s(which)).expect("full");
                        mm.matmul_tn(ctx, enc, gw, d, &lb.xn1[i], width, n, c, 1.0, 1.0)?;
                    }
                }
                k.rmsnorm.backward_dx(
                    ctx,
                    enc,
                    &b.dx[i],
                    &b.dxn[i],
                    &lb.x_in[i],
                    &lb.rstd1[i],
                    w(ATTN_NORM),
                    n,
                    c,
                )?;
                if let Some(dw) = g(s(ATTN_NORM)) {
                    k.rmsnorm
                        .backward_dw(ctx, enc, dw, &b.dw_partials, &b.dxn[i], &lb.x_in[i], &lb.rstd1[i], n, c)?;
                }
            }
        }
        if let (Some(gs), Some(groups)) = (grads, groups) {
            for p in &pages {
                k.embedding
                    .backward(ctx, enc, &gs[0], &b.dx[p.index], &groups[p.index], c, cfg.vocab_size)?;
            }
        }
        Ok(())
    }

    /// The shared batch checks, and that every sequence fits the device.
    pub(super) fn check_batch(
        &self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
    ) -> Result<()> {
        check_batch(&self.config, batch, loss_weights, head_scales)?;
        for seq in batch {
            self.check_fits(seq.len())?;
        }
        Ok(())
    }

    /// Runs the backward of every sequence of `batch` and reads back the
    /// losses and head-scale gradients; the weight gradients stay in
    /// `self.grads`. With `norm` (a full backward), their global norm and
    /// the clipping scale of `norm`'s max land in the optimizer's stats,
    /// the norm also in the result.
    pub(super) async fn run_gradients(
        &mut self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
        mode: GradMode,
        norm: Option<Option<f32>>,
    ) -> GpuResult<(f64, usize, Vec<f32>, Option<f32>)> {
        let cfg = self.config.clone();
        let full = mode == GradMode::Full;
        let t_max = batch.iter().map(Vec::len).max().unwrap_or(1);
        self.ensure_workspace(t_max, true, true).await?;
        if full && self.grads.is_none() {
            let mut grads = Vec::with_capacity(self.slots.len());
            for s in &self.slots {
                grads.push(self.ctx.zeros("weight gradient", s.len).await?);
            }
            self.grads = Some(grads);
        }
        self.upload_head_scales(head_scales)?;
        let predictions: usize = batch.iter().map(|s| s.len().saturating_sub(1)).sum();
        let total = match loss_weights {
            Some(w) => w.iter().flatten().map(|&x| x as f64).sum::<f64>(),
            None => predictions as f64,
        };
        let total = if total > 0.0 { total } else { 1.0 };
        let weight = (1.0 / total) as f32;
        let lh = cfg.num_layers * cfg.num_heads;
        let total_t: usize = batch.iter().map(Vec::len).sum();
        // [losses of every position | head-scale gradients per sequence | stats]
        let results = self
            .ctx
            .zeros("gradient results", total_t + batch.len() * lh + STATS_LEN)
            .await?;
        let (dscale_base, stats_base) = (total_t, total_t + batch.len() * lh);
        if full {
            let grads = self.grads.as_ref().expect("made above");
            self.ctx
                .submit("zero the gradients", |enc| {
                    for g in grads {
                        enc.clear_buffer(g, 0, None);
                    }
                    Ok(())
                })
                .await?;
        }
        let mut offset = 0;
        for (i, tokens) in batch.iter().enumerate() {
            let seq = self
                .upload_sequence(tokens, loss_weights.map(|w| &w[i][..]), head_scales)
                .await?;
            // The embedding's gradient groups, page by page.
            let mut groups = Vec::new();
            if full {
                let ws = self.ws.as_ref().expect("workspace");
                for p in ws.pages(tokens.len()) {
                    let page = TokenGroups::new(&tokens[p.first..p.first + p.rows], cfg.vocab_size)?;
                    groups.push(TokenGroupsBuffers::upload(&self.ctx, &page).await?);
                }
            }
            let scored = loss_weights.map(|w| scored_rows(&w[i]));
            self.ctx
                .submit("backward", |enc| {
                    self.record_layers(enc, &seq, true, None)?;
                    self.record_backward(
                        enc,
                        &seq,
                        full.then_some(&groups[..]),
                        weight,
                        full,
                        &results,
                        offset,
                        &results,
                        dscale_base + i * lh,
                        scored.as_deref(),
                    )
                })
                .await?;
            offset += tokens.len();
        }
        if let (Some(clip), true) = (norm, full) {
            let opt = self.opt.as_ref().expect("optimizer state");
            let grads = self.grads.as_ref().expect("made above");
            let parts: Vec<(&wgpu::Buffer, usize)> = grads.iter().zip(&self.slots).map(|(g, s)| (g, s.len)).collect();
            self.ctx
                .submit("gradient norm", |enc| {
                    self.kernels
                        .optim
                        .grad_norm_parts(&self.ctx, enc, &opt.stats, &opt.partials, &parts, clip)?;
                    enc.copy_buffer_to_buffer(&opt.stats, 0, &results, (stats_base * 4) as u64, (STATS_LEN * 4) as u64);
                    Ok(())
                })
                .await?;
        }
        let all = self
            .ctx
            .read_f32("losses and head-scale gradients", &results, stats_base + STATS_LEN)
            .await?;
        // sum_i w_i l_i in f64, sequence by sequence (a sequence's last row
        // predicts nothing).
        let mut loss_sum = 0f64;
        let mut row0 = 0;
        for (s, tokens) in batch.iter().enumerate() {
            let losses = &all[row0..row0 + tokens.len().saturating_sub(1)];
            loss_sum += match loss_weights {
                Some(w) => losses
                    .iter()
                    .zip(&w[s])
                    .map(|(&l, &w)| l as f64 * w as f64)
                    .sum::<f64>(),
                None => losses.iter().map(|&l| l as f64).sum::<f64>(),
            };
            row0 += tokens.len();
        }
        let mut dscales = vec![0f32; lh];
        for i in 0..batch.len() {
            let d = &all[dscale_base + i * lh..dscale_base + (i + 1) * lh];
            for (a, &b) in dscales.iter_mut().zip(d) {
                *a += b;
            }
        }
        let norm_value = norm.map(|_| all[stats_base]);
        Ok((loss_sum / total, predictions, dscales, norm_value))
    }

    /// The slots' buffers copied into one flat vector (layout order).
    pub(super) async fn read_flat(&self, what: &str, pieces: &[(usize, usize, &wgpu::Buffer)]) -> GpuResult<Vec<f32>> {
        let n = self.layout.total;
        // A model larger than one buffer may be (a 1.1B model in f32 is
        // 4.4 GB; many devices allow 2 to 4 GiB) is read piece by piece,
        // each piece from its own buffer; else in one copy and one read.
        if (n as u64).saturating_mul(4) > self.ctx.limits().max_buffer_size {
            let mut flat = vec![0f32; n];
            for &(offset, len, b) in pieces {
                let part = self.ctx.read_f32(what, b, len).await?;
                flat[offset..offset + len].copy_from_slice(&part);
            }
            return Ok(flat);
        }
        let flat = self.ctx.zeros(what, n).await?;
        self.ctx
            .submit(what, |enc| {
                for &(offset, len, b) in pieces {
                    enc.copy_buffer_to_buffer(b, 0, &flat, (offset * 4) as u64, (len * 4) as u64);
                }
                Ok(())
            })
            .await?;
        self.ctx.read_f32(what, &flat, n).await
    }

    /// The weights read back when the matrices are held in f16: each
    /// part's 4-byte words, two f16 values each (the first in the low
    /// half), widened to f32; the gains read as f32.
    pub(super) async fn read_f16_weights(&self) -> GpuResult<Vec<f32>> {
        let mut flat = vec![0f32; self.layout.total];
        for (s, parts) in self.slots.iter().zip(&self.weights) {
            let row = s.split_row.unwrap_or(s.len);
            for p in parts {
                let (start, len) = match s.split_row {
                    Some(_) => (s.offset + p.rows.start * row, p.rows.len() * row),
                    None => (s.offset, s.len),
                };
                let words = self.ctx.read_f32("weights", &p.buffer, p.elem.words(len)).await?;
                let out = &mut flat[start..start + len];
                match p.elem {
                    crate::gpu::shader::Elem::F32 => out.copy_from_slice(&words),
                    crate::gpu::shader::Elem::F16 => {
                        for (k, o) in out.iter_mut().enumerate() {
                            let bits = words[k / 2].to_bits() >> (16 * (k % 2)) as u32;
                            *o = half::f16::from_bits(bits as u16).to_f32();
                        }
                    }
                }
            }
        }
        Ok(flat)
    }

    pub(super) async fn ensure_optimizer(&mut self) -> GpuResult<()> {
        if self.opt.is_some() {
            return Ok(());
        }
        let (mut m, mut v, mut decay) = (Vec::new(), Vec::new(), Vec::new());
        for s in &self.slots {
            m.push(self.ctx.zeros("adamw m", s.len).await?);
            v.push(self.ctx.zeros("adamw v", s.len).await?);
            let flags = vec![!s.norm; s.len];
            let words = pack_decay_flags(Some(&flags), s.len);
            debug_assert_eq!(words.len(), decay_words(s.len));
            decay.push(self.ctx.upload("decay flags", &words).await?);
        }
        self.opt = Some(OptState {
            m,
            v,
            decay,
            stats: self.ctx.zeros("optimizer stats", STATS_LEN).await?,
            partials: self
                .ctx
                .zeros(
                    "gradient norm partials",
                    norm_partials_len_parts(self.slots.iter().map(|s| s.len)),
                )
                .await?,
            step: 0,
        });
        Ok(())
    }
}
