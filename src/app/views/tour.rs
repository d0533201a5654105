//! The classroom walkthrough's panel: the step's title and text, where to
//! look, whether its promise holds on the live results, and back / next.
//! The steps themselves are `app::tour`.

use eframe::egui;

use super::Keys;
use crate::app::jobs::Jobs;
use crate::app::models::ModelInfo;
use crate::app::palette;

use crate::app::state::ViewState;
use crate::app::text;
use crate::app::tour::{self, Promise, SearchSeen, STEPS};

#[derive(Default)]
pub struct TourView {
    /// The step whose setting is applied (a step from a URL or the saved
    /// state is applied when first shown).
    applied: Option<usize>,
    /// Step 5 selects the most distracted head once it is known.
    select_pending: bool,
    error: Option<String>,
    /// The step text's content and shown heights when a frame was last
    /// asked for to show it whole (`ui`).
    grown_for: Option<[f32; 2]>,
}

/// The most of the window's height the step's text takes before it
/// scrolls, and the least it is given however short the window.
const TEXT_SHARE: f32 = 0.25;
const MIN_TEXT_HEIGHT: f32 = 90.0;

impl TourView {
    /// Applies the step in `state.tour` if it is not applied yet; call
    /// before the keys of the frame are built. True when it applied one.
    pub fn sync(&mut self, state: &mut ViewState, info: ModelInfo) -> bool {
        let Some(step) = state.tour else {
            self.applied = None;
            return false;
        };
        let step = step.min(STEPS.len() - 1);
        if self.applied == Some(step) {
            return false;
        }
        self.error = tour::apply(step, state, info).err();
        self.applied = Some(step);
        let setting = STEPS[step].setting;
        self.select_pending = setting.select != tour::Select::Kept || setting.lab;
        true
    }

    /// Follow-ups that need results (selecting the most distracted head).
    pub fn follow_up(&mut self, state: &mut ViewState, jobs: &Jobs, keys: &Keys) {
        if !self.select_pending {
            return;
        }
        let step = state.tour.unwrap_or_default().min(STEPS.len() - 1);
        let setting = STEPS[step].setting;
        let found = match setting.select {
            _ if setting.lab => tour::best_retrieving_head(jobs, state, keys),
            tour::Select::MostFlattened => tour::most_flattened_head(jobs, keys),
            tour::Select::MostRisen => tour::most_risen_head(jobs, keys),
            tour::Select::Kept => None,
        };
        if let Some((layer, head, _)) = found {
            // Chosen: the head a step talked about stays when the
            // walkthrough closes.
            state.choose_head(layer, head);
            self.select_pending = false;
        }
    }

    /// `search`: the tuning page's latest search, which the search step
    /// measures.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &mut ViewState,
        jobs: &Jobs,
        keys: &Keys,
        search: Option<SearchSeen>,
    ) {
        let Some(step) = state.tour.map(|s| s.min(STEPS.len() - 1)) else {
            return;
        };
        let s = &STEPS[step];
        ui.add_space(4.0);
        // The buttons first, on the title's row: Next stays in one place
        // from step to step and while a step's measured line comes in (a
        // presenter clicking it twice hit the text it moved under).
        ui.horizontal_wrapped(|ui| {
            if ui
                .add_enabled(step > 0, egui::Button::new(text::TOUR_BACK))
                .on_hover_text(text::TOUR_BACK_HELP)
                .clicked()
            {
                state.tour = Some(step - 1);
            }
            // The last step's way on is to close the walkthrough; an embed
            // without the page bar has no way back to it: no closing there.
            let closable = !state.hidden(crate::app::state::PANEL_PAGES);
            if step + 1 < STEPS.len() {
                if ui.button(text::TOUR_NEXT).on_hover_text(text::TOUR_NEXT_HELP).clicked() {
                    state.tour = Some(step + 1);
                }
                if closable && ui.button(text::TOUR_CLOSE).clicked() {
                    state.tour = None;
                }
            } else if closable
                && ui
                    .button(text::TOUR_FINISH)
                    .on_hover_text(text::TOUR_FINISH_HELP)
                    .clicked()
            {
                state.tour = None;
            }
            ui.separator();
            ui.label(egui::RichText::new(text::tour_step(step, STEPS.len())).weak());
            ui.label(egui::RichText::new(s.title).heading());
        });
        // The step's text scrolls past a share of the window's height: in
        // a short embed (640 x 400) it took half of it, over the view it
        // talks about. On a taller screen it all shows.
        let most = (ui.ctx().content_rect().height() * TEXT_SHARE).max(MIN_TEXT_HEIGHT);
        let shown = egui::ScrollArea::vertical()
            // Each step's own: the next opens at its top.
            .id_salt(("tour text", step))
            .max_height(most)
            .auto_shrink([false, true])
            .show(ui, |ui| {
                ui.label(egui::RichText::new(s.body).size(16.0));
                // What to do now: in the strong colour (in grey italics it
                // read as an aside).
                ui.label(egui::RichText::new(s.look).strong());
                match tour::promise(step, state, jobs, keys, search) {
                    Promise::Pending => ui.label(text::TOUR_PENDING),
                    Promise::Waiting(m) => ui.label(m),
                    Promise::Met(m) => ui.label(text::tour_met(&m)),
                    Promise::Broken(m) => ui.colored_label(palette::ERROR, text::tour_broken(&m)),
                };
                if let Some(e) = &self.error {
                    ui.colored_label(palette::ERROR, text::error(e));
                }
            });
        // The panel is as tall as its content was in the frame before: text
        // that grew (a line come in, the window grown) shows cut off under a
        // fade until the next frame, which a browser draws only when asked
        // (it stayed so until the pointer moved). One frame is asked for,
        // once for each pair of heights, so a text that cannot grow (past
        // `most`) asks for nothing more.
        let heights = [shown.content_size.y, shown.inner_rect.height()];
        if heights[0] <= heights[1] + 0.5 {
            self.grown_for = None;
        } else if heights[1] + 0.5 < most && self.grown_for != Some(heights) {
            self.grown_for = Some(heights);
            ui.ctx().request_repaint();
        }
        ui.add_space(4.0);
    }
}
