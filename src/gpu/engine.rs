//! The WGSL engine: the engine contract (`model::Engine`) on the kernels of
//! this module's siblings, computing what the CPU engine
//! (`model::cpu::transformer`) computes, step for step: embedding, per
//! layer x += Attn(RMSNorm(x)) and x += MLP(RMSNorm(x)), a final RMSNorm and
//! the LM head in chunks of rows scored as they are made; the backward in
//! the same order, accumulating over the sequences of a batch.
//!
//! Where the weights live: one storage buffer per *slot*, a run of
//! adjacent tensors of the flat parameter layout that the kernels read as
//! one matrix (q, k and v each alone, gate and up together as the (2F, C)
//! matrix whose product is the (T, 2F) `gu` SwiGLU reads). Bindings start
//! at offset 0 (`GpuContext::bind`), so per-slot buffers avoid the 256-byte
//! offset alignment; copies (4-byte aligned) move data between a slot and
//! flat buffers where the whole parameter vector is needed (the global
//! gradient norm, reading the gradients or the weights back).
//!
//! Sequences longer than one binding allows: every per-token buffer (the
//! (T, C) residual stream and norms, q, k, v, the (T, 2F) gate/up and
//! SwiGLU output, the attention's (H, T) stats, the backward's gradients
//! of all of these, the tokens and targets) lives in *pages*, one buffer
//! per run of `Workspace::page_rows` consecutive rows (the last page
//! shorter): as many rows as the widest per-row buffer fits in the max
//! storage binding and, on a CPU adapter, llvmpipe's loop budget (a weight
//! gradient loops once per row). A page is bound whole at offset 0, so no
//! binding passes the limit, no offset needs the storage offset alignment,
//! and no buffer holds a whole (T, .) tensor. Row-wise steps (norms,
//! products with the weights, SwiGLU, RoPE, the LM head) run page by page;
//! weight and gain gradients add up page after page. Attention, the one
//! step that mixes rows, runs query page i against key pages 0..=i in
//! order, carrying the online softmax's (m, Z, E) and the output's
//! accumulator from one key page to the next as it carries them between
//! loop-budget passes (`gpu/attention.rs`); its backward does dq per query
//! page over its key pages, dk and dv per key page over its query pages,
//! and adds the head-scale gradient page by page. A sequence that fits is
//! one page: the dispatches of an unpaged engine. What cannot be split is
//! refused with an error naming the buffer, its size and the limit
//! (`check_fits`): a weight matrix past the max storage binding, or an
//! output read back whole (logits, entropy) past the max buffer size.
//!
//! The optimizer's state (AdamW moments per slot, the step count) stays on
//! the device; a training step reads back only the losses and the
//! gradient norm (summed slot by slot, so the flat gradient is never
//! bound whole) to refuse a non-finite update as the CPU engine does.
//!
//! Every call awaits its read-backs (`GpuContext::read_f32`), so nothing
//! blocks on the web.
//!
//! Not yet: reusing recorded work between calls.

use super::attention::{AttnSpan, CPU_LOOP_BUDGET};
use super::context::GpuContext;
use super::cross_entropy::next_token_targets;
use super::embedding::{TokenGroups, TokenGroupsBuffers};
use super::error::{Error as GpuError, Result as GpuResult};
use super::optim::{decay_words, norm_partials_len_parts, pack_decay_flags, STATS_LEN};
use super::rmsnorm::dw_partials_len;
use super::rope::RopeTables;
use super::Kernels;
use crate::model::config::{ModelConfig, PositionEncoding};
use crate::model::engine::{
    check_batch, check_finite_update, check_inputs, check_loss_weights, Engine, ForwardOptions, ForwardOutput,
    GradMode, Gradients, LogitsRequest, StepStats,
};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;
use crate::model::optim::{AdamWConfig, AdamWState};
use crate::model::params::{ParamLayout, Params};
use crate::model::shapes::AttnShape;

