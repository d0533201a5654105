//! What the app's kittest files share: the app in a harness drawn with
//! wgpu (lavapipe on CI machines; no adapter is a failure), and waiting for
//! its jobs. Each test binary uses a part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use nopescope::app::state::ViewState;
use nopescope::app::{AppOptions, NopeApp};

/// The app on `state` in a window of `size` points.
pub fn harness(state: ViewState, size: [f32; 2]) -> Harness<'static, NopeApp> {
    Harness::builder()
        .with_size(size)
        .wgpu()
        .build_eframe(move |cc| NopeApp::new(&cc.egui_ctx, state, None, AppOptions::default()))
}

/// Steps frames until every job has finished (`limit` at most); returns
/// how long that took.
pub fn settle(h: &mut Harness<'static, NopeApp>, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut idle_frames = 0;
    while idle_frames < 3 {
        h.step();
        if h.state().jobs.is_idle() {
            idle_frames += 1;
        } else {
            idle_frames = 0;
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(start.elapsed() < limit, "jobs still running after {limit:?}");
    }
    start.elapsed()
}

/// Frames as a browser draws them: only when the app asks for one (now or
/// after a delay), never on a timer of the test's own. Install once; each
/// `next` steps a frame if one is due and says whether it did.
pub struct AskedFrames(std::sync::Arc<std::sync::Mutex<Option<Instant>>>);

impl AskedFrames {
    pub fn install(h: &Harness<'static, NopeApp>) -> Self {
        let due = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let d = std::sync::Arc::clone(&due);
        h.ctx.set_request_repaint_callback(move |info| {
            let at = Instant::now() + info.delay;
            let mut g = d.lock().unwrap();
            *g = Some(g.map_or(at, |x| x.min(at)));
        });
        AskedFrames(due)
    }

    pub fn next(&self, h: &mut Harness<'static, NopeApp>) -> bool {
        let due = {
            let mut g = self.0.lock().unwrap();
            let due = g.is_some_and(|t| t <= Instant::now());
            if due {
                *g = None;
            }
            due
        };
        if due {
            h.step();
        }
        due
    }

    /// Whether a frame is asked for at all (now or later).
    pub fn asked(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}

/// Saves the file the app's save dialog offers (after an export or a
/// save button) to `path`: the path typed over the proposed one, then
/// Save. Checks the dialog was open and closes.
#[allow(dead_code)]
pub fn save_through_dialog(h: &mut Harness<'static, NopeApp>, path: &std::path::Path) {
    use egui_kittest::kittest::Queryable;
    use nopescope::app::text;
    assert!(h.state().exporter.proposed_path().is_some(), "no save dialog open");
    h.get_by_label(text::SAVE_PATH).focus();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label(text::SAVE_PATH).type_text(path.to_str().unwrap());
    h.run_steps(1);
    h.get_by_label(text::SAVE).click();
    h.run_steps(2);
    assert!(h.state().exporter.proposed_path().is_none(), "the dialog closed");
}

/// Clicks the export buttons named `button` ("CSV", "SVG", "PNG") one by
/// one until one offers a file whose name ends with `ends`, saves it to
/// `path` and returns what was written (the other dialogs cancelled).
/// Panics when no button offers such a file.
#[allow(dead_code)]
pub fn export_through_dialog(
    h: &mut Harness<'static, NopeApp>,
    button: &str,
    ends: &str,
    path: &std::path::Path,
) -> String {
    use egui_kittest::kittest::Queryable;
    use nopescope::app::text;
    for k in 0..h.get_all_by_label(button).count() {
        h.get_all_by_label(button).nth(k).unwrap().click();
        h.run_steps(2);
        let proposed = h.state().exporter.proposed_path().map(String::from);
        if proposed.as_deref().is_some_and(|p| p.ends_with(ends)) {
            save_through_dialog(h, path);
            return std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        if proposed.is_some() {
            h.get_by_label(text::CANCEL).click();
            h.run_steps(2);
        }
    }
    panic!("no {button} button exports a file ending {ends}");
}

/// Every text the last frame painted (plot labels among them, which are no
/// widgets a query could find), in paint order.
pub fn painted_texts(h: &Harness<'static, NopeApp>) -> Vec<String> {
    use eframe::egui::Shape;
    fn walk(shape: &Shape, out: &mut Vec<String>) {
        match shape {
            Shape::Text(t) => out.push(t.galley.text().to_string()),
            Shape::Vec(shapes) => shapes.iter().for_each(|s| walk(s, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for clipped in &h.output().shapes {
        walk(&clipped.shape, &mut out);
    }
    out
}
