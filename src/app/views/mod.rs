//! The views: each a small struct with one `ui` method that reads results
//! from `Jobs`, asks for what it needs by key, and changes `ViewState`.
//! Views hold no engine handles.

pub mod against;
pub mod attention;
pub mod entropy;
#[cfg(not(target_arch = "wasm32"))]
pub mod folder_dialog;
pub mod head_map;
pub mod input;
pub mod passkey_lab;
pub mod scales;
pub mod share;
pub mod status;
pub mod tour;
pub mod tuning;

use eframe::egui;

use super::export;
use super::jobs::{Entry, InputAt, InputKey, JobKey, ScalesKey, TextKey};
use super::models::ModelInfo;
use super::palette::{self, Look, Pattern};
use super::state::{InputKind, ModelChoice, ViewState};
use super::text;

/// What the views show but for the length (`Keys::all_but_length`).
#[derive(Debug, Clone, PartialEq)]
pub struct AllButLength {
    model: crate::app::state::ModelChoice,
    opened: u64,
    input: crate::app::jobs::InputKey,
    settings: Vec<ScalesKey>,
}

/// The keys every view derives from the state, built once per frame.
pub struct Keys {
    pub at: InputAt,
    /// The scales in use.
    pub scales: ScalesKey,
    /// Plain NoPE.
    pub ones: ScalesKey,
    /// True when the scales in use are plain NoPE (one set of curves).
    pub plain: bool,
    /// Setting B, drawn instead of NoPE when the user chose one.
    pub compare: Option<ScalesKey>,
    pub info: ModelInfo,
    /// Plain scales of the bundled RoPE twin, which the against-length
    /// plots and the pass-key maps draw beside the model in view (an
    /// opened model's shape may differ).
    pub twin_ones: ScalesKey,
    /// The explorer's telling head (layer, head), once its profile is in
    /// (`tour::most_flattened_head`, found once a frame).
    pub suggested: Option<(usize, usize)>,
}

impl Keys {
    pub fn of(state: &ViewState, info: ModelInfo) -> Self {
        let n = info.layers * info.heads;
        let input = match state.input {
            InputKind::Validation => InputKey::Validation,
            InputKind::Passkey => InputKey::Passkey {
                key: state.passkey.key,
                depth_permille: (state.passkey.depth * 1000.0).round() as u32,
            },
            InputKind::Pasted => InputKey::Pasted(TextKey::of(&state.pasted_text)),
        };
        Keys {
            at: InputAt {
                model: state.model,
                input,
                length: state.length,
            },
            scales: ScalesKey::with_rule(&state.scales.values(info.layers, info.heads), state.scales.rule()),
            ones: ScalesKey::ones(n),
            plain: state.scales.is_plain(),
            compare: state.compare.as_ref().map(|b| ScalesKey::with_rule(&b.values, b.rule)),
            info,
            twin_ones: ScalesKey::ones(ModelInfo::bundled(ModelChoice::Rope).map_or(n, |t| t.layers * t.heads)),
            suggested: None,
        }
    }

    /// What the views show but for the length: the model, the input and
    /// the settings. A plot of another length is drawn on while this one
    /// computes only where this is the same.
    pub fn all_but_length(&self) -> AllButLength {
        AllButLength {
            model: self.at.model,
            opened: self.info.opened,
            input: self.at.input.clone(),
            settings: self.settings().into_iter().map(|(_, s, _)| s).collect(),
        }
    }

    pub fn entropy(&self, scales: &ScalesKey) -> JobKey {
        JobKey::Entropy {
            at: self.at.clone(),
            scales: scales.clone(),
        }
    }

    /// The entropy at the training length L of the input in view (the base
    /// of the rise from L), at most the app's longest length (an opened
    /// model's L may be longer).
    pub fn entropy_at_l(&self, scales: &ScalesKey) -> JobKey {
        JobKey::Entropy {
            at: InputAt {
                length: self.info.training_length.min(crate::app::state::MAX_LENGTH),
                ..self.at.clone()
            },
            scales: scales.clone(),
        }
    }

    /// The scale settings to draw on the model in view: s = 1 (or setting
    /// B, when chosen), then the current scales if they differ.
    pub fn settings(&self) -> Vec<(&'static str, ScalesKey, egui::Color32)> {
        let colour = if self.info.rope { palette::ROPE } else { palette::NOPE };
        self.settings_on(self.info.rope, colour)
    }

    /// `settings` on a model with (`rope`) or without rotary position
    /// encoding, which names the unscaled setting, drawn in `colour`.
    pub fn settings_on(&self, rope: bool, colour: egui::Color32) -> Vec<(&'static str, ScalesKey, egui::Color32)> {
        let plain = text::unscaled(rope);
        let (name, base) = match &self.compare {
            Some(b) => (text::SETTING_B, b.clone()),
            None => (plain, self.ones.clone()),
        };
        let same = base == self.scales;
        let mut v = vec![(name, base, colour)];
        if !same {
            v.push((text::AFTER, self.scales.clone(), palette::SCALED));
        }
        v
    }
}

/// The model in view, as scales files are compared with it.
#[derive(Clone, Copy)]
pub struct ModelInView<'a> {
    /// Its folder, where the app knows one: a bundled model's, or a
    /// folder opened natively (a model opened from files in the browser is
    /// named after how it came, not its folder).
    pub folder: Option<&'a str>,
    model: ModelChoice,
    /// The opened model, where there is one (a bundled model's fingerprint
    /// is read when first asked: `fingerprint`).
    opened: Option<&'a super::compute::OpenedInfo>,
}

impl<'a> ModelInView<'a> {
    pub fn of(state: &ViewState, jobs: &'a super::jobs::Jobs) -> Self {
        let opened = jobs.opened.model.as_ref();
        ModelInView {
            folder: super::models::bundled(state.model).map(|b| b.name).or_else(|| {
                opened
                    .filter(|_| cfg!(not(target_arch = "wasm32")))
                    .map(|m| m.name.as_str())
            }),
            model: state.model,
            opened,
        }
    }

