//! Job requests, the runner that owns the engines, and the results cache.
//!
//! Views ask `Jobs` for a result by its key; a key not in the cache becomes
//! a request to the runner. The runner (a thread natively; async tasks on
//! the web) runs requests one at a time through `compute::Lab`, reporting
//! progress and partial results; results land in the cache and a repaint is
//! requested. A job no view asked for during a frame is cancelled: when
//! the state moves on, stale work stops. A sweep stopped part way (by the
//! user, or because no view asked for it) keeps what it had finished: asked
//! for again, it goes on from there instead of from the start. The runner
//! is the only part that knows native from web.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use eframe::egui;

use super::compute::passkey::{GridKey, PasskeyAnswerResult, PasskeyGridResult, PasskeyHeadsResult};
use super::compute::{EngineNote, GpuSource, JobControl, Lab, ModelSource};
use super::search_job::{PasskeyCompareResult, SearchKey, SearchReport};
use super::state::ModelChoice;
use crate::lab::backend::Backend;
use crate::model::head_scales::ScaleRule;

/// The input the views look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InputKey {
    Validation,
    Passkey {
        key: u32,
        depth_permille: u32,
    },
    Pasted(TextKey),
    /// A pass-key lab document: the key at a depth in a chosen filler.
    PasskeyLab {
        key: u32,
        depth_permille: u32,
        filler: FillerKey,
    },
}

/// A pass-key lab document's filler, with the user's text when it is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FillerKey {
    Repeated,
    Validation,
    Pasted(TextKey),
}

/// The user's text in a key: shared instead of copied, and hashed once,
/// so that a long text (a pasted chapter) costs nothing per frame where
/// the views make their keys and look them up.
#[derive(Clone)]
pub struct TextKey {
    hash: u64,
    text: Arc<str>,
    /// Its characters, counted once (the input panel says them each frame).
    chars: usize,
}

impl TextKey {
    /// The key of `text`. The last key made is kept: while the text is
    /// unchanged, its key is that one again (compared, not copied or
    /// hashed).
    pub fn of(text: &str) -> Self {
        thread_local! {
            static LAST: std::cell::RefCell<Option<TextKey>> = const { std::cell::RefCell::new(None) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if let Some(k) = last.as_ref().filter(|k| same_text(&k.text, text)) {
                return k.clone();
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(text, &mut h);
            let key = TextKey {
                hash: std::hash::Hasher::finish(&h),
                text: text.into(),
                chars: text.chars().count(),
            };
            *last = Some(key.clone());
            key
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn chars(&self) -> usize {
        self.chars
    }
}

/// Whether two texts are the same. In wasm `==` on bytes is the builtin
/// memcmp, one byte at a time: about 1 ms a megabyte in the page, and the
/// views compare the user's text with its key several times a frame. There
/// it compares 16 bytes at a time.
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    if cfg!(target_arch = "wasm32") {
        same_bytes_wide(a.as_bytes(), b.as_bytes())
    } else {
        a == b
    }
}

/// `a == b`, 16 bytes at a time.
fn same_bytes_wide(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wide_a, rest_a) = a.as_chunks::<16>();
    let (wide_b, rest_b) = b.as_chunks::<16>();
    rest_a == rest_b
        && wide_a
            .iter()
            .zip(wide_b)
            .all(|(x, y)| u128::from_ne_bytes(*x) == u128::from_ne_bytes(*y))
}

impl PartialEq for TextKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || same_text(&self.text, &other.text))
    }
}

impl Eq for TextKey {}

impl std::hash::Hash for TextKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl std::fmt::Debug for TextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String = self.text.chars().take(40).collect();
        write!(f, "TextKey({} bytes: {head:?})", self.text.len())
    }
}

/// Head scales as exact bits, and the rule they are used under, so equal
/// settings are one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScalesKey(Vec<u32>, RuleKey);

impl ScalesKey {
    /// Constant scales (no rule).
    pub fn of(values: &[f32]) -> Self {
        Self::with_rule(values, ScaleRule::Constant)
    }
    pub fn with_rule(values: &[f32], rule: ScaleRule) -> Self {
        ScalesKey(values.iter().map(|v| v.to_bits()).collect(), RuleKey::of(rule))
    }
    pub fn ones(n: usize) -> Self {
        Self::of(&vec![1.0; n])
    }
    pub fn values(&self) -> Vec<f32> {
        self.0.iter().map(|&b| f32::from_bits(b)).collect()
    }
    pub fn rule(&self) -> ScaleRule {
        self.1.rule()
    }
}

/// A `ScaleRule` as exact bits (its `a` is a float), for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKey {
    Constant,
    LogN(usize),
    Fitted(u64, usize),
}

