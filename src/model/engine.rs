//! The engine contract: what every engine (CPU here, WGSL in `gpu/`)
//! computes, written once so `lab/` can be generic over it.
//!
//! Methods are async so the browser never blocks on a GPU read-back; the CPU
//! engine completes at once, and natively callers wait with `pollster`.

use super::config::ModelConfig;
use super::error::{Error, Result};
use super::head_scales::HeadScales;
use super::optim::{AdamWConfig, AdamWState};
use super::params::Params;

/// Which rows of logits the caller wants back. Loss needs none of them:
/// the engine scores rows as it makes them, so memory stays linear in T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsRequest {
    #[default]
    None,
    All,
    /// The last n positions.
    Last(usize),
}

#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    pub logits: LogitsRequest,
    /// Attention entropy in bits per layer, head and query position.
    pub entropy: bool,
    /// Return every prediction's loss (`ForwardOutput::losses`).
    pub losses: bool,
    /// A weight per next-token prediction (T - 1 of them; 0 = not scored):
    /// `loss_sum` becomes the weighted sum. `None`: all 1.
    pub loss_weights: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    /// Sum over positions 0..T-1 of w_i * -ln p(token[i+1] | tokens[..=i])
    /// (w_i = 1 without loss weights).
    pub loss_sum: f64,
    /// How many next-token predictions there are (T - 1).
    pub predictions: usize,
    /// The sum of the weights (= `predictions` without loss weights).
    pub weight_sum: f64,
    /// (T - 1) each prediction's loss, unweighted, when asked for.
    pub losses: Option<Vec<f32>>,
    /// (rows, vocab), the rows asked for in `ForwardOptions::logits`.
    pub logits: Option<Vec<f32>>,
    pub logits_rows: usize,
    /// (layers, heads, T), in bits.
    pub entropy_bits: Option<Vec<f32>>,
}

impl ForwardOutput {
    /// The (weighted) mean loss over the scored predictions.
    pub fn mean_loss(&self) -> f64 {
        if self.weight_sum <= 0.0 {
            f64::NAN
        } else {
            self.loss_sum / self.weight_sum
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    /// Gradients of every weight and every head scale.
    Full,
    /// The model is frozen: only head-scale gradients, and the matrix
    /// products that would make weight gradients are skipped.
    HeadScalesOnly,
}

#[derive(Debug, Clone)]
pub struct Gradients {
    /// Mean next-token cross-entropy over all predictions of the batch,
    /// weighted by the loss weights when given: sum w_i l_i / sum w_i.
    pub loss: f64,
    pub predictions: usize,
    /// Same layout as the parameters; `None` in `HeadScalesOnly` mode.
    pub weights: Option<Vec<f32>>,
    /// (layers, heads).
    pub head_scales: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What an engine has asked of its device so far (GPU engines): the fixed
/// cost of a call is in these counts, whatever the size of the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceWork {
    /// Command buffers submitted (each a round through the driver).
    pub submits: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Buffers created (storage, uniforms, read-back staging).
    pub buffers: u64,
    pub bind_groups: u64,
    /// Read-backs to the host (each waits for the device).
    pub read_backs: u64,
}

impl DeviceWork {
    /// The work done since `before`.
    pub fn since(self, before: DeviceWork) -> DeviceWork {
        DeviceWork {
            submits: self.submits - before.submits,
            dispatches: self.dispatches - before.dispatches,
            buffers: self.buffers - before.buffers,
            bind_groups: self.bind_groups - before.bind_groups,
            read_backs: self.read_backs - before.read_backs,
        }
    }
}

/// One kernel's share of the device time while a profile ran
/// (`Engine::profile_start`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub calls: u64,
    pub seconds: f64,
}

#[allow(async_fn_in_trait)]
pub trait Engine {
    /// A short description: which engine, which device.
    fn name(&self) -> String;

    /// The kernels the engine runs where it has a choice of forms, for a
    /// benchmark's record (None where it has no choice).
    fn kernels(&self) -> Option<String> {
        None
    }

    /// The device work so far (None for an engine without a device).
    fn device_work(&self) -> Option<DeviceWork> {
        None
    }

    /// Starts timing every kernel on the device's clock (GPU engines on a
    /// device with timestamp queries); false where the engine cannot.
    fn profile_start(&self) -> bool {
        false
    }

    /// The kernel times since `profile_start`, longest first (empty where
    /// no profile ran).
    async fn profile_finish(&self) -> Result<Vec<KernelTime>> {
        Ok(Vec::new())
    }
    fn config(&self) -> &ModelConfig;

