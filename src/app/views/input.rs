//! The input: which model, which text (validation, pass-key document or
//! the user's own) and how many tokens, on a log scale from 16 to 16K.

use eframe::egui;

use crate::app::jobs::Jobs;
use crate::app::models::ModelInfo;
use crate::app::palette;
use crate::app::state::{InputKind, ModelChoice, ViewState, MAX_LENGTH, MIN_LENGTH};
use crate::app::text;

/// The most the user's text box grows to (points); past it the text scrolls.
const PASTED_BOX_HEIGHT: f32 = 240.0;

#[derive(Default)]
pub struct InputView {
    /// The model folder the user typed or chose (natively).
    pub folder: String,
    /// The folder browser, while it is open.
    #[cfg(not(target_arch = "wasm32"))]
    dialog: Option<super::folder_dialog::FolderDialog>,
}

impl InputView {
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &mut ViewState,
        jobs: &mut Jobs,
        info: ModelInfo,
        tokens: Option<usize>,
    ) {
        ui.heading(text::INPUT_HEADING);
        ui.horizontal_wrapped(|ui| {
            ui.label(text::MODEL);
            ui.selectable_value(&mut state.model, ModelChoice::Nope, text::MODEL_NOPE);
            ui.selectable_value(&mut state.model, ModelChoice::Rope, text::MODEL_ROPE);
            if jobs.opened.model.is_some() {
                ui.selectable_value(&mut state.model, ModelChoice::Custom, text::MODEL_CUSTOM);
            }
        });
        self.open_model(ui, jobs);
        ui.horizontal_wrapped(|ui| {
            ui.selectable_value(&mut state.input, InputKind::Validation, text::INPUT_VALIDATION);
            ui.selectable_value(&mut state.input, InputKind::Passkey, text::INPUT_PASSKEY);
            ui.selectable_value(&mut state.input, InputKind::Pasted, text::INPUT_PASTED);
        });
        match state.input {
            InputKind::Validation => {}
            InputKind::Passkey => {
                ui.horizontal_wrapped(|ui| {
                    let label = ui.label(text::PASSKEY_KEY);
                    ui.add(egui::DragValue::new(&mut state.passkey.key).range(10_000..=99_999))
                        .labelled_by(label.id);
                    ui.add(egui::Slider::new(&mut state.passkey.depth, 0.0..=1.0).text(text::PASSKEY_DEPTH));
                });
            }
            InputKind::Pasted => {
                // A long text (a pasted chapter) scrolls in its own box
                // instead of pushing the controls below it off the panel.
                egui::ScrollArea::vertical()
                    .id_salt("pasted text")
                    .max_height(PASTED_BOX_HEIGHT)
                    .show(ui, |ui| {
                        ui.add(
                            egui::TextEdit::multiline(&mut state.pasted_text)
                                .hint_text(text::PASTE_HINT)
                                .desired_rows(4)
                                .desired_width(f32::INFINITY),
                        )
                    });
                if !state.pasted_text.is_empty() {
                    // Counted once per text (the key the views share), not each frame.
                    let chars = crate::app::jobs::TextKey::of(&state.pasted_text).chars();
                    ui.label(egui::RichText::new(text::pasted_size(chars)).weak());
                }
            }
        }
        ui.add(
            egui::Slider::new(&mut state.length, MIN_LENGTH..=MAX_LENGTH)
                .logarithmic(true)
                .text(text::LENGTH),
        )
        .on_hover_text(text::LENGTH_HELP);
        ui.horizontal_wrapped(|ui| {
            if ui.button(text::HALVE_LENGTH).on_hover_text(text::HALVE_HELP).clicked() {
                state.length = (state.length / 2).max(MIN_LENGTH);
            }
            if ui
                .button(text::DOUBLE_LENGTH)
                .on_hover_text(text::DOUBLE_HELP)
                .clicked()
            {
                state.length = (state.length * 2).min(MAX_LENGTH);
            }
            for (label, l) in [
                (text::at_training_length(info.training_length), info.training_length),
                ("4L".to_string(), info.training_length.saturating_mul(4)),
                ("16L".to_string(), info.training_length.saturating_mul(16)),
            ] {
                if ui.button(label).clicked() {
                    state.length = l.clamp(MIN_LENGTH, MAX_LENGTH);
                }
            }
        });
        let ratio = state.length as f64 / info.training_length as f64;
        let mut line = text::length_vs_training(state.length, info.training_length, ratio);
        if let Some(t) = tokens.filter(|&t| t != state.length) {
            line.push_str(&format!("; {}", text::tokens_note(t)));
        }
        ui.label(line);
    }

    /// Opening a Hugging Face folder: a path typed or chosen in the folder
    /// browser natively; dropped files everywhere (the app takes them in `NopeApp::take_dropped_files`).
    fn open_model(&mut self, ui: &mut egui::Ui, jobs: &mut Jobs) {
        egui::CollapsingHeader::new(text::OPEN_MODEL)
            .default_open(jobs.opened.error.is_some())
            .show(ui, |ui| {
                #[cfg(not(target_arch = "wasm32"))]
                {
                    let label = ui.label(text::MODEL_FOLDER);
                    ui.add(egui::TextEdit::singleline(&mut self.folder).desired_width(f32::INFINITY))
                        .labelled_by(label.id);
                    ui.horizontal(|ui| {
                        if ui
                            .add_enabled(!jobs.opened.opening, egui::Button::new(text::OPEN_FOLDER))
                            .clicked()
                        {
                            let dir = std::path::PathBuf::from(self.folder.trim());
                            jobs.open_model(crate::app::compute::ModelSource::Folder(dir));
                        }
                        if ui
                            .add_enabled(!jobs.opened.opening, egui::Button::new(text::BROWSE))
                            .clicked()
                        {
                            let start = std::path::PathBuf::from(self.folder.trim());
                            self.dialog = Some(super::folder_dialog::FolderDialog::new(
                                &start,
                                super::folder_dialog::Purpose::OpenModel,
                            ));
                        }
                    });
                }
                #[cfg(target_arch = "wasm32")]
                if ui
                    .add_enabled(!jobs.opened.opening, egui::Button::new(text::PICK_FILES))
                    .clicked()
                {
                    if let Err(e) = crate::app::web::pick_files(jobs.model_sender()) {
                        jobs.opened.error = Some(e);
                    }
                }
                ui.label(text::DROP_HINT);
                if jobs.opened.opening {
                    ui.add(egui::Spinner::new());
                    ui.label(text::OPENING_MODEL);
                }
                if let Some(e) = &jobs.opened.error {
                    ui.colored_label(palette::ERROR, text::error(e));
                }
                if let Some((name, i)) = &jobs.opened.model {
                    ui.label(text::model_opened(name, i.layers, i.heads, i.training_length));
                }
            });
        // The folder browser, drawn over everything while it is open.
        #[cfg(not(target_arch = "wasm32"))]
        {
            use super::folder_dialog::Choice;
            match self.dialog.as_mut().and_then(|d| d.show(ui.ctx())) {
                Some(Choice::Open(dir)) => {
                    self.folder = dir.display().to_string();
                    self.dialog = None;
                    jobs.open_model(crate::app::compute::ModelSource::Folder(dir));
                }
                Some(Choice::Cancel) => self.dialog = None,
                None => {}
            }
        }
    }
}
