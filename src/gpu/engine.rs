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
//! The optimizer's state (AdamW moments per slot, the step count) stays on
//! the device; a training step reads back only the losses and the
//! gradient norm (to refuse a non-finite update as the CPU engine does).
//!
//! Every call awaits its read-backs (`GpuContext::read_f32`), so nothing
//! blocks on the web.
//!
//! Not yet: splitting a sequence whose buffers pass the device's max
//! storage binding (such a sequence is refused with an error naming its
//! length and the limit), and reusing recorded work between calls.

use super::attention::AttentionScratch;
use super::context::GpuContext;
use super::cross_entropy::next_token_targets;
use super::embedding::{TokenGroups, TokenGroupsBuffers};
use super::error::{Error as GpuError, Result as GpuResult};
use super::optim::{decay_words, norm_partials_len, pack_decay_flags, STATS_LEN};
use super::rmsnorm::dw_partials_len;
use super::rope::RopeTables;
use super::Kernels;
use crate::model::config::{ModelConfig, PositionEncoding};
use crate::model::cpu::attention::AttnShape;
use crate::model::engine::{
    check_inputs, Engine, ForwardOptions, ForwardOutput, GradMode, Gradients, LogitsRequest, StepStats,
};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;
use crate::model::optim::{AdamWConfig, AdamWState};
use crate::model::params::{ParamLayout, Params};

/// Rows of logits made at once (the CPU engine's `LOGIT_ROWS`), fewer when
/// a chunk of logits would pass the device's max storage binding.
pub const LOGIT_ROWS: usize = crate::model::cpu::transformer::LOGIT_ROWS;

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

/// What a gpu::Error becomes at the engine's boundary.
fn engine_error(e: GpuError) -> Error {
    Error::Engine(format!("GPU engine: {e}"))
}

/// One layer's activations: what its backward reads.
#[derive(Debug)]
struct LayerBufs {
    x_in: wgpu::Buffer,  // (T, C)
    rstd1: wgpu::Buffer, // (T)
    xn1: wgpu::Buffer,   // (T, C)
    q: wgpu::Buffer,     // (T, qd), rotated if RoPE
    k: wgpu::Buffer,     // (T, kvd)
    v: wgpu::Buffer,     // (T, kvd)
    att: wgpu::Buffer,   // (T, qd)
    lse: wgpu::Buffer,   // (H, T)
    x_mid: wgpu::Buffer, // (T, C)
    rstd2: wgpu::Buffer, // (T)
    xn2: wgpu::Buffer,   // (T, C)
    gu: wgpu::Buffer,    // (T, 2F)
    h: wgpu::Buffer,     // (T, F)
}

impl LayerBufs {
    async fn new(ctx: &GpuContext, cfg: &ModelConfig, t: usize) -> GpuResult<Self> {
        let (c, f, qd, kvd, hh) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.num_heads,
        );
        Ok(LayerBufs {
            x_in: ctx.zeros("x_in", t * c).await?,
            rstd1: ctx.zeros("rstd1", t).await?,
            xn1: ctx.zeros("xn1", t * c).await?,
            q: ctx.zeros("q", t * qd).await?,
            k: ctx.zeros("k", t * kvd).await?,
            v: ctx.zeros("v", t * kvd).await?,
            att: ctx.zeros("att", t * qd).await?,
            lse: ctx.zeros("lse", hh * t).await?,
            x_mid: ctx.zeros("x_mid", t * c).await?,
            rstd2: ctx.zeros("rstd2", t).await?,
            xn2: ctx.zeros("xn2", t * c).await?,
            gu: ctx.zeros("gu", t * 2 * f).await?,
            h: ctx.zeros("h", t * f).await?,
        })
    }
}

