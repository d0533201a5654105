//! What the app computes, and the one thing that owns the engines: `Lab`
//! turns a job (a `JobKey`) into a result through `lab/` and the `Engine`
//! trait. Runs wherever the runner runs it (a thread natively, async tasks
//! on the web); knows nothing of egui.

pub mod passkey;

use std::path::Path;

use crate::gpu::{AdapterReport, GpuContext};
use crate::lab::backend::{choose_engine, AnyEngine, Backend};
use crate::lab::eval::{self, Progress};
use crate::lab::passkey::{passkey_lengths, Filler, FillerText, PasskeyBuilder};
use crate::model::cpu::transformer::Pause;
use crate::model::engine::{Engine, ForwardOptions};
use crate::model::error::{Error, Result};
use crate::model::files::{model_from_bytes, model_from_files};
use crate::model::head_scales::HeadScales;
use crate::model::params::Params;
use crate::model::rng::Rng;
use crate::model::tokenizer::Tokenizer;
use crate::model::ModelConfig;

use super::jobs::{
    AgainstLengthResult, AttnRowResult, EntropyProfile, InputAt, InputKey, JobKey, JobResult, KeySpan, LengthPoint,
    PooledResult, ScalesKey, TextKey,
};
use super::models;
use super::state::ModelChoice;

/// Windows of validation text averaged per length (fewer when long).
pub fn entropy_windows(length: usize) -> usize {
    if length >= 4096 {
        2
    } else {
        4
    }
}
/// Validation text tokenized, at most (enough for 4 windows of 16K).
const VALIDATION_CHARS: usize = 400_000;
/// The against-length sweep: windows and pass-key trials per length.
pub const SWEEP_WINDOWS: usize = 2;
pub const SWEEP_TRIALS: usize = 4;
const SWEEP_SEED: u64 = 20_240_101;
/// The pieces a bundled model's tokenizer reads the user's text in.
pub(super) const PASTED_PIECE_BYTES: usize = 20_000;

/// What a job reports while it runs; `progress` returning false cancels.
pub trait JobControl {
    fn progress(&mut self, fraction: f32, message: &str) -> bool;
    fn partial(&mut self, result: JobResult);
    /// What an earlier run of the same job had finished when it was
    /// stopped, to go on from (`JobKey::resumable`).
    fn resumed(&self) -> Option<&JobResult> {
        None
    }
}

/// eframe's own device, handed to the lab only as parts; the GPU engine
/// wraps it with `GpuContext::borrowed`, which leaves eframe's error
/// handling alone.
#[derive(Clone)]
pub struct GpuSource {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
}

impl GpuSource {
    pub fn report(&self) -> AdapterReport {
        AdapterReport::new(&self.adapter.get_info(), &self.device.limits())
    }

    /// The adapter's name for the status bar; browsers hide it from wgpu.
    pub fn label(&self) -> String {
        self.report().label_or(super::text::UNNAMED_ADAPTER)
    }
}

struct ModelSlot {
    config: ModelConfig,
    params: Params<f32>,
    /// `params.fingerprint()`, as a scales file searched on them records it.
    fingerprint: String,
    tokenizer: Tokenizer,
    engine: Option<AnyEngine>,
    validation: Option<Vec<u32>>,
    /// True for a bundled model (its tokenizer is known; `word_pieces`).
    bundled: bool,
    /// The user's text as tokens (for a bundled model, only as many as
    /// the app's longest length needs), kept while the text is the same:
    /// each view of it would tokenize it again.
    pasted: Option<(TextKey, Vec<u32>)>,
    /// The last pass-key lab filler made (of the user's text, all of it),
    /// kept likewise.
    pub(super) filler: Option<(super::jobs::FillerKey, FillerText)>,
}

impl ModelSlot {
    fn load(choice: ModelChoice) -> Result<Self> {
        crate::model::cpu::transformer::run_unpaused(Self::load_pausing(choice, None))
    }

    /// Reads a bundled model: its weights, then `pause` (on the web, a
    /// frame), then its tokenizer.
    async fn load_pausing(choice: ModelChoice, pause: Option<Pause>) -> Result<Self> {
        let b = models::bundled(choice).ok_or_else(|| Error::Input(super::text::NO_MODEL_OPENED.into()))?;
        let (config, params) = model_from_bytes(b.config, b.weights, Path::new(b.name))?;
        if let Some(pause) = pause {
            pause().await;
        }
        let tokenizer = Tokenizer::from_bytes(b.tokenizer, &Path::new(b.name).join("tokenizer.json"))?;
        Ok(ModelSlot {
            config,
            fingerprint: models::note_bundled_fingerprint(choice, &params),
            params,
            tokenizer,
            engine: None,
            validation: None,
            bundled: true,
            pasted: None,
            filler: None,
        })
    }