    /// Its weights' `Params::fingerprint`.
    pub fn fingerprint(&self) -> Option<&'a str> {
        match self.model {
            ModelChoice::Custom => self.opened.map(|m| m.fingerprint.as_str()),
            bundled => super::models::bundled_fingerprint(bundled),
        }
    }
}

/// Under the scales in use, when they are a file's: whether its search
/// was stopped before its end, and whether it was searched on another
/// model than `model` (they fit its shape, but were tuned for another
/// model's heads).
pub fn scales_file_notes(ui: &mut egui::Ui, scales: &super::state::ScalesState, model: ModelInView<'_>) {
    use crate::model::head_scales::SearchedElsewhere;
    let Some(file) = scales.file.as_ref().filter(|_| scales.use_file) else {
        return;
    };
    let warn = ui.visuals().warn_fg_color;
    if let Some(n) = file.stopped_after {
        ui.label(egui::RichText::new(text::scales_stopped(n, file.uniform_search)).color(warn));
    }
    let note = match file.searched_elsewhere(model.folder, || model.fingerprint()) {
        Some(SearchedElsewhere::Weights(named)) => text::scales_other_weights(named),
        Some(SearchedElsewhere::Folder(other)) => text::scales_searched_on(other),
        None => return,
    };
    ui.label(egui::RichText::new(note).color(warn));
}

/// The scales in use, by name: a loaded file's or preset's, or the
/// uniform scale and its rule.
pub fn in_use_name(state: &ViewState, info: &ModelInfo) -> String {
    let s = &state.scales;
    match (&s.file, s.use_file) {
        (Some(f), true) => f.name.clone(),
        _ => text::uniform_in_use(s.uniform, &s.rule(), info.rope),
    }
}

/// What the views' settings are, where their short names do not say it
/// ("with the current scales", "setting B"): a line over their plots.
/// None when only the unscaled setting is drawn.
pub fn settings_note(ui: &mut egui::Ui, state: &ViewState, keys: &Keys) {
    let mut parts = Vec::new();
    if let Some(b) = &state.compare {
        parts.push(text::setting_is(text::SETTING_B, &b.name));
    }
    // Where the views draw the current scales (beside their base).
    if keys.settings().iter().any(|(name, _, _)| *name == text::AFTER) {
        parts.push(text::setting_is(text::AFTER, &in_use_name(state, &keys.info)));
    }
    if !parts.is_empty() {
        ui.label(parts.join("; "));
    }
}

/// Where the pointer is in a plot's coordinates, near a data point or not
/// (for the plots' hover labels).
pub fn hovered(pos: &egui_plot::HoverPosition) -> egui_plot::PlotPoint {
    match pos {
        egui_plot::HoverPosition::NearDataPoint { position, .. } => *position,
        egui_plot::HoverPosition::Elsewhere { position } => *position,
    }
}

/// The attention rows' weight axis: linear, or log10 (where one spike
/// flattened the rest, the weights on a pass key or a flat spread show).
/// A checkbox above each row plot switches it, kept per plot for the
/// session.
#[derive(Clone, Copy)]
pub struct WeightAxis {
    pub log: bool,
}

impl WeightAxis {
    /// The smallest weight a log axis shows; smaller ones sit on it.
    pub const FLOOR: f64 = 1e-6;

    /// The checkbox, and the axis it chose.
    pub fn toggle(ui: &mut egui::Ui, id: &str) -> Self {
        let key = egui::Id::unique(("nopescope weight axis", id));
        let mut log = ui.data(|d| d.get_temp::<bool>(key)).unwrap_or(false);
        ui.checkbox(&mut log, text::LOG_WEIGHTS)
            .on_hover_text(text::LOG_WEIGHTS_HOVER);
        ui.data_mut(|d| d.insert_temp(key, log));
        WeightAxis { log }
    }

    pub fn y(&self, weight: f64) -> f64 {
        if self.log {
            weight.max(Self::FLOOR).log10()
        } else {
            weight
        }
    }

    /// A row's curve (binned as the entropy's) on this axis.
    pub fn points(&self, row: &[f32]) -> Vec<[f64; 2]> {
        let mut points = entropy::binned(row);
        for p in &mut points {
            p[1] = self.y(p[1]);
        }
        points
    }

    /// Where the marks' labels stand over rows whose largest weight is
    /// `max`: in headroom above it.
    pub fn label_top(&self, max: f64) -> f64 {
        if self.log {
            self.y(max) + 0.6
        } else {
            max * MARK_HEADROOM
        }
    }

    /// The plot's y axis: its grid, labels and range from the floor (log)
    /// or 0 to the labels' top.
    pub fn axis<'a>(&self, plot: egui_plot::Plot<'a>, label_top: f64) -> egui_plot::Plot<'a> {
        let plot = if self.log {
            // Whole decades, as many as fit `Y_LABEL_GAP` apart (a plot
            // zoomed far out would ask for millions of decades).
            plot.y_grid_spacer(nice_grid(Y_LABEL_GAP, true))
                .y_axis_formatter(|mark, _| text::decade(mark.value.round() as i32))
                .include_y(Self::FLOOR.log10())
        } else {
            nice_y(plot).include_y(0.0)
        };
        plot.include_y(label_top)
    }
}

/// Room above a plot's data for its marks' labels: the y range reaches
/// this many times the data's top, and the labels stand there, over no
/// curve (at the top itself "L = 256" sat on the entropy's ceiling).
pub const MARK_HEADROOM: f64 = 1.15;

/// A vertical mark on a plot (the training length, the pass key): where,
/// its label in place, its name in an export, and its look.
pub struct PlotMark {
    pub x: f64,
    pub label: String,
    pub name: &'static str,
    pub look: Look,
}

impl PlotMark {
    /// The training length L.
    pub fn training(l: usize) -> Self {
        PlotMark {
            x: l as f64,
            label: text::training_mark(l),
            name: text::TRAINING_LENGTH,
            look: Look::training_length(),
        }
    }

