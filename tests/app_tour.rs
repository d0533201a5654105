//! The classroom walkthrough, walked the way a teacher would: open it, check
//! that each step's promise holds on the live results (computed on the
//! bundled models), snapshot it, press Next. Also: a panel hidden through
//! the URL's `hide=` is not drawn. Rendered with wgpu (lavapipe on CI
//! machines; no adapter is a failure, not a skip).
#![cfg(feature = "app")]

mod app_common;

use std::time::Duration;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use nopescope::app::state::{ViewState, PANEL_CONTROLS, PANEL_STATUS};
use nopescope::app::tour::{self, Promise, STEPS};
use nopescope::app::views::Keys;
use nopescope::app::{text, NopeApp};

const WIDTH: f32 = 1280.0;
const HEIGHT: f32 = 1000.0;

fn harness(state: ViewState) -> Harness<'static, NopeApp> {
    app_common::harness(state, [WIDTH, HEIGHT])
}

/// Steps frames until every job has finished; returns how long it took.
fn settle(h: &mut Harness<'static, NopeApp>) -> Duration {
    app_common::settle(h, Duration::from_secs(120))
}

fn promise(h: &Harness<'static, NopeApp>, step: usize) -> Promise {
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    tour::promise(step, &app.state, &app.jobs, &keys, app.tuning().seen())
}

#[test]
fn every_walkthrough_step_keeps_its_promise() {
    let mut h = harness(ViewState::default());
    settle(&mut h);
    h.get_by_label(text::TOUR_OPEN).click();
    for (step, this) in STEPS.iter().enumerate() {
        h.step();
        let took = settle(&mut h);
        // The follow-up of a step (selecting a head) may ask for more.
        h.run_steps(2);
        settle(&mut h);
        assert_eq!(h.state().state.tour, Some(step));
        h.get_by_label(this.title);
        if this.setting.tune {
            // The search step waits for its search, which the user starts.
            assert_eq!(
                promise(&h, step),
                Promise::Waiting(text::TOUR_SEARCH_PENDING.into()),
                "step {}",
                step + 1
            );
            h.get_by_label(text::TOUR_SEARCH_PENDING);
            assert_eq!(h.state().state.tab, nopescope::app::state::Tab::Tune);
            h.get_by_label(text::START_SEARCH).click();
            let took = app_common::settle(&mut h, Duration::from_secs(300));
            h.run_steps(2);
            eprintln!("step {}: the search took {:.1} s", step + 1, took.as_secs_f64());
        }
        if this.setting.lab {
            let app = h.state();
            let keys = Keys::of(&app.state, app.info());
            let best = tour::best_retrieving_head(&app.jobs, &app.state, &keys).expect("heads ranked");
            assert_eq!(
                (app.state.layer, app.state.head),
                (best.0, best.1),
                "step {}: the best head is selected",
                step + 1
            );
        }
        // A step that selects a head selected the one it names, for good.
        let app = h.state();
        let keys = Keys::of(&app.state, app.info());
        let wanted = match this.setting.select {
            tour::Select::MostFlattened => tour::most_flattened_head(&app.jobs, &keys),
            tour::Select::MostRisen => tour::most_risen_head(&app.jobs, &keys),
            tour::Select::Kept => None,
        };
        if let Some((layer, head, _)) = wanted {
            assert_eq!((app.state.layer, app.state.head), (layer, head), "step {}", step + 1);
            assert!(app.state.head_chosen, "step {}", step + 1);
        } else {
            assert_eq!(
                this.setting.select,
                tour::Select::Kept,
                "step {}: nothing to select",
                step + 1
            );
        }
        match promise(&h, step) {
            Promise::Met(m) => eprintln!("step {}: {:.1} s: {m}", step + 1, took.as_secs_f64()),
            other => panic!("step {} ({}): {other:?}", step + 1, this.title),
        }
        h.mask(eframe::egui::Rect::from_min_max(
            eframe::egui::pos2(0.0, HEIGHT - 48.0),
            eframe::egui::pos2(WIDTH, HEIGHT),
        ));
        h.snapshot(format!("tour_step_{}", step + 1));
        if step + 1 < STEPS.len() {
            h.get_by_label(text::TOUR_NEXT).click();
        }
    }
    // The last step has no Next: Finish closes the walkthrough there.
    assert!(h.query_by_label(text::TOUR_NEXT).is_none());
    // Back returns to the previous step's setting.
    h.get_by_label(text::TOUR_BACK).click();
    h.run_steps(2);
    assert_eq!(h.state().state.tour, Some(STEPS.len() - 2));
    h.get_by_label(text::TOUR_NEXT).click();
    h.run_steps(2);
    h.get_by_label(text::TOUR_FINISH).click();
    h.run_steps(2);
    assert_eq!(h.state().state.tour, None);
}

