//! Against length: mean entropy, perplexity and pass-key accuracy from L/2
//! to 16L for NoPE, the current scales and the RoPE twin, computed on
//! request with progress, points appearing as each length finishes; the
//! entropy plot also draws the selected head's line and the ceiling of
//! uniform attention. Over the validation text, or the user's own where
//! it is the input in view.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{GridInput, GridMark, Line, MarkerShape, Plot, PlotPoints, Points, VLine};

use super::{show_entry_status, Keys, LegendEntry};
use crate::app::export;
use crate::app::jobs::{Entry, InputKey, JobKey, JobResult, Jobs, LengthPoint, Sweep, TextKey};
use crate::app::models::ModelInfo;
use crate::app::palette::{self, Look};
use crate::app::state::{ModelChoice, ViewState};
use crate::app::text;

#[derive(Default)]
pub struct AgainstLengthView {
    /// The series' keys last frame, over which text.
    last: Option<(Option<TextKey>, Vec<JobKey>)>,
}

type Metric = fn(&LengthPoint) -> Option<f64>;

/// Each later series' line is thinner and drawn over the ones before, so
/// lines that coincide (NoPE's and the twin's pass-key accuracy at 0) show
/// each colour, the first as the outer edge.
const WIDTHS: [f32; 3] = [3.5, 2.2, 1.2];

/// A series' look by its place among all series.
fn series_look(k: usize, colour: egui::Color32) -> Look {
    Look {
        width: WIDTHS[k % WIDTHS.len()],
        ..Look::line(colour)
    }
}

/// A series' selected head's line (entropy only): dashed, in the
/// series' colour lightened, under the series' own lines' widths.
fn head_look(colour: egui::Color32) -> Look {
    Look {
        width: 1.5,
        ..Look::head(colour)
    }
    .dashed()
}

/// The entropy of uniform attention over a window of `length` tokens,
/// averaged as the plot's points are: the mean of log2(i + 1) over its
/// positions.
pub fn mean_ceiling(length: usize) -> f64 {
    (1..=length).map(|i| (i as f64).log2()).sum::<f64>() / length.max(1) as f64
}

/// Each series' marker: shape, radius, filled.
const MARKERS: [(MarkerShape, f32, bool); 3] = [
    (MarkerShape::Circle, 3.5, true),
    (MarkerShape::Square, 5.0, false),
    (MarkerShape::Diamond, 7.0, false),
];

