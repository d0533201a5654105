//! The tuning panel's compute side: the temperature search of
//! `lab::search` as app jobs, the pass-key comparison of two settings, the
//! search settings the state keeps, and the presets.
//!
//! A search runs as one job per segment: a pause ends the job and the view
//! keeps its last checkpoint (scales, AdamW moments, step; or the uniform
//! search's points), a resume starts the next segment from it, and the
//! steps that follow are exactly those of an uninterrupted run. Knows
//! nothing of egui and has no clock: the view times the run.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::compute::{JobControl, Lab};
use super::jobs::{JobResult, RuleKey, ScalesKey, TextKey};
use super::models::{self, ModelInfo};
use super::state::{clamp_noted, LoadedScales, ModelChoice, ScalesState, MAX_LENGTH, MIN_LENGTH};
use super::text;
use crate::lab::eval::Progress;
use crate::lab::passkey::{passkey_lengths, Filler, PasskeyBuilder};
use crate::lab::search::{self, HeadSearchConfig, HeadSearchState, Objective, SearchData, SearchProgress, SearchStep};
use crate::model::error::{Error, Result};
use crate::model::head_scales::{f32_json, HeadScales, ScaleRule};

/// The most tokens of the user's text a search reads: windows of the
/// longest length, several times over.
const PASTED_SEARCH_TOKENS: usize = 8 * MAX_LENGTH;

