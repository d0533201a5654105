//! "Share": a link to the view on screen (the whole state is in its
//! fragment) and the code to embed it in a course page, with the panels the
//! page should hide. Nothing here changes the view itself.

use eframe::egui;

use crate::app::state::{ModelChoice, Tab, ViewState, PANEL_AGAINST, PANEL_ATTENTION, PANEL_CONTROLS, PANEL_ENTROPY};
use crate::app::state::{PANEL_ACCURACY, PANEL_COMPARE, PANEL_DOCUMENT, PANEL_PRESETS, PANEL_SEARCH};
use crate::app::state::{PANEL_PAGES, PANEL_STATUS, PANEL_TOUR};
use crate::app::text;

/// Past this many characters a link may be cut by the sites it is pasted
/// into (mail, chat and learning platforms differ; browsers take more).
const LONG_LINK: usize = 8000;

/// The panels an embedding may hide, in the order offered: the app's
/// bars, then those of the page in view.
const EMBED_PANELS: [(&str, &str); 3] = [
    (PANEL_PAGES, text::EMBED_HIDE_PAGES),
    (PANEL_STATUS, text::EMBED_HIDE_STATUS),
    (PANEL_TOUR, text::EMBED_HIDE_TOUR),
];

fn page_panels(tab: Tab) -> &'static [(&'static str, &'static str)] {
    match tab {
        Tab::Explore => &[
            (PANEL_CONTROLS, text::EMBED_HIDE_CONTROLS),
            (PANEL_ENTROPY, text::EMBED_HIDE_ENTROPY),
            (PANEL_ATTENTION, text::EMBED_HIDE_ATTENTION),
            (PANEL_AGAINST, text::EMBED_HIDE_AGAINST),
        ],
        Tab::Passkey => &[
            (PANEL_DOCUMENT, text::EMBED_HIDE_DOCUMENT),
            (PANEL_ACCURACY, text::EMBED_HIDE_ACCURACY),
        ],
        Tab::Tune => &[
            (PANEL_SEARCH, text::EMBED_HIDE_SEARCH),
            (PANEL_PRESETS, text::EMBED_HIDE_PRESETS),
            (PANEL_COMPARE, text::EMBED_HIDE_COMPARE),
        ],
    }
}

pub struct ShareView {
    /// The panels the embedded page hides.
    hide: Vec<String>,
    width: u32,
    height: u32,
    /// Where the web page is served (natively, kept between runs; the page
    /// knows its own).
    pub(crate) address: String,
}

impl Default for ShareView {
    fn default() -> Self {
        ShareView {
            // A course page shows the view, not the app's bars around it.
            hide: vec![PANEL_PAGES.into(), PANEL_STATUS.into()],
            width: 1000,
            height: 720,
            address: String::new(),
        }
    }
}

/// The page's address without its query and fragment (the web page's own;
/// natively what the user typed, if anything).
fn base(typed: &str) -> String {
    #[cfg(target_arch = "wasm32")]
    if let Some(a) = crate::app::web::page_address() {
        return a;
    }
    typed.trim().split(['#', '?']).next().unwrap_or("").to_string()
}

/// The link to a view at `address`, from its `fragment`
/// (`ViewState::to_fragment`).
pub fn link(address: &str, fragment: &str) -> String {
    format!("{}{fragment}", base(address))
}

/// The embed code of `state` with `hide` hidden, `width` x `height` CSS
/// pixels. The frame may write the clipboard (its own Copy buttons: a
/// browser refuses them inside a frame that is not allowed to).
pub fn embed_code(address: &str, state: &ViewState, hide: &[String], width: u32, height: u32) -> String {
    let embedded = ViewState {
        hide: hide.iter().filter(|p| offered(state, p)).cloned().collect(),
        ..state.clone()
    };
    format!(
        "<iframe src=\"{}\" width=\"{width}\" height=\"{height}\" style=\"border: 0\" title=\"{}\" loading=\"lazy\" allow=\"clipboard-write\"></iframe>",
        link(address, &embedded.to_fragment()).replace('&', "&amp;").replace('"', "&quot;"),
        text::embed_title(&shown(state)).replace('&', "&amp;").replace('"', "&quot;")
    )
}

/// Whether Share offers to hide `panel` from an embed of `state`: not the
/// walkthrough when none is open (the page bar's toggle would then open
/// one the embed does not show).
fn offered(state: &ViewState, panel: &str) -> bool {
    panel != PANEL_TOUR || state.tour.is_some()
}

/// What an embed of `state` shows, in a few words.
fn shown(state: &ViewState) -> String {
    if let Some(step) = state.tour {
        let step = step.min(crate::app::tour::STEPS.len() - 1);
        return format!("walkthrough step {}, {}", step + 1, crate::app::tour::STEPS[step].title);
    }
    // The model where it is not the bundled NoPE one.
    let model = match state.model {
        ModelChoice::Nope => String::new(),
        ModelChoice::Rope => format!("{}, ", text::MODEL_ROPE),
        ModelChoice::Custom => format!("{}, ", text::MODEL_CUSTOM),
    };
    match state.tab {
        Tab::Explore => format!("{model}{} tokens", state.length),
        Tab::Passkey => format!("{}, {model}{} tokens", text::TAB_PASSKEY, state.passkey_lab.length),
        Tab::Tune => format!("{}{}", model, text::TAB_TUNE),
    }
}

