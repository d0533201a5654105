//! The tuning panel: the temperature search of `lab::search` (uniform and
//! per head) run on the app's engine, with its live loss curve, the layer
//! x head map of the scales as they change, its rate and time left, pause,
//! resume and cancel; applying, saving and loading the scales found; the
//! presets it is compared with; setting B for the explorer's comparison, a
//! pass-key comparison of the two settings, and each head's scale against
//! its entropy at L.
//!
//! The search runs as pinned jobs (`Jobs::get_pinned`): it goes on while
//! the user looks at another page. A pause ends the job; its last
//! checkpoint (in the last partial report) starts the next one.

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints, Points};

use super::{show_entry_status, Keys};
use crate::app::jobs::{Entry, InputAt, InputKey, JobKey, JobResult, Jobs};
use crate::app::palette::Look;
use crate::app::search_job::{
    compare_lengths, presets, RuleChoice, ScalesSetting, SearchKey, SearchKind, SearchReport, SearchSpec,
    TuneObjective, COMPARE_TRIALS, DEFAULT_BATCH, DEFAULT_STEPS,
};
use crate::app::state::{ViewState, MAX_LENGTH, MIN_LENGTH, PANEL_COMPARE, PANEL_PRESETS, PANEL_SEARCH};
use crate::app::text;
use crate::app::tour::{self, SearchSeen, Spot};
use crate::app::views::scales::load_scales;
use crate::app::{export, palette};

/// Width of the search's settings column and of the loss curve, in points.
const SETTINGS_WIDTH: f32 = 400.0;
const LOSS_WIDTH: f32 = 360.0;
/// Side of a cell of the scale map, in points.
const CELL: f32 = 40.0;
/// The scale map's colours run from 1 to at least this.
const MAP_TOP: f32 = 2.0;

pub use crate::app::search_job::Phase;

/// One search run: its segments' spec, the segment running, and the last
/// report seen.
pub struct SearchRun {
    pub spec: SearchSpec,
    run: u64,
    key: JobKey,
    pub phase: Phase,
    pub report: Option<SearchReport>,
    /// (egui time, steps done) at the first report of this segment, and
    /// the steps per second since.
    clock: Option<(f64, usize)>,
    rate: Option<f64>,
    /// "Step": pause again once this many steps are done.
    pause_at: Option<usize>,
}

impl SearchRun {
    /// Starts the next segment from the last checkpoint.
    fn resume(&mut self, jobs: &mut Jobs) {
        let from = self.report.as_ref().map(|r| r.checkpoint.clone());
        self.key = JobKey::Search(SearchKey {
            spec: self.spec.clone(),
            run: self.run,
            from,
        });
        // A segment the status bar's Cancel stopped before its first step
        // has this same key, kept as cancelled.
        jobs.cancel(&self.key);
        jobs.get_pinned(&self.key);
        self.phase = Phase::Running;
        self.clock = None;
        self.rate = None;
    }

    /// Ends the running segment, keeping its last checkpoint.
    fn pause(&mut self, jobs: &mut Jobs) {
        jobs.cancel(&self.key);
        self.phase = Phase::Paused;
        self.pause_at = None;
    }

    fn done(&self) -> usize {
        self.report.as_ref().map_or(0, |r| r.done)
    }
}

#[derive(Default)]
pub struct TuningView {
    pub run: Option<SearchRun>,
    runs: u64,
    load_source: String,
    /// The last load: what happened, or its error (saves report in the
    /// status bar, as every export).
    outcome: Option<Result<String, String>>,
    compare_passkey: bool,
    show_json: bool,
}

impl TuningView {
    /// Takes in the running segment's progress.
    fn poll(&mut self, jobs: &mut Jobs, now: f64) {
        let Some(run) = &mut self.run else { return };
        if run.phase != Phase::Running {
            return;
        }
        let take = |run: &mut SearchRun, r: &JobResult| {
            if let JobResult::Search(rep) = r {
                let done = rep.done;
                match run.clock {
                    None => run.clock = Some((now, done)),
                    Some((t0, d0)) if done > d0 && now > t0 => run.rate = Some((done - d0) as f64 / (now - t0)),
                    _ => {}
                }
                run.report = Some(rep.clone());
            }
        };
        match jobs.peek(&run.key).cloned() {
            Some(Entry::Running { partial, .. }) => {
                if let Some(p) = partial {
                    take(run, &p);
                }
                if run.pause_at.is_some_and(|n| run.done() >= n) {
                    run.pause(jobs);
                }
            }
            Some(Entry::Done(r)) => {
                take(run, &r);
                run.phase = Phase::Finished;
                jobs.unpin(&run.key);
            }
            // The status bar's Cancel stops every job: a pause here.
            Some(Entry::Stopped(partial)) => {
                if let Some(p) = partial {
                    take(run, &p);
                }
                run.phase = Phase::Paused;
                jobs.unpin(&run.key);
            }
            Some(Entry::Failed(e)) => {
                run.phase = Phase::Failed(e);
                jobs.unpin(&run.key);
            }
            // Gone from the cache (the engine was switched): a pause.
            None => run.phase = Phase::Paused,
        }
    }

