//! Paging and the workspace: how many rows a page holds, the buffers of
//! each page made once per length, and the sequence's uploads.

use super::*;

/// Device bytes the engine holds for `cfg` at `t` tokens, for a forward
/// with entropy (`model::memory`): the f32 weights, and per token the
/// residual stream, norms, q, k, v, the attention output and state,
/// gate/up and SwiGLU of one layer, the final norm, the tokens, targets
/// and loss weights; one chunk of logits; the entropy (L, H, T) and its
/// read-back copy; the split attention forward's partial sums. The weights in `elem` (f16 halves them).
pub fn footprint(cfg: &ModelConfig, t: usize, elem: crate::gpu::shader::Elem) -> crate::model::memory::Footprint {
    let crate::model::memory::Widths {
        c,
        f,
        qd,
        kvd,
        h,
        layers,
    } = crate::model::memory::Widths::of(cfg);
    let per_token = 4 * c + 2 * qd + 2 * kvd + 3 * f + 5 * h + 6 + 2 * layers * h;
    // One chunk of logits, and the attention forward's partial sums where
    // it splits the keys of a short sequence (real GPUs).
    let split = KeySplit::GPU.state_bound(FLASH_WG as usize, cfg.num_heads, cfg.head_dim, t);
    let fixed = crate::model::memory::logit_chunk(cfg, t) + split as u64;
    // The matrices in `elem`; the gains (a few per layer) counted as such too.
    let f32_bytes = crate::model::memory::weights_bytes(cfg);
    crate::model::memory::Footprint {
        weights: match elem {
            crate::gpu::shader::Elem::F32 => f32_bytes,
            crate::gpu::shader::Elem::F16 => f32_bytes / 2,
        },
        working: crate::model::memory::working_bytes(per_token, t, fixed),
    }
}

/// A (T, width) activation: one buffer per page of rows.
pub(super) type Paged = Vec<wgpu::Buffer>;

/// One buffer of `rows * width` elements per page (`rows` per page).
pub(super) async fn paged(ctx: &GpuContext, label: &str, rows: &[usize], width: usize) -> GpuResult<Paged> {
    let mut pages = Vec::with_capacity(rows.len());
    for &n in rows {
        pages.push(ctx.zeros(label, n * width).await?);
    }
    Ok(pages)
}

/// Rows [first, first + rows) of a sequence: its page `index`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    pub(super) index: usize,
    pub(super) first: usize,
    pub(super) rows: usize,
}

/// The pages of `t` rows, `per_page` rows each, the last shorter.
pub(super) fn pages_of(t: usize, per_page: usize) -> Vec<Page> {
    (0..t)
        .step_by(per_page.max(1))
        .enumerate()
        .map(|(index, first)| Page {
            index,
            first,
            rows: per_page.min(t - first),
        })
        .collect()
}

/// Query page `q` against key page `k`, for the attention kernels.
pub(super) fn span(q: Page, k: Page) -> AttnSpan {
    AttnSpan {
        q_first: q.first,
        rows: q.rows,
        k_first: k.first,
        keys: k.rows,
    }
}

/// One layer's activations: what its backward reads, each paged.
#[derive(Debug)]
pub(super) struct LayerBufs {
    pub(super) x_in: Paged,  // (T, C)
    pub(super) rstd1: Paged, // (T)
    pub(super) xn1: Paged,   // (T, C)
    pub(super) q: Paged,     // (T, qd), rotated if RoPE
    pub(super) k: Paged,     // (T, kvd)
    pub(super) v: Paged,     // (T, kvd)
    pub(super) att: Paged,   // (T, qd)
    pub(super) lse: Paged,   // (H, rows) per page
    pub(super) x_mid: Paged, // (T, C)
    pub(super) rstd2: Paged, // (T)
    pub(super) xn2: Paged,   // (T, C)
    pub(super) gu: Paged,    // (T, 2F)
    pub(super) h: Paged,     // (T, F)
}

