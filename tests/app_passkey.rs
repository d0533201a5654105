//! The pass-key lab driven the way a person would, through egui_kittest
//! (wgpu rendering; lavapipe on CI machines): one document's greedy answer
//! beside its key, the accuracy map filling in, stopping and going on
//! from the cells done, and a length too short for the format answered
//! with an error, not a panic.
#![cfg(feature = "app")]

mod app_common;

use std::time::{Duration, Instant};

use app_common::settle;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use nopescope::app::compute::passkey::Cell;
use nopescope::app::jobs::{Entry, FillerKey, InputAt, InputKey, JobKey, JobResult};
use nopescope::app::state::{ModelChoice, Tab, ViewState};
use nopescope::app::views::passkey_lab::grid_series;
use nopescope::app::views::Keys;
use nopescope::app::{text, NopeApp};

const WIDTH: f32 = 1280.0;
/// Tall enough for the whole page with the maps (the snapshot).
const HEIGHT: f32 = 1240.0;

fn harness(state: ViewState) -> Harness<'static, NopeApp> {
    app_common::harness(state, [WIDTH, HEIGHT])
}

fn lab_state() -> ViewState {
    let mut s = ViewState {
        tab: Tab::Passkey,
        ..Default::default()
    };
    s.passkey_lab.length = 256;
    s
}

fn answer_key(state: &ViewState, keys: &Keys) -> JobKey {
    JobKey::PasskeyAnswer {
        at: InputAt {
            model: ModelChoice::Nope,
            input: InputKey::PasskeyLab {
                key: state.passkey_lab.key,
                depth_permille: (state.passkey_lab.depth * 1000.0).round() as u32,
                filler: FillerKey::Repeated,
            },
            length: state.passkey_lab.length,
        },
        scales: keys.ones.clone(),
    }
}

