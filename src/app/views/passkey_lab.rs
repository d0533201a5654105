//! The pass-key lab: build one pass-key document, decode the model's answer
//! greedily beside the key, show the retrieving query's attention, and a
//! length x depth accuracy map filled in live.

use eframe::egui;

use super::Keys;
use crate::app::jobs::Jobs;
use crate::app::state::ViewState;
use crate::app::text;

#[derive(Default)]
pub struct PasskeyLabView;

impl PasskeyLabView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _state: &mut ViewState, _jobs: &mut Jobs, _keys: &Keys) {
        ui.heading(text::TAB_PASSKEY);
    }
}
