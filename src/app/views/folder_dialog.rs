//! Choosing a folder natively: a folder browser the app draws itself
//! (nothing to install, the same on every desktop, reachable by keyboard
//! and through the accessibility tree like the rest of the app). It lists
//! the current folder's subfolders to step into and its parent; to open a
//! model it also says which of a Hugging Face model's files the folder
//! holds; to save an export it picks where.

use std::path::{Path, PathBuf};

use eframe::egui;

use crate::app::palette;
use crate::app::text;
use crate::model::files::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};

const LIST_HEIGHT: f32 = 320.0;

/// What the user did with the dialog this frame.
pub enum Choice {
    Open(PathBuf),
    Cancel,
}

/// What the folder is chosen for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A model folder: Open is offered where there is a config.json.
    OpenModel,
    /// Where to save a file.
    SaveHere,
}

pub struct FolderDialog {
    purpose: Purpose,
    dir: PathBuf,
    /// The subfolders (hidden ones left out), sorted by name.
    folders: Vec<String>,
    /// Which of a model's files the folder holds.
    config: bool,
    tokenizer: bool,
    weights: bool,
    /// Why the folder could not be listed.
    error: Option<String>,
}

impl FolderDialog {
    /// Opens on `start` when it is a folder, else on its nearest existing
    /// parent, else on the working directory.
    pub fn new(start: &Path, purpose: Purpose) -> Self {
        let mut dir = start.to_path_buf();
        while !dir.is_dir() {
            if !dir.pop() {
                dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                break;
            }
        }
        let mut d = FolderDialog {
            purpose,
            dir: dir.canonicalize().unwrap_or(dir),
            folders: Vec::new(),
            config: false,
            tokenizer: false,
            weights: false,
            error: None,
        };
        d.read();
        d
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&mut self) {
        self.folders.clear();
        (self.config, self.tokenizer, self.weights) = (false, false, false);
        self.error = None;
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        if !name.starts_with('.') {
                            self.folders.push(name);
                        }
                    } else {
                        match name.as_str() {
                            CONFIG_FILE => self.config = true,
                            TOKENIZER_FILE => self.tokenizer = true,
                            WEIGHTS_FILE | WEIGHTS_INDEX_FILE => self.weights = true,
                            _ => {}
                        }
                    }
                }
                self.folders.sort_by_key(|n| n.to_lowercase());
            }
            Err(e) => {
                self.error = Some(text::cannot_list_folder(
                    &self.dir.display().to_string(),
                    &e.to_string(),
                ))
            }
        }
    }

    fn go(&mut self, dir: PathBuf) {
        self.dir = dir;
        self.read();
    }

    /// Draws the dialog; returns the user's choice once made.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<Choice> {
        let mut choice = None;
        let mut go = None;
        egui::Modal::new(egui::Id::unique("nopescope folder dialog")).show(ctx, |ui| {
            ui.set_width(560.0);
            ui.heading(match self.purpose {
                Purpose::OpenModel => text::CHOOSE_FOLDER,
                Purpose::SaveHere => text::CHOOSE_SAVE_FOLDER,
            });
            ui.label(self.dir.display().to_string());
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(self.dir.parent().is_some(), egui::Button::new(text::FOLDER_UP))
                    .clicked()
                {
                    go = self.dir.parent().map(Path::to_path_buf);
                }
                if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
                    if ui.button(text::FOLDER_HOME).clicked() {
                        go = Some(home);
                    }
                }
            });
            if let Some(e) = &self.error {
                ui.colored_label(palette::ERROR, e);
            }
            // A fixed height, so the dialog stays put as folders change.
            egui::ScrollArea::vertical().max_height(LIST_HEIGHT).show(ui, |ui| {
                ui.set_min_height(LIST_HEIGHT);
                ui.set_width(ui.available_width());
                if self.folders.is_empty() && self.error.is_none() {
                    ui.weak(text::NO_SUBFOLDERS);
                }
                for name in &self.folders {
                    if ui.button(format!("{name}/")).clicked() {
                        go = Some(self.dir.join(name));
                    }
                }
            });
            ui.separator();
            let (button, ok, why) = match self.purpose {
                Purpose::OpenModel => {
                    let mark = |ok: bool, what: &str| format!("{} {what}", if ok { text::HAS } else { text::LACKS });
                    ui.label(format!(
                        "{}, {}, {}",
                        mark(self.config, CONFIG_FILE),
                        mark(self.weights, WEIGHTS_FILE),
                        mark(self.tokenizer, TOKENIZER_FILE)
                    ));
                    (text::OPEN_THIS_FOLDER, self.config, text::NOT_A_MODEL_FOLDER)
                }
                Purpose::SaveHere => (text::SAVE_IN_THIS_FOLDER, self.error.is_none(), text::CANNOT_SAVE_HERE),
            };
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(ok, egui::Button::new(button))
                    .on_disabled_hover_text(why)
                    .clicked()
                {
                    choice = Some(Choice::Open(self.dir.clone()));
                }
                if ui.button(text::CANCEL).clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                    choice = Some(Choice::Cancel);
                }
            });
        });
        if let Some(dir) = go {
            self.go(dir);
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_subfolders_and_the_model_files() {
        let root = std::env::temp_dir().join(format!("nopescope-folder-dialog-{}", std::process::id()));
        let model = root.join("b-model");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::create_dir_all(root.join("A-other")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(model.join(CONFIG_FILE), "{}").unwrap();
        std::fs::write(model.join(TOKENIZER_FILE), "{}").unwrap();
        let mut d = FolderDialog::new(&root.join("missing/child"), Purpose::OpenModel);
        assert_eq!(d.dir(), root.canonicalize().unwrap());
        assert_eq!(d.folders, vec!["A-other", "b-model"]);
        assert!(!d.config);
        d.go(model.clone());
        assert_eq!((d.config, d.tokenizer, d.weights), (true, true, false));
        d.go(root.join("gone"));
        assert!(d.error.as_deref().is_some_and(|e| e.contains("gone")), "{:?}", d.error);
        std::fs::remove_dir_all(&root).ok();
    }
}
