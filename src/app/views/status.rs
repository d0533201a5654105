//! The status bar: which engine runs on which adapter (and why), a switch
//! between engines, what is being computed with a cancel button, and the
//! frame time (the UI must keep drawing while work runs).

use eframe::egui;

use crate::app::jobs::Jobs;
use crate::app::state::{Theme, ViewState};
use crate::app::text;
use crate::lab::backend::Backend;

/// Narrower than this (points), the status bar says less.
const NARROW: f32 = 640.0;

#[derive(Default)]
pub struct StatusView;

/// A label that moves to the next line whole instead of breaking inside
/// ("167 ms a" / "frame" on a tablet).
fn whole_label(text: impl Into<egui::WidgetText>) -> egui::Label {
    egui::Label::new(text).wrap_mode(egui::TextWrapMode::Extend)
}

/// One of `options` for `value`, after its caption (left out on a narrow
/// screen), each option with `hover` where given.
fn choices<T: PartialEq + Copy>(
    ui: &mut egui::Ui,
    caption: Option<&str>,
    value: &mut T,
    options: &[(T, &str)],
    hover: Option<&str>,
) {
    if let Some(caption) = caption {
        ui.label(caption);
    }
    for &(option, label) in options {
        let button = ui.selectable_value(value, option, label);
        if let Some(hover) = hover {
            button.on_hover_text(hover);
        }
    }
}

impl StatusView {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &mut ViewState, jobs: &mut Jobs, frame_ms: Option<f32>) {
        // On a narrow screen the bar keeps to about two lines: no
        // "Engine" caption, the engine's name without its details, the
        // frame time in short; the rest is in their hovers.
        let narrow = ui.available_width() < NARROW;
        ui.horizontal_wrapped(|ui| {
            let engines = [
                (Backend::Auto, text::BACKEND_AUTO),
                (Backend::Cpu, text::BACKEND_CPU),
                (Backend::Gpu, text::BACKEND_GPU),
            ];
            choices(
                ui,
                (!narrow).then_some(text::ENGINE),
                &mut state.backend,
                &engines,
                None,
            );
            // The name only; why this engine (and its adapter) on hover.
            let engine = jobs.engine();
            if engine.name.is_empty() {
                ui.label(text::ENGINE_NOT_STARTED);
            } else if narrow {
                let short = engine.name.split(" (").next().unwrap_or(&engine.name);
                let hover = if engine.why.is_empty() {
                    engine.name.clone()
                } else {
                    format!("{}: {}", engine.name, engine.why)
                };
                ui.label(short).on_hover_text(hover);
            } else {
                ui.label(&engine.name).on_hover_text(&engine.why);
            }
            ui.separator();
            let themes = [
                (Theme::System, text::THEME_SYSTEM),
                (Theme::Light, text::THEME_LIGHT),
                (Theme::Dark, text::THEME_DARK),
            ];
            let caption = (!narrow).then_some(text::THEME);
            choices(ui, caption, &mut state.theme, &themes, Some(text::THEME_HELP));
            ui.separator();
            let running = jobs.running();
            if running.is_empty() {
                ui.label(text::IDLE);
            } else {
                let (f, m) = &running[0];
                // The bar holds what fits; its hover says every job whole.
                let all: Vec<String> = running
                    .iter()
                    .map(|(f, m)| format!("{m} ({:.0}%)", f * 100.0))
                    .collect();
                ui.add(
                    egui::ProgressBar::new(*f)
                        .desired_width(if narrow { 160.0 } else { 240.0 })
                        .text(text::jobs_running(running.len(), m)),
                )
                .on_hover_text(all.join("\n"));
                if ui.button(text::CANCEL).clicked() {
                    jobs.cancel_all();
                }
            }
            #[cfg(target_arch = "wasm32")]
            if crate::app::web::offline().as_deref() == Some("ready") {
                ui.separator();
                ui.add(whole_label(text::OFFLINE_READY))
                    .on_hover_text(text::OFFLINE_READY_HOVER);
            }
            if let Some(ms) = frame_ms {
                ui.separator();
                let whole = text::frame_time(ms, !jobs.is_idle());
                if narrow {
                    ui.add(whole_label(text::frame_time_short(ms)))
                        .on_hover_text(format!("{whole}. {}", text::FRAME_TIME_HOVER));
                } else {
                    // Whole on one line or the next (split, "while computing"
                    // stood alone under the bar).
                    ui.add(whole_label(whole)).on_hover_text(text::FRAME_TIME_HOVER);
                }
            }
        });
    }
}