/// The backward's scratch.
#[derive(Debug)]
struct BackwardBufs {
    dxf: wgpu::Buffer,  // (T, C)
    dx: wgpu::Buffer,   // (T, C)
    dh: wgpu::Buffer,   // (T, F)
    dgu: wgpu::Buffer,  // (T, 2F)
    dxn: wgpu::Buffer,  // (T, C)
    datt: wgpu::Buffer, // (T, qd)
    dq: wgpu::Buffer,   // (T, qd)
    dk: wgpu::Buffer,   // (T, kvd)
    dv: wgpu::Buffer,   // (T, kvd)
    ds: wgpu::Buffer,   // (H)
    dxf_chunk: wgpu::Buffer,
    dw_partials: wgpu::Buffer,
}

impl BackwardBufs {
    async fn new(ctx: &GpuContext, cfg: &ModelConfig, t: usize, chunk: usize) -> GpuResult<Self> {
        let (c, f, qd, kvd) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
        Ok(BackwardBufs {
            dxf: ctx.zeros("dxf", t * c).await?,
            dx: ctx.zeros("dx", t * c).await?,
            dh: ctx.zeros("dh", t * f).await?,
            dgu: ctx.zeros("dgu", t * 2 * f).await?,
            dxn: ctx.zeros("dxn", t * c).await?,
            datt: ctx.zeros("datt", t * qd).await?,
            dq: ctx.zeros("dq", t * qd).await?,
            dk: ctx.zeros("dk", t * kvd).await?,
            dv: ctx.zeros("dv", t * kvd).await?,
            ds: ctx.zeros("ds", cfg.num_heads).await?,
            dxf_chunk: ctx.zeros("dxf chunk", chunk * c).await?,
            dw_partials: ctx.zeros("rmsnorm dw partials", dw_partials_len(t, c)).await?,
        })
    }
}

/// Buffers sized for sequences up to `t` tokens, reused from call to call.
#[derive(Debug)]
struct Workspace {
    t: usize,
    /// Rows of logits per chunk.
    chunk: usize,
    x: wgpu::Buffer,          // (T, C) the residual stream
    xf: wgpu::Buffer,         // (T, C)
    rstd_f: wgpu::Buffer,     // (T)
    entropy: wgpu::Buffer,    // (H, T) one layer's
    z: wgpu::Buffer,          // (chunk, V)
    xf_chunk: wgpu::Buffer,   // (chunk, C)
    loss_chunk: wgpu::Buffer, // (chunk)
    target_chunk: wgpu::Buffer,
    attn: AttentionScratch,
    rope: Option<RopeTables>,
    /// One per layer when a backward follows, else one shared by all.
    layers: Vec<LayerBufs>,
    backward: Option<BackwardBufs>,
}

/// AdamW's state on the device.
#[derive(Debug)]
struct OptState {
    m: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    decay: Vec<wgpu::Buffer>,
    stats: wgpu::Buffer,
    partials: wgpu::Buffer,
    step: u64,
}