/// The classroom defaults: small enough to finish in minutes on a 2-core
/// CPU (the command line's are 200 steps of 8).
pub const DEFAULT_STEPS: usize = 40;
pub const DEFAULT_BATCH: usize = 4;
/// Pass-key trials per length when two settings are compared.
pub const COMPARE_TRIALS: usize = 8;
/// The comparison's documents: a seed of their own, apart from the
/// search's (`search::SEARCH_SEED`).
const COMPARE_SEED: u64 = 0xC04D_A2E5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchKind {
    /// One scale per layer and head (AdamW).
    #[default]
    Heads,
    /// One scale for every head (a grid, then refined).
    Uniform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TuneObjective {
    /// The loss of the key digits of pass-key documents.
    #[default]
    Passkey,
    /// The next-token loss of windows of the tuning text.
    Text,
    /// The next-token loss of windows of the user's text (the Explore
    /// page's "your text").
    Pasted,
}

impl TuneObjective {
    pub fn objective(self) -> Objective {
        match self {
            TuneObjective::Passkey => Objective::Passkey,
            TuneObjective::Text | TuneObjective::Pasted => Objective::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleChoice {
    #[default]
    Constant,
    LogN,
    Fitted,
}

impl RuleChoice {
    pub fn rule(self, a: f64, training_length: usize) -> ScaleRule {
        match self {
            RuleChoice::Constant => ScaleRule::Constant,
            RuleChoice::LogN => ScaleRule::LogN { training_length },
            RuleChoice::Fitted => ScaleRule::Fitted { a, training_length },
        }
    }
}

/// The reproduction's fitted a, read once (0 when it has none: the rule
/// is then constant until the user types an a).
pub fn default_fitted_a() -> f64 {
    static A: OnceLock<f64> = OnceLock::new();
    *A.get_or_init(|| models::fitted_a().unwrap_or(0.0))
}

/// The tuning panel's settings, kept in `ViewState` (so a link or the
/// walkthrough can set them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuneSettings {
    pub kind: SearchKind,
    pub objective: TuneObjective,
    /// The target length in tokens.
    pub length: usize,
    pub steps: usize,
    /// Documents per step (per head), or documents per point (uniform).
    pub batch: usize,
    pub lr: f32,
    pub init: f32,
    pub rule: RuleChoice,
    /// The fitted rule's a, for the search's rule and the preset.
    pub fitted_a: f64,
    /// The uniform preset's s.
    pub preset_uniform: f32,
}

impl Default for TuneSettings {
    fn default() -> Self {
        let recipe = HeadSearchConfig::default();
        TuneSettings {
            kind: SearchKind::Heads,
            objective: TuneObjective::Passkey,
            // 2L for the bundled models (L = 256).
            length: 512,
            steps: DEFAULT_STEPS,
            batch: DEFAULT_BATCH,
            lr: recipe.lr,
            init: recipe.init,
            rule: RuleChoice::Constant,
            fitted_a: default_fitted_a(),
            preset_uniform: 1.2,
        }
    }
}

impl TuneSettings {
    /// Brings every field into range, each change said in `notes`.
    pub fn sanitize(&mut self, notes: &mut Vec<String>) {
        let d = TuneSettings::default();
        clamp_noted(notes, "tune.length", &mut self.length, MIN_LENGTH, MAX_LENGTH);
        clamp_noted(notes, "tune.steps", &mut self.steps, 1, 10_000);
        clamp_noted(notes, "tune.batch", &mut self.batch, 1, 64);
        for (field, value, default) in [
            ("tune.lr", &mut self.lr, d.lr),
            ("tune.init", &mut self.init, d.init),
            ("tune.preset_uniform", &mut self.preset_uniform, d.preset_uniform),
        ] {
            if !(value.is_finite() && *value > 0.0) {
                notes.push(format!("{field} {value} is not a positive number: {default} used"));
                *value = default;
            }
        }
        if !self.fitted_a.is_finite() {
            notes.push(format!(
                "tune.fitted_a {} is not a number: {} used",
                self.fitted_a, d.fitted_a
            ));
            self.fitted_a = d.fitted_a;
        }
    }

    /// The search these settings ask for on `model`; `pasted` is the
    /// user's text, which the objective "your text" reads.
    pub fn spec(&self, model: ModelChoice, info: ModelInfo, pasted: &str) -> SearchSpec {
        SearchSpec {
            text: (self.objective == TuneObjective::Pasted).then(|| TextKey::of(pasted)),
            model,
            layers: info.layers,
            heads: info.heads,
            opened: info.opened,
            kind: self.kind,
            objective: self.objective,
            length: self.length,
            steps: self.steps,
            batch: self.batch,
            lr: self.lr.to_bits(),
            init: self.init.to_bits(),
            rule: RuleKey::of(self.rule.rule(self.fitted_a, info.training_length)),
        }
    }
}

/// A search's place in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Running,
    Paused,
    Finished,
    Failed(String),
}

/// What one search computes, as exact bits (a job key's part).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchSpec {
    pub model: ModelChoice,
    /// The searched model's shape: its result is (layers x heads) scales,
    /// which only a model of this shape takes; and which opened model it
    /// was (`ModelInfo::opened`).
    pub layers: usize,
    pub heads: usize,
    pub opened: u64,
    pub kind: SearchKind,
    pub objective: TuneObjective,
    /// The user's text, for the objective `Pasted`.
    pub text: Option<TextKey>,
    pub length: usize,
    pub steps: usize,
    pub batch: usize,
    lr: u32,
    init: u32,
    pub rule: RuleKey,
}

impl SearchSpec {
    pub fn lr(&self) -> f32 {
        f32::from_bits(self.lr)
    }

    pub fn init(&self) -> f32 {
        f32::from_bits(self.init)
    }

    pub fn rule(&self) -> ScaleRule {
        self.rule.rule()
    }

    /// The per-head recipe: the paper's, with this spec's settings.
    pub fn config(&self) -> HeadSearchConfig {
        HeadSearchConfig {
            steps: self.steps,
            batch: self.batch,
            lr: self.lr(),
            init: self.init(),
            rule: self.rule(),
            ..HeadSearchConfig::default()
        }
    }

    /// Steps (per head) or points (uniform: the grid and at most 8 more).
    pub fn planned(&self) -> usize {
        match self.kind {
            SearchKind::Heads => self.steps,
            SearchKind::Uniform => search::uniform_grid().len() + 8,
        }
    }

    /// Where scales came from, as the head-scales file records it.
    pub fn provenance(&self) -> serde_json::Value {
        serde_json::json!({
            "made_by": "nopescope app, tuning panel",
            "model": models::bundled(self.model).map_or(text::OPENED_MODEL, |b| b.name),
            "search": match self.kind { SearchKind::Heads => "heads", SearchKind::Uniform => "uniform" },
            "objective": match self.objective {
                TuneObjective::Pasted => "text (the user's own)",
                o => o.objective().name(),
            },
            "target_length": self.length,
            "steps": self.steps,
            "batch": self.batch,
            "lr": f32_json(&self.lr()),
            "init": f32_json(&self.init()),
            "rule": self.rule(),
            "seed": search::SEARCH_SEED,
        })
    }
}

/// Where a stopped search stands: enough to continue it exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Checkpoint {
    Heads(HeadSearchState),
    /// The uniform search's (s, objective) points so far.
    Uniform(Vec<(f32, f64)>),
}

