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
//! gradient norm, reading the gradients or the weights back). The two
//! (vocab, C) matrices, embedding and LM head, are split by rows into
//! parts when one binding cannot hold them (`weights.rs`): the gather runs
//! once per part, and the LM head's products write (and its input
//! gradient reads) each part's block of logit columns in place
//! (`matmul::Strided`). Training needs each matrix whole and says so.
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
//! (`check_fits`): a weight matrix other than those two past the max
//! storage binding, or an output read back whole (logits, entropy) past
//! the max buffer size.
//!
//! The optimizer's state (AdamW moments per slot, the step count) stays on
//! the device; a training step reads back only the losses and the
//! gradient norm (summed slot by slot, so the flat gradient is never
//! bound whole) to refuse a non-finite update as the CPU engine does.
//!
//! Every call awaits its read-backs (`GpuContext::read_f32`), so nothing
//! blocks on the web.
//!
//! The code, one job a file: `weights.rs` (the slots), `workspace.rs`
//! (paging, the per-length buffers, uploads), `record.rs` (the forward's
//! recording, step by step as `model::cpu::transformer`), `gradients.rs`
//! (the backward and the gradient run, the optimizer's state); this file
//! holds the engine itself and the `Engine` contract.
//!
//! Between calls the context keeps each uniform buffer and bind group it
//! made (`GpuContext`'s caches), so a call at a length already seen makes
//! only its outputs and its token buffers; the command buffer itself is
//! recorded anew each call.

use super::attention::{AttnSpan, BackwardForm, KeySplit, CPU_LOOP_BUDGET, FLASH_WG};
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

/// Rows of logits made at once (`model::shapes::LOGIT_ROWS`, as the CPU engine), fewer when
/// a chunk of logits would pass the device's max storage binding or a page
/// is shorter.
mod gradients;
mod record;
mod weights;
mod workspace;

use gradients::*;
use weights::*;
use workspace::*;

pub use workspace::footprint;

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

/// What a gpu::Error becomes at the engine's boundary; a limit that the
/// engine could not split its way around points at the CPU engine.
fn engine_error(e: GpuError) -> Error {
    match e {
        GpuError::Limit { .. } => Error::DeviceLimit(format!("GPU engine: {e}")),
        GpuError::DeviceLost { .. } => Error::DeviceLost(format!("GPU engine: {e}")),
        // The device's memory is full: a memory error (fewer tokens, f16
        // weights or the CPU engine), not the engine failing.
        GpuError::OutOfMemory { .. } => Error::DeviceMemory(format!("GPU engine: {e}")),
        e => Error::Engine(format!("GPU engine: {e}")),
    }
}

/// The weights on the host, as loaded: f32, or already f16.
enum HostWeights<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl HostWeights<'_> {
    /// Uploads the values `range` as `elem`, converting one part at a time.
    async fn upload(
        &self,
        ctx: &GpuContext,
        range: std::ops::Range<usize>,
        elem: crate::gpu::shader::Elem,
    ) -> GpuResult<wgpu::Buffer> {
        use crate::gpu::shader::Elem;
        match (self, elem) {
            (HostWeights::F32(d), Elem::F32) => ctx.upload("weights", &d[range]).await,
            (HostWeights::F32(d), Elem::F16) => {
                // A weight past f16's range (65504) would become inf and
                // every forward NaN: refused, not stored.
                let part = &d[range.clone()];
                if let Some(k) = part
                    .iter()
                    .position(|x| x.is_finite() && x.abs() > f32::from(half::f16::MAX))
                {
                    return Err(crate::gpu::Error::Shape {
                        op: "f16 weights",
                        message: format!(
                            "weight {} is {}, past f16's largest value {}: hold this model's weights in f32",
                            range.start + k,
                            part[k],
                            half::f16::MAX
                        ),
                    });
                }
                let bits: Vec<u16> = part.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
                ctx.upload("weights (f16)", &bits).await
            }
            (HostWeights::F16(d), Elem::F16) => {
                let bits: Vec<u16> = d[range].iter().map(|x| x.to_bits()).collect();
                ctx.upload("weights (f16)", &bits).await
            }
            (HostWeights::F16(d), Elem::F32) => {
                let wide: Vec<f32> = d[range].iter().map(|x| x.to_f32()).collect();
                ctx.upload("weights", &wide).await
            }
        }
    }
}

pub struct GpuEngine {
    ctx: GpuContext,
    kernels: Kernels,
    config: ModelConfig,
    layout: ParamLayout,
    slots: Vec<Slot>,
    /// Per slot, its buffers: one, or the parts of a split matrix.
    weights: Vec<Vec<Part>>,
    /// How the matrices are held (the RMSNorm gains are always f32).
    elem: crate::gpu::shader::Elem,
    /// Weight gradients per slot, made on the first full backward.
    grads: Option<Vec<wgpu::Buffer>>,
    head_scales: Vec<wgpu::Buffer>,
    ws: Option<Workspace>,
    opt: Option<OptState>,
    /// Rows of logits per chunk at most (`LOGIT_ROWS`; tests lower it).
    logit_rows: usize,
}