    /// The user's text as tokens, tokenized once per text. A bundled
    /// model's tokenizer reads it a piece at a time (the same tokens as
    /// whole, `word_pieces`) and stops past the app's longest length, so a
    /// pasted book costs no more than its first pages; another model's
    /// tokenizer (its normalizer may add a mark at the start of each call)
    /// reads it whole.
    fn pasted_tokens(&mut self, text: &TextKey) -> Result<&[u32]> {
        if self.pasted.as_ref().is_none_or(|(k, _)| k != text) {
            let ids = if self.bundled {
                self.tokenizer
                    .encode_up_to(text.as_str(), PASTED_PIECE_BYTES, super::state::MAX_LENGTH)?
            } else {
                self.tokenizer.encode(text.as_str())?
            };
            self.pasted = Some((text.clone(), ids));
        }
        Ok(self.pasted.as_ref().map_or(&[], |(_, ids)| ids.as_slice()))
    }

    fn validation_tokens(&mut self) -> Result<&[u32]> {
        if self.validation.is_none() {
            self.validation = Some(self.tokenizer.encode(validation_text())?);
        }
        Ok(self.validation.as_deref().unwrap_or_default())
    }

    /// Tokenizes the validation text ahead of the jobs that read it, a
    /// piece at a time (the same tokens as whole, `word_pieces`), so that
    /// on the web the page draws between pieces instead of waiting about
    /// 0.3 s.
    async fn tokenize_validation(&mut self) -> Result<()> {
        if self.validation.is_some() {
            return Ok(());
        }
        let mut ids = Vec::new();
        for piece in crate::model::tokenizer::word_pieces(validation_text(), 20_000) {
            // Before each piece, so that loading the model is not held
            // together with the first one.
            #[cfg(target_arch = "wasm32")]
            super::web::yield_to_browser(0).await;
            ids.extend(self.tokenizer.encode(piece)?);
        }
        self.validation = Some(ids);
        Ok(())
    }
}

/// The part of the validation text the views read.
fn validation_text() -> &'static str {
    let text = models::VALIDATION_TEXT;
    let mut end = VALIDATION_CHARS.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A model's parts that jobs outside this file need.
pub(super) struct LabParts<'a> {
    pub engine: &'a mut AnyEngine,
    pub tokenizer: &'a Tokenizer,
    pub config: &'a ModelConfig,
    /// The weights' `Params::fingerprint`.
    pub fingerprint: &'a str,
}

/// The token windows of one input at one length.
struct Resolved {
    windows: Vec<Vec<u32>>,
    key: Option<KeySpan>,
    retrieval_query: Option<usize>,
    note: Option<String>,
}

impl Resolved {
    /// One pass-key document: its key, and the query that predicts the
    /// key's first token.
    fn of_doc(doc: crate::lab::passkey::PasskeyDoc, key: KeySpan) -> Self {
        let t = doc.tokens.len();
        Resolved {
            retrieval_query: Some(t - doc.answer_len - 1),
            key: Some(key),
            windows: vec![doc.tokens],
            note: None,
        }
    }
}

/// Which engine computes and why it was chosen (the status bar shows the
/// name and the reason on hover); empty until one has started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineNote {
    pub name: String,
    pub why: String,
}

impl std::fmt::Display for EngineNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.why.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} ({})", self.name, self.why)
        }
    }
}

pub struct Lab {
    slots: Vec<(ModelChoice, ModelSlot)>,
    backend: Backend,
    gpu: Option<GpuSource>,
    engine_note: EngineNote,
    /// The head the attention viewer looked at last.
    head: Option<HeadQk>,
}

/// One head's queries and keys, (T, hd) each, and its lambda, for the
/// attention viewer (`inspect::head_rows`, `inspect::Pooler`): kept for the
/// last document, scales and head asked for, so that another query, or the
/// pooled map after the row, does not run the model up to the layer again
/// (at 16384 tokens most of a forward).
struct HeadQk {
    key: (InputAt, ScalesKey, usize, usize),
    q: Vec<f32>,
    k: Vec<f32>,
    hd: usize,
    lambda: f32,
}

impl Lab {
    pub fn new(backend: Backend, gpu: Option<GpuSource>) -> Self {
        Lab {
            slots: Vec::new(),
            backend,
            gpu,
            engine_note: EngineNote::default(),
            head: None,
        }
    }

    pub fn engine_note(&self) -> &EngineNote {
        &self.engine_note
    }

    /// The engine choice the lab runs under now.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens the user's model from its files (replacing one opened before).
    pub fn open_model(&mut self, source: ModelSource) -> Result<OpenedInfo> {
        let (name, files) = match source {
            ModelSource::Files { name, files, unread } => {
                // A model's own file that could not be read (too large for
                // the browser, say) is the error, not "missing".
                let model_file = |n: &str| n.ends_with(".json") || n.ends_with(".safetensors");
                if let Some((file, why)) = unread.iter().find(|(n, _)| model_file(n)) {
                    return Err(Error::Input(format!("the browser could not read {file}: {why}")));
                }
                (name, files)
            }
            #[cfg(not(target_arch = "wasm32"))]
            ModelSource::Folder(dir) => {
                self.check_memory(&dir)?;
                (dir.display().to_string(), crate::model::files::read_model_files(&dir)?)
            }
        };
        let (config, params, tokenizer) = model_from_files(&files, Path::new(&name))?;
        let info = models::ModelInfo::of_config(&config);
        let fingerprint = params.fingerprint();
        self.slots.retain(|(c, _)| *c != ModelChoice::Custom);
        self.head = None;
        self.slots.push((
            ModelChoice::Custom,
            ModelSlot {
                config,
                params,
                fingerprint: fingerprint.clone(),
                tokenizer,
                engine: None,
                validation: None,
                bundled: false,
                pasted: None,
                filler: None,
            },
        ));
        Ok(OpenedInfo {
            name,
            info,
            fingerprint,
        })
    }