impl Checkpoint {
    /// Steps or points done.
    pub fn done(&self) -> usize {
        match self {
            Checkpoint::Heads(s) => s.step,
            Checkpoint::Uniform(c) => c.len(),
        }
    }
}

/// A segment of a search run: its spec, the run (one per Start, so two
/// runs of the same spec are two jobs) and where it starts.
#[derive(Debug, Clone)]
pub struct SearchKey {
    pub spec: SearchSpec,
    pub run: u64,
    pub from: Option<Arc<Checkpoint>>,
}

impl SearchKey {
    fn start_step(&self) -> Option<usize> {
        self.from.as_deref().map(Checkpoint::done)
    }
}

// A run's segments differ by where they start: the step count is enough.
impl PartialEq for SearchKey {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.run == other.run && self.start_step() == other.start_step()
    }
}
impl Eq for SearchKey {}
impl Hash for SearchKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec.hash(state);
        self.run.hash(state);
        self.start_step().hash(state);
    }
}

/// A search's progress or result.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub spec: SearchSpec,
    pub checkpoint: Arc<Checkpoint>,
    /// The scales now (layers x heads): the head search's current ones, or
    /// the uniform search's best so far for every head.
    pub scales: Vec<f32>,
    pub done: usize,
    pub planned: usize,
    pub finished: bool,
    /// The searched weights' `Params::fingerprint`.
    pub fingerprint: String,
}

impl SearchReport {
    /// True when the model in view (`model`, of `info`'s shape) is the one
    /// searched, so the result can be applied to it, compared with it and
    /// drawn over its heads: the same choice, shape and opening (two opened
    /// folders of the same shape are told apart).
    pub fn fits(&self, model: ModelChoice, info: ModelInfo) -> bool {
        self.spec.model == model
            && (self.spec.layers, self.spec.heads, self.spec.opened) == (info.layers, info.heads, info.opened)
    }

    fn heads(spec: &SearchSpec, fingerprint: &str, state: &HeadSearchState, finished: bool) -> Self {
        SearchReport {
            fingerprint: fingerprint.into(),
            spec: spec.clone(),
            scales: state.scales.values.clone(),
            checkpoint: Arc::new(Checkpoint::Heads(state.clone())),
            done: state.step,
            planned: spec.steps,
            finished,
        }
    }

    fn uniform(spec: &SearchSpec, fingerprint: &str, curve: Vec<(f32, f64)>, n: usize, finished: bool) -> Self {
        let best = best_point(&curve).map_or(1.0, |p| p.0);
        let done = curve.len();
        SearchReport {
            fingerprint: fingerprint.into(),
            spec: spec.clone(),
            scales: vec![best; n],
            checkpoint: Arc::new(Checkpoint::Uniform(curve)),
            done,
            planned: if finished { done } else { spec.planned() },
            finished,
        }
    }