impl GpuEngine {
    /// Builds the kernels on `ctx`'s device and uploads the weights once,
    /// in f32.
    pub async fn new(ctx: GpuContext, config: ModelConfig, params: Params<f32>) -> Result<Self> {
        Self::new_with(ctx, config, params, crate::gpu::shader::Elem::F32).await
    }

    /// `new`, the weight matrices held as `elem`: f16 halves their memory
    /// (the products accumulate in f32; the RMSNorm gains stay f32) and
    /// needs the device's `shader-f16`; such an engine runs forwards and
    /// head-scale gradients, not training.
    pub async fn new_with(
        ctx: GpuContext,
        config: ModelConfig,
        params: Params<f32>,
        elem: crate::gpu::shader::Elem,
    ) -> Result<Self> {
        if params.layout != ParamLayout::new(&config) {
            return Err(Error::Input("parameters do not match the config's layout".into()));
        }
        Self::build(ctx, config, HostWeights::F32(&params.data), elem).await
    }

    /// An engine holding its matrices in f16 from weights already in f16
    /// on the host (`files::load_params_as::<half::f16>`): a bf16 or f16
    /// checkpoint reaches the device without an f32 copy of the model.
    pub async fn new_from_f16(ctx: GpuContext, config: ModelConfig, data: Vec<half::f16>) -> Result<Self> {
        let total = ParamLayout::new(&config).total;
        if data.len() != total {
            return Err(Error::Input(format!(
                "{} f16 weights for a config of {total} parameters",
                data.len()
            )));
        }
        Self::build(ctx, config, HostWeights::F16(&data), crate::gpu::shader::Elem::F16).await
    }

