//! The pass-key lab: build one pass-key document (length, depth, key,
//! filler), decode the model's answer greedily beside the key for NoPE and
//! the current scales, show the retrieving query's attention for the chosen
//! head with the key sentence marked, and name the head that retrieves
//! best; below, a length x depth accuracy map per model, filled in live,
//! with its CSV. Asks for jobs only; computes nothing itself.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{Plot, PlotPoints, Polygon, VLine};

use super::{show_entry_status, Keys, LegendEntry, PlotMark, WeightAxis};
use crate::app::compute::passkey::{grid_csv, grid_lengths, Cell, GridKey, PasskeyGridResult, GRID_SEED};
use crate::app::jobs::{Entry, FillerKey, InputAt, InputKey, JobKey, JobResult, Jobs, Sweep, TextKey};
use crate::app::palette::Look;
use crate::app::state::{
    FillerChoice, ModelChoice, PasskeyLabState, ViewState, MAX_GRID_DEPTHS, MAX_GRID_FACTOR, MAX_GRID_TRIALS,
    MAX_LENGTH, MIN_LENGTH, PANEL_ACCURACY, PANEL_DOCUMENT,
};
use crate::app::text;
use crate::app::tour::{self, Spot};
use crate::app::{export, palette};
use crate::lab::passkey::random_key;
use crate::model::rng::Rng;

/// A map cell on screen, in points.
const CELL_W: f32 = 50.0;
const CELL_H: f32 = 24.0;
const ROW_LABEL_W: f32 = 44.0;
/// The column headings' height: a length and its multiple of L.
const HEADER_H: f32 = 36.0;

#[derive(Default)]
pub struct PasskeyLabView {
    /// The document's part as last drawn with nothing computing (whole, or
    /// with an error), in points: kept free while the next document
    /// computes, so that the accuracy map under it stays where it is (a
    /// new length, key or depth took the part away and the map jumped up
    /// by its height, and back).
    doc_height: Option<f32>,
}

/// How much of the document's part a frame drew.
enum DocDrawn {
    /// Every answer, head ranking and attention row.
    Whole,
    /// Not all: some are computing.
    Computing,
    /// Not all, and none computing (an error, or stopped).
    Part,
}

/// The lab's document as a job input.
pub fn doc_input(state: &ViewState) -> InputAt {
    let lab = &state.passkey_lab;
    InputAt {
        model: state.model,
        input: InputKey::PasskeyLab {
            key: lab.key,
            depth_permille: (lab.depth * 1000.0).round() as u32,
            filler: filler_key(lab.filler, state),
        },
        length: lab.length,
    }
}

fn filler_key(choice: FillerChoice, state: &ViewState) -> FillerKey {
    match choice {
        FillerChoice::Repeated => FillerKey::Repeated,
        FillerChoice::Validation => FillerKey::Validation,
        FillerChoice::Pasted => FillerKey::Pasted(TextKey::of(&state.pasted_text)),
    }
}

/// The accuracy maps asked for: (name, colour, key), NoPE first.
pub fn grid_series(state: &ViewState, keys: &Keys) -> Vec<(&'static str, egui::Color32, JobKey)> {
    let lab = &state.passkey_lab;
    let grid = |model, scales: &crate::app::jobs::ScalesKey| {
        JobKey::PasskeyGrid(GridKey {
            model,
            scales: scales.clone(),
            filler: filler_key(lab.filler, state),
            lengths: grid_lengths(keys.info.training_length, lab.grid_factor),
            depths: lab.grid_depths,
            trials: lab.grid_trials,
            seed: GRID_SEED,
        })
    };
    // NoPE and its scales on the model in view when it is one the user
    // opened (their scales have its shape), else on the bundled NoPE; the
    // RoPE twin beside them with its own shape.
    let nope = if state.model == ModelChoice::Custom {
        ModelChoice::Custom
    } else {
        ModelChoice::Nope
    };
    let mut v = Vec::new();
    if lab.grid_nope {
        v.push((text::BEFORE, palette::NOPE, grid(nope, &keys.ones)));
    }
    if lab.grid_scaled && !keys.plain {
        v.push((text::AFTER, palette::SCALED, grid(nope, &keys.scales)));
    }
    if lab.grid_rope {
        v.push((
            text::MODEL_ROPE,
            palette::ROPE,
            grid(ModelChoice::Rope, &keys.twin_ones),
        ));
    }
    v
}