    /// Refuses, before reading its weights, a model folder this machine
    /// cannot hold where the app would run it (`backend::check_memory` at
    /// `MEMORY_CHECK_LENGTH` tokens), plus the copy of the weights the app
    /// keeps beside its engine's.
    #[cfg(not(target_arch = "wasm32"))]
    fn check_memory(&self, dir: &Path) -> Result<()> {
        use crate::lab::backend::{check_memory, Target};
        use crate::model::{files, memory};
        let config = files::load_config(dir)?;
        let file_bytes = files::weights_file_bytes(dir)?;
        let adapter = self.gpu.as_ref().map(|g| (g.label(), g.report().is_cpu));
        let adapter = adapter.as_ref().map(|(name, is_cpu)| (name.as_str(), *is_cpu));
        let target = Target::of(self.backend, adapter, crate::gpu::shader::Elem::F32);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let check = check_memory(&config, file_bytes, &target, MEMORY_CHECK_LENGTH, threads, None)?;
        let needed = check.host_needed + memory::weights_bytes(&config);
        match memory::available_host() {
            Some(available) if needed > available => Err(Error::Memory(super::text::model_too_big(
                &memory::human(needed),
                &memory::human(available),
                MEMORY_CHECK_LENGTH,
            ))),
            _ => Ok(()),
        }
    }