    /// One sequence through the model.
    async fn forward(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput>;

    /// Mean next-token loss of a batch and its gradients.
    async fn gradients(&mut self, batch: &[Vec<u32>], head_scales: &HeadScales, mode: GradMode) -> Result<Gradients> {
        self.weighted_gradients(batch, None, head_scales, mode).await
    }

    /// The weighted mean next-token loss of a batch, sum w l / sum w, and
    /// its gradients. `loss_weights[s]` holds one weight per prediction of
    /// sequence s (its length - 1); `None`: all 1. Checked by
    /// [`check_batch`].
    async fn weighted_gradients(
        &mut self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
        mode: GradMode,
    ) -> Result<Gradients>;

    /// One AdamW step on every weight, with gradient clipping; the engine
    /// keeps the optimizer state.
    async fn train_step(
        &mut self,
        batch: &[Vec<u32>],
        head_scales: &HeadScales,
        optimizer: &AdamWConfig,
        lr: f32,
    ) -> Result<StepStats>;

    /// The current weights (for saving).
    async fn params(&mut self) -> Result<Params<f32>>;

    /// The optimizer's moments and step count (for checkpoints); `None`
    /// before the first training step.
    async fn optimizer_state(&mut self) -> Result<Option<AdamWState>>;

    /// Replaces the optimizer's state (resuming from a checkpoint).
    async fn set_optimizer_state(&mut self, state: AdamWState) -> Result<()>;

    /// The attention of each query in `queries` over all keys for one
    /// layer and query head: `queries.len()` rows of T (zero past the
    /// query). Computed from the weights by the CPU definition
    /// ([`crate::model::cpu::inspect`]), never as a T x T buffer; an engine
    /// may override it with its own kernels.
    async fn attention_rows(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        layer: usize,
        head: usize,
        queries: &[usize],
    ) -> Result<Vec<f32>> {
        let params = self.params().await?;
        crate::model::cpu::inspect::attention_rows(self.config(), &params, tokens, head_scales, layer, head, queries)
    }

    /// One head's T x T attention pooled to at most `cells` x `cells`
    /// (see [`crate::model::cpu::inspect::pooled_attention`]): (map, n).
    async fn pooled_attention(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        layer: usize,
        head: usize,
        cells: usize,
    ) -> Result<(Vec<f32>, usize)> {
        let params = self.params().await?;
        crate::model::cpu::inspect::pooled_attention(self.config(), &params, tokens, head_scales, layer, head, cells)
    }
}

/// Checks loss weights against the sequence they score: one finite,
/// non-negative weight per prediction.
pub fn check_loss_weights(tokens: &[u32], weights: &[f32]) -> Result<()> {
    let predictions = tokens.len().saturating_sub(1);
    if weights.len() != predictions {
        return Err(Error::Input(format!(
            "{} loss weights for a sequence of {} tokens ({predictions} predictions)",
            weights.len(),
            tokens.len()
        )));
    }
    if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::Input(format!(
            "loss weight {w} at prediction {i} is not a finite non-negative number"
        )));
    }
    Ok(())
}

/// The checks both engines apply to a batch before any work: a non-empty
/// batch of valid sequences, something to predict, weights that fit.
pub fn check_batch(
    config: &ModelConfig,
    batch: &[Vec<u32>],
    loss_weights: Option<&[Vec<f32>]>,
    head_scales: &HeadScales,
) -> Result<()> {
    if batch.is_empty() {
        return Err(Error::Input("empty batch".into()));
    }
    for seq in batch {
        check_inputs(config, seq, head_scales)?;
    }
    if batch.iter().all(|s| s.len() < 2) {
        return Err(Error::Input(
            "every sequence has fewer than 2 tokens: nothing to predict".into(),
        ));
    }
    if let Some(weights) = loss_weights {
        if weights.len() != batch.len() {
            return Err(Error::Input(format!(
                "loss weights for {} sequences, the batch has {}",
                weights.len(),
                batch.len()
            )));
        }
        for (seq, w) in batch.iter().zip(weights) {
            check_loss_weights(seq, w)?;
        }
        if weights.iter().flatten().all(|&w| w == 0.0) {
            return Err(Error::Input("every loss weight is 0: nothing is scored".into()));
        }
    }
    Ok(())
}

/// Refuses to apply an update computed from a non-finite loss or gradient.
pub fn check_finite_update(loss: f64, grad_norm: f64) -> Result<()> {
    if !loss.is_finite() {
        return Err(Error::Engine(format!("loss is {loss}: refusing to update the weights")));
    }
    if !grad_norm.is_finite() {
        return Err(Error::Engine(format!(
            "gradient norm is {grad_norm}: refusing to update the weights"
        )));
    }
    Ok(())
}

/// The checks every engine applies to its inputs before any work.
pub fn check_inputs(config: &ModelConfig, tokens: &[u32], head_scales: &HeadScales) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Input("empty token sequence".into()));
    }
    if let Some((position, &id)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= config.vocab_size)
    {
        return Err(Error::TokenOutOfRange {
            id,
            position,
            vocab_size: config.vocab_size,
        });
    }
    head_scales.check_for(config, None)
}