    /// The current run, as the walkthrough's search step sees it.
    pub fn seen(&self) -> Option<SearchSeen<'_>> {
        let run = self.run.as_ref()?;
        Some(SearchSeen {
            spec: &run.spec,
            report: run.report.as_ref(),
            phase: &run.phase,
        })
    }

    /// The losses of the current run so far (per step for a head search,
    /// per point for a uniform one), and whether it finished.
    pub fn losses(&self) -> Option<(Vec<f64>, bool)> {
        let report = self.run.as_ref()?.report.as_ref()?;
        let losses = match report.checkpoint.as_ref() {
            crate::app::search_job::Checkpoint::Heads(h) => h.losses.clone(),
            crate::app::search_job::Checkpoint::Uniform(points) => points.iter().map(|p| p.1).collect(),
        };
        Some((losses, report.finished))
    }

    pub fn start(&mut self, jobs: &mut Jobs, spec: SearchSpec) {
        if let Some(old) = &self.run {
            jobs.cancel(&old.key);
        }
        self.runs += 1;
        let key = JobKey::Search(SearchKey {
            spec: spec.clone(),
            run: self.runs,
            from: None,
        });
        jobs.get_pinned(&key);
        self.run = Some(SearchRun {
            spec,
            run: self.runs,
            key,
            phase: Phase::Running,
            report: None,
            clock: None,
            rate: None,
            pause_at: None,
        });
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        let now = ui.input(|i| i.time);
        self.poll(jobs, now);
        ui.heading(text::TUNE_HEADING);
        ui.label(text::TUNE_HELP);
        ui.add_space(6.0);
        ui.horizontal_wrapped(|ui| {
            ui.label(text::IN_USE);
            ui.strong(super::in_use_name(state, &keys.info));
        });
        super::scales_file_notes(ui, &state.scales, super::ModelInView::of(state, jobs));
        // (An embedding may show some of these.)
        if !state.hidden(PANEL_SEARCH) {
            ui.separator();
            self.search_ui(ui, state, jobs, keys);
            ui.separator();
            self.result_ui(ui, state, keys);
        }
        if !state.hidden(PANEL_PRESETS) {
            ui.separator();
            presets_ui(ui, state, keys);
        }
        if !state.hidden(PANEL_COMPARE) {
            ui.separator();
            self.compare_ui(ui, state, jobs, keys);
            ui.separator();
            self.scatter_ui(ui, state, jobs, keys);
        }
    }

    /// The settings and controls on the left, the live curve and map on
    /// the right; in a narrower window the curve and map go below them,
    /// and one under the other when narrower still.
    fn search_ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::SEARCH_HEADING);
        let heads = self
            .run
            .as_ref()
            .and_then(|r| r.report.as_ref())
            .map_or(keys.info.heads, |r| r.spec.heads);
        // (The walkthrough's search step outlines the curve and the map.)
        let lit_objective = tour::spot(state, Spot::Objective);
        let lit_scales = tour::spot(state, Spot::Scales);
        let pad = if state.tour.is_some() {
            2.0 * super::SPOTLIGHT_PAD
        } else {
            0.0
        };
        let map_width = 56.0 + heads as f32 * (CELL + 8.0) + pad;
        let width = ui.available_width();
        // The map over the searched model's heads (the model in view may
        // have changed since); a click on a cell selects that head for
        // the other pages.
        let selected = (state.layer, state.head);
        let mut clicked = None;
        let mut live = |ui: &mut egui::Ui, report: &SearchReport| {
            ui.vertical(|ui| super::spotlight_fit(ui, lit_objective, |ui| loss_plot(ui, report)));
            ui.add_space(12.0);
            ui.vertical(|ui| {
                super::spotlight_fit(ui, lit_scales, |ui| {
                    ui.label(text::SCALE_MAP_HEADING);
                    let on = scale_map(ui, report, selected);
                    clicked = clicked.or(on);
                });
            });
        };
        if width >= SETTINGS_WIDTH + LOSS_WIDTH + map_width + 48.0 {
            ui.horizontal_top(|ui| {
                ui.vertical(|ui| {
                    ui.set_max_width(SETTINGS_WIDTH);
                    self.controls_ui(ui, state, jobs, keys);
                });
                if let Some(report) = self.run.as_ref().and_then(|r| r.report.as_ref()) {
                    ui.add_space(12.0);
                    live(ui, report);
                }
            });
        } else {
            ui.vertical(|ui| {
                ui.set_max_width(SETTINGS_WIDTH.min(width));
                self.controls_ui(ui, state, jobs, keys);
            });
            if let Some(report) = self.run.as_ref().and_then(|r| r.report.as_ref()) {
                if width >= LOSS_WIDTH + map_width + 24.0 {
                    ui.horizontal_top(|ui| live(ui, report));
                } else {
                    live(ui, report);
                }
            }
        }
        // (A map of another model's heads shows, but selects nothing.)
        let fits = self
            .run
            .as_ref()
            .and_then(|r| r.report.as_ref())
            .is_some_and(|r| r.fits(state.model, keys.info));
        if let Some((l, h)) = clicked.filter(|_| fits) {
            state.choose_head(l, h);
        }
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        let info = keys.info;
        let t = &mut state.tune;
        let running = self.run.as_ref().is_some_and(|r| r.phase == Phase::Running);
        ui.add_enabled_ui(!running, |ui| {
            egui::Grid::new("search settings")
                .num_columns(2)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    ui.label(text::SEARCH_KIND).on_hover_text(text::SEARCH_KIND_HINT);
                    ui.horizontal_wrapped(|ui| {
                        ui.selectable_value(&mut t.kind, SearchKind::Heads, text::KIND_HEADS);
                        ui.selectable_value(&mut t.kind, SearchKind::Uniform, text::KIND_UNIFORM);
                    });
                    ui.end_row();
                    ui.label(text::OBJECTIVE).on_hover_text(text::OBJECTIVE_HINT);
                    ui.horizontal_wrapped(|ui| {
                        ui.selectable_value(&mut t.objective, TuneObjective::Passkey, text::OBJECTIVE_PASSKEY);
                        ui.selectable_value(&mut t.objective, TuneObjective::Text, text::OBJECTIVE_TEXT);
                        ui.selectable_value(&mut t.objective, TuneObjective::Pasted, text::OBJECTIVE_PASTED)
                            .on_hover_text(text::OBJECTIVE_PASTED_HINT);
                    });
                    ui.end_row();
                    let ratio = text::target_length_note(t.length, info.training_length);
                    labelled_drag(
                        ui,
                        text::TARGET_LENGTH,
                        text::TARGET_LENGTH_HINT,
                        egui::DragValue::new(&mut t.length)
                            .range(MIN_LENGTH..=MAX_LENGTH)
                            .speed(8.0),
                        Some(ratio),
                    );
                    if t.kind == SearchKind::Heads {
                        labelled_drag(
                            ui,
                            text::STEPS,
                            text::STEPS_HINT,
                            egui::DragValue::new(&mut t.steps).range(1..=10_000),
                            None,
                        );
                    }
                    labelled_drag(
                        ui,
                        if t.kind == SearchKind::Heads {
                            text::BATCH
                        } else {
                            text::DOCUMENTS
                        },
                        if t.kind == SearchKind::Heads {
                            text::BATCH_HINT
                        } else {
                            text::DOCUMENTS_HINT
                        },
                        egui::DragValue::new(&mut t.batch).range(1..=64),
                        None,
                    );
                });
            // What a first search need not touch, folded; its header says
            // the values in use.
            let heads = t.kind == SearchKind::Heads;
            let summary = text::more_settings(heads.then_some((t.lr, t.init)), rule_name(t.rule));
            egui::CollapsingHeader::new(super::header_title(ui, summary))
                .id_salt("search more settings")
                .show(ui, |ui| {
                    egui::Grid::new("search more settings grid")
                        .num_columns(2)
                        .spacing([12.0, 6.0])
                        .show(ui, |ui| {
                            if heads {
                                labelled_drag(
                                    ui,
                                    text::LEARNING_RATE,
                                    text::LEARNING_RATE_HINT,
                                    egui::DragValue::new(&mut t.lr).range(0.001..=1.0).speed(0.005),
                                    None,
                                );
                                labelled_drag(
                                    ui,
                                    text::INIT,
                                    text::INIT_HINT,
                                    egui::DragValue::new(&mut t.init).range(1.0..=4.0).speed(0.01),
                                    None,
                                );
                            }
                            ui.label(text::RULE).on_hover_text(text::RULE_HINT);
                            ui.horizontal_wrapped(|ui| {
                                for rule in [RuleChoice::Constant, RuleChoice::LogN, RuleChoice::Fitted] {
                                    ui.selectable_value(&mut t.rule, rule, rule_name(rule));
                                }
                            });
                            ui.end_row();
                        });
                });
        });
        let spec = state.tune.spec(state.model, info, &state.pasted_text);
        ui.label(expected_time(&spec));
        // "Your text" with no text: nothing to start (said here, not after
        // a click).
        let no_text = state.tune.objective == TuneObjective::Pasted && state.pasted_text.trim().is_empty();
        if no_text {
            ui.colored_label(palette::ERROR, text::OBJECTIVE_PASTED_EMPTY);
        }
        let lit = tour::spot(state, Spot::Start);
        super::spotlight(ui, lit, |ui| {
            ui.horizontal_wrapped(|ui| {
                let phase = self.run.as_ref().map(|r| r.phase.clone());
                let finished = phase == Some(Phase::Finished);
                if ui
                    .add_enabled(
                        phase != Some(Phase::Running) && !no_text,
                        egui::Button::new(text::START_SEARCH),
                    )
                    .on_hover_text(if finished {
                        text::START_SEARCH_AGAIN_HOVER
                    } else {
                        text::START_SEARCH_HOVER
                    })
                    .on_disabled_hover_text(if no_text {
                        text::OBJECTIVE_PASTED_EMPTY
                    } else {
                        text::SEARCH_RUNNING
                    })
                    .clicked()
                {
                    self.start(jobs, spec.clone());
                }
                // With no run to go on with, Step starts one that pauses after
                // its first step; not beside a finished run's result, where
                // it read as "one step more" and replaced the result.
                let resumable = matches!(phase, Some(Phase::Running | Phase::Paused));
                if !resumable
                    && !finished
                    && ui
                        .add_enabled(!no_text, egui::Button::new(text::STEP_SEARCH))
                        .on_hover_text(text::STEP_NEW_SEARCH_HOVER)
                        .on_disabled_hover_text(text::OBJECTIVE_PASTED_EMPTY)
                        .clicked()
                {
                    self.start(jobs, spec.clone());
                    if let Some(run) = &mut self.run {
                        run.pause_at = Some(1);
                    }
                }
                if let Some(run) = &mut self.run {
                    if run.phase == Phase::Running && ui.button(text::PAUSE).clicked() {
                        run.pause(jobs);
                    } else if run.phase == Phase::Paused {
                        let resume = ui.button(text::RESUME).clicked();
                        let step = ui
                            .button(text::STEP_SEARCH)
                            .on_hover_text(text::STEP_SEARCH_HOVER)
                            .clicked();
                        if resume || step {
                            run.pause_at = step.then(|| run.done() + 1);
                            run.resume(jobs);
                        }
                    }
                    if matches!(run.phase, Phase::Running | Phase::Paused) && ui.button(text::CANCEL_SEARCH).clicked() {
                        // Nothing of the run was applied: the scales in use stay.
                        jobs.cancel(&run.key);
                        self.run = None;
                    }
                }
            })
        });
        let Some(run) = &self.run else {
            let length = crate::app::search_job::TuneSettings::default().length;
            ui.label(text::no_search_yet(
                length,
                keys.info.training_length,
                DEFAULT_STEPS,
                DEFAULT_BATCH,
            ));
            return;
        };
        let (done, planned) = run
            .report
            .as_ref()
            .map_or((0, run.spec.planned()), |r| (r.done, r.planned));
        match &run.phase {
            Phase::Failed(e) => {
                ui.colored_label(palette::ERROR, text::error(e));
            }
            phase => {
                let left = run
                    .rate
                    .filter(|r| *r > 0.0)
                    .map(|r| (planned - done.min(planned)) as f64 / r);
                let line = text::search_status(
                    run.spec.kind == SearchKind::Uniform,
                    done,
                    planned,
                    run.rate,
                    left,
                    phase == &Phase::Paused,
                    phase == &Phase::Finished,
                    run.report.as_ref().and_then(SearchReport::latest_loss),
                );
                ui.add(
                    egui::ProgressBar::new(done as f32 / planned.max(1) as f32)
                        .text(line)
                        .desired_width(ui.available_width().min(SETTINGS_WIDTH)),
                );
            }
        }
    }

    fn result_ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, keys: &Keys) {
        let info = keys.info;
        let found = self
            .run
            .as_ref()
            .filter(|r| matches!(r.phase, Phase::Paused | Phase::Finished))
            .and_then(|r| r.report.as_ref());
        if let Some(report) = found {
            let setting = report.setting();
            ui.horizontal_wrapped(|ui| {
                ui.label(text::RESULT);
                ui.strong(&setting.name);
            });
            // A result of another model (the user switched models during
            // or after the search) is saved for that model, not applied here.
            let fits = report.fits(state.model, info);
            if !fits {
                ui.label(egui::RichText::new(text::RESULT_OTHER_MODEL).color(ui.visuals().warn_fg_color));
            }
            ui.horizontal_wrapped(|ui| {
                if ui.add_enabled(fits, egui::Button::new(text::APPLY_RESULT)).clicked() {
                    setting.apply_to(&mut state.scales, info.heads);
                }
                if ui.add_enabled(fits, egui::Button::new(text::RESULT_AS_B)).clicked() {
                    state.compare = Some(setting.clone());
                }
                ui.checkbox(&mut self.show_json, text::SHOW_JSON);
            });
            let json = setting.to_json(report.spec.heads, Some(report.provenance()));
            ui.horizontal_wrapped(|ui| {
                if ui
                    .button(text::SAVE_SCALES)
                    .on_hover_text(text::SAVE_SCALES_HELP)
                    .clicked()
                {
                    export::save_file(
                        ui.ctx(),
                        "head_scales.json",
                        json.clone().into_bytes(),
                        "application/json",
                    );
                }
            });
            if self.show_json {
                ui.horizontal(|ui| {
                    if ui.button(text::COPY_JSON).clicked() {
                        super::copy_to_clipboard(ui.ctx(), json.clone(), text::COPY_JSON);
                    }
                    super::show_copy_outcome(ui, text::COPY_JSON);
                });
                let mut shown = json.as_str();
                ui.add(
                    egui::TextEdit::multiline(&mut shown)
                        .code_editor()
                        .desired_rows(8)
                        .desired_width(f32::INFINITY),
                );
            }
        }
        ui.horizontal_wrapped(|ui| {
            let label = ui.label(text::LOAD_SOURCE);
            ui.add(
                egui::TextEdit::singleline(&mut self.load_source)
                    .hint_text(text::NO_SCALES_SOURCE)
                    .desired_width(320f32.min(ui.available_width())),
            )
            .labelled_by(label.id);
            if ui.button(text::LOAD_AND_APPLY).clicked() {
                self.outcome = Some(load_scales(&self.load_source, info).map(|loaded| {
                    let name = loaded.name.clone();
                    state.scales.file = Some(loaded);
                    state.scales.use_file = true;
                    text::loaded_from(&name)
                }));
            }
        });
        match &self.outcome {
            Some(Ok(m)) => {
                ui.label(m);
            }
            Some(Err(e)) => {
                ui.colored_label(palette::ERROR, text::error(e));
            }
            None => {}
        }
    }

    fn compare_ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::COMPARE_HEADING);
        ui.label(text::COMPARE_HELP);
        ui.horizontal_wrapped(|ui| {
            ui.label(text::SETTING_B_IS);
            match &state.compare {
                Some(b) => {
                    ui.strong(&b.name);
                    if ui.button(text::CLEAR_B).clicked() {
                        state.compare = None;
                    }
                }
                None => {
                    ui.strong(text::unscaled(keys.info.rope));
                }
            }
        });
        ui.checkbox(&mut self.compare_passkey, text::COMPARE_PASSKEY);
        if !self.compare_passkey {
            return;
        }
        let b_name = state
            .compare
            .as_ref()
            .map_or(text::unscaled(keys.info.rope).to_string(), |b| b.name.clone());
        let b_key = keys.compare.clone().unwrap_or_else(|| keys.ones.clone());
        let rows = [
            (b_name, b_key, palette::NOPE),
            (text::CURRENT_SCALES.to_string(), keys.scales.clone(), palette::SCALED),
        ];
        let lengths = compare_lengths(keys.info.training_length);
        let mut results = Vec::new();
        // Each finished comparison's points (length, accuracy), for export.
        let mut finished = Vec::new();
        for (name, scales, colour) in &rows {
            let key = JobKey::PasskeyCompare {
                model: state.model,
                scales: scales.clone(),
                trials: COMPARE_TRIALS,
            };
            let entry = jobs.get(&key).clone();
            if !matches!(entry, Entry::Done(_)) {
                ui.horizontal(|ui| {
                    ui.label(name);
                    show_entry_status(ui, &entry);
                });
            }
            let acc = match entry.result() {
                Some(JobResult::PasskeyCompare(r)) => {
                    if matches!(entry, Entry::Done(_)) {
                        let points = r.lengths.iter().zip(&r.accuracy).map(|(&n, &a)| [n as f64, a]);
                        finished.push((name.clone(), *colour, points.collect::<Vec<_>>()));
                    }
                    r.accuracy.clone()
                }
                _ => Vec::new(),
            };
            results.push((name.clone(), *colour, acc));
        }
        ui.label(text::compare_trials(COMPARE_TRIALS));
        let table = egui::Grid::new("passkey comparison")
            .striped(true)
            .spacing([18.0, 4.0])
            .show(ui, |ui| {
                ui.label(text::SETTING);
                for &l in &lengths {
                    ui.label(text::length_column(l, l / keys.info.training_length.max(1)));
                }
                ui.end_row();
                for (name, colour, acc) in &results {
                    ui.colored_label(*colour, name);
                    for i in 0..lengths.len() {
                        ui.label(acc.get(i).map_or("…".to_string(), |a| text::percent(*a)));
                    }
                    ui.end_row();
                }
            });
        // The table as a figure (accuracy against length, L marked), once
        // both settings have all their numbers.
        if finished.len() == rows.len() {
            let l = keys.info.training_length;
            export::buttons(ui, table.response.rect, || export::Figure {
                stem: "passkey_comparison".into(),
                title: text::compare_title(COMPARE_TRIALS),
                x_label: text::LENGTH_AXIS.into(),
                y_label: text::PASSKEY_AXIS.into(),
                series: finished
                    .iter()
                    .map(|(name, colour, points)| export::Series {
                        name: name.clone(),
                        look: Look::line(*colour),
                        points: points.clone(),
                    })
                    .collect(),
                marks: vec![export::Mark {
                    name: text::TRAINING_LENGTH.into(),
                    x: l as f64,
                    look: Look::training_length(),
                }],
                log_x: true,
                bin: false,
            });
        }
    }

    fn scatter_ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::SCATTER_HEADING);
        ui.label(text::SCATTER_HELP);
        if keys.info.training_length > crate::app::state::MAX_LENGTH {
            ui.label(text::lengths_left_out(crate::app::state::MAX_LENGTH));
            return;
        }
        let (layers, heads) = (keys.info.layers, keys.info.heads);
        let found = self
            .run
            .as_ref()
            .and_then(|r| r.report.as_ref())
            .filter(|r| r.fits(state.model, keys.info));
        let (name, scales) = match found {
            Some(r) => (text::SCATTER_OF_SEARCH, r.scales.clone()),
            None => (text::SCATTER_OF_CURRENT, state.scales.values(layers, heads)),
        };
        let key = JobKey::Entropy {
            at: InputAt {
                model: state.model,
                input: InputKey::Validation,
                length: keys.info.training_length,
            },
            scales: keys.ones.clone(),
        };
        let entry = jobs.get(&key).clone();
        let Some(JobResult::Entropy(p)) = entry.result() else {
            show_entry_status(ui, &entry);
            return;
        };
        let entropy = p.head_means();
        let points: Vec<[f64; 2]> = entropy
            .iter()
            .zip(&scales)
            .map(|(&e, &s)| [e as f64, s as f64])
            .collect();
        let hover = points.clone();
        let exported = points.clone();
        ui.label(name);
        let plot = super::nice_x(super::nice_y(Plot::new("scale against entropy")), false)
            .height(220.0)
            .width(ui.available_width().min(520.0))
            .x_axis_label(text::ENTROPY_AT_L_AXIS)
            .y_axis_label(text::SCALE_AXIS)
            .include_y(1.0)
            // Room for the markers at the ends (the scales often sit at
            // their bounds).
            .set_margin_fraction(egui::vec2(0.05, 0.12))
            .label_formatter(move |pos| {
                let p = super::hovered(pos);
                let nearest = hover
                    .iter()
                    .enumerate()
                    .min_by(|a, b| {
                        let d = |q: &[f64; 2]| (q[0] - p.x).powi(2) + (q[1] - p.y).powi(2);
                        d(a.1).total_cmp(&d(b.1))
                    })
                    .map(|(i, q)| text::scatter_hover(&text::head_name(i / heads, i % heads), q[1], q[0]));
                nearest
            })
            .show(ui, |plot| {
                plot.points(
                    Points::new(text::SCALE_AXIS, PlotPoints::from(points))
                        .color(palette::SCALED)
                        .radius(4.0),
                );
            });
        // (One marker per head, in layer-major order, as the CSV lists
        // them.)
        export::buttons(ui, plot.response.rect, || export::Figure {
            stem: format!("nopescope-scale-against-entropy-{}", keys.info.training_length),
            title: text::SCATTER_HEADING.into(),
            x_label: text::ENTROPY_AT_L_AXIS.into(),
            y_label: text::SCALE_AXIS.into(),
            series: vec![export::Series {
                name: name.to_string(),
                look: Look::markers(palette::SCALED),
                points: exported,
            }],
            marks: Vec::new(),
            log_x: false,
            bin: false,
        });
    }
}

