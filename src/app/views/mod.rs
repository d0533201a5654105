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
pub mod status;
pub mod tour;
pub mod tuning;

use eframe::egui;

use super::jobs::{Entry, InputAt, InputKey, JobKey, ScalesKey};
use super::models::ModelInfo;
use super::palette;
use super::state::{InputKind, ViewState};
use super::text;

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
            InputKind::Pasted => InputKey::Pasted(state.pasted_text.clone()),
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
        }
    }

    pub fn entropy(&self, scales: &ScalesKey) -> JobKey {
        JobKey::Entropy {
            at: self.at.clone(),
            scales: scales.clone(),
        }
    }

    /// The scale settings to draw on the model in view: s = 1 (or setting
    /// B, when chosen), then the current scales if they differ.
    pub fn settings(&self) -> Vec<(&'static str, ScalesKey, egui::Color32)> {
        self.settings_on(self.info.rope)
    }

    /// `settings` on a model with (`rope`) or without rotary position
    /// encoding, which names the unscaled setting.
    pub fn settings_on(&self, rope: bool) -> Vec<(&'static str, ScalesKey, egui::Color32)> {
        let (plain, colour) = match rope {
            true => (text::BEFORE_ROPE, palette::ROPE),
            false => (text::BEFORE, palette::NOPE),
        };
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

/// Where the pointer is in a plot's coordinates, near a data point or not
/// (for the plots' hover labels).
pub fn hovered(pos: &egui_plot::HoverPosition) -> egui_plot::PlotPoint {
    match pos {
        egui_plot::HoverPosition::NearDataPoint { position, .. } => *position,
        egui_plot::HoverPosition::Elsewhere { position } => *position,
    }
}

/// A legend shared by several plots: a short line of each colour and its
/// name, in a row that wraps.
pub fn legend_row(ui: &mut egui::Ui, entries: &[(&str, egui::Color32)]) {
    ui.horizontal_wrapped(|ui| {
        for &(name, colour) in entries {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(18.0, 12.0), egui::Sense::hover());
            let y = rect.center().y;
            ui.painter().line_segment(
                [egui::pos2(rect.left(), y), egui::pos2(rect.right(), y)],
                egui::Stroke::new(palette::LINE_WIDTH, colour),
            );
            ui.label(name);
            ui.add_space(8.0);
        }
    });
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
        Entry::Done(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::ModelChoice;

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
