//! The app: one egui program for the desktop (eframe, wgpu) and the web
//! page. Owns the UI only; it calls `lab/` and the engines through the
//! runner in `jobs`, never directly, and nothing below depends on it.
//!
//! Data flows one way: a UI event changes `ViewState`; each frame the views
//! derive job keys from it and ask `Jobs` for their results; the runner
//! (which alone owns the engines) computes what is missing off the UI
//! thread; results land in the cache and the views draw them.

pub mod compute;
pub mod dropped;
pub mod export;
pub mod jobs;
pub mod models;
pub mod palette;
#[cfg(not(target_arch = "wasm32"))]
pub mod saved;
pub mod search_job;
pub mod state;
pub mod text;
pub mod tour;
pub mod views;
#[cfg(target_arch = "wasm32")]
pub mod web;

use eframe::egui;

use compute::GpuSource;
use jobs::{JobResult, Jobs};

use models::ModelInfo;
use state::{ModelChoice, Tab, ViewState};
use views::Keys;

/// Where eframe keeps the state between runs.
pub const STORAGE_KEY: &str = "nopescope view state";
/// The Share panel's address of the web page (desktop only: the page knows
/// its own), kept between runs.
pub const SHARE_ADDRESS_KEY: &str = "nopescope share address";
/// Below this width (points) the panels stack in one column.
const NARROW: f32 = 980.0;

#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Show the frame time in the status bar (off in snapshot tests, where
    /// it would change from run to run).
    pub show_frame_time: bool,
    /// Print the time to the first entropy plot and the frame times while
    /// computing to stderr whenever the jobs finish (`NOPESCOPE_TIMING=1`).
    pub log_timing: bool,
    /// The page is mostly touched (on the web, the browser says its
    /// primary pointer is coarse: a phone or a tablet). egui lets a drag
    /// scroll the page only once it has seen a touch, so a tablet's first
    /// swipe over a fresh page did nothing; the app tells egui before its
    /// first frame instead.
    pub touch_screen: bool,
}

/// Frame times seen while any job ran, for docs/APP.md's numbers.
#[derive(Debug, Clone, Default)]
pub struct FrameStats {
    pub busy_frames: u64,
    pub busy_max_ms: f32,
    pub busy_total_ms: f64,
    /// The longest the app's own UI code (`show`, without egui's
    /// tessellation and the renderer) took in a frame while busy (native).
    pub busy_ui_max_ms: f32,
}

#[derive(Default)]
struct Views {
    input: views::input::InputView,
    scales: views::scales::ScalesView,
    map: views::head_map::HeadMapView,
    entropy: views::entropy::EntropyView,
    attention: views::attention::AttentionView,
    against: views::against::AgainstLengthView,
    status: views::status::StatusView,
    tuning: views::tuning::TuningView,
    passkey_lab: views::passkey_lab::PasskeyLabView,
    tour: views::tour::TourView,
    share: views::share::ShareView,
    /// The share panel is open (not part of the state: a link never opens it).
    sharing: bool,
    /// The state before and after the last Start over, for its Undo while
    /// nothing changed since.
    started_over: Option<(ViewState, ViewState)>,
    /// Whether the walkthrough was open, as of the last frame's check
    /// (`follow_tour`).
    touring: bool,
    /// The view as it was when the walkthrough opened (its steps set their
    /// own model, input, scales and page over it).
    before_tour: Option<ViewState>,
    /// Once it closed: the view before it and as it closed, for "Back to
    /// your view" while nothing changed since.
    after_tour: Option<(ViewState, ViewState)>,
}

pub struct NopeApp {
    pub state: ViewState,
    pub jobs: Jobs,
    views: Views,
    options: AppOptions,
    frame_ms: Option<f32>,
    last_frame: Option<f64>,
    pub frame_stats: FrameStats,
    /// When the app started and when the first entropy curve was drawn
    /// (seconds on egui's clock).
    started: Option<f64>,
    pub first_plot_s: Option<f64>,
    /// Plot exports: the save dialog natively, downloads on the web.
    pub exporter: export::Exporter,
    /// The document the chosen query belongs to (see `forget_stale_query`).
    query_document: Option<QueryDocument>,
    /// The desktop app's own copy of what it keeps between runs.
    #[cfg(not(target_arch = "wasm32"))]
    state_file: Option<saved::StateFile>,
    /// What went wrong keeping the state (shown in the status bar).
    pub state_note: Option<StateNote>,
    /// The outcome of the last text or scales file dropped (true: failed).
    pub drop_note: Option<(String, bool)>,
    /// What a link opened could not use (`ViewState::read_link`), shown
    /// above the page, hidden panels or not, until dismissed.
    pub link_note: Option<String>,
    /// The walkthrough step whose views had all their results when the
    /// last frame ended, drawn with that step applied from the frame's
    /// start (its spotlights scroll only then; Next and Page Down change
    /// the step mid-frame, before its settings are applied).
    settled_for: Option<usize>,
    /// Dropped files read (on the web, asynchronously), to apply.
    dropped: (
        std::sync::mpsc::Sender<dropped::DroppedFile>,
        std::sync::mpsc::Receiver<dropped::DroppedFile>,
    ),
}

