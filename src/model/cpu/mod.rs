//! The CPU engine: the reference implementation of the engine contract,
//! multi-threaded natively (rayon + threaded sgemm), single-threaded in wasm.

pub mod attention;
pub mod chunked;
pub mod inspect;
pub mod kernels;
pub mod ops;
pub mod par;
pub mod transformer;

use crate::model::config::ModelConfig;
use crate::model::engine::{
    check_batch, check_finite_update, check_inputs, check_loss_weights, Engine, ForwardOptions, ForwardOutput,
    GradMode, Gradients, StepStats,
};
use crate::model::error::{Error, Result};
use crate::model::head_scales::{HeadScales, ScaleRule};
use crate::model::optim::{clip_grad_norm, AdamWConfig, AdamWState};
use crate::model::params::{ParamLayout, Params};
use crate::model::real::Real;

pub struct CpuEngine {
    config: ModelConfig,
    params: Params<f32>,
    optimizer: Option<AdamWState>,
    slicer: Option<Slicer>,
}

/// How a single-threaded caller (the web page) keeps its thread for
/// itself while the engine computes: forwards then run through
/// [`chunked::ChunkedForward`] a slice of rows at a time, each sized to
/// about `slice_ms` by `clock`, awaiting `pause` between slices (the page
/// draws a frame there). The same function as the whole forward, checked
/// in tests/app_inspect.rs. Gradients pause between the batch's sequences
/// and, inside one sequence's, after its forward, its LM head and each
/// layer (`transformer::backward_pausing`).
pub struct Slicer {
    /// Milliseconds from any fixed origin.
    pub clock: fn() -> f64,
    pub pause: transformer::Pause,
    pub slice_ms: f64,
}

impl CpuEngine {
    pub fn new(config: ModelConfig, params: Params<f32>) -> Result<Self> {
        if params.layout != ParamLayout::new(&config) {
            return Err(Error::Input("parameters do not match the config's layout".into()));
        }
        Ok(CpuEngine {
            config,
            params,
            optimizer: None,
            slicer: None,
        })
    }

    /// Runs forwards in slices from now on (`Slicer`).
    pub fn set_slicer(&mut self, slicer: Slicer) {
        self.slicer = Some(slicer);
    }

    /// The forward through `ChunkedForward` in slices of about
    /// `slicer.slice_ms`, pausing between them.
    async fn sliced_forward(
        &self,
        slicer: &Slicer,
        tokens: &[u32],
        head_scales: &HeadScales,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        use crate::model::engine::LogitsRequest;
        let t = tokens.len();
        let keep_from = match options.logits {
            LogitsRequest::None => t,
            LogitsRequest::All => 0,
            LogitsRequest::Last(n) => t - n.min(t),
        };
        let mut fwd = chunked::ChunkedForward::new(&self.config, &self.params, tokens, head_scales)?.outputs(
            keep_from,
            options.losses,
            options.loss_weights.as_deref(),
        );
        fwd.run_sliced(slicer.clock, slicer.slice_ms, |_| async {
            (slicer.pause)().await;
            true
        })
        .await?;
        let weight_sum = fwd.weight_sum();
        Ok(ForwardOutput {
            loss_sum: fwd.loss_sum,
            predictions: t - 1,
            weight_sum,
            losses: fwd.losses.take(),
            logits_rows: t - keep_from,
            logits: (keep_from < t).then(|| std::mem::take(&mut fwd.logits)),
            entropy_bits: options.entropy.then(|| std::mem::take(&mut fwd.entropy_bits)),
        })
    }

    pub fn params_ref(&self) -> &Params<f32> {
        &self.params
    }

    pub fn optimizer_state_ref(&self) -> Option<&AdamWState> {
        self.optimizer.as_ref()
    }

    fn replace_optimizer_state(&mut self, state: AdamWState) -> Result<()> {
        if state.m.len() != self.params.data.len() || state.v.len() != self.params.data.len() {
            return Err(Error::Input(format!(
                "optimizer state has {} entries, the model has {} parameters",
                state.m.len(),
                self.params.data.len()
            )));
        }
        self.optimizer = Some(state);
        Ok(())
    }

    /// Which parameters get weight decay: matrices yes, RMSNorm gains no.
    pub fn decay_mask(layout: &ParamLayout) -> Vec<bool> {
        let mut mask = vec![true; layout.total];
        for t in layout.tensors.iter().filter(|t| t.is_norm()) {
            mask[t.range()].fill(false);
        }
        mask
    }
}

/// Gradients of the mean next-token loss over `batch`, generic so the
/// finite-difference tests can run the same code in f64.
pub fn batch_gradients<T: Real>(
    config: &ModelConfig,
    params: &Params<T>,
    batch: &[Vec<u32>],
    head_scales: &[T],
    mode: GradMode,
) -> (f64, usize, Option<Vec<T>>, Vec<T>) {
    weighted_batch_gradients(config, params, batch, None, head_scales, ScaleRule::Constant, mode)
}

/// Gradients of the weighted mean next-token loss, sum w l / sum w, over
/// `batch` (weights per prediction, None: all 1), with query scales
/// following `rule`.
pub fn weighted_batch_gradients<T: Real>(
    config: &ModelConfig,
    params: &Params<T>,
    batch: &[Vec<u32>],
    loss_weights: Option<&[Vec<f32>]>,
    head_scales: &[T],
    rule: ScaleRule,
    mode: GradMode,
) -> (f64, usize, Option<Vec<T>>, Vec<T>) {
    let mut acc = BatchGradients::new(params.data.len(), batch, loss_weights, head_scales.len(), mode);
    for s in 0..batch.len() {
        acc.add(config, params, s, head_scales, rule);
    }
    acc.finish()
}