    /// The pass key's position.
    pub fn key(position: usize) -> Self {
        PlotMark {
            x: position as f64,
            label: text::KEY_POSITION.to_string(),
            name: text::KEY_POSITION,
            look: Look::mark(palette::KEY),
        }
    }

    /// Whether the mark is on an axis ending at `end`: at most one position
    /// past it (the training length at T = L sits at the edge, one past the
    /// last query). A mark past the axis is labelled at its end, and left
    /// out of an export, whose axis it would stretch.
    pub fn on_axis(&self, end: f64) -> bool {
        self.x <= end + 1.0
    }

    /// The mark in an exported figure.
    pub fn export(&self) -> export::Mark {
        export::Mark {
            name: self.name.into(),
            x: self.x,
            look: self.look,
        }
    }
}

/// Vertical marks labelled in place at height `top` (the data's top)
/// instead of in the legend. A label goes right of its line, or left of it in the last sixth
/// of an axis ending at `end`, where it would leave the plot; of two lines
/// closer than a tenth of the axis, the left one's label goes left and the
/// right one's right, so they never overlap, unless the right one is in the
/// last sixth: then both go left, the left one's a line lower. On a light
/// background the label is a darker shade of its line's colour (the pass
/// key's yellow is unreadable on white).
///
/// A mark past the axis (more than one position past `end`, its last
/// position: the training length over a shorter input, the pass key after
/// the query shown) draws no line, which would stretch the axis, but its
/// label, saying so, at the axis's right end, in the first row of labels
/// free there.
pub fn labelled_marks(plot: &mut egui_plot::PlotUi<'_>, marks: &[PlotMark], top: f64, end: f64) {
    let (beyond, mut marks): (Vec<&PlotMark>, Vec<&PlotMark>) = marks.iter().partition(|m| !m.on_axis(end));
    marks.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (left, lower) = mark_label_sides(&marks.iter().map(|m| m.x).collect::<Vec<_>>(), end);
    // A text line's height in the plot's units.
    let line = 1.3 * plot.ctx().global_style().text_styles[&egui::TextStyle::Body].size as f64;
    let line = line * plot.transform().dvalue_dpos()[1].abs();
    let visuals = plot.ctx().global_style().visuals.clone();
    // A label's width in the plot's units.
    let font = egui::TextStyle::Body.resolve(&plot.ctx().global_style());
    let per_point = plot.transform().dvalue_dpos()[0].abs();
    let ctx = plot.ctx().clone();
    let width = |label: &str| {
        let galley = ctx.fonts_mut(|f| f.layout_no_wrap(label.into(), font.clone(), egui::Color32::WHITE));
        galley.size().x as f64 * per_point
    };
    // The labels on the axis: their spans and rows, which the labels past
    // it keep clear of, in the highest row free at the axis's right end
    // (a little in from it, off a line drawn there: the query's).
    let mut taken: Vec<(f64, f64, usize)> = marks
        .iter()
        .zip(&left)
        .zip(&lower)
        .map(|((m, &left), &lower)| {
            let w = width(&format!(" {}", m.label));
            let span = if left { (m.x - w, m.x) } else { (m.x, m.x + w) };
            (span.0, span.1, usize::from(lower))
        })
        .collect();
    let right = end - 6.0 * per_point;
    for mark in &beyond {
        let label = text::past_axis(&mark.label);
        let span = (right - width(&label), right);
        let row = free_row(&taken, span);
        taken.push((span.0, span.1, row));
        let text = egui::RichText::new(label)
            .color(mark.look.label(&visuals))
            .text_style(egui::TextStyle::Body);
        let at = egui_plot::PlotPoint::new(right, top - line * row as f64);
        plot.text(egui_plot::Text::new("", at, text).anchor(egui::Align2::RIGHT_TOP));
    }
    for ((&&PlotMark { x, ref label, look, .. }, left), lower) in marks.iter().zip(left).zip(lower) {
        let top = if lower { top - line } else { top };
        plot.vline(
            egui_plot::VLine::new("", x)
                .color(look.paint(&visuals))
                .width(look.width)
                .style(look.style()),
        );
        let (anchor, label) = if left {
            (egui::Align2::RIGHT_TOP, format!("{label} "))
        } else {
            (egui::Align2::LEFT_TOP, format!(" {label}"))
        };
        let text = egui::RichText::new(label)
            .color(look.label(&visuals))
            .text_style(egui::TextStyle::Body);
        plot.text(egui_plot::Text::new("", egui_plot::PlotPoint::new(x, top), text).anchor(anchor));
    }
}

/// The first row of labels (0 the top) where a label spanning `span`
/// overlaps none of the labels `taken` (each its span and row).
fn free_row(taken: &[(f64, f64, usize)], span: (f64, f64)) -> usize {
    (0..)
        .find(|&row| !taken.iter().any(|&(a, b, r)| r == row && a < span.1 && span.0 < b))
        .expect("a row past every label is free")
}

/// For marks at `xs` (sorted) on an axis ending at `end`: whether each
/// label goes left of its line, and whether it goes a line lower (see
/// [`labelled_marks`]).
fn mark_label_sides(xs: &[f64], end: f64) -> (Vec<bool>, Vec<bool>) {
    let near_end = |x: f64| x > end * 5.0 / 6.0;
    let mut left: Vec<bool> = xs.iter().map(|&x| near_end(x)).collect();
    let mut lower = vec![false; xs.len()];
    for i in 1..xs.len() {
        if xs[i] - xs[i - 1] < end / 10.0 {
            left[i - 1] = true;
            left[i] = near_end(xs[i]);
            lower[i - 1] = left[i];
        }
    }
    (left, lower)
}

fn copy_outcome_id() -> egui::Id {
    egui::Id::unique("nopescope copy outcome")
}