    /// The loss curve: (step, objective) per head, or (s, objective)
    /// sorted by s for the uniform search.
    pub fn curve(&self) -> Vec<[f64; 2]> {
        match self.checkpoint.as_ref() {
            Checkpoint::Heads(s) => s.losses.iter().enumerate().map(|(i, &l)| [(i + 1) as f64, l]).collect(),
            Checkpoint::Uniform(c) => {
                let mut c = c.clone();
                c.sort_by(|a, b| a.0.total_cmp(&b.0));
                c.into_iter().map(|(s, l)| [s as f64, l]).collect()
            }
        }
    }

    /// The objective at the last step, or the uniform search's best.
    pub fn latest_loss(&self) -> Option<f64> {
        match self.checkpoint.as_ref() {
            Checkpoint::Heads(s) => s.losses.last().copied(),
            Checkpoint::Uniform(c) => best_point(c).map(|p| p.1),
        }
    }

    /// Where the scales came from, as the head-scales file records it: a
    /// search paused before its end says how far it had run, as the
    /// command line's stopped search does.
    pub fn provenance(&self) -> serde_json::Value {
        let mut provenance = self.spec.provenance();
        provenance["model_fingerprint"] = self.fingerprint.as_str().into();
        if !self.finished {
            provenance["stopped_after"] = self.done.into();
        }
        provenance
    }

    /// The scales found, as a setting.
    pub fn setting(&self) -> ScalesSetting {
        ScalesSetting {
            name: text::search_result_name(self.spec.kind == SearchKind::Uniform, self.spec.length, self.done),
            values: self.scales.clone(),
            rule: self.spec.rule(),
            searched_on: models::bundled(self.spec.model).map(|b| b.name.to_string()),
            fingerprint: Some(self.fingerprint.clone()),
        }
    }
}

fn best_point(curve: &[(f32, f64)]) -> Option<(f32, f64)> {
    curve
        .iter()
        .copied()
        .filter(|p| p.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)))
}

/// Named head scales under a rule: a preset, a search's result, the
/// setting B the explorer compares with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalesSetting {
    pub name: String,
    /// (layers, heads), row-major.
    pub values: Vec<f32>,
    pub rule: ScaleRule,
    /// The model folder they were searched on, where known
    /// (`LoadedScales::searched_on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searched_on: Option<String>,
    /// Their weights' fingerprint, where known (`LoadedScales::fingerprint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl ScalesSetting {
    pub fn key(&self) -> ScalesKey {
        ScalesKey::with_rule(&self.values, self.rule)
    }

    /// Makes this the app's scales: equal scales as the uniform scale
    /// (a loaded file stays loaded, unused), others as the per-head file.
    pub fn apply_to(&self, s: &mut ScalesState, heads: usize) {
        let first = self.values.first().copied().unwrap_or(1.0);
        if self.values.iter().all(|&v| v == first) {
            s.uniform = first;
            s.rule = self.rule;
            s.use_file = false;
        } else {
            s.file = Some(LoadedScales {
                name: self.name.clone(),
                layers: self.values.len() / heads.max(1),
                heads,
                values: self.values.clone(),
                rule: self.rule,
                searched_on: self.searched_on.clone(),
                fingerprint: self.fingerprint.clone(),
                ..Default::default()
            });
            s.use_file = true;
        }
    }

    /// The head-scales file's text, with where the scales came from.
    pub fn to_json(&self, heads: usize, provenance: Option<serde_json::Value>) -> String {
        HeadScales {
            num_layers: self.values.len() / heads.max(1),
            num_heads: heads,
            values: self.values.clone(),
            rule: self.rule,
        }
        .to_json_with(Some(self.name.clone()), provenance)
    }
}