    /// Switches engines: every engine is rebuilt on next use.
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
        for (_, s) in &mut self.slots {
            s.engine = None;
        }
        self.engine_note = EngineNote::default();
    }

    fn slot(&mut self, choice: ModelChoice) -> Result<&mut ModelSlot> {
        crate::model::cpu::transformer::run_unpaused(self.slot_pausing(choice, None))
    }

    /// [`Lab::slot`], awaiting `pause` (on the web, a frame) before reading
    /// a bundled model not read yet and between its parts, so that reading
    /// it is held neither with the work before nor in one piece.
    async fn slot_pausing(&mut self, choice: ModelChoice, pause: Option<Pause>) -> Result<&mut ModelSlot> {
        if !self.slots.iter().any(|(c, _)| *c == choice) {
            if let Some(pause) = pause {
                pause().await;
            }
            let slot = ModelSlot::load_pausing(choice, pause).await?;
            self.slots.push((choice, slot));
        }
        let i = self.slots.iter().position(|(c, _)| *c == choice).unwrap_or_default();
        Ok(&mut self.slots[i].1)
    }

    async fn ensure_engine(&mut self, choice: ModelChoice) -> Result<()> {
        let (backend, gpu) = (self.backend, self.gpu.clone());
        #[cfg(target_arch = "wasm32")]
        let pause: Option<Pause> = Some(super::web::pause);
        #[cfg(not(target_arch = "wasm32"))]
        let pause: Option<Pause> = None;
        let slot = self.slot_pausing(choice, pause).await?;
        if choice != ModelChoice::Custom {
            slot.tokenize_validation().await?;
        }
        if slot.engine.is_some() {
            return Ok(());
        }
        let (config, params) = (slot.config.clone(), slot.params.clone());
        // `auto` on a CPU adapter never wraps eframe's device: the CPU engine
        // is faster there, and eframe keeps its own error handling.
        let (backend, context, pre_reason) = match (&gpu, backend) {
            (None, _) => (backend, Err("no wgpu device in this window".to_string()), None),
            (Some(g), Backend::Auto) if g.report().is_cpu => (
                Backend::Cpu,
                Err("not asked for".to_string()),
                Some(format!(
                    "auto: {} is a CPU / fallback adapter, slower than the CPU engine; the CPU engine",
                    g.label()
                )),
            ),
            (Some(_), Backend::Cpu) => (backend, Err("not asked for".to_string()), None),
            (Some(g), _) => (
                backend,
                GpuContext::borrowed(&g.adapter, g.device.clone(), g.queue.clone()).map_err(|e| e.to_string()),
                g.report().is_cpu.then(|| super::text::gpu_on_cpu_adapter(&g.label())),
            ),
        };
        #[allow(unused_mut)]
        let mut chosen = choose_engine(backend, context, config, params).await?;
        // On the page's one thread the CPU engine's forwards run in slices,
        // the page drawing frames between them (every job, the sweeps and
        // the pass-key documents included).
        #[cfg(target_arch = "wasm32")]
        if let AnyEngine::Cpu(cpu) = &mut chosen.engine {
            cpu.set_slicer(crate::model::cpu::Slicer {
                clock: super::web::now_ms,
                pause: super::web::pause,
                slice_ms: SLICE_MS,
            });
        }
        #[allow(unused_mut)]
        let mut why = pre_reason.unwrap_or(chosen.reason);
        #[cfg(target_arch = "wasm32")]
        if matches!(chosen.engine, AnyEngine::Cpu(_)) {
            why = format!("{why}; {}", super::web::threads_note());
        }
        self.engine_note = EngineNote {
            name: chosen.engine.name(),
            why,
        };
        self.slot(choice)?.engine = Some(chosen.engine);
        Ok(())
    }

    /// The tokens behind an input at a length (the first window is the one
    /// the attention viewer shows).
    fn resolve(&mut self, at: &InputAt) -> Result<Resolved> {
        let slot = self.slot(at.model)?;
        let bos = slot.tokenizer.bos_id();
        match &at.input {
            InputKey::Validation => {
                let tokens = slot.validation_tokens()?;
                let windows = eval::windows(tokens, bos, at.length, entropy_windows(at.length))?;
                Ok(Resolved {
                    windows,
                    key: None,
                    retrieval_query: None,
                    note: None,
                })
            }
            InputKey::Passkey { key, depth_permille } => {
                let builder = PasskeyBuilder::new(&slot.tokenizer)?;
                let mut rng = Rng::new(u64::from(*key));
                let doc = builder.build(
                    at.length,
                    f64::from(*depth_permille) / 1000.0,
                    *key,
                    Filler::Repeated,
                    &mut rng,
                )?;
                let span = passkey::key_span(&slot.tokenizer, &doc)?;
                Ok(Resolved::of_doc(doc, span))
            }
            InputKey::Pasted(text) => {
                let mut tokens: Vec<u32> = bos.into_iter().collect();
                let text_tokens = slot.pasted_tokens(text)?;
                if text_tokens.is_empty() {
                    return Err(Error::Input(super::text::TEXT_EMPTY.into()));
                }
                tokens.extend_from_slice(text_tokens);
                if tokens.len() < 2 {
                    return Err(Error::Input(
                        "the text is too short: the model needs at least 2 tokens to read".into(),
                    ));
                }
                let note = (tokens.len() < at.length)
                    .then(|| super::text::text_too_short(tokens.len(), bos.is_some(), at.length));
                tokens.truncate(at.length);
                Ok(Resolved {
                    windows: vec![tokens],
                    key: None,
                    retrieval_query: None,
                    note,
                })
            }
            InputKey::PasskeyLab { .. } => passkey::resolve(slot, at),
        }
    }

    fn scales(&mut self, model: ModelChoice, key: &ScalesKey) -> Result<HeadScales> {
        let c = &self.slot(model)?.config;
        let hs = HeadScales {
            num_layers: c.num_layers,
            num_heads: c.num_heads,
            values: key.values(),
            rule: key.rule(),
        };
        hs.check_for(c, None)?;
        Ok(hs)
    }

    fn token_texts(&mut self, model: ModelChoice, tokens: &[u32]) -> Result<Vec<String>> {
        let tok = &self.slot(model)?.tokenizer;
        tokens.iter().map(|&t| tok.decode(&[t])).collect()
    }

    /// The viewed head's queries and keys (`HeadQk`), computed on the CPU
    /// from the model's weights whatever the engine (as `Engine::attention_rows`
    /// does), unless kept from the job before. On the web the model runs up
    /// to the layer in slices, the page drawing frames between them.
    async fn head_qk(
        &mut self,
        key: (InputAt, ScalesKey, usize, usize),
        tokens: &[u32],
        hs: &HeadScales,
        #[allow(unused_variables)] ctl: &mut dyn JobControl,
    ) -> Result<&HeadQk> {
        if self.head.as_ref().is_none_or(|h| h.key != key) {
            self.head = None;
            let (layer, head) = (key.2, key.3);
            let slot = self.slot(key.0.model)?;
            let hd = slot.config.head_dim;
            #[cfg(not(target_arch = "wasm32"))]
            let (q, k, lambda) =
                crate::model::cpu::inspect::head_qk(&slot.config, &slot.params, tokens, hs, layer, head)?;
            #[cfg(target_arch = "wasm32")]
            let (q, k, lambda) = sliced_head_qk(&slot.config, &slot.params, tokens, hs, layer, head, ctl).await?;
            self.head = Some(HeadQk { key, q, k, hd, lambda });
        }
        self.head
            .as_ref()
            .ok_or_else(|| Error::Engine("the head's queries were not kept".into()))
    }

    fn engine(&mut self, model: ModelChoice) -> Result<&mut AnyEngine> {
        self.slot(model)?
            .engine
            .as_mut()
            .ok_or_else(|| Error::Engine("the engine is not started".into()))
    }

    /// Runs one job to its result.
    pub async fn run(&mut self, key: &JobKey, ctl: &mut dyn JobControl) -> Result<JobResult> {
        ctl.progress(0.0, super::text::STARTING_ENGINE);
        match key {
            JobKey::Entropy { at, scales } => {
                self.ensure_engine(at.model).await?;
                let hs = self.scales(at.model, scales)?;
                let r = self.resolve(at)?;
                let tokens = self.token_texts(at.model, &r.windows[0])?;
                let engine = self.engine(at.model)?;
                let (layers, heads) = (engine.config().num_layers, engine.config().num_heads);
                let t = r.windows[0].len();
                let mut bits = vec![0f32; layers * heads * t];
                let mut loss = 0.0;
                let n = r.windows.len();
                for (k, w) in r.windows.iter().enumerate() {
                    if !ctl.progress(k as f32 / n as f32, &format!("window {}/{n}", k + 1)) {
                        return Err(Error::Input("cancelled".into()));
                    }
                    // On the web the CPU engine would hold the page's one
                    // thread for a whole forward: run it in slices instead.
                    #[cfg(target_arch = "wasm32")]
                    if let AnyEngine::Cpu(cpu) = &*engine {
                        let (e, l) = sliced_forward(cpu, w, &hs, ctl, k, n).await?;
                        loss += l / n as f64;
                        for (acc, x) in bits.iter_mut().zip(&e) {
                            *acc += x / n as f32;
                        }
                        continue;
                    }
                    let out = engine
                        .forward(
                            w,
                            &hs,
                            &ForwardOptions {
                                entropy: true,
                                ..Default::default()
                            },
                        )
                        .await?;
                    loss += out.mean_loss() / n as f64;
                    let e = out
                        .entropy_bits
                        .ok_or_else(|| Error::Engine("engine returned no entropy".into()))?;
                    for (acc, x) in bits.iter_mut().zip(&e) {
                        *acc += x / n as f32;
                    }
                }
                Ok(JobResult::Entropy(EntropyProfile {
                    length: t,
                    windows: n,
                    layers,
                    heads,
                    bits,
                    loss,
                    tokens,
                    key: r.key,
                    retrieval_query: r.retrieval_query,
                    note: r.note,
                }))
            }
            JobKey::AttnRow {
                at,
                scales,
                layer,
                head,
                query,
            } => {
                self.ensure_engine(at.model).await?;
                let hs = self.scales(at.model, scales)?;
                let r = self.resolve(at)?;
                let w = &r.windows[0];
                let q = query.or(r.retrieval_query).unwrap_or(w.len() - 1).min(w.len() - 1);
                let key = (at.clone(), scales.clone(), *layer, *head);
                let h = self.head_qk(key, w, &hs, ctl).await?;
                let row = crate::model::cpu::inspect::head_row(&h.q, &h.k, h.hd, q, h.lambda, w.len());
                Ok(JobResult::AttnRow(AttnRowResult {
                    query: q,
                    row,
                    key: r.key,
                }))
            }
            JobKey::Pooled {
                at,
                scales,
                layer,
                head,
            } => {
                self.ensure_engine(at.model).await?;
                let hs = self.scales(at.model, scales)?;
                let r = self.resolve(at)?;
                let w = &r.windows[0];
                let key = (at.clone(), scales.clone(), *layer, *head);
                let h = self.head_qk(key, w, &hs, ctl).await?;
                let mut pooler = crate::model::cpu::inspect::Pooler::new(w.len(), super::state::POOLED_CELLS);
                #[cfg(target_arch = "wasm32")]
                let mut t0 = super::web::now_ms();
                while !pooler.is_done() {
                    pooler.step(&h.q, &h.k, h.hd, h.lambda);
                    // On the web the page draws a frame between slices.
                    #[cfg(target_arch = "wasm32")]
                    if super::web::now_ms() - t0 > SLICE_MS {
                        if !ctl.progress(0.5 + 0.5 * pooler.fraction(), super::text::WORKING) {
                            return Err(Error::Input("cancelled".into()));
                        }
                        super::web::yield_to_browser(0).await;
                        t0 = super::web::now_ms();
                    }
                }
                let (map, n) = pooler.finish();
                Ok(JobResult::Pooled(PooledResult {
                    map,
                    n,
                    length: w.len(),
                }))
            }
            JobKey::AgainstLength { model, scales, text } => {
                self.against_length(*model, scales, text.as_ref(), ctl).await
            }
            JobKey::PasskeyAnswer { .. } | JobKey::PasskeyHeads { .. } | JobKey::PasskeyGrid(_) => {
                self.run_passkey(key, ctl).await
            }
            JobKey::Search(k) => super::search_job::run_search(self, k, ctl).await,
            JobKey::PasskeyCompare { model, scales, trials } => {
                super::search_job::run_passkey_compare(self, *model, scales, *trials, ctl).await
            }
        }
    }

    /// The engine (started), tokenizer and config of a model, for jobs
    /// written outside this file (`search_job`).
    pub(super) async fn parts(&mut self, model: ModelChoice) -> Result<LabParts<'_>> {
        self.ensure_engine(model).await?;
        let ModelSlot {
            config,
            tokenizer,
            engine,
            fingerprint,
            ..
        } = self.slot(model)?;
        let engine = engine
            .as_mut()
            .ok_or_else(|| Error::Engine("the engine is not started".into()))?;
        Ok(LabParts {
            engine,
            tokenizer,
            config,
            fingerprint,
        })
    }

    /// The head scales a key stands for, checked against the model.
    pub(super) fn head_scales(&mut self, model: ModelChoice, key: &ScalesKey) -> Result<HeadScales> {
        self.scales(model, key)
    }

    async fn against_length(
        &mut self,
        model: ModelChoice,
        scales: &ScalesKey,
        text: Option<&TextKey>,
        ctl: &mut dyn JobControl,
    ) -> Result<JobResult> {
        self.ensure_engine(model).await?;
        let hs = self.scales(model, scales)?;
        let all = sweep_lengths(self.slot(model)?.config.training_length);
        let mut lengths = all.clone();
        let slot = self.slot(model)?;
        let bos = slot.tokenizer.bos_id();
        // Over the user's text: the lengths it holds a window of (each
        // window is the beginning-of-text token, then the text's).
        let mut text_short = None;
        match text {
            Some(t) => {
                let n = slot.pasted_tokens(t)?.len();
                if n == 0 {
                    return Err(Error::Input(super::text::TEXT_EMPTY.into()));
                }
                lengths.retain(|&l| l - usize::from(bos.is_some()) <= n);
                if lengths.is_empty() {
                    let shortest = all.first().copied().unwrap_or(2);
                    return Err(Error::Input(super::text::against_text_too_short(n, shortest)));
                }
                text_short = (lengths.len() < all.len()).then_some(n);
            }
            None => {
                slot.validation_tokens()?;
            }
        }
        let ModelSlot {
            tokenizer,
            engine,
            validation,
            pasted,
            ..
        } = slot;
        let engine = engine
            .as_mut()
            .ok_or_else(|| Error::Engine("the engine is not started".into()))?;
        let tokens = match text {
            Some(_) => pasted.as_ref().map_or(&[][..], |(_, ids)| ids.as_slice()),
            None => validation.as_deref().unwrap_or_default(),
        };
        let builder = PasskeyBuilder::new(tokenizer)?;
        let total: usize = lengths.iter().map(|l| l * (SWEEP_WINDOWS + SWEEP_TRIALS)).sum();
        let mut done = 0usize;
        // Each length is computed on its own, so a stopped sweep's points
        // are those a whole run would have: it goes on from them.
        let mut points = match ctl.resumed() {
            Some(JobResult::AgainstLength(r)) if r.lengths == lengths => r.points.clone(),
            _ => Vec::new(),
        };
        for &length in &lengths {
            if points.iter().any(|p| p.length == length) {
                done += length * (SWEEP_WINDOWS + SWEEP_TRIALS);
                continue;
            }
            let mut p = Relay {
                ctl: &mut *ctl,
                base: done,
                span: length * SWEEP_WINDOWS,
                total,
            };
            let ev = eval::eval_lengths(engine, tokens, bos, &[length], SWEEP_WINDOWS, &hs, &mut p).await?;
            if ev.cancelled {
                return Err(Error::Input("cancelled".into()));
            }
            done += length * SWEEP_WINDOWS;
            let mut p = Relay {
                ctl: &mut *ctl,
                base: done,
                span: length * SWEEP_TRIALS,
                total,
            };
            let pk = passkey_lengths(
                engine,
                &builder,
                &[length],
                SWEEP_TRIALS,
                SWEEP_SEED,
                Filler::Repeated,
                &hs,
                &mut p,
            )
            .await;
            done += length * SWEEP_TRIALS;
            let accuracy = match pk {
                Ok(r) if r.cancelled => return Err(Error::Input("cancelled".into())),
                Ok(r) => r.results.first().map(|x| x.accuracy),
                // Too short for the pass-key format: no point there.
                Err(_) => None,
            };
            if let Some(e) = ev.results.first() {
                let at = points.partition_point(|p| p.length < length);
                points.insert(
                    at,
                    LengthPoint {
                        length,
                        entropy_bits: e.mean_entropy_bits,
                        head_entropy_bits: e.entropy_bits.clone(),
                        perplexity: e.perplexity,
                        passkey_accuracy: accuracy,
                    },
                );
            }
            ctl.partial(JobResult::AgainstLength(AgainstLengthResult {
                points: points.clone(),
                lengths: lengths.clone(),
                text_short,
            }));
        }
        Ok(JobResult::AgainstLength(AgainstLengthResult {
            points,
            lengths,
            text_short,
        }))
    }
}