/// Rows of logits made at once (`model::shapes::LOGIT_ROWS`, as the CPU engine), fewer when
/// a chunk of logits would pass the device's max storage binding or a page
/// is shorter.
pub const LOGIT_ROWS: usize = crate::model::shapes::LOGIT_ROWS;

/// Slots per decoder layer, in layout order.
const LAYER_SLOTS: usize = 8;
const ATTN_NORM: usize = 0;
const WQ: usize = 1;
const WK: usize = 2;
const WV: usize = 3;
const WO: usize = 4;
const MLP_NORM: usize = 5;
const GATE_UP: usize = 6;
const W_DOWN: usize = 7;

/// A run of adjacent tensors held in one buffer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: usize,
    len: usize,
    /// RMSNorm gains: no weight decay.
    norm: bool,
}

fn slots_of(cfg: &ModelConfig, layout: &ParamLayout) -> Vec<Slot> {
    let (c, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let slot = |offset, len, norm| Slot { offset, len, norm };
    let mut slots = vec![slot(layout.embed, v * c, false)];
    for o in &layout.layers {
        slots.extend([
            slot(o.attn_norm, c, true),
            slot(o.wq, qd * c, false),
            slot(o.wk, kvd * c, false),
            slot(o.wv, kvd * c, false),
            slot(o.wo, c * qd, false),
            slot(o.mlp_norm, c, true),
            slot(o.w_gate, 2 * f * c, false),
            slot(o.w_down, c * f, false),
        ]);
    }
    slots.push(slot(layout.norm, c, true));
    if !cfg.tie_word_embeddings {
        slots.push(slot(layout.lm_head, v * c, false));
    }
    slots
}

/// What a gpu::Error becomes at the engine's boundary; a limit that the
/// engine could not split its way around points at the CPU engine.
fn engine_error(e: GpuError) -> Error {
    match e {
        GpuError::Limit { .. } => Error::DeviceLimit(format!("GPU engine: {e}")),
        GpuError::DeviceLost { .. } => Error::DeviceLost(format!("GPU engine: {e}")),
        e => Error::Engine(format!("GPU engine: {e}")),
    }
}

/// A (T, width) activation: one buffer per page of rows.
type Paged = Vec<wgpu::Buffer>;

/// One buffer of `rows * width` elements per page (`rows` per page).
async fn paged(ctx: &GpuContext, label: &str, rows: &[usize], width: usize) -> GpuResult<Paged> {
    let mut pages = Vec::with_capacity(rows.len());
    for &n in rows {
        pages.push(ctx.zeros(label, n * width).await?);
    }
    Ok(pages)
}

/// Rows [first, first + rows) of a sequence: its page `index`.
#[derive(Debug, Clone, Copy)]
struct Page {
    index: usize,
    first: usize,
    rows: usize,
}

/// The pages of `t` rows, `per_page` rows each, the last shorter.
fn pages_of(t: usize, per_page: usize) -> Vec<Page> {
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
fn span(q: Page, k: Page) -> AttnSpan {
    AttnSpan {
        q_first: q.first,
        rows: q.rows,
        k_first: k.first,
        keys: k.rows,
    }
}

/// One layer's activations: what its backward reads, each paged.
#[derive(Debug)]
struct LayerBufs {
    x_in: Paged,  // (T, C)
    rstd1: Paged, // (T)
    xn1: Paged,   // (T, C)
    q: Paged,     // (T, qd), rotated if RoPE
    k: Paged,     // (T, kvd)
    v: Paged,     // (T, kvd)
    att: Paged,   // (T, qd)
    lse: Paged,   // (H, rows) per page
    x_mid: Paged, // (T, C)
    rstd2: Paged, // (T)
    xn2: Paged,   // (T, C)
    gu: Paged,    // (T, 2F)
    h: Paged,     // (T, F)
}

impl LayerBufs {
    async fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: &[usize]) -> GpuResult<Self> {
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
struct BackwardBufs {
    dxf: Paged,  // (T, C)
    dx: Paged,   // (T, C)
    dh: Paged,   // (T, F)
    dgu: Paged,  // (T, 2F)
    dxn: Paged,  // (T, C)
    datt: Paged, // (T, qd)
    dq: Paged,   // (T, qd)
    dk: Paged,   // (T, kvd)
    dv: Paged,   // (T, kvd)
    /// (H, rows, 2) per page: attention's (lse, D), which dk and dv read
    /// across query pages.
    rowstats: Paged,
    dscale_partials: wgpu::Buffer, // (H, page rows), one query page's
    ds: wgpu::Buffer,              // (H)
    dxf_chunk: wgpu::Buffer,       // (chunk, C)
    dw_partials: wgpu::Buffer,     // one page's
}

impl BackwardBufs {
    async fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: &[usize], chunk: usize) -> GpuResult<Self> {
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
struct Workspace {
    t: usize,
    /// Rows per page (the last page of `t` rows may be shorter).
    page_rows: usize,
    /// Rows of logits per chunk (at most a page).
    chunk: usize,
    x: Paged,                   // (T, C) the residual stream
    xf: Paged,                  // (T, C)
    rstd_f: Paged,              // (T)
    entropy: wgpu::Buffer,      // (H, page rows): one layer's, one query page's
    attn_state: wgpu::Buffer,   // (H, page rows, 3): (m, Z, E) across key pages
    z: wgpu::Buffer,            // (chunk, V)
    xf_chunk: wgpu::Buffer,     // (chunk, C)
    loss_chunk: wgpu::Buffer,   // (chunk)
    target_chunk: wgpu::Buffer, // (chunk)
    weight_chunk: wgpu::Buffer, // (chunk)
    /// RoPE's cos and sin per page.
    rope: Vec<RopeTables>,
    /// One per layer when a backward follows, else one shared by all.
    layers: Vec<LayerBufs>,
    backward: Option<BackwardBufs>,
}

impl Workspace {
    /// The pages of a sequence of `t <= self.t` tokens.
    fn pages(&self, t: usize) -> Vec<Page> {
        pages_of(t, self.page_rows)
    }
}

/// AdamW's state on the device.
#[derive(Debug)]
struct OptState {
    m: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    decay: Vec<wgpu::Buffer>,
    stats: wgpu::Buffer,
    /// The gradient norm's partial sums over every slot.
    partials: wgpu::Buffer,
    step: u64,
}

/// Per-sequence inputs on the device, paged like the activations.
struct SeqInputs {
    t: usize,
    tokens: Paged,  // (T) u32
    targets: Paged, // (T) u32, `NO_TARGET` last
    weights: Paged, // (T) f32: each prediction's loss weight, the last 0
    /// (T) f32: the scale rule's r(i) per query position; `None` when constant.
    factors: Option<Paged>,
}

pub struct GpuEngine {
    ctx: GpuContext,
    kernels: Kernels,
    config: ModelConfig,
    layout: ParamLayout,
    slots: Vec<Slot>,
    weights: Vec<wgpu::Buffer>,
    /// Weight gradients per slot, made on the first full backward.
    grads: Option<Vec<wgpu::Buffer>>,
    head_scales: Vec<wgpu::Buffer>,
    ws: Option<Workspace>,
    opt: Option<OptState>,
    /// Rows of logits per chunk at most (`LOGIT_ROWS`; tests lower it).
    logit_rows: usize,
}

impl GpuEngine {
    /// Builds the kernels on `ctx`'s device and uploads the weights once.
    pub async fn new(ctx: GpuContext, config: ModelConfig, params: Params<f32>) -> Result<Self> {
        let layout = ParamLayout::new(&config);
        if params.layout != layout {
            return Err(Error::Input("parameters do not match the config's layout".into()));
        }
        if config.head_dim > super::attention::MAX_HEAD_DIM as usize {
            return Err(Error::Engine(format!(
                "GPU engine ({}): head dim {} is past the attention kernels' largest, {}",
                ctx.adapter(),
                config.head_dim,
                super::attention::MAX_HEAD_DIM
            )));
        }
        let kernels = Kernels::new(&ctx).await.map_err(engine_error)?;
        let slots = slots_of(&config, &layout);
        let mut engine = GpuEngine {
            ctx,
            kernels,
            config,
            layout,
            slots,
            weights: Vec::new(),
            grads: None,
            head_scales: Vec::new(),
            ws: None,
            opt: None,
            logit_rows: LOGIT_ROWS,
        };
        engine.check_weights()?;
        for s in &engine.slots {
            let data = &params.data[s.offset..s.offset + s.len];
            let buffer = engine.ctx.upload("weights", data).await.map_err(engine_error)?;
            engine.weights.push(buffer);
        }
        for _ in 0..engine.config.num_layers {
            let buffer = engine
                .ctx
                .zeros("head scales", engine.config.num_heads)
                .await
                .map_err(engine_error)?;
            engine.head_scales.push(buffer);
        }
        Ok(engine)
    }

    /// Makes logits at most `rows` rows at a time (at least 1), so tests
    /// reach the chunked LM head at small sizes.
    pub fn set_logit_rows(&mut self, rows: usize) {
        self.logit_rows = rows.max(1);
        self.ws = None;
    }

    /// Lowers (never raises) the max storage binding this engine pages
    /// its sequences by and checks every binding against, so tests reach
    /// the paged path at small sizes. Below a weight matrix, every call
    /// fails with an error naming it (weights are not split).
    pub fn set_binding_limit(&mut self, bytes: u64) {
        self.ctx.lower_limits(bytes, u64::MAX);
        self.ws = None;
    }

    /// Lowers (never raises) the max buffer size this engine checks its
    /// buffers against, so tests reach the refusal of outputs that are
    /// read back whole.
    #[doc(hidden)]
    pub fn set_buffer_limit(&mut self, bytes: u64) {
        self.ctx.lower_limits(u64::MAX, bytes);
        self.ws = None;
    }

    /// Rows per page for sequences of `t` tokens under the limits in force
    /// (`t` itself when nothing needs paging), so tests can say how a
    /// sequence was split.
    #[doc(hidden)]
    pub fn page_rows_for(&self, t: usize) -> usize {
        self.page_rows(t)
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn slot(&self, layer: usize, which: usize) -> usize {
        1 + layer * LAYER_SLOTS + which
    }

    fn norm_slot(&self) -> usize {
        1 + self.config.num_layers * LAYER_SLOTS
    }

    fn lm_head_slot(&self) -> usize {
        if self.config.tie_word_embeddings {
            0
        } else {
            self.norm_slot() + 1
        }
    }

    /// The max storage binding in force (the device's unless lowered).
    fn binding_limit(&self) -> u64 {
        self.ctx.limits().max_storage_buffer_binding_size
    }

    /// Err naming the first weight matrix past the max storage binding:
    /// each slot is bound whole, and the engine does not split weights.
    fn check_weights(&self) -> Result<()> {
        let limit = self.binding_limit();
        for s in &self.slots {
            let bytes = s.len as u64 * 4;
            if bytes > limit {
                let names: Vec<&str> = self
                    .layout
                    .tensors
                    .iter()
                    .filter(|t| t.offset >= s.offset && t.offset < s.offset + s.len)
                    .map(|t| t.name.as_str())
                    .collect();
                return Err(Error::DeviceLimit(format!(
                    "GPU engine ({}): the weight matrix {} ({} values, {bytes} bytes) is past the device's max \
                     storage buffer binding of {limit} bytes, and weights are not split",
                    self.ctx.adapter(),
                    names.join(" + "),
                    s.len
                )));
            }
        }
        Ok(())
    }

    /// The widest of the per-token buffers that are paged by rows: (what,
    /// f32 per row).
    fn widest_row(&self) -> (&'static str, usize) {
        let cfg = &self.config;
        [
            ("the (T, 2F) gate/up activations", 2 * cfg.intermediate_size),
            ("the (T, C) residual stream", cfg.hidden_size),
            ("the (T, H*hd) queries", cfg.q_dim()),
            ("the (T, KV*hd) keys", cfg.kv_dim()),
            ("the attention state (H, T, 3)", 3 * cfg.num_heads),
        ]
        .into_iter()
        .max_by_key(|&(_, w)| w)
        .expect("five")
    }

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
    /// widest per-row buffer fits in one binding, at most `t`, and on a
    /// CPU adapter at most the loop budget (llvmpipe stops a weight
    /// gradient's loop over rows at 65535 iterations).
    fn page_rows(&self, t: usize) -> usize {
        let row = self.widest_row().1.max(1) as u64 * 4;
        let mut rows = ((self.binding_limit() / row) as usize).min(t);
        if self.ctx.report().is_cpu {
            rows = rows.min(CPU_LOOP_BUDGET as usize);
        }
        rows.max(1)
    }

    /// Rows of logits per chunk for pages of `page_rows` rows.
    fn chunk_rows(&self, page_rows: usize) -> usize {
        let by_binding = (self.binding_limit() / (self.config.vocab_size as u64 * 4)).max(1) as usize;
        self.logit_rows.min(by_binding).min(page_rows).max(1)
    }

    /// A workspace for sequences of `t` tokens, with per-layer activations
    /// when `keep` and the backward's scratch when `backward`.
    async fn ensure_workspace(&mut self, t: usize, keep: bool, backward: bool) -> GpuResult<()> {
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
            attn_state: ctx.zeros("attention forward state", 3 * hh * page_rows).await?,
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

    fn upload_head_scales(&self, hs: &HeadScales) -> GpuResult<()> {
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
    async fn upload_sequence(
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

    /// Records the forward through the layers (no LM head): x holds the
    /// last layer's output. With `keep`, layer l's activations stay in
    /// `ws.layers[l]`; `entropy` (L, H, T) receives each layer's entropy.
    fn record_layers(
        &self,
        enc: &mut wgpu::CommandEncoder,
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
        let shape = AttnShape {
            t,
            heads: hh,
            kv_heads: kvh,
            hd,
        };
        let mm = &k.matmul;
        for p in &pages {
            let (i, n) = (p.index, p.rows);
            k.embedding
                .forward(ctx, enc, &ws.x[i], &self.weights[0], &seq.tokens[i], n, c, vocab)?;
        }
        for l in 0..cfg.num_layers {
            let lb = &ws.layers[if keep { l } else { 0 }];
            let w = |which| &self.weights[self.slot(l, which)];
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                k.rmsnorm
                    .forward(ctx, enc, &lb.xn1[i], &lb.rstd1[i], &ws.x[i], w(ATTN_NORM), n, c, eps)?;
                mm.matmul_nt(ctx, enc, &lb.q[i], &lb.xn1[i], w(WQ), n, c, qd, 1.0, 0.0)?;
                mm.matmul_nt(ctx, enc, &lb.k[i], &lb.xn1[i], w(WK), n, c, kvd, 1.0, 0.0)?;
                mm.matmul_nt(ctx, enc, &lb.v[i], &lb.xn1[i], w(WV), n, c, kvd, 1.0, 0.0)?;
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
                mm.matmul_nt(ctx, enc, &ws.x[i], &lb.att[i], w(WO), n, qd, c, 1.0, 1.0)?;
                k.rmsnorm
                    .forward(ctx, enc, &lb.xn2[i], &lb.rstd2[i], &ws.x[i], w(MLP_NORM), n, c, eps)?;
                // [g u] = xn2 [Wg; Wu]^T
                mm.matmul_nt(ctx, enc, &lb.gu[i], &lb.xn2[i], w(GATE_UP), n, c, 2 * f, 1.0, 0.0)?;
                k.swiglu.forward(ctx, enc, &lb.h[i], &lb.gu[i], n, f)?;
                if keep {
                    enc.copy_buffer_to_buffer(&ws.x[i], 0, &lb.x_mid[i], 0, (n * c * 4) as u64);
                }
                // x += h Wd^T
                mm.matmul_nt(ctx, enc, &ws.x[i], &lb.h[i], w(W_DOWN), n, f, c, 1.0, 1.0)?;
            }
        }
        let norm = &self.weights[self.norm_slot()];
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
    /// gradient.
    #[allow(clippy::too_many_arguments)]
    fn record_lm_head(
        &self,
        enc: &mut wgpu::CommandEncoder,
        seq: &SeqInputs,
        losses: &wgpu::Buffer,
        losses_offset: usize,
        logits: Option<(&wgpu::Buffer, usize)>,
        grad_weight: Option<f32>,
        weight_grad: bool,
    ) -> GpuResult<()> {
        let (ctx, k, cfg) = (&self.ctx, &self.kernels, &self.config);
        let ws = self.ws.as_ref().expect("workspace");
        let (c, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let wl = &self.weights[self.lm_head_slot()];
        for p in ws.pages(seq.t) {
            let i = p.index;
            let mut s0 = 0;
            while s0 < p.rows {
                let n = ws.chunk.min(p.rows - s0);
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
                k.matmul.matmul_nt(ctx, enc, &ws.z, xfc, wl, n, c, vocab, 1.0, 0.0)?;
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
                    k.matmul.matmul_nn(ctx, enc, dxfc, &ws.z, wl, n, vocab, c, 1.0, 0.0)?;
                    if !whole {
                        enc.copy_buffer_to_buffer(&b.dxf_chunk, 0, &b.dxf[i], (s0 * c * 4) as u64, (n * c * 4) as u64);
                    }
                    if weight_grad {
                        let g = &self.grads.as_ref().expect("gradient buffers")[self.lm_head_slot()];
                        k.matmul.matmul_tn(ctx, enc, g, &ws.z, xfc, vocab, n, c, 1.0, 1.0)?;
                    }
                }
                s0 += n;
            }
        }
        Ok(())
    }

    /// Records one sequence's backward (after `record_layers` with keep):
    /// weight gradients accumulated into `self.grads` when `full` (with
    /// the embedding's from `groups`, one per page), each layer's
    /// head-scale gradient copied into `dscales` at `dscale_offset + l * H`,
    /// the losses into `losses` at `losses_offset`.
    #[allow(clippy::too_many_arguments)]
    fn record_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        seq: &SeqInputs,
        groups: Option<&[TokenGroupsBuffers]>,
        grad_weight: f32,
        full: bool,
        losses: &wgpu::Buffer,
        losses_offset: usize,
        dscales: &wgpu::Buffer,
        dscale_offset: usize,
    ) -> GpuResult<()> {
        self.record_lm_head(enc, seq, losses, losses_offset, None, Some(grad_weight), full)?;
        let (ctx, k, cfg) = (&self.ctx, &self.kernels, &self.config);
        let ws = self.ws.as_ref().expect("workspace");
        let b = ws.backward.as_ref().expect("backward buffers");
        let t = seq.t;
        let pages = ws.pages(t);
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let shape = AttnShape {
            t,
            heads: hh,
            kv_heads: kvh,
            hd,
        };
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
                &self.weights[norm],
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
            let w = |which| &self.weights[s(which)];
            for p in &pages {
                let (i, n) = (p.index, p.rows);
                // MLP: x_out = x_mid + h Wd^T
                mm.matmul_nn(ctx, enc, &b.dh[i], &b.dx[i], w(W_DOWN), n, c, f, 1.0, 0.0)?;
                if let Some(gw) = g(s(W_DOWN)) {
                    mm.matmul_tn(ctx, enc, gw, &b.dx[i], &lb.h[i], c, n, f, 1.0, 1.0)?;
                }
                k.swiglu.backward(ctx, enc, &b.dgu[i], &b.dh[i], &lb.gu[i], n, f)?;
                mm.matmul_nn(ctx, enc, &b.dxn[i], &b.dgu[i], w(GATE_UP), n, 2 * f, c, 1.0, 0.0)?;
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
                mm.matmul_nn(ctx, enc, &b.datt[i], &b.dx[i], w(WO), n, c, qd, 1.0, 0.0)?;
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
                mm.matmul_nn(ctx, enc, &b.dxn[i], &b.dq[i], w(WQ), n, qd, c, 1.0, 0.0)?;
                mm.matmul_nn(ctx, enc, &b.dxn[i], &b.dk[i], w(WK), n, kvd, c, 1.0, 1.0)?;
                mm.matmul_nn(ctx, enc, &b.dxn[i], &b.dv[i], w(WV), n, kvd, c, 1.0, 1.0)?;
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
    fn check_batch(
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
    async fn run_gradients(
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
    async fn read_flat(&self, what: &str, slots: &[wgpu::Buffer]) -> GpuResult<Vec<f32>> {
        let n = self.layout.total;
        let flat = self.ctx.zeros(what, n).await?;
        self.ctx
            .submit(what, |enc| {
                for (s, b) in self.slots.iter().zip(slots) {
                    enc.copy_buffer_to_buffer(b, 0, &flat, (s.offset * 4) as u64, (s.len * 4) as u64);
                }
                Ok(())
            })
            .await?;
        self.ctx.read_f32(what, &flat, n).await
    }

    async fn ensure_optimizer(&mut self) -> GpuResult<()> {
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

impl Engine for GpuEngine {
    fn name(&self) -> String {
        format!("gpu ({})", self.ctx.adapter())
    }

    fn device_work(&self) -> Option<crate::model::engine::DeviceWork> {
        Some(self.ctx.work())
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn forward(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        check_inputs(&self.config, tokens, head_scales)?;
        if let Some(w) = &options.loss_weights {
            check_loss_weights(tokens, w)?;
        }
        let t = tokens.len();
        self.check_fits(t)?;
        let (vocab, lht) = (
            self.config.vocab_size,
            self.config.num_layers * self.config.num_heads * t,
        );
        let first_kept = match options.logits {
            LogitsRequest::None => t,
            LogitsRequest::All => 0,
            LogitsRequest::Last(n) => t - n.min(t),
        };
        let kept_rows = t - first_kept;
        let run = async {
            self.ensure_workspace(t, false, false).await?;
            self.upload_head_scales(head_scales)?;
            let seq = self.upload_sequence(tokens, None, head_scales).await?;
            let losses = self.ctx.zeros("losses", t).await?;
            let entropy = match options.entropy {
                true => Some(self.ctx.zeros("entropy (L, H, T)", lht).await?),
                false => None,
            };
            let logits = match kept_rows {
                0 => None,
                n => Some(self.ctx.zeros("logits", n * vocab).await?),
            };
            self.ctx
                .submit("forward", |enc| {
                    self.record_layers(enc, &seq, false, entropy.as_ref())?;
                    self.record_lm_head(
                        enc,
                        &seq,
                        &losses,
                        0,
                        logits.as_ref().map(|b| (b, first_kept)),
                        None,
                        false,
                    )
                })
                .await?;
            let row_losses = self.ctx.read_f32("losses", &losses, t).await?;
            let entropy_bits = match &entropy {
                Some(b) => Some(self.ctx.read_f32("entropy", b, lht).await?),
                None => None,
            };
            let logits = match &logits {
                Some(b) => Some(self.ctx.read_f32("logits", b, kept_rows * vocab).await?),
                None => None,
            };
            GpuResult::Ok((row_losses, entropy_bits, logits))
        };
        let (row_losses, entropy_bits, logits) = run.await.map_err(engine_error)?;
        // The last row predicts nothing (its loss is 0); sum the rest in
        // order, in f64, as the CPU engine does.
        let scored = &row_losses[..t - 1];
        let (loss_sum, weight_sum) = match &options.loss_weights {
            Some(w) => (
                scored.iter().zip(w).map(|(&l, &w)| l as f64 * w as f64).sum(),
                w.iter().map(|&w| w as f64).sum(),
            ),
            None => (scored.iter().map(|&x| x as f64).sum(), (t - 1) as f64),
        };
        Ok(ForwardOutput {
            loss_sum,
            predictions: t - 1,
            weight_sum,
            losses: options.losses.then(|| scored.to_vec()),
            logits,
            logits_rows: kept_rows,
            entropy_bits,
        })
    }

    async fn weighted_gradients(
        &mut self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
        mode: GradMode,
    ) -> Result<Gradients> {
        self.check_batch(batch, loss_weights, head_scales)?;
        let (loss, predictions, hs, _) = self
            .run_gradients(batch, loss_weights, head_scales, mode, None)
            .await
            .map_err(engine_error)?;
        let weights = if mode == GradMode::Full {
            let grads = self.grads.as_ref().expect("full backward made them");
            Some(self.read_flat("weight gradients", grads).await.map_err(engine_error)?)
        } else {
            None
        };
        Ok(Gradients {
            loss,
            predictions,
            weights,
            head_scales: hs,
        })
    }

    async fn train_step(
        &mut self,
        batch: &[Vec<u32>],
        head_scales: &HeadScales,
        optimizer: &AdamWConfig,
        lr: f32,
    ) -> Result<StepStats> {
        self.check_batch(batch, None, head_scales)?;
        self.ensure_optimizer().await.map_err(engine_error)?;
        let (loss, _, _, norm) = self
            .run_gradients(batch, None, head_scales, GradMode::Full, Some(optimizer.clip_norm))
            .await
            .map_err(engine_error)?;
        let grad_norm = norm.expect("asked for") as f64;
        check_finite_update(loss, grad_norm)?;
        let opt = self.opt.as_mut().expect("made above");
        opt.step += 1;
        let opt = self.opt.as_ref().expect("made above");
        let grads = self.grads.as_ref().expect("full backward made them");
        self.ctx
            .submit("adamw", |enc| {
                for (i, s) in self.slots.iter().enumerate() {
                    self.kernels.optim.adamw(
                        &self.ctx,
                        enc,
                        &self.weights[i],
                        &opt.m[i],
                        &opt.v[i],
                        &grads[i],
                        &opt.decay[i],
                        &opt.stats,
                        s.len,
                        optimizer,
                        lr,
                        opt.step,
                    )?;
                }
                Ok(())
            })
            .await
            .map_err(engine_error)?;
        Ok(StepStats { loss, grad_norm })
    }

    async fn params(&mut self) -> Result<Params<f32>> {
        let data = self.read_flat("weights", &self.weights).await.map_err(engine_error)?;
        Ok(Params {
            layout: self.layout.clone(),
            data,
        })
    }

    async fn optimizer_state(&mut self) -> Result<Option<AdamWState>> {
        let Some(opt) = self.opt.as_ref() else {
            return Ok(None);
        };
        let step = opt.step;
        let m = self.read_flat("adamw m", &opt.m).await.map_err(engine_error)?;
        let v = self.read_flat("adamw v", &opt.v).await.map_err(engine_error)?;
        Ok(Some(AdamWState { step, m, v }))
    }

    async fn set_optimizer_state(&mut self, state: AdamWState) -> Result<()> {
        let n = self.layout.total;
        if state.m.len() != n || state.v.len() != n {
            return Err(Error::Input(format!(
                "optimizer state has {} entries, the model has {n} parameters",
                state.m.len()
            )));
        }
        self.ensure_optimizer().await.map_err(engine_error)?;
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for s in &self.slots {
            let range = s.offset..s.offset + s.len;
            m.push(
                self.ctx
                    .upload("adamw m", &state.m[range.clone()])
                    .await
                    .map_err(engine_error)?,
            );
            v.push(
                self.ctx
                    .upload("adamw v", &state.v[range])
                    .await
                    .map_err(engine_error)?,
            );
        }
        let opt = self.opt.as_mut().expect("made above");
        opt.m = m;
        opt.v = v;
        opt.step = state.step;
        Ok(())
    }
}