impl PasskeyLabView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::PASSKEY_HEADING);
        ui.label(text::PASSKEY_HELP);
        // (An embedding may show one of the two.)
        if !state.hidden(PANEL_DOCUMENT) {
            ui.separator();
            let top = ui.cursor().top();
            let drawn = self.document(ui, state, jobs, keys);
            let used = ui.cursor().top() - top;
            match (drawn, self.doc_height) {
                (DocDrawn::Whole | DocDrawn::Part, _) => self.doc_height = Some(used),
                (DocDrawn::Computing, Some(whole)) if whole > used => {
                    ui.add_space(whole - used);
                }
                _ => {}
            }
        }
        if !state.hidden(PANEL_ACCURACY) {
            ui.separator();
            self.grid(ui, state, jobs, keys);
        }
    }

    fn document(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) -> DocDrawn {
        ui.heading(text::PASSKEY_DOC_HEADING);
        let training = keys.info.training_length;
        ui.horizontal_wrapped(|ui| {
            ui.label(text::MODEL);
            ui.selectable_value(&mut state.model, ModelChoice::Nope, text::MODEL_NOPE);
            ui.selectable_value(&mut state.model, ModelChoice::Rope, text::MODEL_ROPE);
        });
        let has_text = !state.pasted_text.trim().is_empty();
        let lab = &mut state.passkey_lab;
        ui.horizontal_wrapped(|ui| {
            ui.add(
                egui::Slider::new(&mut lab.length, MIN_LENGTH..=MAX_LENGTH)
                    .logarithmic(true)
                    .text(text::PASSKEY_LENGTH),
            )
            .on_hover_text(text::DOCUMENT_LENGTH_HELP);
            for (label, l) in [
                (text::at_training_length(training), training),
                ("4L".to_string(), training.saturating_mul(4)),
                ("16L".to_string(), training.saturating_mul(16)),
            ] {
                if ui.button(label).clicked() {
                    lab.length = l.clamp(MIN_LENGTH, MAX_LENGTH);
                }
            }
        });
        ui.horizontal_wrapped(|ui| {
            let label = ui.label(text::PASSKEY_KEY);
            ui.add(egui::DragValue::new(&mut lab.key).range(10_000..=99_999))
                .labelled_by(label.id);
            if ui.button(text::PASSKEY_RANDOM_KEY).clicked() {
                // Any fresh key will do: seeded from the clock and the old key.
                let seed = ui.input(|i| i.time).to_bits() ^ u64::from(lab.key);
                lab.key = random_key(&mut Rng::new(seed));
            }
            super::depth_slider(ui, &mut lab.depth);
        });
        filler_choice(ui, lab, has_text);
        ui.label(text::passkey_key_line(lab.key, lab.length, training));
        super::settings_note(ui, state, keys);

        let at = doc_input(state);
        let settings = keys.settings();
        // The answers first: the runner takes jobs in the order asked.
        let lit = tour::spot(state, Spot::Answers);
        // Whether a part not drawn is computing.
        let mut running = false;
        let answers = super::spotlight(ui, lit, |ui| {
            let mut answers = Vec::new();
            for (name, scales, colour) in &settings {
                let key = JobKey::PasskeyAnswer {
                    at: at.clone(),
                    scales: scales.clone(),
                };
                let entry = jobs.get(&key).clone();
                match entry.result() {
                    Some(JobResult::PasskeyAnswer(a)) => {
                        // The verdict is in the words, after its setting's
                        // swatch (in the error colour, a wrong answer read as
                        // the scaled setting's, which shares its vermillion).
                        ui.horizontal_wrapped(|ui| {
                            super::swatch(ui, &Look::line(*colour));
                            ui.label(answer_job(ui, name, a));
                        });
                        answers.push(a.clone());
                    }
                    _ => {
                        running |= matches!(entry, Entry::Running { .. });
                        show_entry_status(ui, &entry);
                    }
                }
            }
            answers
        });
        let mut whole = answers.len() == settings.len();
        let Some(doc) = answers.first().cloned() else {
            return if running { DocDrawn::Computing } else { DocDrawn::Part };
        };
        super::document(
            ui,
            "lab document",
            text::show_passkey_document(doc.text.len(), state.passkey_lab.length),
            &doc.text,
            Some(&doc.key_span.sentence),
            keys.info.training_length,
        );
        // Every head ranked by its attention on the key, at every length:
        // one run of the model (up to 4096 tokens only until 2026-12-02,
        // when it took one pass per head).
        for (i, (name, scales, _)) in settings.iter().enumerate() {
            let key = JobKey::PasskeyHeads {
                at: at.clone(),
                scales: scales.clone(),
            };
            let entry = jobs.get(&key).clone();
            match entry.result() {
                Some(JobResult::PasskeyHeads(h)) => {
                    if let Some((l, hd, mass)) = h.best() {
                        // The first setting's best (NoPE's, or
                        // setting B's), until a head is chosen (not
                        // during the walkthrough, whose steps select
                        // their own).
                        if i == 0 {
                            state.suggest_head(l, hd);
                        }
                        ui.horizontal_wrapped(|ui| {
                            ui.label(text::best_head(name, l, hd, mass));
                            if ui.button(text::SHOW_BEST_HEAD).clicked() {
                                state.choose_head(l, hd);
                            }
                        });
                    }
                }
                _ => {
                    whole = false;
                    running |= matches!(entry, Entry::Running { .. });
                    show_entry_status(ui, &entry);
                }
            }
        }

        ui.horizontal_wrapped(|ui| {
            let label = ui.label(text::LAYER);
            let layer = ui
                .add(egui::DragValue::new(&mut state.layer).range(0..=keys.info.layers.saturating_sub(1)))
                .labelled_by(label.id);
            let label = ui.label(text::HEAD);
            let head = ui
                .add(egui::DragValue::new(&mut state.head).range(0..=keys.info.heads.saturating_sub(1)))
                .labelled_by(label.id);
            if layer.changed() || head.changed() {
                state.head_chosen = true;
            }
        });
        let lit = tour::spot(state, Spot::Row);
        super::spotlight(ui, lit, |ui| {
            ui.label(text::PASSKEY_ROW_HELP);
            let mut rows = Vec::new();
            for (name, scales, colour) in &settings {
                let key = JobKey::AttnRow {
                    at: at.clone(),
                    scales: scales.clone(),
                    layer: state.layer,
                    head: state.head,
                    query: None,
                };
                let entry = jobs.get(&key).clone();
                match entry.shared() {
                    Some(r) => rows.push((*name, *colour, r)),
                    None => {
                        whole = false;
                        running |= matches!(entry, Entry::Running { .. });
                        show_entry_status(ui, &entry);
                    }
                }
            }
            attention_plot(ui, &rows, &doc, keys.info.training_length, (state.layer, state.head));
            for (name, _, r) in &rows {
                if let JobResult::AttnRow(a) = r.as_ref() {
                    let (key, sentence) = doc.key_span.shares(&a.row);
                    let head = text::head_name(state.layer, state.head);
                    ui.label(text::key_mass(name, &head, key, sentence));
                }
            }
            super::attention::on_text(ui, "pass-key lab", &doc.text, &rows);
        });
        match (whole, running) {
            (true, _) => DocDrawn::Whole,
            (false, true) => DocDrawn::Computing,
            (false, false) => DocDrawn::Part,
        }
    }

    fn grid(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::GRID_HEADING);
        ui.label(text::GRID_HELP);
        let lab = &mut state.passkey_lab;
        ui.horizontal_wrapped(|ui| {
            let label = ui.label(text::GRID_TRIALS);
            ui.add(egui::DragValue::new(&mut lab.grid_trials).range(1..=MAX_GRID_TRIALS))
                .labelled_by(label.id);
            let label = ui.label(text::GRID_DEPTHS);
            ui.add(egui::DragValue::new(&mut lab.grid_depths).range(1..=MAX_GRID_DEPTHS))
                .labelled_by(label.id);
            ui.label(text::GRID_LONGEST);
            let mut f = 1;
            while f <= MAX_GRID_FACTOR {
                ui.selectable_value(&mut lab.grid_factor, f, text::grid_longest(f));
                f *= 2;
            }
        });
        ui.horizontal_wrapped(|ui| {
            ui.label(text::GRID_SERIES);
            ui.checkbox(&mut lab.grid_nope, text::BEFORE);
            // With no scales in use the map could only show NoPE failing:
            // the shipped scales are one click away (the bundled NoPE's).
            // Not over a file of the user's own, loaded and switched off.
            let own_file = state
                .scales
                .file
                .as_ref()
                .is_some_and(|f| f.name != text::PRESET_SHIPPED);
            let offer_shipped = state.model == ModelChoice::Nope && !own_file;
            ui.add_enabled(!keys.plain, egui::Checkbox::new(&mut lab.grid_scaled, text::AFTER))
                .on_disabled_hover_text(if offer_shipped {
                    text::AFTER_NEEDS_SCALES_SHIPPED
                } else {
                    text::AFTER_NEEDS_SCALES
                });
            ui.checkbox(&mut lab.grid_rope, text::MODEL_ROPE);
            if keys.plain
                && offer_shipped
                && ui
                    .button(text::USE_SHIPPED_SCALES)
                    .on_hover_text(text::USE_SHIPPED_SCALES_HELP)
                    .clicked()
            {
                // The bundled NoPE model's own scales (they fit it: the
                // tuning page's presets test it); read only on a click.
                if let Ok(shipped) = crate::app::search_job::shipped(keys.info) {
                    shipped.apply_to(&mut state.scales, keys.info.heads);
                    lab.grid_scaled = true;
                }
                // The keys of this frame still say plain.
                ui.ctx().request_repaint();
            }
        });
        let lengths = grid_lengths(keys.info.training_length, lab.grid_factor);
        if keys.info.training_length.saturating_mul(lab.grid_factor) > MAX_LENGTH {
            ui.label(text::lengths_left_out(MAX_LENGTH));
        }
        let documents = lengths.len() * lab.grid_depths * lab.grid_trials;
        let tokens: usize = lengths.iter().sum::<usize>() * lab.grid_depths * lab.grid_trials;
        ui.label(text::grid_cost(documents, tokens));
        let series = grid_series(state, keys);
        let lab = &mut state.passkey_lab;
        let Sweep {
            entries,
            running,
            stopped,
        } = jobs.sweep(series.iter().map(|(_, _, key)| key), &mut lab.grid);
        let mut clear = false;
        ui.horizontal_wrapped(|ui| {
            if running {
                // Stop, keeping the cells done; then Go on from them, or
                // Clear (once every map is done, Clear alone).
                if ui.button(text::GRID_STOP).on_hover_text(text::GRID_STOP_HELP).clicked() {
                    lab.grid = false;
                    series.iter().for_each(|(_, _, key)| jobs.stop(key));
                }
                return;
            }
            if stopped {
                if ui
                    .button(text::GRID_GO_ON)
                    .on_hover_text(text::GRID_GO_ON_HELP)
                    .clicked()
                {
                    lab.grid = true;
                    series.iter().for_each(|(_, _, key)| jobs.go_on(key));
                }
            } else if !lab.grid && ui.button(text::GRID_START).clicked() {
                lab.grid = true;
            }
            if lab.grid || stopped {
                clear = ui
                    .button(text::GRID_CLEAR)
                    .on_hover_text(text::GRID_CLEAR_HELP)
                    .clicked();
            }
        });
        if clear {
            // Dropped, done or not, the cells kept by a stop included.
            lab.grid = false;
            series.iter().for_each(|(_, _, key)| jobs.forget(key));
            return;
        }
        if series.is_empty() {
            ui.label(text::GRID_NO_SERIES);
            return;
        }
        // Before it is asked for, no map: grey placeholders filled half the
        // lab (and the walkthrough's pass-key steps) with cells no one ran.
        if entries.iter().all(Option::is_none) {
            return;
        }
        let mut shown: Vec<(&str, Arc<JobResult>)> = Vec::new();
        ui.horizontal_wrapped(|ui| {
            for ((name, colour, key), entry) in series.iter().zip(entries) {
                let JobKey::PasskeyGrid(g) = key else { continue };
                let result = entry.as_ref().and_then(Entry::shared);
                let placeholder;
                let grid = match result.as_deref() {
                    Some(JobResult::PasskeyGrid(r)) => r,
                    _ => {
                        placeholder = PasskeyGridResult {
                            lengths: g.lengths.clone(),
                            depths: (0..g.depths)
                                .map(|d| crate::app::compute::passkey::grid_depth(d, g.depths))
                                .collect(),
                            cells: vec![Cell::Pending; g.lengths.len() * g.depths],
                        };
                        &placeholder
                    }
                };
                // A map that would not fit beside the last starts a row of
                // its own (egui wraps only before an item whose width it
                // knows; a narrow window cut a second map off).
                let width = ROW_LABEL_W + grid.lengths.len() as f32 * (CELL_W + 2.0);
                if ui.available_size_before_wrap().x < width && ui.min_rect().width() > 0.0 {
                    ui.end_row();
                }
                ui.vertical(|ui| {
                    ui.label(egui::RichText::new(*name).strong().color(*colour));
                    let rect = draw_grid(ui, name, grid, keys.info.training_length);
                    if let Some(e @ (Entry::Running { .. } | Entry::Failed(_) | Entry::Stopped(_))) = &entry {
                        show_entry_status(ui, e);
                    }
                    // Each map as a figure too (the CSV below has them all).
                    if grid.finished() > 0 {
                        export::grid_buttons(ui, rect, grid.cells.len(), || {
                            grid_figure(name, grid, keys.info.training_length)
                        });
                    }
                });
                if let Some(r) = result {
                    shown.push((name, r));
                }
            }
        });
        ui.label(text::GRID_LENGTH_AXIS);
        grid_legend(ui);
        if !shown.is_empty() {
            Self::export_csv(ui, &shown);
        }
    }

    /// The shown maps as one CSV, offered through the app's save path
    /// (`export::save_file`).
    fn export_csv(ui: &mut egui::Ui, shown: &[(&str, Arc<JobResult>)]) {
        if !ui
            .button(text::EXPORT_CSV)
            .on_hover_text(text::EXPORT_GRID_HELP)
            .clicked()
        {
            return;
        }
        let maps: Vec<(&str, &PasskeyGridResult)> = shown
            .iter()
            .filter_map(|(n, r)| match r.as_ref() {
                JobResult::PasskeyGrid(g) => Some((*n, g)),
                _ => None,
            })
            .collect();
        export::save_file(
            ui.ctx(),
            "passkey_accuracy.csv",
            grid_csv(&maps).into_bytes(),
            "text/csv",
        );
    }
}