/// An embed that hides every panel but the walkthrough: each step still
/// computes what it reads, selects its head and keeps its promise (the
/// hidden map or document used to be the only ones asking, and the step
/// waited for ever), and offers no Close (no page bar to reopen it).
#[test]
fn a_step_keeps_its_promise_with_every_other_panel_hidden() {
    let hide: Vec<&str> = nopescope::app::state::PANELS
        .into_iter()
        .filter(|p| *p != nopescope::app::state::PANEL_TOUR)
        .collect();
    for (step, this) in STEPS.iter().enumerate().filter(|(_, s)| !s.setting.tune) {
        let link = format!("#step={}&hide={}", step + 1, hide.join(","));
        let mut h = harness(ViewState::from_fragment(&link).unwrap().unwrap());
        h.run_steps(2);
        settle(&mut h);
        h.run_steps(2);
        settle(&mut h);
        match promise(&h, step) {
            Promise::Met(_) => {}
            other => panic!("step {} ({}) with {link}: {other:?}", step + 1, this.title),
        }
        if this.setting.select != tour::Select::Kept || this.setting.lab {
            assert!(h.state().state.head_chosen, "step {}: no head selected", step + 1);
        }
        // Without the page bar nothing would bring a closed walkthrough back.
        assert!(
            h.query_by_label(text::TOUR_CLOSE).is_none() && h.query_by_label(text::TOUR_FINISH).is_none(),
            "step {}: the embed's walkthrough can be closed for good",
            step + 1
        );
    }
}

#[test]
fn a_step_opened_from_its_link_sets_its_view() {
    // What a teacher's link `#step=4` opens.
    let state = ViewState::from_fragment("#step=4").unwrap().unwrap();
    let mut h = harness(state);
    h.run_steps(2);
    let s = &h.state().state;
    assert_eq!(s.tour, Some(3));
    assert_eq!(s.length, 4 * h.state().info().training_length);
    assert_eq!(s.input, nopescope::app::state::InputKind::Passkey);
    h.get_by_label(STEPS[3].title);
}

/// In a narrow window the panels stack, and a step that says to look at
/// the entropy plot scrolls it into view once, when it opens (it was below
/// the fold); the page can still be scrolled away from it afterwards.
#[test]
fn a_step_scrolls_what_it_points_at_into_view() {
    let (width, height) = (800.0, 900.0);
    // Opened from its link, by Next, and by Page Down (a presenter's
    // clicker): the last two change the step mid-frame, before its
    // settings apply, and once scrolled to the old layout.
    for how in ["link", "next", "page down"] {
        let link = if how == "link" { "#step=3" } else { "#step=2" };
        let state = ViewState::from_fragment(link).unwrap().unwrap();
        let mut h = app_common::harness(state, [width, height]);
        settle(&mut h);
        h.run_steps(3);
        match how {
            "next" => h.get_by_label(text::TOUR_NEXT).click(),
            "page down" => h.key_press(eframe::egui::Key::PageDown),
            _ => {}
        }
        h.run_steps(2);
        settle(&mut h);
        h.run_steps(3);
        assert_eq!(h.state().state.tour, Some(2), "{how}");
        let plot = h.get_by_label(text::ENTROPY_HEADING).rect();
        assert!(
            plot.min.y >= 0.0 && plot.min.y < height - 200.0,
            "{how}: the entropy plot's heading at {plot:?} in a window {height} high"
        );
    }
}