impl LayerBufs {
    pub(super) async fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: &[usize]) -> GpuResult<Self> {
        let (c, f, qd, kvd, hh) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.num_heads,
        );
        Ok(LayerBufs {
            x_in: paged(ctx, "x_in", rows, c).await?,
            rstd1: paged(ctx, "rstd1", rows, 1).await?,
            xn1: paged(ctx, "xn1", rows, c).await?,
            q: paged(ctx, "q", rows, qd).await?,
            k: paged(ctx, "k", rows, kvd).await?,
            v: paged(ctx, "v", rows, kvd).await?,
            att: paged(ctx, "att", rows, qd).await?,
            lse: paged(ctx, "lse", rows, hh).await?,
            x_mid: paged(ctx, "x_mid", rows, c).await?,
            rstd2: paged(ctx, "rstd2", rows, 1).await?,
            xn2: paged(ctx, "xn2", rows, c).await?,
            gu: paged(ctx, "gu", rows, 2 * f).await?,
            h: paged(ctx, "h", rows, f).await?,
        })
    }
}

/// The backward's scratch.
#[derive(Debug)]
pub(super) struct BackwardBufs {
    pub(super) dxf: Paged,  // (T, C)
    pub(super) dx: Paged,   // (T, C)
    pub(super) dh: Paged,   // (T, F)
    pub(super) dgu: Paged,  // (T, 2F)
    pub(super) dxn: Paged,  // (T, C)
    pub(super) datt: Paged, // (T, qd)
    pub(super) dq: Paged,   // (T, qd)
    pub(super) dk: Paged,   // (T, kvd)
    pub(super) dv: Paged,   // (T, kvd)
    /// (H, rows, 2) per page: attention's (lse, D), which dk and dv read
    /// across query pages.
    pub(super) rowstats: Paged,
    pub(super) dscale_partials: wgpu::Buffer, // (H, page rows), one query page's
    pub(super) ds: wgpu::Buffer,              // (H)
    pub(super) dxf_chunk: wgpu::Buffer,       // (chunk, C)
    pub(super) dw_partials: wgpu::Buffer,     // one page's
}

impl BackwardBufs {
    pub(super) async fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: &[usize], chunk: usize) -> GpuResult<Self> {
        let (c, f, qd, kvd, hh) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.num_heads,
        );
        let page = rows.iter().copied().max().unwrap_or(1);
        Ok(BackwardBufs {
            dxf: paged(ctx, "dxf", rows, c).await?,
            dx: paged(ctx, "dx", rows, c).await?,
            dh: paged(ctx, "dh", rows, f).await?,
            dgu: paged(ctx, "dgu", rows, 2 * f).await?,
            dxn: paged(ctx, "dxn", rows, c).await?,
            datt: paged(ctx, "datt", rows, qd).await?,
            dq: paged(ctx, "dq", rows, qd).await?,
            dk: paged(ctx, "dk", rows, kvd).await?,
            dv: paged(ctx, "dv", rows, kvd).await?,
            rowstats: paged(ctx, "attention rowstats", rows, 2 * hh).await?,
            dscale_partials: ctx.zeros("attention dscale partials", hh * page).await?,
            ds: ctx.zeros("ds", hh).await?,
            dxf_chunk: ctx.zeros("dxf chunk", chunk * c).await?,
            dw_partials: ctx.zeros("rmsnorm dw partials", dw_partials_len(page, c)).await?,
        })
    }
}

/// Buffers for sequences up to `t` tokens in pages of `page_rows` rows,
/// reused from call to call.
#[derive(Debug)]
pub(super) struct Workspace {
    pub(super) t: usize,
    /// Rows per page (the last page of `t` rows may be shorter).
    pub(super) page_rows: usize,
    /// Rows of logits per chunk (at most a page).
    pub(super) chunk: usize,
    pub(super) x: Paged,                   // (T, C) the residual stream
    pub(super) xf: Paged,                  // (T, C)
    pub(super) rstd_f: Paged,              // (T)
    pub(super) entropy: wgpu::Buffer,      // (H, page rows): one layer's, one query page's
    pub(super) attn_state: wgpu::Buffer,   // (H, page rows, 3): (m, Z, E) across key pages
    pub(super) z: wgpu::Buffer,            // (chunk, V)
    pub(super) xf_chunk: wgpu::Buffer,     // (chunk, C)
    pub(super) loss_chunk: wgpu::Buffer,   // (chunk)
    pub(super) target_chunk: wgpu::Buffer, // (chunk)
    pub(super) weight_chunk: wgpu::Buffer, // (chunk)
    /// RoPE's cos and sin per page.
    pub(super) rope: Vec<RopeTables>,
    /// One per layer when a backward follows, else one shared by all.
    pub(super) layers: Vec<LayerBufs>,
    pub(super) backward: Option<BackwardBufs>,
}