/// The filler choice; the user's own text only once there is some.
fn filler_choice(ui: &mut egui::Ui, lab: &mut PasskeyLabState, has_text: bool) {
    ui.horizontal_wrapped(|ui| {
        ui.label(text::FILLER);
        ui.selectable_value(&mut lab.filler, FillerChoice::Repeated, text::FILLER_REPEATED);
        ui.selectable_value(&mut lab.filler, FillerChoice::Validation, text::FILLER_VALIDATION);
        // Not in a child ui of its own: that had only the row's remaining
        // width, and on a phone the button's text stood one letter a line.
        let pasted = egui::Button::selectable(lab.filler == FillerChoice::Pasted, text::FILLER_PASTED);
        if ui
            .add_enabled(has_text, pasted)
            .on_disabled_hover_text(text::FILLER_PASTED_NONE)
            .clicked()
        {
            lab.filler = FillerChoice::Pasted;
        }
    });
    if lab.filler == FillerChoice::Pasted && !has_text {
        ui.colored_label(palette::ERROR, text::FILLER_PASTED_NONE);
    }
}

/// `text::passkey_answer`, word for word, drawn so that it reads at a
/// glance: the verdict larger, and each of the answer's characters that
/// differs from the key's underlined (no colour: the settings own them).
fn answer_job(
    ui: &egui::Ui,
    setting: &str,
    a: &crate::app::compute::passkey::PasskeyAnswerResult,
) -> egui::text::LayoutJob {
    use egui::text::{LayoutJob, TextFormat};
    let said = text::passkey_answer(setting, &a.answer, a.key, a.correct);
    let plain = TextFormat {
        font_id: egui::TextStyle::Body.resolve(ui.style()),
        color: ui.visuals().strong_text_color(),
        ..Default::default()
    };
    let answer = a.answer.trim();
    let quoted = format!("\"{answer}\"");
    let verdict = if a.correct { text::CORRECT } else { text::WRONG };
    // Where the pieces stand; where the text is not laid out as expected
    // (an answer with characters that are escaped), it is drawn plain.
    let pieces = said
        .find(&quoted)
        .filter(|_| format!("{answer:?}") == quoted)
        .and_then(|at| Some((at, said[at + quoted.len()..].find(verdict)?)));
    let mut job = LayoutJob::default();
    let Some((at, v)) = pieces else {
        job.append(&said, 0.0, plain);
        return job;
    };
    let after = &said[at + quoted.len()..];
    job.append(&said[..at + 1], 0.0, plain.clone());
    let key = a.key.to_string();
    let mut keys = key.chars();
    for c in answer.chars() {
        let mut f = plain.clone();
        if keys.next() != Some(c) {
            f.underline = egui::Stroke::new(2.0, plain.color);
        }
        job.append(&c.to_string(), 0.0, f);
    }
    job.append(&said[at + quoted.len() - 1..at + quoted.len()], 0.0, plain.clone());
    job.append(&after[..v], 0.0, plain.clone());
    let big = TextFormat {
        font_id: egui::FontId::proportional(plain.font_id.size * 1.25),
        ..plain.clone()
    };
    job.append(verdict, 0.0, big);
    job.append(&after[v + verdict.len()..], 0.0, plain);
    job
}