/// Puts `text` on the clipboard for the button `what`; `copy_outcome` then
/// says whether it got there. Natively egui's clipboard is synchronous. On
/// the web the browser may refuse (plain http on a LAN, another site's
/// frame without the permission): the page asks it directly and waits for
/// its answer, so "copied" is never shown for a copy that did not happen.
pub fn copy_to_clipboard(ctx: &egui::Context, text: String, what: &'static str) {
    ctx.data_mut(|d| d.remove::<(&'static str, bool)>(copy_outcome_id()));
    #[cfg(not(target_arch = "wasm32"))]
    {
        ctx.copy_text(text);
        ctx.data_mut(|d| d.insert_temp(copy_outcome_id(), (what, true)));
    }
    #[cfg(target_arch = "wasm32")]
    {
        let ctx = ctx.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let ok = match web_sys::window() {
                Some(w) => wasm_bindgen_futures::JsFuture::from(w.navigator().clipboard().write_text(&text))
                    .await
                    .is_ok(),
                None => false,
            };
            ctx.data_mut(|d| d.insert_temp(copy_outcome_id(), (what, ok)));
            ctx.request_repaint();
        });
    }
}

/// Whether the last copy (`copy_to_clipboard`) of the button `what`
/// reached the clipboard: Some(true) or Some(false), None while waiting
/// or when another button copied last.
pub fn copy_outcome(ctx: &egui::Context, what: &'static str) -> Option<bool> {
    ctx.data(|d| d.get_temp::<(&'static str, bool)>(copy_outcome_id()))
        .filter(|(w, _)| *w == what)
        .map(|(_, ok)| ok)
}

/// The line beside a copy button: copied, or why not.
pub fn show_copy_outcome(ui: &mut egui::Ui, what: &'static str) {
    show_copied(ui, what);
    show_copy_refused(ui, what);
}

/// "copied", once the copy for the button `what` got there.
pub fn show_copied(ui: &mut egui::Ui, what: &'static str) {
    if copy_outcome(ui.ctx(), what) == Some(true) {
        ui.label(text::COPIED);
    }
}

/// Why the copy for the button `what` did not get there, once it did not.
pub fn show_copy_refused(ui: &mut egui::Ui, what: &'static str) {
    if copy_outcome(ui.ctx(), what) == Some(false) {
        ui.label(egui::RichText::new(text::COPY_REFUSED).color(ui.visuals().warn_fg_color));
    }
}

/// A map's legend: `low`, the viridis colour bar, `high`, in a row that
/// wraps on a narrow screen; the high end's response (for its hover).
pub fn bar_legend(
    ui: &mut egui::Ui,
    low: impl Into<egui::WidgetText>,
    high: impl Into<egui::WidgetText>,
) -> egui::Response {
    ui.horizontal_wrapped(|ui| {
        ui.label(low);
        colour_bar(ui);
        bar_end(ui, high)
    })
    .inner
}

/// A colour bar's end label in a wrapping row: on the bar's line when it
/// fits there whole, else from the start of the next line (wrapped there
/// if it must), not with its last word alone under the bar.
fn bar_end(ui: &mut egui::Ui, label: impl Into<egui::WidgetText>) -> egui::Response {
    let label = label.into();
    let whole = label.clone().into_galley(
        ui,
        Some(egui::TextWrapMode::Extend),
        f32::INFINITY,
        egui::TextStyle::Body,
    );
    if whole.size().x > ui.available_width() {
        ui.end_row();
    }
    ui.add(egui::Label::new(label).wrap_mode(egui::TextWrapMode::Wrap))
}

/// The pass key's depth: a slider, then its name as a label of its own,
/// which a wrapping row moves to the next line when it does not fit (as
/// the slider's own text it ran off a phone's screen).
pub fn depth_slider(ui: &mut egui::Ui, depth: &mut f32) {
    let slider = ui.add(egui::Slider::new(depth, 0.0..=1.0));
    let label = ui.label(text::PASSKEY_DEPTH);
    slider.labelled_by(label.id);
}

/// A collapsing header's title, wrapped at the width there is. egui lays
/// such titles out on one line, and a long one ("The text the model
/// reads (1024 tokens, the first of 4 stretches)") widened the whole page
/// past a phone's screen, and every section after it with it.
pub fn header_title(ui: &egui::Ui, title: impl Into<String>) -> egui::WidgetText {
    let width = (ui.available_width() - ui.spacing().indent - ui.spacing().button_padding.x).max(40.0);
    let font = egui::TextStyle::Button.resolve(ui.style());
    let job = egui::text::LayoutJob::simple(title.into(), font, egui::Color32::PLACEHOLDER, width);
    // Laid out here: egui re-wraps any other kind of text on one line.
    egui::WidgetText::Galley(ui.ctx().fonts_mut(|f| f.layout_job(job)))
}

/// The input as the model reads it, token after token, in a scroll box
/// under a collapsed heading: the key sentence on the pass key's yellow,
/// and where the training length L falls, a mark. BertViz's users, and
/// ours, could not see what "depth 0.3" or "a speech" meant without it.
/// `title`: the heading (`text::show_document`, `text::show_passkey_document`).
pub fn document(
    ui: &mut egui::Ui,
    id_salt: &str,
    title: String,
    tokens: &[String],
    key: Option<&std::ops::Range<usize>>,
    training_length: usize,
) {
    egui::CollapsingHeader::new(header_title(ui, title))
        .id_salt(id_salt)
        .show(ui, |ui| {
            let body = egui::TextStyle::Body.resolve(ui.style());
            let plain = egui::text::TextFormat {
                font_id: body,
                color: ui.visuals().text_color(),
                ..Default::default()
            };
            let on_key = egui::text::TextFormat {
                color: egui::Color32::BLACK,
                background: palette::KEY,
                ..plain.clone()
            };
            let mark = egui::text::TextFormat {
                color: ui.visuals().strong_text_color(),
                underline: egui::Stroke::new(1.5, ui.visuals().strong_text_color()),
                ..plain.clone()
            };
            // Runs of tokens that share a look, cut where the key sentence
            // starts and ends and where L falls.
            let n = tokens.len();
            let mut cuts = vec![0, n];
            if let Some(k) = key {
                cuts.extend([k.start.min(n), k.end.min(n)]);
            }
            if training_length < n {
                cuts.push(training_length);
            }
            cuts.sort_unstable();
            cuts.dedup();
            let mut job = egui::text::LayoutJob::default();
            for run in cuts.windows(2) {
                let (a, b) = (run[0], run[1]);
                if a == training_length && a > 0 {
                    job.append(
                        &format!(" {} ", text::document_l_mark(training_length)),
                        0.0,
                        mark.clone(),
                    );
                }
                let in_key = key.is_some_and(|k| k.start <= a && a < k.end);
                let format = if in_key { on_key.clone() } else { plain.clone() };
                job.append(&tokens[a..b].concat(), 0.0, format);
            }
            job.wrap.max_width = ui.available_width();
            egui::ScrollArea::vertical()
                .id_salt((id_salt, "text"))
                .max_height(220.0)
                .show(ui, |ui| ui.label(job));
        });
}

/// Each setting's attention row up to its query, named, for a plot's hover
/// (`text::key_hover`).
pub fn row_readout<'a>(
    rows: &'a [(&'a str, egui::Color32, std::sync::Arc<super::jobs::JobResult>)],
) -> Vec<(&'a str, &'a [f32])> {
    rows.iter()
        .filter_map(|(name, _, r)| match r.as_ref() {
            super::jobs::JobResult::AttnRow(a) => Some((*name, &a.row[..=a.query])),
            _ => None,
        })
        .collect()
}