/// Per-sequence inputs on the device.
struct SeqInputs {
    t: usize,
    tokens: wgpu::Buffer,
    targets: wgpu::Buffer,
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
    /// The whole gradient in layout order: for its norm and its read-back.
    flat_grads: Option<wgpu::Buffer>,
    head_scales: Vec<wgpu::Buffer>,
    ws: Option<Workspace>,
    opt: Option<OptState>,
    /// Rows of logits per chunk at most (`LOGIT_ROWS`; tests lower it).
    logit_rows: usize,
    /// The max storage binding sequences are checked against: the
    /// device's, unless lowered (tests).
    binding_limit: u64,
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
        let limit = ctx.limits().max_storage_buffer_binding_size;
        let mut weights = Vec::with_capacity(slots.len());
        for s in &slots {
            let bytes = s.len as u64 * 4;
            if bytes > limit {
                return Err(Error::Engine(format!(
                    "GPU engine ({}): a weight matrix of {} values ({bytes} bytes) is past the device's max storage \
                     buffer binding of {limit} bytes; use --backend cpu",
                    ctx.adapter(),
                    s.len
                )));
            }
            let data = &params.data[s.offset..s.offset + s.len];
            weights.push(ctx.upload("weights", data).await.map_err(engine_error)?);
        }
        let mut head_scales = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            head_scales.push(ctx.zeros("head scales", config.num_heads).await.map_err(engine_error)?);
        }
        Ok(GpuEngine {
            ctx,
            kernels,
            config,
            layout,
            slots,
            weights,
            grads: None,
            flat_grads: None,
            head_scales,
            ws: None,
            opt: None,
            logit_rows: LOGIT_ROWS,
            binding_limit: limit,
        })
    }

    /// Makes logits at most `rows` rows at a time (at least 1), so tests
    /// reach the chunked LM head at small sizes.
    pub fn set_logit_rows(&mut self, rows: usize) {
        self.logit_rows = rows.max(1);
        self.ws = None;
    }

    /// Checks sequences against `bytes` instead of the device's max
    /// storage binding (lower only), so tests reach the refusal of long
    /// sequences at small sizes.
    pub fn set_binding_limit(&mut self, bytes: u64) {
        self.binding_limit = bytes.min(self.ctx.limits().max_storage_buffer_binding_size);
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

    /// Err naming the length and the limit when one of a sequence's buffers
    /// would pass the device's max storage binding (splitting such
    /// sequences is not implemented yet).
    pub fn check_fits(&self, t: usize) -> Result<()> {
        let cfg = &self.config;
        let (c, f, qd, kvd, hh) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.num_heads,
        );
        let limit = self.binding_limit;
        let widest = [
            ("the (T, 2F) gate/up activations", 2 * f),
            ("the (T, C) residual stream", c),
            ("the (T, H*hd) queries", qd),
            ("the (T, KV*hd) keys", kvd),
            ("the attention state (H, T, 3)", 3 * hh),
        ]
        .into_iter()
        .max_by_key(|&(_, w)| w)
        .expect("five");
        let bytes = t as u64 * widest.1 as u64 * 4;
        let vocab_row = cfg.vocab_size as u64 * 4;
        let adapter = self.ctx.adapter();
        if bytes > limit {
            return Err(Error::Engine(format!(
                "GPU engine ({adapter}): a sequence of {t} tokens needs {bytes} bytes for {} in one binding, past \
                 the device's max storage buffer binding of {limit} bytes (at most {} tokens for this model); \
                 splitting long sequences is not implemented yet: use shorter sequences or --backend cpu",
                widest.0,
                limit / (widest.1 as u64 * 4)
            )));
        }
        if vocab_row > limit {
            return Err(Error::Engine(format!(
                "GPU engine ({adapter}): one row of logits ({vocab_row} bytes) is past the device's max storage \
                 buffer binding of {limit} bytes; use --backend cpu"
            )));
        }
        // llvmpipe ends every loop of an invocation after 65535 iterations
        // in all; the weight-gradient products loop once per token.
        let loop_limit = super::attention::CPU_LOOP_BUDGET as usize;
        if self.ctx.report().is_cpu && t > loop_limit {
            return Err(Error::Engine(format!(
                "GPU engine ({adapter}): a sequence of {t} tokens is past the {loop_limit} that a CPU adapter's \
                 loop limit allows (splitting is not implemented yet); use --backend cpu"
            )));
        }
        Ok(())
    }

    /// Rows of logits per chunk for sequences of `t` tokens.
    fn chunk_rows(&self, t: usize) -> usize {
        let limit = self.binding_limit;
        let by_binding = (limit / (self.config.vocab_size as u64 * 4)).max(1) as usize;
        self.logit_rows.min(by_binding).min(t).max(1)
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
        let ctx = &self.ctx;
        let cfg = &self.config;
        let chunk = self.chunk_rows(t);
        let (c, hh, vocab) = (cfg.hidden_size, cfg.num_heads, cfg.vocab_size);
        let rope = match cfg.position_encoding {
            PositionEncoding::Rope { theta } => Some(RopeTables::upload(ctx, t, cfg.head_dim, theta).await?),
            PositionEncoding::None => None,
        };
        let mut layers = Vec::with_capacity(need_layers);
        for _ in 0..need_layers {
            layers.push(LayerBufs::new(ctx, cfg, t).await?);
        }
        let backward = if backward {
            Some(BackwardBufs::new(ctx, cfg, t, chunk).await?)
        } else {
            None
        };
        self.ws = Some(Workspace {
            t,
            chunk,
            x: ctx.zeros("x", t * c).await?,
            xf: ctx.zeros("xf", t * c).await?,
            rstd_f: ctx.zeros("rstd_f", t).await?,
            entropy: ctx.zeros("entropy", hh * t).await?,
            z: ctx.zeros("logits chunk", chunk * vocab).await?,
            xf_chunk: ctx.zeros("xf chunk", chunk * c).await?,
            loss_chunk: ctx.zeros("loss chunk", chunk).await?,
            target_chunk: ctx.zeros("target chunk", chunk).await?,
            attn: AttentionScratch::new(ctx, hh, t).await?,
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

    async fn upload_sequence(&self, tokens: &[u32]) -> GpuResult<SeqInputs> {
        Ok(SeqInputs {
            t: tokens.len(),
            tokens: self.ctx.upload("tokens", tokens).await?,
            targets: self.ctx.upload("targets", &next_token_targets(tokens)).await?,
        })
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
        k.embedding
            .forward(ctx, enc, &ws.x, &self.weights[0], &seq.tokens, t, c, vocab)?;
        for l in 0..cfg.num_layers {
            let lb = &ws.layers[if keep { l } else { 0 }];
            let w = |which| &self.weights[self.slot(l, which)];
            k.rmsnorm
                .forward(ctx, enc, &lb.xn1, &lb.rstd1, &ws.x, w(ATTN_NORM), t, c, eps)?;
            mm.matmul_nt(ctx, enc, &lb.q, &lb.xn1, w(WQ), t, c, qd, 1.0, 0.0)?;
            mm.matmul_nt(ctx, enc, &lb.k, &lb.xn1, w(WK), t, c, kvd, 1.0, 0.0)?;
            mm.matmul_nt(ctx, enc, &lb.v, &lb.xn1, w(WV), t, c, kvd, 1.0, 0.0)?;
            if let Some(tables) = &ws.rope {
                k.rope.apply(ctx, enc, &lb.q, tables, t, hh, hd, false)?;
                k.rope.apply(ctx, enc, &lb.k, tables, t, kvh, hd, false)?;
            }
            k.attention.forward(
                ctx,
                enc,
                &lb.att,
                &lb.lse,
                &ws.entropy,
                &ws.attn,
                &lb.q,
                &lb.k,
                &lb.v,
                &self.head_scales[l],
                shape,
            )?;
            if let Some(all) = entropy {
                let bytes = (hh * t * 4) as u64;
                enc.copy_buffer_to_buffer(&ws.entropy, 0, all, l as u64 * bytes, bytes);
            }
            if keep {
                enc.copy_buffer_to_buffer(&ws.x, 0, &lb.x_in, 0, (t * c * 4) as u64);
            }
            // x += att Wo^T
            mm.matmul_nt(ctx, enc, &ws.x, &lb.att, w(WO), t, qd, c, 1.0, 1.0)?;
            k.rmsnorm
                .forward(ctx, enc, &lb.xn2, &lb.rstd2, &ws.x, w(MLP_NORM), t, c, eps)?;
            // [g u] = xn2 [Wg; Wu]^T
            mm.matmul_nt(ctx, enc, &lb.gu, &lb.xn2, w(GATE_UP), t, c, 2 * f, 1.0, 0.0)?;
            k.swiglu.forward(ctx, enc, &lb.h, &lb.gu, t, f)?;
            if keep {
                enc.copy_buffer_to_buffer(&ws.x, 0, &lb.x_mid, 0, (t * c * 4) as u64);
            }
            // x += h Wd^T
            mm.matmul_nt(ctx, enc, &ws.x, &lb.h, w(W_DOWN), t, f, c, 1.0, 1.0)?;
        }
        k.rmsnorm.forward(
            ctx,
            enc,
            &ws.xf,
            &ws.rstd_f,
            &ws.x,
            &self.weights[self.norm_slot()],
            t,
            c,
            eps,
        )?;
        Ok(())
    }

    /// Records the LM head over xf in chunks of rows: per-row losses into
    /// `losses` (T, the last 0) from `losses_offset` on; the kept rows of
    /// logits into `logits` from row `first_kept`. With `grad_weight`, also
    /// dxf and (`weight_grad`) the head's weight gradient.
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
        let (t, c, vocab) = (seq.t, cfg.hidden_size, cfg.vocab_size);
        let wl = &self.weights[self.lm_head_slot()];
        let mut r0 = 0;
        while r0 < t {
            let n = ws.chunk.min(t - r0);
            // The chunk's rows of xf and targets, copied to offset 0 (a
            // binding starts at 0).
            let xfc = if n == t {
                &ws.xf
            } else {
                enc.copy_buffer_to_buffer(&ws.xf, (r0 * c * 4) as u64, &ws.xf_chunk, 0, (n * c * 4) as u64);
                &ws.xf_chunk
            };
            let targets = if n == t {
                &seq.targets
            } else {
                enc.copy_buffer_to_buffer(&seq.targets, (r0 * 4) as u64, &ws.target_chunk, 0, (n * 4) as u64);
                &ws.target_chunk
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
            k.cross_entropy
                .forward_backward(ctx, enc, &ws.loss_chunk, &ws.z, targets, n, vocab, grad_weight)?;
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
                let dxfc = if n == t { &b.dxf } else { &b.dxf_chunk };
                k.matmul.matmul_nn(ctx, enc, dxfc, &ws.z, wl, n, vocab, c, 1.0, 0.0)?;
                if n != t {
                    enc.copy_buffer_to_buffer(&b.dxf_chunk, 0, &b.dxf, (r0 * c * 4) as u64, (n * c * 4) as u64);
                }
                if weight_grad {
                    let g = &self.grads.as_ref().expect("gradient buffers")[self.lm_head_slot()];
                    k.matmul.matmul_tn(ctx, enc, g, &ws.z, xfc, vocab, n, c, 1.0, 1.0)?;
                }
            }
            r0 += n;
        }
        Ok(())
    }

    /// Records one sequence's backward (after `record_layers` with keep):
    /// weight gradients accumulated into `self.grads` when `full`, each
    /// layer's head-scale gradient copied into `dscales` at
    /// `dscale_offset + l * H`, the losses into `losses` at `losses_offset`.
    #[allow(clippy::too_many_arguments)]
    fn record_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        seq: &SeqInputs,
        groups: Option<&TokenGroupsBuffers>,
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
        enc.clear_buffer(&b.dx, 0, Some((t * c * 4) as u64));
        let norm = self.norm_slot();
        k.rmsnorm
            .backward_dx(ctx, enc, &b.dx, &b.dxf, &ws.x, &ws.rstd_f, &self.weights[norm], t, c)?;
        if let Some(dw) = g(norm) {
            k.rmsnorm
                .backward_dw(ctx, enc, dw, &b.dw_partials, &b.dxf, &ws.x, &ws.rstd_f, t, c)?;
        }
        for l in (0..cfg.num_layers).rev() {
            let lb = &ws.layers[l];
            let s = |which| self.slot(l, which);
            let w = |which| &self.weights[s(which)];
            // MLP: x_out = x_mid + h Wd^T
            mm.matmul_nn(ctx, enc, &b.dh, &b.dx, w(W_DOWN), t, c, f, 1.0, 0.0)?;
            if let Some(gw) = g(s(W_DOWN)) {
                mm.matmul_tn(ctx, enc, gw, &b.dx, &lb.h, c, t, f, 1.0, 1.0)?;
            }
            k.swiglu.backward(ctx, enc, &b.dgu, &b.dh, &lb.gu, t, f)?;
            mm.matmul_nn(ctx, enc, &b.dxn, &b.dgu, w(GATE_UP), t, 2 * f, c, 1.0, 0.0)?;
            if let Some(gw) = g(s(GATE_UP)) {
                mm.matmul_tn(ctx, enc, gw, &b.dgu, &lb.xn2, 2 * f, t, c, 1.0, 1.0)?;
            }
            k.rmsnorm
                .backward_dx(ctx, enc, &b.dx, &b.dxn, &lb.x_mid, &lb.rstd2, w(MLP_NORM), t, c)?;
            if let Some(dw) = g(s(MLP_NORM)) {
                k.rmsnorm
                    .backward_dw(ctx, enc, dw, &b.dw_partials, &b.dxn, &lb.x_mid, &lb.rstd2, t, c)?;
            }
            // Attention: x_mid = x_in + att Wo^T
            mm.matmul_nn(ctx, enc, &b.datt, &b.dx, w(WO), t, c, qd, 1.0, 0.0)?;
            if let Some(gw) = g(s(WO)) {
                mm.matmul_tn(ctx, enc, gw, &b.dx, &lb.att, c, t, qd, 1.0, 1.0)?;
            }
            k.attention.backward(
                ctx,
                enc,
                &b.dq,
                &b.dk,
                &b.dv,
                &b.ds,
                &ws.attn,
                &b.datt,
                &lb.q,
                &lb.k,
                &lb.v,
                &lb.att,
                &lb.lse,
                &self.head_scales[l],
                shape,
            )?;
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
            if let Some(tables) = &ws.rope {
                k.rope.apply(ctx, enc, &b.dq, tables, t, hh, hd, true)?;
                k.rope.apply(ctx, enc, &b.dk, tables, t, kvh, hd, true)?;
            }
            // dxn = dq Wq + dk Wk + dv Wv; dW{q,k,v} += d{q,k,v}^T xn1
            mm.matmul_nn(ctx, enc, &b.dxn, &b.dq, w(WQ), t, qd, c, 1.0, 0.0)?;
            mm.matmul_nn(ctx, enc, &b.dxn, &b.dk, w(WK), t, kvd, c, 1.0, 1.0)?;
            mm.matmul_nn(ctx, enc, &b.dxn, &b.dv, w(WV), t, kvd, c, 1.0, 1.0)?;
            if full {
                for (which, d, n) in [(WQ, &b.dq, qd), (WK, &b.dk, kvd), (WV, &b.dv, kvd)] {
                    let gw = g(s(which)).expect("full");
                    mm.matmul_tn(ctx, enc, gw, d, &lb.xn1, n, t, c, 1.0, 1.0)?;
                }
            }
            k.rmsnorm
                .backward_dx(ctx, enc, &b.dx, &b.dxn, &lb.x_in, &lb.rstd1, w(ATTN_NORM), t, c)?;
            if let Some(dw) = g(s(ATTN_NORM)) {
                k.rmsnorm
                    .backward_dw(ctx, enc, dw, &b.dw_partials, &b.dxn, &lb.x_in, &lb.rstd1, t, c)?;
            }
        }
        if let (Some(gs), Some(groups)) = (grads, groups) {
            k.embedding
                .backward(ctx, enc, &gs[0], &b.dx, groups, c, cfg.vocab_size)?;
        }
        Ok(())
    }

    fn check_batch(&self, batch: &[Vec<u32>], head_scales: &HeadScales) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::Input("empty batch".into()));
        }
        for seq in batch {
            check_inputs(&self.config, seq, head_scales)?;
            self.check_fits(seq.len())?;
        }
        if batch.iter().all(|s| s.len() < 2) {
            return Err(Error::Input(
                "every sequence has fewer than 2 tokens: nothing to predict".into(),
            ));
        }
        Ok(())
    }

    /// Runs the backward of every sequence of `batch` and reads back the
    /// losses and head-scale gradients; the weight gradients stay in
    /// `self.grads` (and, with `flat`, in `self.flat_grads`, whose norm
    /// with `clip` lands in the optimizer's stats).
    async fn run_gradients(
        &mut self,
        batch: &[Vec<u32>],
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
        if full && self.flat_grads.is_none() {
            self.flat_grads = Some(self.ctx.zeros("flat gradient", self.layout.total).await?);
        }
        self.upload_head_scales(head_scales)?;
        let predictions: usize = batch.iter().map(|s| s.len().saturating_sub(1)).sum();
        let weight = 1.0f32 / predictions.max(1) as f32;
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
            let seq = self.upload_sequence(tokens).await?;
            let groups = if full {
                Some(TokenGroupsBuffers::upload(&self.ctx, &TokenGroups::new(tokens, cfg.vocab_size)?).await?)
            } else {
                None
            };
            self.ctx
                .submit("backward", |enc| {
                    self.record_layers(enc, &seq, true, None)?;
                    self.record_backward(
                        enc,
                        &seq,
                        groups.as_ref(),
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
            let flat = self.flat_grads.as_ref().expect("made above");
            let grads = self.grads.as_ref().expect("made above");
            let n = self.layout.total;
            self.ctx
                .submit("gradient norm", |enc| {
                    for (s, g) in self.slots.iter().zip(grads) {
                        enc.copy_buffer_to_buffer(g, 0, flat, (s.offset * 4) as u64, (s.len * 4) as u64);
                    }
                    self.kernels
                        .optim
                        .grad_norm(&self.ctx, enc, &opt.stats, &opt.partials, flat, n, clip)?;
                    enc.copy_buffer_to_buffer(&opt.stats, 0, &results, (stats_base * 4) as u64, (STATS_LEN * 4) as u64);
                    Ok(())
                })
                .await?;
        }
        let all = self
            .ctx
            .read_f32("losses and head-scale gradients", &results, stats_base + STATS_LEN)
            .await?;
        let loss_sum: f64 = all[..total_t].iter().map(|&x| x as f64).sum();
        let mut dscales = vec![0f32; lh];
        for i in 0..batch.len() {
            let d = &all[dscale_base + i * lh..dscale_base + (i + 1) * lh];
            for (a, &b) in dscales.iter_mut().zip(d) {
                *a += b;
            }
        }
        let norm_value = norm.map(|_| all[stats_base]);
        Ok((loss_sum / predictions.max(1) as f64, predictions, dscales, norm_value))
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
        let limit = self.ctx.limits().max_storage_buffer_binding_size;
        let bytes = self.layout.total as u64 * 4;
        if bytes > limit {
            return Err(GpuError::Limit {
                adapter: self.ctx.adapter(),
                what: "the global gradient norm over the whole flat gradient (not split yet)".into(),
                needed: bytes,
                limit,
                limit_name: "max storage buffer binding size (bytes)",
            });
        }
        self.opt = Some(OptState {
            m,
            v,
            decay,
            stats: self.ctx.zeros("optimizer stats", STATS_LEN).await?,
            partials: self
                .ctx
                .zeros("gradient norm partials", norm_partials_len(self.layout.total))
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
            let seq = self.upload_sequence(tokens).await?;
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
        let loss_sum = row_losses[..t - 1].iter().map(|&x| x as f64).sum();
        Ok(ForwardOutput {
            loss_sum,
            predictions: t - 1,
            logits,
            logits_rows: kept_rows,
            entropy_bits,
        })
    }

    async fn gradients(&mut self, batch: &[Vec<u32>], head_scales: &HeadScales, mode: GradMode) -> Result<Gradients> {
        self.check_batch(batch, head_scales)?;
        let (loss, predictions, hs, _) = self
            .run_gradients(batch, head_scales, mode, None)
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
        self.check_batch(batch, head_scales)?;
        self.ensure_optimizer().await.map_err(engine_error)?;
        let (loss, _, _, norm) = self
            .run_gradients(batch, head_scales, GradMode::Full, Some(optimizer.clip_norm))
            .await
            .map_err(engine_error)?;
        if !loss.is_finite() {
            return Err(Error::Engine(format!("loss is {loss}: refusing to update the weights")));
        }
        let grad_norm = norm.expect("asked for") as f64;
        if !grad_norm.is_finite() {
            return Err(Error::Engine(format!(
                "gradient norm is {grad_norm}: refusing to update the weights"
            )));
        }
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
