//! The temperature search (the paper's "Uniform scale" and "Head-based
//! scale"): with every weight frozen, find attention scales that
//! bring a NoPE model back past its training length.
//!
//! - [`uniform_search`]: one s for all heads, by a grid (1.0 to 2.0, step
//!   0.05) refined around the best point, on a fixed set of documents.
//! - [`head_search`]: one s per layer and query head, learned by AdamW on
//!   the objective's loss, clamped to s >= 1 after every step (a head may
//!   only sharpen: the paper's focus constraint).
//!
//! Objectives: `text` (mean next-token loss of text windows at the target
//! length, the paper's) and `passkey` (the loss of the key digits alone, of
//! pass-key documents at the target length, depths uniform). Documents come
//! from a seed of their own (`SEARCH_SEED` by default), disjoint from every
//! evaluation seed, and are a pure function of (seed, step).
//!
//! Written once against the [`Engine`] trait, async, yielding to the
//! executor between steps, with no clock (the caller times): the app runs
//! exactly this code, in a browser too. Nothing here writes files.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;

use super::passkey::{random_key, Filler, FillerText, PasskeyBuilder};
use crate::model::engine::{Engine, ForwardOptions, GradMode};
use crate::model::error::{Error, Result};
use crate::model::head_scales::{HeadScales, ScaleRule, MAX_HEAD_SCALE};
use crate::model::optim::{clip_grad_norm, AdamWConfig, AdamWState, Schedule};
use crate::model::rng::Rng;
use crate::model::tokenizer::Tokenizer;

/// The search's own documents' seed; evaluation uses other seeds
/// (`train::PASSKEY_EVAL_SEED` and the eval windows' fixed offsets).
pub const SEARCH_SEED: u64 = 0x5EA2_C4ED;

/// What the search minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Mean next-token loss over text windows of the target length.
    Text,
    /// Loss of the key digits alone, of pass-key documents of the target
    /// length.
    Passkey,
}

impl Objective {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "text" => Ok(Objective::Text),
            "passkey" => Ok(Objective::Passkey),
            other => Err(Error::Input(format!(
                "unknown objective `{other}`: expected passkey or text"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Objective::Text => "text",
            Objective::Passkey => "passkey",
        }
    }
}

/// The per-head recipe; defaults are the paper's except the init (1.0: on
/// the small bundled model 1.6 got stuck, see docs/RESULTS.md).
#[derive(Debug, Clone, Serialize)]
pub struct HeadSearchConfig {
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    pub lr: f32,
    /// Every scale starts here.
    pub init: f32,
    /// Share of the steps spent warming up (then cosine to `min_lr_ratio`).
    pub warmup_share: f64,
    pub min_lr_ratio: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub weight_decay: f32,
    pub clip_norm: f32,
    /// Scales are clamped to at least this (and at most `MAX_HEAD_SCALE`)
    /// after every step.
    pub min_scale: f32,
    /// The per-position rule the learned scales are used under.
    pub rule: ScaleRule,
    pub seed: u64,
}

impl Default for HeadSearchConfig {
    fn default() -> Self {
        HeadSearchConfig {
            steps: 200,
            batch: 8,
            lr: 0.1,
            init: 1.0,
            warmup_share: 0.1,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: 0.0,
            clip_norm: 1.0,
            min_scale: 1.0,
            rule: ScaleRule::Constant,
            seed: SEARCH_SEED,
        }
    }
}

impl HeadSearchConfig {
    /// Refuses settings the search cannot run with, naming the setting.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::Input(format!("{what}: {why}")));
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} is not a positive number", self.lr));
        }
        if !(self.init.is_finite() && self.init > 0.0 && self.init <= MAX_HEAD_SCALE) {
            return bad(
                "init",
                format!("{} is not a positive number up to {MAX_HEAD_SCALE}", self.init),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_share) {
            return bad("warm-up share", format!("{} is not in [0, 1)", self.warmup_share));
        }
        for (what, x) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&x) {
                return bad(what, format!("{x} is not in [0, 1)"));
            }
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return bad("clip", format!("{} is not a positive number", self.clip_norm));
        }
        if !(self.min_lr_ratio.is_finite() && self.min_lr_ratio >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                "schedule",
                "min lr ratio and weight decay must be finite, the ratio >= 0".into(),
            );
        }
        Ok(())
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            peak_lr: self.lr,
            warmup_steps: ((self.warmup_share * self.steps as f64).round() as usize).max(1),
            total_steps: self.steps,
            min_ratio: self.min_lr_ratio,
        }
    }
}