impl Workspace {
    /// The pages of a sequence of `t <= self.t` tokens.
    pub(super) fn pages(&self, t: usize) -> Vec<Page> {
        pages_of(t, self.page_rows)
    }
}

/// Per-sequence inputs on the device, paged like the activations.
pub(super) struct SeqInputs {
    pub(super) t: usize,
    pub(super) tokens: Paged,  // (T) u32
    pub(super) targets: Paged, // (T) u32, `NO_TARGET` last
    pub(super) weights: Paged, // (T) f32: each prediction's loss weight, the last 0
    /// (T) f32: the scale rule's r(i) per query position; `None` when constant.
    pub(super) factors: Option<Paged>,
}

impl GpuEngine {
    /// Err, naming the buffer, its size and the limit, when something a
    /// sequence of `t` tokens needs cannot be split to fit the device: a
    /// weight matrix or a single row past the max storage binding. Long
    /// sequences are otherwise paged (see the module's comment).
    pub fn check_fits(&self, t: usize) -> Result<()> {
        self.check_weights()?;
        let limit = self.binding_limit();
        let adapter = self.ctx.adapter();
        let (what, width) = self.widest_row();
        let row = width as u64 * 4;
        let vocab_row = self.config.vocab_size as u64 * 4;
        for (what, bytes) in [(what, row), ("the logits", vocab_row)] {
            if t > 0 && bytes > limit {
                return Err(Error::DeviceLimit(format!(
                    "GPU engine ({adapter}): one row of {what} ({bytes} bytes) is past the device's max storage \
                     buffer binding of {limit} bytes, and a row is not split"
                )));
            }
        }
        Ok(())
    }

    /// Rows per page for sequences of up to `t` tokens: as many as the
    /// widest per-row buffer fits in one binding and a matrix product's
    /// grid holds, at most `t`, and on a
    /// CPU adapter at most the loop budget (llvmpipe stops a weight
    /// gradient's loop over rows at 65535 iterations).
    pub(super) fn page_rows(&self, t: usize) -> usize {
        let row = self.widest_row().1.max(1) as u64 * 4;
        let mut rows = ((self.binding_limit() / row) as usize).min(t);
        // A matrix product's rows lie along one dimension of its grid, and
        // a row kernel's workgroups (one a row) fill at most that limit
        // squared: past either (65535 workgroups of 32 rows, about 2
        // million tokens, by default) a dispatch would be refused.
        let grid = self.ctx.limits().max_compute_workgroups_per_dimension as usize;
        rows = rows.min(grid.saturating_mul(crate::gpu::matmul::ROWS_PER_WORKGROUP.min(grid)));
        if self.ctx.report().is_cpu {
            rows = rows.min(CPU_LOOP_BUDGET as usize);
        }
        rows.max(1)
    }

    /// Rows of logits per chunk for pages of `page_rows` rows.
    pub(super) fn chunk_rows(&self, page_rows: usize) -> usize {
        let by_binding = (self.binding_limit() / (self.config.vocab_size as u64 * 4)).max(1) as usize;
        self.logit_rows.min(by_binding).min(page_rows).max(1)
    }