/// Draws `add` in an outline where the walkthrough's step points
/// (`lit`: `tour::spot`), in an invisible one of the same size where it
/// points elsewhere (so nothing moves from step to step), and as it is
/// while the walkthrough is closed. The outline is in the theme's
/// selection colour: the interface's, no series' or mark's.
pub fn spotlight<R>(ui: &mut egui::Ui, lit: Option<bool>, add: impl FnOnce(&mut egui::Ui) -> R) -> R {
    outline(ui, lit, true, add)
}

/// `spotlight` around what `add` draws, as wide as that (beside other
/// parts in a row) rather than the whole width.
pub fn spotlight_fit<R>(ui: &mut egui::Ui, lit: Option<bool>, add: impl FnOnce(&mut egui::Ui) -> R) -> R {
    outline(ui, lit, false, add)
}

/// The width `spotlight` adds around a part (both sides), in points.
pub const SPOTLIGHT_PAD: f32 = 2.0 * (SPOTLIGHT_MARGIN + SPOTLIGHT_WIDTH);

fn outline<R>(ui: &mut egui::Ui, lit: Option<bool>, fill: bool, add: impl FnOnce(&mut egui::Ui) -> R) -> R {
    let Some(lit) = lit else {
        return add(ui);
    };
    let colour = if lit {
        ui.visuals().selection.stroke.color
    } else {
        egui::Color32::TRANSPARENT
    };
    let shown = egui::Frame::new()
        .stroke(egui::Stroke::new(SPOTLIGHT_WIDTH, colour))
        .inner_margin(SPOTLIGHT_MARGIN)
        .corner_radius(4.0)
        .show(ui, |ui| {
            if fill {
                ui.set_width(ui.available_width());
            }
            add(ui)
        });
    // A step's first lit part is scrolled into view once, when the step
    // has opened and its results are in (they change the layout above
    // it): in a narrow window the panels stack and step 3's plot was
    // below the fold while the step said to look at it.
    if lit {
        let (step, scrolled) = ui.ctx().data(|d| {
            (
                d.get_temp::<Option<usize>>(egui::Id::unique(TOUR_STEP_ID)).flatten(),
                d.get_temp::<Option<usize>>(egui::Id::unique(SCROLLED_FOR_ID)).flatten(),
            )
        });
        // Not in a pass egui will discard (its scroll would be lost with it).
        if step.is_some() && step != scrolled && !ui.ctx().will_discard() && !ui.is_sizing_pass() {
            ui.scroll_to_rect(shown.response.rect, None);
            ui.ctx()
                .data_mut(|d| d.insert_temp(egui::Id::unique(SCROLLED_FOR_ID), step));
        }
    }
    shown.inner
}

const TOUR_STEP_ID: &str = "nopescope walkthrough step";
const SCROLLED_FOR_ID: &str = "nopescope spotlight scrolled for";

/// Tells the spotlights which walkthrough step is open (None: closed, or
/// its views still computing: `settled` false), once a frame before any
/// is drawn.
pub fn note_tour_step(ctx: &egui::Context, step: Option<usize>, settled: bool) {
    ctx.data_mut(|d| {
        d.insert_temp(egui::Id::unique(TOUR_STEP_ID), step.filter(|_| settled));
        // Closed: the next opening scrolls again.
        if step.is_none() {
            d.insert_temp(egui::Id::unique(SCROLLED_FOR_ID), None::<usize>);
        }
    });
}

/// The walkthrough's outline, in points.
const SPOTLIGHT_WIDTH: f32 = 2.0;
/// The space between the outline and what it holds, in points.
const SPOTLIGHT_MARGIN: f32 = 6.0;

/// One entry of a legend above a plot: a line's name and how it is drawn.
#[derive(Clone)]
pub struct LegendEntry {
    pub name: String,
    pub look: Look,
    /// Whether a click hides and shows its line (a mark, such as the
    /// training length, stays).
    pub toggles: bool,
}

impl LegendEntry {
    pub fn line(name: impl Into<String>, look: Look) -> Self {
        LegendEntry {
            name: name.into(),
            look,
            toggles: true,
        }
    }

    pub fn mark(name: impl Into<String>, look: Look) -> Self {
        LegendEntry {
            toggles: false,
            ..LegendEntry::line(name, look)
        }
    }
}

/// A legend swatch's width, in points.
const SWATCH: f32 = 22.0;