/// One step of a head search, as progress sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SearchStep {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    /// The objective on this step's batch, before the update.
    pub loss: f64,
    pub lr: f32,
    pub grad_norm: f64,
    pub min: f32,
    pub mean: f32,
    pub max: f32,
    /// The scales after this step's update (layers x heads).
    #[serde(skip)]
    pub scales: Vec<f32>,
}

/// Where a search reports; returning false cancels it. Times are the
/// caller's business (no clock in here: wasm32 has no `Instant`).
pub trait SearchProgress {
    fn step(&mut self, step: &SearchStep) -> bool;
    /// One point of a uniform search's curve: (scale, objective), `done`
    /// of `total` points.
    fn point(&mut self, _scale: f32, _loss: f64, _done: usize, _total: usize) -> bool {
        true
    }
    /// A head search's whole state after each step (before `step`), for a
    /// caller that may stop the search and continue it later.
    fn checkpoint(&mut self, _state: &HeadSearchState) {}
}

/// Progress nobody watches.
pub struct Quiet;
impl SearchProgress for Quiet {
    fn step(&mut self, _: &SearchStep) -> bool {
        true
    }
}

/// What a head search returns.
#[derive(Debug, Clone, Serialize)]
pub struct HeadSearchResult {
    #[serde(skip)]
    pub scales: HeadScales,
    /// The objective per step (on that step's batch).
    pub losses: Vec<f64>,
    /// Mean objective of the last 10% of the steps (at least one).
    pub final_loss: f64,
    /// Steps run (fewer than asked when cancelled).
    pub steps_run: usize,
    pub cancelled: bool,
}

/// A uniform search's curve and choice.
#[derive(Debug, Clone, Serialize)]
pub struct UniformSearchResult {
    /// (s, objective), sorted by s.
    pub curve: Vec<(f32, f64)>,
    pub best_scale: f32,
    pub best_loss: f64,
    pub cancelled: bool,
}

/// The documents a search draws: pass-key documents (with the weights that
/// score only the key) or text windows, at one length.
pub struct SearchData<'a> {
    pub objective: Objective,
    pub length: usize,
    builder: Option<PasskeyBuilder<'a>>,
    /// Pass-key filler: this text when given, else the repeated sentences.
    filler: Option<&'a FillerText>,
    /// The text objective's tokens.
    text: Option<&'a [u32]>,
    bos: Option<u32>,
}

/// A batch of documents and the weight of every prediction.
pub struct SearchBatch {
    pub docs: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
}

impl<'a> SearchData<'a> {
    /// Pass-key documents of `length` tokens; `filler` is their filler text
    /// (None: the paper's repeated sentences).
    pub fn passkey(length: usize, tok: &'a Tokenizer, filler: Option<&'a FillerText>) -> Result<Self> {
        check_length(length)?;
        let b = PasskeyBuilder::new(tok)?;
        // Fails with a named error when the tokenizer cannot encode a key.
        let min = b.min_len()?;
        if length < min {
            return Err(Error::Input(format!(
                "a pass-key document needs at least {min} tokens with this tokenizer; the target length is {length}"
            )));
        }
        Ok(SearchData {
            objective: Objective::Passkey,
            length,
            builder: Some(b),
            filler,
            text: None,
            bos: tok.bos_id(),
        })
    }

    /// Windows of `length` tokens of `text` (token ids), each starting with
    /// `bos` when there is one.
    pub fn text(length: usize, text: &'a [u32], bos: Option<u32>) -> Result<Self> {
        check_length(length)?;
        let need = length - bos.is_some() as usize;
        if text.len() < need {
            return Err(Error::Input(format!(
                "the text has {} tokens; windows of {length} need at least {need}",
                text.len()
            )));
        }
        Ok(SearchData {
            objective: Objective::Text,
            length,
            builder: None,
            filler: None,
            text: Some(text),
            bos,
        })
    }

