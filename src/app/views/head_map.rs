//! The layer x head map: each head's mean attention entropy at the chosen
//! length, or its rise from the training length L to it (the distracted
//! heads stand out). Viridis with a legend; a click (or Enter on a focused
//! cell) selects the head for every other view.

use eframe::egui;

use super::{show_entry_status, Keys};
use crate::app::jobs::{JobResult, Jobs};
use crate::app::state::{MapMode, ViewState, MAX_LENGTH};
use crate::app::text;
use crate::app::{export, palette};

/// A cell's side where the heads fit; smaller down to `MIN_CELL` where
/// they would not (the paper's model has 32 heads), and past that the map
/// scrolls sideways.
const CELL: f32 = 44.0;
const MIN_CELL: f32 = 16.0;
/// The row labels' width ("layer 21").
const ROW_LABEL: f32 = 56.0;
/// Cells at least this wide show their value (else only on hover).
const VALUE_CELL: f32 = 36.0;

/// The side of the cells of a map of `heads` columns in `available`
/// points, cells `spacing` apart, at most `full`.
fn cell_size(available: f32, heads: usize, spacing: f32, full: f32) -> f32 {
    let per_head = (available - ROW_LABEL) / heads.max(1) as f32 - spacing;
    per_head.clamp(MIN_CELL, full)
}

/// How a layer x head map (this one, the tuning page's scales) is laid
/// out in the width at hand: cells of `full` points where the heads fit;
/// else smaller and closer together, values on hover only, every 2nd or
/// 4th head named, and past the smallest a sideways scroll.
pub(super) struct MapLayout {
    pub cell: f32,
    spacing: f32,
    every: usize,
    heads: usize,
    fits: bool,
    full: f32,
}

impl MapLayout {
    pub fn new(ui: &egui::Ui, heads: usize, full: f32) -> Self {
        let available = ui.available_width();
        let mut spacing = ui.spacing().item_spacing.x;
        let mut cell = cell_size(available, heads, spacing, full);
        if cell < full {
            spacing = spacing.min(2.0);
            cell = cell_size(available, heads, spacing, full);
        }
        MapLayout {
            cell,
            spacing,
            every: label_every(cell, spacing),
            heads,
            // (Half a point's slack: a map that just fits, rounded.)
            fits: ROW_LABEL + heads as f32 * (cell + spacing) <= available + 0.5,
            full,
        }
    }

    /// Writes `v` in its cell, where cells are wide enough (else it is
    /// the hover's).
    pub fn value(&self, painter: &egui::Painter, rect: egui::Rect, fill: egui::Color32, v: f32) {
        if self.cell >= VALUE_CELL {
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                format!("{v:.2}"),
                egui::FontId::proportional(12.0),
                palette::text_on(fill),
            );
        }
    }

    /// Draws the map with `add` (its header first, `header`), scrolled
    /// sideways where it does not fit; the map's response.
    pub fn show(&self, ui: &mut egui::Ui, add: impl FnOnce(&mut egui::Ui)) -> egui::Response {
        let draw = |ui: &mut egui::Ui| {
            ui.vertical(|ui| {
                if self.cell < self.full {
                    ui.spacing_mut().item_spacing = egui::vec2(self.spacing, self.spacing);
                }
                add(ui)
            })
            .response
        };
        if self.fits {
            draw(ui)
        } else {
            egui::ScrollArea::horizontal()
                .id_salt(("layer x head map", ui.scope_id()))
                .show(ui, draw)
                .inner
        }
    }

    /// The heads' names over their columns.
    pub fn header(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.add_space(ROW_LABEL);
            for h in 0..self.heads {
                if self.cell >= 30.0 {
                    ui.add_sized([self.cell, 14.0], egui::Label::new(text::head_column(h)));
                    continue;
                }
                // Small cells: every `every`th head named, over its
                // neighbours' room (a label would wrap in its cell).
                let (rect, _) = ui.allocate_exact_size(egui::vec2(self.cell, 14.0), egui::Sense::hover());
                if h % self.every == 0 {
                    ui.painter().text(
                        rect.center(),
                        egui::Align2::CENTER_CENTER,
                        text::head_column(h),
                        egui::TextStyle::Body.resolve(ui.style()),
                        ui.visuals().text_color(),
                    );
                }
            }
        });
    }

    /// A layer's name left of its row.
    pub fn row_label(&self, ui: &mut egui::Ui, layer: usize) {
        ui.add_sized([ROW_LABEL - 4.0, self.cell], egui::Label::new(text::layer_row(layer)));
    }
}

/// Which head columns are labelled: all where the labels fit ("h31" takes
/// about 26 points), else every 2nd, 4th or 8th.
fn label_every(cell: f32, spacing: f32) -> usize {
    let mut every = 1;
    while (cell + spacing) * (every as f32) < 26.0 && every < 8 {
        every *= 2;
    }
    every
}