/// `weighted_batch_gradients` one sequence at a time, so that a caller
/// can pause between sequences (the web page's engine does).
pub struct BatchGradients<'b, T> {
    batch: &'b [Vec<u32>],
    loss_weights: Option<&'b [Vec<f32>]>,
    predictions: usize,
    total: f64,
    weight: T,
    grads: Option<Vec<T>>,
    dscales: Vec<T>,
    loss: f64,
}

impl<'b, T: Real> BatchGradients<'b, T> {
    pub fn new(
        n_params: usize,
        batch: &'b [Vec<u32>],
        loss_weights: Option<&'b [Vec<f32>]>,
        n_scales: usize,
        mode: GradMode,
    ) -> Self {
        let predictions: usize = batch.iter().map(|s| s.len().saturating_sub(1)).sum();
        let total = match loss_weights {
            Some(w) => w.iter().flatten().map(|&x| x as f64).sum::<f64>(),
            None => predictions as f64,
        };
        let total = if total > 0.0 { total } else { 1.0 };
        BatchGradients {
            batch,
            loss_weights,
            predictions,
            total,
            weight: T::one() / T::from_f64(total),
            grads: (mode == GradMode::Full).then(|| vec![T::zero(); n_params]),
            dscales: vec![T::zero(); n_scales],
            loss: 0.0,
        }
    }

    /// Adds sequence `s` of the batch.
    pub fn add(&mut self, config: &ModelConfig, params: &Params<T>, s: usize, head_scales: &[T], rule: ScaleRule) {
        transformer::run_unpaused(self.add_pausing(config, params, s, head_scales, rule, None));
    }

    /// [`Self::add`], awaiting `pause` (when given) between the backward's
    /// stages.
    pub async fn add_pausing(
        &mut self,
        config: &ModelConfig,
        params: &Params<T>,
        s: usize,
        head_scales: &[T],
        rule: ScaleRule,
        pause: Option<transformer::Pause>,
    ) {
        self.loss += transformer::backward_pausing(
            config,
            params,
            &self.batch[s],
            head_scales,
            rule,
            self.loss_weights.map(|w| &w[s][..]),
            self.weight,
            self.grads.as_deref_mut(),
            &mut self.dscales,
            pause,
        )
        .await;
    }

    /// (mean loss, predictions, weight gradients, head-scale gradients).
    pub fn finish(self) -> (f64, usize, Option<Vec<T>>, Vec<T>) {
        (self.loss / self.total, self.predictions, self.grads, self.dscales)
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> String {
        let threads = par::num_threads();
        let isa = kernels::Isa::best().label();
        format!("cpu ({threads} thread{}, {isa})", if threads == 1 { "" } else { "s" })
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
        if let Some(slicer) = &self.slicer {
            return self.sliced_forward(slicer, tokens, head_scales, options).await;
        }
        let (config, params) = (&self.config, &self.params);
        let rule = head_scales.rule;
        let (r, _) =
            par::in_pool(|| transformer::forward(config, params, tokens, &head_scales.values, rule, options, false));
        Ok(ForwardOutput {
            loss_sum: r.loss_sum,
            predictions: r.predictions,
            weight_sum: r.weight_sum,
            losses: r.losses,
            logits: r.logits,
            logits_rows: r.logits_rows,
            entropy_bits: r.entropy_bits,
        })
    }

    async fn weighted_gradients(
        &mut self,
        batch: &[Vec<u32>],
        loss_weights: Option<&[Vec<f32>]>,
        head_scales: &HeadScales,
        mode: GradMode,
    ) -> Result<Gradients> {
        check_batch(&self.config, batch, loss_weights, head_scales)?;
        let (config, params) = (&self.config, &self.params);
        let (values, rule) = (&head_scales.values, head_scales.rule);
        let (loss, predictions, weights, hs) = match &self.slicer {
            // One sequence at a time, pausing between them.
            Some(slicer) => {
                let mut acc = BatchGradients::new(params.data.len(), batch, loss_weights, values.len(), mode);
                for s in 0..batch.len() {
                    acc.add_pausing(config, params, s, values, rule, Some(slicer.pause))
                        .await;
                    if s + 1 < batch.len() {
                        (slicer.pause)().await;
                    }
                }
                acc.finish()
            }
            None => par::in_pool(|| weighted_batch_gradients(config, params, batch, loss_weights, values, rule, mode)),
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
        check_batch(&self.config, batch, None, head_scales)?;
        let (config, params) = (&self.config, &self.params);
        let rule = head_scales.rule;
        let (loss, _, grads, _) = par::in_pool(|| {
            weighted_batch_gradients(config, params, batch, None, &head_scales.values, rule, GradMode::Full)
        });
        let mut grads = grads.expect("full gradients");
        let grad_norm = match optimizer.clip_norm {
            Some(max) => clip_grad_norm(&mut grads, max),
            None => crate::model::optim::grad_norm(&grads),
        };
        // The loss first: a non-finite loss is named as such.
        check_finite_update(loss, grad_norm)?;
        let n = self.params.data.len();
        let mask = Self::decay_mask(&self.params.layout);
        let state = self.optimizer.get_or_insert_with(|| AdamWState::new(n));
        state.update(&mut self.params.data, &grads, optimizer, lr, Some(&mask));
        Ok(StepStats { loss, grad_norm })
    }

    async fn params(&mut self) -> Result<Params<f32>> {
        Ok(self.params.clone())
    }

    async fn optimizer_state(&mut self) -> Result<Option<AdamWState>> {
        Ok(self.optimizer.clone())
    }

    async fn set_optimizer_state(&mut self, state: AdamWState) -> Result<()> {
        self.replace_optimizer_state(state)
    }
}