    /// `n` documents from `seed`: a pure function of (seed, n).
    pub fn batch(&self, n: usize, seed: u64) -> Result<SearchBatch> {
        let mut rng = Rng::new(seed);
        let t = self.length;
        let mut docs = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        for _ in 0..n {
            match (&self.builder, self.text) {
                (Some(b), _) => {
                    let depth = rng.uniform();
                    let key = random_key(&mut rng);
                    let filler = self.filler.map_or(Filler::Repeated, Filler::Text);
                    let doc = b.build(t, depth, key, filler, &mut rng)?;
                    // Prediction i scores token i + 1: the key's tokens are
                    // the last answer_len, predicted from t - 1 - a .. t - 2.
                    let mut w = vec![0f32; t - 1];
                    w[t - 1 - doc.answer_len..].fill(1.0);
                    docs.push(doc.tokens);
                    weights.push(w);
                }
                (None, Some(text)) => {
                    let need = t - self.bos.is_some() as usize;
                    let start = rng.below(text.len() - need + 1);
                    docs.push(
                        self.bos
                            .into_iter()
                            .chain(text[start..start + need].iter().copied())
                            .collect(),
                    );
                    weights.push(vec![1.0; t - 1]);
                }
                (None, None) => unreachable!("made by passkey or text"),
            }
        }
        Ok(SearchBatch { docs, weights })
    }
}

fn check_length(length: usize) -> Result<()> {
    if length < 2 {
        return Err(Error::Input(format!(
            "the target length {length} is below 2: nothing to predict"
        )));
    }
    Ok(())
}

/// Yields once to the executor, so a browser gets its frame between steps.
struct YieldNow(bool);
impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

pub async fn yield_now() {
    YieldNow(false).await
}

/// The objective of `scales` on a batch: the weighted mean loss.
pub async fn objective<E: Engine>(engine: &mut E, batch: &SearchBatch, scales: &HeadScales) -> Result<f64> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for (doc, w) in batch.docs.iter().zip(&batch.weights) {
        let out = engine
            .forward(
                doc,
                scales,
                &ForwardOptions {
                    loss_weights: Some(w.clone()),
                    ..Default::default()
                },
            )
            .await?;
        sum += out.loss_sum;
        weight += out.weight_sum;
        yield_now().await;
    }
    Ok(sum / weight)
}

/// The grid of the uniform search: 1.0 to 2.0 by 0.05.
pub fn uniform_grid() -> Vec<f32> {
    (0..=20).map(|k| 1.0 + 0.05 * k as f32).collect()
}

/// One scale for every head: the grid, then steps of 0.01 within 0.05 of
/// the best grid point, each on the same `docs` documents. `rule` applies
/// to every candidate.
pub async fn uniform_search<E: Engine>(
    engine: &mut E,
    data: &SearchData<'_>,
    docs: usize,
    rule: ScaleRule,
    seed: u64,
    progress: &mut dyn SearchProgress,
) -> Result<UniformSearchResult> {
    uniform_search_from(engine, data, docs, rule, seed, &[], progress).await
}

