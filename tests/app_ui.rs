//! The app driven the way a person would, through egui_kittest: rendered
//! with wgpu (lavapipe on CI machines; no adapter is a failure, not a
//! skip), compared with committed snapshots (`UPDATE_SNAPSHOTS=1` writes
//! them), and clicked and typed through the accessibility tree. Each test
//! checks that the state changed and that the views recomputed.
#![cfg(feature = "app")]

mod app_common;

use std::time::{Duration, Instant};

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use nopescope::app::jobs::{Entry, JobKey, JobResult};
use nopescope::app::state::ViewState;
use nopescope::app::views::Keys;
use nopescope::app::{text, NopeApp};

fn harness(state: ViewState, width: f32) -> Harness<'static, NopeApp> {
    app_common::harness(state, [width, HEIGHT])
}

/// Steps frames until every job has finished (a minute at most).
fn settle(h: &mut Harness<'static, NopeApp>) {
    app_common::settle(h, Duration::from_secs(60));
}

/// Snapshots leave out the status bar: it names the engine with this
/// machine's thread count and adapter.
fn snapshot(h: &mut Harness<'static, NopeApp>, name: &str, width: f32) {
    use eframe::egui::{pos2, Rect};
    h.mask(Rect::from_min_max(pos2(0.0, HEIGHT - 48.0), pos2(width, HEIGHT)));
    h.snapshot(name);
}

const HEIGHT: f32 = 980.0;

fn small_state() -> ViewState {
    ViewState {
        length: 512,
        ..Default::default()
    }
}

fn done(h: &Harness<'static, NopeApp>, key: &JobKey) -> bool {
    matches!(h.state().jobs.peek(key), Some(Entry::Done(_)))
}

#[test]
fn default_view_computes_and_matches_snapshot() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let entry = app.jobs.peek(&keys.entropy(&keys.ones)).cloned();
    match entry.as_ref().and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => {
            assert_eq!(p.length, 512);
            assert_eq!((p.layers, p.heads), (4, 4));
            // Entropy can never pass the uniform ceiling log2(i + 1).
            for (i, &e) in p.mean_over_heads().iter().enumerate() {
                assert!(e >= -1e-3 && e <= ((i + 1) as f32).log2() + 1e-3, "position {i}: {e}");
            }
        }
        other => panic!("no entropy profile: {other:?}"),
    }
    h.get_by_label(&text::head_name(0, 0));
    // No head chosen yet: the explorer selected the one whose curve closes
    // in most on the ceiling past L (layer 0, head 0 lies along the
    // ceiling), and says so.
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let (layer, head, closed) = nopescope::app::tour::most_flattened_head(&app.jobs, &keys).expect("a profile past L");
    assert!(closed > 0.5, "{closed}");
    assert_eq!((app.state.layer, app.state.head), (layer, head));
    assert!(!app.state.head_chosen);
    h.get_by_label(text::SELECTED_FOR_YOU);
    // The status bar names the engine (here the CPU engine, with its
    // instruction set); why it was chosen is on hover, not in the bar.
    let engine = h.state().jobs.engine().clone();
    assert!(engine.name.starts_with("cpu ("), "{engine:?}");
    assert!(!engine.why.is_empty(), "{engine:?}");
    h.get_by_label(&engine.name);
    assert!(
        h.query_by_label_contains(&engine.why).is_none(),
        "the reason is not in the bar"
    );
    snapshot(&mut h, "app_default", 1280.0);
}

#[test]
fn clicking_a_head_selects_it_and_recomputes_its_attention() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(&text::head_name(2, 3)).click();
    h.step();
    assert_eq!((h.state().state.layer, h.state().state.head), (2, 3));
    assert!(h.state().state.head_chosen, "a click chooses");
    assert!(h.query_by_label(text::SELECTED_FOR_YOU).is_none());
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let row = JobKey::AttnRow {
        at: keys.at.clone(),
        scales: keys.ones.clone(),
        layer: 2,
        head: 3,
        query: None,
    };
    assert!(done(&h, &row), "the attention row of layer 2, head 3 was not computed");
    assert!(
        h.get_all_by_label(&text::selected(2, 3)).count() >= 2,
        "the map and the attention view name the head"
    );
}

/// A query that puts most of its attention on the first token is called
/// an attention sink under the attention row (the RoPE twin's layer 3,
/// head 2 at query 50 puts 69% there); NoPE's same head and query does
/// not (0.0%), and no note is shown for it.
#[test]
fn an_attention_sink_is_named_and_explained() {
    use nopescope::app::state::ModelChoice;
    let sink = "% of this query's attention is on the first token";
    let state = |model| ViewState {
        model,
        length: 256,
        layer: 3,
        head: 2,
        head_chosen: true,
        query: Some(50),
        ..Default::default()
    };
    let mut h = harness(state(ModelChoice::Rope), 1280.0);
    settle(&mut h);
    let note = h.get_by_label_contains(sink);
    let label = note.value().unwrap_or_default();
    assert!(label.starts_with(&format!("{}: 6", text::BEFORE_ROPE)), "{label}");
    let mut h = harness(state(ModelChoice::Nope), 1280.0);
    settle(&mut h);
    assert!(
        h.query_by_label_contains(sink).is_none(),
        "NoPE's layer 3, head 2 has no sink at query 50"
    );
}

/// Hovering the entropy plot reads every curve at the pointer's position:
/// each setting's mean over heads and its selected head, the token, and
/// uniform attention's value there (not the pointer's height); hovering
/// the attention row reads the weight at that key.
#[test]
fn the_plots_read_every_curve_where_the_pointer_is() {
    // A pinned head is read too.
    let mut h = harness(
        ViewState {
            pinned: vec![[2, 1]],
            head_chosen: true,
            ..small_state()
        },
        1280.0,
    );
    settle(&mut h);
    let heading = h.get_by_label(text::ENTROPY_HEADING).rect();
    // The plot is under the heading, its help and its summary line.
    h.hover_at(eframe::egui::pos2(heading.left() + 450.0, heading.bottom() + 180.0));
    h.run_steps(40);
    let tip = h.get_by_label_contains("\nuniform over ").value().unwrap_or_default();
    let lines: Vec<&str> = tip.lines().collect();
    assert_eq!(lines.len(), 3, "{tip}");
    assert!(
        lines[0].starts_with("position ") && lines[0].contains(", token "),
        "{tip}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: mean ", text::BEFORE)) && lines[1].contains(", layer 0, head 0: "),
        "{tip}"
    );
    // The values are the profile's own at that position.
    let i: usize = lines[0]["position ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let Some(Entry::Done(r)) = app.jobs.peek(&keys.entropy(&keys.ones)) else {
        panic!("no entropy profile")
    };
    let JobResult::Entropy(p) = r.as_ref() else { panic!() };
    let want = format!(
        "mean {:.2} bits, layer 0, head 0: {:.2}, layer 2, head 1: {:.2}",
        p.mean_over_heads()[i],
        p.head(0, 0)[i],
        p.head(2, 1)[i]
    );
    assert!(lines[1].ends_with(&want), "{tip} (want {want})");
    assert_eq!(
        lines[2],
        format!("uniform over {} tokens: {:.2}", i + 1, ((i + 1) as f64).log2())
    );

    // The attention row likewise: the key, its token and the weight there.
    let heading = h.get_by_label(text::ATTENTION_HEADING).rect();
    h.hover_at(eframe::egui::pos2(heading.left() + 450.0, heading.bottom() + 150.0));
    h.run_steps(40);
    let tip = h
        .get_by_label_contains(&format!("\n{}: ", text::BEFORE))
        .value()
        .unwrap_or_default();
    let lines: Vec<&str> = tip.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("key ") && lines[0].contains(", token "),
        "{tip}"
    );
    let j: usize = lines[0]["key ".len()..].split(',').next().unwrap().parse().unwrap();
    let a = attention_row(&h, 0, 0);
    assert_eq!(
        lines[1],
        format!("{}: {:.4} ({:.1}%)", text::BEFORE, a.row[j], 100.0 * a.row[j])
    );
}

/// The default query's attention row of a head, unscaled, once computed.
fn attention_row(h: &Harness<'static, NopeApp>, layer: usize, head: usize) -> nopescope::app::jobs::AttnRowResult {
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let row = JobKey::AttnRow {
        at: keys.at.clone(),
        scales: keys.ones.clone(),
        layer,
        head,
        query: None,
    };
    match app.jobs.peek(&row).and_then(Entry::result) {
        Some(JobResult::AttnRow(a)) => a.clone(),
        other => panic!("no attention row: {other:?}"),
    }
}

/// Hovering the pooled attention map names the cell under the pointer:
/// which queries and keys it pools and their share of attention (at its
/// centre, the diagonal: at 512 tokens one query over itself).
#[test]
fn the_pooled_map_names_the_cell_under_the_pointer() {
    // The entropy plot hidden, so the map is on screen (in a window tall
    // enough for the attention on the text above it).
    let state = ViewState {
        hide: vec!["entropy".into()],
        ..small_state()
    };
    let mut h = app_common::harness(state, [1280.0, 1300.0]);
    settle(&mut h);
    let map = text::pooled_alt(text::BEFORE, 512, 512);
    h.get_by_label(&map).hover();
    h.run_steps(40);
    let tip = h.get_by_label_contains("% of its attention");
    let tip = tip.value().unwrap_or_default();
    assert!(tip.starts_with("query 25") && tip.contains(", key 25"), "{tip}");
    assert!(tip.contains("\ntokens "), "one position a cell names its tokens: {tip}");
}

