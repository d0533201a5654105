//! The selected head's attention: one query's row over every key (the
//! pass key's position marked, tokens on hover), and the whole T x T
//! pattern pooled to at most 512 x 512 cells as a texture; NoPE and the
//! current scales side by side.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints, VLine};

use super::entropy::binned;
use super::{show_entry_status, Keys, LegendEntry, PlotMark};
use crate::app::export;
use crate::app::jobs::{AttnRowResult, Entry, JobKey, JobResult, Jobs, PooledResult};
use crate::app::palette::{self, Look};
use crate::app::state::ViewState;
use crate::app::text;

/// Side of each pooled map on screen, in points: as wide as the maps can
/// share the view's width, between these.
const MAP_SIDE: std::ops::RangeInclusive<f32> = 256.0..=512.0;

/// The positions (first, last) of bin `a` of `n` over `length` tokens
/// (position x is in bin x n / length).
fn bin_span(a: usize, n: usize, length: usize) -> (usize, usize) {
    let first = (a * length).div_ceil(n);
    let last = ((a + 1) * length).div_ceil(n).max(first + 1) - 1;
    (first, last.min(length.saturating_sub(1)))
}

/// The document longer than this many tokens up to the query is shown in
/// stretches (`text_spans`).
const ON_TEXT_WHOLE: usize = 400;
/// Tokens shown either side of each most attended token, and before the
/// query, in a long document.
const ON_TEXT_CONTEXT: usize = 24;
/// How many of the most attended tokens are named.
const ON_TEXT_TOP: usize = 5;

/// The query's row's most attended positions, most first (at most `n`,
/// none with no attention).
fn most_attended(row: &[f32], n: usize) -> Vec<usize> {
    // Drawn each frame over up to 16,384 keys: the top n picked, then
    // only they sorted.
    let most = |&a: &usize, &b: &usize| row[b].total_cmp(&row[a]).then(a.cmp(&b));
    let mut order: Vec<usize> = (0..row.len()).filter(|&j| row[j] > 0.0).collect();
    if n < order.len() {
        order.select_nth_unstable_by(n, most);
        order.truncate(n);
    }
    order.sort_by(most);
    order
}