/// [`uniform_search`] continued from the points of a stopped run (`done`:
/// (s, objective) as it reported them): those are kept, not measured again,
/// and the rest follow exactly as in an uninterrupted run (the documents
/// depend on the seed alone; the refinement centres on the best grid point).
pub async fn uniform_search_from<E: Engine>(
    engine: &mut E,
    data: &SearchData<'_>,
    docs: usize,
    rule: ScaleRule,
    seed: u64,
    done: &[(f32, f64)],
    progress: &mut dyn SearchProgress,
) -> Result<UniformSearchResult> {
    if docs == 0 {
        return Err(Error::Input("the uniform search needs at least 1 document".into()));
    }
    let batch = data.batch(docs, seed)?;
    let cfg = engine.config().clone();
    let grid = uniform_grid();
    let total = grid.len() + 8;
    let mut curve: Vec<(f32, f64)> = done.to_vec();
    let measured = |curve: &[(f32, f64)], s: f32| curve.iter().any(|&(x, _)| (x - s).abs() < 1e-4);
    let mut cancelled = false;
    let run = |curve: &mut Vec<(f32, f64)>, s: f32, loss: f64, progress: &mut dyn SearchProgress| {
        curve.push((s, loss));
        progress.point(s, loss, curve.len(), total)
    };
    for &s in &grid {
        if measured(&curve, s) {
            continue;
        }
        let hs = HeadScales::uniform(&cfg, s)?.with_rule(rule);
        let loss = objective(engine, &batch, &hs).await?;
        if !run(&mut curve, s, loss, progress) {
            cancelled = true;
            break;
        }
    }
    if !cancelled {
        // The best grid point (a resumed run may hold refinement points).
        let on_grid: Vec<(f32, f64)> = curve
            .iter()
            .copied()
            .filter(|&(x, _)| grid.iter().any(|&g| (g - x).abs() < 1e-4))
            .collect();
        let (best, _) = best_of(&on_grid);
        // Four points either side at 0.01 (those on the grid already done).
        for k in [-4i32, -3, -2, -1, 1, 2, 3, 4] {
            let s = best + 0.01 * k as f32;
            if s < 1.0 - 1e-6 || measured(&curve, s) {
                continue;
            }
            let hs = HeadScales::uniform(&cfg, s)?.with_rule(rule);
            let loss = objective(engine, &batch, &hs).await?;
            if !run(&mut curve, s, loss, progress) {
                cancelled = true;
                break;
            }
        }
    }
    if curve.is_empty() {
        return Ok(UniformSearchResult {
            curve,
            best_scale: 1.0,
            best_loss: f64::NAN,
            cancelled,
        });
    }
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (best_scale, best_loss) = best_of(&curve);
    Ok(UniformSearchResult {
        curve,
        best_scale,
        best_loss,
        cancelled,
    })
}

/// The point of lowest objective (the smallest s on ties).
fn best_of(curve: &[(f32, f64)]) -> (f32, f64) {
    curve.iter().copied().fold((1.0, f64::INFINITY), |b, p| {
        if p.1 < b.1 || (p.1 == b.1 && p.0 < b.0) {
            p
        } else {
            b
        }
    })
}

/// Where a head search stands after some steps: everything needed to
/// continue it exactly where it stopped (the scales, the optimizer's
/// moments, the step count and the losses so far). A caller that stops a
/// search (a pause) keeps this and hands it to [`head_search_from`] later;
/// the steps that follow are the ones an uninterrupted run would take,
/// since each step's batch is a function of (seed, step) alone.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSearchState {
    pub scales: HeadScales,
    pub optimizer: AdamWState,
    /// Steps done (the next step is `step + 1`, 1-based).
    pub step: usize,
    /// The objective of each step done.
    pub losses: Vec<f64>,
}

impl HeadSearchState {
    /// The state before the first step: every scale at the recipe's init.
    pub fn start(model: &crate::model::ModelConfig, config: &HeadSearchConfig) -> Result<Self> {
        config.check()?;
        let scales = HeadScales::uniform(model, config.init.max(config.min_scale))?.with_rule(config.rule);
        let n = scales.values.len();
        Ok(HeadSearchState {
            scales,
            optimizer: AdamWState::new(n),
            step: 0,
            losses: Vec::new(),
        })
    }

    /// True when every step of `config` is done.
    pub fn finished(&self, config: &HeadSearchConfig) -> bool {
        self.step >= config.steps
    }

    /// The result of the steps done so far.
    pub fn result(&self, cancelled: bool) -> HeadSearchResult {
        let losses = &self.losses;
        let tail = (losses.len() / 10).max(1).min(losses.len());
        let final_loss = if losses.is_empty() {
            f64::NAN
        } else {
            losses[losses.len() - tail..].iter().sum::<f64>() / tail as f64
        };
        HeadSearchResult {
            scales: self.scales.clone(),
            steps_run: losses.len(),
            losses: losses.clone(),
            final_loss,
            cancelled,
        }
    }
}

/// One scale per layer and query head, the model frozen: AdamW on the
/// objective, clip, clamp to `min_scale`. Cancelled (progress said stop)
/// it returns what it has with `cancelled` set; an engine error or a
/// non-finite loss is an error and nothing is returned.
pub async fn head_search<E: Engine>(
    engine: &mut E,
    data: &SearchData<'_>,
    config: &HeadSearchConfig,
    progress: &mut dyn SearchProgress,
) -> Result<HeadSearchResult> {
    let mut state = HeadSearchState::start(engine.config(), config)?;
    let cancelled = !head_search_from(engine, data, config, &mut state, progress).await?;
    state.scales.validate(None)?;
    Ok(state.result(cancelled))
}