impl RuleKey {
    pub fn of(rule: ScaleRule) -> Self {
        match rule {
            ScaleRule::Constant => RuleKey::Constant,
            ScaleRule::LogN { training_length } => RuleKey::LogN(training_length),
            ScaleRule::Fitted { a, training_length } => RuleKey::Fitted(a.to_bits(), training_length),
        }
    }
    pub fn rule(self) -> ScaleRule {
        match self {
            RuleKey::Constant => ScaleRule::Constant,
            RuleKey::LogN(training_length) => ScaleRule::LogN { training_length },
            RuleKey::Fitted(a, training_length) => ScaleRule::Fitted {
                a: f64::from_bits(a),
                training_length,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputAt {
    pub model: ModelChoice,
    pub input: InputKey,
    pub length: usize,
}

/// What a job computes: the cache's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKey {
    /// Attention entropy per layer, head and position, mean over windows.
    Entropy { at: InputAt, scales: ScalesKey },
    /// One query's attention row for one head (`None`: the default query).
    AttnRow {
        at: InputAt,
        scales: ScalesKey,
        layer: usize,
        head: usize,
        query: Option<usize>,
    },
    /// One head's whole pattern, pooled.
    Pooled {
        at: InputAt,
        scales: ScalesKey,
        layer: usize,
        head: usize,
    },
    /// Entropy, perplexity and pass-key accuracy from L/2 to 16L, over
    /// the validation text, or over the user's text (`text`) where it is
    /// the input in view.
    AgainstLength {
        model: ModelChoice,
        scales: ScalesKey,
        text: Option<TextKey>,
    },
    /// A pass-key document's answer, decoded greedily (`at.input` is
    /// `InputKey::PasskeyLab`).
    PasskeyAnswer { at: InputAt, scales: ScalesKey },
    /// Every head's attention mass on the key sentence, from the query
    /// that retrieves the key.
    PasskeyHeads { at: InputAt, scales: ScalesKey },
    /// Pass-key accuracy over lengths x depths.
    PasskeyGrid(GridKey),
    /// One segment of a temperature search (`search_job`): from the start,
    /// or continued from where a pause stopped it.
    Search(SearchKey),
    /// Pass-key accuracy at L, 2L and 4L, a few trials each.
    PasskeyCompare {
        model: ModelChoice,
        scales: ScalesKey,
        trials: usize,
    },
}

impl JobKey {
    /// The model a job runs on.
    pub fn model(&self) -> ModelChoice {
        match self {
            JobKey::Entropy { at, .. }
            | JobKey::AttnRow { at, .. }
            | JobKey::Pooled { at, .. }
            | JobKey::PasskeyAnswer { at, .. }
            | JobKey::PasskeyHeads { at, .. } => at.model,
            JobKey::AgainstLength { model, .. } => *model,
            JobKey::PasskeyGrid(g) => g.model,
            JobKey::Search(k) => k.spec.model,
            JobKey::PasskeyCompare { model, .. } => *model,
        }
    }

    /// Whether a stopped run's partial result lets a new run of the same
    /// key go on from it (the sweeps, whose points and cells are each
    /// computed on their own, seeded by their place: the same numbers as
    /// one run from the start). A search goes on from its own checkpoint.
    pub fn resumable(&self) -> bool {
        matches!(self, JobKey::AgainstLength { .. } | JobKey::PasskeyGrid(_))
    }
}

#[derive(Debug, Clone)]
pub struct EntropyProfile {
    pub length: usize,
    pub windows: usize,
    pub layers: usize,
    pub heads: usize,
    /// (layers, heads, length) bits, mean over windows.
    pub bits: Vec<f32>,
    /// Mean next-token loss (nats).
    pub loss: f64,
    /// The first window's tokens as text.
    pub tokens: Vec<String>,
    /// Where the key stands, in a pass-key document.
    pub key: Option<KeySpan>,
    pub retrieval_query: Option<usize>,
    pub note: Option<String>,
}

impl EntropyProfile {
    pub fn head(&self, layer: usize, head: usize) -> &[f32] {
        let t = self.length;
        let i = layer * self.heads + head;
        &self.bits[i * t..(i + 1) * t]
    }

    /// Per position, the mean over every layer and head.
    pub fn mean_over_heads(&self) -> Vec<f32> {
        let t = self.length;
        let n = (self.layers * self.heads) as f32;
        let mut out = vec![0f32; t];
        for lh in self.bits.chunks_exact(t) {
            for (o, x) in out.iter_mut().zip(lh) {
                *o += x / n;
            }
        }
        out
    }

    /// Per layer and head, how much the mean entropy rose from `base` (the
    /// same input at another length, usually L) to this profile.
    pub fn rise_from(&self, base: &EntropyProfile) -> Vec<f32> {
        self.head_means()
            .iter()
            .zip(base.head_means())
            .map(|(a, b)| a - b)
            .collect()
    }

    /// The head that loses most of its focus past the training length
    /// `l`: its mean gap under the ceiling log2(i + 1) over the last L/2
    /// positions before L, less the same gap over the last L/2 positions of
    /// the input (layer, head, bits closed). Needs positions past L; heads
    /// whose curve is not finite are left out. The ceiling's own rise
    /// between the two windows is the same for every head, so this ranks
    /// heads by how much more their entropy rises there than the ceiling
    /// does: a head near uniform closes no gap and a local head opens one.
    /// The map's rise mode compares means over every position instead,
    /// where the heads that follow the ceiling's steep first rise gain
    /// most, and at 2L it ranked a head near uniform first.
    pub fn most_flattened(&self, l: usize) -> Option<(usize, usize, f32)> {
        let t = self.length;
        if l < 2 || t <= l {
            return None;
        }
        let (before, after) = (l / 2..l, (t - l / 2).max(l)..t);
        let mean = |xs: &[f32], r: &std::ops::Range<usize>| xs[r.clone()].iter().sum::<f32>() / r.len() as f32;
        let ceiling: Vec<f32> = (0..t).map(|i| ((i + 1) as f32).log2()).collect();
        let ceiling_rise = mean(&ceiling, &after) - mean(&ceiling, &before);
        (0..self.layers * self.heads)
            .filter_map(|i| {
                let curve = &self.bits[i * t..(i + 1) * t];
                let closed = mean(curve, &after) - mean(curve, &before) - ceiling_rise;
                closed.is_finite().then_some((i / self.heads, i % self.heads, closed))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2))
    }

    /// Per layer and head, the mean over positions.
    pub fn head_means(&self) -> Vec<f32> {
        self.bits
            .chunks_exact(self.length)
            .map(|r| r.iter().sum::<f32>() / r.len() as f32)
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct AttnRowResult {
    pub query: usize,
    /// Attention over keys 0..T (zero past the query).
    pub row: Vec<f32>,
    /// Where the key stands, in a pass-key document.
    pub key: Option<KeySpan>,
}

/// Where a pass-key document's key stands: its sentence, and in it the
/// key's own tokens (those that hold a digit; the sentence names the key
/// twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpan {
    pub sentence: std::ops::Range<usize>,
    pub digits: Vec<usize>,
}

impl KeySpan {
    /// A row's attention on the key's digits and on its whole sentence.
    pub fn shares(&self, row: &[f32]) -> (f32, f32) {
        let end = self.sentence.end.min(row.len());
        let sentence = row.get(self.sentence.start..end).map_or(0.0, |s| s.iter().sum());
        let digits = self.digits.iter().filter_map(|&p| row.get(p)).sum();
        (digits, sentence)
    }
}

#[derive(Debug, Clone)]
pub struct PooledResult {
    /// (n, n): rows are query bins, columns key bins.
    pub map: Vec<f32>,
    pub n: usize,
    pub length: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LengthPoint {
    pub length: usize,
    /// The mean over every layer, head and position.
    pub entropy_bits: f64,
    /// Each head's mean over positions, per layer, per head (the plot's
    /// line of the selected head).
    pub head_entropy_bits: Vec<Vec<f64>>,
    pub perplexity: f64,
    pub passkey_accuracy: Option<f64>,
}

impl LengthPoint {
    /// The mean entropy of one head, if the model has it.
    pub fn head(&self, layer: usize, head: usize) -> Option<f64> {
        self.head_entropy_bits.get(layer)?.get(head).copied()
    }
}

#[derive(Debug, Clone)]
pub struct AgainstLengthResult {
    pub points: Vec<LengthPoint>,
    /// Every length of the sweep (the points fill in as they finish).
    pub lengths: Vec<usize>,
    /// Over the user's text: its tokens, when too few for the sweep's
    /// longest lengths (those are left out of `lengths`).
    pub text_short: Option<usize>,
}

/// A sweep's entries, one per key (`None`: neither asked for nor kept),
/// and whether any runs or was stopped (`Jobs::sweep`).
pub struct Sweep {
    pub entries: Vec<Option<Entry>>,
    pub running: bool,
    pub stopped: bool,
}

#[derive(Debug, Clone)]
pub enum JobResult {
    Entropy(EntropyProfile),
    AttnRow(AttnRowResult),
    Pooled(PooledResult),
    AgainstLength(AgainstLengthResult),
    PasskeyAnswer(PasskeyAnswerResult),
    PasskeyHeads(PasskeyHeadsResult),
    PasskeyGrid(PasskeyGridResult),
    Search(SearchReport),
    PasskeyCompare(PasskeyCompareResult),
}

/// A job as the views see it.
#[derive(Debug, Clone)]
pub enum Entry {
    Running {
        fraction: f32,
        message: String,
        partial: Option<Arc<JobResult>>,
    },
    Done(Arc<JobResult>),
    Failed(String),
    /// Stopped by the user before it finished, with what it had computed
    /// by then (a sweep's finished points), if anything.
    Stopped(Option<Arc<JobResult>>),
}

impl Entry {
    pub fn result(&self) -> Option<&JobResult> {
        match self {
            Entry::Done(r) | Entry::Running { partial: Some(r), .. } | Entry::Stopped(Some(r)) => Some(r),
            _ => None,
        }
    }

    /// The result (final or partial) as a shared handle.
    pub fn shared(&self) -> Option<Arc<JobResult>> {
        match self {
            Entry::Done(r) | Entry::Running { partial: Some(r), .. } | Entry::Stopped(Some(r)) => Some(Arc::clone(r)),
            _ => None,
        }
    }

    /// What it had computed so far, while it runs or once stopped.
    fn partial(&self) -> Option<&Arc<JobResult>> {
        match self {
            Entry::Running { partial, .. } | Entry::Stopped(partial) => partial.as_ref(),
            _ => None,
        }
    }
}

/// A request to the runner.
struct Request {
    key: JobKey,
    /// One per request, so results of a cancelled run never land on a
    /// newer request of the same key.
    id: u64,
    cancel: Arc<AtomicBool>,
    /// What an earlier run of the same key had finished when it stopped.
    resume: Option<Arc<JobResult>>,
}

enum Msg {
    Run(Request),
    SetBackend(Backend),
    OpenModel(ModelSource),
}

enum Event {
    Progress(JobKey, u64, f32, String),
    Partial(JobKey, u64, JobResult),
    Done(JobKey, u64, Result<JobResult, String>),
    /// The engine now running, under the choice (auto, CPU, GPU) it ran for.
    Engine(Backend, EngineNote),
    Opened(Result<super::compute::OpenedInfo, String>),
}

/// The user's own model, as the UI knows it.
#[derive(Debug, Clone, Default)]
pub struct OpenedModel {
    /// Its name, shape and weights' fingerprint once open.
    pub model: Option<super::compute::OpenedInfo>,
    pub opening: bool,
    pub error: Option<String>,
    /// Set when a model has just opened (the app then switches to it).
    pub fresh: bool,
}

struct Slot {
    id: u64,
    entry: Entry,
    cancel: Arc<AtomicBool>,
    /// Stopped by the user's Cancel: kept as cancelled while views still
    /// ask for it, forgotten once none does (so coming back computes it).
    cancelled_by_user: bool,
}

pub struct Jobs {
    tx: Sender<Msg>,
    rx: Receiver<Event>,
    cache: HashMap<JobKey, Slot>,
    wanted: HashSet<JobKey>,
    /// Jobs that run on whether or not a view asks for them (a search goes
    /// on while the user looks at another page).
    pinned: HashSet<JobKey>,
    /// What resumable jobs had finished when they were stopped, for their
    /// next run (`JobKey::resumable`).
    resume: HashMap<JobKey, Arc<JobResult>>,
    backend: Backend,
    engine: EngineNote,
    /// Results received since the app started (tests wait on it).
    completed: u64,
    next_id: u64,
    pub opened: OpenedModel,
    /// Models opened so far (`ModelInfo::opened`).
    openings: u64,
}

impl Jobs {
    /// Starts the runner. `gpu`: eframe's device, when it renders with wgpu.
    pub fn start(ctx: &egui::Context, backend: Backend, gpu: Option<GpuSource>) -> Self {
        let (tx, runner_rx) = std::sync::mpsc::channel();
        let (runner_tx, rx) = std::sync::mpsc::channel();
        spawn_runner(Lab::new(backend, gpu), runner_rx, runner_tx, ctx.clone());
        Jobs {
            tx,
            rx,
            cache: HashMap::new(),
            wanted: HashSet::new(),
            pinned: HashSet::new(),
            resume: HashMap::new(),
            backend,
            engine: EngineNote::default(),
            completed: 0,
            next_id: 0,
            opened: OpenedModel::default(),
            openings: 0,
        }
    }

    /// The result (or progress) of `key`, requesting it if new; marks it
    /// wanted this frame.
    pub fn get(&mut self, key: &JobKey) -> &Entry {
        self.wanted.insert(key.clone());
        if !self.cache.contains_key(key) {
            let cancel = Arc::new(AtomicBool::new(false));
            self.next_id += 1;
            let id = self.next_id;
            let resume = self.resume.remove(key).or_else(|| self.same_cells(key));
            // A closed channel means the runner is gone: the entry stays
            // "running".
            let _ = self.tx.send(Msg::Run(Request {
                key: key.clone(),
                id,
                cancel: Arc::clone(&cancel),
                resume: resume.clone(),
            }));
            self.cache.insert(
                key.clone(),
                Slot {
                    id,
                    entry: Entry::Running {
                        fraction: 0.0,
                        message: super::text::WORKING.into(),
                        // What it goes on from is shown at once.
                        partial: resume,
                    },
                    cancel,
                    cancelled_by_user: false,
                },
            );
        }
        &self.cache[key].entry
    }

    /// Like `get`, and the job keeps running in frames where no view asks
    /// for it, until `unpin` or `cancel`.
    pub fn get_pinned(&mut self, key: &JobKey) -> &Entry {
        self.pinned.insert(key.clone());
        self.get(key)
    }

    /// Lets `end_frame` cancel the job again when no view asks for it.
    pub fn unpin(&mut self, key: &JobKey) {
        self.pinned.remove(key);
    }

    /// The entry of `key` if it was asked for, without asking.
    pub fn peek(&self, key: &JobKey) -> Option<&Entry> {
        self.cache.get(key).map(|s| &s.entry)
    }

    /// A sweep's jobs (the against-length plots, the accuracy maps) as its
    /// view sees them: asked for (`get`) while `on`, else shown as they
    /// were stopped (`keep`). A sweep stopped and not running, by its Stop
    /// or the status bar's Cancel, turns `on` off: a visit to another page
    /// then does not start it again.
    pub fn sweep<'a>(&mut self, keys: impl IntoIterator<Item = &'a JobKey>, on: &mut bool) -> Sweep {
        let entries: Vec<Option<Entry>> = keys
            .into_iter()
            .map(|key| {
                if *on {
                    Some(self.get(key).clone())
                } else {
                    self.keep(key)
                }
            })
            .collect();
        let any = |f: fn(&Entry) -> bool| entries.iter().flatten().any(f);
        let running = any(|e| matches!(e, Entry::Running { .. }));
        let stopped = any(|e| matches!(e, Entry::Stopped(_)));
        if stopped && !running {
            *on = false;
        }
        Sweep {
            entries,
            running,
            stopped,
        }
    }

    /// For a view that shows a job without asking for it: its entry, kept
    /// while a view keeps it this way, or else what a stopped run of it
    /// (or, for an accuracy map, of the same map over other lengths) had
    /// finished (as `Entry::Stopped`); starts nothing.
    pub fn keep(&mut self, key: &JobKey) -> Option<Entry> {
        match self.cache.get(key) {
            Some(slot) => {
                // (A running one is not kept: it stops at the frame's end,
                // as every job no view asks for.)
                if !matches!(slot.entry, Entry::Running { .. }) {
                    self.wanted.insert(key.clone());
                }
                Some(slot.entry.clone())
            }
            // (An accuracy map over other lengths than one stopped shows the
            // cells of the lengths both have: Resume computes the rest.)
            None => self
                .resume
                .get(key)
                .cloned()
                .or_else(|| self.same_cells_stopped(key))
                .map(|r| Entry::Stopped(Some(r))),
        }
    }

    /// Takes in what the runner sent since the last frame.
    pub fn poll(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.take(ev);
        }
    }

    /// One event of the runner's (tests put in their own).
    fn take(&mut self, ev: Event) {
        match ev {
            Event::Progress(k, id, f, m) => {
                if let Some(Slot {
                    entry: Entry::Running { fraction, message, .. },
                    ..
                }) = self.cache.get_mut(&k).filter(|s| s.id == id)
                {
                    *fraction = f;
                    *message = m;
                }
            }
            Event::Partial(k, id, r) => {
                let r = Arc::new(r);
                match self.cache.get_mut(&k).filter(|s| s.id == id) {
                    Some(Slot {
                        entry: Entry::Running { partial, .. },
                        ..
                    }) => *partial = Some(r),
                    // Finished between the user's stop and the runner
                    // seeing it: kept too.
                    Some(Slot {
                        entry: Entry::Stopped(partial),
                        ..
                    }) => {
                        *partial = Some(Arc::clone(&r));
                        self.keep_partial(&k, Some(&r));
                    }
                    _ => {}
                }
            }
            Event::Done(k, id, r) => {
                if let Some(slot) = self.cache.get_mut(&k).filter(|s| s.id == id) {
                    if !matches!(slot.entry, Entry::Running { .. }) {
                        // Cancelled by the user: stays cancelled.
                    } else if slot.cancel.load(Ordering::Relaxed) {
                        self.cache.remove(&k);
                    } else {
                        slot.entry = match r {
                            Ok(r) => Entry::Done(Arc::new(r)),
                            Err(e) => Entry::Failed(e),
                        };
                        self.completed += 1;
                    }
                }
            }
            // A note from before the user switched engines is stale (a
            // job under the old choice can finish after the switch).
            Event::Engine(backend, name) => {
                if backend == self.backend {
                    self.engine = name;
                }
            }
            Event::Opened(r) => {
                self.opened.opening = false;
                match r {
                    Ok(mut model) => {
                        // Results of a model opened before are stale.
                        self.forget_model(ModelChoice::Custom);
                        self.openings += 1;
                        model.info.opened = self.openings;
                        self.opened.model = Some(model);
                        self.opened.error = None;
                        self.opened.fresh = true;
                    }
                    Err(e) => self.opened.error = Some(e),
                }
            }
        }
    }

    /// Cancels running jobs no view asked for this frame (pinned ones run on).
    pub fn end_frame(&mut self) {
        let stale: Vec<JobKey> = self
            .cache
            .iter()
            .filter(|(k, s)| {
                matches!(s.entry, Entry::Running { .. }) && !self.wanted.contains(*k) && !self.pinned.contains(*k)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.cancel(&k);
        }
        // Cancelled by the user and no longer asked for: the state moved
        // on, so asking again later starts the job afresh (it stayed
        // "cancelled" for good until 2026-12-01).
        self.cache
            .retain(|k, s| !s.cancelled_by_user || self.wanted.contains(k) || self.pinned.contains(k));
        self.wanted.clear();
    }

    /// Stops a job and forgets its entry: asking again starts it afresh,
    /// a resumable one from what it had finished.
    pub fn cancel(&mut self, key: &JobKey) {
        self.pinned.remove(key);
        if let Some(slot) = self.cache.remove(key) {
            slot.cancel.store(true, Ordering::Relaxed);
            self.keep_partial(key, slot.entry.partial());
        }
    }

    /// The user's stop of one job: it stops and shows as stopped, with
    /// what it had computed, until `go_on` or until no view asks for it.
    pub fn stop(&mut self, key: &JobKey) {
        self.pinned.remove(key);
        if let Some(slot) = self.cache.get_mut(key) {
            if matches!(slot.entry, Entry::Running { .. }) {
                slot.cancel.store(true, Ordering::Relaxed);
                let partial = slot.entry.partial().cloned();
                slot.entry = Entry::Stopped(partial.clone());
                slot.cancelled_by_user = true;
                self.keep_partial(key, partial.as_ref());
            }
        }
    }

    /// The user's cancel: stops every running job and keeps it as
    /// stopped, so it is not asked for again until the state changes.
    pub fn cancel_all(&mut self) {
        let running: Vec<JobKey> = self
            .cache
            .iter()
            .filter(|(_, s)| matches!(s.entry, Entry::Running { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for key in running {
            self.stop(&key);
        }
    }

    /// A stopped job runs again when next asked for (a resumable one from
    /// what it had finished).
    pub fn go_on(&mut self, key: &JobKey) {
        if matches!(self.peek(key), Some(Entry::Stopped(_))) {
            self.cache.remove(key);
        }
    }

    /// Stops a job and forgets it, what it had finished included: the
    /// next run starts from the beginning.
    pub fn forget(&mut self, key: &JobKey) {
        self.cancel(key);
        self.resume.remove(key);
        // And the same accuracy map over other lengths, whose cells
        // `same_cells` would bring back (after Clear, a map computed again
        // showed the cleared cells at once).
        if let JobKey::PasskeyGrid(g) = key {
            let others: Vec<JobKey> = self
                .cache
                .keys()
                .chain(self.resume.keys())
                .filter(|k| other_lengths(g, k))
                .cloned()
                .collect();
            for other in others {
                self.cancel(&other);
                self.resume.remove(&other);
            }
        }
    }

    /// For an accuracy map over other lengths than one computed (the same
    /// model, scales, filler, depths, trials and seed; its longest length
    /// changed), that map's cells so far: each cell's trials depend on its
    /// depth and trial alone, so the lengths both have are the same cells
    /// (`passkey_grid` takes them). A new longest length computed them all
    /// again.
    fn same_cells(&self, key: &JobKey) -> Option<Arc<JobResult>> {
        let cached = self.cache.iter().filter_map(|(k, s)| match &s.entry {
            Entry::Done(r) => Some((k, r)),
            other => other.partial().map(|r| (k, r)),
        });
        same_cells_of(key, cached.chain(&self.resume))
    }

    /// `same_cells` from the stopped runs' cells alone (a finished map over
    /// other lengths is no stopped one of these).
    fn same_cells_stopped(&self, key: &JobKey) -> Option<Arc<JobResult>> {
        same_cells_of(key, self.resume.iter())
    }

    /// Keeps what a resumable job had finished for its next run.
    fn keep_partial(&mut self, key: &JobKey, partial: Option<&Arc<JobResult>>) {
        if let Some(partial) = partial.filter(|_| key.resumable()) {
            self.resume.insert(key.clone(), Arc::clone(partial));
        }
    }

    /// Opens the user's model in the runner; `opened` follows.
    pub fn open_model(&mut self, source: ModelSource) {
        self.opened.opening = true;
        self.opened.error = None;
        let _ = self.tx.send(Msg::OpenModel(source));
    }

    /// A handle that opens a model later (after the browser has read the
    /// files); marks the model as opening now.
    pub fn model_opener(&mut self) -> impl Fn(ModelSource) + 'static {
        self.opened.opening = true;
        self.opened.error = None;
        self.model_sender()
    }

    /// The same without marking anything (a file picker the user may
    /// close without picking).
    pub fn model_sender(&self) -> impl Fn(ModelSource) + 'static {
        let tx = self.tx.clone();
        move |source| {
            let _ = tx.send(Msg::OpenModel(source));
        }
    }

    /// Drops every result of `model`, cancelling what runs.
    fn forget_model(&mut self, model: ModelChoice) {
        let stale: Vec<JobKey> = self.cache.keys().filter(|k| k.model() == model).cloned().collect();
        for k in stale {
            self.cancel(&k);
        }
        self.resume.retain(|k, _| k.model() != model);
    }

    /// Switches engines; results are recomputed on the new one.
    pub fn set_backend(&mut self, backend: Backend) {
        if backend != self.backend {
            self.backend = backend;
            for slot in self.cache.values() {
                slot.cancel.store(true, Ordering::Relaxed);
            }
            self.cache.clear();
            // Finished on the other engine: recomputed whole on this one.
            self.resume.clear();
            self.engine = EngineNote::default();
            let _ = self.tx.send(Msg::SetBackend(backend));
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Which engine runs and why (empty until it has started).
    pub fn engine(&self) -> &EngineNote {
        &self.engine
    }

    /// Running jobs: (fraction done, message) of each.
    pub fn running(&self) -> Vec<(f32, String)> {
        self.cache
            .values()
            .filter_map(|s| match &s.entry {
                Entry::Running { fraction, message, .. } => Some((*fraction, message.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn is_idle(&self) -> bool {
        self.cache.values().all(|s| !matches!(s.entry, Entry::Running { .. }))
    }

    /// No job the views ask for is running: pinned ones (a search going on
    /// from the tuning page) left out.
    pub fn views_idle(&self) -> bool {
        self.cache
            .iter()
            .all(|(k, s)| !matches!(s.entry, Entry::Running { .. }) || self.pinned.contains(k))
    }

    pub fn completed(&self) -> u64 {
        self.completed
    }
}

/// Of `candidates` (jobs and their cells so far), those of the accuracy map
/// `key` over other lengths, over `key`'s lengths: the one with the most
/// cells done.
fn same_cells_of<'a>(
    key: &JobKey,
    candidates: impl Iterator<Item = (&'a JobKey, &'a Arc<JobResult>)>,
) -> Option<Arc<JobResult>> {
    let JobKey::PasskeyGrid(g) = key else { return None };
    candidates
        .filter(|(k, _)| other_lengths(g, k))
        .filter_map(|(_, r)| match r.as_ref() {
            JobResult::PasskeyGrid(m) => Some(m.for_lengths(&g.lengths)),
            _ => None,
        })
        .max_by_key(PasskeyGridResult::finished)
        .map(|m| Arc::new(JobResult::PasskeyGrid(m)))
}

/// Whether `k` is the accuracy map `g` over other lengths: the same model,
/// scales, filler, depths, trials and seed.
fn other_lengths(g: &GridKey, k: &JobKey) -> bool {
    match k {
        JobKey::PasskeyGrid(o) => {
            o.lengths != g.lengths
                && GridKey {
                    lengths: g.lengths.clone(),
                    ..o.clone()
                } == *g
        }
        _ => false,
    }
}

/// How soon a progress report redraws the UI.
const PROGRESS_REPAINT: std::time::Duration = std::time::Duration::from_millis(100);

/// What the runner reports through, checking the job's cancel flag.
struct Control<'a> {
    request: &'a Request,
    tx: &'a Sender<Event>,
    ctx: &'a egui::Context,
}

impl JobControl for Control<'_> {
    fn progress(&mut self, fraction: f32, message: &str) -> bool {
        let r = self.request;
        let _ = self
            .tx
            .send(Event::Progress(r.key.clone(), r.id, fraction, message.to_string()));
        // Progress alone need not redraw at once: where drawing is slow
        // (software WebGPU) frames would eat the time the work needs.
        self.ctx.request_repaint_after(PROGRESS_REPAINT);
        !r.cancel.load(Ordering::Relaxed)
    }

    fn partial(&mut self, result: JobResult) {
        let r = self.request;
        let _ = self.tx.send(Event::Partial(r.key.clone(), r.id, result));
        self.ctx.request_repaint();
    }

    fn resumed(&self) -> Option<&JobResult> {
        self.request.resume.as_deref()
    }
}

/// Takes every message waiting; returns false when the app is gone.
fn drain(
    rx: &Receiver<Msg>,
    queue: &mut VecDeque<Request>,
    lab: &mut Lab,
    events: &Sender<Event>,
    ctx: &egui::Context,
) -> bool {
    loop {
        match rx.try_recv() {
            Ok(msg) => handle(msg, queue, lab, events, ctx),
            Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
        }
    }
}

/// What the runner does with one message: queue a job, switch engines, or
/// open the user's model (answered at once).
fn handle(msg: Msg, queue: &mut VecDeque<Request>, lab: &mut Lab, events: &Sender<Event>, ctx: &egui::Context) {
    match msg {
        Msg::Run(r) => queue.push_back(r),
        Msg::SetBackend(b) => lab.set_backend(b),
        Msg::OpenModel(source) => {
            let _ = events.send(Event::Opened(lab.open_model(source).map_err(|e| e.to_string())));
            ctx.request_repaint();
        }
    }
}

/// Runs one job, sending its result (and the engine, if it changed).
async fn run_one(lab: &mut Lab, request: &Request, tx: &Sender<Event>, ctx: &egui::Context) {
    let before = lab.engine_note().clone();
    let mut control = Control { request, tx, ctx };
    let result = lab.run(&request.key, &mut control).await.map_err(|e| e.to_string());
    if *lab.engine_note() != before {
        let _ = tx.send(Event::Engine(lab.backend(), lab.engine_note().clone()));
    }
    let _ = tx.send(Event::Done(request.key.clone(), request.id, result));
    ctx.request_repaint();
}

/// Natively: a thread owns the lab and its engines.
#[cfg(not(target_arch = "wasm32"))]
fn spawn_runner(mut lab: Lab, rx: Receiver<Msg>, tx: Sender<Event>, ctx: egui::Context) {
    let spawned = std::thread::Builder::new()
        .name("nopescope runner".into())
        .spawn(move || {
            let mut queue = VecDeque::new();
            loop {
                if !drain(&rx, &mut queue, &mut lab, &tx, &ctx) {
                    return;
                }
                match queue.pop_front() {
                    Some(request) => {
                        if !request.cancel.load(Ordering::Relaxed) {
                            pollster::block_on(run_one(&mut lab, &request, &tx, &ctx));
                        }
                    }
                    None => match rx.recv() {
                        Ok(msg) => handle(msg, &mut queue, &mut lab, &tx, &ctx),
                        Err(_) => return,
                    },
                }
            }
        });
    if let Err(e) = spawned {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("nopescope: cannot start the runner thread: {e}\n").as_bytes(),
        );
    }
}

/// On the web: async tasks on the page's one thread. The runner checks for
/// work every few milliseconds and yields to the browser between jobs, so
/// frames keep coming; a long CPU forward still holds the thread while it
/// runs (see docs/APP.md).
#[cfg(target_arch = "wasm32")]
fn spawn_runner(mut lab: Lab, rx: Receiver<Msg>, tx: Sender<Event>, ctx: egui::Context) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut queue = VecDeque::new();
        loop {
            if !drain(&rx, &mut queue, &mut lab, &tx, &ctx) {
                return;
            }
            match queue.pop_front() {
                Some(request) => {
                    if !request.cancel.load(Ordering::Relaxed) {
                        run_one(&mut lab, &request, &tx, &ctx).await;
                    }
                    super::web::yield_to_browser(0).await;
                }
                None => super::web::yield_to_browser(16).await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bookkeeping of stopping and going on, with the runner's events
    /// put in by hand: a stop keeps the partial result (shown, and handed
    /// to the next run), a view that only keeps a job does not keep it
    /// running, Go on and a new request start from what was kept, Clear
    /// forgets it, and a non-resumable job keeps nothing for a next run.
    #[test]
    fn a_stopped_sweep_is_kept_shown_and_handed_to_its_next_run() {
        let ctx = egui::Context::default();
        let mut jobs = Jobs::start(&ctx, Backend::Cpu, None);
        let key = JobKey::AgainstLength {
            model: ModelChoice::Nope,
            scales: ScalesKey::ones(16),
            text: None,
        };
        let partial = |n: usize| {
            Arc::new(JobResult::AgainstLength(AgainstLengthResult {
                points: (0..n)
                    .map(|k| LengthPoint {
                        length: 128 << k,
                        entropy_bits: 1.0,
                        head_entropy_bits: vec![vec![1.0; 4]; 4],
                        perplexity: 2.0,
                        passkey_accuracy: None,
                    })
                    .collect(),
                lengths: vec![128, 256, 512],
                text_short: None,
            }))
        };
        let points = |e: Option<&Entry>| match e.and_then(Entry::result) {
            Some(JobResult::AgainstLength(r)) => r.points.len(),
            _ => 0,
        };
        // Running with two points, then stopped by the user.
        jobs.get(&key);
        let id = jobs.cache[&key].id;
        jobs.take(Event::Partial(key.clone(), id, (*partial(2)).clone()));
        jobs.stop(&key);
        assert!(matches!(jobs.peek(&key), Some(Entry::Stopped(Some(_)))));
        assert_eq!(points(jobs.peek(&key)), 2);
        // A late partial of the stopped run is kept too; its Done is not.
        jobs.take(Event::Partial(key.clone(), id, (*partial(3)).clone()));
        jobs.take(Event::Done(key.clone(), id, Err("cancelled".into())));
        assert!(matches!(jobs.peek(&key), Some(Entry::Stopped(Some(_)))));
        assert_eq!(points(jobs.peek(&key)), 3);
        // Kept while a view keeps it; after a frame without, still shown
        // from what was kept, and asking again goes on from it.
        assert_eq!(points(jobs.keep(&key).as_ref()), 3);
        jobs.end_frame();
        assert!(jobs.peek(&key).is_some(), "kept by the view");
        jobs.end_frame();
        assert!(jobs.peek(&key).is_none());
        assert_eq!(points(jobs.keep(&key).as_ref()), 3, "what was kept is gone");
        jobs.get(&key);
        assert!(matches!(jobs.peek(&key), Some(Entry::Running { .. })));
        assert_eq!(points(jobs.peek(&key)), 3, "not going on from what was kept");
        assert!(jobs.resume.is_empty(), "handed to the run");
        jobs.end_frame();
        // A running job only kept (its view turned off) stops at the
        // frame's end, keeping what it had.
        assert!(jobs.keep(&key).is_some());
        jobs.end_frame();
        assert!(jobs.peek(&key).is_none(), "a job no view asks for runs on");
        assert_eq!(points(jobs.keep(&key).as_ref()), 3);
        // Go on after a stop; Clear forgets all of it.
        jobs.get(&key);
        jobs.cancel_all();
        assert!(matches!(jobs.peek(&key), Some(Entry::Stopped(Some(_)))));
        jobs.go_on(&key);
        assert!(jobs.peek(&key).is_none());
        jobs.get(&key);
        assert_eq!(points(jobs.peek(&key)), 3);
        jobs.forget(&key);
        assert!(jobs.peek(&key).is_none() && jobs.keep(&key).is_none());
        // Not resumable: nothing kept for a next run.
        let entropy = JobKey::Entropy {
            at: InputAt {
                model: ModelChoice::Nope,
                input: InputKey::Validation,
                length: 512,
            },
            scales: ScalesKey::ones(16),
        };
        jobs.get(&entropy);
        let id = jobs.cache[&entropy].id;
        jobs.take(Event::Partial(entropy.clone(), id, (*partial(1)).clone()));
        jobs.cancel(&entropy);
        assert!(jobs.resume.is_empty());
    }

    /// Equal texts are equal keys with one hash, made by copying the text
    /// once; other texts are other keys.
    #[test]
    fn text_keys_compare_by_text_and_are_made_once() {
        use std::hash::{BuildHasher, RandomState};
        let a = TextKey::of("the quick brown fox");
        let b = TextKey::of(&String::from("the quick brown fox"));
        assert!(Arc::ptr_eq(&a.text, &b.text), "the text was copied again");
        let c = TextKey::of("the quick brown dog");
        let d = TextKey::of("the quick brown fox");
        assert_eq!(a, d);
        assert_ne!(a, c);
        let s = RandomState::new();
        assert_eq!(s.hash_one(&a), s.hash_one(&d));
        let key = |t: &TextKey| InputKey::Pasted(t.clone());
        let mut set = HashSet::new();
        set.insert(key(&a));
        assert!(set.contains(&key(&d)) && !set.contains(&key(&c)));
        assert_eq!(format!("{a:?}"), "TextKey(19 bytes: \"the quick brown fox\")");
        assert_eq!(TextKey::of("été").chars(), 3);
        // The wide compare the web page uses: every length around its
        // 16-byte steps, equal and differing at each byte.
        for n in 0..70usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            assert!(same_bytes_wide(&a, &a.clone()), "{n} bytes");
            assert!(!same_bytes_wide(&a, &a[..n.saturating_sub(1)]) || n == 0);
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!same_bytes_wide(&a, &b), "{n} bytes, byte {i}");
            }
        }
    }

    /// Of a head near uniform everywhere, a local head and a head focused
    /// up to L that spreads out past it, the last is the most flattened;
    /// nothing is past L at L.
    #[test]
    fn the_most_flattened_head_is_the_one_that_spreads_out_past_l() {
        let (l, t) = (64usize, 256usize);
        let ceiling = |i: usize| ((i + 1) as f32).log2();
        let uniform: Vec<f32> = (0..t).map(|i| ceiling(i) - 0.05).collect();
        let local: Vec<f32> = (0..t).map(|i| ceiling(i).min(1.0)).collect();
        let spreads: Vec<f32> = (0..t)
            .map(|i| if i < l { ceiling(i) * 0.5 } else { ceiling(i) - 0.3 })
            .collect();
        let profile = |heads: &[&Vec<f32>], length: usize| EntropyProfile {
            length,
            windows: 1,
            layers: 1,
            heads: heads.len(),
            bits: heads.iter().flat_map(|h| h[..length].iter().copied()).collect(),
            loss: 0.0,
            tokens: Vec::new(),
            key: None,
            retrieval_query: None,
            note: None,
        };
        let p = profile(&[&uniform, &local, &spreads], t);
        let (layer, head, closed) = p.most_flattened(l).unwrap();
        assert_eq!((layer, head), (0, 2));
        // Half of log2(i + 1) under it before L (2.786 bits on average
        // over positions 32..63), 0.3 bits at the end.
        let half: f32 = (32..64).map(|i| ((i + 1) as f32).log2() / 2.0).sum::<f32>() / 32.0;
        assert!((closed - (half - 0.3)).abs() < 1e-4, "{closed} {half}");
        // A head whose curve is not finite is never the one.
        let mut nan = spreads.clone();
        nan[240] = f32::NAN;
        assert_eq!(
            profile(&[&uniform, &nan, &local], t).most_flattened(l).map(|m| m.1),
            Some(0)
        );
        assert!(profile(&[&uniform, &local, &spreads], l).most_flattened(l).is_none());
    }
}