/// What went wrong keeping the view between runs (the status bar says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateNote {
    /// The saved state read at start could not be used (it was set aside).
    Read(String),
    /// The last save failed; the next one that works clears it.
    NotSaved(String),
}

impl StateNote {
    pub fn message(&self) -> String {
        match self {
            StateNote::Read(why) => format!("{}: {why}", text::STATE_FILE),
            StateNote::NotSaved(why) => format!("{}: {why}", text::STATE_NOT_SAVED),
        }
    }
}

/// What a chosen query position is a position in: another model or input
/// kind, or another pass-key document, makes it meaningless (the default,
/// the retrieving query, is then wanted); a validation text at another
/// length keeps it (clamped).
#[derive(Debug, Clone, PartialEq)]
struct QueryDocument {
    model: ModelChoice,
    input: state::InputKind,
    passkey: Option<(u32, u32, usize)>,
}

impl QueryDocument {
    fn of(s: &ViewState) -> Self {
        QueryDocument {
            model: s.model,
            input: s.input,
            passkey: (s.input == state::InputKind::Passkey)
                .then(|| (s.passkey.key, (s.passkey.depth * 1000.0).round() as u32, s.length)),
        }
    }
}

/// A bundled model's shape (`ModelInfo::bundled`, read once). Its config is
/// compiled in and tested; the fallback only keeps a broken build drawing
/// an error instead of panicking.
fn bundled_info(m: ModelChoice) -> ModelInfo {
    ModelInfo::bundled(m).unwrap_or(ModelInfo {
        layers: 1,
        heads: 1,
        training_length: 256,
        rope: m == ModelChoice::Rope,
        opened: 0,
    })
}

impl NopeApp {
    /// The app on `state`; `gpu` is eframe's wgpu device when it has one.
    pub fn new(ctx: &egui::Context, mut state: ViewState, gpu: Option<GpuSource>, options: AppOptions) -> Self {
        Self::fit_to_bundled(&mut state);
        // Hints and notes readable on a projector: egui's weak text (60% of
        // the text's colour over the background) measured under 3:1 against
        // the light theme's background; at 80% it is about 4.5:1, still
        // lighter than the text.
        ctx.all_styles_mut(|s| s.visuals.weak_text_alpha = WEAK_TEXT_ALPHA);
        let jobs = Jobs::start(ctx, state.backend, gpu);
        NopeApp {
            state,
            jobs,
            views: Views::default(),
            options,
            frame_ms: None,
            last_frame: None,
            frame_stats: FrameStats::default(),
            started: None,
            first_plot_s: None,
            exporter: export::Exporter::default(),
            query_document: None,
            #[cfg(not(target_arch = "wasm32"))]
            state_file: None,
            state_note: None,
            drop_note: None,
            link_note: None,
            settled_for: None,
            dropped: std::sync::mpsc::channel(),
        }
    }

    /// `state` on a bundled model, every field in range for it; says what
    /// changed. A model folder opened by hand is not kept (not in links,
    /// not between runs): a state that names one opens the bundled NoPE
    /// model.
    fn fit_to_bundled(state: &mut ViewState) -> Vec<String> {
        if state.model == ModelChoice::Custom {
            state.model = ModelChoice::Nope;
        }
        let i = bundled_info(state.model);
        state.sanitize(i.layers, i.heads)
    }

    /// A link as the app opens it: read onto `base()`
    /// (`ViewState::read_link_onto`), its values in range for the bundled
    /// model it names. The list says both what it could not use and what
    /// was brought into range (a length of 99999 opens at the longest
    /// there is, and says so).
    pub fn read_link(fragment: &str, base: impl FnOnce() -> ViewState) -> Option<(ViewState, Vec<String>)> {
        let (mut state, mut problems) = ViewState::read_link_onto(fragment, base)?;
        // Said first: the values below were set on that model.
        if state.model == ModelChoice::Custom {
            problems.push(text::LINK_CUSTOM_MODEL.into());
        }
        problems.extend(Self::fit_to_bundled(&mut state));
        Some((state, problems))
    }

    /// Says what a link could not use (`problems` from
    /// `NopeApp::read_link`); none clears the note.
    pub fn note_link_problems(&mut self, problems: &[String]) {
        self.link_note = (!problems.is_empty()).then(|| problems.join("; "));
    }

    /// The desktop app, from eframe's creation context: the saved state,
    /// and eframe's own wgpu device for the GPU engine.
    pub fn from_creation(cc: &eframe::CreationContext<'_>, state: Option<ViewState>) -> Self {
        Self::from_storage(cc, state, cc.storage)
    }