fn cells_id() -> egui::Id {
    egui::Id::unique("nopescope head map cell centres")
}

/// Where this frame drew each head's cell: (layer, head, centre in
/// points), for the web page's test hook (a touch test taps them).
pub fn cell_centres(ctx: &egui::Context) -> Vec<(usize, usize, egui::Pos2)> {
    ctx.data(|d| d.get_temp(cells_id())).unwrap_or_default()
}

#[derive(Default)]
pub struct HeadMapView {
    /// The map last drawn: drawn on, with a note, while the next input's
    /// computes (as the entropy plot is), where only the length changed.
    last: Option<LastMap>,
}

struct LastMap {
    mode: MapMode,
    view: super::AllButLength,
    length: usize,
    values: (Vec<f32>, f32, f32),
}

/// The top of an entropy map's colour scale: the ceiling at `length`
/// tokens, log2 T bits.
fn ceiling(length: usize) -> f32 {
    (length as f32).log2().max(1.0)
}

/// Per-head values to colour, and the colour scale's range.
fn values(jobs: &mut Jobs, keys: &Keys, mode: MapMode) -> Option<(Vec<f32>, f32, f32)> {
    // (A shared handle: the profile holds every position's entropy.)
    let here = jobs.get(&keys.entropy(&keys.scales)).shared()?;
    let JobResult::Entropy(p) = here.as_ref() else {
        return None;
    };
    let means = p.head_means();
    match mode {
        MapMode::Entropy => Some((means, 0.0, ceiling(p.length))),
        MapMode::Shared => Some((means, 0.0, ceiling(MAX_LENGTH))),
        MapMode::Rise => {
            let at_l = keys.entropy_at_l(&keys.scales);
            let base = jobs.get(&at_l).shared()?;
            let JobResult::Entropy(base) = base.as_ref() else {
                return None;
            };
            let rise = p.rise_from(base);
            let lo = rise.iter().copied().fold(0.0f32, f32::min);
            let hi = rise.iter().copied().fold(lo + 1e-3, f32::max);
            Some((rise, lo, hi))
        }
    }
}

impl HeadMapView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::MAP_HEADING);
        ui.horizontal_wrapped(|ui| {
            ui.selectable_value(&mut state.map_mode, MapMode::Entropy, text::MAP_ENTROPY);
            ui.selectable_value(&mut state.map_mode, MapMode::Shared, text::MAP_SHARED)
                .on_hover_text(text::MAP_SHARED_HOVER);
            ui.selectable_value(&mut state.map_mode, MapMode::Rise, text::MAP_RISE);
        });
        ui.label(text::map_help(!state.hidden(crate::app::state::PANEL_ENTROPY)));
        // A rise from L needs a profile longer than L (a text of one's own
        // may be shorter: both profiles would be the same tokens).
        if state.map_mode == MapMode::Rise {
            if let Some(JobResult::Entropy(p)) = jobs.get(&keys.entropy(&keys.scales)).result() {
                if p.length <= keys.info.training_length {
                    ui.label(text::rise_needs_longer(p.length, keys.info.training_length));
                    return;
                }
            }
        }
        let (layers, heads) = (keys.info.layers, keys.info.heads);
        // Whether the map drawn is the last one, while this input's computes.
        let mut meanwhile = false;
        let (vals, lo, hi) = match values(jobs, keys, state.map_mode) {
            Some(v) => {
                self.last = Some(LastMap {
                    mode: state.map_mode,
                    view: keys.all_but_length(),
                    length: keys.at.length,
                    values: v.clone(),
                });
                v
            }
            None => {
                // What is missing: this length's profile, or (rise) the one at L.
                let here = jobs.get(&keys.entropy(&keys.scales)).clone();
                let entry = match (&here, state.map_mode) {
                    (crate::app::jobs::Entry::Done(_), MapMode::Rise) => {
                        jobs.get(&keys.entropy_at_l(&keys.scales)).clone()
                    }
                    _ => here,
                };
                show_entry_status(ui, &entry);
                let last = self
                    .last
                    .as_ref()
                    .filter(|m| m.mode == state.map_mode && m.view == keys.all_but_length());
                match (&entry, last) {
                    (crate::app::jobs::Entry::Running { .. }, Some(last)) => {
                        meanwhile = true;
                        ui.label(egui::RichText::new(text::shown_meanwhile(text::MEANWHILE_MAP, last.length)).weak());
                        last.values.clone()
                    }
                    _ => return,
                }
            }
        };
        let mut centres = Vec::with_capacity(layers * heads);
        let layout = MapLayout::new(ui, heads, CELL);
        let cell = layout.cell;
        let map = layout.show(ui, |ui| {
            layout.header(ui);
            for l in 0..layers {
                ui.horizontal(|ui| {
                    layout.row_label(ui, l);
                    for h in 0..heads {
                        let v = vals[l * heads + h];
                        let t = (v - lo) / (hi - lo).max(1e-6);
                        let fill = palette::viridis(t);
                        let selected = (state.layer, state.head) == (l, h);
                        let (rect, response) = ui.allocate_exact_size(egui::vec2(cell, cell), egui::Sense::click());
                        centres.push((l, h, rect.center()));
                        let name = text::head_name(l, h);
                        response.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &name));
                        let painter = ui.painter();
                        painter.rect_filled(rect.shrink(1.0), 2.0, fill);
                        if selected || response.has_focus() {
                            outline_selected(painter, rect);
                        } else if let Some(k) = state.pinned.iter().position(|&p| p == [l, h]) {
                            painter.rect_stroke(
                                rect.shrink(3.0),
                                2.0,
                                egui::Stroke::new(2.5, palette::pinned(k)),
                                egui::StrokeKind::Inside,
                            );
                        }
                        layout.value(painter, rect, fill, v);
                        let response =
                            response.on_hover_text(text::cell_hover(&name, v, state.map_mode == MapMode::Rise));
                        // A right-click, or a long press on a touch screen,
                        // pins as Shift-click does.
                        if response.secondary_clicked() {
                            state.toggle_pinned(l, h);
                        } else if response.clicked() {
                            if ui.input(|i| i.modifiers.shift) {
                                state.toggle_pinned(l, h);
                            } else {
                                state.choose_head(l, h);
                            }
                        }
                    }
                });
            }
        });
        ui.ctx().data_mut(|d| d.insert_temp(cells_id(), centres));
        legend(ui, lo, hi, state.map_mode);
        let rise = state.map_mode == MapMode::Rise;
        // Not the last map's: its files would bear this input's length.
        if !meanwhile {
            export::grid_buttons(ui, map.rect, layers * heads, || {
                export::Grid::heads(
                    format!("head_map_{}_{}", mode_stem(state.map_mode), keys.at.length),
                    text::map_title(state.map_mode, keys.at.length),
                    text::map_unit(rise),
                    heads,
                    &vals,
                    lo,
                    hi,
                )
            });
        }
        ui.label(text::selected(state.layer, state.head));
        if state.takes_suggestions() && keys.suggested == Some((state.layer, state.head)) {
            ui.label(egui::RichText::new(text::SELECTED_FOR_YOU).weak());
        }
    }
}