/// A legend's swatch of `look`, in `colour`, across the middle of `rect`.
fn paint_swatch(painter: &egui::Painter, rect: egui::Rect, look: &Look, colour: egui::Color32) {
    let y = rect.center().y;
    let ends = [egui::pos2(rect.left() + 1.0, y), egui::pos2(rect.right() - 1.0, y)];
    let stroke = egui::Stroke::new(look.width, colour);
    match look.pattern {
        Pattern::Solid => {
            painter.line_segment(ends, stroke);
        }
        Pattern::Dashed => painter.extend(palette::dashed_line(&ends, stroke)),
        // egui_plot's dots: circles of the line's half width.
        Pattern::Dotted => painter.extend(egui::Shape::dotted_line(
            &ends,
            colour,
            palette::DOT_SPACING,
            look.width / 2.0,
        )),
        Pattern::Markers => {
            painter.circle_filled(rect.center(), 3.5, colour);
        }
    }
}

/// A line's swatch on its own, before a sentence about its setting.
pub fn swatch(ui: &mut egui::Ui, look: &Look) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(SWATCH, 14.0), egui::Sense::hover());
    paint_swatch(ui.painter(), rect, look, look.paint(ui.visuals()));
}

/// The lines a legend's reader has hidden.
#[derive(Clone, Default)]
pub struct Hidden(Vec<String>);

impl Hidden {
    pub fn shows(&self, name: &str) -> bool {
        !self.0.iter().any(|n| n == name)
    }
}

/// The legend of one plot, or of several that share their lines, above
/// them, never over a curve: a swatch drawn as its line is (width,
/// lightness, dashes) and its name, in a row that wraps. A click (or
/// Enter) on an entry hides its line and a second shows it again, its
/// swatch and name greyed meanwhile. `id` keeps what is hidden from frame
/// to frame; the plots ask the returned [`Hidden`] what to draw.
pub fn legend_row(ui: &mut egui::Ui, id: &str, entries: &[LegendEntry]) -> Hidden {
    legend_row_after(ui, id, entries, |_| ()).0
}

/// [`legend_row`], after a control of the plot's own (`lead`, in the same
/// row: the row plots' log-scale checkbox).
pub fn legend_row_after<R>(
    ui: &mut egui::Ui,
    id: &str,
    entries: &[LegendEntry],
    lead: impl FnOnce(&mut egui::Ui) -> R,
) -> (Hidden, R) {
    let key = legend_key(id);
    let mut hidden: Hidden = ui.data(|d| d.get_temp(key)).unwrap_or_default();
    let led = ui.horizontal_wrapped(|ui| {
        let led = lead(ui);
        for entry in entries {
            legend_entry(ui, entry, &mut hidden, true);
            ui.add_space(10.0);
        }
        led
    });
    ui.data_mut(|d| d.insert_temp(key, hidden.clone()));
    (hidden, led.inner)
}

/// A legend as a table, for a plot whose lines are a few curves (columns:
/// the mean over heads, the selected head, each pinned head) under a few
/// settings (rows): each cell is its line's swatch, toggled as in
/// [`legend_row`] and named in full for screen readers and the hover;
/// `after` (the ceiling) follows in a row. Where the table would not fit,
/// the same entries in a row that wraps. Nine names in a row read as a
/// list to untangle; as a table, the colour names the curve and the dash
/// the setting at a glance.
pub fn legend_table(
    ui: &mut egui::Ui,
    id: &str,
    rows: &[String],
    cols: &[String],
    cells: &[Vec<Option<LegendEntry>>],
    after: &[LegendEntry],
) -> Hidden {
    let width = |ui: &egui::Ui, t: &str| one_line(ui, t).size().x;
    const GAP: f32 = 14.0;
    let row_w = rows.iter().map(|r| width(ui, r)).fold(0.0, f32::max);
    let cols_w: f32 = cols.iter().map(|c| width(ui, c).max(SWATCH) + GAP).sum();
    if row_w + GAP + cols_w > ui.available_width() {
        let flat: Vec<LegendEntry> = cells.iter().flatten().flatten().chain(after).cloned().collect();
        return legend_row(ui, id, &flat);
    }
    let key = legend_key(id);
    let mut hidden: Hidden = ui.data(|d| d.get_temp(key)).unwrap_or_default();
    egui::Grid::new(("legend table", id))
        .spacing([GAP, 2.0])
        .show(ui, |ui| {
            ui.allocate_space(egui::vec2(0.0, 0.0));
            for c in cols {
                ui.label(egui::RichText::new(c.as_str()).weak());
            }
            ui.end_row();
            for (r, row) in rows.iter().zip(cells) {
                ui.label(r.as_str());
                for cell in row {
                    match cell {
                        Some(entry) => legend_entry(ui, entry, &mut hidden, false),
                        None => {
                            ui.allocate_space(egui::vec2(SWATCH, 14.0));
                        }
                    }
                }
                ui.end_row();
            }
        });
    // The row under it keeps the same lines' state.
    ui.data_mut(|d| d.insert_temp(key, hidden));
    legend_row(ui, id, after)
}

fn legend_key(id: &str) -> egui::Id {
    egui::Id::unique(("nopescope legend", id))
}

/// `text` laid out on one line in the body style.
fn one_line(ui: &egui::Ui, text: &str) -> std::sync::Arc<egui::Galley> {
    egui::WidgetText::from(text).into_galley(
        ui,
        Some(egui::TextWrapMode::Extend),
        f32::INFINITY,
        egui::TextStyle::Body,
    )
}

