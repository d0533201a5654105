//! The tuning panel driven through the accessibility tree (egui_kittest,
//! wgpu on lavapipe here): a 3-step search on the bundled model updates the
//! loss curve and the scale map; its scales are saved to a file and loaded
//! back equal; a search keeps running on another page, pauses, resumes
//! where it stopped, and cancelling it leaves the scales in use alone.
#![cfg(feature = "app")]

mod app_common;

use std::time::{Duration, Instant};

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use nopescope::app::search_job::{Checkpoint, SearchKind, TuneSettings};
use nopescope::app::state::{Tab, ViewState};
use nopescope::app::views::tuning::Phase;
use nopescope::app::{text, NopeApp};

const WIDTH: f32 = 1280.0;
const HEIGHT: f32 = 1500.0;

fn harness(state: ViewState) -> Harness<'static, NopeApp> {
    app_common::harness(state, [WIDTH, HEIGHT])
}

/// A short search on the tuning page: per head, pass-key digits, 128
/// tokens, 2 documents a step.
fn tuning_state(steps: usize) -> ViewState {
    ViewState {
        tab: Tab::Tune,
        tune: TuneSettings {
            kind: SearchKind::Heads,
            length: 128,
            batch: 2,
            steps,
            // Above the clamp at 1, so every step moves the scales.
            init: 1.2,
            ..TuneSettings::default()
        },
        ..Default::default()
    }
}

/// Steps frames until `done` holds (two minutes at most).
fn wait_for(h: &mut Harness<'static, NopeApp>, what: &str, done: impl Fn(&NopeApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited two minutes for {what}"
        );
    }
}

/// Focuses the text field named `label`, types `text` and checks it landed.
fn type_into(h: &mut Harness<'static, NopeApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.step();
    // Focused again: the frame after a modal closes can drop it.
    h.get_by_label(label).focus();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
    assert_eq!(h.get_by_label(label).value().as_deref(), Some(text));
}

fn steps_done(app: &NopeApp) -> usize {
    app.tuning()
        .run
        .as_ref()
        .and_then(|r| r.report.as_ref())
        .map_or(0, |r| r.done)
}

fn phase(app: &NopeApp) -> Option<Phase> {
    app.tuning().run.as_ref().map(|r| r.phase.clone())
}