/// A rule's name as its button says it.
fn rule_name(rule: RuleChoice) -> &'static str {
    match rule {
        RuleChoice::Constant => text::RULE_CONSTANT,
        RuleChoice::LogN => text::RULE_LOG_N,
        RuleChoice::Fitted => text::RULE_FITTED,
    }
}

/// A label and its widget in a grid row, the widget named by the label
/// (kittest and screen readers find it by that name).
fn labelled_drag(ui: &mut egui::Ui, name: &str, hint: &str, widget: egui::DragValue<'_>, note: Option<String>) {
    let label = ui.label(name).on_hover_text(hint);
    ui.horizontal(|ui| {
        ui.add(widget).labelled_by(label.id).on_hover_text(hint);
        if let Some(n) = note {
            ui.label(n);
        }
    });
    ui.end_row();
}

/// The objective against step (per head) or against s (uniform).
fn loss_plot(ui: &mut egui::Ui, report: &SearchReport) {
    let uniform = report.spec.kind == SearchKind::Uniform;
    ui.label(text::LOSS_HEADING);
    let points = report.curve();
    let plot = super::nice_x(super::nice_y(Plot::new("search loss")), !uniform)
        .width(LOSS_WIDTH.min(ui.available_width()))
        .height(200.0)
        .x_axis_label(if uniform { text::SCALE_AXIS } else { text::STEP_AXIS })
        .y_axis_label(text::OBJECTIVE_AXIS)
        .show(ui, |plot| {
            plot.line(
                Line::new(text::OBJECTIVE_AXIS, PlotPoints::from(points.clone()))
                    .color(palette::SCALED)
                    .width(palette::LINE_WIDTH),
            );
            if uniform {
                plot.points(
                    Points::new(text::OBJECTIVE_AXIS, PlotPoints::from(points.clone()))
                        .color(palette::SCALED)
                        .radius(3.0),
                );
            }
        });
    export::buttons(ui, plot.response.rect, || export::Figure {
        stem: format!("nopescope-search-objective-{}", report.spec.length),
        title: text::LOSS_HEADING.into(),
        x_label: if uniform { text::SCALE_AXIS } else { text::STEP_AXIS }.into(),
        y_label: text::OBJECTIVE_AXIS.into(),
        series: vec![export::Series {
            name: text::OBJECTIVE_AXIS.into(),
            look: Look::line(palette::SCALED),
            points,
        }],
        marks: Vec::new(),
        log_x: false,
        bin: false,
    });
}