/// Runs the steps of `config` that `state` has not done yet, updating it in
/// place; true when it ran to the end, false when progress said stop (the
/// state then holds every step completed, ready to continue). The state is
/// reported to `progress.checkpoint` after every step, before `step`.
pub async fn head_search_from<E: Engine>(
    engine: &mut E,
    data: &SearchData<'_>,
    config: &HeadSearchConfig,
    state: &mut HeadSearchState,
    progress: &mut dyn SearchProgress,
) -> Result<bool> {
    config.check()?;
    let n = state.scales.values.len();
    let cfg = engine.config();
    if n != cfg.num_layers * cfg.num_heads || state.optimizer.m.len() != n || state.losses.len() != state.step {
        return Err(Error::Input(format!(
            "a search state of {n} scales at step {} does not fit this model ({} layers x {} heads) or is inconsistent",
            state.step, cfg.num_layers, cfg.num_heads
        )));
    }
    state.scales.rule = config.rule;
    let adamw = AdamWConfig {
        beta1: config.beta1,
        beta2: config.beta2,
        eps: 1e-8,
        weight_decay: config.weight_decay,
        clip_norm: Some(config.clip_norm),
    };
    let schedule = config.schedule();
    for step in state.step..config.steps {
        let seed = config.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let batch = data.batch(config.batch, seed)?;
        let g = engine
            .weighted_gradients(
                &batch.docs,
                Some(&batch.weights),
                &state.scales,
                GradMode::HeadScalesOnly,
            )
            .await?;
        let mut grads = g.head_scales;
        let grad_norm = clip_grad_norm(&mut grads, config.clip_norm);
        if !g.loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::Engine(format!(
                "step {}: loss {} and gradient norm {grad_norm}: the search diverged; try a smaller lr",
                step + 1,
                g.loss
            )));
        }
        let lr = schedule.lr(step);
        state
            .optimizer
            .update(&mut state.scales.values, &grads, &adamw, lr, None);
        // Kept at most `MAX_HEAD_SCALE` too: a huge lr or init ran every
        // step and then failed to save its scales as out of range.
        for s in &mut state.scales.values {
            *s = s.max(config.min_scale).min(MAX_HEAD_SCALE);
        }
        state.losses.push(g.loss);
        state.step = step + 1;
        let (min, max) = state.scales.min_max();
        let values = &state.scales.values;
        let report = SearchStep {
            step: step + 1,
            steps: config.steps,
            loss: g.loss,
            lr,
            grad_norm,
            min,
            mean: values.iter().sum::<f32>() / n as f32,
            max,
            scales: values.clone(),
        };
        progress.checkpoint(state);
        if !progress.step(&report) {
            return Ok(false);
        }
        yield_now().await;
    }
    Ok(true)
}

/// Spearman's rank correlation of two equally long series (ties get the
/// mean rank).
pub fn rank_correlation(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_checks_name_the_setting() {
        let ok = HeadSearchConfig::default();
        ok.check().unwrap();
        for (c, word) in [
            (
                HeadSearchConfig {
                    lr: f32::NAN,
                    ..ok.clone()
                },
                "lr",
            ),
            (HeadSearchConfig { lr: -1.0, ..ok.clone() }, "lr"),
            (HeadSearchConfig { steps: 0, ..ok.clone() }, "steps"),
            (HeadSearchConfig { batch: 0, ..ok.clone() }, "batch"),
            (
                HeadSearchConfig {
                    init: 1001.0,
                    ..ok.clone()
                },
                "init",
            ),
        ] {
            assert!(c.check().unwrap_err().to_string().starts_with(word));
        }
        // Warm-up 10% then cosine to 10% of the peak.
        let s = ok.schedule();
        assert_eq!(s.warmup_steps, 20);
        assert!((s.lr(199) - 0.01).abs() < 1e-3);
    }

    #[test]
    fn rank_correlation_of_monotone_and_reversed_series() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((rank_correlation(&x, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((rank_correlation(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn uniform_grid_runs_from_one_to_two() {
        let g = uniform_grid();
        assert_eq!(g.len(), 21);
        assert_eq!(g[0], 1.0);
        assert!((g[20] - 2.0).abs() < 1e-6);
    }
}