/// Runs `fwd` to the end a slice of rows at a time, each sized to about
/// `SLICE_MS` by the page clock, yielding to the browser between slices so
/// frames keep coming; progress goes from `base` over `span`.
#[cfg(target_arch = "wasm32")]
async fn run_sliced(
    fwd: &mut crate::model::cpu::chunked::ChunkedForward<'_>,
    ctl: &mut dyn JobControl,
    message: &str,
    base: f32,
    span: f32,
) -> Result<()> {
    fwd.run_sliced(super::web::now_ms, SLICE_MS, |fraction| {
        let go_on = ctl.progress(base + span * fraction, message);
        async move {
            super::web::yield_to_browser(0).await;
            go_on
        }
    })
    .await
    .map_err(|_| Error::Input("cancelled".into()))
}

#[cfg(target_arch = "wasm32")]
const SLICE_MS: f64 = 25.0;

/// One window through [`ChunkedForward`] in slices: (entropy bits, mean loss).
#[cfg(target_arch = "wasm32")]
async fn sliced_forward(
    cpu: &crate::model::cpu::CpuEngine,
    tokens: &[u32],
    hs: &HeadScales,
    ctl: &mut dyn JobControl,
    window: usize,
    windows: usize,
) -> Result<(Vec<f32>, f64)> {
    use crate::model::cpu::chunked::ChunkedForward;
    let mut fwd = ChunkedForward::new(cpu.config(), cpu.params_ref(), tokens, hs)?;
    let message = format!("window {}/{windows}", window + 1);
    run_sliced(
        &mut fwd,
        ctl,
        &message,
        window as f32 / windows as f32,
        1.0 / windows as f32,
    )
    .await?;
    let predictions = (tokens.len() - 1).max(1) as f64;
    Ok((fwd.entropy_bits, fwd.loss_sum / predictions))
}