    /// A workspace for sequences of `t` tokens, with per-layer activations
    /// when `keep` and the backward's scratch when `backward`.
    pub(super) async fn ensure_workspace(&mut self, t: usize, keep: bool, backward: bool) -> GpuResult<()> {
        let need_layers = if keep { self.config.num_layers } else { 1 };
        if let Some(ws) = &self.ws {
            if ws.t >= t && ws.layers.len() >= need_layers && (!backward || ws.backward.is_some()) {
                return Ok(());
            }
        }
        // Grow to the larger of what was there and what is asked.
        let (t, need_layers, backward) = match &self.ws {
            Some(ws) => (
                ws.t.max(t),
                ws.layers.len().max(need_layers),
                backward || ws.backward.is_some(),
            ),
            None => (t, need_layers, backward),
        };
        self.ws = None;
        // The bind groups kept over the old buffers would keep them alive.
        self.ctx.clear_caches();
        let page_rows = self.page_rows(t);
        let chunk = self.chunk_rows(page_rows);
        let pages = pages_of(t, page_rows);
        let rows: Vec<usize> = pages.iter().map(|p| p.rows).collect();
        let ctx = &self.ctx;
        let cfg = &self.config;
        let (c, hh, vocab) = (cfg.hidden_size, cfg.num_heads, cfg.vocab_size);
        let mut rope = Vec::new();
        if let PositionEncoding::Rope { theta } = cfg.position_encoding {
            for p in &pages {
                rope.push(RopeTables::upload_rows(ctx, p.first, p.rows, cfg.head_dim, theta).await?);
            }
        }
        let mut layers = Vec::with_capacity(need_layers);
        for _ in 0..need_layers {
            layers.push(LayerBufs::new(ctx, cfg, &rows).await?);
        }
        let backward = if backward {
            Some(BackwardBufs::new(ctx, cfg, &rows, chunk).await?)
        } else {
            None
        };
        self.ws = Some(Workspace {
            t,
            page_rows,
            chunk,
            x: paged(ctx, "x", &rows, c).await?,
            xf: paged(ctx, "xf", &rows, c).await?,
            rstd_f: paged(ctx, "rstd_f", &rows, 1).await?,
            entropy: ctx.zeros("entropy", hh * page_rows).await?,
            attn_state: ctx
                .zeros(
                    "attention forward state",
                    self.kernels.attention.state_len(ctx, cfg.attn_shape(page_rows)),
                )
                .await?,
            z: ctx.zeros("logits chunk", chunk * vocab).await?,
            xf_chunk: ctx.zeros("xf chunk", chunk * c).await?,
            loss_chunk: ctx.zeros("loss chunk", chunk).await?,
            weight_chunk: ctx.zeros("weight chunk", chunk).await?,
            target_chunk: ctx.zeros("target chunk", chunk).await?,
            rope,
            layers,
            backward,
        });
        Ok(())
    }

    pub(super) fn upload_head_scales(&self, hs: &HeadScales) -> GpuResult<()> {
        let hh = self.config.num_heads;
        for (l, buffer) in self.head_scales.iter().enumerate() {
            // Written through the queue: lands before the next submission.
            self.ctx
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(&hs.values[l * hh..(l + 1) * hh]));
        }
        self.ctx.check_health()
    }

    /// The sequence's tokens, targets, loss weights (checked; None: all 1)
    /// and the scale rule's factors, paged as the workspace pages it.
    pub(super) async fn upload_sequence(
        &self,
        tokens: &[u32],
        loss_weights: Option<&[f32]>,
        head_scales: &HeadScales,
    ) -> GpuResult<SeqInputs> {
        let ws = self.ws.as_ref().expect("workspace");
        let t = tokens.len();
        let targets = next_token_targets(tokens);
        let mut weights = match loss_weights {
            Some(w) => w.to_vec(),
            None => vec![1.0; t.saturating_sub(1)],
        };
        weights.push(0.0);
        let factors = head_scales.rule.factors(0..t);
        let mut seq = SeqInputs {
            t,
            tokens: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
            factors: factors.as_ref().map(|_| Vec::new()),
        };
        for p in ws.pages(t) {
            let rows = p.first..p.first + p.rows;
            seq.tokens.push(self.ctx.upload("tokens", &tokens[rows.clone()]).await?);
            seq.targets
                .push(self.ctx.upload("targets", &targets[rows.clone()]).await?);
            seq.weights
                .push(self.ctx.upload("loss weights", &weights[rows.clone()]).await?);
            if let (Some(all), Some(f)) = (seq.factors.as_mut(), factors.as_ref()) {
                all.push(self.ctx.upload("scale rule factors", &f[rows]).await?);
            }
        }
        Ok(seq)
    }
}