    /// The desktop app with its own state file, read before eframe's
    /// storage (which holds the same, written in place), and written at
    /// each of eframe's saves; `note` says what was wrong with it, if
    /// anything (shown in the status bar).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_creation_with_file(
        cc: &eframe::CreationContext<'_>,
        state: Option<ViewState>,
        file: Option<saved::StateFile>,
        note: Option<String>,
    ) -> Self {
        let kept: Option<&dyn eframe::Storage> = match &file {
            Some(f) if !f.is_empty() => Some(f),
            _ => cc.storage,
        };
        let mut app = Self::from_storage(cc, state, kept);
        app.state_file = file;
        app.state_note = note.map(StateNote::Read);
        app
    }

    /// Keeps what the app keeps between runs in `file` too (see
    /// `from_creation_with_file`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_state_file(&mut self, file: saved::StateFile) {
        self.state_file = Some(file);
    }

    fn from_storage(
        cc: &eframe::CreationContext<'_>,
        state: Option<ViewState>,
        storage: Option<&dyn eframe::Storage>,
    ) -> Self {
        let gpu = cc.wgpu_render_state.as_ref().map(|rs| GpuSource {
            adapter: rs.adapter.clone(),
            device: rs.device.clone(),
            queue: rs.queue.clone(),
        });
        let state = state.or_else(|| Self::saved_state(storage)).unwrap_or_default();
        let options = AppOptions {
            show_frame_time: true,
            log_timing: cfg!(not(target_arch = "wasm32")) && std::env::var_os("NOPESCOPE_TIMING").is_some(),
            #[cfg(target_arch = "wasm32")]
            touch_screen: web::touch_screen(),
            #[cfg(not(target_arch = "wasm32"))]
            touch_screen: false,
        };
        let mut app = Self::new(&cc.egui_ctx, state, gpu, options);
        if let Some(storage) = storage {
            app.restore(storage);
        }
        app
    }

    /// The view kept from the last run, as the next opens it.
    fn saved_state(storage: Option<&dyn eframe::Storage>) -> Option<ViewState> {
        storage
            .and_then(|s| s.get_string(STORAGE_KEY))
            .and_then(|json| ViewState::from_json(&json).ok())
            .map(ViewState::restored)
    }

    /// The app opened at an address whose fragment is `fragment`: a link
    /// is read onto the view kept from the last run (a `state=` that
    /// cannot be read leaves that view, not the default one), and what it
    /// could not use is noted above the page.
    pub fn from_link(cc: &eframe::CreationContext<'_>, fragment: Option<&str>) -> Self {
        let saved = || Self::saved_state(cc.storage).unwrap_or_default();
        let (state, problems) = fragment.and_then(|f| Self::read_link(f, saved)).unzip();
        let mut app = Self::from_creation(cc, state);
        app.note_link_problems(&problems.unwrap_or_default());
        app
    }

    /// Writes what the app keeps between runs into `storage`.
    fn keep(&self, storage: &mut dyn eframe::Storage) {
        storage.set_string(STORAGE_KEY, self.state.to_json());
        storage.set_string(SHARE_ADDRESS_KEY, self.views.share.address.clone());
    }

    /// A query chosen in another document is dropped for the default one
    /// (it kept pointing at the old position after a switch to a pass-key
    /// document, instead of the query that retrieves the key).
    fn forget_stale_query(&mut self) {
        let now = QueryDocument::of(&self.state);
        if self.query_document.as_ref().is_some_and(|d| *d != now) {
            self.state.query = None;
        }
        self.query_document = Some(now);
    }

    /// What the app keeps beside its view state: the Share panel's address.
    pub fn restore(&mut self, storage: &dyn eframe::Storage) {
        if let Some(address) = storage.get_string(SHARE_ADDRESS_KEY) {
            self.views.share.address = address;
        }
    }

    /// The Share panel's address (the web page's, typed natively).
    pub fn share_address(&self) -> &str {
        &self.views.share.address
    }

    /// The tuning panel (its search run, for tests).
    pub fn tuning(&self) -> &views::tuning::TuningView {
        &self.views.tuning
    }

    /// Starts a search with the tuning panel's settings (what its Start
    /// button does; the web page's test hook calls it).
    pub fn start_search(&mut self) {
        let info = self.info();
        let spec = self.state.tune.spec(self.state.model, info, &self.state.pasted_text);
        self.views.tuning.start(&mut self.jobs, spec);
    }

    pub fn info(&self) -> ModelInfo {
        match self.state.model {
            ModelChoice::Custom => self
                .jobs
                .opened
                .model
                .as_ref()
                .map_or_else(|| bundled_info(ModelChoice::Nope), |m| m.info),
            m => bundled_info(m),
        }
    }

    /// Files dropped on the window: one text or scales file is read and
    /// applied (`dropped`); anything else opens as a model (natively the
    /// folder of what was dropped, on the web the files themselves).
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        while let Ok(file) = self.dropped.1.try_recv() {
            let info = self.info();
            self.drop_note = Some(match dropped::apply(&mut self.state, info, file) {
                Ok(note) => (note, false),
                Err(e) => (e, true),
            });
        }
        let files = ctx.input(|i| i.raw.dropped_files.clone());
        if files.is_empty() {
            return;
        }
        let names: Vec<String> = files.iter().map(|f| f.path().display().to_string()).collect();
        let kind = dropped::drop_kind(&names);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let p = files[0].path().to_path_buf();
            if kind == dropped::DropKind::Model {
                let dir = if p.is_dir() {
                    p
                } else {
                    p.parent().map(|d| d.to_path_buf()).unwrap_or(p)
                };
                self.jobs.open_model(compute::ModelSource::Folder(dir));
            } else {
                let bytes = std::fs::read(&p).map_err(|e| e.to_string());
                let _ = self.dropped.0.send(dropped::DroppedFile {
                    kind,
                    name: names[0].clone(),
                    bytes,
                });
                ctx.request_repaint();
            }
        }
        // Browsers read files asynchronously: read them all, then open
        // (or apply, next frame).
        #[cfg(target_arch = "wasm32")]
        {
            if kind != dropped::DropKind::Model {
                let sender = self.dropped.0.clone();
                let ctx = ctx.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let bytes = files[0].bytes_async().await;
                    let _ = sender.send(dropped::DroppedFile {
                        kind,
                        name: names[0].clone(),
                        bytes,
                    });
                    ctx.request_repaint();
                });
                return;
            }
            // (The model panel says "opening" from here.)
            let open = self.jobs.model_opener();
            wasm_bindgen_futures::spawn_local(async move {
                let (mut read, mut unread) = (Vec::new(), Vec::new());
                for (f, name) in files.iter().zip(names) {
                    match f.bytes_async().await {
                        Ok(bytes) => read.push((name, bytes)),
                        Err(e) => unread.push((name, e.to_string())),
                    }
                }
                open(compute::ModelSource::Files {
                    name: text::DROPPED_FILES.into(),
                    files: read,
                    unread,
                });
            });
        }
    }

    /// While jobs run the app repaints continuously (the progress bars
    /// move), so the time between frames is the frame time the user sees;
    /// idle, egui draws only on input and the interval means nothing.
    fn time_frame(&mut self, ui: &egui::Ui) {
        let now = ui.input(|i| i.time);
        self.started.get_or_insert(now);
        let busy = !self.jobs.is_idle();
        if let (Some(last), true) = (self.last_frame, busy) {
            let ms = ((now - last) * 1000.0) as f32;
            self.frame_ms = Some(match self.frame_ms {
                Some(avg) => 0.9 * avg + 0.1 * ms,
                None => ms,
            });
            let s = &mut self.frame_stats;
            s.busy_frames += 1;
            s.busy_max_ms = s.busy_max_ms.max(ms);
            s.busy_total_ms += ms as f64;
        }
        self.last_frame = busy.then_some(now);
        if busy {
            // Progress bars move; input still redraws at once.
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(50));
        }
    }

    /// The whole UI, inside `ui` (eframe's root, or a test harness).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        #[cfg(not(target_arch = "wasm32"))]
        let (t0, was_busy) = (std::time::Instant::now(), self.last_frame.is_some());
        self.show_views(ui);
        #[cfg(not(target_arch = "wasm32"))]
        if !self.jobs.is_idle() {
            let ms = t0.elapsed().as_secs_f32() * 1000.0;
            self.frame_stats.busy_ui_max_ms = self.frame_stats.busy_ui_max_ms.max(ms);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if self.options.log_timing && was_busy && self.jobs.is_idle() {
            let s = &self.frame_stats;
            let first = match self.first_plot_s {
                Some(t) => format!("{t:.2} s after the first frame"),
                None => "not drawn (another page)".to_string(),
            };
            eprintln!(
                "timing: first entropy plot {first}; frames while computing: {}, mean {:.1} ms, max {:.1} ms; the app's UI code at most {:.1} ms a frame",
                s.busy_frames,
                s.busy_total_ms / s.busy_frames.max(1) as f64,
                s.busy_max_ms,
                s.busy_ui_max_ms
            );
        }
    }

    fn show_views(&mut self, ui: &mut egui::Ui) {
        // The theme of the state (a button, a link). This frame began in
        // the old one: draw the next at once, all in the new.
        let theme = self.state.theme.preference();
        if ui.ctx().options(|o| o.theme_preference) != theme {
            ui.ctx().set_theme(theme);
            ui.ctx().request_repaint();
        }
        self.jobs.poll();
        self.take_dropped_files(ui.ctx());
        if std::mem::take(&mut self.jobs.opened.fresh) {
            self.state.model = ModelChoice::Custom;
        }
        if self.state.model == ModelChoice::Custom && self.jobs.opened.model.is_none() {
            self.state.model = ModelChoice::Nope;
        }
        let info = self.info();
        self.state.sanitize(info.layers, info.heads);
        self.forget_stale_query();
        let mut info = info;
        if self.views.tour.sync(&mut self.state, info) {
            // A step sets the model (and its lengths): in range for it.
            info = self.info();
            self.state.sanitize(info.layers, info.heads);
        }
        // The step this frame's views are drawn with (after `sync`).
        let step_at_start = self.state.tour;
        views::note_tour_step(
            ui.ctx(),
            self.state.tour,
            self.settled_for == self.state.tour && self.jobs.views_idle(),
        );
        shortcuts(ui.ctx(), &mut self.state, &mut self.views.input, info);
        if self.state.backend != self.jobs.backend() {
            self.jobs.set_backend(self.state.backend);
        }
        let mut keys = Keys::of(&self.state, info);
        // What the open step reads, whichever panels are hidden: the step
        // whose settings this frame's state has (a key may have moved the
        // walkthrough on since; its settings apply next frame).
        if let Some(step) = step_at_start.filter(|_| self.state.tour == step_at_start) {
            for key in tour::wanted(step, &self.state, &keys) {
                self.jobs.get(&key);
            }
        }
        self.views.tour.follow_up(&mut self.state, &self.jobs, &keys);
        // Asked for on the Explore page whatever its panels show (the token
        // count, the page's readiness); elsewhere only read: it would run
        // beside those pages' own work.
        let entropy = keys.entropy(&keys.ones);
        let entry = match self.state.tab {
            Tab::Explore => Some(self.jobs.get(&entropy)),
            _ => self.jobs.peek(&entropy),
        };
        let tokens = match entry.and_then(|e| e.result()) {
            Some(JobResult::Entropy(p)) => Some(p.length),
            _ => None,
        };
        // Until the user chooses a head, the explorer selects the one whose
        // curve closes in most on the ceiling past L (under plain NoPE): it
        // shows what the page is about.
        if self.state.tab == Tab::Explore {
            keys.suggested = tour::most_flattened_head(&self.jobs, &keys).map(|(l, h, _)| (l, h));
            if let Some((layer, head)) = keys.suggested {
                self.state.suggest_head(layer, head);
            }
        }
        if tokens.is_some() && self.first_plot_s.is_none() {
            let now = ui.input(|i| i.time);
            self.first_plot_s = Some(now - self.started.unwrap_or(now));
        }
        let frame_ms = self.options.show_frame_time.then_some(self.frame_ms).flatten();
        let hide = Hidden::of(&self.state);
        if !hide.status {
            let exported = self.exporter.message.clone();
            egui::Panel::bottom("status").show(ui, |ui| {
                self.views.status.ui(ui, &mut self.state, &mut self.jobs, frame_ms);
                if let Some(note) = &self.state_note {
                    ui.colored_label(crate::app::palette::ERROR, text::error(&note.message()));
                }
                // The last file dropped, the last export: done, or why not.
                for (m, failed) in self.drop_note.iter().chain(&exported) {
                    if *failed {
                        ui.colored_label(crate::app::palette::ERROR, text::error(m));
                    } else {
                        ui.label(m);
                    }
                }
            });
        }
        let NopeApp {
            state,
            jobs,
            views,
            link_note,
            ..
        } = self;
        // A walkthrough closed in the last frame (its own Close and Finish
        // are drawn after the page bar, which offers the view back).
        follow_tour(ui.ctx(), views, state);
        if let Some(note) = link_note.as_ref() {
            let mut dismissed = false;
            egui::Panel::top("link note").show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(ui.visuals().warn_fg_color, text::link_problems(note));
                    dismissed = ui.button(text::DISMISS).clicked();
                });
            });
            if dismissed {
                *link_note = None;
            }
        }
        if !hide.pages {
            egui::Panel::top("pages").show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    for (tab, label) in [
                        (Tab::Explore, text::TAB_EXPLORE),
                        (Tab::Tune, text::TAB_TUNE),
                        (Tab::Passkey, text::TAB_PASSKEY),
                    ] {
                        ui.selectable_value(&mut state.tab, tab, label);
                    }
                    ui.separator();
                    let mut open = state.tour.is_some();
                    if ui.toggle_value(&mut open, text::TOUR_OPEN).changed() {
                        state.tour = open.then_some(0);
                    }
                    ui.separator();
                    ui.toggle_value(&mut views.sharing, text::SHARE_OPEN);
                    start_over(ui, state, &mut views.started_over);
                    if !open && !back_from_tour(ui, state, &mut views.after_tour) {
                        tour_hint(ui);
                    }
                });
            });
            if views.sharing {
                egui::Panel::top("share").show(ui, |ui| views.share.ui(ui, state, keys.suggested));
            }
        }
        // A walkthrough opened in the page bar, before its panel applies
        // the step's settings.
        follow_tour(ui.ctx(), views, state);
        if state.tour.is_some() && !hide.tour {
            let search = views.tuning.seen();
            egui::Panel::top("tour").show(ui, |ui| views.tour.ui(ui, state, jobs, &keys, search));
        }
        // Text wraps at the page's width; what cannot (a grid's row, a
        // plot's least width) scrolls sideways on a phone instead of
        // being cut off at the screen's edge.
        let page = |ui: &mut egui::Ui, salt: &str, add: &mut dyn FnMut(&mut egui::Ui)| {
            egui::CentralPanel::default().show(ui, |ui| {
                egui::ScrollArea::both().id_salt(salt).show(ui, |ui| add(ui));
            });
        };
        match state.tab {
            Tab::Tune => page(ui, "tune scroll", &mut |ui| views.tuning.ui(ui, state, jobs, &keys)),
            Tab::Passkey => page(ui, "passkey scroll", &mut |ui| {
                views.passkey_lab.ui(ui, state, jobs, &keys)
            }),
            Tab::Explore => {
                let wide = ui.available_width() >= NARROW;
                // The page's sections, each drawn unless hidden, with a
                // line between those shown.
                let sections = |ui: &mut egui::Ui,
                                state: &mut ViewState,
                                jobs: &mut Jobs,
                                views: &mut Views,
                                order: &[Section]| {
                    let mut sep = Separators::default();
                    for section in order {
                        if section.hidden(&hide) {
                            continue;
                        }
                        sep.before(ui);
                        match section {
                            Section::Input => views.input.ui(ui, state, jobs, info, tokens),
                            Section::Scales => views.scales.ui(ui, state, info, views::ModelInView::of(state, jobs)),
                            Section::Map => {
                                let lit = tour::spot(state, tour::Spot::Map);
                                views::spotlight(ui, lit, |ui| views.map.ui(ui, state, jobs, &keys));
                            }
                            Section::Entropy => {
                                let lit = tour::spot(state, tour::Spot::Entropy);
                                views::spotlight(ui, lit, |ui| views.entropy.ui(ui, state, jobs, &keys));
                            }
                            Section::Against => views.against.ui(ui, state, jobs, &keys),
                            Section::Attention => {
                                let lit = tour::spot(state, tour::Spot::Attention);
                                views::spotlight(ui, lit, |ui| views.attention.ui(ui, state, jobs, &keys));
                            }
                        }
                    }
                };
                let any_control = !(hide.input && hide.scales && hide.map);
                if wide && any_control {
                    egui::Panel::left("controls")
                        .resizable(true)
                        .default_size(372.0)
                        .show(ui, |ui| {
                            egui::ScrollArea::vertical()
                                .id_salt("controls scroll")
                                .show(ui, |ui| sections(ui, state, jobs, views, &Section::CONTROLS));
                        });
                    page(ui, "figures scroll", &mut |ui| {
                        sections(ui, state, jobs, views, &Section::FIGURES)
                    });
                } else {
                    page(ui, "one column", &mut |ui| {
                        sections(ui, state, jobs, views, &Section::ONE_COLUMN)
                    });
                }
            }
        }
        self.exporter.update(ui.ctx());
        self.jobs.end_frame();
        // The walkthrough's spotlights scroll once the views' results are
        // in: a frame after that is asked for (nothing else brings one).
        let settled = (self.jobs.views_idle() && self.state.tour == step_at_start)
            .then_some(self.state.tour)
            .flatten();
        if settled.is_some() && settled != self.settled_for {
            ui.ctx().request_repaint();
        }
        self.settled_for = settled;
        // After the views asked for this frame's jobs, so "busy" counts them.
        self.time_frame(ui);
    }
}