/// One legend entry: its swatch drawn as its line is, its name beside it
/// (`named`) or only on hover, and a click or Enter hiding and showing
/// its line.
fn legend_entry(ui: &mut egui::Ui, entry: &LegendEntry, hidden: &mut Hidden, named: bool) {
    let shown = hidden.shows(&entry.name);
    let text_colour = if shown {
        ui.visuals().text_color()
    } else {
        ui.visuals().weak_text_color()
    };
    let galley = named.then(|| one_line(ui, &entry.name));
    let text_w = galley.as_ref().map_or(0.0, |g| 4.0 + g.size().x);
    let text_h = galley.as_ref().map_or(14.0, |g| g.size().y.max(14.0));
    let sense = if entry.toggles {
        egui::Sense::click()
    } else {
        egui::Sense::hover()
    };
    let (rect, response) = ui.allocate_exact_size(egui::vec2(SWATCH + text_w, text_h), sense);
    let colour = if shown {
        entry.look.paint(ui.visuals())
    } else {
        ui.visuals().weak_text_color().gamma_multiply(0.5)
    };
    paint_swatch(
        ui.painter(),
        egui::Rect::from_min_size(rect.min, egui::vec2(SWATCH, rect.height())),
        &entry.look,
        colour,
    );
    if let Some(galley) = galley {
        let y = rect.center().y - galley.size().y / 2.0;
        ui.painter()
            .galley(egui::pos2(rect.left() + SWATCH + 4.0, y), galley, text_colour);
    }
    if entry.toggles {
        if response.has_focus() || response.hovered() {
            ui.painter().rect_stroke(
                rect.expand(2.0),
                2.0,
                ui.visuals().widgets.hovered.bg_stroke,
                egui::StrokeKind::Outside,
            );
        }
        let hint = if shown { text::LEGEND_HIDE } else { text::LEGEND_SHOW };
        let response = if named {
            response.on_hover_text(hint)
        } else {
            response.on_hover_text(format!("{}\n{hint}", entry.name))
        };
        let response = response.on_hover_cursor(egui::CursorIcon::PointingHand);
        response.widget_info(|| egui::WidgetInfo::selected(egui::Role::CheckBox, true, shown, &entry.name));
        if response.clicked() {
            if shown {
                hidden.0.push(entry.name.clone());
            } else {
                hidden.0.retain(|n| n != &entry.name);
            }
        }
    } else {
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Label, true, &entry.name));
    }
}

/// Labelled lines at least this far apart (points) on a plot's x axis and
/// on its y axis: egui_plot shows a tick label fully from 80 (x) and 30
/// (y) points apart, and none under 60 and 20.
pub const X_LABEL_GAP: f64 = 80.0;
pub const Y_LABEL_GAP: f64 = 30.0;

/// A grid spacer of steps of 1, 2 or 5 times a power of ten (whole numbers
/// with `whole`), the smallest whose lines lie `gap` points apart, so a
/// short axis still carries a few labels: egui_plot's default steps by
/// powers of ten only, which can leave an axis of 0 to 0.9 with one label
/// (its 0.1 lines too close to label) or an axis of 6 steps with faint ones.
pub fn nice_grid(gap: f64, whole: bool) -> impl Fn(egui_plot::GridInput) -> Vec<egui_plot::GridMark> {
    move |input| {
        // `base_step_size` is the value across egui_plot's default
        // smallest grid spacing, 8 points.
        let want = input.base_step_size / 8.0 * gap;
        let mut step = 10f64.powf(want.log10().floor());
        for m in [1.0, 2.0, 5.0, 10.0] {
            if m * step >= want {
                step *= m;
                break;
            }
        }
        if whole {
            step = step.max(1.0).round();
        }
        let (lo, hi) = input.bounds;
        if !(step > 0.0 && step.is_finite() && hi >= lo) {
            return Vec::new();
        }
        let first = (lo / step).ceil() as i64;
        let last = (hi / step).floor() as i64;
        (first..=last.min(first + 1000))
            .map(|k| egui_plot::GridMark {
                value: k as f64 * step,
                step_size: step,
            })
            .collect()
    }
}