/// The presets beside the search: NoPE, a uniform s, the fitted rule, the
/// log-n rule and (for the NoPE model) the scales shipped with it.
pub fn presets(model: ModelChoice, info: ModelInfo, t: &TuneSettings) -> Vec<Result<ScalesSetting>> {
    let n = info.layers * info.heads;
    let l = info.training_length;
    let mut v = vec![
        Ok(ScalesSetting {
            name: text::unscaled(info.rope).into(),
            values: vec![1.0; n],
            rule: ScaleRule::Constant,
            ..Default::default()
        }),
        Ok(ScalesSetting {
            name: text::preset_uniform(t.preset_uniform),
            values: vec![t.preset_uniform; n],
            rule: ScaleRule::Constant,
            ..Default::default()
        }),
        Ok(ScalesSetting {
            name: text::preset_fitted(t.fitted_a),
            values: vec![1.0; n],
            rule: ScaleRule::Fitted {
                a: t.fitted_a,
                training_length: l,
            },
            ..Default::default()
        }),
        Ok(ScalesSetting {
            name: text::PRESET_LOG_N.into(),
            values: vec![1.0; n],
            rule: ScaleRule::LogN { training_length: l },
            ..Default::default()
        }),
    ];
    if model == ModelChoice::Nope {
        v.push(shipped(info));
        v.push(shipped_from(models::NOPE_HEAD_SCALES_8L, text::PRESET_SHIPPED_8L, info));
    }
    v
}

/// The per-head scales shipped with the NoPE model, searched at 4L.
pub fn shipped(info: ModelInfo) -> Result<ScalesSetting> {
    shipped_from(models::NOPE_HEAD_SCALES_4L, text::PRESET_SHIPPED, info)
}

/// Shipped scales (`json`) under `name`, if they fit the model in view.
fn shipped_from(json: &str, name: &str, info: ModelInfo) -> Result<ScalesSetting> {
    let (hs, searched) = HeadScales::from_json_searched(json, None)?;
    if (hs.num_layers, hs.num_heads) != (info.layers, info.heads) {
        return Err(Error::Input(text::scales_shape(
            hs.num_layers,
            hs.num_heads,
            info.layers,
            info.heads,
        )));
    }
    Ok(ScalesSetting {
        name: name.into(),
        values: hs.values,
        rule: hs.rule,
        searched_on: searched.model,
        fingerprint: searched.fingerprint,
    })
}

/// Hands a search's checkpoints and steps on as partial results.
struct Relay<'a> {
    ctl: &'a mut dyn JobControl,
    spec: &'a SearchSpec,
    fingerprint: &'a str,
    n: usize,
    state: Option<HeadSearchState>,
    curve: Vec<(f32, f64)>,
}

impl SearchProgress for Relay<'_> {
    fn checkpoint(&mut self, state: &HeadSearchState) {
        self.state = Some(state.clone());
    }

    fn step(&mut self, step: &SearchStep) -> bool {
        if let Some(s) = &self.state {
            self.ctl.partial(JobResult::Search(SearchReport::heads(
                self.spec,
                self.fingerprint,
                s,
                false,
            )));
        }
        self.ctl.progress(
            step.step as f32 / step.steps.max(1) as f32,
            &text::search_step(step.step, step.steps, step.loss),
        )
    }

    fn point(&mut self, scale: f32, loss: f64, done: usize, total: usize) -> bool {
        self.curve.push((scale, loss));
        self.ctl.partial(JobResult::Search(SearchReport::uniform(
            self.spec,
            self.fingerprint,
            self.curve.clone(),
            self.n,
            false,
        )));
        self.ctl.progress(
            done as f32 / total.max(1) as f32,
            &text::search_point(done, total, scale, loss),
        )
    }
}

fn cancelled() -> Error {
    Error::Input(text::CANCELLED.into())
}