/// The key sentence's band, and its legend swatch.
const KEY_BAND: Look = Look {
    width: 8.0,
    opacity: 0.25,
    ..Look::mark(palette::KEY)
};

/// The retrieving query's row for each setting, the key sentence shaded,
/// and its exports.
fn attention_plot(
    ui: &mut egui::Ui,
    rows: &[(&str, egui::Color32, Arc<JobResult>)],
    doc: &crate::app::compute::passkey::PasskeyAnswerResult,
    training_length: usize,
    (layer, head): (usize, usize),
) {
    if rows.is_empty() {
        return;
    }
    let (k0, k1) = (doc.key_span.sentence.start as f64, doc.key_span.sentence.end as f64);
    // The legend above the plot; a click hides a setting's row.
    let mut legend: Vec<LegendEntry> = rows
        .iter()
        .map(|(name, colour, _)| LegendEntry::line(*name, Look::line(*colour)))
        .collect();
    legend.push(LegendEntry::mark(text::KEY_SENTENCE, KEY_BAND));
    legend.push(LegendEntry::mark(text::QUERY_MARK, Look::mark(palette::QUERY)));
    let (hidden, axis) = super::legend_row_after(ui, "passkey attention row", &legend, |ui| {
        let axis = WeightAxis::toggle(ui, "passkey attention row");
        ui.add_space(10.0);
        axis
    });
    let rows: Vec<_> = rows.iter().filter(|(name, _, _)| hidden.shows(name)).cloned().collect();
    // The axis runs to 1, all of the query's attention, whatever the rows
    // reach: scaled to each row's peak, a spike of 0.04 past L looked as
    // tall as one of 1.0 at L. The key sentence's band spans it, behind
    // the rows; the L label stands above it.
    let (band_top, top) = (axis.y(1.0), axis.label_top(1.0));
    let floor = if axis.log { WeightAxis::FLOOR.log10() } else { 0.0 };
    let readout = super::row_readout(&rows);
    let visuals = ui.visuals().clone();
    // L is marked wherever the document reaches it: a document of L tokens
    // asks at a query just before L, and the mark then sits past the last
    // key (the axis is widened to hold it).
    let l_marked = training_length <= doc.length;
    let x_end = (doc.query as f64).max(if l_marked { training_length as f64 } else { 0.0 });
    let plot = axis
        .axis(super::positions_x(Plot::new("passkey attention row")), top)
        .include_x(x_end)
        .height(200.0)
        .label_formatter(|pos| {
            let j = super::hovered(pos).x.round().max(0.0) as usize;
            Some(text::key_hover(j, None, &readout))
        })
        .x_axis_label(text::KEY_AXIS)
        .y_axis_label(text::WEIGHT_AXIS)
        .show(ui, |plot| {
            plot.polygon(
                Polygon::new(
                    text::KEY_SENTENCE,
                    PlotPoints::from(vec![[k0, floor], [k1, floor], [k1, band_top], [k0, band_top]]),
                )
                .fill_color(KEY_BAND.paint(&visuals))
                .stroke(egui::Stroke::new(
                    palette::THIN_LINE,
                    Look::mark(palette::KEY).paint(&visuals),
                )),
            );
            super::attention::row_lines(plot, &rows, axis);
            plot.vline(VLine::new(text::QUERY, doc.query as f64).color(palette::QUERY));
            // Labelled in place (the key sentence is its band); past the
            // axis in a shorter document.
            super::labelled_marks(plot, &[PlotMark::training(training_length)], top, x_end);
        });
    // The weights themselves (every key; the SVG bins past
    // `export::MAX_LINE_POINTS`, as the plot does), whatever the axis; the key sentence's ends and the query as
    // marks.
    export::buttons(ui, plot.response.rect, || {
        let mark = |name: String, x: f64, look: Look| export::Mark { name, x, look };
        let mut marks = vec![
            mark(text::key_sentence_end(true), k0, Look::mark(palette::KEY)),
            mark(text::key_sentence_end(false), k1, Look::mark(palette::KEY)),
            mark(text::QUERY.into(), doc.query as f64, Look::mark(palette::QUERY)),
        ];
        let l = PlotMark::training(training_length);
        if l.on_axis(x_end) {
            marks.push(l.export());
        }
        export::Figure {
            stem: format!("nopescope-passkey-attention-l{layer}h{head}-{}", doc.length),
            title: text::passkey_row_title(&text::head_name(layer, head), doc.length),
            x_label: text::KEY_AXIS.into(),
            y_label: text::WEIGHT_AXIS.into(),
            series: super::attention::row_series(&rows),
            marks,
            log_x: false,
            bin: true,
        }
    });
}

