//! Attention entropy against query position: the mean over heads and the
//! selected head, for NoPE and for the current scales, under the ceiling
//! log2(i + 1) of uniform attention, with the training length L marked.
//! Hovering reads the value and the token at that position.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints};

use super::{show_entry_status, Keys, LegendEntry, PlotMark};
use crate::app::export::{self, indexed};
use crate::app::jobs::{EntropyProfile, Entry, JobResult, Jobs};
use crate::app::palette::{self, Look};
use crate::app::state::ViewState;
use crate::app::text;

/// Each setting's name, colour and entropy profile, as drawn.
type Profiles = Vec<(&'static str, egui::Color32, Arc<JobResult>)>;

#[derive(Default)]
pub struct EntropyView {
    /// The profiles last drawn whole: drawn on, with a note, while the next
    /// ones compute (Play's lengths left the page blank in between, the
    /// plot gone and the page below it jumping up and back).
    last: Option<(super::AllButLength, Profiles)>,
}

/// (x, y) of `ys` averaged over consecutive bins, at most
/// `export::MAX_LINE_POINTS`: as a curve is drawn, each frame (the same
/// points as `export::bin_points` over `export::indexed(ys)`, which an SVG
/// draws, without a full-length copy).
pub fn binned(ys: &[f32]) -> Vec<[f64; 2]> {
    export::bin_by(ys.len(), export::MAX_LINE_POINTS, |i| [i as f64, ys[i] as f64])
}

impl EntropyView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::ENTROPY_HEADING);
        ui.label(text::ENTROPY_HELP);
        let mut profiles: Profiles = Vec::new();
        let settings = keys.settings();
        let mut running = false;
        for (name, scales, colour) in &settings {
            let entry = jobs.get(&keys.entropy(scales)).clone();
            match entry.shared() {
                Some(r) => profiles.push((name, *colour, r)),
                None => {
                    running |= matches!(entry, Entry::Running { .. });
                    show_entry_status(ui, &entry);
                }
            }
        }
        // (Only over another length: another model's, input's or
        // setting's plot would read as this one's.)
        let view = keys.all_but_length();
        if profiles.len() == settings.len() {
            self.last = Some((view, profiles.clone()));
        } else if profiles.is_empty() && running {
            if let Some((_, last)) = self.last.as_ref().filter(|(v, _)| *v == view) {
                profiles = last.clone();
                let shown = profiles.iter().find_map(|(_, _, r)| match r.as_ref() {
                    JobResult::Entropy(p) => Some(p.length),
                    _ => None,
                });
                if let Some(shown) = shown {
                    ui.label(egui::RichText::new(text::shown_meanwhile(text::MEANWHILE_PLOT, shown)).weak());
                }
            }
        }
        let first: Option<&EntropyProfile> = profiles.iter().find_map(|(_, _, r)| match r.as_ref() {
            JobResult::Entropy(p) => Some(p),
            _ => None,
        });
        let Some(first) = first else { return };
        if let Some(note) = &first.note {
            ui.label(note);
        }
        let losses: Vec<(&str, f64)> = profiles
            .iter()
            .filter_map(|(name, _, r)| match r.as_ref() {
                JobResult::Entropy(p) => Some((*name, p.loss)),
                _ => None,
            })
            .collect();
        ui.label(text::entropy_summary(
            first.length,
            first.windows,
            &losses,
            settings.len() > 1,
        ));
        super::settings_note(ui, state, keys);
        super::document(
            ui,
            "explore document",
            text::show_document(first.tokens.len(), first.windows),
            &first.tokens,
            first.key.as_ref().map(|k| &k.sentence),
            keys.info.training_length,
        );
        let tokens = first.tokens.clone();
        let length = first.length;
        let key_position = first.key.as_ref().map(|k| k.sentence.start);
        let (layer, head) = (state.layer, state.head);
        // Pinned heads with their colours (the map's outlines: by their place
        // in the list), the selected head left out (drawn as such).
        let pinned: Vec<(egui::Color32, [usize; 2])> = state
            .pinned
            .iter()
            .enumerate()
            .filter(|&(_, &p)| p != [layer, head])
            .map(|(k, &p)| (palette::pinned(k), p))
            .collect();
        let training = keys.info.training_length;
        // Each setting's mean over heads, once a frame, for its curve and
        // for the hover.
        let means: Vec<Vec<f32>> = profiles
            .iter()
            .map(|(_, _, r)| match r.as_ref() {
                JobResult::Entropy(p) => p.mean_over_heads(),
                _ => Vec::new(),
            })
            .collect();
        let head_name = text::head_name(layer, head);
        // Every line once, as drawn (binned past MAX_LINE_POINTS) and as
        // exported (every position): each setting's mean (thick) and
        // selected head (thin, lighter), each pinned head in its colour
        // (solid for the first setting, dashed for the other); then the
        // ceiling, last in the legend and drawn under the curves.
        let ceiling_bits: Vec<f32> = (0..length).map(|i| ((i + 1) as f32).log2()).collect();
        let ceiling = (text::CEILING.to_string(), Look::ceiling(), ceiling_bits.as_slice());
        let mut lines: Vec<(String, Look, &[f32])> = Vec::new();
        for ((name, colour, r), mean) in profiles.iter().zip(&means) {
            let JobResult::Entropy(p) = r.as_ref() else { continue };
            lines.push((text::mean_line(name), Look::line(*colour), mean.as_slice()));
            if layer < p.layers && head < p.heads {
                lines.push((
                    text::head_line(name, &head_name),
                    Look::head(*colour),
                    p.head(layer, head),
                ));
            }
        }
        for &(pin_colour, [pl, ph]) in &pinned {
            for (s, (name, _, r)) in profiles.iter().enumerate() {
                let JobResult::Entropy(p) = r.as_ref() else { continue };
                if pl < p.layers && ph < p.heads {
                    let look = Look::thin(pin_colour);
                    lines.push((
                        text::head_line(name, &text::head_name(pl, ph)),
                        if s == 0 { look } else { look.dashed() },
                        p.head(pl, ph),
                    ));
                }
            }
        }
        // Marks, labelled where they are. At T = L the mark for L sits at
        // the right edge, one past the last query; over a shorter input
        // its label points past the axis.
        let mut marks = vec![PlotMark::training(training)];
        if let Some(k) = key_position {
            marks.push(PlotMark::key(k));
        }
        // The legend above the plot, off the curves; a click hides a line.
        // Past one setting's two lines, a table: a row per setting, a
        // column per curve.
        let entry = |name: &str| {
            lines
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(n, look, _)| LegendEntry::line(n.clone(), *look))
        };
        let ceiling_entry = LegendEntry::line(ceiling.0.clone(), ceiling.1);
        let hidden = if lines.len() > 2 {
            let settings: Vec<String> = profiles.iter().map(|(name, _, _)| name.to_string()).collect();
            let heads: Vec<String> = pinned.iter().map(|&(_, [pl, ph])| text::head_name(pl, ph)).collect();
            let mut cols = vec![text::MEAN_OVER_HEADS.to_string(), text::selected_column(&head_name)];
            cols.extend(heads.iter().map(|h| text::pinned_column(h)));
            let cells: Vec<Vec<Option<LegendEntry>>> = settings
                .iter()
                .map(|name| {
                    [text::mean_line(name), text::head_line(name, &head_name)]
                        .into_iter()
                        .chain(heads.iter().map(|h| text::head_line(name, h)))
                        .map(|line| entry(&line))
                        .collect()
                })
                .collect();
            super::legend_table(ui, "entropy", &settings, &cols, &cells, &[ceiling_entry])
        } else {
            let legend: Vec<LegendEntry> = lines
                .iter()
                .map(|(name, look, _)| LegendEntry::line(name.clone(), *look))
                .chain([ceiling_entry])
                .collect();
            super::legend_row(ui, "entropy", &legend)
        };
        lines.retain(|(name, _, _)| hidden.shows(name));
        let ceiling = hidden.shows(&ceiling.0).then_some(ceiling);
        // The hover reads every shown line at the pointer's position (full
        // resolution, not the drawn bins); a hidden line is left out.
        let readout: Vec<text::Readout> = profiles
            .iter()
            .zip(&means)
            .filter_map(|((name, _, r), mean)| match r.as_ref() {
                JobResult::Entropy(p) => Some(text::Readout {
                    setting: name,
                    mean: hidden.shows(&text::mean_line(name)).then_some(mean.as_slice()),
                    head: (layer < p.layers && head < p.heads && hidden.shows(&text::head_line(name, &head_name)))
                        .then(|| p.head(layer, head)),
                    pinned: pinned
                        .iter()
                        .filter(|(_, [pl, ph])| *pl < p.layers && *ph < p.heads)
                        .map(|&(_, [pl, ph])| (text::head_name(pl, ph), p.head(pl, ph)))
                        .filter(|(pin, _)| hidden.shows(&text::head_line(name, pin)))
                        .collect(),
                }),
                _ => None,
            })
            .collect();
        let ceiling_shown = ceiling.is_some();
        let top = (length as f64).log2();
        // The axis ends at the last query; L = T sits one past it.
        let last_query = length.saturating_sub(1) as f64;
        let visuals = ui.visuals().clone();
        let plot = super::positions_x(super::nice_y(Plot::new("entropy against position")))
            .height(260.0)
            .x_axis_label(text::POSITION_AXIS)
            .y_axis_label(text::BITS_AXIS)
            .include_y(0.0)
            .include_y(top * super::MARK_HEADROOM)
            .label_formatter(|pos| {
                let p = super::hovered(pos);
                let i = p.x.round().max(0.0) as usize;
                let token = tokens.get(i).map(String::as_str).unwrap_or("");
                Some(text::position_hover(i, token, &readout, &head_name, ceiling_shown))
            })
            .show(ui, |plot| {
                for (name, look, points) in ceiling.iter().chain(&lines) {
                    plot.line(
                        Line::new(name.as_str(), PlotPoints::from(binned(points)))
                            .color(look.paint(&visuals))
                            .width(look.width)
                            .style(look.style()),
                    );
                }
                super::labelled_marks(plot, &marks, top * super::MARK_HEADROOM, last_query);
            });
        export::buttons(ui, plot.response.rect, || export::Figure {
            stem: format!("nopescope-entropy-{length}"),
            title: format!("{} ({length} tokens)", text::ENTROPY_HEADING),
            x_label: text::POSITION_AXIS.into(),
            y_label: text::BITS_AXIS.into(),
            series: lines
                .iter()
                .chain(&ceiling)
                .map(|(name, look, points)| export::Series {
                    name: name.clone(),
                    look: *look,
                    points: indexed(points),
                })
                .collect(),
            marks: marks
                .iter()
                .filter(|m| m.on_axis(last_query))
                .map(PlotMark::export)
                .collect(),
            log_x: false,
            bin: true,
        });
    }
}