/// The layer x head map of the report's scales, viridis from 1 up, with a
/// legend and its exports.
fn scale_map(ui: &mut egui::Ui, report: &SearchReport, selected: (usize, usize)) -> Option<(usize, usize)> {
    let (values, layers, heads) = (&report.scales, report.spec.layers, report.spec.heads);
    let mut clicked = None;
    let hi = values.iter().copied().fold(MAP_TOP, f32::max);
    let lo = 1.0f32;
    let layout = super::head_map::MapLayout::new(ui, heads, CELL);
    let cell = layout.cell;
    let map = layout.show(ui, |ui| {
        layout.header(ui);
        for l in 0..layers {
            ui.horizontal(|ui| {
                layout.row_label(ui, l);
                for h in 0..heads {
                    let v = values.get(l * heads + h).copied().unwrap_or(f32::NAN);
                    let fill = palette::viridis((v - lo) / (hi - lo));
                    // Clicked, not focused: the keyboard selects heads on
                    // the Explore page's map (a Tab stop per head here
                    // would double the page's stops).
                    let (rect, response) = ui.allocate_exact_size(egui::vec2(cell, cell), egui::Sense::CLICK);
                    let painter = ui.painter();
                    painter.rect_filled(rect.shrink(1.0), 2.0, fill);
                    if selected == (l, h) {
                        super::head_map::outline_selected(painter, rect);
                    }
                    layout.value(painter, rect, fill, v);
                    let name = text::head_name(l, h);
                    response.widget_info(|| {
                        egui::WidgetInfo::selected(
                            egui::Role::Button,
                            true,
                            selected == (l, h),
                            text::scale_cell(&name, v),
                        )
                    });
                    let response = response
                        .on_hover_cursor(egui::CursorIcon::PointingHand)
                        .on_hover_text(text::scale_hover(&name, v));
                    if response.clicked() {
                        clicked = Some((l, h));
                    }
                }
            });
        }
    });
    super::bar_legend(ui, format!("{lo:.2}"), text::scale_legend(hi));
    export::grid_buttons(ui, map.rect, layers * heads, || {
        export::Grid::heads(
            format!("head_scales_map_{}", report.spec.length),
            text::scale_map_title(report.spec.length, report.done, report.spec.kind == SearchKind::Uniform),
            text::SCALE_AXIS,
            heads,
            values,
            lo,
            hi,
        )
    });
    let (l, h) = selected;
    if l < layers && h < heads {
        let v = values.get(l * heads + h).copied().unwrap_or(f32::NAN);
        ui.label(text::selected_scale(&text::head_name(l, h), v));
    }
    clicked
}

