//! Attention entropy against query position: the mean over heads and the
//! selected head, for NoPE and for the current scales, under the ceiling
//! log2(i + 1) of uniform attention, with the training length L marked.
//! Hovering reads the value and the token at that position.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{ColorConflictHandling, Corner, Legend, Line, LineStyle, Plot, PlotPoints};

use super::{show_entry_status, Keys};
use crate::app::export;
use crate::app::jobs::{EntropyProfile, JobResult, Jobs};
use crate::app::palette;
use crate::app::state::ViewState;
use crate::app::text;

/// Points per curve at most: longer curves are averaged in bins.
const MAX_POINTS: usize = 1024;

#[derive(Default)]
pub struct EntropyView;

/// (x, y) of `ys` averaged over consecutive bins, at most MAX_POINTS.
pub fn binned(ys: &[f32]) -> Vec<[f64; 2]> {
    let bin = ys.len().div_ceil(MAX_POINTS).max(1);
    ys.chunks(bin)
        .enumerate()
        .map(|(k, c)| {
            let x = (k * bin) as f64 + (c.len() as f64 - 1.0) / 2.0;
            [x, c.iter().map(|&v| v as f64).sum::<f64>() / c.len() as f64]
        })
        .collect()
}

impl EntropyView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::ENTROPY_HEADING);
        ui.label(text::ENTROPY_HELP);
        let mut profiles: Vec<(&'static str, egui::Color32, Arc<JobResult>)> = Vec::new();
        for (name, scales, colour) in keys.settings() {
            let entry = jobs.get(&keys.entropy(&scales)).clone();
            match entry.shared() {
                Some(r) => profiles.push((name, colour, r)),
                None => show_entry_status(ui, &entry),
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
        ui.label(text::entropy_summary(first.length, first.windows, first.loss));
        let tokens = first.tokens.clone();
        let length = first.length;
        let key_position = first.key_position;
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
        // for the hover, which reads every curve at the pointer's position
        // (full resolution, not the drawn bins).
        let means: Vec<Vec<f32>> = profiles
            .iter()
            .map(|(_, _, r)| match r.as_ref() {
                JobResult::Entropy(p) => p.mean_over_heads(),
                _ => Vec::new(),
            })
            .collect();
        let readout: Vec<text::Readout> = profiles
            .iter()
            .zip(&means)
            .filter_map(|((name, _, r), mean)| match r.as_ref() {
                JobResult::Entropy(p) => Some(text::Readout {
                    setting: name,
                    mean,
                    head: (layer < p.layers && head < p.heads).then(|| p.head(layer, head)),
                    pinned: pinned
                        .iter()
                        .filter(|(_, [pl, ph])| *pl < p.layers && *ph < p.heads)
                        .map(|&(_, [pl, ph])| (text::head_name(pl, ph), p.head(pl, ph)))
                        .collect(),
                }),
                _ => None,
            })
            .collect();
        let head_name = text::head_name(layer, head);
        ui.label(text::entropy_key(&head_name, !pinned.is_empty(), profiles.len() > 1));
        // One legend entry per setting (its mean and its selected head, which
        // share its name) and per pinned head (over every setting): the line
        // roles are in the key above, and the marks are labelled in place,
        // so the legend stays short and off the curves, which rise from the
        // lower left. In the order drawn (egui_plot sorts by name otherwise).
        let top = (length as f64).log2();
        let plot = Plot::new("entropy against position")
            .height(260.0)
            .legend(
                Legend::default()
                    .position(Corner::RightBottom)
                    .follow_insertion_order(true)
                    .color_conflict_handling(ColorConflictHandling::PickFirst),
            )
            .x_axis_label(text::POSITION_AXIS)
            .y_axis_label(text::BITS_AXIS)
            .include_y(0.0)
            .label_formatter(|pos| {
                let p = super::hovered(pos);
                let i = p.x.round().max(0.0) as usize;
                let token = tokens.get(i).map(String::as_str).unwrap_or("");
                Some(text::position_hover(i, token, &readout, &head_name))
            })
            .show(ui, |plot| {
                let ceiling: Vec<[f64; 2]> = binned(&(0..length).map(|i| ((i + 1) as f32).log2()).collect::<Vec<_>>());
                plot.line(
                    Line::new(text::CEILING, PlotPoints::from(ceiling))
                        .color(palette::CEILING)
                        .width(palette::THIN_LINE),
                );
                for ((name, colour, r), mean) in profiles.iter().zip(&means) {
                    let JobResult::Entropy(p) = r.as_ref() else { continue };
                    plot.line(
                        Line::new(*name, PlotPoints::from(binned(mean)))
                            .color(*colour)
                            .width(palette::LINE_WIDTH),
                    );
                    if layer < p.layers && head < p.heads {
                        // Lighter than the mean: the ceiling and the mean
                        // show through where the head runs along them.
                        plot.line(
                            Line::new(*name, PlotPoints::from(binned(p.head(layer, head))))
                                .color(colour.gamma_multiply(palette::HEAD_LINE_ALPHA))
                                .width(palette::THIN_LINE),
                        );
                    }
                }
                // Pinned heads: a colour each; NoPE solid, other settings dashed.
                for &(pin_colour, [pl, ph]) in &pinned {
                    for (s, (_, _, r)) in profiles.iter().enumerate() {
                        let JobResult::Entropy(p) = r.as_ref() else { continue };
                        if pl < p.layers && ph < p.heads {
                            let line = Line::new(text::head_name(pl, ph), PlotPoints::from(binned(p.head(pl, ph))))
                                .color(pin_colour)
                                .width(palette::THIN_LINE);
                            plot.line(if s == 0 {
                                line
                            } else {
                                line.style(LineStyle::dashed_loose())
                            });
                        }
                    }
                }
                // Marks, labelled where they are, not in the legend. At T = L
                // the mark for L sits at the right edge, one past the last query.
                let mut marks = Vec::new();
                if training <= length {
                    marks.push((training as f64, text::training_mark(training), palette::TRAINING_LENGTH));
                }
                if let Some(k) = key_position {
                    marks.push((k as f64, text::KEY_POSITION.to_string(), palette::KEY));
                }
                super::labelled_marks(plot, &marks, top, length as f64);
            });
        export::buttons(ui, plot.response.rect, || {
            let mut series = vec![export::Series {
                name: text::CEILING.into(),
                colour: palette::CEILING,
                dashed: false,
                points: binned(&(0..length).map(|i| ((i + 1) as f32).log2()).collect::<Vec<_>>()),
            }];
            for (name, colour, r) in &profiles {
                let JobResult::Entropy(p) = r.as_ref() else { continue };
                series.push(export::Series {
                    name: format!("{name}: {}", text::MEAN_OVER_HEADS),
                    colour: *colour,
                    dashed: false,
                    points: binned(&p.mean_over_heads()),
                });
                if layer < p.layers && head < p.heads {
                    series.push(export::Series {
                        name: format!("{name}: {}", text::head_name(layer, head)),
                        colour: *colour,
                        dashed: false,
                        points: binned(p.head(layer, head)),
                    });
                }
            }
            // As drawn: NoPE's pinned heads solid, other settings' dashed.
            for &(pin_colour, [pl, ph]) in &pinned {
                for (s, (name, _, r)) in profiles.iter().enumerate() {
                    let JobResult::Entropy(p) = r.as_ref() else { continue };
                    if pl < p.layers && ph < p.heads {
                        series.push(export::Series {
                            name: format!("{name}: {}", text::head_name(pl, ph)),
                            colour: pin_colour,
                            dashed: s > 0,
                            points: binned(p.head(pl, ph)),
                        });
                    }
                }
            }
            let mut marks = vec![export::Mark {
                name: text::TRAINING_LENGTH.into(),
                x: training as f64,
                colour: palette::TRAINING_LENGTH,
            }];
            if let Some(k) = key_position {
                marks.push(export::Mark {
                    name: text::KEY_POSITION.into(),
                    x: k as f64,
                    colour: palette::KEY,
                });
            }
            export::Figure {
                stem: format!("nopescope-entropy-{length}"),
                title: format!("{} ({length} tokens)", text::ENTROPY_HEADING),
                x_label: text::POSITION_AXIS.into(),
                y_label: text::BITS_AXIS.into(),
                series,
                marks,
                log_x: false,
            }
        });
    }
}