#[test]
fn a_three_step_search_updates_the_curve_and_map_and_its_scales_save_and_load() {
    let mut h = harness(tuning_state(3));
    h.run_steps(2);
    // 128 tokens is L/2: the page says that is not where scales are needed.
    h.get_by_label("= 0.50 L: not past L");
    h.get_by_label(text::START_SEARCH).click();
    h.step();
    assert_eq!(phase(h.state()), Some(Phase::Running));
    // The map changes step by step: the scales after step 1 differ from
    // the init, and those after step 3 from those after step 1.
    wait_for(&mut h, "the first step", |a| steps_done(a) >= 1);
    let after_one = h
        .state()
        .tuning()
        .run
        .as_ref()
        .unwrap()
        .report
        .as_ref()
        .unwrap()
        .scales
        .clone();
    assert!(
        after_one.iter().any(|&s| s != 1.2),
        "step 1 moved nothing: {after_one:?}"
    );
    wait_for(&mut h, "the search to finish", |a| phase(a) != Some(Phase::Running));
    h.run_steps(3);
    let app = h.state();
    let run = app.tuning().run.as_ref().unwrap();
    assert_eq!(run.phase, Phase::Finished);
    let report = run.report.clone().unwrap();
    assert_eq!(report.done, 3);
    assert!(report.finished);
    let Checkpoint::Heads(st) = report.checkpoint.as_ref() else {
        panic!("a per-head search keeps a per-head checkpoint")
    };
    assert_eq!(st.losses.len(), 3, "three losses on the curve");
    assert!(st.losses.iter().all(|l| l.is_finite() && *l > 0.0), "{:?}", st.losses);
    assert_eq!(report.curve().len(), 3);
    assert!(report.scales.iter().all(|&s| s >= 1.0));
    assert_ne!(report.scales, after_one, "the map did not change after step 1");
    // What the panel says, and that nothing was applied yet.
    h.get_by_label_contains("step 3 of 3");
    // Beside a finished result only "Start search" starts another (a Step
    // there read as "one step more" and replaced the result).
    assert!(
        h.query_by_label(text::STEP_SEARCH).is_none(),
        "Step beside a finished search"
    );
    h.get_by_label(text::START_SEARCH);
    // A click on a cell of the map of scales selects that head for the
    // other pages, and names its scale under the map.
    let before = h.state().state.clone();
    let (l, hd) = (2, 3);
    let s = report.scales[l * 4 + hd];
    let name = text::head_name(l, hd);
    h.get_by_label(&text::scale_cell(&name, s)).click();
    h.run_steps(2);
    assert_eq!((h.state().state.layer, h.state().state.head), (l, hd));
    h.get_by_label(&text::selected_scale(&name, s));
    // (The snapshot below shows the default head, selected.)
    h.state_mut().state = before;
    assert!(h.state().state.scales.is_plain());
    // The scatter's entropy at L, then the picture (status bar masked: it
    // names this machine's adapter and threads).
    wait_for(&mut h, "the entropy at L", |a| a.jobs.is_idle());
    h.run_steps(3);
    h.mask(eframe::egui::Rect::from_min_max(
        eframe::egui::pos2(0.0, HEIGHT - 48.0),
        eframe::egui::pos2(WIDTH, HEIGHT),
    ));
    h.snapshot("app_tuning");

    // Save, then load the file back: the values are the ones saved.
    let dir = std::env::temp_dir().join(format!("nopescope-tuning-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("searched.json");
    h.get_by_label(text::SAVE_SCALES).click();
    h.run_steps(2);
    assert!(
        h.state()
            .exporter
            .proposed_path()
            .is_some_and(|p| p.ends_with("head_scales.json")),
        "the save dialog proposes head_scales.json"
    );
    app_common::save_through_dialog(&mut h, &path);
    h.get_by_label_contains("Saved ");
    let written =
        nopescope::model::head_scales::HeadScales::from_json(&std::fs::read_to_string(&path).unwrap(), None).unwrap();
    assert_eq!(written.values, report.scales);
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["provenance"]["steps"], 3, "{file}");
    assert!(
        file["provenance"]["stopped_after"].is_null(),
        "a finished search: {file}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().count() == 1,
        "a temporary file was left behind"
    );
    type_into(&mut h, text::LOAD_SOURCE, path.to_str().unwrap());
    h.get_by_label(text::LOAD_AND_APPLY).click();
    h.run_steps(2);
    let s = &h.state().state.scales;
    assert!(s.use_file);
    assert_eq!(s.file.as_ref().unwrap().values, report.scales);
    assert!(h.query_by_label_contains("Error:").is_none());
    // Every figure on the page exports its data: the objective's curve
    // (a row per step), the map of scales (a row per head, the values
    // searched) and the scales against entropy at L (a marker per head in
    // its SVG, and one in its legend).
    let export = |h: &mut Harness<'static, NopeApp>, button: &str, ends: &str| {
        app_common::export_through_dialog(h, button, ends, &dir.join(ends))
    };
    let curve = export(&mut h, "CSV", "nopescope-search-objective-128.csv");
    assert_eq!(curve.lines().count(), 1 + 3, "{curve}");
    let map = export(&mut h, "CSV", "head_scales_map_128.csv");
    let values: Vec<f32> = map
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(values, report.scales, "{map}");
    let scatter = export(&mut h, "CSV", "nopescope-scale-against-entropy-256.csv");
    assert_eq!(scatter.lines().count(), 1 + 16, "{scatter}");
    let svg = export(&mut h, "SVG", "nopescope-scale-against-entropy-256.svg");
    assert_eq!(svg.matches("<circle").count(), 16 + 1, "markers, not a line");
    assert_eq!(svg.matches("<polyline").count(), 0);
    std::fs::remove_dir_all(&dir).ok();

    // Applying the result makes it the scales every view uses.
    h.state_mut().state.scales = Default::default();
    h.run_steps(2);
    h.get_by_label(text::APPLY_RESULT).click();
    h.run_steps(2);
    let app = h.state();
    let keys = nopescope::app::views::Keys::of(&app.state, app.info());
    assert_eq!(keys.scales.values(), report.scales);
}

