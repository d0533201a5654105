//! The input: which model, which text (validation, pass-key document or
//! the user's own) and how many tokens, on a log scale from 16 to 16K.

use eframe::egui;

use std::ops::Range;

use crate::app::jobs::{Jobs, TextKey};
use crate::app::models::ModelInfo;
use crate::app::palette;
use crate::app::state::{InputKind, MapMode, ModelChoice, ViewState, MAX_LENGTH, MIN_LENGTH};
use crate::app::text;

/// How long "Play" shows each length, once every view of it is computed,
/// before it doubles (seconds).
const PLAY_DWELL_S: f64 = 1.5;

/// "Play": the length doubling on its own up to 16L, as TensorFlow
/// Playground plays its training.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Playing {
    /// Since when every view of the current length has been computed
    /// (`None`: some still computing).
    idle_since: Option<f64>,
    /// The length Play set last: any other (the slider, the walkthrough)
    /// stops it.
    length: usize,
}

/// The most the user's text box grows to (points); past it the text scrolls.
const PASTED_BOX_HEIGHT: f32 = 240.0;

/// Past this many bytes the user's text shows in a read-only preview that
/// lays out only the rows in view: in the editor a pasted book (1 MB) is
/// laid out and drawn whole every frame. "Edit" opens the editor.
pub const LONG_TEXT_BYTES: usize = 20_000;

#[derive(Default)]
pub struct InputView {
    /// The model folder the user typed or chose (natively).
    pub folder: String,
    /// The folder browser, while it is open.
    #[cfg(not(target_arch = "wasm32"))]
    dialog: Option<super::folder_dialog::FolderDialog>,
    /// A long text is in the editor (else in the preview).
    editing_long: bool,
    /// The preview's rows of the text, as byte ranges, made once per text
    /// and width (in characters).
    preview: Option<(TextKey, usize, Vec<Range<usize>>)>,
    /// The length playing (`Play`), while it does.
    playing: Option<Playing>,
}

/// `text` cut into rows of at most `width` characters: at each line break,
/// and within a longer line after its last space that keeps the row within
/// `width` (anywhere where there is none).
pub fn preview_rows(text: &str, width: usize) -> Vec<Range<usize>> {
    let mut rows = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let mut start = 0;
        loop {
            let rest = &body[start..];
            // The byte just past `width` characters, if the rest is longer.
            let Some((cut, _)) = rest.char_indices().nth(width) else {
                rows.push(line_start + start..line_start + body.len());
                break;
            };
            let end = match rest[..cut].rfind(' ') {
                Some(space) if space > 0 => space + 1,
                _ => cut,
            };
            rows.push(line_start + start..line_start + start + end);
            start += end;
        }
        line_start += line.len();
    }
    rows
}