impl AgainstLengthView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, keys: &Keys) {
        ui.heading(text::AGAINST_HEADING);
        // Over the user's text where it is the input in view; else (the
        // validation text, a pass-key document) over the validation text.
        let text = match &keys.at.input {
            InputKey::Pasted(t) => Some(t.clone()),
            _ => None,
        };
        ui.label(text::against_help(
            crate::app::compute::SWEEP_WINDOWS,
            crate::app::compute::SWEEP_TRIALS,
            if keys.compare.is_some() {
                text::SETTING_B
            } else {
                "NoPE"
            },
            text.is_some(),
            !state.hidden(crate::app::state::PANEL_PAGES),
        ));
        // The model in view (the bundled NoPE, or the user's own).
        let model = if state.model == ModelChoice::Custom {
            ModelChoice::Custom
        } else {
            ModelChoice::Nope
        };
        // The settings every view draws: NoPE (or setting B), then the
        // current scales when they differ.
        // (On the bundled NoPE even while the RoPE twin is in view.)
        let rope = model == ModelChoice::Custom && keys.info.rope;
        let mut series: Vec<(String, egui::Color32, JobKey)> = keys
            // (blue: green stays the twin's, also beside a RoPE model of one's own)
            .settings_on(rope, palette::NOPE)
            .into_iter()
            .map(|(name, scales, colour)| {
                let key = JobKey::AgainstLength {
                    model,
                    scales,
                    text: text.clone(),
                };
                (name.to_string(), colour, key)
            })
            .collect();
        series.push((
            text::MODEL_ROPE.to_string(),
            palette::ROPE,
            JobKey::AgainstLength {
                model: ModelChoice::Rope,
                scales: keys.twin_ones.clone(),
                text: text.clone(),
            },
        ));
        // An edit of the text in view turns the sweep off and drops the
        // old text's points (each keystroke would start three sweeps to
        // 16L); a switch to another input keeps them for a switch back.
        let keys_now: Vec<JobKey> = series.iter().map(|(_, _, k)| k.clone()).collect();
        if let Some((Some(old), old_keys)) = &self.last {
            if text.as_ref().is_some_and(|t| t != old) {
                state.against_length = false;
                old_keys.iter().for_each(|k| jobs.forget(k));
            }
        }
        self.last = Some((text, keys_now));
        let Sweep {
            entries,
            running,
            stopped,
        } = jobs.sweep(series.iter().map(|(_, _, key)| key), &mut state.against_length);
        if !state.against_length && !stopped {
            if ui.button(text::AGAINST_START).clicked() {
                state.against_length = true;
            }
            return;
        }
        // Stop while the sweeps run, keeping the lengths done; then Go on
        // from them, or take the plots away (a later click computes them
        // again, from the points kept once done).
        let mut hide = false;
        ui.horizontal(|ui| {
            if running {
                if ui
                    .button(text::AGAINST_STOP)
                    .on_hover_text(text::AGAINST_STOP_HELP)
                    .clicked()
                {
                    state.against_length = false;
                    series.iter().for_each(|(_, _, key)| jobs.stop(key));
                }
                return;
            }
            if stopped
                && ui
                    .button(text::AGAINST_GO_ON)
                    .on_hover_text(text::AGAINST_GO_ON_HELP)
                    .clicked()
            {
                state.against_length = true;
                series.iter().for_each(|(_, _, key)| jobs.go_on(key));
            }
            hide = ui.button(text::AGAINST_HIDE).clicked();
        });
        if hide {
            state.against_length = false;
            for (_, _, key) in &series {
                if !matches!(jobs.peek(key), Some(Entry::Done(_))) {
                    jobs.forget(key);
                }
            }
            return;
        }
        // Every setting failed the same way (the text in view is empty or
        // too short): one message, and no empty plots under it.
        let failed: Vec<&String> = entries
            .iter()
            .filter_map(|e| match e {
                Some(Entry::Failed(m)) => Some(m),
                _ => None,
            })
            .collect();
        if failed.len() == entries.len() && failed.windows(2).all(|w| w[0] == w[1]) {
            if let Some(e) = failed.first() {
                ui.colored_label(palette::ERROR, text::error(e));
                return;
            }
        }
        // Each with its look, by its place among all series: hiding one
        // changes no other's line or marker.
        let mut results: Vec<(String, Look, usize, Arc<JobResult>)> = Vec::new();
        for (k, ((name, colour, _), entry)) in series.iter().zip(&entries).enumerate() {
            let Some(entry) = entry else { continue };
            if !matches!(entry, Entry::Done(_)) {
                ui.horizontal(|ui| {
                    ui.label(name);
                    show_entry_status(ui, entry);
                });
            }
            if let Some(r) = entry.shared() {
                results.push((name.clone(), series_look(k, *colour), k, r));
            }
        }
        // An opened model's L can put some of L/2 .. 16L past the app's
        // longest length: say so rather than leave the axis short.
        if (keys.info.training_length / 2).saturating_mul(32) > crate::app::state::MAX_LENGTH {
            ui.label(text::lengths_left_out(crate::app::state::MAX_LENGTH));
        }
        // The user's text may hold only the shorter lengths.
        let short = results.iter().find_map(|(_, _, _, r)| match r.as_ref() {
            JobResult::AgainstLength(a) => a.text_short,
            _ => None,
        });
        if let Some(n) = short {
            ui.label(text::against_text_short(n));
        }
        // One legend for the three plots, which share their series: in
        // plots this small a legend inside would hide the curves. A table:
        // a row per setting, its line in all three plots (a click hides it
        // in all three) and its selected head's in the entropy plot; then
        // the ceiling and L.
        let (layer, head) = (state.layer, state.head);
        let head_name = text::head_name(layer, head);
        let rows: Vec<String> = series.iter().map(|(n, _, _)| n.clone()).collect();
        let cols = [
            text::AGAINST_ALL_HEADS.to_string(),
            text::against_head_column(&head_name),
        ];
        // (A model without the selected head, the twin beside a larger
        // model of one's own, has no head cell; known from its shape, so
        // the cell does not come and go as its points arrive.)
        let twin = ModelInfo::bundled(ModelChoice::Rope);
        let has_head = |k: usize| match &series[k].2 {
            JobKey::AgainstLength {
                model: ModelChoice::Rope,
                ..
            } => twin.is_none_or(|t| layer < t.layers && head < t.heads),
            _ => true,
        };
        let cells: Vec<Vec<Option<LegendEntry>>> = series
            .iter()
            .enumerate()
            .map(|(k, (n, c, _))| {
                vec![
                    Some(LegendEntry::line(text::all_heads_line(n), series_look(k, *c))),
                    has_head(k).then(|| LegendEntry::line(text::head_line(n, &head_name), head_look(*c))),
                ]
            })
            .collect();
        let after = [
            LegendEntry::line(text::AGAINST_CEILING, Look::ceiling()),
            LegendEntry::mark(text::TRAINING_LENGTH, Look::training_length()),
        ];
        let hidden = super::legend_table(ui, "against length", &rows, &cols, &cells, &after);
        // The selected head's lines, where the model in view has it (the
        // twin's shape may differ: its line is then left out).
        let head_lines: Vec<(String, Look, Vec<[f64; 2]>)> = results
            .iter()
            .filter_map(|(name, _, k, r)| {
                let JobResult::AgainstLength(a) = r.as_ref() else {
                    return None;
                };
                let pts: Vec<[f64; 2]> = a
                    .points
                    .iter()
                    .filter_map(|p| p.head(layer, head).map(|y| [p.length as f64, y]))
                    .collect();
                let line = text::head_line(name, &head_name);
                (!pts.is_empty() && hidden.shows(&line)).then(|| (line, head_look(series[*k].1), pts))
            })
            .collect();
        // The ceiling at every length of the sweep.
        let ceiling: Option<(String, Look, Vec<[f64; 2]>)> = results
            .iter()
            .find_map(|(_, _, _, r)| match r.as_ref() {
                JobResult::AgainstLength(a) => Some(&a.lengths),
                _ => None,
            })
            .filter(|_| hidden.shows(text::AGAINST_CEILING))
            .map(|lengths| {
                let pts = lengths.iter().map(|&n| [n as f64, mean_ceiling(n)]).collect();
                (text::AGAINST_CEILING.to_string(), Look::ceiling(), pts)
            });
        results.retain(|(name, _, _, _)| hidden.shows(&text::all_heads_line(name)));
        let l = (keys.info.training_length as f64).log2();
        let metrics: [(&str, &str, Metric); 3] = [
            ("against entropy", text::BITS_AXIS, |p| Some(p.entropy_bits)),
            ("against perplexity", text::PERPLEXITY_AXIS, |p| Some(p.perplexity)),
            ("against passkey", text::PASSKEY_AXIS, |p| p.passkey_accuracy),
        ];
        let width = ((ui.available_width() - 24.0) / 3.0).max(220.0);
        let visuals = ui.visuals().clone();
        ui.horizontal_wrapped(|ui| {
            for (id, axis, metric) in metrics {
                let results = &results;
                // The entropy plot's own lines: the selected head's and
                // the ceiling (x in tokens, as exported).
                let extra: Vec<&(String, Look, Vec<[f64; 2]>)> = if id == "against entropy" {
                    ceiling.iter().chain(&head_lines).collect()
                } else {
                    Vec::new()
                };
                ui.vertical(|ui| {
                    let plot = super::nice_y(Plot::new(id))
                        .width(width)
                        .height(200.0)
                        .x_axis_label(text::LENGTH_AXIS)
                        .y_axis_label(axis)
                        .x_grid_spacer(move |input| doublings(input, l))
                        .x_axis_formatter(|mark, _| format!("{}", 2f64.powf(mark.value).round()))
                        .show(ui, |plot| {
                            for (name, look, pts) in &extra {
                                let pts: Vec<[f64; 2]> = pts.iter().map(|&[x, y]| [x.log2(), y]).collect();
                                plot.line(
                                    Line::new(name.as_str(), PlotPoints::from(pts))
                                        .color(look.paint(&visuals))
                                        .width(look.width)
                                        .style(look.style()),
                                );
                            }
                            for (name, look, k, r) in results.iter() {
                                let JobResult::AgainstLength(a) = r.as_ref() else {
                                    continue;
                                };
                                let pts: Vec<[f64; 2]> = a
                                    .points
                                    .iter()
                                    .filter_map(|p| metric(p).map(|y| [(p.length as f64).log2(), y]))
                                    .collect();
                                plot.line(
                                    Line::new(name.as_str(), PlotPoints::from(pts.clone()))
                                        .color(look.colour)
                                        .width(look.width),
                                );
                                // A marker of its own, larger and hollow
                                // for each later series, so points that
                                // coincide (NoPE's and the twin's pass-key
                                // accuracy, 1 then 0) all show.
                                let (shape, radius, filled) = MARKERS[k % MARKERS.len()];
                                plot.points(
                                    Points::new(name.as_str(), PlotPoints::from(pts))
                                        .color(look.colour)
                                        .shape(shape)
                                        .radius(radius)
                                        .filled(filled),
                                );
                            }
                            let mark = Look::training_length();
                            plot.vline(
                                VLine::new(text::TRAINING_LENGTH, l)
                                    .color(mark.paint(&visuals))
                                    .width(mark.width)
                                    .style(mark.style()),
                            );
                        });
                    export::buttons(ui, plot.response.rect, || export::Figure {
                        stem: format!("nopescope-{}", id.replace(' ', "-")),
                        title: format!("{}: {axis}", text::AGAINST_HEADING),
                        x_label: text::LENGTH_AXIS.into(),
                        y_label: axis.into(),
                        series: results
                            .iter()
                            .filter_map(|(name, look, _, r)| match r.as_ref() {
                                JobResult::AgainstLength(a) => Some(export::Series {
                                    name: name.clone(),
                                    look: *look,
                                    points: a
                                        .points
                                        .iter()
                                        .filter_map(|p| metric(p).map(|y| [p.length as f64, y]))
                                        .collect(),
                                }),
                                _ => None,
                            })
                            .chain(extra.iter().map(|(name, look, points)| export::Series {
                                name: name.clone(),
                                look: *look,
                                points: points.clone(),
                            }))
                            .collect(),
                        marks: vec![export::Mark {
                            name: text::TRAINING_LENGTH.into(),
                            x: 2f64.powf(l),
                            look: Look::training_length(),
                        }],
                        log_x: true,
                        bin: false,
                    });
                });
            }
        });
    }
}