/// Step with no search yet starts one and pauses after its first step;
/// Step again runs the second.
/// The tuning page computes its own views only: the Explore page's entropy
/// (1024 tokens, 4 windows) ran beside a search before 2026-12-01. The
/// Explore page computes it, whichever of its panels are shown.
#[test]
fn the_tuning_page_does_not_compute_the_explore_pages_entropy() {
    use nopescope::app::views::Keys;
    let mut h = harness(tuning_state(3));
    app_common::settle(&mut h, Duration::from_secs(120));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert!(
        app.jobs.peek(&keys.entropy(&keys.ones)).is_none(),
        "the entropy was asked for"
    );
    // The settings a first search need not touch are folded, their values
    // said in the header; each setting's name explains it on hover.
    assert!(h.query_by_label(text::LEARNING_RATE).is_none(), "folded");
    let more = text::more_settings(Some((0.1, 1.2)), text::RULE_CONSTANT);
    assert_eq!(
        more,
        "More settings: learning rate 0.1, initial scale 1.20, rule constant"
    );
    h.get_by_label(&more).click();
    h.run_steps(10);
    h.get_by_label(text::LEARNING_RATE).hover();
    h.run_steps(60);
    h.get_by_label(text::LEARNING_RATE_HINT);
    h.get_by_label(text::TAB_EXPLORE).click();
    app_common::settle(&mut h, Duration::from_secs(120));
    let app = h.state();
    assert!(
        matches!(
            app.jobs.peek(&keys.entropy(&keys.ones)),
            Some(nopescope::app::jobs::Entry::Done(_))
        ),
        "the Explore page computes it"
    );
    // Also with the panels that draw it hidden (a course page embedding
    // the against-length view alone): the page's readiness and its token
    // count read it.
    use nopescope::app::state::{PANEL_ATTENTION, PANEL_CONTROLS, PANEL_ENTROPY};
    let mut h = harness(ViewState {
        hide: vec![PANEL_CONTROLS.into(), PANEL_ENTROPY.into(), PANEL_ATTENTION.into()],
        length: 300,
        ..Default::default()
    });
    app_common::settle(&mut h, Duration::from_secs(120));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert!(
        matches!(
            app.jobs.peek(&keys.entropy(&keys.ones)),
            Some(nopescope::app::jobs::Entry::Done(_))
        ),
        "the Explore page computes it with its panels hidden"
    );
}

/// The objective "your text" reads the Explore page's text: a search on
/// it runs, and its first loss is not the tuning text's (the same settings,
/// the same initial scales, other windows); a text too short for the
/// target length says so.
#[test]
fn the_text_objective_can_read_your_text() {
    use nopescope::app::search_job::TuneObjective;
    let first_loss = |objective: TuneObjective, pasted: &str| {
        let mut state = tuning_state(1);
        state.tune.objective = objective;
        state.pasted_text = pasted.into();
        let mut h = harness(state);
        h.run_steps(2);
        h.get_by_label(text::START_SEARCH).click();
        h.step();
        wait_for(&mut h, "the search to end", |a| phase(a) != Some(Phase::Running));
        h.run_steps(2);
        let loss = h
            .state()
            .tuning()
            .run
            .as_ref()
            .and_then(|r| r.report.as_ref())
            .map(|r| r.curve()[0][1]);
        (loss, h)
    };
    let mine: String = (0..12)
        .map(|i| format!("Line {i}: the tide came in over the flats, and the gulls rose from the sand as it came. "))
        .collect();
    let (theirs, _) = first_loss(TuneObjective::Text, "");
    let (yours, _) = first_loss(TuneObjective::Pasted, &mine);
    let (theirs, yours) = (
        theirs.expect("a loss on the tuning text"),
        yours.expect("a loss on your text"),
    );
    assert!(theirs.is_finite() && yours.is_finite() && yours > 0.0);
    assert_ne!(theirs, yours, "the search did not read your text");
    let (none, h) = first_loss(TuneObjective::Pasted, "Too short.");
    assert!(none.is_none());
    h.get_by_label_contains("too few for stretches of 128");
    // With no text at all, Start and Step are disabled, and the panel says
    // why before any click.
    let mut state = tuning_state(1);
    state.tune.objective = TuneObjective::Pasted;
    let mut h = harness(state);
    h.run_steps(2);
    h.get_by_label(text::OBJECTIVE_PASTED_EMPTY);
    h.get_by_label(text::START_SEARCH).click();
    h.get_by_label(text::STEP_SEARCH).click();
    h.run_steps(2);
    assert!(h.state().tuning().run.is_none(), "a search started with no text");
}