impl InputView {
    /// The user's own text: an editor, or for a long text a preview; both
    /// scroll in a box of their own instead of pushing the controls below
    /// off the panel.
    fn pasted_text(&mut self, ui: &mut egui::Ui, state: &mut ViewState, tokens: Option<usize>) {
        let long = state.pasted_text.len() > LONG_TEXT_BYTES;
        if long && !self.editing_long {
            // The key the views share: made once per text, not each frame.
            let key = TextKey::of(&state.pasted_text);
            // Rows as wide as the box, from a typical letter's width (a
            // row of wider letters is cut short with an ellipsis).
            let font = egui::TextStyle::Body.resolve(ui.style());
            let letter = ui.fonts_mut(|f| f.glyph_width(&font, 'n')).max(1.0);
            let inner = ui.available_width() - 2.0 * ui.style().spacing.item_spacing.x - 16.0;
            let width = ((inner / letter) as usize).max(16);
            if self.preview.as_ref().is_none_or(|(k, w, _)| *k != key || *w != width) {
                self.preview = Some((key.clone(), width, preview_rows(key.as_str(), width)));
            }
            let rows = self.preview.as_ref().map(|(_, _, r)| r.as_slice()).unwrap_or_default();
            let row_height = ui.text_style_height(&egui::TextStyle::Body);
            egui::Frame::group(ui.style()).show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("pasted text preview")
                    .max_height(PASTED_BOX_HEIGHT)
                    .auto_shrink([false, true])
                    .show_rows(ui, row_height, rows.len(), |ui, shown| {
                        for row in &rows[shown] {
                            ui.add(
                                egui::Label::new(&key.as_str()[row.clone()]).wrap_mode(egui::TextWrapMode::Truncate),
                            );
                        }
                    });
            });
        } else {
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
        }
        if state.pasted_text.is_empty() {
            self.editing_long = false;
            // A text to start from, for a class with none at hand.
            ui.horizontal_wrapped(|ui| {
                ui.label(text::SAMPLE_TEXT_LABEL);
                for sample in crate::app::models::Sample::ALL {
                    let (name, help) = text::sample(sample);
                    if ui.button(name).on_hover_text(help).clicked() {
                        state.pasted_text = sample.text();
                    }
                }
            });
            return;
        }
        ui.horizontal_wrapped(|ui| {
            if long && !self.editing_long {
                if ui.button(text::EDIT_TEXT).on_hover_text(text::EDIT_TEXT_HELP).clicked() {
                    self.editing_long = true;
                }
            } else if long
                && ui
                    .button(text::DONE_EDITING)
                    .on_hover_text(text::DONE_EDITING_HELP)
                    .clicked()
            {
                self.editing_long = false;
            }
            if ui.button(text::CLEAR_TEXT).clicked() {
                state.pasted_text.clear();
                self.editing_long = false;
            }
            // Counted once per text (the key the views share), not each frame.
            let chars = TextKey::of(&state.pasted_text).chars();
            let short = tokens.filter(|&t| t < state.length);
            ui.label(egui::RichText::new(text::pasted_size(chars, short)).weak());
        });
    }

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
                    super::depth_slider(ui, &mut state.passkey.depth);
                });
            }
            InputKind::Pasted => self.pasted_text(ui, state, tokens),
        }
        ui.add(
            egui::Slider::new(&mut state.length, MIN_LENGTH..=MAX_LENGTH)
                .logarithmic(true)
                .text(text::LENGTH),
        )
        .on_hover_text(text::LENGTH_HELP);
        let last = info.training_length.saturating_mul(16).clamp(MIN_LENGTH, MAX_LENGTH);
        // The length the buttons ask for: any of them takes over from Play.
        let mut asked = None;
        ui.horizontal_wrapped(|ui| {
            if ui.button(text::HALVE_LENGTH).on_hover_text(text::HALVE_HELP).clicked() {
                asked = Some((state.length / 2).max(MIN_LENGTH));
            }
            if ui
                .button(text::DOUBLE_LENGTH)
                .on_hover_text(text::DOUBLE_HELP)
                .clicked()
            {
                asked = Some((state.length * 2).min(MAX_LENGTH));
            }
            for (label, l) in [
                (text::at_training_length(info.training_length), info.training_length),
                ("4L".to_string(), info.training_length.saturating_mul(4)),
                ("16L".to_string(), last),
            ] {
                if ui.button(label).clicked() {
                    asked = Some(l.clamp(MIN_LENGTH, MAX_LENGTH));
                }
            }
            let play = if self.playing.is_some() {
                text::PAUSE_LENGTHS
            } else {
                text::PLAY_LENGTHS
            };
            if ui.button(play).on_hover_text(text::PLAY_HELP).clicked() {
                self.toggle_play(state, info);
            }
        });
        if let Some(l) = asked {
            state.length = l;
            self.playing = None;
        }
        self.play(ui, state, jobs, last);
        let ratio = state.length as f64 / info.training_length as f64;
        let mut line = text::length_vs_training(state.length, info.training_length, ratio);
        if let Some(t) = tokens.filter(|&t| t != state.length) {
            line.push_str(&format!("; {}", text::tokens_note(t)));
        }
        ui.label(line);
    }

    /// Play, or Pause while it plays (the button, and the space bar).
    pub fn toggle_play(&mut self, state: &mut ViewState, info: ModelInfo) {
        let last = info.training_length.saturating_mul(16).clamp(MIN_LENGTH, MAX_LENGTH);
        self.playing = match self.playing {
            Some(_) => None,
            None => {
                if state.length >= last {
                    state.length = (info.training_length / 2).clamp(MIN_LENGTH, MAX_LENGTH);
                }
                // Coloured up to each length's own ceiling, the map would
                // look alike at every length: on one scale it brightens as
                // the input grows (the mode button shows the change).
                if state.map_mode == MapMode::Entropy {
                    state.map_mode = MapMode::Shared;
                }
                Some(Playing {
                    idle_since: None,
                    length: state.length,
                })
            }
        };
    }

    /// One frame of Play: once every view of the length is computed and
    /// shown for `PLAY_DWELL_S`, the length doubles; past `last` it stops.
    fn play(&mut self, ui: &egui::Ui, state: &mut ViewState, jobs: &Jobs, last: usize) {
        let Some(playing) = &mut self.playing else {
            return;
        };
        if state.length != playing.length {
            // Someone else chose a length.
            self.playing = None;
            return;
        }
        if !jobs.views_idle() {
            // The jobs wake the page when they finish.
            playing.idle_since = None;
            return;
        }
        let now = ui.input(|i| i.time);
        let since = *playing.idle_since.get_or_insert(now);
        let left = PLAY_DWELL_S - (now - since);
        if left > 0.0 {
            ui.ctx().request_repaint_after(std::time::Duration::from_secs_f64(left));
            return;
        }
        if state.length >= last {
            self.playing = None;
        } else {
            state.length = (state.length * 2).min(last);
            playing.length = state.length;
            playing.idle_since = None;
        }
        // The views ask for the new length's jobs, and the button says
        // Play again, in the next frame; nothing else would bring it (the
        // page stood still until the pointer moved).
        ui.ctx().request_repaint();
    }

    /// Opening a Hugging Face folder: a path typed or chosen in the folder
    /// browser natively; dropped files everywhere (the app takes them in `NopeApp::take_dropped_files`).
    fn open_model(&mut self, ui: &mut egui::Ui, jobs: &mut Jobs) {
        egui::CollapsingHeader::new(super::header_title(ui, text::OPEN_MODEL))
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
                if let Some(m) = &jobs.opened.model {
                    let i = &m.info;
                    ui.label(text::model_opened(&m.name, i.layers, i.heads, i.training_length));
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

#[cfg(test)]
mod tests {
    use super::preview_rows;

    /// The rows cover the text in order, leaving out only the line breaks;
    /// none is wider than asked; a long line breaks after a space, a word
    /// longer than a row anywhere, between characters (not bytes).
    #[test]
    fn preview_rows_cover_the_text_within_their_width() {
        let text =
            "short line\n\nà la ligne, une phrase un peu plus longue que la largeur\r\nunmotbienpluslongquelarangée";
        let rows = preview_rows(text, 12);
        let shown: Vec<&str> = rows.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(
            shown,
            [
                "short line",
                "",
                "à la ligne, ",
                "une phrase ",
                "un peu plus ",
                "longue que ",
                "la largeur",
                "unmotbienplu",
                "slongquelara",
                "ngée",
            ]
        );
        for w in rows.windows(2) {
            assert!(w[0].end <= w[1].start);
            assert!(text[w[0].end..w[1].start].chars().all(|c| c == '\n' || c == '\r'));
        }
        assert!(preview_rows("", 12).is_empty() && preview_rows("a\n", 12).len() == 1);
    }
}