/// Narrower than this (points), the presets are listed a name over its
/// buttons: their grid is about 560 wide with the longest name.
const NARROW_PRESETS: f32 = 560.0;

/// The presets: apply one, or make it setting B.
fn presets_ui(ui: &mut egui::Ui, state: &mut ViewState, keys: &Keys) {
    ui.heading(text::PRESETS_HEADING);
    ui.label(text::PRESETS_HELP);
    let info = keys.info;
    let list = presets(state.model, info, &state.tune);
    let mut apply = None;
    let mut as_b = None;
    // A preset's buttons and its value (in the grid's cells, or on a row
    // of their own under its name).
    let mut controls = |ui: &mut egui::Ui, i: usize, p: &ScalesSetting| {
        if ui.button(text::USE_PRESET).clicked() {
            apply = Some(p.clone());
        }
        if ui.button(text::PRESET_AS_B).clicked() {
            as_b = Some(p.clone());
        }
        let (name, value) = match i {
            1 => (
                text::PRESET_S,
                egui::DragValue::new(&mut state.tune.preset_uniform)
                    .range(0.25..=4.0)
                    .speed(0.01),
            ),
            2 => (
                text::PRESET_A,
                egui::DragValue::new(&mut state.tune.fitted_a)
                    .range(0.0..=2.0)
                    .max_decimals(3)
                    .speed(0.005),
            ),
            _ => return,
        };
        let label = ui.label(name);
        ui.add(value).labelled_by(label.id);
    };
    // On a phone the four columns ran past the edge: a name, then its row.
    if ui.available_width() < NARROW_PRESETS {
        for (i, p) in list.iter().enumerate() {
            match p {
                Ok(p) => {
                    ui.label(&p.name);
                    ui.horizontal_wrapped(|ui| controls(ui, i, p));
                }
                Err(e) => {
                    ui.colored_label(palette::ERROR, text::error(&e.to_string()));
                }
            }
            ui.add_space(4.0);
        }
    } else {
        egui::Grid::new("presets")
            .num_columns(4)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                for (i, p) in list.iter().enumerate() {
                    match p {
                        Ok(p) => {
                            ui.label(&p.name);
                            controls(ui, i, p);
                        }
                        Err(e) => {
                            ui.colored_label(palette::ERROR, text::error(&e.to_string()));
                        }
                    }
                    ui.end_row();
                }
            });
    }
    if let Some(p) = apply {
        p.apply_to(&mut state.scales, info.heads);
    }
    if let Some(p) = as_b {
        state.compare = Some(p);
    }
}