/// One accuracy map as an exported figure: depths down, lengths (with
/// their multiple of L) across, accuracy from 0 to 1; cells not run, or
/// too short for the question, empty.
fn grid_figure(series: &str, g: &PasskeyGridResult, training_length: usize) -> export::Grid {
    let (lengths, depths) = (g.lengths.len(), g.depths.len());
    export::Grid {
        stem: format!("passkey_accuracy_{}", export::file_stem(series)),
        title: text::grid_title(series),
        row_label: text::GRID_DEPTH_AXIS.into(),
        col_label: text::grid_length_column(training_length),
        value_label: text::PASSKEY_AXIS.into(),
        rows: g.depths.iter().map(|d| format!("{d:.2}")).collect(),
        cols: g.lengths.iter().map(usize::to_string).collect(),
        values: (0..depths)
            .flat_map(|d| (0..lengths).map(move |li| (li, d)))
            .map(|(li, d)| g.cell(li, d).accuracy().unwrap_or(f64::NAN))
            .collect(),
        lo: 0.0,
        hi: 1.0,
        log_colour: false,
    }
}

/// Draws one accuracy map: lengths across, depths down, the L column's
/// heading underlined; every cell named for screen readers and tests. The
/// map is one stop in the Tab order (its cursor cell, at first the L
/// column's top one); the arrow keys move the cursor, and the focus with
/// it, between the cells. Returns where it is on screen.
fn draw_grid(ui: &mut egui::Ui, series: &str, g: &PasskeyGridResult, training_length: usize) -> egui::Rect {
    let (columns, rows) = (g.lengths.len(), g.depths.len());
    let cursor_id = ui.make_persistent_id(("passkey grid cursor", series));
    let cell_id = |ui: &egui::Ui, li: usize, d: usize| ui.make_persistent_id(("passkey grid cell", series, li, d));
    let start = g.lengths.iter().position(|&l| l == training_length).unwrap_or(0);
    let (cur_li, cur_d) = ui
        .data(|m| m.get_temp::<(usize, usize)>(cursor_id))
        .unwrap_or((start, 0));
    let cursor = (cur_li.min(columns.saturating_sub(1)), cur_d.min(rows.saturating_sub(1)));
    let grid = egui::Grid::new(("passkey grid", series))
        .spacing([2.0, 2.0])
        .min_col_width(0.0);
    let shown = grid.show(ui, |ui| {
        ui.add_sized([ROW_LABEL_W, HEADER_H], egui::Label::new(text::GRID_DEPTH_AXIS));
        // Each column's length and its multiple of L; the L column's in
        // the text's strong colour over a bar in it (an outline in a
        // colour of its own vanished on the map's yellow cells).
        for &length in &g.lengths {
            let head = format!("{length}\n{}", text::times_l(length, training_length));
            let label = if length == training_length {
                egui::RichText::new(head).strong()
            } else {
                egui::RichText::new(head)
            };
            let response = ui.add_sized([CELL_W, HEADER_H], egui::Label::new(label));
            if length == training_length {
                let r = response.rect;
                ui.painter().rect_filled(
                    egui::Rect::from_min_max(
                        egui::pos2(r.left() + 4.0, r.bottom() - 3.0),
                        egui::pos2(r.right() - 4.0, r.bottom()),
                    ),
                    1.0,
                    ui.visuals().strong_text_color(),
                );
            }
        }
        ui.end_row();
        for (d, &depth) in g.depths.iter().enumerate() {
            ui.add_sized([ROW_LABEL_W, CELL_H], egui::Label::new(format!("{depth:.2}")));
            for (li, &length) in g.lengths.iter().enumerate() {
                let cell = g.cell(li, d);
                let (fill, mark, name) = match cell {
                    Cell::Done { correct, trials } => {
                        let acc = correct as f32 / trials.max(1) as f32;
                        // A few trials as a count: "1/2" is what "50%" hides.
                        let mark = if trials < 10 {
                            format!("{correct}/{trials}")
                        } else {
                            format!("{:.0}%", 100.0 * acc)
                        };
                        (
                            palette::viridis(acc),
                            mark,
                            text::grid_cell(series, length, depth, correct, trials),
                        )
                    }
                    Cell::Pending => (
                        palette::GRID_PENDING,
                        String::new(),
                        text::grid_cell_other(series, length, depth, text::GRID_PENDING),
                    ),
                    Cell::TooShort => (
                        palette::GRID_TOO_SHORT,
                        "n/a".into(),
                        text::grid_cell_other(series, length, depth, text::GRID_TOO_SHORT),
                    ),
                };
                let (_, rect) = ui.allocate_space(egui::vec2(CELL_W, CELL_H));
                let here = (li, d) == cursor;
                let sense = if here {
                    egui::Sense::click()
                } else {
                    egui::Sense::hover()
                };
                let response = ui.interact(rect, cell_id(ui, li, d), sense);
                response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Cell, true, &name));
                if here && ui.data_mut(|m| m.remove_temp::<bool>(cursor_id.with("moved")).is_some()) {
                    response.request_focus();
                }
                if here && response.has_focus() {
                    move_cursor(ui, cursor_id, response.id, (li, d), (columns, rows));
                }
                let painter = ui.painter();
                painter.rect_filled(rect, 2.0, fill);
                if response.has_focus() {
                    painter.rect_stroke(
                        rect.shrink(1.0),
                        2.0,
                        egui::Stroke::new(2.0, palette::SELECTION),
                        egui::StrokeKind::Inside,
                    );
                }
                painter.text(
                    rect.center(),
                    egui::Align2::CENTER_CENTER,
                    mark,
                    egui::FontId::proportional(12.0),
                    palette::text_on(fill),
                );
                let response = response.on_hover_text(&name);
                if response.has_focus() {
                    response.show_tooltip_text(&name);
                }
            }
            ui.end_row();
        }
    });
    shown.response.rect
}

