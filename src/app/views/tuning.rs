//! The tuning panel: the temperature search of `lab::search` (uniform and
//! per head) run on the app's engine, with its live loss curve and scale
//! map, and the presets it is compared with.

use eframe::egui;

use super::Keys;
use crate::app::jobs::Jobs;
use crate::app::state::ViewState;
use crate::app::text;

#[derive(Default)]
pub struct TuningView;

impl TuningView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _state: &mut ViewState, _jobs: &mut Jobs, _keys: &Keys) {
        ui.heading(text::TAB_TUNE);
    }
}