/// Keys for whoever presents to a class. Page Down and Page Up (what a
/// presentation clicker sends) step the walkthrough. With no control
/// focused, the right and left arrows double and halve the length of the
/// page in view, and the space bar plays and pauses the explorer's
/// lengths. Never while a text field takes the keys.
fn shortcuts(ctx: &egui::Context, state: &mut ViewState, input: &mut views::input::InputView, info: ModelInfo) {
    use egui::Key;
    if ctx.text_edit_focused() {
        return;
    }
    // A key pressed with no modifier, not a held key's repeat (holding
    // the right arrow would run the length to the end, holding Page Down
    // through the walkthrough).
    let pressed = |k: Key| {
        ctx.input_mut(|i| {
            let before = i.events.len();
            i.events.retain(|e| {
                !matches!(e, egui::Event::Key { key, pressed: true, repeat: false, modifiers, .. }
                    if *key == k && modifiers.is_none())
            });
            i.events.len() != before
        })
    };
    if let Some(step) = state.tour.map(|s| s.min(tour::STEPS.len() - 1)) {
        if pressed(Key::PageDown) {
            state.tour = Some((step + 1).min(tour::STEPS.len() - 1));
        } else if pressed(Key::PageUp) {
            state.tour = Some(step.saturating_sub(1));
        }
    }
    if ctx.memory(|m| m.focused().is_some()) {
        return;
    }
    let length = match state.tab {
        Tab::Explore => Some(&mut state.length),
        Tab::Passkey => Some(&mut state.passkey_lab.length),
        Tab::Tune => None,
    };
    if let Some(length) = length {
        if pressed(Key::ArrowRight) {
            *length = (*length * 2).min(state::MAX_LENGTH);
        } else if pressed(Key::ArrowLeft) {
            *length = (*length / 2).max(state::MIN_LENGTH);
        }
    }
    // Play moves on in the input panel's frame: not where it is hidden.
    if state.tab == Tab::Explore && !Hidden::of(state).input && pressed(Key::Space) {
        input.toggle_play(state, info);
    }
}