/// A plot whose value axis steps by 1, 2 or 5 x 10^k with labels
/// `Y_LABEL_GAP` apart (`nice_grid`, `nice_label`): an attention row whose
/// one spike nears 1 showed no label but 0 on egui_plot's default grid.
/// The mouse wheel scrolls the page, not the plot (it moved an embed's
/// plot to an empty range, and the page would not scroll under it);
/// dragging still pans, Ctrl + wheel zooms, a double click resets.
pub fn nice_y(plot: egui_plot::Plot<'_>) -> egui_plot::Plot<'_> {
    plot.y_grid_spacer(nice_grid(Y_LABEL_GAP, false))
        .y_axis_formatter(nice_label)
        .allow_scroll(false)
}

/// A plot whose x axis steps by 1, 2 or 5 x 10^k (whole numbers with
/// `whole`: token positions, steps), every line alike. egui_plot's default
/// drew the lines at each thousand (and at 0) as strongly as a mark, and
/// readers took the one near a 1024-token input's end for one; at 0.1
/// entropy bits it drew a dense mesh. Lines reach full strength 600
/// points apart (egui_plot: 300), so these, 80 to 200 apart, stay below
/// the curves and marks. The wheel scrolls the page, as in `nice_y`.
pub fn nice_x(plot: egui_plot::Plot<'_>, whole: bool) -> egui_plot::Plot<'_> {
    plot.x_grid_spacer(nice_grid(X_LABEL_GAP, whole))
        .x_axis_formatter(nice_label)
        .grid_spacing(8.0..=600.0)
        .allow_scroll(false)
}

/// A plot whose x axis is token positions (`nice_x`, whole steps).
pub fn positions_x(plot: egui_plot::Plot<'_>) -> egui_plot::Plot<'_> {
    nice_x(plot, true)
}

/// A tick label of a `nice_grid` axis: as many decimals as its step needs
/// (0.005: three; egui_plot's default rounds the step's to two and shows
/// 0.015 as 0.01).
pub fn nice_label(mark: egui_plot::GridMark, _range: &std::ops::RangeInclusive<f64>) -> String {
    let decimals = (-mark.step_size.log10().floor()).clamp(0.0, 9.0) as usize;
    format!("{:.*}", decimals, mark.value)
}

/// The viridis colour bar of the maps, low to high (its ends are the
/// caller's labels).
pub fn colour_bar(ui: &mut egui::Ui) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(160.0, 14.0), egui::Sense::hover());
    let steps = 32;
    for i in 0..steps {
        let x0 = rect.left() + rect.width() * i as f32 / steps as f32;
        let x1 = rect.left() + rect.width() * (i + 1) as f32 / steps as f32;
        let r = egui::Rect::from_min_max(egui::pos2(x0, rect.top()), egui::pos2(x1 + 0.5, rect.bottom()));
        ui.painter()
            .rect_filled(r, 0.0, palette::viridis((i as f32 + 0.5) / steps as f32));
    }
}

/// Progress of a running entry, or its error; true when there is nothing
/// to draw yet.
pub fn show_entry_status(ui: &mut egui::Ui, entry: &Entry) {
    match entry {
        Entry::Running { fraction, message, .. } => {
            ui.add(
                egui::ProgressBar::new(*fraction)
                    .text(if message == text::WORKING {
                        message.clone()
                    } else {
                        format!("{}: {message}", text::WORKING)
                    })
                    .desired_width(ui.available_width().min(360.0)),
            );
        }
        Entry::Failed(e) => {
            ui.colored_label(palette::ERROR, text::error(e));
        }
        Entry::Stopped(Some(_)) => {
            ui.label(egui::RichText::new(text::STOPPED_PART_WAY).weak());
        }
        Entry::Stopped(None) => {
            ui.label(egui::RichText::new(text::CANCELLED).weak());
        }
        Entry::Done(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::ModelChoice;

    /// Mark labels: right of their line, left near the axis's end; two
    /// close lines on opposite sides, or both left (the left one lower)
    /// where the right one is near the end.
    #[test]
    fn mark_labels_stay_apart_and_inside_the_plot() {
        // (left, lower) for marks at xs on an axis ending at 1000.
        let sides = |xs: &[f64]| mark_label_sides(xs, 1000.0);
        assert_eq!(sides(&[256.0]), (vec![false], vec![false]));
        assert_eq!(sides(&[900.0]), (vec![true], vec![false]));
        assert_eq!(sides(&[256.0, 600.0]), (vec![false, false], vec![false, false]));
        assert_eq!(sides(&[256.0, 300.0]), (vec![true, false], vec![false, false]));
        // Before 2026-12-01 the right one's label went right, past the end.
        assert_eq!(sides(&[850.0, 900.0]), (vec![true, true], vec![true, false]));
    }

    /// A label past the axis takes the top row unless a label there
    /// overlaps it, then the next free one.
    #[test]
    fn labels_past_the_axis_keep_clear_of_the_others() {
        assert_eq!(free_row(&[], (800.0, 990.0)), 0);
        assert_eq!(free_row(&[(100.0, 200.0, 0)], (800.0, 990.0)), 0);
        assert_eq!(free_row(&[(700.0, 850.0, 0)], (800.0, 990.0)), 1);
        assert_eq!(free_row(&[(700.0, 850.0, 0), (900.0, 950.0, 1)], (800.0, 990.0)), 2);
        // Touching is not overlapping.
        assert_eq!(free_row(&[(600.0, 800.0, 0)], (800.0, 990.0)), 0);
    }

    /// A short axis gets lines 1, 2 or 5 x 10^k apart, labelled ones at
    /// least the gap apart: 0 .. 0.92 over 175 points, 30 apart, steps
    /// by 0.2 (egui_plot's powers of ten: 0.1, 19 points, unlabelled); 6
    /// search steps over 310 points, 80 apart, by 2 whole steps.
    #[test]
    fn the_nice_grid_keeps_labels_apart() {
        let input = |lo: f64, hi: f64, points: f64| egui_plot::GridInput {
            bounds: (lo, hi),
            base_step_size: (hi - lo) / points * 8.0,
        };
        let values = |marks: Vec<egui_plot::GridMark>| marks.iter().map(|m| m.value).collect::<Vec<_>>();
        let y = values(nice_grid(Y_LABEL_GAP, false)(input(0.0, 0.923, 175.0)));
        assert_eq!(y.len(), 5, "{y:?}");
        for (v, want) in y.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8]) {
            assert!((v - want).abs() < 1e-9, "{y:?}");
        }
        assert_eq!(
            values(nice_grid(X_LABEL_GAP, true)(input(0.75, 6.25, 310.0))),
            [2.0, 4.0, 6.0]
        );
        // Whole steps never go under 1, and a degenerate axis has no lines.
        assert_eq!(
            values(nice_grid(X_LABEL_GAP, true)(input(1.0, 3.0, 2000.0))),
            [1.0, 2.0, 3.0]
        );
        assert!(nice_grid(Y_LABEL_GAP, false)(input(1.0, 1.0, 100.0)).len() <= 1);
        let label = |value, step_size| nice_label(egui_plot::GridMark { value, step_size }, &(0.0..=1.0));
        assert_eq!(
            [
                label(0.015, 0.005),
                label(0.4, 0.2),
                label(4.0, 2.0),
                label(300.0, 100.0)
            ],
            ["0.015", "0.4", "4", "300"]
        );
    }

    /// The unscaled setting is named (and coloured) after the model in
    /// view: the RoPE twin's is not "NoPE (s = 1)".
    #[test]
    fn the_unscaled_setting_is_named_after_the_model() {
        for (model, name, colour) in [
            (ModelChoice::Nope, text::BEFORE, palette::NOPE),
            (ModelChoice::Rope, text::BEFORE_ROPE, palette::ROPE),
        ] {
            let state = ViewState {
                model,
                ..ViewState::default()
            };
            let keys = Keys::of(&state, ModelInfo::of(model).unwrap());
            let settings = keys.settings();
            assert_eq!(settings.len(), 1, "{model:?}: s = 1 only");
            assert_eq!((settings[0].0, settings[0].2), (name, colour), "{model:?}");
        }
    }
}