/// The length axis' grid (log2 of the length): a line at every doubling,
/// the stronger ones (which carry the labels where there is room) at L
/// and every 4 times from it, so L is always labelled.
fn doublings(input: GridInput, l: f64) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    if !(lo.is_finite() && hi.is_finite() && hi >= lo) {
        return Vec::new();
    }
    // A plot zoomed far out spans thousands of doublings: every `stride`th
    // of them then, at most about 64 lines (one each would hang a frame).
    let stride = ((hi - lo) / 64.0).ceil().max(1.0) as usize;
    ((lo.ceil() as i64)..=(hi.floor() as i64))
        .step_by(stride)
        .map(|k| GridMark {
            value: k as f64,
            step_size: if (k as f64 - l).rem_euclid(2.0) == 0.0 {
                2.0
            } else {
                1.0
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{doublings, mean_ceiling};
    use egui_plot::GridInput;

    /// The mean of log2(i + 1) over T positions: 0 for one token, by hand
    /// for four, rising with T and under log2(T) (by about 1/ln 2 for
    /// long windows).
    #[test]
    fn the_mean_ceiling_is_the_mean_of_log2_i_plus_1() {
        assert_eq!(mean_ceiling(1), 0.0);
        let four = (0.0 + 1.0 + 3f64.log2() + 2.0) / 4.0;
        assert!((mean_ceiling(4) - four).abs() < 1e-12);
        let mut last = 0.0;
        for t in [2, 16, 256, 4096] {
            let c = mean_ceiling(t);
            assert!(c > last && c < (t as f64).log2(), "{t}: {c}");
            last = c;
        }
        let gap = 4096f64.log2() - mean_ceiling(4096);
        assert!((gap - 1.0 / std::f64::consts::LN_2).abs() < 0.01, "{gap}");
    }

    #[test]
    fn doublings_mark_l_strongly_and_stay_few_zoomed_out() {
        let grid = |lo, hi| {
            doublings(
                GridInput {
                    bounds: (lo, hi),
                    base_step_size: 0.01,
                },
                8.0,
            )
        };
        let near = grid(6.5, 12.5);
        assert_eq!(
            near.iter().map(|m| m.value).collect::<Vec<_>>(),
            [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
        );
        // L = 2^8 and every 4 times from it carry the labels.
        let strong: Vec<f64> = near.iter().filter(|m| m.step_size == 2.0).map(|m| m.value).collect();
        assert_eq!(strong, [8.0, 10.0, 12.0]);
        assert!(grid(-1e9, 1e9).len() <= 65, "zoomed far out");
        assert!(grid(f64::NAN, 3.0).is_empty());
    }
}