/// The stretches of positions 0..=query to show, in order: all of them
/// up to `whole` tokens, else `context` tokens either side of each `top`
/// position and before the query, overlapping stretches merged.
fn text_spans(query: usize, top: &[usize], whole: usize, context: usize) -> Vec<std::ops::Range<usize>> {
    if query < whole {
        return std::iter::once(0..query + 1).collect();
    }
    let mut spans: Vec<std::ops::Range<usize>> = top
        .iter()
        .filter(|&&j| j <= query)
        .map(|&j| j.saturating_sub(context)..(j + context + 1).min(query + 1))
        .chain(std::iter::once(query.saturating_sub(context)..query + 1))
        .collect();
    spans.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for r in spans {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// The text the query reads, each token shaded by its attention (BertViz
/// shows attention over the words; the row plot alone told a class
/// nothing about which words): one setting's row at a time, its most
/// attended tokens named.
pub(super) fn on_text(
    ui: &mut egui::Ui,
    id: &str,
    tokens: &[String],
    rows: &[(&str, egui::Color32, std::sync::Arc<JobResult>)],
) {
    let rows: Vec<(&str, egui::Color32, &AttnRowResult)> = rows
        .iter()
        .filter_map(|(n, c, r)| match r.as_ref() {
            JobResult::AttnRow(a) => Some((*n, *c, a)),
            _ => None,
        })
        .collect();
    if rows.is_empty() || tokens.is_empty() || rows.iter().any(|(_, _, a)| a.row.is_empty()) {
        return;
    }
    egui::CollapsingHeader::new(super::header_title(ui, text::ON_TEXT_HEADING))
        .id_salt(("attention on text", id))
        .default_open(true)
        .show(ui, |ui| {
            ui.label(egui::RichText::new(text::ON_TEXT_HELP).weak());
            let choice_id = egui::Id::unique(("attention on text setting", id));
            let mut choice: usize = ui.data(|d| d.get_temp(choice_id)).unwrap_or(0).min(rows.len() - 1);
            if rows.len() > 1 {
                ui.horizontal_wrapped(|ui| {
                    ui.label(text::ON_TEXT_SHADED_BY);
                    for (k, (name, _, _)) in rows.iter().enumerate() {
                        ui.selectable_value(&mut choice, k, *name);
                    }
                });
                ui.data_mut(|d| d.insert_temp(choice_id, choice));
            }
            let (_, colour, a) = rows[choice];
            let query = a.query.min(tokens.len() - 1);
            let row = &a.row[..=query.min(a.row.len() - 1)];
            let top = most_attended(row, ON_TEXT_TOP);
            let token = |j: usize| tokens.get(j).map(String::as_str).unwrap_or("");
            // Those with at least a quarter of the top one's attention.
            let first = top.first().map_or(0.0, |&j| row[j]);
            let named: Vec<(&str, usize, f32)> = top
                .iter()
                .filter(|&&j| row[j] >= 0.25 * first)
                .map(|&j| (token(j), j, row[j]))
                .collect();
            ui.label(text::most_attended(&named));
            let max = top.first().map_or(1.0, |&j| row[j]).max(1e-12);
            let body = egui::TextStyle::Body.resolve(ui.style());
            let back = ui.visuals().extreme_bg_color;
            let mut job = egui::text::LayoutJob::default();
            for (k, span) in text_spans(query, &top, ON_TEXT_WHOLE, ON_TEXT_CONTEXT)
                .into_iter()
                .enumerate()
            {
                if k > 0 || span.start > 0 {
                    job.append(
                        text::ON_TEXT_GAP,
                        0.0,
                        egui::text::TextFormat {
                            font_id: body.clone(),
                            color: ui.visuals().weak_text_color(),
                            ..Default::default()
                        },
                    );
                }
                for j in span {
                    // The square root: a token with a quarter of the top
                    // weight still shows, at half the shade.
                    let t = (row.get(j).copied().unwrap_or(0.0) / max).clamp(0.0, 1.0).sqrt();
                    let fill = palette::mix(back, colour, t);
                    let here = j == query;
                    job.append(
                        token(j),
                        0.0,
                        egui::text::TextFormat {
                            font_id: body.clone(),
                            color: palette::text_on(fill),
                            background: fill,
                            underline: if here {
                                egui::Stroke::new(2.0, palette::QUERY)
                            } else {
                                egui::Stroke::NONE
                            },
                            ..Default::default()
                        },
                    );
                }
            }
            job.wrap.max_width = ui.available_width();
            egui::ScrollArea::vertical()
                .id_salt(("attention on text scroll", id))
                .max_height(200.0)
                .stick_to_bottom(true)
                .show(ui, |ui| ui.label(job));
        });
}

/// Width of the query axis' labels left of a pooled map, and height of
/// one line of the key axis' under it (its ticks, then L), in points.
const GUTTER: f32 = 40.0;
const STRIP: f32 = 16.0;

/// Positions to label on a length axis of `length` tokens drawn `side`
/// points long: every multiple of the smallest step of 1, 2 or 5 times a
/// power of ten whose labels stand at least 56 points apart.
fn length_ticks(length: usize, side: f32) -> Vec<usize> {
    let want = 56.0 * length as f64 / side.max(1.0) as f64;
    let mut step = 10f64.powf(want.max(1.0).log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * step >= want {
            step *= m;
            break;
        }
    }
    let step = (step as usize).max(1);
    (0..length).step_by(step).collect()
}

/// A pooled map's axes, painted beside it: query positions left of it and
/// key positions under it, with ticks; and the training length L, when
/// the map reaches past it, dashed across the map (the row of query L over
/// keys 0..L, the column of key L over queries L..T) and labelled on both
/// axes.
fn paint_map_axes(ui: &egui::Ui, map: egui::Rect, length: usize, training: usize) {
    let painter = ui.painter();
    let colour = ui.visuals().text_color();
    let tick = ui.visuals().widgets.noninteractive.bg_stroke;
    let font = egui::TextStyle::Small.resolve(ui.style());
    let at = |i: usize| i as f32 / length.max(1) as f32 * map.width();
    for i in length_ticks(length, map.width()) {
        let (x, y) = (map.left() + at(i), map.top() + at(i));
        painter.line_segment([egui::pos2(x, map.bottom()), egui::pos2(x, map.bottom() + 4.0)], tick);
        painter.text(
            egui::pos2(x, map.bottom() + 4.0),
            egui::Align2::CENTER_TOP,
            i.to_string(),
            font.clone(),
            colour,
        );
        painter.line_segment([egui::pos2(map.left() - 4.0, y), egui::pos2(map.left(), y)], tick);
        painter.text(
            egui::pos2(map.left() - 6.0, y),
            egui::Align2::RIGHT_CENTER,
            i.to_string(),
            font.clone(),
            colour,
        );
    }
    if training > 0 && training < length {
        let look = Look::training_length();
        let (x, y) = (map.left() + at(training), map.top() + at(training));
        let stroke = egui::Stroke::new(1.5, look.paint(ui.visuals()));
        let dash = |a, b| palette::dashed_line(&[a, b], stroke);
        painter.extend(dash(egui::pos2(map.left(), y), egui::pos2(x, y)));
        painter.extend(dash(egui::pos2(x, y), egui::pos2(x, map.bottom())));
        let label = look.label(ui.visuals());
        painter.text(
            egui::pos2(x, map.bottom() + 4.0 + font.size + 2.0),
            egui::Align2::CENTER_TOP,
            "L",
            font.clone(),
            label,
        );
        painter.text(
            egui::pos2(map.left() - GUTTER + 2.0, y),
            egui::Align2::LEFT_CENTER,
            "L",
            font,
            label,
        );
    }
}

#[derive(Default)]
pub struct AttentionView {
    textures: HashMap<JobKey, egui::TextureHandle>,
    /// The rows last drawn whole, and the pooled maps, each with the
    /// entropy profile of their input (its length and tokens): drawn on,
    /// with a note, while the next length computes (as the entropy plot
    /// is), where only the length changed, for the same head (and query,
    /// for the rows). Play's lengths left the section blank in between,
    /// and the page under it shrank and grew.
    last_rows: Option<(Drawn, Arc<JobResult>, Rows)>,
    last_pooled: Option<(Drawn, Arc<JobResult>, Maps)>,
}

/// Each setting's pooled map, with its job, as drawn.
type Maps = Vec<(JobKey, Arc<JobResult>)>;

/// Each setting's name, colour and attention row, as drawn.
type Rows = Vec<(&'static str, egui::Color32, Arc<JobResult>)>;

/// What a view of the section was drawn over: all but the length, the
/// head and the query asked for (none for the pooled maps).
#[derive(PartialEq)]
struct Drawn {
    view: super::AllButLength,
    head: (usize, usize),
    query: Option<usize>,
}

/// A pooled map as shown: its setting's name, its job, the input's tokens
/// (for the hover), its side in points and the model's L.
struct ShownMap<'a> {
    name: &'a str,
    key: &'a JobKey,
    map: &'a PooledResult,
    tokens: &'a [String],
    side: f32,
    training: usize,
}

/// An entropy profile's length, retrieval query and tokens.
fn profile_of(r: &JobResult) -> Option<(usize, Option<usize>, &[String])> {
    match r {
        JobResult::Entropy(p) => Some((p.length, p.retrieval_query, &p.tokens)),
        _ => None,
    }
}

/// Colour of a pooled cell: log scale from 1e-4 (dark) to 1 (bright);
/// cells above the diagonal (keys after every query of the bin) are masked:
/// transparent, so the panel's own background shows there in either theme
/// (a fixed dark grey sat heavily on the light one).
fn pooled_image(p: &PooledResult) -> egui::ColorImage {
    let n = p.n;
    let mut pixels = Vec::with_capacity(n * n);
    for a in 0..n {
        for b in 0..n {
            let v = p.map[a * n + b];
            pixels.push(if b > a {
                egui::Color32::TRANSPARENT
            } else {
                palette::viridis((v.max(1e-6).log10() + 4.0) / 4.0)
            });
        }
    }
    egui::ColorImage::new([n, n], pixels)
}

/// The pooled map as an exportable grid: attention per (query bin, key
/// bin), bins named by their first token; cells above the diagonal empty.
fn pooled_grid(p: &PooledResult, stem: String, title: String) -> export::Grid {
    let n = p.n;
    let names: Vec<String> = (0..n).map(|a| (a * p.length / n.max(1)).to_string()).collect();
    let values = (0..n * n)
        .map(|k| if k % n > k / n { f64::NAN } else { p.map[k] as f64 })
        .collect();
    export::Grid {
        stem,
        title,
        row_label: text::POOLED_ROWS.into(),
        col_label: text::POOLED_COLS.into(),
        value_label: text::POOLED_VALUE.into(),
        rows: names.clone(),
        cols: names,
        values,
        lo: 1e-4,
        hi: 1.0,
        log_colour: true,
    }
}

/// The largest weight the rows' plot draws: each row up to its query, in
/// the bins it is drawn in (a long row's lone spike averages down with its
/// bin), and at least 1e-3. The marks' labels stand above it.
fn rows_top(rows: &[(&str, egui::Color32, std::sync::Arc<JobResult>)]) -> f64 {
    rows.iter()
        .filter_map(|(_, _, r)| match r.as_ref() {
            JobResult::AttnRow(a) => Some(binned(&a.row[..=a.query]).iter().fold(0.0f64, |m, p| m.max(p[1]))),
            _ => None,
        })
        .fold(1e-3, f64::max)
}

/// A query puts at least this share of its attention on the first token
/// for the view to call it a sink (and say what one is).
const SINK_SHARE: f32 = 0.3;
/// Nor before this many keys, where the first token is one of a few.
const SINK_MIN_KEYS: usize = 16;

/// The share of a row's attention on the first token when that makes the
/// first token a sink.
fn sink_share(a: &AttnRowResult) -> Option<f32> {
    let first = *a.row.first()?;
    (a.query + 1 >= SINK_MIN_KEYS && first >= SINK_SHARE).then_some(first)
}

/// Each setting's attention row up to its query, as an exported series
/// (the pass-key lab's row exports the same).
pub(super) fn row_series(rows: &[(&str, egui::Color32, Arc<JobResult>)]) -> Vec<export::Series> {
    rows.iter()
        .filter_map(|(name, colour, r)| match r.as_ref() {
            JobResult::AttnRow(a) => Some(export::Series {
                name: name.to_string(),
                look: Look::line(*colour),
                points: export::indexed(&a.row[..=a.query]),
            }),
            _ => None,
        })
        .collect()
}

/// Each setting's attention row up to its query, as lines on `axis` (the
/// pass-key lab's row plot draws the same).
pub(super) fn row_lines(
    plot: &mut egui_plot::PlotUi<'_>,
    rows: &[(&str, egui::Color32, Arc<JobResult>)],
    axis: super::WeightAxis,
) {
    for (name, colour, r) in rows {
        let JobResult::AttnRow(a) = r.as_ref() else { continue };
        plot.line(
            Line::new(*name, PlotPoints::from(axis.points(&a.row[..=a.query])))
                .color(*colour)
                .width(palette::LINE_WIDTH),
        );
    }
}

/// The last rows drawn, under a note naming their input's length, while
/// this one's compute (`last`: the entropy profile they were drawn over).
fn draw_kept_rows(ui: &mut egui::Ui, last: &JobResult, rows: &Rows, keys: &Keys, state: &ViewState) {
    let (length, _, tokens) = profile_of(last).unwrap_or((0, None, &[]));
    ui.label(egui::RichText::new(text::shown_meanwhile(text::MEANWHILE_ROW, length)).weak());
    draw_rows(ui, rows.clone(), tokens, keys, state);
}

/// The rows' plot (legend, marks, hover, export), the notes on each row's
/// key and sink, and the text shaded by them.
fn draw_rows(ui: &mut egui::Ui, mut rows: Rows, tokens: &[String], keys: &Keys, state: &ViewState) {
    let row_query = rows.iter().find_map(|(_, _, r)| match r.as_ref() {
        JobResult::AttnRow(a) => Some((a.query, a.key.as_ref().map(|k| k.sentence.start))),
        _ => None,
    });
    if let Some((shown_query, key_position)) = row_query {
        // Above its plot: under it, it read as the pooled map's caption.
        ui.label(text::row_caption(
            shown_query,
            tokens.get(shown_query).map(String::as_str),
        ));
        // The legend above the plot, off the row's spikes; a click
        // hides a setting's row.
        let mut legend: Vec<LegendEntry> = rows
            .iter()
            .map(|(name, colour, _)| LegendEntry::line(*name, Look::line(*colour)))
            .collect();
        legend.push(LegendEntry::mark(text::QUERY_MARK, Look::mark(palette::QUERY)));
        let (hidden, axis) = super::legend_row_after(ui, "attention row", &legend, |ui| {
            let axis = super::WeightAxis::toggle(ui, "attention row");
            ui.add_space(10.0);
            axis
        });
        rows.retain(|(name, _, _)| hidden.shows(name));
        // The hover reads every shown setting's row at the pointer's key.
        let readout = super::row_readout(&rows);
        let training = keys.info.training_length;
        // The rows' top as drawn; the marks are labelled above it.
        let top = axis.label_top(rows_top(&rows));
        // Keys 0..=query: at query L - 1 the mark for L sits at the
        // right edge; at an earlier query its label points past the axis.
        let mut marks = vec![PlotMark::training(training)];
        if let Some(k) = key_position {
            marks.push(PlotMark::key(k));
        }
        let plot = axis
            .axis(super::positions_x(Plot::new("attention row")), top)
            .height(200.0)
            .x_axis_label(text::KEY_AXIS)
            .y_axis_label(text::WEIGHT_AXIS)
            .label_formatter(|pos| {
                let p = super::hovered(pos);
                let j = p.x.round().max(0.0) as usize;
                Some(text::key_hover(j, tokens.get(j).map(String::as_str), &readout))
            })
            .show(ui, |plot| {
                row_lines(plot, &rows, axis);
                // The query is the row's last key, at the right edge:
                // named in the legend.
                plot.vline(VLine::new(text::QUERY, shown_query as f64).color(palette::QUERY));
                super::labelled_marks(plot, &marks, top, shown_query as f64);
            });
        let (layer, head) = (state.layer, state.head);
        export::buttons(ui, plot.response.rect, || {
            let series = row_series(&rows);
            let query = export::Mark {
                name: text::QUERY.into(),
                x: shown_query as f64,
                look: Look::mark(palette::QUERY),
            };
            let marks = std::iter::once(query)
                .chain(
                    marks
                        .iter()
                        .filter(|m| m.on_axis(shown_query as f64))
                        .map(PlotMark::export),
                )
                .collect();
            export::Figure {
                stem: format!("nopescope-attention-l{layer}h{head}-q{shown_query}"),
                title: format!("{}, query {shown_query}", text::head_name(layer, head)),
                x_label: text::KEY_AXIS.into(),
                y_label: text::WEIGHT_AXIS.into(),
                series,
                marks,
                log_x: false,
                bin: true,
            }
        });
        for (name, _, r) in &rows {
            if let JobResult::AttnRow(a) = r.as_ref() {
                // As in the pass-key lab: how much of the row rests on
                // the key, once the query has read all of it.
                if let Some(span) = a.key.as_ref().filter(|k| k.sentence.end <= a.query + 1) {
                    let (key, sentence) = span.shares(&a.row);
                    ui.label(text::key_mass(name, &text::head_name(layer, head), key, sentence));
                }
                if let Some(share) = sink_share(a) {
                    ui.label(text::sink_note(name, share, keys.info.rope));
                }
            }
        }
        on_text(ui, "explore", tokens, &rows);
    }
}

/// The pooled maps' heading, help, axes and colour scale, above them: a
/// map is tall, and what is under it is often out of view.
fn pooled_heading(ui: &mut egui::Ui, length: usize) {
    ui.add_space(6.0);
    ui.label(egui::RichText::new(text::POOLED_HEADING).strong().size(16.0));
    ui.label(text::POOLED_HELP);
    ui.label(text::pooled_axes(length));
    super::bar_legend(ui, text::POOLED_SCALE_LOW, text::POOLED_SCALE_HIGH);
}

/// Side of each of `count` pooled maps side by side, in points.
fn map_side(ui: &egui::Ui, count: usize) -> f32 {
    let count = count.max(1) as f32;
    ((ui.available_width() - (16.0 + GUTTER) * count) / count).clamp(*MAP_SIDE.start(), *MAP_SIDE.end())
}

impl AttentionView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::ATTENTION_HEADING);
        ui.label(text::selected(state.layer, state.head));
        let (view, head) = (keys.all_but_length(), (state.layer, state.head));
        let drawn = |query| Drawn {
            view: view.clone(),
            head,
            query,
        };
        // What was drawn over another model, input, setting, head or query
        // is not drawn on (and its memory goes).
        self.last_rows = self.last_rows.take().filter(|(d, _, _)| *d == drawn(state.query));
        self.last_pooled = self.last_pooled.take().filter(|(d, _, _)| *d == drawn(None));
        let settings = keys.settings();
        // The query's range and default come from the entropy profile.
        let profile_entry = jobs.get(&keys.entropy(&keys.ones)).clone();
        let Some(profile) = profile_entry.shared() else {
            // Meanwhile the last row and maps, where they apply.
            if matches!(profile_entry, Entry::Running { .. }) {
                if let Some((_, last, rows)) = &self.last_rows {
                    draw_kept_rows(ui, last, rows, keys, state);
                }
                if self.last_pooled.is_some() {
                    let columns = settings.iter().map(|(name, _, _)| (*name, None)).collect();
                    self.pooled_section(ui, keys, &[], columns);
                }
            }
            return;
        };
        let Some((length, retrieval, tokens)) = profile_of(&profile) else {
            return;
        };
        let default_query = retrieval.unwrap_or(length - 1);
        let mut q = state.query.unwrap_or(default_query).min(length - 1);
        ui.horizontal_wrapped(|ui| {
            if ui
                .add(egui::Slider::new(&mut q, 0..=length - 1).text(text::QUERY))
                .changed()
            {
                state.query = Some(q);
            }
            let reset = if retrieval.is_some() {
                text::RETRIEVING_QUERY
            } else {
                text::LAST_QUERY
            };
            if ui.button(reset).clicked() {
                state.query = None;
            }
        });
        // (A row of another query, asked for just now, is not this one's.)
        self.last_rows = self.last_rows.take().filter(|(d, _, _)| *d == drawn(state.query));
        let query = state.query.map(|q| q.min(length - 1));
        let entries: Vec<(&'static str, egui::Color32, Entry)> = settings
            .iter()
            .map(|(name, scales, colour)| {
                let key = JobKey::AttnRow {
                    at: keys.at.clone(),
                    scales: scales.clone(),
                    layer: state.layer,
                    head: state.head,
                    query,
                };
                (*name, *colour, jobs.get(&key).clone())
            })
            .collect();
        let rows: Rows = entries
            .iter()
            .filter_map(|(name, colour, entry)| entry.shared().map(|r| (*name, *colour, r)))
            .collect();
        let running = entries.iter().all(|(_, _, e)| matches!(e, Entry::Running { .. }));
        match self.last_rows.as_ref().filter(|_| rows.is_empty() && running) {
            Some((_, last, last_rows)) => draw_kept_rows(ui, last, last_rows, keys, state),
            None => {
                for (_, _, entry) in &entries {
                    show_entry_status(ui, entry);
                }
                if rows.len() == settings.len() {
                    self.last_rows = Some((drawn(state.query), Arc::clone(&profile), rows.clone()));
                }
                if !rows.is_empty() {
                    draw_rows(ui, rows, tokens, keys, state);
                }
            }
        }
        let columns = settings
            .iter()
            .map(|(name, scales, _)| {
                let key = JobKey::Pooled {
                    at: keys.at.clone(),
                    scales: scales.clone(),
                    layer: state.layer,
                    head: state.head,
                };
                let entry = jobs.get(&key).clone();
                (*name, Some((key, entry)))
            })
            .collect();
        let done = self.pooled_section(ui, keys, tokens, columns);
        if done.len() == settings.len() {
            self.last_pooled = Some((drawn(None), profile, done));
        }
    }

    /// The pooled maps under their heading: each setting's (`columns`:
    /// its name, and its job and entry where asked for) as computed, or
    /// the last one drawn, with a note, while its own computes. Returns
    /// the maps computed whole.
    fn pooled_section(
        &mut self,
        ui: &mut egui::Ui,
        keys: &Keys,
        tokens: &[String],
        columns: Vec<(&'static str, Option<(JobKey, Entry)>)>,
    ) -> Maps {
        let last = self
            .last_pooled
            .as_ref()
            .filter(|(_, _, maps)| maps.len() == columns.len())
            .map(|(_, profile, maps)| (Arc::clone(profile), maps.clone()));
        // A column shows the last map while its own runs, with no result.
        let kept: Vec<bool> = columns
            .iter()
            .map(|(_, c)| {
                last.is_some()
                    && c.as_ref()
                        .is_none_or(|(_, e)| e.shared().is_none() && matches!(e, Entry::Running { .. }))
            })
            .collect();
        let (last_length, last_tokens) = last
            .as_ref()
            .and_then(|(profile, _)| profile_of(profile))
            .map_or((0, &[][..]), |(length, _, tokens)| (length, tokens));
        // The axes named over the maps are the last one's where every map is.
        let every = kept.iter().all(|&k| k);
        pooled_heading(ui, if every { last_length } else { keys.at.length });
        if kept.contains(&true) {
            ui.label(egui::RichText::new(text::shown_meanwhile(text::MEANWHILE_POOLED, last_length)).weak());
        }
        let side = map_side(ui, columns.len());
        let training = keys.info.training_length;
        let mut wanted = Vec::new();
        let mut done = Vec::new();
        ui.horizontal_wrapped(|ui| {
            for (i, (name, column)) in columns.into_iter().enumerate() {
                ui.vertical(|ui| {
                    ui.label(name);
                    // The last map, with its input's tokens, or this one.
                    let (key, r, tokens) = match (kept[i], &last, column) {
                        (true, Some((_, maps)), _) => {
                            let (key, r) = &maps[i];
                            (key.clone(), Arc::clone(r), last_tokens)
                        }
                        (_, _, Some((key, entry))) => match entry.shared() {
                            Some(r) => {
                                if matches!(entry, Entry::Done(_)) {
                                    done.push((key.clone(), Arc::clone(&r)));
                                }
                                (key, r, tokens)
                            }
                            None => {
                                show_entry_status(ui, &entry);
                                return;
                            }
                        },
                        _ => return,
                    };
                    if let JobResult::Pooled(map) = r.as_ref() {
                        let key = &key;
                        self.pooled_map(
                            ui,
                            ShownMap {
                                name,
                                key,
                                map,
                                tokens,
                                side,
                                training,
                            },
                        );
                    }
                    wanted.push(key);
                });
            }
        });
        // Textures of maps no longer shown are freed.
        self.textures.retain(|k, _| wanted.contains(k));
        done
    }

    /// One setting's pooled map, its axes, hover and export (its files
    /// named by its own length).
    fn pooled_map(&mut self, ui: &mut egui::Ui, shown: ShownMap<'_>) {
        let ShownMap {
            name,
            key,
            map: p,
            tokens,
            side,
            training,
        } = shown;
        let tex = self.textures.entry(key.clone()).or_insert_with(|| {
            ui.ctx()
                .load_texture(format!("{key:?}"), pooled_image(p), egui::TextureOptions::NEAREST)
        });
        // The query axis' gutter, the map, the key axis' strip.
        let image = ui
            .horizontal(|ui| {
                ui.allocate_exact_size(
                    egui::vec2(GUTTER - ui.spacing().item_spacing.x, side),
                    egui::Sense::hover(),
                );
                ui.add(
                    egui::Image::new(&*tex)
                        .fit_to_exact_size(egui::vec2(side, side))
                        .sense(egui::Sense::hover())
                        .alt_text(text::pooled_alt(name, p.n, p.length)),
                )
            })
            .inner;
        ui.allocate_exact_size(egui::vec2(GUTTER + side, 2.0 * STRIP), egui::Sense::hover());
        paint_map_axes(ui, image.rect, p.length, training);
        // The map's square, whose masked half is the background.
        ui.painter().rect_stroke(
            image.rect,
            0.0,
            ui.visuals().widgets.noninteractive.bg_stroke,
            egui::StrokeKind::Outside,
        );
        if let Some(pos) = image.hover_pos() {
            let cell = |x: f32, from: f32| (((x - from) / side * p.n as f32) as usize).min(p.n.saturating_sub(1));
            let (a, b) = (cell(pos.y, image.rect.top()), cell(pos.x, image.rect.left()));
            let (queries, keys) = (bin_span(a, p.n, p.length), bin_span(b, p.n, p.length));
            let one = queries.0 == queries.1 && keys.0 == keys.1;
            let token = |i: usize| tokens.get(i).map(String::as_str).unwrap_or("");
            let hover = text::pooled_hover(
                queries,
                keys,
                p.map[a * p.n + b],
                one.then(|| (token(queries.0), token(keys.0))),
            );
            image.clone().on_hover_text_at_pointer(hover);
        }
        if let JobKey::Pooled { layer, head, .. } = key {
            let stem = format!("pooled_attention_L{layer}H{head}_{}", p.length);
            let title = text::pooled_alt(name, p.n, p.length);
            export::grid_buttons(ui, image.rect, p.n * p.n, || pooled_grid(p, stem, title));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bin_span, length_ticks, most_attended, text_spans};

    #[test]
    fn length_ticks_are_round_and_apart() {
        // 512 points for 1024 tokens: at least 112 tokens apart, so 200.
        assert_eq!(length_ticks(1024, 512.0), vec![0, 200, 400, 600, 800, 1000]);
        assert_eq!(length_ticks(16384, 256.0), vec![0, 5000, 10000, 15000]);
        // A short input: every step of 1 would crowd, 20 tokens on 256 points.
        assert_eq!(length_ticks(20, 256.0), vec![0, 5, 10, 15]);
        assert_eq!(length_ticks(1, 256.0), vec![0]);
    }

    #[test]
    fn bins_cover_every_position_once() {
        for (n, length) in [(300, 300), (512, 1024), (512, 1000), (7, 16)] {
            let mut next = 0;
            for a in 0..n {
                let (first, last) = bin_span(a, n, length);
                assert_eq!(first, next, "bin {a} of {n} over {length}");
                assert!(last >= first);
                for x in first..=last {
                    assert_eq!(x * n / length, a, "position {x} is in bin {a}");
                }
                next = last + 1;
            }
            assert_eq!(next, length);
        }
    }

    #[test]
    fn the_text_is_shown_whole_or_around_the_most_attended_tokens() {
        assert_eq!(
            text_spans(99, &[3, 50], 1500, 24),
            std::iter::once(0..100).collect::<Vec<_>>()
        );
        // Long: around 100 and 5000, and before the query at 9000; spans
        // that meet are one.
        assert_eq!(
            text_spans(9000, &[5000, 100, 8990], 1500, 24),
            vec![76..125, 4976..5025, 8966..9001]
        );
        assert_eq!(text_spans(2000, &[0, 10], 1500, 24), vec![0..35, 1976..2001]);
        let row = [0.1, 0.0, 0.5, 0.2, 0.2];
        assert_eq!(most_attended(&row, 3), vec![2, 3, 4], "ties in position order");
        assert_eq!(most_attended(&row, 9), vec![2, 3, 4, 0], "none without attention");
    }
}
