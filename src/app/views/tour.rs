//! The classroom walkthrough: a guided sequence of steps, each setting the
//! views and explaining what they show.

use eframe::egui;

use crate::app::state::ViewState;

#[derive(Default)]
pub struct TourView;

impl TourView {
    pub fn ui(&mut self, _ui: &mut egui::Ui, _state: &mut ViewState) {}
}