#[test]
fn a_document_at_l_is_answered_with_its_key() {
    // Opened from the explorer by its tab, as a person would.
    let mut h = harness(ViewState {
        length: 256,
        ..Default::default()
    });
    h.step();
    h.get_by_label(text::TAB_PASSKEY).click();
    h.step();
    assert_eq!(h.state().state.tab, Tab::Passkey);
    let key = h.state().state.passkey_lab.key;
    settle(&mut h, Duration::from_secs(120));

    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let read = match app.jobs.peek(&answer_key(&app.state, &keys)).and_then(Entry::result) {
        Some(JobResult::PasskeyAnswer(a)) => {
            assert_eq!(a.length, 256);
            assert_eq!(a.key, key);
            // The decoded text itself, not only the verdict.
            assert_eq!(a.answer.trim(), key.to_string(), "NoPE at L answered {:?}", a.answer);
            assert!(a.correct);
            assert!(a.key_span.sentence.end <= a.query && a.query < a.length);
            assert_eq!(a.text.len(), a.query + 1, "the text runs to the query");
            a.text.len()
        }
        other => panic!("no answer: {other:?}"),
    };
    h.get_by_label(&text::passkey_answer(text::BEFORE, &key.to_string(), key, true));
    // Which head retrieves best is named, with a button to show it.
    h.get_by_label_contains("the head that retrieves best is");
    h.get_by_label_contains("of its attention on the key's tokens");
    assert!(h.query_by_label_contains("Error:").is_none());
    // The document itself, under its heading: up to the question, the key
    // sentence with the key in it, and no answer after the question. The
    // heading says what makes up the rest of the document's 256 tokens.
    assert!(read < 256, "{read} tokens read of 256");
    let heading = format!(
        "The text the model reads ({read} tokens; with the key's {} tokens it is to write, 256 in all)",
        256 - read
    );
    assert_eq!(text::show_passkey_document(read, 256), heading);
    h.get_by_label(&heading).click();
    h.run_steps(2);
    // (The first: the attention on the text, further down, shows it too.)
    let shown = h
        .get_all_by_label_contains("The pass key is")
        .next()
        .unwrap()
        .accesskit_node()
        .value()
        .unwrap_or_default();
    h.get_by_label(text::ON_TEXT_HEADING);
    assert!(shown.contains(&key.to_string()), "{shown}");
    assert_eq!(
        shown.matches(&key.to_string()).count(),
        2,
        "the key sentence names it twice, the answer is left out: {shown}"
    );
    // The answering query's attention row exports its weights, with the
    // key sentence's ends and the query as marks.
    let dir = std::env::temp_dir().join(format!("nopescope-passkey-row-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (layer, head) = (h.state().state.layer, h.state().state.head);
    let stem = format!("nopescope-passkey-attention-l{layer}h{head}-256");
    let csv = app_common::export_through_dialog(&mut h, "CSV", &format!("{stem}.csv"), &dir.join("row.csv"));
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[1].starts_with(&text::key_sentence_end(true)), "{csv}");
    assert!(rows[2].starts_with(&text::key_sentence_end(false)), "{csv}");
    // The query's row over keys 0..=query, one point per key at this length.
    let points = rows.iter().filter(|r| r.starts_with(text::BEFORE)).count();
    assert_eq!(points, read, "{}", &csv[..200.min(csv.len())]);
    let weights: f64 = rows
        .iter()
        .filter(|r| r.starts_with(text::BEFORE))
        .map(|r| r.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((weights - 1.0).abs() < 1e-3, "the row sums to {weights}");
    std::fs::remove_dir_all(&dir).ok();

    // A new random key rebuilds the document and decodes again.
    h.get_by_label(text::PASSKEY_RANDOM_KEY).click();
    h.step();
    let new_key = h.state().state.passkey_lab.key;
    assert!((10_000..=99_999).contains(&new_key));
    settle(&mut h, Duration::from_secs(120));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    match app.jobs.peek(&answer_key(&app.state, &keys)).and_then(Entry::result) {
        Some(JobResult::PasskeyAnswer(a)) => assert_eq!(a.key, new_key),
        other => panic!("no answer for the new key: {other:?}"),
    }
}

fn grid_result(h: &Harness<'static, NopeApp>) -> Option<(bool, Vec<Cell>)> {
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let series = grid_series(&app.state, &keys);
    let (_, _, key) = series.first()?;
    let entry = app.jobs.peek(key)?;
    let running = matches!(entry, Entry::Running { .. });
    match entry.result() {
        Some(JobResult::PasskeyGrid(g)) => Some((running, g.cells.clone())),
        _ => None,
    }
}

#[test]
fn the_accuracy_map_fills_in_and_stops() {
    let mut state = lab_state();
    let lab = &mut state.passkey_lab;
    (lab.grid_factor, lab.grid_depths, lab.grid_trials) = (1, 2, 2);
    (lab.grid_rope, lab.grid_scaled) = (false, false);
    let mut h = harness(state);
    settle(&mut h, Duration::from_secs(120));
    h.get_by_label(text::GRID_START).click();
    h.step();
    assert!(h.state().state.passkey_lab.grid);
    settle(&mut h, Duration::from_secs(120));
    let (running, cells) = grid_result(&h).expect("no accuracy map");
    assert!(!running);
    // Done: the button clears the map instead of stopping it.
    h.get_by_label(text::GRID_CLEAR);
    assert!(h.query_by_label(text::GRID_STOP).is_none());
    assert_eq!(cells.len(), 4, "2 lengths x 2 depths");
    for c in &cells {
        let Cell::Done { correct, trials } = *c else {
            panic!("a cell did not finish: {c:?}")
        };
        assert_eq!(trials, 2);
        let acc = c.accuracy().unwrap();
        assert!((0.0..=1.0).contains(&acc) && correct <= trials);
    }
    assert_eq!(h.get_all_by_label_contains(" of 2 correct (").count(), 4);

    // Export: the save dialog proposes passkey_accuracy.csv; the file
    // saved gets the CSV, header and 4 rows.
    let dir = std::env::temp_dir().join(format!("nopescope-passkey-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("map.csv");
    h.get_by_label(text::EXPORT_CSV).click();
    h.run_steps(2);
    assert!(h
        .state()
        .exporter
        .proposed_path()
        .is_some_and(|p| p.ends_with("passkey_accuracy.csv")));
    app_common::save_through_dialog(&mut h, &path);
    let csv = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert_eq!(lines[0], "series,length,depth,trials,correct,accuracy");
    assert!(lines[1].starts_with(&format!("{},128,0.000,2,", text::BEFORE.replace(',', " "))));
    // The map also as a figure of its own: SVG with a square per cell,
    // named after its series.
    let svg_path = dir.join("map.svg");
    let svg = app_common::export_through_dialog(&mut h, "SVG", "passkey_accuracy_nope-s-1.svg", &svg_path);
    assert!(svg.starts_with("<svg") && svg.contains(&text::grid_title(text::BEFORE)));
    assert_eq!(svg.matches("<title>").count(), 4, "one square per cell");
    std::fs::remove_dir_all(&dir).ok();

    // Clear drops the finished map: no cells, the Compute button back.
    h.get_by_label(text::GRID_CLEAR).click();
    h.run_steps(3);
    assert!(grid_result(&h).is_none(), "the cleared map is still kept");
    assert_eq!(h.query_all_by_label_contains(" of 2 correct (").count(), 0);
    h.get_by_label(text::GRID_START);

    // A bigger map: cells arrive one by one, and Stop ends the job.
    let lab = &mut h.state_mut().state.passkey_lab;
    (lab.grid_factor, lab.grid_depths, lab.grid_trials, lab.grid) = (16, 5, 4, true);
    let start = Instant::now();
    let partial = loop {
        h.step();
        if let Some((true, cells)) = grid_result(&h) {
            let done = cells.iter().filter(|c| !matches!(c, Cell::Pending)).count();
            if done > 0 {
                break (done, cells.len());
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no partial map");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        partial.0 < partial.1,
        "the whole map finished before it was seen partial"
    );
    h.get_by_label(text::GRID_STOP).click();
    h.run_steps(3);
    assert!(!h.state().state.passkey_lab.grid);
    assert!(h.state().jobs.is_idle(), "the map still runs after Stop");
    // The cells done stay, drawn as they were, with Go on and Clear
    // (until 2026-12-02 Stop dropped them).
    let done = |cells: &[Cell]| cells.iter().filter(|c| !matches!(c, Cell::Pending)).count();
    let (running, kept) = grid_result(&h).expect("the stopped map is gone");
    assert!(
        !running && done(&kept) >= partial.0,
        "{} cells kept of {}",
        done(&kept),
        partial.0
    );
    h.get_by_label(text::STOPPED_PART_WAY);
    assert!(h.query_by_label(text::GRID_START).is_none());
    // A move to another page and back neither drops nor restarts it.
    h.state_mut().state.tab = Tab::Explore;
    h.run_steps(3);
    h.state_mut().state.tab = Tab::Passkey;
    h.run_steps(3);
    assert!(h.state().jobs.is_idle(), "coming back restarted the stopped map");
    h.get_by_label(text::GRID_GO_ON).click();
    h.run_steps(2);
    // Going on starts from the cells kept, not from an empty map.
    let (running, cells) = grid_result(&h).expect("no map going on");
    assert!(running && h.state().state.passkey_lab.grid);
    assert!(
        done(&cells) >= done(&kept),
        "went on from {} cells of {}",
        done(&cells),
        done(&kept)
    );
    h.get_by_label(text::GRID_STOP).click();
    h.run_steps(3);
    h.get_by_label(text::GRID_CLEAR).click();
    h.run_steps(3);
    assert!(grid_result(&h).is_none(), "the cleared map is still kept");
    h.get_by_label(text::GRID_START);
    assert!(h.query_by_label(text::GRID_GO_ON).is_none());
}

/// A sweep stopped part way, run again from what it had finished, ends
/// with the numbers of one whole run and does not redo what was done (its
/// first progress is past the start): the accuracy map, and the
/// explorer's against-length sweep.
#[test]
fn a_stopped_sweep_goes_on_to_the_numbers_of_a_whole_run() {
    use nopescope::app::compute::passkey::GridKey;
    use nopescope::app::compute::{JobControl, Lab};
    use nopescope::app::jobs::ScalesKey;
    /// Says stop once `stop_after` partial results came (never: None);
    /// goes on from `resume`; keeps the first progress of the work itself.
    #[derive(Default)]
    struct Control {
        partials: Vec<JobResult>,
        stop_after: Option<usize>,
        resume: Option<JobResult>,
        first_progress: Option<f32>,
    }
    impl JobControl for Control {
        fn progress(&mut self, fraction: f32, message: &str) -> bool {
            // (Every job says first that it starts the engine, at 0.)
            if message != text::STARTING_ENGINE {
                self.first_progress.get_or_insert(fraction);
            }
            self.stop_after.is_none_or(|n| self.partials.len() < n)
        }
        fn partial(&mut self, result: JobResult) {
            self.partials.push(result);
        }
        fn resumed(&self) -> Option<&JobResult> {
            self.resume.as_ref()
        }
    }
    let run = |lab: &mut Lab, key: &JobKey, ctl: &mut Control| pollster::block_on(lab.run(key, ctl));
    let mut lab = Lab::new(nopescope::lab::backend::Backend::Cpu, None);
    let grid = JobKey::PasskeyGrid(GridKey {
        model: ModelChoice::Nope,
        scales: ScalesKey::ones(16),
        filler: FillerKey::Repeated,
        lengths: vec![128, 256, 512],
        depths: 2,
        trials: 2,
        seed: 7,
    });
    let against = JobKey::AgainstLength {
        model: ModelChoice::Nope,
        scales: ScalesKey::ones(16),
        text: None,
    };
    for key in [grid, against] {
        let whole = run(&mut lab, &key, &mut Control::default()).unwrap();
        let mut first = Control {
            stop_after: Some(2),
            ..Default::default()
        };
        assert!(run(&mut lab, &key, &mut first).is_err(), "{key:?} was not stopped");
        assert_eq!(first.partials.len(), 2);
        let mut second = Control {
            resume: first.partials.pop(),
            ..Default::default()
        };
        let went_on = run(&mut lab, &key, &mut second).unwrap();
        assert!(second.first_progress.is_some_and(|f| f > 0.0), "{key:?} started over");
        let done = |r: &JobResult| match r {
            JobResult::PasskeyGrid(g) => g.finished(),
            JobResult::AgainstLength(a) => a.points.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            done(&second.partials[0]),
            3,
            "{key:?}: the first new point joins the 2 kept"
        );
        assert_eq!(format!("{went_on:?}"), format!("{whole:?}"), "{key:?}");
    }
}

/// With no scales in use the map's "with the current scales" is off (it
/// would repeat plain NoPE), says why, and the shipped scales are one
/// click away: they go in use on every page and the series comes on.
#[test]
fn the_map_offers_the_shipped_scales_when_none_are_in_use() {
    let mut h = harness(lab_state());
    h.run_steps(3);
    let app = h.state();
    assert!(Keys::of(&app.state, app.info()).plain);
    assert!(h.get_by_label(text::AFTER).accesskit_node().is_disabled());
    h.get_by_label(text::USE_SHIPPED_SCALES).click();
    h.run_steps(3);
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    assert!(!keys.plain, "the shipped scales in use");
    assert!(app.state.scales.use_file);
    assert!(app.state.passkey_lab.grid_scaled);
    assert!(!h.get_by_label(text::AFTER).accesskit_node().is_disabled());
    assert!(h.query_by_label(text::USE_SHIPPED_SCALES).is_none());
    // A file of the user's own, loaded and switched off, is not offered to
    // be replaced.
    let mut state = lab_state();
    state.scales.file = Some(nopescope::app::state::LoadedScales {
        name: "mine.json".into(),
        layers: 4,
        heads: 4,
        values: vec![1.5; 16],
        rule: Default::default(),
        ..Default::default()
    });
    let mut h = harness(state);
    h.run_steps(3);
    assert!(!h.state().state.scales.use_file);
    assert!(h.query_by_label(text::USE_SHIPPED_SCALES).is_none());
}

#[test]
fn a_too_short_document_shows_an_error() {
    let mut state = lab_state();
    state.passkey_lab.length = 16;
    let mut h = harness(state);
    settle(&mut h, Duration::from_secs(60));
    h.get_by_label_contains("Error: a pass-key document of 16 tokens is too short");
    // Back to a length that holds the format: the error goes.
    h.get_by_label(&text::at_training_length(256)).click();
    h.step();
    settle(&mut h, Duration::from_secs(120));
    assert!(h.query_by_label_contains("Error:").is_none());
}

/// Snapshots leave out the status bar: it names the engine with this
/// machine's thread count and adapter.
fn snapshot(h: &mut Harness<'static, NopeApp>, name: &str) {
    use eframe::egui::{pos2, Rect};
    h.mask(Rect::from_min_max(pos2(0.0, HEIGHT - 48.0), pos2(WIDTH, HEIGHT)));
    h.snapshot(name);
}

#[test]
fn lab_with_maps_matches_snapshot() {
    let mut state = lab_state();
    state.scales.uniform = 1.5;
    let lab = &mut state.passkey_lab;
    (lab.grid_factor, lab.grid_depths, lab.grid_trials, lab.grid) = (4, 5, 2, true);
    let mut h = harness(state);
    settle(&mut h, Duration::from_secs(300));
    // "Show this head" selects NoPE's best retrieving head.
    let best = {
        let app = h.state();
        let keys = Keys::of(&app.state, app.info());
        let JobKey::PasskeyAnswer { at, scales } = answer_key(&app.state, &keys) else {
            unreachable!()
        };
        match app
            .jobs
            .peek(&JobKey::PasskeyHeads { at, scales })
            .and_then(Entry::result)
        {
            Some(JobResult::PasskeyHeads(r)) => r.best().unwrap(),
            other => panic!("no head ranking: {other:?}"),
        }
    };
    // The lab selected it (the default was layer 0, head 0).
    assert_eq!((h.state().state.layer, h.state().state.head), (best.0, best.1));
    assert!(!h.state().state.head_chosen);
    // Another layer typed in stays; the button selects the best again.
    let other = (best.0 + 1) % h.state().info().layers;
    let layer = || eframe::egui::accesskit::Role::SpinButton;
    h.get_by_role_and_label(layer(), text::LAYER).focus();
    h.step();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_role_and_label(layer(), text::LAYER)
        .type_text(&other.to_string());
    h.key_press(eframe::egui::Key::Enter);
    h.run_steps(3);
    assert_eq!(h.state().state.layer, other, "typed");
    assert!(h.state().state.head_chosen);
    settle(&mut h, Duration::from_secs(60));
    assert_eq!(h.state().state.layer, other, "a head chosen by hand stays");
    h.get_all_by_label(text::SHOW_BEST_HEAD).next().unwrap().click();
    h.step();
    assert_eq!((h.state().state.layer, h.state().state.head), (best.0, best.1));
    settle(&mut h, Duration::from_secs(120));
    // NoPE, the current scales and the RoPE twin, every cell finished.
    assert_eq!(h.get_all_by_label_contains(" of 2 correct (").count(), 3 * 4 * 5);
    snapshot(&mut h, "app_passkey_lab");
}

/// The default maps' cost (NoPE and RoPE, 5 depths x 4 trials, up to 8L or
/// `NOPESCOPE_GRID_FACTOR` x L) and one 16384-token document's, for
/// docs/APP.md: `cargo test --release --test app_passkey -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: prints the maps' times (run with --ignored --nocapture)"]
fn default_map_timing() {
    let mut state = lab_state();
    state.passkey_lab.grid = true;
    if let Some(f) = std::env::var("NOPESCOPE_GRID_FACTOR").ok().and_then(|f| f.parse().ok()) {
        state.passkey_lab.grid_factor = f;
    }
    let factor = state.passkey_lab.grid_factor;
    let mut h = harness(state);
    let start = Instant::now();
    settle(&mut h, Duration::from_secs(1200));
    eprintln!(
        "timing: the accuracy maps (NoPE and RoPE, L/2..{factor}L, 5 depths x 4 trials) and the document at L in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let lab = &mut h.state_mut().state.passkey_lab;
    (lab.grid, lab.length) = (false, 16384);
    let start = Instant::now();
    settle(&mut h, Duration::from_secs(600));
    eprintln!(
        "timing: a 16384-token document (answer and the attention row, NoPE) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    for (name, _, key) in grid_series(&app.state, &keys) {
        if let Some(JobResult::PasskeyGrid(g)) = app.jobs.peek(&key).and_then(Entry::result) {
            for (li, l) in g.lengths.iter().enumerate() {
                let accs: Vec<String> = (0..g.depths.len())
                    .map(|d| format!("{:.2}", g.cell(li, d).accuracy().unwrap_or(f64::NAN)))
                    .collect();
                eprintln!("{name} length {l}: {}", accs.join(" "));
            }
        }
    }
}

#[test]
fn real_text_filler_builds_a_document_and_answers() {
    let mut state = lab_state();
    state.passkey_lab.filler = nopescope::app::state::FillerChoice::Validation;
    let mut h = harness(state);
    settle(&mut h, Duration::from_secs(120));
    let app = h.state();
    let keys = Keys::of(&app.state, app.info());
    let JobKey::PasskeyAnswer { at, scales } = answer_key(&app.state, &keys) else {
        unreachable!()
    };
    let at = InputAt {
        input: InputKey::PasskeyLab {
            key: app.state.passkey_lab.key,
            depth_permille: 500,
            filler: FillerKey::Validation,
        },
        ..at
    };
    match app
        .jobs
        .peek(&JobKey::PasskeyAnswer { at, scales })
        .and_then(Entry::result)
    {
        Some(JobResult::PasskeyAnswer(a)) => {
            assert_eq!(a.length, 256);
            assert!(!a.key_span.digits.is_empty());
            assert!(a.key_span.digits.iter().all(|p| a.key_span.sentence.contains(p)));
            assert_eq!(a.answer.trim() == a.key.to_string(), a.correct);
        }
        other => panic!("no answer on the validation filler: {other:?}"),
    }
    assert!(h.query_by_label_contains("Error:").is_none());
}

/// The lab with NoPE's accuracy map over L/2 and L (2 depths, 2 trials)
/// computed.
fn small_map_computed() -> Harness<'static, NopeApp> {
    let mut state = lab_state();
    let lab = &mut state.passkey_lab;
    (lab.grid_factor, lab.grid_depths, lab.grid_trials) = (1, 2, 2);
    (lab.grid_rope, lab.grid_scaled, lab.grid) = (false, false, true);
    let mut h = harness(state);
    settle(&mut h, Duration::from_secs(120));
    h
}

/// A longer "Longest length" keeps the cells of the lengths the map had
/// (each cell's documents depend on its depth and trial alone) and
/// computes only the new ones: it computed them all again, and a finished
/// map went blank (a click-through of the web page, 2026-12-04).
#[test]
fn a_longer_accuracy_map_keeps_the_cells_computed() {
    let mut h = small_map_computed();
    let (_, first) = grid_result(&h).expect("no accuracy map");
    assert_eq!(first.len(), 4, "L/2 and L, 2 depths");
    assert!(first.iter().all(|c| matches!(c, Cell::Done { .. })), "{first:?}");
    h.state_mut().state.passkey_lab.grid_factor = 2;
    h.step();
    let (running, cells) = grid_result(&h).expect("no accuracy map to 2L");
    assert!(running, "2L computed in one frame");
    assert_eq!(cells.len(), 6);
    assert_eq!(&cells[..4], &first[..], "the cells of L/2 and L, at once");
    settle(&mut h, Duration::from_secs(120));
    let (_, done) = grid_result(&h).unwrap();
    assert_eq!(&done[..4], &first[..]);
    assert!(done[4..].iter().all(|c| matches!(c, Cell::Done { .. })), "{done:?}");
}

/// While the next document computes (another length, key or depth), its
/// part keeps the height it had, so that the accuracy map under it stays
/// put: it went up by the part's height and back at each change.
#[test]
fn the_accuracy_map_stays_put_while_a_document_computes() {
    let mut h = harness(lab_state());
    settle(&mut h, Duration::from_secs(120));
    let at = |h: &Harness<'static, NopeApp>| h.get_by_label(text::GRID_HEADING).rect().top();
    let before = at(&h);
    h.state_mut().state.passkey_lab.length = 4096;
    h.run_steps(2);
    let answer = {
        let app = h.state();
        answer_key(&app.state, &Keys::of(&app.state, app.info()))
    };
    assert!(
        matches!(h.state().jobs.peek(&answer), Some(Entry::Running { .. })),
        "a document of 4096 tokens answered in two frames"
    );
    assert_eq!(at(&h), before, "the map moved while the document computes");
    settle(&mut h, Duration::from_secs(300));
    h.get_by_label_contains("4096 tokens");
}

/// A map stopped, then set to another 'Longest length' while stopped,
/// shows the cells of the lengths both have and offers to go on (it showed
/// nothing), where a finished map does not; Clear drops every cell, those
/// kept over the other lengths too (computed again, the map showed them at
/// once).
#[test]
fn a_stopped_map_over_other_lengths_shows_its_cells_and_clear_drops_them() {
    let mut h = small_map_computed();
    let finished = |h: &Harness<'static, NopeApp>| h.query_all_by_label_contains(" of 2 correct (").count();
    assert_eq!(finished(&h), 4, "L/2 and L, 2 depths");
    // A finished map is no stopped one: with the map off (as Start over
    // leaves it), another longest length shows no cells and no Resume.
    h.state_mut().state.passkey_lab.grid = false;
    h.state_mut().state.passkey_lab.grid_factor = 2;
    h.run_steps(2);
    assert_eq!(finished(&h), 0, "a finished map shown as stopped");
    assert!(h.query_by_label(text::GRID_GO_ON).is_none());
    // Stopped at once: up to 16L it runs long (its kept cells of L/2 and L
    // are there from the start).
    h.state_mut().state.passkey_lab.grid = true;
    h.state_mut().state.passkey_lab.grid_factor = 16;
    h.step();
    h.get_by_label(text::GRID_STOP).click();
    h.run_steps(2);
    h.get_by_label(text::GRID_GO_ON);
    h.state_mut().state.passkey_lab.grid_factor = 4;
    h.run_steps(2);
    assert!(finished(&h) >= 4, "the stopped map's cells over L/2 to 4L");
    h.get_by_label(text::GRID_GO_ON);
    h.get_by_label(text::GRID_CLEAR).click();
    h.run_steps(2);
    assert_eq!(finished(&h), 0, "cells left after Clear");
    h.get_by_label(text::GRID_START).click();
    h.run_steps(2);
    let running = {
        let app = h.state();
        let keys = Keys::of(&app.state, app.info());
        let series = grid_series(&app.state, &keys);
        matches!(app.jobs.peek(&series[0].2), Some(Entry::Running { .. }))
    };
    assert!(running, "4L computed in two frames");
    // (No cell yet: a running map without one has no result.)
    let cells = grid_result(&h).map(|(_, cells)| cells).unwrap_or_default();
    assert!(
        cells.iter().all(|c| matches!(c, Cell::Pending)),
        "cleared cells came back: {cells:?}"
    );
    settle(&mut h, Duration::from_secs(120));
}