/// Which panels the state hides (`ViewState::hide`, for embedding one view
/// in a course page).
#[derive(Clone, Copy)]
struct Hidden {
    pages: bool,
    tour: bool,
    status: bool,
    input: bool,
    scales: bool,
    map: bool,
    entropy: bool,
    attention: bool,
    against: bool,
}

impl Hidden {
    fn of(state: &ViewState) -> Self {
        let h = |p| state.hidden(p);
        Hidden {
            pages: h(state::PANEL_PAGES),
            tour: h(state::PANEL_TOUR),
            status: h(state::PANEL_STATUS),
            input: h(state::PANEL_INPUT),
            scales: h(state::PANEL_SCALES),
            map: h(state::PANEL_MAP),
            entropy: h(state::PANEL_ENTROPY),
            attention: h(state::PANEL_ATTENTION),
            against: h(state::PANEL_AGAINST),
        }
    }
}

/// A separator before every view but the first shown.
#[derive(Default)]
struct Separators(bool);

/// The explorer's sections.
#[derive(Clone, Copy)]
enum Section {
    Input,
    Scales,
    Map,
    Entropy,
    Against,
    Attention,
}

impl Section {
    /// Left of a wide page.
    const CONTROLS: [Section; 3] = [Section::Input, Section::Scales, Section::Map];
    /// Right of a wide page. The sweep against length (the result in
    /// three plots) right under the entropy, before the selected head's
    /// detail: under the tall pooled maps no one saw it.
    const FIGURES: [Section; 3] = [Section::Entropy, Section::Against, Section::Attention];
    /// A narrow page (a phone, an embed): the entropy plot right under
    /// the input it reads and over the scales that change it, so that a
    /// short window shows a figure, not only controls.
    const ONE_COLUMN: [Section; 6] = [
        Section::Input,
        Section::Entropy,
        Section::Scales,
        Section::Map,
        Section::Against,
        Section::Attention,
    ];