/// Runs one segment of a search to its end (or until cancelled, an error:
/// the view keeps the last partial report, whose checkpoint resumes it).
pub(super) async fn run_search(lab: &mut Lab, key: &SearchKey, ctl: &mut dyn JobControl) -> Result<JobResult> {
    let spec = &key.spec;
    let tuning_tokens: Vec<u32>;
    let parts = lab.parts(spec.model).await?;
    let tok = parts.tokenizer;
    let n = parts.config.num_layers * parts.config.num_heads;
    let data = match spec.objective {
        TuneObjective::Passkey => SearchData::passkey(spec.length, tok, None)?,
        TuneObjective::Text => {
            tuning_tokens = tok.encode(models::TUNING_TEXT)?;
            SearchData::text(spec.length, &tuning_tokens, tok.bos_id())?
        }
        TuneObjective::Pasted => {
            // In pieces, and only as much as the search can use (a book
            // pasted whole would hold the page while it is read).
            let t = spec.text.as_ref().map_or("", TextKey::as_str);
            tuning_tokens = tok.encode_up_to(t, super::compute::PASTED_PIECE_BYTES, PASTED_SEARCH_TOKENS)?;
            SearchData::text(spec.length, &tuning_tokens, tok.bos_id())
                .map_err(|_| Error::Input(text::search_text_too_short(tuning_tokens.len(), spec.length)))?
        }
    };
    let from = key.from.as_deref();
    let mut relay = Relay {
        ctl,
        spec,
        fingerprint: parts.fingerprint,
        n,
        state: None,
        curve: Vec::new(),
    };
    let done = from.map_or(0, Checkpoint::done);
    relay.ctl.progress(
        done as f32 / spec.planned().max(1) as f32,
        &text::search_starting(done, spec.planned()),
    );
    match spec.kind {
        SearchKind::Heads => {
            let config = spec.config();
            let mut state = match from {
                Some(Checkpoint::Heads(s)) => s.clone(),
                None => HeadSearchState::start(parts.config, &config)?,
                Some(Checkpoint::Uniform(_)) => {
                    return Err(Error::Input(
                        "a uniform search's points cannot continue a per-head search".into(),
                    ))
                }
            };
            let ran_out = search::head_search_from(parts.engine, &data, &config, &mut state, &mut relay).await?;
            if !ran_out {
                return Err(cancelled());
            }
            Ok(JobResult::Search(SearchReport::heads(
                spec,
                parts.fingerprint,
                &state,
                true,
            )))
        }
        SearchKind::Uniform => {
            let points = match from {
                Some(Checkpoint::Uniform(c)) => c.clone(),
                None => Vec::new(),
                Some(Checkpoint::Heads(_)) => {
                    return Err(Error::Input(
                        "a per-head search's state cannot continue a uniform search".into(),
                    ))
                }
            };
            relay.curve = points.clone();
            let r = search::uniform_search_from(
                parts.engine,
                &data,
                spec.batch,
                spec.rule(),
                search::SEARCH_SEED,
                &points,
                &mut relay,
            )
            .await?;
            if r.cancelled {
                return Err(cancelled());
            }
            Ok(JobResult::Search(SearchReport::uniform(
                spec,
                parts.fingerprint,
                r.curve,
                n,
                true,
            )))
        }
    }
}

/// Pass-key accuracy of one setting at L, 2L and 4L.
#[derive(Debug, Clone)]
pub struct PasskeyCompareResult {
    pub lengths: Vec<usize>,
    /// One per length done so far.
    pub accuracy: Vec<f64>,
    pub trials: usize,
}

/// L, 2L and 4L.
pub fn compare_lengths(training_length: usize) -> Vec<usize> {
    // Not past the app's longest length (an opened model's L may be).
    crate::app::state::doublings(training_length, training_length.saturating_mul(4))
}

/// `lab/`'s progress of one length as a share of the whole comparison.
struct Share<'a> {
    ctl: &'a mut dyn JobControl,
    base: f32,
    span: f32,
}

impl Progress for Share<'_> {
    fn update(&mut self, done: usize, total: usize, message: &str) -> bool {
        let part = if total == 0 { 0.0 } else { done as f32 / total as f32 };
        self.ctl.progress(self.base + self.span * part, message)
    }
}