/// A rough time for a search before it runs, from what one costs on a
/// 2-core CPU with the CPU engine (docs/APP.md, `nopescope search` timed at
/// 128, 512 and 2048 tokens): seconds per token of a document's gradient,
/// growing with the length (attention), and a forward at about a third.
pub fn estimate_seconds(spec: &SearchSpec) -> f64 {
    let t = spec.length as f64;
    let per_token = GRAD_SECONDS_PER_TOKEN + GRAD_SECONDS_PER_TOKEN_SQUARED * t;
    match spec.kind {
        SearchKind::Heads => spec.steps as f64 * spec.batch as f64 * t * per_token,
        SearchKind::Uniform => spec.planned() as f64 * spec.batch as f64 * t * per_token * FORWARD_SHARE,
    }
}

/// The expected time's line: in the web page, the native estimate times
/// what the page's CPU engine was measured to take beside it (e2e test,
/// 6 steps of 2 documents at 512 tokens: 1.6 s in the threads build, two
/// threads, where `estimate_seconds` says 1.1 s; one thread runs the
/// forward `WEB_ONE_THREAD_SLOWER` times slower than two, docs/BENCH.md).
fn expected_time(spec: &SearchSpec) -> String {
    let seconds = estimate_seconds(spec);
    if cfg!(target_arch = "wasm32") {
        let threads = crate::model::cpu::par::num_threads();
        let factor = if threads > 1 {
            WEB_THREADS_FACTOR
        } else {
            WEB_THREADS_FACTOR * WEB_ONE_THREAD_SLOWER
        };
        text::expected_time(seconds * factor, Some(threads))
    } else {
        text::expected_time(seconds, None)
    }
}

/// See `expected_time`.
const WEB_THREADS_FACTOR: f64 = 1.5;
const WEB_ONE_THREAD_SLOWER: f64 = 1.6;

/// Measured: see `estimate_seconds`.
const GRAD_SECONDS_PER_TOKEN: f64 = 1.33e-4;
const GRAD_SECONDS_PER_TOKEN_SQUARED: f64 = 9.1e-8;
const FORWARD_SHARE: f64 = 0.36;