/// "Share" opens a panel with a link that holds the view's whole state and
/// the code to embed it in a page with the ticked panels hidden (the page
/// bar and the status bar at first); the view itself does not change.
#[test]
fn share_gives_a_link_and_embed_code_of_this_view() {
    let state = ViewState {
        length: 300,
        layer: 1,
        head: 2,
        head_chosen: true,
        ..Default::default()
    };
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    h.get_by_label(text::SHARE_OPEN).click();
    h.run_steps(2);
    let field = |h: &Harness<'static, NopeApp>, name: &str| h.get_by_label(name).value().unwrap_or_default();
    let link = field(&h, text::SHARE_LINK);
    let fragment = &link[link.find('#').expect("the link has a fragment")..];
    let linked = ViewState::from_fragment(fragment).unwrap().unwrap();
    assert_eq!(linked, h.state().state, "the link holds the view's state");
    assert_eq!((linked.length, linked.layer, linked.head), (300, 1, 2));
    // The embed code's address, unescaped from its attribute.
    let embedded = |h: &Harness<'static, NopeApp>| {
        let code = field(h, text::EMBED_CODE);
        let src = code
            .strip_prefix("<iframe src=\"")
            .and_then(|c| c.split('"').next())
            .expect("the embed code is an iframe")
            .replace("&amp;", "&");
        let fragment = &src[src.find('#').unwrap()..];
        ViewState::from_fragment(fragment).unwrap().unwrap()
    };
    let e = embedded(&h);
    assert_eq!(e.hide, ["pages", "status"]);
    assert!(field(&h, text::EMBED_CODE).contains(" allow=\"clipboard-write\""));
    // A title of its own: what it shows.
    assert!(
        field(&h, text::EMBED_CODE).contains(&format!("title=\"{}\"", text::embed_title("300 tokens"))),
        "{}",
        field(&h, text::EMBED_CODE)
    );
    assert_eq!(
        ViewState { hide: vec![], ..e },
        h.state().state,
        "the embedded view is this one"
    );
    h.get_by_label(text::EMBED_HIDE_PAGES).click();
    h.get_by_label(text::EMBED_HIDE_ENTROPY).click();
    h.run_steps(2);
    assert_eq!(embedded(&h).hide, ["status", "entropy"]);
    // The walkthrough is offered only while one is open: hidden when none
    // is, the page bar's toggle would open one the embed does not show.
    assert!(h.query_by_label(text::EMBED_HIDE_TOUR).is_none());
    h.get_by_label(text::COPY_EMBED).click();
    h.run_steps(2);
    // Beside its button: under the row it pushed the rows below down, under
    // a click aimed at them.
    let (button, copied) = (
        h.get_by_label(text::COPY_EMBED).rect(),
        h.get_by_label(text::COPIED).rect(),
    );
    assert!(
        (copied.center().y - button.center().y).abs() < 4.0 && copied.min.x > button.max.x,
        "\"copied\" at {copied:?}, its button at {button:?}"
    );
    assert!(
        h.state().state.hide.is_empty(),
        "sharing hides nothing in the app itself"
    );
    snapshot(&mut h, "app_share", 1280.0);

    // Natively the page's address is typed; links start with it, and it is
    // kept between runs with the view state.
    let address = "https://example.org/nopescope/";
    h.get_by_label(text::SHARE_ADDRESS).focus();
    h.run_steps(1);
    h.get_by_label(text::SHARE_ADDRESS).type_text(address);
    h.run_steps(2);
    assert!(field(&h, text::SHARE_LINK).starts_with(&format!("{address}#state=")));
    let mut storage = MapStorage::default();
    eframe::App::save(h.state_mut(), &mut storage);
    let mut next = harness(ViewState::default(), 1280.0);
    assert_eq!(next.state().share_address(), "");
    next.state_mut().restore(&storage);
    assert_eq!(next.state().share_address(), address);

    // The desktop app keeps the same in its own file too, written whole
    // (`app::saved`), which it reads first; a save it cannot write is said
    // in the status bar, and the next one that works clears it.
    use eframe::Storage;
    use nopescope::app::saved::StateFile;
    let dir = std::env::temp_dir().join(format!("nopescope-app-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Its folder, a file by the time of the save: not writable.
    let blocked = StateFile::open(dir.join("sub").join("state.json")).unwrap();
    std::fs::write(dir.join("sub"), b"").unwrap();
    h.state_mut().set_state_file(blocked);
    eframe::App::save(h.state_mut(), &mut MapStorage::default());
    h.run_steps(2);
    let note = match h.state().state_note.clone() {
        Some(note @ nopescope::app::StateNote::NotSaved(_)) => note.message(),
        other => panic!("the failed save is not said: {other:?}"),
    };
    assert!(note.starts_with(text::STATE_NOT_SAVED), "{note}");
    h.get_by_label(&text::error(&note));
    let path = dir.join("state.json");
    h.state_mut().set_state_file(StateFile::open(path.clone()).unwrap());
    eframe::App::save(h.state_mut(), &mut MapStorage::default());
    assert_eq!(h.state().state_note, None, "a save that worked clears the note");
    let kept = StateFile::open(path).unwrap();
    for key in [nopescope::app::STORAGE_KEY, nopescope::app::SHARE_ADDRESS_KEY] {
        assert_eq!(kept.get_string(key).as_ref(), storage.0.get(key), "{key}");
    }
    let mut next = harness(ViewState::default(), 1280.0);
    next.state_mut().restore(&kept);
    assert_eq!(next.state().share_address(), address);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What eframe keeps between runs, in memory.
#[derive(Default, Clone)]
struct MapStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MapStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn shift_click_pins_more_heads_without_moving_the_selection() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    let selected = (h.state().state.layer, h.state().state.head);
    map_cell(&h, &text::head_name(1, 2)).click_modifiers(eframe::egui::Modifiers::SHIFT);
    h.run_steps(2);
    map_cell(&h, &text::head_name(3, 0)).click_modifiers(eframe::egui::Modifiers::SHIFT);
    h.run_steps(2);
    let s = &h.state().state;
    assert_eq!((s.layer, s.head), selected, "the selection stays");
    assert!(!s.head_chosen, "pinning chooses no head");
    assert_eq!(s.pinned, vec![[1, 2], [3, 0]]);
    // The entropy plot's legend, above it, is a table: a column per curve
    // (the mean, the selected head, each pinned one), a row per setting,
    // each cell named in full; a click on a cell hides its line, a second
    // shows it.
    h.get_by_label(&text::selected_column(&text::head_name(s.layer, s.head)));
    let entry = text::head_line(text::BEFORE, &text::head_name(1, 2));
    let toggled = |h: &Harness<'static, NopeApp>| h.get_by_label(&entry).accesskit_node().toggled();
    assert_eq!(toggled(&h), Some(eframe::egui::accesskit::Toggled::True));
    h.get_by_label(&entry).click();
    h.run_steps(2);
    assert_eq!(toggled(&h), Some(eframe::egui::accesskit::Toggled::False), "hidden");
    h.get_by_label(&entry).click();
    h.run_steps(2);
    assert_eq!(toggled(&h), Some(eframe::egui::accesskit::Toggled::True), "shown again");
    map_cell(&h, &text::head_name(1, 2)).click_modifiers(eframe::egui::Modifiers::SHIFT);
    h.run_steps(2);
    assert_eq!(h.state().state.pinned, vec![[3, 0]], "a second shift-click unpins");
    // A right-click (or a long press on a touch screen) pins too.
    map_cell(&h, &text::head_name(0, 3)).click_secondary();
    h.run_steps(2);
    assert_eq!(h.state().state.pinned, vec![[3, 0], [0, 3]], "a right-click pins");
    map_cell(&h, &text::head_name(0, 3)).click_secondary();
    h.run_steps(2);
    assert_eq!(h.state().state.pinned, vec![[3, 0]], "a second right-click unpins");
    // From the keyboard: a focused cell, Shift+Enter.
    map_cell(&h, &text::head_name(2, 1)).focus();
    h.key_press_modifiers(eframe::egui::Modifiers::SHIFT, eframe::egui::Key::Enter);
    h.run_steps(2);
    assert_eq!(h.state().state.pinned, vec![[3, 0], [2, 1]], "Shift+Enter pins");
    map_cell(&h, &text::head_name(2, 1)).focus();
    h.key_press(eframe::egui::Key::Enter);
    h.run_steps(2);
    assert_eq!((h.state().state.layer, h.state().state.head), (2, 1), "Enter selects");
}

/// The layer x head map's cell of `name` (a pinned head's name is also in
/// the entropy plot's legend).
fn map_cell<'a>(h: &'a Harness<'static, NopeApp>, name: &'a str) -> egui_kittest::Node<'a> {
    h.get_all_by_label(name)
        .find(|n| n.accesskit_node().role() == eframe::egui::accesskit::Role::Button)
        .unwrap_or_else(|| panic!("no map cell {name}"))
}

/// The status bar's Cancel stops what runs and keeps it as cancelled while
/// the view still asks for it; once the state has moved on, coming back
/// computes it again (it stayed "cancelled" for good before 2026-12-01).
#[test]
fn a_cancelled_computation_runs_again_when_the_view_comes_back_to_it() {
    let mut h = harness(
        ViewState {
            length: 8192,
            ..small_state()
        },
        1280.0,
    );
    h.run_steps(3);
    let key = |h: &Harness<'static, NopeApp>| {
        let app = h.state();
        let keys = Keys::of(&app.state, app.info());
        keys.entropy(&keys.ones)
    };
    let long = key(&h);
    assert!(matches!(h.state().jobs.peek(&long), Some(Entry::Running { .. })));
    h.get_by_label(text::CANCEL).click();
    h.run_steps(3);
    assert!(
        matches!(h.state().jobs.peek(&long), Some(Entry::Stopped(None))),
        "cancelled, and not asked for again while the view is the same"
    );
    h.state_mut().state.length = 512;
    settle(&mut h);
    h.state_mut().state.length = 8192;
    h.run_steps(2);
    assert!(
        matches!(h.state().jobs.peek(&long), Some(Entry::Running { .. } | Entry::Done(_))),
        "computed again: {:?}",
        h.state()
            .jobs
            .peek(&long)
            .map(|e| format!("{e:?}").chars().take(80).collect::<String>())
    );
}

/// The status bar's Light button turns the whole app light (a projector
/// shows it better), and the state keeps it; Dark and System follow.
#[test]
fn the_theme_buttons_switch_the_app_light_and_dark() {
    use eframe::egui::Theme;
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(text::THEME_LIGHT).click();
    // The click's frame, the frame that turns light (asking for the
    // next), and the next, all light.
    h.run_steps(3);
    assert_eq!(h.ctx.theme(), Theme::Light);
    assert_eq!(h.state().state.theme, nopescope::app::state::Theme::Light);
    // The pointer leaves: it was drawn on the Light button, whose place in
    // the status bar depends on this machine's engine name.
    h.event(eframe::egui::Event::PointerGone);
    h.run_steps(1);
    snapshot(&mut h, "app_light", 1280.0);
    h.get_by_label(text::THEME_DARK).click();
    h.run_steps(2);
    assert_eq!(h.ctx.theme(), Theme::Dark);
    h.get_by_label(text::THEME_SYSTEM).click();
    h.run_steps(2);
    assert_eq!(
        h.ctx.options(|o| o.theme_preference),
        eframe::egui::ThemePreference::System
    );
}

/// The map on one colour scale for all lengths: its colour bar ends at
/// the ceiling at the longest length whatever the length (the default
/// mode's ends at this length's), a link keeps the mode, and its export
/// is named after it.
#[test]
fn the_map_on_one_scale_keeps_its_colour_bar_across_lengths() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(&text::map_ceiling(9.0));
    h.get_by_label(text::MAP_SHARED).click();
    settle(&mut h);
    let top = text::map_shared_ceiling(14.0, nopescope::app::state::MAX_LENGTH);
    h.get_by_label(&top);
    assert!(h.query_by_label(&text::map_ceiling(9.0)).is_none());
    assert!(
        h.state().state.to_fragment().contains("shared"),
        "{}",
        h.state().state.to_fragment()
    );
    // Its export is named after the mode and holds the same values as the
    // default mode's.
    let dir = std::env::temp_dir().join(format!("nopescope-one-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shared =
        app_common::export_through_dialog(&mut h, "CSV", "head_map_entropy_one_scale_512.csv", &dir.join("s.csv"));
    h.get_by_label(text::MAP_ENTROPY).click();
    settle(&mut h);
    let own = app_common::export_through_dialog(&mut h, "CSV", "head_map_entropy_512.csv", &dir.join("e.csv"));
    assert_eq!(shared.lines().count(), 1 + 16, "{shared}");
    assert_eq!(
        shared.lines().skip(1).collect::<Vec<_>>(),
        own.lines().skip(1).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).ok();
    h.get_by_label(text::MAP_SHARED).click();
    settle(&mut h);
    h.state_mut().state.length = 1024;
    settle(&mut h);
    h.get_by_label(&top);
    // The other mode's top moved with the length.
    h.get_by_label(text::MAP_ENTROPY).click();
    settle(&mut h);
    h.get_by_label(&text::map_ceiling(10.0));
}

/// A long input's curves are drawn in bins but exported whole: at 2048
/// tokens the entropy plot's CSV has a row per position for each line,
/// the attention row's a row per key (summing to 1), and the row's SVG
/// draws at most `MAX_LINE_POINTS` points.
#[test]
fn long_curves_export_every_position() {
    let mut h = harness(
        ViewState {
            length: 2048,
            ..Default::default()
        },
        1280.0,
    );
    settle(&mut h);
    let dir = std::env::temp_dir().join(format!("nopescope-long-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = app_common::export_through_dialog(&mut h, "CSV", "nopescope-entropy-2048.csv", &dir.join("e.csv"));
    let mean = text::mean_line(text::BEFORE);
    let rows = |csv: &str, series: &str| {
        csv.lines()
            .filter(|r| r.starts_with(&format!("{series},")) || r.starts_with(&format!("\"{series}\",")))
            .map(|r| r.rsplit(',').next().unwrap().parse::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    let bits = rows(&csv, &mean);
    assert_eq!(bits.len(), 2048, "{}", &csv[..300]);
    assert!(bits.iter().all(|b| b.is_finite() && *b >= 0.0));
    let (layer, head, query) = (h.state().state.layer, h.state().state.head, 2047);
    let stem = format!("nopescope-attention-l{layer}h{head}-q{query}");
    let csv = app_common::export_through_dialog(&mut h, "CSV", &format!("{stem}.csv"), &dir.join("a.csv"));
    let weights = rows(&csv, text::BEFORE);
    assert_eq!(weights.len(), 2048);
    let sum: f64 = weights.iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "the row sums to {sum}");
    let svg = app_common::export_through_dialog(&mut h, "SVG", &format!("{stem}.svg"), &dir.join("a.svg"));
    let drawn = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(drawn.split(' ').count(), 1024);
    std::fs::remove_dir_all(&dir).ok();
}

/// "Your text" shorter than the length asked: the views use all of it and
/// say how many tokens that is (the text's, and with the start token the
/// model reads first); the rise from L, which needs more than L tokens,
/// says so instead of drawing zeros; an empty text is an error.
#[test]
fn a_short_text_of_ones_own_is_used_whole_and_said() {
    let mut h = harness(
        ViewState {
            input: nopescope::app::state::InputKind::Pasted,
            pasted_text: "The quick brown fox jumps over the lazy dog, twice: the quick brown fox.".into(),
            map_mode: nopescope::app::state::MapMode::Rise,
            ..small_state()
        },
        1280.0,
    );
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let Some(Entry::Done(r)) = app.jobs.peek(&keys.entropy(&keys.ones)) else {
        panic!("no profile")
    };
    let JobResult::Entropy(p) = r.as_ref() else { panic!() };
    assert!(p.length < 256, "{}", p.length);
    h.get_by_label_contains(&format!(
        "your text has {} tokens ({} with the start token), fewer than the 512 asked for",
        p.length - 1,
        p.length
    ));
    h.get_by_label(&text::rise_needs_longer(p.length, 256));
    // The length line says how many tokens are read, not a bare count.
    h.get_by_label_contains(&format!(
        "512 tokens = 2.00 × L (the training length, 256); the views read {}, all your text holds",
        p.length
    ));
    // Under the text, its size in tokens, not "as many as the length asks for".
    let chars = h.state().state.pasted_text.chars().count();
    h.get_by_label(&text::pasted_size(chars, Some(p.length)));
    h.state_mut().state.pasted_text = String::new();
    settle(&mut h);
    h.get_all_by_label_contains("the text is empty")
        .next()
        .expect("the error shown");
}

/// A long text of one's own (a pasted book, 300 KB) scrolls in its box:
/// the controls under it stay on screen (the box grew to the text's full
/// height and pushed them off the panel), its size is said, and the views
/// read its first tokens: the same as the whole text's first tokens. It
/// shows as a preview that lays out only the rows in view (the editor laid
/// out all 300 KB every frame); Edit opens the editor, Done closes it,
/// Clear empties the text.
#[test]
fn a_long_text_of_ones_own_scrolls_in_its_box_and_is_read_from_the_start() {
    let mut book = String::new();
    let mut n = 0;
    while book.len() < 300_000 {
        book.push_str(&format!(
            "Chapter {n}. The whale was seen at dawn, and the crew rose to the deck. "
        ));
        n += 1;
    }
    let mut h = harness(
        ViewState {
            input: nopescope::app::state::InputKind::Pasted,
            pasted_text: book.clone(),
            // (The attention view shows the text too, shaded.)
            hide: vec!["attention".into()],
            ..small_state()
        },
        1280.0,
    );
    settle(&mut h);
    for slider in h.get_all_by_label(text::LENGTH) {
        let r = slider.rect();
        assert!(r.max.y < HEIGHT - 48.0, "the length slider is off screen: {r:?}");
    }
    h.get_by_label(&text::pasted_size(book.chars().count(), None));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let Some(Entry::Done(r)) = app.jobs.peek(&keys.entropy(&keys.ones)) else {
        panic!("no profile")
    };
    let JobResult::Entropy(p) = r.as_ref() else { panic!() };
    assert_eq!(p.length, 512);
    let tok = nopescope::model::tokenizer::Tokenizer::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/models/nope-sotu/tokenizer.json"
    )))
    .unwrap();
    let whole: Vec<String> = tok.encode(&book).unwrap()[..511]
        .iter()
        .map(|&t| tok.decode(&[t]).unwrap())
        .collect();
    assert_eq!(p.tokens[1..], whole[..], "the first tokens of the whole text");

    let editors = |h: &Harness<'static, NopeApp>| {
        h.query_all_by_role(eframe::egui::accesskit::Role::MultilineTextInput)
            .count()
    };
    assert_eq!(editors(&h), 0, "a long text shows in the preview");
    let first = h
        .get_all_by_label_contains("Chapter 0. The whale was seen at dawn")
        .count();
    assert_eq!(first, 1, "the preview's first row");
    assert_eq!(
        h.query_all_by_label_contains("Chapter 3000.").count(),
        0,
        "rows out of view are not laid out"
    );
    h.get_by_label(text::EDIT_TEXT).click();
    h.run_steps(2);
    assert_eq!(editors(&h), 1, "Edit opens the editor");
    h.get_by_label(text::DONE_EDITING).click();
    h.run_steps(2);
    assert_eq!(editors(&h), 0, "Done goes back to the preview");
    h.get_by_label(text::CLEAR_TEXT).click();
    h.run_steps(2);
    assert!(h.state().state.pasted_text.is_empty());
    assert_eq!(editors(&h), 1, "an empty text is edited");
}