/// `inspect::head_qk` through the chunked forward in slices (the page draws
/// frames between them), as the web page runs the model.
#[cfg(target_arch = "wasm32")]
async fn sliced_head_qk(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    hs: &HeadScales,
    layer: usize,
    head: usize,
    ctl: &mut dyn JobControl,
) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    use crate::model::cpu::chunked::ChunkedForward;
    if layer >= cfg.num_layers || head >= cfg.num_heads {
        return Err(Error::Input(format!("no layer {layer}, head {head} in this model")));
    }
    let mut fwd = ChunkedForward::new(cfg, params, tokens, hs)?
        .capture(layer, head)
        .stop_at(layer);
    run_sliced(&mut fwd, ctl, super::text::WORKING, 0.0, 0.5).await?;
    let (q, k, lambda) = fwd
        .captured()
        .ok_or_else(|| Error::Engine("no captured queries".into()))?;
    Ok((q.to_vec(), k.to_vec(), lambda))
}

/// The length a model folder's memory is checked at before the app opens
/// it (the views' lengths vary; longer ones need more working memory).
#[cfg(not(target_arch = "wasm32"))]
const MEMORY_CHECK_LENGTH: usize = 2048;

/// An opened model, as the UI knows it: its name (the folder, or what
/// the browser called the files), shape and weights' `Params::fingerprint`
/// (scales files are compared with it).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedInfo {
    pub name: String,
    pub info: models::ModelInfo,
    pub fingerprint: String,
}