impl ShareView {
    /// `suggested`: the explorer's suggested head, which the link and the
    /// embed code fix (`ViewState::shared`).
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &ViewState, suggested: Option<(usize, usize)>) {
        let state = &state.shared(suggested);
        ui.heading(text::SHARE_HEADING);
        ui.label(text::SHARE_HELP);
        if state.model == ModelChoice::Custom {
            ui.label(egui::RichText::new(text::SHARE_CUSTOM_MODEL).color(ui.visuals().warn_fg_color));
        }
        if cfg!(not(target_arch = "wasm32")) {
            ui.horizontal_wrapped(|ui| {
                let label = ui.label(text::SHARE_ADDRESS);
                ui.add(
                    egui::TextEdit::singleline(&mut self.address)
                        .hint_text(text::SHARE_ADDRESS_HINT)
                        .desired_width(480.0),
                )
                .labelled_by(label.id);
            });
            if self.address.trim().is_empty() {
                ui.label(egui::RichText::new(text::SHARE_NO_ADDRESS).color(ui.visuals().warn_fg_color));
            }
        }
        let link = link(&self.address, &state.to_fragment());
        self.copy_row(ui, text::SHARE_LINK, &link, text::COPY_LINK);
        if link.len() > LONG_LINK {
            ui.label(egui::RichText::new(text::long_link(link.len())).color(ui.visuals().warn_fg_color));
        }
        ui.add_space(4.0);
        ui.label(text::EMBED_HELP);
        ui.horizontal_wrapped(|ui| {
            ui.label(text::EMBED_HIDE);
            let panels = EMBED_PANELS.iter().chain(page_panels(state.tab));
            for &(panel, name) in panels.filter(|(p, _)| offered(state, p)) {
                let mut hidden = self.hide.iter().any(|h| h == panel);
                if ui.checkbox(&mut hidden, name).changed() {
                    self.hide.retain(|h| h != panel);
                    if hidden {
                        self.hide.push(panel.into());
                    }
                }
            }
        });
        ui.horizontal(|ui| {
            ui.label(text::EMBED_SIZE);
            ui.add(egui::DragValue::new(&mut self.width).range(320..=3840).suffix(" px"));
            ui.label("x");
            ui.add(egui::DragValue::new(&mut self.height).range(240..=2160).suffix(" px"));
        });
        let code = embed_code(&self.address, state, &self.hide, self.width, self.height);
        self.copy_row(ui, text::EMBED_CODE, &code, text::COPY_EMBED);
        ui.label(egui::RichText::new(text::EMBED_THREADS).weak());
    }

    /// A read-only field holding `value`, named `name`, and its copy button.
    fn copy_row(&mut self, ui: &mut egui::Ui, name: &str, value: &str, button: &'static str) {
        ui.horizontal(|ui| {
            let label = ui.label(name);
            let mut shown = value;
            ui.add(egui::TextEdit::singleline(&mut shown).desired_width((ui.available_width() - 220.0).max(200.0)))
                .labelled_by(label.id);
            if ui.button(button).clicked() {
                super::copy_to_clipboard(ui.ctx(), value.to_string(), button);
            }
            // "copied" beside the button: under the row it pushed the
            // next rows down, under a click aimed at them.
            super::show_copied(ui, button);
        });
        // A refusal under the row, where it wraps (beside the button it ran
        // off a narrow frame's edge and pushed the next row's button out of
        // view).
        super::show_copy_refused(ui, button);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embed code hides the walkthrough only while one is open.
    #[test]
    fn the_walkthrough_is_hidden_only_while_open() {
        let hide = [PANEL_TOUR.to_string(), PANEL_STATUS.to_string()];
        let hidden = |state: &ViewState| {
            let code = embed_code("https://example.org/", state, &hide, 800, 600);
            let src = code.split('"').nth(1).unwrap().replace("&amp;", "&");
            ViewState::from_fragment(&src[src.find('#').unwrap()..])
                .unwrap()
                .unwrap()
                .hide
        };
        assert_eq!(hidden(&ViewState::default()), [PANEL_STATUS]);
        let touring = ViewState {
            tour: Some(2),
            ..Default::default()
        };
        assert_eq!(hidden(&touring), [PANEL_TOUR, PANEL_STATUS]);
    }

    /// The embed's title names the model where it is not the bundled NoPE
    /// one (it said "without position encoding" over the RoPE twin).
    #[test]
    fn the_embed_title_names_the_model() {
        let title = |state: &ViewState| {
            let code = embed_code("https://example.org/", state, &[], 800, 600);
            crate::app::export::attribute_value(&code, "title")
        };
        let nope = ViewState::default();
        assert_eq!(title(&nope), text::embed_title("1024 tokens"));
        let rope = ViewState {
            model: ModelChoice::Rope,
            ..nope.clone()
        };
        assert_eq!(title(&rope), text::embed_title("RoPE twin (bundled), 1024 tokens"));
        let lab = ViewState {
            tab: Tab::Passkey,
            ..rope
        };
        assert!(
            title(&lab).ends_with("Pass-key lab, RoPE twin (bundled), 256 tokens"),
            "{}",
            title(&lab)
        );
    }
}