    async fn build(
        ctx: GpuContext,
        config: ModelConfig,
        host: HostWeights<'_>,
        elem: crate::gpu::shader::Elem,
    ) -> Result<Self> {
        use crate::gpu::shader::Elem;
        if elem == Elem::F16 && !ctx.has_f16() {
            return Err(Error::Engine(format!(
                "GPU engine ({}): f16 weights need shader-f16, which this device does not offer",
                ctx.adapter()
            )));
        }
        let layout = ParamLayout::new(&config);
        if config.head_dim > super::attention::MAX_HEAD_DIM as usize {
            return Err(Error::Engine(format!(
                "GPU engine ({}): head dim {} is past the attention kernels' largest, {}",
                ctx.adapter(),
                config.head_dim,
                super::attention::MAX_HEAD_DIM
            )));
        }
        let mut kernels = Kernels::new(&ctx).await.map_err(engine_error)?;
        // The attention kernels built for this model's head dim: the
        // forward's the fastest form on every adapter measured, the
        // backward's on lavapipe (docs/BENCH.md).
        kernels
            .attention
            .build_flash(&ctx, config.head_dim, FLASH_WG)
            .await
            .map_err(engine_error)?;
        kernels.attention.backward_form = BackwardForm::Flash;
        // Short sequences' keys split across workgroups, to fill a real GPU
        // (not a CPU adapter, whose few threads the blocks already keep
        // busy).
        if !ctx.report().is_cpu {
            kernels.attention.key_split = KeySplit::GPU;
        }
        let slots = slots_of(&config, &layout);
        let mut engine = GpuEngine {
            ctx,
            kernels,
            config,
            layout,
            slots,
            weights: Vec::new(),
            elem,
            grads: None,
            head_scales: Vec::new(),
            ws: None,
            opt: None,
            logit_rows: LOGIT_ROWS,
        };
        let plan = engine.plan_parts()?;
        for (s, rows) in engine.slots.iter().zip(plan) {
            let row = s.split_row.unwrap_or(s.len);
            let elem = engine.slot_elem(s);
            let mut parts = Vec::with_capacity(rows.len());
            for rows in rows {
                let range = match s.split_row {
                    Some(_) => s.offset + rows.start * row..s.offset + rows.end * row,
                    None => s.offset..s.offset + s.len,
                };
                let buffer = host.upload(&engine.ctx, range, elem).await.map_err(engine_error)?;
                parts.push(Part { rows, buffer, elem });
            }
            engine.weights.push(parts);
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

    /// Sets when the attention forward splits a sequence's keys across
    /// workgroups (`KeySplit::GPU` on real GPUs, else `NONE`), so tests
    /// reach the split path on a CPU adapter.
    pub fn set_key_split(&mut self, key_split: KeySplit) {
        self.kernels.attention.key_split = key_split;
        self.ws = None;
    }

    /// Lowers (never raises) the max storage binding this engine pages
    /// its sequences by and checks every binding against, so tests reach
    /// the paged path at small sizes. Weights were split (or not) when the
    /// engine was made: below one of their buffers, every call fails with
    /// an error naming it. To split them, lower the context's limit first
    /// (`GpuContext::with_binding_limit`).
    pub fn set_binding_limit(&mut self, bytes: u64) {
        self.ctx.lower_limits(bytes, u64::MAX);
        self.ws = None;
    }

    /// Lowers (never raises) the workgroups per grid dimension this engine
    /// pages its sequences by and lays its dispatches out in, so tests
    /// reach the limit of a matrix product's rows at small sizes.
    #[doc(hidden)]
    pub fn set_workgroup_limit(&mut self, n: u32) {
        self.ctx.lower_workgroup_limit(n);
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
}

impl Engine for GpuEngine {
    fn name(&self) -> String {
        format!("gpu ({})", self.ctx.adapter())
    }

    fn kernels(&self) -> Option<String> {
        Some(self.kernels.attention.describe())
    }

    fn device_work(&self) -> Option<crate::model::engine::DeviceWork> {
        Some(self.ctx.work())
    }

    fn profile_start(&self) -> bool {
        self.ctx.profile_start()
    }

    async fn profile_finish(&self) -> crate::model::Result<Vec<crate::model::engine::KernelTime>> {
        self.ctx.profile_finish().await.map_err(engine_error)
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
            // The outputs' copies go in the same submission as the work.
            let mut staged = Vec::new();
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
                        None,
                    )?;
                    staged.push(self.ctx.stage(enc, "losses", &losses, t)?);
                    if let Some(b) = &entropy {
                        staged.push(self.ctx.stage(enc, "entropy", b, lht)?);
                    }
                    if let Some(b) = &logits {
                        staged.push(self.ctx.stage(enc, "logits", b, kept_rows * vocab)?);
                    }
                    Ok(())
                })
                .await?;
            let mut staged = staged.into_iter();
            let mut next = async || match staged.next() {
                Some(s) => self.ctx.read_staged(s).await.map(Some),
                None => Ok(None),
            };
            let row_losses = next().await?.unwrap_or_default();
            let entropy_bits = match entropy {
                Some(_) => next().await?,
                None => None,
            };
            let logits = match logits {
                Some(_) => next().await?,
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
        if mode == GradMode::Full {
            self.check_trainable()?;
        }
        let (loss, predictions, hs, _) = self
            .run_gradients(batch, loss_weights, head_scales, mode, None)
            .await
            .map_err(engine_error)?;
        let weights = if mode == GradMode::Full {
            let grads = self.grads.as_ref().expect("full backward made them");
            let pieces = self.slot_pieces(grads);
            Some(
                self.read_flat("weight gradients", &pieces)
                    .await
                    .map_err(engine_error)?,
            )
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
        self.check_trainable()?;
        self.ensure_optimizer().await.map_err(engine_error)?;
        let (loss, _, _, norm) = self
            .run_gradients(batch, None, head_scales, GradMode::Full, Some(optimizer.clip_norm))
            .await
            .map_err(engine_error)?;
        let grad_norm = norm.expect("asked for") as f64;
        check_finite_update(loss, grad_norm)?;
        // The step this update is (its bias correction); counted once the
        // update is submitted, so a failed one can be tried again as itself.
        let step = self.opt.as_ref().expect("made above").step + 1;
        let opt = self.opt.as_ref().expect("made above");
        let grads = self.grads.as_ref().expect("full backward made them");
        self.ctx
            .submit("adamw", |enc| {
                for (i, s) in self.slots.iter().enumerate() {
                    self.kernels.optim.adamw(
                        &self.ctx,
                        enc,
                        self.whole(i),
                        &opt.m[i],
                        &opt.v[i],
                        &grads[i],
                        &opt.decay[i],
                        &opt.stats,
                        s.len,
                        optimizer,
                        lr,
                        step,
                    )?;
                }
                Ok(())
            })
            .await
            .map_err(engine_error)?;
        self.opt.as_mut().expect("made above").step = step;
        Ok(StepStats { loss, grad_norm })
    }

    async fn params(&mut self) -> Result<Params<f32>> {
        let data = if self.elem == crate::gpu::shader::Elem::F16 {
            self.read_f16_weights().await
        } else {
            self.read_flat("weights", &self.weight_pieces()).await
        }
        .map_err(engine_error)?;
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
        let m = self
            .read_flat("adamw m", &self.slot_pieces(&opt.m))
            .await
            .map_err(engine_error)?;
        let v = self
            .read_flat("adamw v", &self.slot_pieces(&opt.v))
            .await
            .map_err(engine_error)?;
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
        self.check_trainable()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::ErrorKind;

    /// A full device is a device memory error (the CLI then suggests fewer
    /// tokens, f16 weights or the CPU engine), not an engine failure.
    #[test]
    fn out_of_device_memory_is_a_memory_error() {
        let e = engine_error(GpuError::OutOfMemory {
            adapter: "a GPU".into(),
            what: "buffer `q`".into(),
            message: "out of memory".into(),
        });
        assert_eq!(e.kind(), ErrorKind::DeviceMemory);
        assert!(e.to_string().starts_with("GPU engine"), "{e}");
    }
}