/// The focused cursor cell `at` of a `size` (columns, rows) map keeps the
/// arrow keys (instead of egui moving the focus with them); one moves the
/// cursor, stored under `cursor_id`, and asks the cell it lands on to take
/// the focus when it is drawn next (as the cursor: focusable).
fn move_cursor(ui: &egui::Ui, cursor_id: egui::Id, id: egui::Id, at: (usize, usize), size: (usize, usize)) {
    use egui::{Key, Modifiers};
    let arrows = egui::EventFilter {
        horizontal_arrows: true,
        vertical_arrows: true,
        ..Default::default()
    };
    ui.memory_mut(|m| m.set_focus_lock_filter(id, arrows));
    let (li, d) = at;
    let to = ui.input_mut(|i| {
        if i.consume_key(Modifiers::NONE, Key::ArrowLeft) {
            Some((li.saturating_sub(1), d))
        } else if i.consume_key(Modifiers::NONE, Key::ArrowRight) {
            Some(((li + 1).min(size.0 - 1), d))
        } else if i.consume_key(Modifiers::NONE, Key::ArrowUp) {
            Some((li, d.saturating_sub(1)))
        } else if i.consume_key(Modifiers::NONE, Key::ArrowDown) {
            Some((li, (d + 1).min(size.1 - 1)))
        } else {
            None
        }
    });
    if let Some(to) = to.filter(|&to| to != at) {
        ui.data_mut(|m| {
            m.insert_temp(cursor_id, to);
            m.insert_temp(cursor_id.with("moved"), true);
        });
        ui.ctx().request_repaint();
    }
}

/// The accuracy colour bar and the two kinds of empty cell.
fn grid_legend(ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label(text::ACCURACY_LOW);
        super::colour_bar(ui);
        ui.label(text::ACCURACY_HIGH);
        ui.separator();
        for (fill, what) in [
            (palette::GRID_PENDING, text::GRID_PENDING),
            (palette::GRID_TOO_SHORT, text::GRID_TOO_SHORT),
        ] {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
            ui.painter().rect_filled(rect, 2.0, fill);
            ui.label(what);
        }
    });
}