    fn hidden(self, hide: &Hidden) -> bool {
        match self {
            Section::Input => hide.input,
            Section::Scales => hide.scales,
            Section::Map => hide.map,
            Section::Entropy => hide.entropy,
            Section::Against => hide.against,
            Section::Attention => hide.attention,
        }
    }
}

impl Separators {
    fn before(&mut self, ui: &mut egui::Ui) {
        if self.0 {
            ui.separator();
        }
        self.0 = true;
    }
}

/// How strong the weak text (hints, notes) is, as a share of the text's
/// colour over the background.
pub const WEAK_TEXT_ALPHA: f32 = 0.8;

impl eframe::App for NopeApp {
    /// On a touch screen, a touch cancelled before the first frame: egui
    /// then knows the screen takes touch, and a drag scrolls the page from
    /// the first swipe (a drag then selects no text, as egui does on touch
    /// screens).
    fn raw_input_hook(&mut self, ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        if self.options.touch_screen && !ctx.input(|i| i.has_touch_screen()) {
            raw_input.events.insert(
                0,
                egui::Event::Touch {
                    device_id: egui::TouchDeviceId(0),
                    id: egui::TouchId(u64::MAX),
                    phase: egui::TouchPhase::Cancel,
                    pos: egui::Pos2::ZERO,
                    force: None,
                },
            );
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
        #[cfg(target_arch = "wasm32")]
        web::after_frame(self, ui.ctx());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.keep(storage);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(mut file) = self.state_file.take() {
            self.keep(&mut file);
            match file.write() {
                Ok(()) => {
                    // A failure said before is over.
                    if matches!(self.state_note, Some(StateNote::NotSaved(_))) {
                        self.state_note = None;
                    }
                }
                Err(e) => self.state_note = Some(StateNote::NotSaved(e.to_string())),
            }
            self.state_file = Some(file);
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(&mut *self)
    }
}

/// Opens the desktop app (what `nopescope` with no subcommand does). The
/// environment variable `NOPESCOPE_STATE` (the state as JSON, as in the
/// web page's URL) opens a given view instead of the saved one.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_native() -> Result<(), String> {
    let state = match std::env::var("NOPESCOPE_STATE") {
        Ok(json) => Some(ViewState::from_link_json(&json).map_err(|e| format!("NOPESCOPE_STATE: {e}"))?),
        Err(_) => None,
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(text::APP_TITLE)
            .with_inner_size([1280.0, 860.0])
            .with_min_inner_size([360.0, 400.0]),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "nopescope",
        options,
        Box::new(move |cc| {
            let (file, note) = match saved::StateFile::default_path() {
                Some(path) => {
                    let (file, note) = saved::StateFile::open_or_set_aside(path);
                    (Some(file), note)
                }
                None => (None, None),
            };
            if let Some(note) = &note {
                eprintln!("nopescope: {}", StateNote::Read(note.clone()).message());
            }
            Ok(Box::new(NopeApp::from_creation_with_file(cc, state, file, note)))
        }),
    )
    .map_err(|e| e.to_string())
}

/// "Start over" beside Share, and its Undo while the state is the one it
/// made (the head a page selects by itself aside).
fn start_over(ui: &mut egui::Ui, state: &mut ViewState, last: &mut Option<(ViewState, ViewState)>) {
    forget_if_changed(last, state);
    if let Some((before, _)) = last {
        if ui
            .button(text::UNDO_START_OVER)
            .on_hover_text(text::UNDO_START_OVER_HELP)
            .clicked()
        {
            *state = before.clone();
            *last = None;
        }
    } else if ui
        .button(text::START_OVER)
        .on_hover_text(text::START_OVER_HELP)
        .clicked()
    {
        let before = std::mem::replace(state, state.started_over());
        *last = Some((before, state.clone()));
    }
}

/// Drops an offer to go back to `last`'s first state once the view has
/// changed from its second (the head a page selected by itself since is
/// no change).
fn forget_if_changed(last: &mut Option<(ViewState, ViewState)>, state: &ViewState) {
    if let Some((_, after)) = last {
        if !state.head_chosen && !after.head_chosen {
            (after.layer, after.head) = (state.layer, state.head);
        }
        if state != after {
            *last = None;
        }
    }
}

/// Notes the view when the walkthrough opens, and once it closes offers it
/// back (`back_from_tour`) where the steps changed it.
fn follow_tour(ctx: &egui::Context, views: &mut Views, state: &ViewState) {
    let touring = state.tour.is_some();
    if touring && !views.touring {
        views.before_tour = Some(ViewState {
            tour: None,
            ..state.clone()
        });
        views.after_tour = None;
    } else if !touring && views.touring {
        views.after_tour = views
            .before_tour
            .take()
            .filter(|before| before != state)
            .map(|before| (before, state.clone()));
        // Closed in the page bar, this frame has drawn it already: the
        // offer shows in the next, which a browser draws only when asked.
        ctx.request_repaint();
    }
    views.touring = touring;
}

/// After the walkthrough, while nothing changed since it closed: a button
/// that puts back the view as it was before it. Whether it was shown.
fn back_from_tour(ui: &mut egui::Ui, state: &mut ViewState, last: &mut Option<(ViewState, ViewState)>) -> bool {
    forget_if_changed(last, state);
    let Some((before, _)) = last else { return false };
    if ui
        .button(text::BACK_FROM_TOUR)
        .on_hover_text(text::BACK_FROM_TOUR_HELP)
        .clicked()
    {
        // The view only: the engine, theme, embedding and the user's
        // text stay as they are now (as Start over keeps them).
        *state = ViewState {
            backend: state.backend,
            theme: state.theme,
            hide: std::mem::take(&mut state.hide),
            pasted_text: std::mem::take(&mut state.pasted_text),
            ..before.clone()
        };
        *last = None;
    }
    true
}

/// The walkthrough's hint beside the tabs: the short form where the whole
/// one would wrap under them (a phone, a narrow embed), none where even
/// that would.
fn tour_hint(ui: &mut egui::Ui) {
    for hint in [text::TOUR_HINT, text::TOUR_HINT_SHORT] {
        let galley = egui::WidgetText::from(egui::RichText::new(hint).weak()).into_galley(
            ui,
            Some(egui::TextWrapMode::Extend),
            f32::INFINITY,
            egui::TextStyle::Body,
        );
        if galley.size().x <= ui.available_size_before_wrap().x {
            ui.add(egui::Label::new(galley).wrap_mode(egui::TextWrapMode::Extend));
            return;
        }
    }
}