/// A map's exported files are named after its mode.
fn mode_stem(mode: MapMode) -> &'static str {
    match mode {
        MapMode::Entropy => "entropy",
        MapMode::Shared => "entropy_one_scale",
        MapMode::Rise => "rise",
    }
}

/// The selected cell's outline: white with a dark line inside it (white
/// alone vanished on the brightest, yellow, cells).
pub(super) fn outline_selected(painter: &egui::Painter, rect: egui::Rect) {
    painter.rect_stroke(
        rect.shrink(2.0),
        2.0,
        egui::Stroke::new(3.0, palette::SELECTION),
        egui::StrokeKind::Inside,
    );
    painter.rect_stroke(
        rect.shrink(5.0),
        1.0,
        egui::Stroke::new(1.5, palette::SELECTION_INNER),
        egui::StrokeKind::Inside,
    );
}

/// The colour bar, low to high, with its ends labelled.
fn legend(ui: &mut egui::Ui, lo: f32, hi: f32, mode: MapMode) {
    let (high, hover) = match mode {
        MapMode::Rise => (format!("{hi:.2} {}", text::map_unit(true)), None),
        MapMode::Shared => (text::map_shared_ceiling(hi, MAX_LENGTH), Some(text::MAP_SHARED_HOVER)),
        MapMode::Entropy => (text::map_ceiling(hi), Some(text::MAP_CEILING_HOVER)),
    };
    let end = super::bar_legend(ui, format!("{lo:.2}"), high);
    if let Some(hover) = hover {
        end.on_hover_text(hover);
    }
    // What brightness means here (yellow is good news in the accuracy map).
    ui.label(egui::RichText::new(text::map_brighter(mode == MapMode::Rise)).weak());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled model's 4 heads keep 44-point cells; the paper's 32
    /// shrink to fit a side panel, down to 16 points (then it scrolls);
    /// small cells name every 2nd or 4th head.
    #[test]
    fn cells_shrink_to_fit_many_heads() {
        assert_eq!(cell_size(360.0, 4, 8.0, CELL), CELL);
        let c = cell_size(1000.0, 32, 2.0, CELL);
        assert!(
            c < CELL && c > MIN_CELL && ROW_LABEL + 32.0 * (c + 2.0) <= 1000.0 + 1e-3,
            "{c}"
        );
        assert_eq!(cell_size(360.0, 32, 8.0, CELL), MIN_CELL);
        assert_eq!(label_every(44.0, 8.0), 1);
        assert_eq!(label_every(16.0, 8.0), 2);
        assert_eq!(label_every(16.0, 2.0), 2);
        assert_eq!(label_every(10.0, 2.0), 4);
    }
}