/// A query position chosen by hand stays while the validation text only
/// changes length, and gives way to the pass-key document's retrieving
/// query when the input becomes one (it stayed at the old position).
#[test]
fn a_chosen_query_gives_way_to_the_retrieving_one_in_a_new_document() {
    let mut h = harness(
        ViewState {
            query: Some(100),
            ..small_state()
        },
        1280.0,
    );
    h.run_steps(2);
    assert_eq!(h.state().state.query, Some(100), "a link's query is kept");
    h.state_mut().state.length = 1024;
    h.run_steps(2);
    assert_eq!(h.state().state.query, Some(100), "same text, longer");
    h.state_mut().state.input = nopescope::app::state::InputKind::Passkey;
    h.run_steps(2);
    assert_eq!(h.state().state.query, None, "the retrieving query");
}

#[test]
fn doubling_the_length_recomputes_the_entropy() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(text::DOUBLE_LENGTH).click();
    h.step();
    assert_eq!(h.state().state.length, 1024);
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    match app.jobs.peek(&keys.entropy(&keys.ones)).and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => assert_eq!(p.length, 1024),
        other => panic!("no entropy at 1024: {other:?}"),
    }
    h.get_by_label_contains("1024 tokens; the curves are the mean over");
}

/// The against-length sweep, asked for with its button: Stop while it
/// runs; then one legend for its three plots naming the RoPE twin, the
/// current scales and L, and the button hides the plots again.
#[test]
fn the_against_length_sweep_runs_and_hides() {
    let mut state = small_state();
    state.scales.uniform = 1.3;
    // (The controls hidden too: the model choice would name the twin again.)
    state.hide = vec!["entropy".into(), "attention".into(), "controls".into()];
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    h.get_by_label(text::AGAINST_START).click();
    h.step();
    h.step();
    assert!(h.state().state.against_length);
    // Stopped once a first length is done: the points stay, with Go on,
    // which goes on from them.
    let sweep = |h: &Harness<'static, NopeApp>| {
        let app = h.state();
        JobKey::AgainstLength {
            model: nopescope::app::state::ModelChoice::Nope,
            scales: Keys::of(&app.state, app.info()).ones,
            text: None,
        }
    };
    let points = |h: &Harness<'static, NopeApp>| match h.state().jobs.peek(&sweep(h)).and_then(Entry::result) {
        Some(JobResult::AgainstLength(r)) => r.points.len(),
        _ => 0,
    };
    let start = Instant::now();
    while points(&h) == 0 {
        assert!(start.elapsed() < Duration::from_secs(300), "no first point");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.get_by_label(text::AGAINST_STOP).click();
    h.run_steps(3);
    assert!(h.state().jobs.is_idle() && !h.state().state.against_length);
    let kept = points(&h);
    assert!(kept >= 1, "the stop dropped the points");
    h.get_by_label(text::AGAINST_GO_ON).click();
    h.run_steps(2);
    assert!(
        h.state().state.against_length && points(&h) >= kept,
        "went on from nothing"
    );
    assert!(
        matches!(h.state().jobs.peek(&sweep(&h)), Some(Entry::Running { .. })),
        "the sweep went on and ended within a frame"
    );
    // The status bar's Cancel (`cancel_all`: its button shows only while
    // something runs) stops it as Stop does: a visit to another page does
    // not start it again (it did before 2026-12-02).
    h.state_mut().jobs.cancel_all();
    h.run_steps(3);
    assert!(!h.state().state.against_length, "Cancel left the sweep on");
    h.state_mut().state.tab = nopescope::app::state::Tab::Tune;
    h.run_steps(3);
    h.state_mut().state.tab = nopescope::app::state::Tab::Explore;
    h.run_steps(3);
    assert!(
        !matches!(h.state().jobs.peek(&sweep(&h)), Some(Entry::Running { .. })),
        "coming back started the cancelled sweep"
    );
    h.get_by_label(text::AGAINST_GO_ON).click();
    h.run_steps(2);
    h.get_by_label(text::AGAINST_STOP);
    let took = app_common::settle(&mut h, Duration::from_secs(600));
    eprintln!("against length: {took:?}");
    for name in [text::BEFORE, text::AFTER, text::MODEL_ROPE, text::TRAINING_LENGTH] {
        h.get_by_label(name);
    }
    // The entropy plot's selected head and ceiling, in the legend, with
    // the selected head's mean entropy at every length, which is not the
    // mean over heads.
    let head = text::head_name(h.state().state.layer, h.state().state.head);
    h.get_by_label(&text::head_line(text::BEFORE, &head));
    h.get_by_label(text::AGAINST_CEILING);
    match h.state().jobs.peek(&sweep(&h)).and_then(Entry::result) {
        Some(JobResult::AgainstLength(r)) => {
            assert_eq!(r.points.len(), r.lengths.len());
            let (l, hd) = (h.state().state.layer, h.state().state.head);
            for p in &r.points {
                let e = p.head(l, hd).expect("the selected head's entropy");
                assert!(e.is_finite() && e >= 0.0 && e != p.entropy_bits, "{p:?}");
                assert!(e <= nopescope::app::views::against::mean_ceiling(p.length) + 1e-6);
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(h.query_by_label(text::AGAINST_STOP).is_none(), "done: no Stop");
    // A click on a legend cell hides its line, in the plot and in the
    // plot's export: the selected head's line and the ceiling leave the
    // entropy plot's CSV, and a second click brings them back.
    let dir = std::env::temp_dir().join(format!("nopescope-against-legend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let export = |h: &mut Harness<'static, NopeApp>, file: &str| {
        app_common::export_through_dialog(h, "CSV", "against-entropy.csv", &dir.join(file))
    };
    let head_line = text::head_line(text::BEFORE, &head);
    // (A name with a comma is quoted.)
    let has = |csv: &str, series: &str| {
        csv.lines()
            .any(|l| l.starts_with(&format!("{series},")) || l.starts_with(&format!("\"{series}\",")))
    };
    let all = export(&mut h, "all.csv");
    assert!(has(&all, &head_line) && has(&all, text::AGAINST_CEILING), "{all}");
    h.get_by_label(&head_line).click();
    h.get_by_label(text::AGAINST_CEILING).click();
    h.run_steps(2);
    let fewer = export(&mut h, "fewer.csv");
    assert!(
        !has(&fewer, &head_line) && !has(&fewer, text::AGAINST_CEILING),
        "{fewer}"
    );
    assert!(has(&fewer, text::BEFORE), "the mean over heads stays: {fewer}");
    h.get_by_label(&head_line).click();
    h.get_by_label(text::AGAINST_CEILING).click();
    h.run_steps(2);
    assert_eq!(export(&mut h, "again.csv"), all);
    std::fs::remove_dir_all(&dir).ok();
    h.get_by_label(text::AGAINST_HIDE).click();
    h.step();
    h.step();
    assert!(!h.state().state.against_length);
    h.get_by_label(text::AGAINST_START);
    assert!(h.query_by_label(text::MODEL_ROPE).is_none(), "the plots are gone");
}

/// Over the user's text where it is the input in view: the lengths the
/// text holds, with a note for those left out; a text too short for any
/// length says so.
#[test]
fn the_against_length_sweep_reads_your_text() {
    use nopescope::app::jobs::TextKey;
    use nopescope::app::state::InputKind;
    // 331 tokens on the bundled tokenizer: room for windows of 128 and
    // 256 but not 512.
    let long: String = (0..10)
        .map(|i| format!("Sentence {i} tells of the river that runs past the old mill, and of the miller's cat who sleeps by its door. "))
        .collect();
    let mut state = small_state();
    state.input = InputKind::Pasted;
    state.pasted_text = long.clone();
    state.hide = vec!["entropy".into(), "attention".into(), "controls".into()];
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    h.get_by_label(text::AGAINST_START).click();
    h.run_steps(2);
    app_common::settle(&mut h, Duration::from_secs(300));
    h.get_by_label_contains("stretches of your text");
    let key = |h: &Harness<'static, NopeApp>, text: &str| {
        let app = h.state();
        JobKey::AgainstLength {
            model: nopescope::app::state::ModelChoice::Nope,
            scales: Keys::of(&app.state, app.info()).ones,
            text: Some(TextKey::of(text)),
        }
    };
    let Some(JobResult::AgainstLength(r)) = h.state().jobs.peek(&key(&h, &long)).and_then(Entry::result) else {
        panic!("no sweep over the text")
    };
    assert_eq!(r.lengths, [128, 256]);
    assert_eq!(r.points.iter().map(|p| p.length).collect::<Vec<_>>(), [128, 256]);
    let n = r.text_short.expect("the lengths left out are said");
    assert!((256..512).contains(&n), "{n} tokens");
    h.get_by_label_contains(&format!("Your text holds {n} tokens"));
    // An edit turns the sweep off and drops the old text's points (each
    // keystroke started three sweeps before); then a text too short for
    // L/2 = 128 tokens.
    h.state_mut().state.pasted_text = "A short text.".into();
    h.run_steps(2);
    assert!(!h.state().state.against_length, "an edit left the sweep on");
    assert!(
        h.state().jobs.peek(&key(&h, &long)).is_none(),
        "the old text's sweep is kept"
    );
    h.get_by_label(text::AGAINST_START).click();
    h.run_steps(2);
    app_common::settle(&mut h, Duration::from_secs(60));
    assert!(
        matches!(h.state().jobs.peek(&key(&h, "A short text.")), Some(Entry::Failed(_))),
        "{:?}",
        h.state().jobs.peek(&key(&h, "A short text."))
    );
    // Said once (every series fails alike), with no empty plots under it.
    assert_eq!(
        h.get_all_by_label_contains("and the shortest length of this sweep is 128")
            .count(),
        1
    );
    assert!(
        h.query_by_label(text::AGAINST_CEILING).is_none(),
        "an empty legend is drawn"
    );
    // An empty text (a link may turn the sweep on with no text) says so.
    h.state_mut().state.pasted_text.clear();
    h.run_steps(2);
    h.state_mut().state.against_length = true;
    h.run_steps(2);
    app_common::settle(&mut h, Duration::from_secs(60));
    assert_eq!(h.get_all_by_label_contains(text::TEXT_EMPTY).count(), 1);
    assert!(
        h.query_by_label(text::AGAINST_CEILING).is_none(),
        "an empty legend is drawn"
    );
}

/// "Your text", empty, offers samples: Moby-Dick's held-out chapters,
/// cut at a paragraph's end and long enough for 16L = 4096 tokens (no
/// "too short" note there), the paper's filler repeated and the novel's
/// words shuffled; each shows what its hover says.
#[test]
fn an_empty_text_offers_a_sample_long_enough_for_16l() {
    use nopescope::app::state::InputKind;
    let mut state = small_state();
    state.input = InputKind::Pasted;
    state.length = 4096;
    state.hide = vec!["attention".into(), "against".into()];
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    h.get_by_label(text::SAMPLE_TEXT).click();
    h.run_steps(2);
    let t = h.state().state.pasted_text.clone();
    assert!(
        t.starts_with("CHAPTER 124.") && t.ends_with(|c: char| !c.is_whitespace()),
        "{t:.40}"
    );
    assert!((20_000..=24_000).contains(&t.len()), "{} bytes", t.len());
    assert!(h.query_by_label(text::SAMPLE_TEXT).is_none(), "offered beside a text");
    let novel = profile_at(&mut h, 4096);

    // The other two samples, each long enough for 16L too. The repeated
    // filler: predicted almost perfectly at L, far worse at 16L (what its
    // hover asks the class to watch).
    h.state_mut().state.pasted_text.clear();
    h.run_steps(2);
    h.get_by_label(text::SAMPLE_FILLER).click();
    h.run_steps(2);
    assert!(h
        .state()
        .state
        .pasted_text
        .starts_with("The grass is green. The sky is blue."));
    let filler_16l = profile_at(&mut h, 4096);
    let filler_l = profile_at(&mut h, 256);
    let (at_l, at_16l) = (filler_l.loss.exp(), filler_16l.loss.exp());
    eprintln!("the filler's perplexity: {at_l:.2} at L, {at_16l:.2} at 16L");
    assert!(at_l < 3.0 && at_16l > 3.0 * at_l, "{at_l} {at_16l}");
    // The shuffled words: the novel's words, in another order; as
    // unpredictable as can be, yet its entropy at 16L is the novel's.
    h.state_mut().state.pasted_text.clear();
    h.run_steps(2);
    h.get_by_label(text::SAMPLE_SHUFFLED).click();
    h.run_steps(2);
    let shuffled_text = h.state().state.pasted_text.clone();
    let mut a: Vec<&str> = shuffled_text.split_whitespace().collect();
    let mut b: Vec<&str> = t.split_whitespace().collect();
    assert_ne!(a[..50], b[..50]);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the same words");
    let shuffled = profile_at(&mut h, 4096);
    let mean = |p: &nopescope::app::jobs::EntropyProfile| {
        let m = p.mean_over_heads();
        m.iter().sum::<f32>() / m.len() as f32
    };
    eprintln!(
        "mean entropy at 16L: novel {:.3} bits (perplexity {:.1}), shuffled {:.3} bits (perplexity {:.1})",
        mean(&novel),
        novel.loss.exp(),
        mean(&shuffled),
        shuffled.loss.exp()
    );
    assert!((mean(&novel) - mean(&shuffled)).abs() < 0.25);
    assert!(shuffled.loss > novel.loss + 0.5);
}

/// The Explore page's profile of "your text" at `length`, computed; it
/// reads `length` tokens of the text (no "too short" note).
fn profile_at(h: &mut Harness<'static, NopeApp>, length: usize) -> nopescope::app::jobs::EntropyProfile {
    h.state_mut().state.length = length;
    app_common::settle(h, Duration::from_secs(300));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    match app.jobs.peek(&keys.entropy(&keys.ones)).and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => {
            assert!(p.length == length && p.note.is_none(), "{:?}", p.note);
            p.clone()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_scales_file_shows_the_error_and_a_good_one_applies() {
    let dir = std::env::temp_dir().join(format!("nopescope-app-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad_scales.json");
    std::fs::write(&bad, "{\"head_scales\": [[1.0, -2.0]]").unwrap();
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(text::SCALES_FILE).type_text(bad.to_str().unwrap());
    h.get_by_label(text::LOAD_SCALES).click();
    h.run_steps(2);
    h.get_by_label_contains("Error:");
    assert!(h.state().state.scales.file.is_none());

    // A file of the wrong shape is refused with the shapes in the message.
    let wrong = dir.join("wrong_shape.json");
    std::fs::write(&wrong, "{\"head_scales\": [[1.5, 1.5], [1.5, 1.5]]}").unwrap();
    let field = h.get_by_label(text::SCALES_FILE);
    field.focus();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label(text::SCALES_FILE).type_text(wrong.to_str().unwrap());
    h.get_by_label(text::LOAD_SCALES).click();
    h.run_steps(2);
    h.get_by_label_contains(&text::scales_shape(2, 2, 4, 4));

    // Pasted JSON of the right shape applies, and the scaled views compute.
    let good = format!("{{\"head_scales\": {}}}", serde_json_rows(4, 4, 1.5));
    h.get_by_label(text::SCALES_FILE).focus();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label(text::SCALES_FILE).type_text(&good);
    h.get_by_label(text::LOAD_SCALES).click();
    h.step();
    assert!(h.state().state.scales.use_file);
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert!(!keys.plain);
    assert!(
        done(&h, &keys.entropy(&keys.scales)),
        "entropy with the loaded scales was not computed"
    );
    assert!(h.query_by_label_contains("Error:").is_none());
    std::fs::remove_dir_all(&dir).ok();
}

fn serde_json_rows(layers: usize, heads: usize, s: f32) -> String {
    let row = format!("[{}]", vec![s.to_string(); heads].join(", "));
    format!("[{}]", vec![row; layers].join(", "))
}

#[test]
fn narrow_window_stacks_the_panels_pass_key_document() {
    let mut state = small_state();
    state.input = nopescope::app::state::InputKind::Passkey;
    state.pinned = vec![[1, 2], [3, 0]];
    let mut h = harness(state, 560.0);
    settle(&mut h);
    // The entropy legend's table would not fit: its entries wrap in a row.
    let app = h.state();
    assert!(h
        .query_by_label(&text::selected_column(&text::head_name(
            app.state.layer,
            app.state.head
        )))
        .is_none());
    h.get_by_label(&text::head_line(text::BEFORE, &text::head_name(3, 0)));
    let keys = Keys::of(&app.state, app.info());
    match app.jobs.peek(&keys.entropy(&keys.ones)).and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => {
            assert!(p.key.is_some());
            assert_eq!(p.retrieval_query.map(|q| q < p.length), Some(true));
        }
        other => panic!("no pass-key profile: {other:?}"),
    }
    // Under the attention row, as in the pass-key lab: the share of the
    // retrieving query's attention on the key's digits.
    let row = JobKey::AttnRow {
        at: keys.at.clone(),
        scales: keys.ones.clone(),
        layer: app.state.layer,
        head: app.state.head,
        query: None,
    };
    match app.jobs.peek(&row).and_then(Entry::result) {
        Some(JobResult::AttnRow(a)) => {
            let span = a.key.as_ref().expect("a pass-key row knows its key");
            let (key, sentence) = span.shares(&a.row);
            assert!(
                key > 0.0 && key <= sentence && sentence <= 1.0 + 1e-5,
                "{key} {sentence}"
            );
            let said = format!("{:.1}% of its attention on the key's tokens", 100.0 * key);
            assert!(
                h.query_all_by_label_contains(&said).next().is_some(),
                "the Explore row says {said:?}"
            );
        }
        other => panic!("no attention row: {other:?}"),
    }
    // The status bar says less: no "Engine" caption, the engine's name
    // without its details (threads, SIMD), which its hover keeps.
    assert!(h.query_by_label(text::ENGINE).is_none(), "no caption when narrow");
    assert!(
        h.query_all_by_label_contains("threads").next().is_none(),
        "details in the hover"
    );
    snapshot(&mut h, "app_narrow_passkey", 560.0);
    let mut wide = harness(small_state(), 1280.0);
    settle(&mut wide);
    wide.get_by_label(text::ENGINE);
    assert!(
        wide.query_all_by_label_contains("threads").next().is_some(),
        "the whole name when wide"
    );
    // The walkthrough's hint: whole when wide; when narrow, never wrapped
    // under the tabs (here, with no room for the short form either, left out).
    wide.get_by_label(text::TOUR_HINT);
    assert!(h.query_all_by_label_contains("New here?").next().is_none());
    let mut tablet = harness(small_state(), 760.0);
    tablet.run_steps(2);
    tablet.get_by_label(text::TOUR_HINT_SHORT);
}

/// Steps frames until the model the user asked for has opened or failed
/// (a minute at most).
fn wait_opened(h: &mut Harness<'static, NopeApp>) {
    let start = Instant::now();
    h.run_steps(2);
    while h.state().jobs.opened.opening {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.run_steps(2);
}

/// Opening your own model: a broken folder shows the loader's error and
/// keeps the bundled model; a Hugging Face folder opens, becomes the model
/// in view, and its entropy is computed.
#[test]
fn opening_a_model_folder_shows_errors_and_computes_on_it() {
    let dir = std::env::temp_dir().join(format!("nopescope-open-model-{}", std::process::id()));
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"hidden_size\": ").unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/rope-sotu");
    std::fs::copy(bundled.join("tokenizer.json"), broken.join("tokenizer.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not safetensors").unwrap();
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(text::OPEN_MODEL).click();
    h.run_steps(2);
    let open = |h: &mut Harness<'static, NopeApp>, path: &str| {
        h.get_by_label(text::MODEL_FOLDER).focus();
        h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
        h.get_by_label(text::MODEL_FOLDER).type_text(path);
        h.run_steps(1);
        h.get_by_label(text::OPEN_FOLDER).click();
        wait_opened(h);
    };
    // A model bigger than this machine (the paper's shapes deepened to 400
    // layers and a 500k vocabulary: 19G parameters, 37 GB of bf16 as a
    // sparse file, about 185 GB to open): refused with needed and available
    // before its weights are read.
    let huge = dir.join("huge");
    std::fs::create_dir_all(&huge).unwrap();
    let cfg = nopescope::model::ModelConfig {
        num_layers: 400,
        vocab_size: 500_000,
        ..nopescope::model::ModelConfig::tinyllama_nope()
    };
    let json = serde_json::to_string(&cfg.to_hf()).unwrap();
    std::fs::write(huge.join("config.json"), json).unwrap();
    let n = nopescope::model::ParamLayout::new(&cfg).total as u64;
    std::fs::File::create(huge.join("model.safetensors"))
        .unwrap()
        .set_len(2 * n)
        .unwrap();
    open(&mut h, huge.to_str().unwrap());
    let error = h.state().jobs.opened.error.clone().expect("the huge model refused");
    assert!(
        error.contains("needs about") && error.contains("available") && error.contains("not loaded"),
        "{error}"
    );
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Nope);

    open(&mut h, broken.to_str().unwrap());
    let error = h
        .state()
        .jobs
        .opened
        .error
        .clone()
        .expect("an error for the broken folder");
    assert!(error.contains("config.json"), "{error}");
    h.get_by_label_contains("Error:");
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Nope);

    // A real folder (the bundled RoPE twin, opened as a user's model).
    open(&mut h, bundled.to_str().unwrap());
    assert!(
        h.state().jobs.opened.error.is_none(),
        "{:?}",
        h.state().jobs.opened.error
    );
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Custom);
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert_eq!(keys.at.model, nopescope::app::state::ModelChoice::Custom);
    match app.jobs.peek(&keys.entropy(&keys.ones)).and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => assert_eq!((p.length, p.layers), (512, 4)),
        other => panic!("no entropy on the opened model: {other:?}"),
    }
    h.get_by_label_contains("Opened ");

    // Its weights' fingerprint comes with it: scales of other weights are
    // noted on it, scales of these weights (from another folder) are not.
    let ours = nopescope::model::files::load_model_dir(&bundled)
        .unwrap()
        .params
        .fingerprint();
    let opened = h.state().jobs.opened.model.clone().expect("a model opened");
    assert_eq!(opened.fingerprint, ours);
    let info = h.state().info();
    for (print, noted) in [("0123456789abcdef", true), (ours.as_str(), false)] {
        let json = serde_json::json!({
            "head_scales": vec![vec![1.1, 1.2, 1.3, 1.4]; 4],
            "provenance": {"model": "/elsewhere/a-copy", "model_fingerprint": print},
        });
        let file = nopescope::app::views::scales::scales_from_json(&json.to_string(), "f.json", info).unwrap();
        h.state_mut().state.scales.file = Some(file);
        h.state_mut().state.scales.use_file = true;
        h.run_steps(2);
        let said = h.query_by_label_contains("searched on other weights").is_some();
        assert_eq!(said, noted, "fingerprint {print}");
        assert!(h
            .query_by_label_contains("These scales were searched on /elsewhere")
            .is_none());
    }
    h.state_mut().state.scales.file = None;
    h.state_mut().state.scales.use_file = false;

    // Quit and start again: the saved state names the opened model, which
    // is not kept; the new app opens the bundled NoPE model (it panicked
    // on that state until 2026-12-01), as a link with it does.
    let mut storage = MapStorage::default();
    eframe::App::save(h.state_mut(), &mut storage);
    let saved = eframe::Storage::get_string(&storage, nopescope::app::STORAGE_KEY).unwrap();
    let saved = ViewState::from_json(&saved).unwrap();
    assert_eq!(saved.model, nopescope::app::state::ModelChoice::Custom);
    let mut next = harness(saved.clone(), 1280.0);
    settle(&mut next);
    assert_eq!(next.state().state.model, nopescope::app::state::ModelChoice::Nope);
    assert!(next.state().jobs.opened.model.is_none());
    let link = harness(ViewState::from_fragment(&saved.to_fragment()).unwrap().unwrap(), 1280.0);
    assert_eq!(link.state().state.model, nopescope::app::state::ModelChoice::Nope);
    std::fs::remove_dir_all(&dir).ok();
}

/// An opened model's training length can be far past the app's longest
/// length (16384): the pass-key grid and the against-length sweep leave
/// the longer lengths out and say so, and the walkthrough, which shows the
/// bundled models, keeps their lengths.
#[test]
fn an_opened_models_long_training_length_stays_within_the_app() {
    use nopescope::app::state::MAX_LENGTH;
    let dir = std::env::temp_dir().join(format!("nopescope-long-l-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/rope-sotu");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(bundled.join(f), dir.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundled.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = (1u64 << 20).into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut h = harness(small_state(), 1280.0);
    h.run_steps(2);
    h.get_by_label(text::OPEN_MODEL).click();
    h.run_steps(2);
    h.get_by_label(text::MODEL_FOLDER).focus();
    h.get_by_label(text::MODEL_FOLDER).type_text(dir.to_str().unwrap());
    h.run_steps(1);
    h.get_by_label(text::OPEN_FOLDER).click();
    wait_opened(&mut h);
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Custom);
    assert_eq!(h.state().info().training_length, 1 << 20);
    h.get_by_label(text::AGAINST_START).click();
    h.run_steps(2);
    h.get_by_label(&text::lengths_left_out(MAX_LENGTH));
    h.get_all_by_label(text::TAB_PASSKEY).next().unwrap().click();
    h.run_steps(2);
    h.get_by_label(&text::lengths_left_out(MAX_LENGTH));
    // The walkthrough shows the bundled models at their own lengths (L =
    // 256, at most 4L), not at multiples of the opened model's L; each step
    // checked on the frame that applies it.
    h.get_by_label(text::TOUR_OPEN).click();
    for step in 0..nopescope::app::tour::STEPS.len() {
        h.step();
        let s = &h.state().state;
        assert!(
            s.length <= 4 * 256 && s.passkey_lab.length <= 4 * 256 && s.tune.length <= 4 * 256,
            "step {step}: lengths {}, {} and {}",
            s.length,
            s.passkey_lab.length,
            s.tune.length
        );
        if let Some(next) = h.query_by_label(text::TOUR_NEXT) {
            next.click();
        }
    }
    // (The last click on Next may have landed on Finish, in its place.)
    h.run_steps(2);
    if h.state().state.tour.is_some() {
        h.get_by_label(text::TOUR_FINISH).click();
        h.run_steps(2);
    }
    assert_eq!(h.state().state.tour, None);
    std::fs::remove_dir_all(&dir).ok();
}

/// An opened model of another shape than the bundled ones (2 layers x 2
/// heads, random weights): the pass-key lab's accuracy maps run NoPE on
/// it, with its shape's scales, and the RoPE twin with its own (each map
/// failed on the other's shape before 2026-12-01).
#[test]
fn the_accuracy_maps_run_on_an_opened_model_of_another_shape() {
    use nopescope::app::state::{ModelChoice, Tab};
    let dir = std::env::temp_dir().join(format!("nopescope-small-model-{}", std::process::id()));
    save_random_model(&dir, 2, 2, 7);
    let mut state = small_state();
    state.tab = Tab::Passkey;
    state.passkey_lab.grid_trials = 1;
    state.passkey_lab.grid_depths = 1;
    state.passkey_lab.grid_factor = 1;
    let mut h = harness(state, 1280.0);
    h.run_steps(2);
    h.get_all_by_label(text::TAB_PASSKEY).next().unwrap();
    let app = h.state_mut();
    app.jobs
        .open_model(nopescope::app::compute::ModelSource::Folder(dir.clone()));
    wait_opened(&mut h);
    assert_eq!(
        h.state().state.model,
        ModelChoice::Custom,
        "{:?}",
        h.state().jobs.opened.error
    );
    assert_eq!((h.state().info().layers, h.state().info().heads), (2, 2));
    h.get_by_label(text::GRID_START).click();
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let series = nopescope::app::views::passkey_lab::grid_series(&app.state, &keys);
    assert_eq!(series.len(), 2, "NoPE and the RoPE twin");
    for (name, _, key) in &series {
        match app.jobs.peek(key) {
            Some(Entry::Done(_)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The folder browser: Browse opens it on the folder typed (the bundled
/// models' folder), which holds no model (Open this folder disabled); a
/// click steps into a model's folder, the dialog says which of a model's
/// files it holds, and Open this folder opens that model. Escape closes it.
#[test]
fn the_folder_browser_steps_into_a_model_folder_and_opens_it() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.get_by_label(text::OPEN_MODEL).click();
    h.run_steps(2);
    h.get_by_label(text::MODEL_FOLDER).focus();
    h.get_by_label(text::MODEL_FOLDER).type_text(models.to_str().unwrap());
    h.run_steps(1);
    h.get_by_label(text::BROWSE).click();
    h.run_steps(2);
    h.get_by_label("nope-sotu/");
    assert!(
        h.get_by_label(text::OPEN_THIS_FOLDER).accesskit_node().is_disabled(),
        "no config.json here"
    );
    h.get_by_label_contains("no config.json");
    h.get_by_label("rope-sotu/").click();
    h.run_steps(2);
    h.get_by_label_contains("has config.json, has model.safetensors, has tokenizer.json");
    assert!(!h.get_by_label(text::OPEN_THIS_FOLDER).accesskit_node().is_disabled());
    h.get_by_label(text::OPEN_THIS_FOLDER).click();
    wait_opened(&mut h);
    assert!(h.query_by_label(text::OPEN_THIS_FOLDER).is_none(), "the dialog closed");
    assert!(
        h.state().jobs.opened.error.is_none(),
        "{:?}",
        h.state().jobs.opened.error
    );
    let name = h.state().jobs.opened.model.clone().expect("a model opened").name;
    assert!(name.contains("rope-sotu"), "{name}");
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Custom);
    // Browse again, then Escape: closed, nothing else changed.
    h.get_by_label(text::BROWSE).click();
    h.run_steps(2);
    h.get_by_label(text::OPEN_THIS_FOLDER);
    h.key_press(eframe::egui::Key::Escape);
    h.run_steps(2);
    assert!(
        h.query_by_label(text::OPEN_THIS_FOLDER).is_none(),
        "Escape closed the dialog"
    );
    assert_eq!(h.state().state.model, nopescope::app::state::ModelChoice::Custom);
}

/// The keyboard alone: Tab walks every control of the Explore page (the
/// pages, the walkthrough, the input and its length, the scales, every
/// head of the map, the plots' export buttons, the engine) and comes back
/// round; Enter on a focused head map cell selects that head, and Enter on
/// the walkthrough button opens it.
#[test]
fn the_keyboard_alone_reaches_every_control() {
    use eframe::egui::Key;
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    let seen = tab_stops(&mut h, "the Explore page");
    assert_reaches(
        &seen,
        "the Explore page",
        &[
            text::TAB_EXPLORE,
            text::TOUR_OPEN,
            text::START_OVER,
            text::HALVE_LENGTH,
            text::DOUBLE_LENGTH,
            text::MAP_SHARED,
            "layer 0, head 0",
            "layer 3, head 3",
            "CSV",
            "PNG",
        ],
    );
    // Enter on a focused cell selects it.
    tab_to(&mut h, "layer 2, head 1");
    h.key_press(Key::Enter);
    h.run_steps(2);
    assert_eq!((h.state().state.layer, h.state().state.head), (2, 1));
    // Enter on the walkthrough button opens it.
    tab_to(&mut h, text::TOUR_OPEN);
    h.key_press(Key::Enter);
    h.run_steps(2);
    assert!(h.state().state.tour.is_some(), "the walkthrough opened");
}

/// The other two pages with the keyboard alone: Tab reaches the tuning
/// panel's search settings, start button, presets and loading, and the
/// pass-key lab's document controls; Enter acts on them.
#[test]
fn the_keyboard_alone_works_the_tuning_panel_and_the_pass_key_lab() {
    use eframe::egui::Key;
    use nopescope::app::search_job::SearchKind;
    use nopescope::app::state::Tab;
    let mut state = small_state();
    state.tab = Tab::Tune;
    state.tune.kind = SearchKind::Heads;
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    let seen = tab_stops(&mut h, "the tuning panel");
    assert_reaches(
        &seen,
        "the tuning panel",
        &[
            text::TAB_TUNE,
            text::KIND_HEADS,
            text::KIND_UNIFORM,
            text::OBJECTIVE_PASSKEY,
            text::OBJECTIVE_TEXT,
            text::START_SEARCH,
            text::USE_PRESET,
            text::PRESET_AS_B,
            text::LOAD_AND_APPLY,
        ],
    );
    tab_to(&mut h, text::KIND_UNIFORM);
    h.key_press(Key::Enter);
    h.run_steps(2);
    assert_eq!(
        h.state().state.tune.kind,
        SearchKind::Uniform,
        "Enter chose the uniform search"
    );

    let mut state = small_state();
    state.tab = Tab::Passkey;
    // A small map, computed (no map is drawn before it is asked for).
    let lab = &mut state.passkey_lab;
    (lab.grid, lab.grid_factor, lab.grid_depths, lab.grid_trials) = (true, 2, 2, 1);
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    let seen = tab_stops(&mut h, "the pass-key lab");
    assert_reaches(
        &seen,
        "the pass-key lab",
        &[text::TAB_PASSKEY, text::PASSKEY_RANDOM_KEY],
    );
    // Each accuracy map is one stop (its cursor cell); the arrows walk it.
    let cells: Vec<&String> = seen
        .iter()
        .filter(|s| s.contains(", length ") && s.contains(", depth "))
        .collect();
    assert!(!cells.is_empty(), "Tab never reaches an accuracy map: {seen:?}");
    let maps: std::collections::HashSet<&str> = cells.iter().map(|c| c.split(", length ").next().unwrap()).collect();
    assert_eq!(cells.len(), maps.len(), "more than one Tab stop in a map: {cells:?}");
    let first = cells[0].clone();
    tab_to(&mut h, &first);
    let mut walked = vec![first.clone()];
    for key in [Key::ArrowRight, Key::ArrowDown, Key::ArrowLeft, Key::ArrowUp] {
        h.key_press(key);
        h.run_steps(2);
        walked.push(focused(&h).unwrap_or_default());
    }
    eprintln!("the arrows walked {walked:?}");
    let cell = |s: &str| s.split(": ").next().unwrap_or_default().to_string();
    assert!(
        walked[1].contains(", length ") && walked[2].contains(", length "),
        "the arrows left the map: {walked:?}"
    );
    assert_ne!(
        cell(&walked[1]),
        cell(&walked[0]),
        "ArrowRight did not move: {walked:?}"
    );
    assert_ne!(cell(&walked[2]), cell(&walked[1]), "ArrowDown did not move: {walked:?}");
    assert_eq!(
        cell(&walked[4]),
        cell(&walked[0]),
        "right, down, left, up did not come back: {walked:?}"
    );

    let key = h.state().state.passkey_lab.key;
    tab_to(&mut h, text::PASSKEY_RANDOM_KEY);
    h.key_press(Key::Enter);
    h.run_steps(2);
    assert_ne!(h.state().state.passkey_lab.key, key, "Enter drew a new key");
}

/// The focused node's label (None: nothing focused).
fn focused(h: &Harness<'static, NopeApp>) -> Option<String> {
    let label = std::cell::RefCell::new(None);
    h.query(egui_kittest::kittest::by().predicate(|n| {
        let f = n.is_focused();
        if f {
            *label.borrow_mut() = Some(n.label().unwrap_or_default());
        }
        f
    }));
    label.into_inner()
}

/// The labels Tab visits on `page`, in order, once round (printed).
fn tab_stops(h: &mut Harness<'static, NopeApp>, page: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..400 {
        h.key_press(eframe::egui::Key::Tab);
        h.run_steps(1);
        let Some(label) = focused(h) else { continue };
        if seen.first() == Some(&label) && seen.len() > 10 {
            break;
        }
        seen.push(label);
    }
    eprintln!("{page}, {} stops: {seen:?}", seen.len());
    seen
}

/// Each of `wants` is among the Tab stops `seen` on `page`.
fn assert_reaches(seen: &[String], page: &str, wants: &[&str]) {
    for want in wants {
        assert!(
            seen.iter().any(|s| s == want),
            "Tab never reaches {want:?} on {page}: {seen:?}"
        );
    }
}

/// Presses Tab until the control named `label` has the focus.
fn tab_to(h: &mut Harness<'static, NopeApp>, label: &str) {
    for _ in 0..400 {
        if focused(h).as_deref() == Some(label) {
            return;
        }
        h.key_press(eframe::egui::Key::Tab);
        h.run_steps(1);
    }
    panic!("Tab never reached {label:?}");
}

/// The attention row's weight axis switches to log10 and back; the row's
/// hover still reads the weights themselves.
#[test]
fn the_attention_row_takes_a_log_axis() {
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    let checked = |h: &Harness<'static, NopeApp>| h.get_by_label(text::LOG_WEIGHTS).accesskit_node().toggled();
    assert_eq!(
        checked(&h),
        Some(eframe::egui::accesskit::Toggled::False),
        "linear at first"
    );
    h.get_by_label(text::LOG_WEIGHTS).click();
    h.run_steps(3);
    assert_eq!(checked(&h), Some(eframe::egui::accesskit::Toggled::True));
    h.get_by_label(text::LOG_WEIGHTS).click();
    h.run_steps(3);
    assert_eq!(checked(&h), Some(eframe::egui::accesskit::Toggled::False), "and back");
}

/// Play doubles the length once every view of it is computed and shown a
/// moment, up to 16L, then stops (the button says Pause meanwhile); a
/// length button takes over from it. Frames come only when the app asks
/// for them, as in a browser: Play stood still at 2L until the pointer
/// moved (the new length's jobs were asked for in a frame nothing brought).
#[test]
fn play_doubles_the_length_up_to_16l_then_stops() {
    let l = 256; // the bundled model's training length
    let mut h = harness(
        ViewState {
            length: 4 * l,
            ..Default::default()
        },
        1280.0,
    );
    settle(&mut h);
    let frames = app_common::AskedFrames::install(&h);
    h.get_by_label(text::PLAY_LENGTHS).click();
    h.run_steps(2);
    h.get_by_label(text::PAUSE_LENGTHS);
    // The map's colours on one scale, so that it brightens as it plays.
    assert_eq!(h.state().state.map_mode, nopescope::app::state::MapMode::Shared);
    let mut seen = vec![4 * l];
    let start = Instant::now();
    while h.query_by_label(text::PLAY_LENGTHS).is_none() {
        assert!(start.elapsed() < Duration::from_secs(180), "still playing: {seen:?}");
        assert!(
            frames.asked() || !h.state().jobs.is_idle(),
            "playing at {} with no job running and no frame asked for",
            h.state().state.length
        );
        let shown = {
            let app = h.state();
            let keys = Keys::of(&app.state, app.info());
            keys.entropy(&keys.ones)
        };
        if !frames.next(&mut h) {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let now = h.state().state.length;
        if seen.last() != Some(&now) {
            assert!(done(&h, &shown), "{now} came before {seen:?}'s last was computed");
            seen.push(now);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(seen, [4 * l, 8 * l, 16 * l]);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert!(done(&h, &keys.entropy(&keys.ones)), "16L computed before it stopped");

    // Play again from 16L starts over at L/2; Double takes over.
    h.get_by_label(text::PLAY_LENGTHS).click();
    h.run_steps(2);
    assert_eq!(h.state().state.length, l / 2);
    h.get_by_label(text::DOUBLE_LENGTH).click();
    h.run_steps(2);
    assert_eq!(h.state().state.length, l);
    h.get_by_label(text::PLAY_LENGTHS);

    // A length set elsewhere (the slider, the walkthrough) stops it too.
    h.get_by_label(text::PLAY_LENGTHS).click();
    h.run_steps(2);
    h.get_by_label(text::PAUSE_LENGTHS);
    h.state_mut().state.length = 3 * l;
    h.run_steps(2);
    h.get_by_label(text::PLAY_LENGTHS);
    settle(&mut h);
    h.run_steps(200);
    assert_eq!(h.state().state.length, 3 * l, "Play went on over a chosen length");
}

/// For whoever presents: the arrow keys halve and double the length and
/// the space bar plays and pauses, with no control focused; Page Down and
/// Page Up (a presentation clicker) step the walkthrough; a text field
/// that takes the keys keeps them.
#[test]
fn keys_change_the_length_play_and_step_the_walkthrough() {
    use eframe::egui::Key;
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    let length = |h: &Harness<'static, NopeApp>| h.state().state.length;
    h.key_press(Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(length(&h), 1024, "the right arrow doubles");
    h.key_press(Key::ArrowLeft);
    h.key_press(Key::ArrowLeft);
    h.run_steps(2);
    assert_eq!(length(&h), 256, "the left arrow halves");
    h.key_press(Key::Space);
    h.run_steps(2);
    h.get_by_label(text::PAUSE_LENGTHS);
    h.key_press(Key::Space);
    h.run_steps(2);
    h.get_by_label(text::PLAY_LENGTHS);
    // A text field takes its keys: the arrows move its cursor.
    h.get_by_label(text::SCALES_FILE).focus();
    h.run_steps(2);
    h.key_press(Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(length(&h), 256, "the text field kept the arrow");
    h.key_press(Key::Escape);
    h.run_steps(2);
    h.get_by_label(text::TOUR_OPEN).click();
    h.run_steps(2);
    assert_eq!(h.state().state.tour, Some(0));
    h.key_press(Key::PageDown);
    h.run_steps(2);
    h.key_press(Key::PageDown);
    h.run_steps(2);
    assert_eq!(h.state().state.tour, Some(2), "Page Down steps on");
    h.key_press(Key::PageUp);
    h.run_steps(2);
    assert_eq!(h.state().state.tour, Some(1), "Page Up steps back");
}

/// Start over brings back the page as it first opens, keeping the engine,
/// the hidden panels and the user's text; its Undo brings back what was
/// on screen, and goes once something changes.
#[test]
fn start_over_resets_the_view_and_undo_brings_it_back() {
    use nopescope::app::state::{InputKind, Tab};
    let mut state = ViewState {
        length: 256,
        tab: Tab::Passkey,
        input: InputKind::Pasted,
        pasted_text: "a text of one's own, kept".into(),
        hide: vec!["attention".into()],
        layer: 2,
        head: 3,
        head_chosen: true,
        ..small_state()
    };
    state.scales.uniform = 1.5;
    let mut h = harness(state.clone(), 1280.0);
    h.run_steps(2);
    // The shipped scales in use (as the walkthrough and the lab put them).
    let info = h.state().info();
    let shipped = nopescope::app::search_job::shipped(info).unwrap();
    shipped.apply_to(&mut h.state_mut().state.scales, info.heads);
    h.run_steps(2);
    let before = h.state().state.clone();
    h.get_by_label(text::START_OVER).click();
    h.run_steps(3);
    let now = h.state().state.clone();
    assert_eq!(
        (now.length, now.tab, now.input),
        (1024, Tab::Explore, InputKind::Validation)
    );
    assert_eq!(now.scales.uniform, 1.0);
    assert!(!now.head_chosen, "the head is the page's to select again");
    assert_eq!(now.pasted_text, state.pasted_text, "the user's text went");
    assert_eq!(now.hide, state.hide, "the embed's hidden panels came back");
    assert_eq!(now.scales.file, None, "the shipped scales stayed loaded");
    // The page selects its head by itself: Undo is still offered.
    h.get_by_label(text::UNDO_START_OVER).click();
    h.run_steps(2);
    assert_eq!(h.state().state, before, "Undo did not bring the page back");
    h.get_by_label(text::START_OVER).click();
    h.run_steps(2);
    h.state_mut().state.length = 2048;
    h.run_steps(2);
    assert!(
        h.query_by_label(text::UNDO_START_OVER).is_none(),
        "Undo outlived a change"
    );
    h.get_by_label(text::START_OVER);
}

/// Files dropped on the window: a text becomes "your text" on the Explore
/// page, a head-scales file the scales in use, each said in the status
/// bar; a file that is not text says so and changes nothing (until
/// 2026-12-02 every drop opened the file's folder as a model).
#[test]
fn a_dropped_text_or_scales_file_is_used() {
    use nopescope::app::state::{InputKind, Tab};
    #[derive(Debug)]
    struct Dropped(std::path::PathBuf);
    impl eframe::egui::DroppedFile for Dropped {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }
    let dir = std::env::temp_dir().join(format!("nopescope-drop-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notes = dir.join("notes.txt");
    let words = "We hold these truths to be self-evident, that all men are created equal. ".repeat(20);
    std::fs::write(&notes, &words).unwrap();
    let row = "[1.25, 1.25, 1.25, 1.25]";
    let scales = dir.join("my_scales.json");
    std::fs::write(&scales, format!("{{\"head_scales\": [{row}, {row}, {row}, {row}]}}")).unwrap();
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, [0u8, 0xff, 0xfe, 0x80]).unwrap();
    let mut h = harness(
        ViewState {
            tab: Tab::Passkey,
            ..small_state()
        },
        1280.0,
    );
    h.run_steps(2);
    let drop = |h: &mut Harness<'static, NopeApp>, path: &std::path::Path| {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(path.to_path_buf())));
        h.run_steps(3);
    };
    drop(&mut h, &notes);
    let state = h.state().state.clone();
    assert_eq!((state.input, state.tab), (InputKind::Pasted, Tab::Explore));
    assert_eq!(state.pasted_text, words);
    h.get_by_label(&text::dropped_text(notes.to_str().unwrap(), words.chars().count()));
    drop(&mut h, &scales);
    let s = &h.state().state.scales;
    assert!(s.use_file && s.file.as_ref().is_some_and(|f| f.values == vec![1.25; 16]));
    h.get_by_label(&text::dropped_scales(scales.to_str().unwrap()));
    let before = h.state().state.clone();
    drop(&mut h, &binary);
    assert_eq!(h.state().state, before, "a file that is not text changed the view");
    h.get_by_label_contains(&text::dropped_not_text(binary.to_str().unwrap()));
    std::fs::remove_dir_all(&dir).ok();
}

/// The attention on the text: on a pass-key document at L, the head that
/// retrieves the key names one of the key's own tokens first, at the
/// position the attention row puts most of its weight on.
#[test]
fn the_text_shaded_by_attention_names_the_key() {
    use nopescope::app::state::InputKind;
    let mut h = harness(
        ViewState {
            input: InputKind::Passkey,
            length: 256,
            layer: 3,
            head: 3,
            head_chosen: true,
            hide: vec!["entropy".into()],
            ..small_state()
        },
        1280.0,
    );
    settle(&mut h);
    let a = attention_row(&h, 3, 3);
    let top = (0..=a.query).max_by(|&x, &y| a.row[x].total_cmp(&a.row[y])).unwrap();
    assert!(
        a.key.as_ref().is_some_and(|k| k.digits.contains(&top)),
        "the head misses the key"
    );
    let line = h.get_by_label_contains("Most attended: ").value().unwrap_or_default();
    assert!(
        line.split(", ")
            .next()
            .is_some_and(|first| first.ends_with(&format!("({top})"))),
        "{line} does not start with position {top}"
    );
    h.get_by_label(text::ON_TEXT_HEADING);
}

/// An embedding shows one part of the other two pages too: the pass-key
/// lab's accuracy map alone, the tuning page's search alone; the Share
/// panel offers the page's own parts.
#[test]
fn the_other_pages_hide_their_parts_for_embedding() {
    use nopescope::app::state::Tab;
    let mut h = harness(
        ViewState {
            tab: Tab::Passkey,
            hide: vec!["document".into(), "pages".into()],
            ..small_state()
        },
        1280.0,
    );
    h.run_steps(3);
    assert!(
        h.query_by_label(text::PASSKEY_DOC_HEADING).is_none(),
        "the document shows"
    );
    h.get_by_label(text::GRID_HEADING);
    let mut h = harness(
        ViewState {
            tab: Tab::Tune,
            hide: vec!["presets".into(), "compare".into()],
            ..small_state()
        },
        1280.0,
    );
    h.run_steps(3);
    // ("Search" is also the search form's first row.)
    assert!(h.query_all_by_label(text::SEARCH_HEADING).next().is_some(), "no search");
    assert!(h.query_by_label(text::PRESETS_HEADING).is_none(), "the presets show");
    assert!(
        h.query_by_label(text::COMPARE_HEADING).is_none(),
        "the comparison shows"
    );
    h.get_by_label(text::SHARE_OPEN).click();
    h.run_steps(2);
    h.get_by_label(text::EMBED_HIDE_SEARCH);
    assert!(
        h.query_by_label(text::EMBED_HIDE_ENTROPY).is_none(),
        "the Explore page's parts offered"
    );
}

/// Writes to `dir` a model of the bundled NoPE's sizes but `layers` x
/// `heads` (as many KV heads, the same width), random weights from
/// `seed`, with the bundled tokenizer.
fn save_random_model(dir: &std::path::Path, layers: usize, heads: usize, seed: u64) {
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/nope-sotu");
    let base = nopescope::model::files::load_config(&bundled).unwrap();
    let config = nopescope::model::ModelConfig {
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: base.hidden_size / heads,
        ..base
    };
    let params = nopescope::model::params::Params::random(&config, 0.02, seed);
    nopescope::model::files::save_model(dir, &config, &params).unwrap();
    std::fs::copy(bundled.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

/// Beside an opened model with more layers than the RoPE twin, the
/// against-length legend offers the selected head's line only for the
/// models that have that head.
#[test]
fn the_against_length_legend_leaves_out_a_head_the_twin_lacks() {
    let dir = std::env::temp_dir().join(format!("nopescope-deep-model-{}", std::process::id()));
    // 5 layers of 2 heads: the twin has 4 layers.
    save_random_model(&dir, 5, 2, 11);
    let mut state = small_state();
    state.hide = vec!["entropy".into(), "attention".into(), "controls".into()];
    let mut h = harness(state, 1280.0);
    h.run_steps(2);
    h.state_mut()
        .jobs
        .open_model(nopescope::app::compute::ModelSource::Folder(dir.clone()));
    wait_opened(&mut h);
    assert_eq!((h.state().info().layers, h.state().info().heads), (5, 2));
    h.state_mut().state.choose_head(4, 1);
    h.state_mut().state.against_length = true;
    h.run_steps(2);
    app_common::settle(&mut h, Duration::from_secs(300));
    let head = text::head_name(4, 1);
    h.get_by_label(text::MODEL_ROPE);
    assert_eq!(
        h.get_all_by_label_contains(&format!(": {head}")).count(),
        1,
        "one head line: the opened model's, not the twin's"
    );
    assert!(h.query_by_label(&text::head_line(text::MODEL_ROPE, &head)).is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// The state kept from a run opened by an embed's link (panels hidden)
/// opens the next plain run with every panel: only a link hides panels.
/// (The plain page had lost its page bar, so Share and Start over.)
#[test]
fn a_kept_state_opens_without_an_embeds_hidden_panels() {
    use eframe::Storage;
    use nopescope::app::saved::StateFile;
    let dir = std::env::temp_dir().join(format!("nopescope-kept-hide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let embedded = ViewState::from_fragment("#state=%7B%22length%22%3A300%7D&hide=pages,status,controls")
        .unwrap()
        .unwrap();
    assert_eq!(embedded.hide.len(), 3);
    let mut file = StateFile::open(dir.join("state.json")).unwrap();
    file.set_string(nopescope::app::STORAGE_KEY, embedded.to_json());
    let mut h = egui_kittest::Harness::builder()
        .with_size([1280.0, 800.0])
        .wgpu()
        .build_eframe(move |cc| NopeApp::from_creation_with_file(cc, None, Some(file), None));
    h.run_steps(2);
    let s = &h.state().state;
    assert_eq!(s.length, 300, "the kept state was not read");
    assert!(s.hide.is_empty(), "the embed's hidden panels came back: {:?}", s.hide);
    h.get_by_label(text::SHARE_OPEN);
    std::fs::remove_dir_all(&dir).ok();
}

/// A link that cannot be read in full opens what it can and says above
/// the page, hidden panels or not, what it could not use, until dismissed.
#[test]
fn a_link_read_in_part_says_what_it_left_out() {
    let (state, problems) = ViewState::read_link("#state=%7B%22length%22%3A300&hide=pages,status,stauts").unwrap();
    let mut h = harness(state, 1280.0);
    h.state_mut().note_link_problems(&problems);
    h.run_steps(2);
    assert!(h.state().state.hidden(nopescope::app::state::PANEL_PAGES));
    let note = h.get_by_label_contains("This link could not be used in full");
    let said = format!("{:?}", note.accesskit_node());
    assert!(said.contains("state=") && said.contains("stauts"), "{said}");
    h.get_by_label(text::DISMISS).click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("could not be used in full").is_none());
    assert_eq!(h.state().link_note, None);
}

/// Values out of range in a link are brought into range, and the note
/// says which and to what: they were clamped without a word before
/// 2026-12-03 (an author's `"length": 50000` opened at 16384 silently).
#[test]
fn a_link_says_which_values_it_brought_into_range() {
    let link = "#state=%7B%22length%22%3A50000%2C%22layer%22%3A9%2C%22passkey_lab%22%3A%7B%22grid_factor%22%3A6%7D%2C%22tune%22%3A%7B%22steps%22%3A0%7D%7D&step=40";
    let (state, problems) = NopeApp::read_link(link, ViewState::default).unwrap();
    let last_step = nopescope::app::tour::STEPS.len() - 1;
    assert_eq!(
        (
            state.length,
            state.layer,
            state.passkey_lab.grid_factor,
            state.tune.steps,
            state.tour
        ),
        (16384, 3, 8, 1, Some(last_step))
    );
    let said = problems.join("; ");
    for part in [
        "length 50000 is out of range (16 to 16384): 16384 used",
        "layer 9 is out of range (0 to 3): 3 used",
        "passkey_lab.grid_factor 6 is not a power of two: 8 used",
        "tune.steps 0 is out of range (1 to 10000): 1 used",
        "step 40",
    ] {
        assert!(said.contains(part), "{part:?} not in {said:?}");
    }
    assert_eq!(problems.len(), 5, "{problems:?}");
    // A link in range says nothing, nor any link the app writes itself:
    // the walkthrough's last step, the shipped scales in use, the RoPE
    // twin's last head with every pin, the lab's grid at its largest.
    let (_, problems) = NopeApp::read_link("#state=%7B%22length%22%3A300%7D&step=2", ViewState::default).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    use nopescope::app::models::ModelInfo;
    use nopescope::app::state::{ModelChoice, MAX_LENGTH, MAX_PINNED};
    let info = ModelInfo::bundled(ModelChoice::Nope).unwrap();
    let mut written = ViewState {
        model: ModelChoice::Rope,
        tour: Some(last_step),
        layer: info.layers - 1,
        head: info.heads - 1,
        head_chosen: true,
        pinned: (0..MAX_PINNED).map(|h| [0, h]).collect(),
        length: MAX_LENGTH,
        ..Default::default()
    };
    nopescope::app::search_job::shipped(info)
        .unwrap()
        .apply_to(&mut written.scales, info.heads);
    written.passkey_lab.grid = true;
    written.passkey_lab.grid_factor = 16;
    written.compare = Some(nopescope::app::search_job::shipped(info).unwrap());
    let (read, problems) = NopeApp::read_link(&written.to_fragment(), ViewState::default).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read, written);
    // A model opened by hand is not kept: said first, before what its
    // values became on the bundled model.
    let custom = ViewState {
        model: ModelChoice::Custom,
        layer: 7,
        ..Default::default()
    };
    let (read, problems) = NopeApp::read_link(&custom.to_fragment(), ViewState::default).unwrap();
    assert_eq!(read.model, ModelChoice::Nope);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("model:") && problems[1].starts_with("layer 7"),
        "{problems:?}"
    );
}

/// The mouse wheel over a plot scrolls the page and leaves the plot as it
/// was: egui_plot's default panned it (an embed's attention row went to
/// an empty range below 0). At the top of the page a wheel up over the
/// entropy plot changes nothing on screen.
#[test]
fn the_wheel_over_a_plot_does_not_move_it() {
    use eframe::egui;
    let mut h = harness(small_state(), 1280.0);
    settle(&mut h);
    h.run_steps(3);
    let plot = h.get_by_label(text::ENTROPY_HEADING).rect();
    let at = egui::pos2(plot.center().x, plot.max.y + 220.0);
    // Over the plot: under its heading, above its Export row.
    let export = h
        .get_all_by_label("CSV")
        .map(|n| n.rect().min.y)
        .filter(|&y| y > plot.max.y)
        .fold(f32::INFINITY, f32::min);
    assert!(
        at.y > plot.max.y + 150.0 && at.y < export - 40.0,
        "{at:?} is not over the plot (Export at y = {export})"
    );
    let shot = |h: &mut Harness<'static, NopeApp>| {
        h.remove_cursor();
        h.run_steps(3);
        h.render().unwrap()
    };
    let before = shot(&mut h);
    h.hover_at(at);
    for _ in 0..5 {
        h.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Line,
            delta: egui::vec2(0.0, 3.0),
            modifiers: egui::Modifiers::NONE,
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
        });
        h.run_steps(2);
    }
    let after = shot(&mut h);
    // The page above the status bar (its frame time changes).
    let rows = (before.height() as usize - 60) * before.width() as usize * 4;
    let changed = before.as_raw()[..rows]
        .iter()
        .zip(&after.as_raw()[..rows])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        changed, 0,
        "a wheel over the entropy plot changed {changed} bytes of the page"
    );
}

/// On a phone (360 points wide) every page fits the screen's width: text
/// wraps, rows wrap, and nothing runs off the right edge, so nothing needs
/// scrolling sideways. (A collapsing header's one-line title, a slider's
/// own label, a button in a child ui of the row's remaining width and the
/// tuning page's four-column preset grid widened every section after them.)
#[test]
fn a_phone_wide_page_fits_its_width() {
    use egui_kittest::kittest::NodeT;
    use nopescope::app::state::Tab;
    let width = 360.0;
    for tab in [Tab::Explore, Tab::Passkey, Tab::Tune] {
        let state = ViewState {
            length: 512,
            tab,
            ..Default::default()
        };
        let mut h = app_common::harness(state, [width, 640.0]);
        settle(&mut h);
        h.run_steps(3);
        // Every node, on screen or scrolled out of it.
        let wide: Vec<String> = h
            .query_all_by(|_| true)
            .filter(|n| n.accesskit_node().bounding_box().is_some())
            .filter(|n| n.rect().max.x > width + 0.5)
            .map(|n| {
                format!(
                    "{:?} {:?} {:?}",
                    n.accesskit_node().role(),
                    n.accesskit_node().label(),
                    n.rect()
                )
            })
            .collect();
        assert!(wide.is_empty(), "{tab:?}: past the right edge: {wide:#?}");
    }
}

/// Scales searched on one model and in use on another of its shape (the
/// NoPE model's shipped scales on the RoPE twin) are said to be so under
/// the scales panel; on their own model nothing is said. The app applied
/// them without a word before 2026-12-03 (the CLI said so).
#[test]
fn scales_searched_on_another_model_are_noted() {
    use nopescope::app::models::ModelInfo;
    use nopescope::app::search_job;
    use nopescope::app::state::ModelChoice;
    let info = ModelInfo::bundled(ModelChoice::Nope).unwrap();
    let mut state = small_state();
    search_job::shipped(info)
        .unwrap()
        .apply_to(&mut state.scales, info.heads);
    let said = "These scales were searched on assets/models/nope-sotu";
    let mut h = harness(state.clone(), 1280.0);
    h.run_steps(2);
    assert!(h.query_by_label_contains(said).is_none(), "noted on their own model");
    // Kept through a link, as the view is.
    let state = ViewState::from_fragment(
        &ViewState {
            model: ModelChoice::Rope,
            ..state
        }
        .to_fragment(),
    )
    .unwrap()
    .unwrap();
    let mut h = harness(state, 1280.0);
    h.run_steps(2);
    assert!(
        h.state().state.scales.use_file,
        "the scales fit the twin's shape and stay in use"
    );
    h.get_by_label_contains(said);
}

/// Where a scales file records its weights' fingerprint, the app compares
/// the weights, as `eval` does: other weights under the bundled model's
/// folder name are noted; the bundled weights under another name are not.
/// The app compared folder names only before 2026-12-03.
#[test]
fn scales_from_other_weights_are_noted_in_the_app() {
    use nopescope::app::models::{bundled_fingerprint, ModelInfo};
    use nopescope::app::state::ModelChoice;
    use nopescope::app::views::scales::scales_from_json;
    let info = ModelInfo::bundled(ModelChoice::Nope).unwrap();
    let ours = bundled_fingerprint(ModelChoice::Nope).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = nopescope::model::files::load_model_dir(&root.join("assets/models/nope-sotu")).unwrap();
    assert_eq!(
        ours,
        weights.params.fingerprint(),
        "the app's fingerprint is the command line's"
    );
    let file = |folder: &str, print: &str| {
        let json = serde_json::json!({
            "head_scales": vec![vec![1.1, 1.2, 1.3, 1.4]; 4],
            "provenance": {"model": folder, "model_fingerprint": print},
        });
        scales_from_json(&json.to_string(), "f.json", info).unwrap()
    };
    let said = "These scales were searched on other weights than the model in view's (the file says they were searched on assets/models/nope-sotu)";
    let folder_note = "These scales were searched on ";
    for (file, noted) in [
        (file("assets/models/nope-sotu", "0123456789abcdef"), true),
        (file("/elsewhere/a-copy", ours), false),
    ] {
        let mut state = small_state();
        state.scales.file = Some(file);
        state.scales.use_file = true;
        let mut h = harness(state, 1280.0);
        h.run_steps(2);
        assert_eq!(h.query_by_label_contains(said).is_some(), noted);
        if !noted {
            assert!(
                h.query_by_label_contains(folder_note).is_none(),
                "a copy's folder is noted"
            );
        }
    }
}

/// On a touch screen a tablet's first swipe scrolls the page. egui lets a
/// drag scroll only once it has seen a touch (in a frame before the
/// drag's), so until 2026-12-03 the first swipe over a fresh page did
/// nothing, here and in the browser test's tablet; the app now tells egui
/// before its first frame (`AppOptions::touch_screen`, from
/// `navigator.maxTouchPoints` on the web). The touches come as the web
/// page's do: a press without a move before it, the pointer gone after the
/// release.
#[test]
fn the_first_swipe_on_a_touch_screen_scrolls_the_page() {
    use eframe::egui::{self, pos2, Event, TouchPhase};
    use nopescope::app::AppOptions;
    let state = ViewState {
        length: 256,
        ..Default::default()
    };
    let options = AppOptions {
        touch_screen: true,
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size([820.0, 1180.0])
        .wgpu()
        .build_eframe(move |cc| NopeApp::new(&cc.egui_ctx, state, None, options));
    // egui_kittest does not call the hook eframe calls before each frame.
    let mut raw = egui::RawInput::default();
    let ctx = h.ctx.clone();
    eframe::App::raw_input_hook(h.state_mut(), &ctx, &mut raw);
    for e in raw.events {
        h.event(e);
    }
    settle(&mut h);
    h.run_steps(3);
    let top = |h: &Harness<'static, NopeApp>| h.get_by_label(text::INPUT_HEADING).rect().min.y;
    let before = top(&h);
    let touch = |h: &mut Harness<'static, NopeApp>, phase: TouchPhase, y: f32| {
        let pos = pos2(780.0, y);
        let button = |pressed| Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::NONE,
        };
        match phase {
            TouchPhase::Start => h.event(button(true)),
            TouchPhase::Move => h.event(Event::PointerMoved(pos)),
            _ => {
                h.event(button(false));
                h.event(Event::PointerGone);
            }
        }
        h.event(Event::Touch {
            device_id: egui::TouchDeviceId(0),
            id: egui::TouchId(1),
            phase,
            pos,
            force: None,
        });
        h.run_steps(1);
    };
    touch(&mut h, TouchPhase::Start, 700.0);
    for i in 1..=20 {
        touch(&mut h, TouchPhase::Move, 700.0 - 20.0 * i as f32);
    }
    touch(&mut h, TouchPhase::End, 300.0);
    h.run_steps(10);
    let after = top(&h);
    assert!(
        after < before - 300.0,
        "a swipe up of 400 points moved the page from y = {before} to {after}"
    );
}

/// Help names only what the page shows: with the entropy plot hidden the
/// map's help does not send the reader to it to compare pinned heads, and
/// with the page bar hidden the against-length help does not point at the
/// Pass-key lab, which is then out of reach.
#[test]
fn help_points_only_at_what_the_page_shows() {
    use nopescope::app::state::{PANEL_ENTROPY, PANEL_PAGES};
    let (pins, lab) = ("to compare in the entropy plot", "the Pass-key lab measures more");
    let mut h = harness(small_state(), 1280.0);
    h.run_steps(2);
    h.get_by_label_contains(pins);
    h.get_by_label_contains(lab);
    let embedded = ViewState {
        hide: vec![PANEL_ENTROPY.into(), PANEL_PAGES.into()],
        ..small_state()
    };
    let mut h = harness(embedded, 1280.0);
    h.run_steps(2);
    h.get_by_label_contains(text::MAP_HEADING);
    assert!(h.query_by_label_contains(pins).is_none());
    assert!(h.query_by_label_contains(lab).is_none());
}

/// While the walkthrough is open Share offers to hide it from the embed.
#[test]
fn share_offers_to_hide_an_open_walkthrough() {
    let state = ViewState {
        tour: Some(2),
        ..small_state()
    };
    let mut h = harness(state, 1280.0);
    h.run_steps(2);
    h.get_by_label(text::SHARE_OPEN).click();
    h.run_steps(2);
    h.get_by_label(text::EMBED_HIDE_TOUR).click();
    h.run_steps(2);
    let code = h.get_by_label(text::EMBED_CODE).value().unwrap_or_default();
    assert!(
        code.contains("%22tour%22%5D") || code.contains("%22tour%22%2C"),
        "{code}"
    );
}

/// Every length axis marks L: over an input shorter than L, where the
/// line would stretch the axis, the entropy and attention plots say at
/// their right end that L lies past it. Before 2026-12-03 they showed
/// nothing of L there.
#[test]
fn plots_of_a_short_input_say_l_lies_past_them() {
    let painted = |length: usize| {
        let mut h = harness(
            ViewState {
                length,
                ..Default::default()
            },
            1280.0,
        );
        settle(&mut h);
        h.run_steps(1);
        let l = h.state().info().training_length;
        let texts = app_common::painted_texts(&h);
        let count = |t: &str| texts.iter().filter(|x| x.trim() == t).count();
        (
            count(&text::past_axis(&text::training_mark(l))),
            count(&text::training_mark(l)),
        )
    };
    // Both plots (the entropy's and the attention row's) at 64 tokens; at
    // T = L the line sits at their right ends, labelled in place (the
    // input's "L = 256" button is the third).
    let (short, at_l) = (painted(64), painted(256));
    assert_eq!((short.0, at_l.0), (2, 0), "past the axis at 64, then 256");
    assert_eq!(at_l.1, short.1 + 2, "in place at 64, then 256");
    // At T = L - 1, L is two past the last query: past the axis too.
    assert_eq!(painted(255).0, 2);
}

/// With scales in use the entropy plot draws two settings, and the line
/// over it gives each one's loss, by name: it gave the first one's alone,
/// unnamed, which read as the loss with the scales (a click-through of
/// the web page, 2026-12-04).
#[test]
fn the_entropy_plot_gives_each_setting_s_loss() {
    let mut state = small_state();
    state.scales.uniform = 1.3;
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let loss = |scales| match app.jobs.peek(&keys.entropy(scales)).and_then(Entry::result) {
        Some(JobResult::Entropy(p)) => p.loss,
        other => panic!("no entropy: {other:?}"),
    };
    let (plain, scaled) = (loss(&keys.ones), loss(&keys.scales));
    assert!(
        (plain - scaled).abs() > 1e-3,
        "{plain} and {scaled}: the scales changed nothing"
    );
    let line = format!(
        "{}: loss {plain:.3} nats, perplexity {:.1}; {}: loss {scaled:.3} nats, perplexity {:.1}",
        text::BEFORE,
        plain.exp(),
        text::AFTER,
        scaled.exp()
    );
    h.get_by_label_contains(&line);
}

/// While a new length computes, the entropy plot, the map and the head's
/// attention (its row, text and pooled maps) of the last one stay, with a
/// note: Play left the page blank between lengths, the plot gone and the
/// page below it jumping up and back (a click-through of the web page,
/// 2026-12-04).
#[test]
fn the_last_entropy_plot_stays_while_the_next_computes() {
    // A head chosen: the one the app selects may change with the length.
    let state = ViewState {
        layer: 2,
        head: 3,
        head_chosen: true,
        ..small_state()
    };
    let mut h = harness(state, 1280.0);
    settle(&mut h);
    h.get_by_label_contains("mean over heads");
    h.state_mut().state.length = 8192;
    h.run_steps(2);
    assert!(!h.state().jobs.is_idle(), "8192 tokens computed in two frames");
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_PLOT, 512));
    h.get_by_label_contains("mean over heads");
    // The map too, its cells still there to click.
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_MAP, 512));
    h.get_by_label("layer 0, head 0");
    // And the head's attention: its row, the text shaded by it and the
    // pooled map.
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_ROW, 512));
    h.get_by_label(text::ON_TEXT_HEADING);
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_POOLED, 512));
    assert!(h.query_by_label_contains("Most attended: ").is_some());
    // Once the profile is in, the row and the maps of 8192 tokens are
    // asked for: the last ones stay meanwhile too, the maps' axes named
    // for their own length.
    let (profile, pooled) = {
        let app = h.state();
        let keys = Keys::of(&app.state, app.info());
        let pooled = JobKey::Pooled {
            at: keys.at.clone(),
            scales: keys.ones.clone(),
            layer: 2,
            head: 3,
        };
        (keys.entropy(&keys.ones), pooled)
    };
    let start = Instant::now();
    while !done(&h, &profile) {
        assert!(start.elapsed() < Duration::from_secs(300), "no profile of 8192 tokens");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run_steps(2);
    assert!(
        matches!(h.state().jobs.peek(&pooled), Some(Entry::Running { .. })),
        "the pooled map of 8192 tokens computed in two frames"
    );
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_ROW, 512));
    h.get_by_label(&text::shown_meanwhile(text::MEANWHILE_POOLED, 512));
    h.get_by_label(&text::pooled_alt(text::BEFORE, 512, 512));
    h.get_by_label(&text::pooled_axes(512));
    // Not for another head: its row and map would read as this one's.
    h.state_mut().state.head = 2;
    h.run_steps(2);
    assert!(h
        .query_by_label(&text::shown_meanwhile(text::MEANWHILE_ROW, 512))
        .is_none());
    assert!(h
        .query_by_label(&text::shown_meanwhile(text::MEANWHILE_POOLED, 512))
        .is_none());
    settle(&mut h);
    for what in [
        text::MEANWHILE_PLOT,
        text::MEANWHILE_MAP,
        text::MEANWHILE_ROW,
        text::MEANWHILE_POOLED,
    ] {
        assert!(h.query_by_label(&text::shown_meanwhile(what, 512)).is_none());
    }
    h.get_by_label_contains("8192 tokens; the curves are");
    // Not over another model: its plot would read as this one's.
    h.state_mut().state.model = nopescope::app::state::ModelChoice::Rope;
    h.run_steps(2);
    assert!(
        !h.state().jobs.is_idle(),
        "the RoPE twin at 8192 computed in two frames"
    );
    assert!(
        h.query_by_label_contains("Meanwhile").is_none(),
        "the NoPE plot kept over the RoPE twin"
    );
    assert!(h.query_by_label_contains("mean over heads").is_none());
}