#[test]
fn hidden_panels_are_not_drawn() {
    let mut state = ViewState {
        length: 256,
        ..Default::default()
    };
    state.hide = vec![PANEL_CONTROLS.into(), PANEL_STATUS.into()];
    let mut h = harness(state);
    settle(&mut h);
    assert!(
        h.query_by_label(text::INPUT_HEADING).is_none(),
        "the input panel is hidden"
    );
    assert!(h.query_by_label(text::MAP_HEADING).is_none(), "the map is hidden");
    assert!(h.query_by_label(text::ENGINE).is_none(), "the status bar is hidden");
    h.get_by_label(text::ENTROPY_HEADING);
}

/// What each export button of a kind offers: the proposed file names, in
/// the order of the buttons (each dialog cancelled).
fn proposals(h: &mut Harness<'static, NopeApp>, button: &str) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..h.get_all_by_label(button).count() {
        h.get_all_by_label(button).nth(k).unwrap().click();
        h.run_steps(2);
        let proposed = h.state().exporter.proposed_path().map(String::from);
        if proposed.is_some() {
            h.get_by_label(text::CANCEL).click();
            h.run_steps(2);
        }
        out.push(proposed.unwrap_or_else(|| "(no dialog)".into()));
    }
    out
}

/// The save dialog's Browse...: the folder browser opens on the folder of
/// the path typed, a click steps into a subfolder, "Save in this folder"
/// puts the file's name in that folder, and Save writes it there.
#[test]
fn an_export_saves_in_a_folder_chosen_by_browsing() {
    let dir = std::env::temp_dir().join(format!("nopescope-export-browse-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("chosen")).unwrap();
    let state = ViewState {
        length: 256,
        ..Default::default()
    };
    let mut h = app_common::harness(state, [WIDTH, 1900.0]);
    settle(&mut h);
    h.get_all_by_label("CSV").next().unwrap().click();
    h.run_steps(2);
    h.get_by_label(text::SAVE_PATH).focus();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label(text::SAVE_PATH)
        .type_text(dir.join("first.csv").to_str().unwrap());
    h.run_steps(1);
    h.get_by_label(text::BROWSE).click();
    h.run_steps(3);
    h.get_by_label("chosen/").click();
    h.run_steps(3);
    h.get_by_label(text::SAVE_IN_THIS_FOLDER).click();
    h.run_steps(3);
    assert!(
        h.query_by_label(text::SAVE_IN_THIS_FOLDER).is_none(),
        "the browser closed"
    );
    let want = dir.canonicalize().unwrap().join("chosen").join("first.csv");
    assert_eq!(h.state().exporter.proposed_path(), Some(want.to_str().unwrap()));
    h.get_by_label(text::SAVE).click();
    h.run_steps(2);
    assert!(h.state().exporter.proposed_path().is_none(), "the save dialog closed");
    let body = std::fs::read_to_string(&want).unwrap_or_else(|e| panic!("{}: {e}", want.display()));
    assert!(body.contains(','), "{body}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A plot's data exported through the save dialog: the proposed path is
/// in the current folder, the file lands where the user typed, and it holds
/// every plotted series (CSV) or a drawable figure (SVG). The maps export
/// too: the layer x head map (a row per head) and the pooled attention map.
#[test]
fn exporting_plots_and_maps_saves_csv_and_svg() {
    let dir = std::env::temp_dir().join(format!("nopescope-export-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Tall enough that every map's buttons are on screen.
    let state = ViewState {
        length: 256,
        ..Default::default()
    };
    let mut h = app_common::harness(state, [WIDTH, 1900.0]);
    settle(&mut h);
    let csv = proposals(&mut h, "CSV");
    let svg = proposals(&mut h, "SVG");
    let at = |list: &[String], end: &str| {
        list.iter()
            .position(|p| p.ends_with(end))
            .unwrap_or_else(|| panic!("no button offers {end}: {list:?}"))
    };
    assert!(
        csv.iter()
            .any(|p| p.contains("pooled_attention_L") && p.ends_with("_256.csv")),
        "{csv:?}"
    );
    assert!(
        !svg.iter().any(|p| p.contains("pooled_attention_L")),
        "65536 cells: no SVG"
    );
    let entropy_csv = at(&csv, "nopescope-entropy-256.csv");
    let entropy_svg = at(&svg, "nopescope-entropy-256.svg");
    for (button, k, file) in [("CSV", entropy_csv, "entropy.csv"), ("SVG", entropy_svg, "entropy.svg")] {
        h.get_all_by_label(button).nth(k).unwrap().click();
        h.run_steps(2);
        app_common::save_through_dialog(&mut h, &dir.join(file));
        let path = dir.join(file);
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if button == "CSV" {
            assert!(
                body.starts_with("series,query position i,entropy (bits)\n"),
                "{}",
                &body[..80.min(body.len())]
            );
            // The ceiling and the mean over heads, 256 points each, the
            // selected head too, and the mark for L.
            assert_eq!(body.lines().count(), 1 + 1 + 3 * 256, "rows");
            assert!(body.contains(text::TRAINING_LENGTH));
        } else {
            assert!(
                body.starts_with("<svg") && body.matches("<polyline").count() == 3,
                "svg"
            );
        }
    }
    h.get_all_by_label("CSV")
        .nth(at(&csv, "head_map_entropy_256.csv"))
        .unwrap()
        .click();
    h.run_steps(2);
    let path = dir.join("map.csv");
    app_common::save_through_dialog(&mut h, &path);
    let body = std::fs::read_to_string(&path).unwrap();
    assert!(body.starts_with("layer,head,"), "{body}");
    // The bundled NoPE model: 4 layers of 4 heads.
    assert_eq!(body.lines().count(), 1 + 4 * 4, "{body}");
    h.get_all_by_label("SVG")
        .nth(at(&svg, "head_map_entropy_256.svg"))
        .unwrap()
        .click();
    h.run_steps(2);
    let path = dir.join("map.svg");
    app_common::save_through_dialog(&mut h, &path);
    let body = std::fs::read_to_string(&path).unwrap();
    assert_eq!(body.matches("<rect").count(), 1 + 16 + 50, "a square per head");
    std::fs::remove_dir_all(&dir).ok();
}

/// In a short embed (640 x 400, the page bar and status bar hidden) the
/// walkthrough's text scrolls within a quarter of the height, and the
/// view it talks about starts in the top half: the text took half of the
/// frame before 2026-12-03.
#[test]
fn a_short_embed_keeps_the_view_in_sight() {
    let (state, _) = ViewState::read_link("#step=3&hide=pages,status").unwrap();
    let height = 400.0;
    let mut h = app_common::harness(state, [640.0, height]);
    app_common::settle(&mut h, std::time::Duration::from_secs(120));
    h.run_steps(3);
    let top = h.get_by_label(text::ENTROPY_HEADING).rect().min.y;
    assert!(top < 0.45 * height, "the entropy plot starts at y = {top} of {height}");
    // All of the step's text is still there, to scroll to.
    h.get_by_label_contains("Measured just now");
}

/// A narrow page in one column puts the entropy plot under the input and
/// over the other controls: a 640 x 400 embed shows a figure, not only
/// controls. Before 2026-12-03 the scales and the map came first and the
/// entropy plot began at y = 755, out of sight.
#[test]
fn a_one_column_page_shows_the_entropy_under_the_input() {
    let height = 400.0;
    let mut h = app_common::harness(ViewState::default(), [640.0, height]);
    app_common::settle(&mut h, std::time::Duration::from_secs(120));
    h.run_steps(3);
    let y = |h: &Harness<'static, NopeApp>, label: &str| h.get_by_label(label).rect().min.y;
    let (input, entropy) = (y(&h, text::INPUT_HEADING), y(&h, text::ENTROPY_HEADING));
    assert!(
        input < entropy && entropy < 0.6 * height,
        "input at {input}, entropy at {entropy} of {height}"
    );
    assert!(entropy < y(&h, text::SCALES_HEADING), "the scales under the entropy");
}

/// A step's text area is as tall as its text (up to a share of the
/// window), in a top panel as tall as its content was in the frame before.
/// When the window grows (the web page's first frames are drawn on a
/// smaller canvas), the text shows whole only from the next frame on, and
/// a browser draws frames only when asked: the last line stayed cut off
/// under a dark fade until the pointer moved (step 8, opened from a link,
/// in a click-through of the web page at 1280 x 800, 2026-12-04). Without
/// the frame the app now asks for, the line is not painted at all here.
#[test]
fn a_step_s_text_shows_whole_after_the_window_grows() {
    let (state, _) = ViewState::read_link("#step=8").unwrap();
    let mut h = app_common::harness(state, [300.0, 150.0]);
    settle(&mut h);
    // From here on, frames as a browser draws them: one for the resize,
    // then only those the app asks for.
    let frames = app_common::AskedFrames::install(&h);
    h.set_size(eframe::egui::vec2(1280.0, 800.0));
    h.step();
    let start = std::time::Instant::now();
    while frames.asked() || !h.state().jobs.is_idle() {
        assert!(start.elapsed() < Duration::from_secs(120), "still computing");
        if !frames.next(&mut h) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The line as painted, against the clip it was painted in.
    let (line, clip) =
        painted_with_clip(&h, text::TOUR_SEARCH_PENDING).expect("the step's last line not painted at all: cut off");
    assert!(
        line.max.y <= clip.max.y,
        "the step's last line ends at y = {}, its area at {}: cut off",
        line.max.y,
        clip.max.y
    );
}

/// Where the last frame painted `text` (the first shape of it), and the
/// clip it was painted in.
fn painted_with_clip(h: &Harness<'static, NopeApp>, text: &str) -> Option<(eframe::egui::Rect, eframe::egui::Rect)> {
    use eframe::egui::Shape;
    fn find(shape: &Shape, text: &str) -> Option<eframe::egui::Rect> {
        match shape {
            Shape::Text(t) if t.galley.text() == text => Some(t.visual_bounding_rect()),
            Shape::Vec(shapes) => shapes.iter().find_map(|s| find(s, text)),
            _ => None,
        }
    }
    h.output()
        .shapes
        .iter()
        .find_map(|c| find(&c.shape, text).map(|r| (r, c.clip_rect)))
}

/// The walkthrough's steps set their own model, input, length and scales
/// over the user's view; once it closes, "Back to your view" puts that
/// view back (a click-through found the user's own scales gone after
/// Finish, 2026-12-04), offered until something changes.
#[test]
fn back_to_your_view_after_the_walkthrough() {
    let mut mine = ViewState {
        model: nopescope::app::state::ModelChoice::Rope,
        length: 300,
        ..Default::default()
    };
    mine.scales.uniform = 1.4;
    let mut h = harness(mine.clone());
    settle(&mut h);
    assert!(h.query_by_label(text::BACK_FROM_TOUR).is_none());
    let mine = h.state().state.clone();
    h.get_by_label(text::TOUR_OPEN).click();
    for _ in 0..3 {
        h.step();
        settle(&mut h);
        h.get_by_label(text::TOUR_NEXT).click();
    }
    h.step();
    settle(&mut h);
    assert_ne!(
        ViewState {
            tour: None,
            ..h.state().state.clone()
        },
        mine,
        "the steps changed nothing"
    );
    // A theme chosen meanwhile is no part of the view put back.
    h.state_mut().state.theme = nopescope::app::state::Theme::Light;
    h.get_by_label(text::TOUR_CLOSE).click();
    h.run_steps(2);
    h.get_by_label(text::BACK_FROM_TOUR).click();
    h.run_steps(2);
    let light = ViewState {
        theme: nopescope::app::state::Theme::Light,
        ..mine
    };
    assert_eq!(h.state().state, light, "the view before the walkthrough");
    assert!(h.query_by_label(text::BACK_FROM_TOUR).is_none(), "offered once");

    // Offered until something changes.
    h.get_by_label(text::TOUR_OPEN).click();
    h.step();
    settle(&mut h);
    h.get_by_label(text::TOUR_CLOSE).click();
    h.run_steps(2);
    h.get_by_label(text::BACK_FROM_TOUR);
    h.state_mut().state.length = 512;
    h.run_steps(2);
    assert!(
        h.query_by_label(text::BACK_FROM_TOUR).is_none(),
        "still offered after a change"
    );
}
