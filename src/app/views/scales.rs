//! Head scales: one uniform scale for every head, or per-head scales from a
//! head-scales file (a path natively, or the file's JSON pasted). A bad
//! file shows the loader's error here; nothing panics.

use std::path::Path;

use eframe::egui;

use crate::app::models::ModelInfo;
use crate::app::palette;
use crate::app::state::{LoadedScales, ViewState};
use crate::app::text;
use crate::model::head_scales::HeadScales;

/// The uniform scale slider's step: that of the uniform search's grid
/// (`lab::search::uniform_grid`).
const UNIFORM_STEP: f64 = 0.05;

#[derive(Default)]
pub struct ScalesView {
    /// What the user typed: a path or JSON.
    pub source: String,
    pub error: Option<String>,
}

/// Reads head scales from a path or from JSON text, checked against the
/// model's shape.
pub fn load_scales(source: &str, info: ModelInfo) -> Result<LoadedScales, String> {
    let source = source.trim();
    if source.is_empty() {
        return Err(text::NO_SCALES_SOURCE.into());
    }
    if source.starts_with('{') {
        return scales_from_json(source, "pasted JSON", info);
    }
    let path = Path::new(source);
    let body = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    loaded(
        HeadScales::from_json_searched(&body, Some(path)),
        path.display().to_string(),
        info,
    )
}

/// Head scales from a file's JSON (`name`: what the panel calls it), if
/// they fit the model in view.
pub fn scales_from_json(json: &str, name: &str, info: ModelInfo) -> Result<LoadedScales, String> {
    loaded(HeadScales::from_json_searched(json, None), name.to_string(), info)
}

/// Read scales (and the model their file says they were searched on), if
/// they fit the model in view.
fn loaded(
    read: crate::model::error::Result<(HeadScales, crate::model::head_scales::Searched)>,
    name: String,
    info: ModelInfo,
) -> Result<LoadedScales, String> {
    let (hs, searched) = read.map_err(|e| e.to_string())?;
    if (hs.num_layers, hs.num_heads) != (info.layers, info.heads) {
        return Err(text::scales_shape(hs.num_layers, hs.num_heads, info.layers, info.heads));
    }
    Ok(LoadedScales {
        name,
        layers: hs.num_layers,
        heads: hs.num_heads,
        values: hs.values,
        rule: hs.rule,
        stopped_after: searched.stopped_after,
        uniform_search: searched.uniform,
        searched_on: searched.model,
        fingerprint: searched.fingerprint,
    })
}

impl ScalesView {
    /// `model`: the model in view, as scales files are compared with it.
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, info: ModelInfo, model: super::ModelInView<'_>) {
        ui.heading(text::SCALES_HEADING);
        let s = &mut state.scales;
        ui.add_enabled(
            !(s.use_file && s.file.is_some()),
            // Steps of 0.05 (the uniform search's grid): a drag lands on
            // values one can name and share, not s = 1.2374.
            egui::Slider::new(&mut s.uniform, 0.25..=4.0)
                .logarithmic(true)
                .step_by(UNIFORM_STEP)
                .text(text::UNIFORM_SCALE),
        )
        .on_hover_text(text::UNIFORM_HELP);
        if !s.rule().is_constant() {
            ui.label(text::rule_in_use(&s.rule()));
        }
        if ui.button(text::RESET_SCALES).clicked() {
            s.uniform = 1.0;
            s.use_file = false;
            s.rule = Default::default();
        }
        let label = ui.label(text::SCALES_FILE);
        ui.add(
            egui::TextEdit::singleline(&mut self.source)
                .hint_text(text::NO_SCALES_SOURCE)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
        if ui.button(text::LOAD_SCALES).clicked() {
            match load_scales(&self.source, info) {
                Ok(loaded) => {
                    s.file = Some(loaded);
                    s.use_file = true;
                    self.error = None;
                }
                Err(e) => self.error = Some(e),
            }
        }
        if let Some(e) = &self.error {
            ui.colored_label(palette::ERROR, text::error(e));
        }
        if let Some(f) = &s.file {
            let name = f.name.clone();
            // Loaded for a model of another shape (kept for when it is back).
            let fits = (f.layers, f.heads) == (info.layers, info.heads);
            let (layers, heads) = (f.layers, f.heads);
            ui.add_enabled(fits, egui::Checkbox::new(&mut s.use_file, text::USE_FILE_SCALES));
            ui.label(text::loaded_from(&name));
            if !fits {
                ui.label(
                    egui::RichText::new(text::scales_for_other_shape(layers, heads, info.layers, info.heads))
                        .color(ui.visuals().warn_fg_color),
                );
            }
        }
        super::scales_file_notes(ui, s, model);
    }
}