/// Where the user's model comes from.
pub enum ModelSource {
    /// Files' names and bytes (picked or dropped in a browser, or dropped
    /// natively).
    Files {
        name: String,
        files: Vec<(String, Vec<u8>)>,
        /// Files the browser could not read: (name, why).
        unread: Vec<(String, String)>,
    },
    /// A folder on this machine.
    #[cfg(not(target_arch = "wasm32"))]
    Folder(std::path::PathBuf),
}

/// Forward tokens per second of the CPU engine on the bundled NoPE model:
/// `length` tokens of the validation text, one warm-up and the median of
/// `repeats` timed forwards (logits of the last token only). `now_ms` is
/// the caller's clock (the page's, or `Instant` natively), so the same
/// code measures the engine in a browser and on the desktop.
pub async fn time_bundled_forward(length: usize, repeats: usize, now_ms: &dyn Fn() -> f64) -> Result<f64> {
    let mut slot = ModelSlot::load(ModelChoice::Nope)?;
    let tokens: Vec<u32> = slot.validation_tokens()?.iter().copied().take(length).collect();
    if tokens.len() < length {
        return Err(Error::Input(format!(
            "the validation text has only {} tokens",
            tokens.len()
        )));
    }
    let mut engine = crate::model::cpu::CpuEngine::new(slot.config.clone(), slot.params.clone())?;
    let hs = HeadScales::ones(&slot.config);
    let opts = ForwardOptions::default();
    engine.forward(&tokens, &hs, &opts).await?;
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let t0 = now_ms();
        engine.forward(&tokens, &hs, &opts).await?;
        times.push(now_ms() - t0);
    }
    times.sort_by(f64::total_cmp);
    Ok(length as f64 / (times[times.len() / 2] / 1000.0))
}

/// L/2, L, 2L, ..., 16L, those of at least 2 tokens and at most the app's
/// longest length (`MAX_LENGTH`: an opened model's L may be far larger).
pub fn sweep_lengths(training_length: usize) -> Vec<usize> {
    let half = training_length / 2;
    let mut lengths = crate::app::state::doublings(half, half.saturating_mul(32));
    lengths.retain(|&l| l >= 2);
    lengths
}

/// Hands `lab/`'s progress of one call on as a fraction of the whole
/// sweep: the call covers `span` of its `total` tokens, from `base`.
struct Relay<'a> {
    ctl: &'a mut dyn JobControl,
    base: usize,
    span: usize,
    total: usize,
}