pub(super) async fn run_passkey_compare(
    lab: &mut Lab,
    model: ModelChoice,
    scales: &ScalesKey,
    trials: usize,
    ctl: &mut dyn JobControl,
) -> Result<JobResult> {
    let hs = lab.head_scales(model, scales)?;
    let parts = lab.parts(model).await?;
    let builder = PasskeyBuilder::new(parts.tokenizer)?;
    let lengths = compare_lengths(parts.config.training_length);
    let total: usize = lengths.iter().sum();
    let mut base = 0usize;
    let mut accuracy = Vec::new();
    for &length in &lengths {
        let mut share = Share {
            ctl: &mut *ctl,
            base: base as f32 / total as f32,
            span: length as f32 / total as f32,
        };
        let r = passkey_lengths(
            &mut *parts.engine,
            &builder,
            &[length],
            trials,
            COMPARE_SEED,
            Filler::Repeated,
            &hs,
            &mut share,
        )
        .await?;
        if r.cancelled {
            return Err(cancelled());
        }
        accuracy.push(r.results.first().map_or(f64::NAN, |x| x.accuracy));
        base += length;
        ctl.partial(JobResult::PasskeyCompare(PasskeyCompareResult {
            lengths: lengths.clone(),
            accuracy: accuracy.clone(),
            trials,
        }));
    }
    Ok(JobResult::PasskeyCompare(PasskeyCompareResult {
        lengths,
        accuracy,
        trials,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo::of(ModelChoice::Nope).unwrap()
    }

    #[test]
    fn presets_load_and_the_rule_and_defaults_follow_the_settings() {
        let t = TuneSettings::default();
        let list = presets(ModelChoice::Nope, info(), &t);
        assert_eq!(list.len(), 6);
        let list: Vec<ScalesSetting> = list.into_iter().map(|p| p.unwrap()).collect();
        assert!(list[0].values.iter().all(|&v| v == 1.0) && list[0].rule.is_constant());
        assert_eq!(list[1].values, vec![t.preset_uniform; 16]);
        assert!(matches!(list[2].rule, ScaleRule::Fitted { a, training_length: 256 } if a == t.fitted_a));
        assert_eq!(list[3].rule, ScaleRule::LogN { training_length: 256 });
        // The shipped scales differ from head to head, and the 8L ones
        // from the 4L ones.
        assert!(list[4].values.iter().any(|&v| v != list[4].values[0]));
        assert!(list[5].values != list[4].values && list[5].name == text::PRESET_SHIPPED_8L);
        // No shipped scales for the RoPE twin.
        assert_eq!(presets(ModelChoice::Rope, info(), &t).len(), 4);
        let spec = t.spec(ModelChoice::Nope, info(), "");
        let c = spec.config();
        assert_eq!((c.steps, c.batch, spec.length), (DEFAULT_STEPS, DEFAULT_BATCH, 512));
        c.check().unwrap();
        let fitted = TuneSettings {
            rule: RuleChoice::Fitted,
            fitted_a: 0.5,
            ..t
        };
        assert_eq!(
            fitted.spec(ModelChoice::Nope, info(), "").rule(),
            ScaleRule::Fitted {
                a: 0.5,
                training_length: 256
            }
        );
    }

    #[test]
    fn a_run_s_segments_are_keyed_by_where_they_start() {
        use crate::model::optim::AdamWState;
        let spec = TuneSettings::default().spec(ModelChoice::Nope, info(), "");
        let at = |step: usize| {
            Some(Arc::new(Checkpoint::Heads(HeadSearchState {
                scales: HeadScales {
                    num_layers: 4,
                    num_heads: 4,
                    values: vec![1.0 + step as f32; 16],
                    rule: ScaleRule::Constant,
                },
                optimizer: AdamWState::new(16),
                step,
                losses: vec![1.0; step],
            })))
        };
        let key = |run: u64, from| SearchKey {
            spec: spec.clone(),
            run,
            from,
        };
        assert_eq!(key(1, None), key(1, None));
        assert_ne!(key(1, None), key(2, None), "two runs are two jobs");
        assert_ne!(key(1, None), key(1, at(2)), "a resumed segment is a new job");
        assert_eq!(key(1, at(2)), key(1, at(2)));
        assert_ne!(key(1, at(2)), key(1, at(3)));
    }
}