/// A paused search's scales, saved, say in their file how far it had run
/// (the command line's stopped search writes the same), and the app says
/// so where they are in use. Before 2026-12-03 the file claimed every
/// planned step.
#[test]
fn a_paused_search_saves_scales_that_say_it_stopped() {
    let mut h = harness(tuning_state(40));
    h.run_steps(2);
    step_and_pause(&mut h, "the first step");
    let dir = std::env::temp_dir().join(format!("nopescope-paused-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("paused.json");
    h.get_by_label(text::SAVE_SCALES).click();
    h.run_steps(2);
    app_common::save_through_dialog(&mut h, &path);
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["provenance"]["steps"], 40, "{file}");
    assert_eq!(file["provenance"]["stopped_after"], 1, "{file}");
    // Its settings with their own digits (not 1.2000000476837158).
    assert_eq!(
        (&file["provenance"]["init"], &file["provenance"]["lr"]),
        (&1.2.into(), &0.1.into())
    );
    assert_eq!(file["note"], "per-head search at 128 tokens (1 step)");
    // The weights searched, as the command line's search records them.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = nopescope::model::files::load_model_dir(&root.join("assets/models/nope-sotu")).unwrap();
    assert_eq!(
        file["provenance"]["model_fingerprint"],
        weights.params.fingerprint(),
        "{file}"
    );
    // Loaded back, in use: the tuning page and the scales panel say it.
    type_into(&mut h, text::LOAD_SOURCE, path.to_str().unwrap());
    h.get_by_label(text::LOAD_AND_APPLY).click();
    h.run_steps(2);
    let note = text::scales_stopped(1, false);
    h.get_by_label(&note);
    h.get_by_label(text::TAB_EXPLORE).click();
    h.run_steps(2);
    h.get_by_label(&note);
    // The command line says it too (and finds the weights the same).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nopescope"))
        .arg("eval")
        .arg(root.join("assets/models/nope-sotu"))
        .arg("--text")
        .arg(root.join("assets/text/sotu-validation.txt"))
        .arg("--head-scales")
        .arg(&path)
        .args(["--lengths", "32", "--backend", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stopped by the user after 1 step:"), "{err}");
    assert!(!err.contains("note: these scales were searched"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Clicks Step and waits for the search to pause after `which` step.
fn step_and_pause(h: &mut Harness<'static, NopeApp>, which: &str) {
    h.get_by_label(text::STEP_SEARCH).click();
    h.step();
    wait_for(h, &format!("{which} to pause"), |a| phase(a) == Some(Phase::Paused));
}

#[test]
fn step_starts_a_search_one_step_at_a_time() {
    let mut h = harness(tuning_state(500));
    h.run_steps(2);
    step_and_pause(&mut h, "the first step");
    assert_eq!(steps_done(h.state()), 1);
    step_and_pause(&mut h, "the second step");
    assert_eq!(steps_done(h.state()), 2);
}

#[test]
fn a_search_runs_on_another_page_pauses_steps_resumes_and_cancel_keeps_the_scales() {
    let mut state = tuning_state(500);
    state.scales.uniform = 1.3;
    let before = state.scales.clone();
    let mut h = harness(state);
    h.run_steps(2);
    h.get_by_label(text::START_SEARCH).click();
    wait_for(&mut h, "the first step", |a| steps_done(a) >= 1);

    // On the explorer the search goes on (its job is pinned).
    h.get_by_label(text::TAB_EXPLORE).click();
    h.step();
    let step_of = |app: &NopeApp| {
        app.jobs.running().iter().find_map(|(_, m)| {
            m.strip_prefix("search step ")
                .and_then(|r| r.split('/').next()?.parse::<usize>().ok())
        })
    };
    wait_for(&mut h, "a step on the explorer page", |a| step_of(a).is_some());
    let first = step_of(h.state()).unwrap();
    wait_for(&mut h, "another step on the explorer page", |a| {
        step_of(a).is_some_and(|s| s > first)
    });

    // Back on the panel: pause ends the job and keeps the checkpoint.
    h.get_by_label(text::TAB_TUNE).click();
    h.step();
    h.get_by_label(text::PAUSE).click();
    h.step();
    assert_eq!(phase(h.state()), Some(Phase::Paused));
    let paused_at = steps_done(h.state());
    assert!(paused_at > first, "the panel missed the steps run on the other page");
    for _ in 0..20 {
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(steps_done(h.state()), paused_at, "steps ran while paused");

    // Step runs one step from the checkpoint and pauses again.
    h.get_by_label(text::STEP_SEARCH).click();
    h.step();
    assert_eq!(phase(h.state()), Some(Phase::Running));
    wait_for(&mut h, "Step to pause again", |a| phase(a) == Some(Phase::Paused));
    assert_eq!(steps_done(h.state()), paused_at + 1, "Step ran one step");
    let paused_at = paused_at + 1;

    // Resume continues from the checkpoint, not from step 0.
    h.get_by_label(text::RESUME).click();
    h.step();
    assert_eq!(phase(h.state()), Some(Phase::Running));
    wait_for(&mut h, "a step after resuming", |a| steps_done(a) > paused_at);
    let report = h.state().tuning().run.as_ref().unwrap().report.clone().unwrap();
    let Checkpoint::Heads(st) = report.checkpoint.as_ref() else {
        panic!()
    };
    assert_eq!(st.losses.len(), report.done, "the losses before the pause were kept");

    // The status bar's Cancel (every job) pauses the search too; it resumes.
    h.get_by_label(text::CANCEL).click();
    h.run_steps(2);
    assert_eq!(phase(h.state()), Some(Phase::Paused));
    let paused_at = steps_done(h.state());
    h.get_by_label(text::RESUME).click();
    h.step();
    wait_for(&mut h, "a step after the second resume", |a| steps_done(a) > paused_at);

    // Cancel: the run is gone, and the scales in use are those from before.
    h.get_by_label(text::CANCEL_SEARCH).click();
    h.step();
    assert!(h.state().tuning().run.is_none());
    assert_eq!(h.state().state.scales, before);
    let start = Instant::now();
    while h.state().jobs.running().iter().any(|(_, m)| m.starts_with("search")) {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
        assert!(start.elapsed() < Duration::from_secs(60), "the search did not stop");
    }
}

#[test]
fn presets_apply_set_b_for_the_explorer_and_compare_pass_key_accuracy() {
    let mut h = harness(tuning_state(3));
    h.run_steps(2);
    // The shipped scales as setting B: the explorer's views draw them
    // instead of NoPE.
    let shipped =
        nopescope::model::head_scales::HeadScales::from_json(nopescope::app::models::NOPE_HEAD_SCALES_4L, None)
            .unwrap();
    h.get_all_by_label(text::PRESET_AS_B).nth(4).unwrap().click();
    h.step();
    let b = h.state().state.compare.clone().expect("setting B");
    assert_eq!(b.values, shipped.values);
    assert_eq!(b.name, text::PRESET_SHIPPED);
    // The uniform preset in use (s = 1.2 by default).
    h.get_all_by_label(text::USE_PRESET).nth(1).unwrap().click();
    h.step();
    let app = h.state();
    assert_eq!(app.state.scales.uniform, 1.2);
    let keys = nopescope::app::views::Keys::of(&app.state, app.info());
    let settings = keys.settings();
    assert_eq!(settings.len(), 2);
    assert_eq!(settings[0].0, text::SETTING_B);
    assert_eq!(settings[0].1.values(), shipped.values);
    assert_eq!(settings[1].1.values(), vec![1.2; 16]);
    // The fitted rule in use: the rule is part of the key.
    h.get_all_by_label(text::USE_PRESET).nth(2).unwrap().click();
    h.step();
    let app = h.state();
    let keys = nopescope::app::views::Keys::of(&app.state, app.info());
    assert!(matches!(
        keys.scales.rule(),
        nopescope::model::head_scales::ScaleRule::Fitted {
            training_length: 256,
            ..
        }
    ));
    assert!(!keys.plain);

    // Pass-key accuracy of B and the current scales at L, 2L and 4L.
    h.get_by_label(text::COMPARE_PASSKEY).click();
    h.step();
    wait_for(&mut h, "the pass-key comparison", |a| a.jobs.is_idle());
    h.run_steps(2);
    let app = h.state();
    let keys = nopescope::app::views::Keys::of(&app.state, app.info());
    let mut measured = Vec::new();
    for scales in [keys.compare.clone().unwrap(), keys.scales.clone()] {
        let key = nopescope::app::jobs::JobKey::PasskeyCompare {
            model: app.state.model,
            scales,
            trials: nopescope::app::search_job::COMPARE_TRIALS,
        };
        match app.jobs.peek(&key) {
            Some(nopescope::app::jobs::Entry::Done(r)) => match r.as_ref() {
                nopescope::app::jobs::JobResult::PasskeyCompare(c) => {
                    assert_eq!(c.lengths, vec![256, 512, 1024]);
                    assert_eq!(c.accuracy.len(), 3);
                    assert!(c.accuracy.iter().all(|a| (0.0..=1.0).contains(a)));
                    measured.extend(c.lengths.iter().zip(&c.accuracy).map(|(&n, &a)| (n as f64, a)));
                }
                other => panic!("not a comparison: {other:?}"),
            },
            other => panic!("the comparison did not finish: {other:?}"),
        }
    }
    h.get_by_label("2L = 512");
    // The table exports: its CSV holds the L mark, then each setting's
    // accuracy at each length, as measured.
    let dir = std::env::temp_dir().join(format!("nopescope-compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = app_common::export_through_dialog(&mut h, "CSV", "passkey_comparison.csv", &dir.join("comparison.csv"));
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.rsplitn(3, ',').collect()).collect();
    assert_eq!(rows.len(), 1 + 6, "{csv}");
    assert_eq!((rows[0][0], rows[0][1]), ("", "256"), "the L mark: {csv}");
    let points: Vec<(f64, f64)> = rows[1..]
        .iter()
        .map(|r| (r[1].parse().unwrap(), r[0].parse().unwrap()))
        .collect();
    assert_eq!(points, measured, "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A result is applied only to the model it was searched on: after
/// switching to the RoPE twin, Apply and "Compare with it" are disabled
/// and a note says why; back on NoPE they work (before 2026-12-01 Apply
/// wrote the scales onto whatever model was in view, and a shape that
/// did not match was then dropped without a word).
/// Starts the search, waits for it to finish, and checks its result can be
/// applied to the model in view.
fn search_and_see_it_apply(h: &mut Harness<'static, NopeApp>) {
    h.get_by_label(text::START_SEARCH).click();
    h.step();
    wait_for(h, "the search", |a| phase(a) == Some(Phase::Finished));
    h.run_steps(2);
    assert!(h.query_by_label(text::RESULT_OTHER_MODEL).is_none());
    assert!(!h.get_by_label(text::APPLY_RESULT).accesskit_node().is_disabled());
}

#[test]
fn a_result_applies_only_to_the_model_it_was_searched_on() {
    let mut h = harness(tuning_state(1));
    h.run_steps(2);
    search_and_see_it_apply(&mut h);
    h.state_mut().state.model = nopescope::app::state::ModelChoice::Rope;
    h.run_steps(2);
    h.get_by_label(text::RESULT_OTHER_MODEL);
    for button in [text::APPLY_RESULT, text::RESULT_AS_B] {
        assert!(h.get_by_label(button).accesskit_node().is_disabled(), "{button}");
    }
    h.state_mut().state.model = nopescope::app::state::ModelChoice::Nope;
    h.run_steps(2);
    assert!(h.query_by_label(text::RESULT_OTHER_MODEL).is_none());
    h.get_by_label(text::APPLY_RESULT).click();
    h.run_steps(2);
    assert!(h.state().state.scales.use_file, "applied");
}

/// Two opened models of the same shape are told apart: a search's result
/// on the first opened model does not apply to the next one opened (here
/// the same folder opened again: its files may have changed). Before
/// 2026-12-01 only the model choice and the shape were compared.
#[test]
fn a_result_on_one_opened_model_does_not_apply_to_the_next() {
    use nopescope::app::compute::ModelSource;
    use nopescope::app::state::ModelChoice;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/nope-sotu");
    let mut h = harness(tuning_state(1));
    h.run_steps(2);
    let open = |h: &mut Harness<'static, NopeApp>, opening: u64| {
        h.state_mut().jobs.open_model(ModelSource::Folder(dir.clone()));
        wait_for(h, "the model to open", |a| {
            a.jobs.opened.model.as_ref().is_some_and(|m| m.info.opened == opening)
        });
        h.run_steps(2);
        assert_eq!(h.state().state.model, ModelChoice::Custom);
    };
    open(&mut h, 1);
    search_and_see_it_apply(&mut h);
    open(&mut h, 2);
    h.get_by_label(text::RESULT_OTHER_MODEL);
    assert!(h.get_by_label(text::APPLY_RESULT).accesskit_node().is_disabled());
}