impl Progress for Relay<'_> {
    fn update(&mut self, done: usize, total: usize, message: &str) -> bool {
        let part = if total == 0 { 0.0 } else { done as f64 / total as f64 };
        let here = self.base as f64 + part * self.span as f64;
        self.ctl.progress((here / self.total.max(1) as f64) as f32, message)
    }
}

/// The most bytes of weight files the web page opens: reading bf16 files
/// takes about five times their size at the peak (the files, their f32
/// weights and the engine's copy of them), and a page has at most 4 GiB of
/// wasm memory, some of it the app's own.
pub const WEB_MAX_WEIGHT_FILES: u64 = 700 * 1000 * 1000;

/// On the web, before any file is read: Some(reason) when the picked
/// files' weights are past `WEB_MAX_WEIGHT_FILES` (reading them would end
/// the page with an allocation failure, not an error).
pub fn web_weights_too_large(sizes: &[(String, u64)]) -> Option<String> {
    let weights: u64 = sizes
        .iter()
        .filter(|(n, _)| n.ends_with(".safetensors"))
        .map(|(_, b)| b)
        .sum();
    (weights > WEB_MAX_WEIGHT_FILES).then(|| {
        format!(
            "its weight files are {}, more than a web page can hold (about {} of weight files at most); open it in the desktop app or the command line",
            crate::model::memory::human(weights),
            crate::model::memory::human(WEB_MAX_WEIGHT_FILES)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_run_from_half_l_to_16_l_within_the_app() {
        assert_eq!(sweep_lengths(256), vec![128, 256, 512, 1024, 2048, 4096]);
        assert_eq!(sweep_lengths(2), vec![2, 4, 8, 16, 32]);
        assert_eq!(sweep_lengths(4096), vec![2048, 4096, 8192, 16384]);
        assert_eq!(sweep_lengths(1), Vec::<usize>::new());
        assert_eq!(sweep_lengths(1 << 24), Vec::<usize>::new());
        // The search's pass-key comparison: L, 2L, 4L, likewise.
        use crate::app::search_job::compare_lengths;
        assert_eq!(compare_lengths(256), vec![256, 512, 1024]);
        assert_eq!(compare_lengths(8192), vec![8192, 16384]);
    }

    #[test]
    fn the_web_page_refuses_weights_it_cannot_hold() {
        let small = [
            ("config.json".to_string(), 900),
            ("model.safetensors".to_string(), 6_000_000),
        ];
        assert_eq!(web_weights_too_large(&small), None);
        // The paper's 1.1B model in bf16, in two shards.
        let paper = [
            ("model-00001-of-00002.safetensors".to_string(), 1_100_000_000),
            ("model-00002-of-00002.safetensors".to_string(), 1_100_000_000),
            ("tokenizer.json".to_string(), 2_000_000),
        ];
        let why = web_weights_too_large(&paper).expect("refused");
        assert!(why.contains("2.05 GiB") && why.contains("desktop app"), "{why}");
    }

    /// A model's file the browser could not read is the error, named with
    /// why, rather than "no model.safetensors among the files given".
    #[test]
    fn a_file_the_browser_could_not_read_is_named() {
        let mut lab = Lab::new(Backend::Cpu, None);
        let e = lab
            .open_model(ModelSource::Files {
                name: "picked".into(),
                files: vec![("config.json".into(), b"{}".to_vec())],
                unread: vec![("model.safetensors".into(), "5000000000 bytes: NotReadableError".into())],
            })
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("could not read model.safetensors") && e.contains("NotReadableError"),
            "{e}"
        );
    }

    /// A bundled model reads a long text of the user's only as far as the
    /// app's longest length needs, and gives the whole text's first tokens;
    /// it keeps them while the text is the same.
    #[test]
    fn a_long_pasted_text_is_tokenized_once_and_only_as_far_as_needed() {
        let mut slot = ModelSlot::load(ModelChoice::Nope).unwrap();
        let mut text = String::new();
        let mut n = 0;
        while text.len() < 400_000 {
            text.push_str(&format!(
                "Line {n}: the pass key is hidden far below,  and we read on. "
            ));
            n += 1;
        }
        let whole = slot.tokenizer.encode(&text).unwrap();
        let key = TextKey::of(&text);
        let ids = slot.pasted_tokens(&key).unwrap().to_vec();
        assert!(ids.len() > crate::app::state::MAX_LENGTH, "{}", ids.len());
        assert!(ids.len() < whole.len() / 4, "{} of {}", ids.len(), whole.len());
        assert_eq!(ids[..], whole[..ids.len()]);
        // Kept: the same key is not tokenized again.
        let kept = slot.pasted.as_ref().map(|(_, v)| v.as_ptr());
        slot.pasted_tokens(&TextKey::of(&text.clone())).unwrap();
        assert_eq!(slot.pasted.as_ref().map(|(_, v)| v.as_ptr()), kept);
        // An opened model's tokenizer reads the whole text.
        slot.bundled = false;
        slot.pasted = None;
        assert_eq!(slot.pasted_tokens(&key).unwrap(), &whole[..]);
    }
}
