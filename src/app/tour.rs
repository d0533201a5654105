//! The classroom walkthrough: a guided sequence of steps, each setting the
//! views (a `ViewState` change, so each step has its own URL) and saying in
//! a few plain sentences what they show. Every step also states what its
//! computed result must show (its promise), checked on the live results:
//! by the tests, and by the web page's test hook.
//!
//! No egui here: the panel that shows a step is `views::tour`.

use super::compute::passkey::PasskeyAnswerResult;
use super::jobs::{JobKey, JobResult, Jobs, ScalesKey};
use super::models::ModelInfo;
use super::search_job::{Checkpoint, Phase, SearchKind, SearchReport, SearchSpec, TuneSettings};
use super::state::{FillerChoice, InputKind, MapMode, ModelChoice, PasskeySpec, Tab, ViewState};
use super::text;
use super::views::Keys;

/// One step of the walkthrough.
pub struct Step {
    pub title: &'static str,
    /// Two to four plain sentences.
    pub body: &'static str,
    /// Where to look on the screen.
    pub look: &'static str,
    /// The parts of the screen `look` names, outlined while the step is
    /// shown (Transformer Explainer's guided tour points the same way).
    pub spots: &'static [Spot],
    /// What this step sets.
    pub setting: Setting,
}

/// A part of the screen a step points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// The explorer's entropy plot.
    Entropy,
    /// The layer x head map.
    Map,
    /// The selected head's attention row and pattern.
    Attention,
    /// The pass-key lab's answers beside the key.
    Answers,
    /// The pass-key lab's attention row of the retrieving query.
    Row,
    /// The tuning page's Start search.
    Start,
    /// The tuning page's curve of the search's objective.
    Objective,
    /// The tuning page's map of the scales searched.
    Scales,
}

/// Whether the walkthrough's step points at `spot`; `None` while the
/// walkthrough is closed.
pub fn spot(state: &ViewState, spot: Spot) -> Option<bool> {
    let step = state.tour?.min(STEPS.len() - 1);
    Some(STEPS[step].spots.contains(&spot))
}

/// The part of the state a step sets; the rest (the engine, hidden panels)
/// stays the user's.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub model: ModelChoice,
    pub input: InputKind,
    /// In multiples of the training length L (a fraction for L/2).
    pub length_in_l: f32,
    pub scales: Scales,
    pub map_mode: MapMode,
    /// The head this step selects once its results are in.
    pub select: Select,
    /// Show the pass-key lab (the model's answer beside the key) instead of
    /// the explorer, and select the head that retrieves best once ranked.
    pub lab: bool,
    /// Show the tuning page, its search set to the classroom's defaults at
    /// this step's length (the user starts it: it takes seconds).
    pub tune: bool,
}

impl Setting {
    /// The page the step shows.
    pub fn tab(&self) -> Tab {
        if self.lab {
            Tab::Passkey
        } else if self.tune {
            Tab::Tune
        } else {
            Tab::Explore
        }
    }
}

/// Which head a step selects (the pass-key steps select the head that
/// retrieves best).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Select {
    /// The one selected before.
    Kept,
    /// The head whose curve closes in most on the ceiling past L
    /// (`EntropyProfile::most_flattened`), as the explorer does.
    MostFlattened,
    /// The head whose mean entropy rises most from L, the brightest in
    /// the map's rise mode.
    MostRisen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scales {
    Nope,
    Uniform(f32),
    /// The head scales searched at 4L that ship with the bundled model.
    Shipped,
}

/// The key and depth every pass-key step uses: one document, so the class
/// sees the same text change only in length and scales.
/// (Depth 0.3 keeps the key's mark off the L line at every length used.)
pub const TOUR_PASSKEY: PasskeySpec = PasskeySpec {
    key: 47_815,
    depth: 0.3,
};

/// The uniform scale the temperature step applies (the best uniform scale
/// at 2L on the paper's filler, docs/RESULTS.md).
pub const TOUR_UNIFORM: f32 = 1.2;

const fn setting(input: InputKind, length_in_l: f32) -> Setting {
    Setting {
        model: ModelChoice::Nope,
        input,
        length_in_l,
        scales: Scales::Nope,
        map_mode: MapMode::Entropy,
        select: Select::Kept,
        lab: false,
        tune: false,
    }
}

/// A pass-key step: the lab, its document at `length_in_l` x L.
const fn lab(length_in_l: f32, scales: Scales) -> Setting {
    Setting {
        scales,
        lab: true,
        ..setting(InputKind::Passkey, length_in_l)
    }
}

pub const STEPS: [Step; 9] = [
    Step {
        title: text::TOUR_1_TITLE,
        body: text::TOUR_1_BODY,
        look: text::TOUR_1_LOOK,
        spots: &[Spot::Entropy],
        setting: setting(InputKind::Validation, 1.0),
    },
    Step {
        title: text::TOUR_2_TITLE,
        body: text::TOUR_2_BODY,
        look: text::TOUR_2_LOOK,
        spots: &[Spot::Answers, Spot::Row],
        setting: lab(1.0, Scales::Nope),
    },
    Step {
        title: text::TOUR_3_TITLE,
        body: text::TOUR_3_BODY,
        look: text::TOUR_3_LOOK,
        spots: &[Spot::Entropy],
        setting: Setting {
            select: Select::MostFlattened,
            ..setting(InputKind::Validation, 4.0)
        },
    },
    Step {
        title: text::TOUR_4_TITLE,
        body: text::TOUR_4_BODY,
        look: text::TOUR_4_LOOK,
        spots: &[Spot::Answers, Spot::Row],
        setting: lab(4.0, Scales::Nope),
    },
    Step {
        title: text::TOUR_5_TITLE,
        body: text::TOUR_5_BODY,
        look: text::TOUR_5_LOOK,
        spots: &[Spot::Map, Spot::Entropy, Spot::Attention],
        setting: Setting {
            map_mode: MapMode::Rise,
            select: Select::MostRisen,
            ..setting(InputKind::Validation, 4.0)
        },
    },
    Step {
        title: text::TOUR_6_TITLE,
        body: text::TOUR_6_BODY,
        look: text::TOUR_6_LOOK,
        spots: &[Spot::Answers, Spot::Row],
        setting: lab(2.0, Scales::Uniform(TOUR_UNIFORM)),
    },
    Step {
        title: text::TOUR_7_TITLE,
        body: text::TOUR_7_BODY,
        look: text::TOUR_7_LOOK,
        spots: &[Spot::Answers],
        setting: lab(2.0, Scales::Shipped),
    },
    Step {
        title: text::TOUR_8_TITLE,
        body: text::TOUR_8_BODY,
        look: text::TOUR_8_LOOK,
        spots: &[Spot::Start, Spot::Objective, Spot::Scales],
        setting: Setting {
            tune: true,
            ..setting(InputKind::Validation, 2.0)
        },
    },
    Step {
        title: text::TOUR_9_TITLE,
        body: text::TOUR_9_BODY,
        look: text::TOUR_9_LOOK,
        spots: &[Spot::Entropy],
        setting: Setting {
            model: ModelChoice::Rope,
            ..setting(InputKind::Validation, 4.0)
        },
    },
];

/// Sets the state to step `index` (clamped), on a model of `info`'s shape.
pub fn apply(index: usize, state: &mut ViewState, info: ModelInfo) -> Result<(), String> {
    let index = index.min(STEPS.len() - 1);
    let s = STEPS[index].setting;
    // The steps show the bundled models, whatever model was in view (an
    // opened one's L would put their lengths elsewhere, even past the app's
    // longest).
    let info = ModelInfo::bundled(s.model).unwrap_or(info);
    state.tour = Some(index);
    state.tab = s.tab();
    state.model = s.model;
    state.input = s.input;
    state.passkey = TOUR_PASSKEY;
    state.length = (s.length_in_l * info.training_length as f32).round() as usize;
    let lab = &mut state.passkey_lab;
    lab.length = state.length;
    lab.key = TOUR_PASSKEY.key;
    lab.depth = TOUR_PASSKEY.depth;
    lab.filler = FillerChoice::Repeated;
    lab.grid = false;
    state.map_mode = s.map_mode;
    state.query = None;
    state.against_length = false;
    state.scales.uniform = 1.0;
    state.scales.rule = Default::default();
    state.scales.use_file = false;
    state.compare = None;
    if s.tune {
        // The classroom's search at this step's length; the presets' own
        // values stay the user's.
        state.tune = TuneSettings {
            length: state.length,
            fitted_a: state.tune.fitted_a,
            preset_uniform: state.tune.preset_uniform,
            ..TuneSettings::default()
        };
    }
    match s.scales {
        Scales::Nope => {}
        Scales::Uniform(u) => state.scales.uniform = u,
        Scales::Shipped => super::search_job::shipped(info)
            .map_err(|e| e.to_string())?
            .apply_to(&mut state.scales, info.heads),
    }
    Ok(())
}

/// Where a step's promise stands on the results computed so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Promise {
    /// Not computed yet.
    Pending,
    /// Waiting for the user (the search step's search to start, finish or
    /// resume): what to do.
    Waiting(String),
    /// Holds; the text says what was measured.
    Met(String),
    /// Computed, and does not hold.
    Broken(String),
}

fn entropy<'a>(jobs: &'a Jobs, key: &JobKey) -> Option<&'a super::jobs::EntropyProfile> {
    match jobs.peek(key)?.result()? {
        JobResult::Entropy(p) => Some(p),
        _ => None,
    }
}

/// Mean of `xs[range]`.
fn mean(xs: &[f32], from: usize, to: usize) -> f32 {
    let to = to.min(xs.len());
    let s = &xs[from.min(to)..to];
    s.iter().sum::<f32>() / s.len().max(1) as f32
}

/// Each head's rise of mean entropy from L to the current length, when
/// both are computed (layers x heads).
pub fn rise(jobs: &Jobs, keys: &Keys, scales: &ScalesKey) -> Option<Vec<f32>> {
    let here = entropy(jobs, &keys.entropy(scales))?;
    let base = entropy(jobs, &keys.entropy_at_l(scales))?;
    // A text shorter than L has nothing past it.
    (here.length > base.length).then(|| here.rise_from(base))
}

/// In the pass-key lab, the head whose retrieving query puts the most
/// attention on the key's tokens, with the scales in use (layer, head,
/// share), once ranked.
pub fn best_retrieving_head(jobs: &Jobs, state: &ViewState, keys: &Keys) -> Option<(usize, usize, f32)> {
    let key = JobKey::PasskeyHeads {
        at: super::views::passkey_lab::doc_input(state),
        scales: keys.scales.clone(),
    };
    match jobs.peek(&key)?.result()? {
        JobResult::PasskeyHeads(h) => h.best(),
        _ => None,
    }
}

/// The head whose entropy rises most (layer, head, rise).
pub fn most_distracted(rise: &[f32], heads: usize) -> Option<(usize, usize, f32)> {
    let (i, &r) = rise
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    Some((i / heads, i % heads, r))
}

/// Plain NoPE's head whose mean entropy rises most from L to the length in
/// view, once its profiles here and at L are computed (step 5's).
pub fn most_risen_head(jobs: &Jobs, keys: &Keys) -> Option<(usize, usize, f32)> {
    most_distracted(&rise(jobs, keys, &keys.ones)?, keys.info.heads)
}

/// Plain NoPE's head whose curve closes in most on the ceiling past L at
/// the length in view, once computed: the explorer selects it until the
/// user chooses a head, and so does step 3.
pub fn most_flattened_head(jobs: &Jobs, keys: &Keys) -> Option<(usize, usize, f32)> {
    entropy(jobs, &keys.entropy(&keys.ones))?.most_flattened(keys.info.training_length)
}

/// The pass-key lab's decoded answer for `scales`, when computed.
fn answer(jobs: &Jobs, state: &ViewState, scales: &ScalesKey) -> Option<PasskeyAnswerResult> {
    let key = JobKey::PasskeyAnswer {
        at: super::views::passkey_lab::doc_input(state),
        scales: scales.clone(),
    };
    match jobs.peek(&key)?.result()? {
        JobResult::PasskeyAnswer(a) => Some(a.clone()),
        _ => None,
    }
}

fn said(a: &PasskeyAnswerResult) -> String {
    format!(
        "the key is {}, the model answers \"{}\" at {} tokens",
        a.key,
        a.answer.trim(),
        a.length
    )
}

/// The index of the step that runs a search live.
pub const SEARCH_STEP: usize = 7;

/// The tuning page's latest search, as the search step sees it (the page
/// fills it in; no egui here).
#[derive(Debug, Clone, Copy)]
pub struct SearchSeen<'a> {
    pub spec: &'a SearchSpec,
    pub report: Option<&'a SearchReport>,
    pub phase: &'a Phase,
}

/// How far the largest scale must rise above its start for the search
/// step to count it as moved.
const MOVED: f32 = 0.01;

/// What the search step promises: the search set on the Tune page (per
/// head, at least 2 steps), once finished, ends with a lower objective
/// than it began with, and its largest scale rose from where it started.
/// Until then it says what to do: start it, wait for it, resume it. A
/// search of other settings (one from before the step opened, or another
/// model's) is not the step's.
fn search_promise(seen: Option<SearchSeen>, state: &ViewState, info: ModelInfo) -> Promise {
    let wait = |m: &str| Promise::Waiting(m.to_string());
    let wanted = state.tune.spec(state.model, info, &state.pasted_text);
    if wanted.kind != SearchKind::Heads {
        return wait(text::TOUR_SEARCH_PER_HEAD);
    }
    if wanted.steps < 2 {
        return wait(text::TOUR_SEARCH_TWO_STEPS);
    }
    let Some(seen) = seen.filter(|s| *s.spec == wanted) else {
        let other_running = seen.is_some_and(|s| *s.phase == Phase::Running);
        return wait(if other_running {
            text::TOUR_SEARCH_OTHER
        } else {
            text::TOUR_SEARCH_PENDING
        });
    };
    let done = seen.report.map_or(0, |r| r.done);
    match seen.phase {
        Phase::Running => return Promise::Waiting(text::tour_search_running(done, wanted.steps)),
        Phase::Paused => return wait(text::TOUR_SEARCH_PAUSED),
        Phase::Failed(_) => return wait(text::TOUR_SEARCH_FAILED),
        Phase::Finished => {}
    }
    let Some(r) = seen.report else {
        return wait(text::TOUR_SEARCH_PENDING);
    };
    let (Checkpoint::Heads(h), Some((i, &top))) = (
        r.checkpoint.as_ref(),
        r.scales.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)),
    ) else {
        return wait(text::TOUR_SEARCH_PENDING);
    };
    let n = h.losses.len();
    if n < 2 {
        return wait(text::TOUR_SEARCH_TWO_STEPS);
    }
    // The mean over a few steps at each end (n / 4, from 1 to 5): each
    // step draws new documents.
    let k = (n / 4).clamp(1, 5);
    let first = h.losses[..k].iter().sum::<f64>() / k as f64;
    let last = h.losses[n - k..].iter().sum::<f64>() / k as f64;
    let msg = text::tour_search_measured(n, k, first, last, top, i / r.spec.heads, i % r.spec.heads);
    if last < first && top > r.spec.init() + MOVED {
        Promise::Met(msg)
    } else {
        Promise::Broken(msg)
    }
}

/// The results step `index`'s promise and its head selection read. The
/// app asks for them while the step is open, whatever panels are shown:
/// a panel hidden for embedding would otherwise never ask, and the step
/// would wait for ever (`#step=5&hide=map`).
pub fn wanted(index: usize, state: &ViewState, keys: &Keys) -> Vec<JobKey> {
    let index = index.min(STEPS.len() - 1);
    let setting = STEPS[index].setting;
    // Not while the user looks at another page: its own work comes first.
    if state.tab != setting.tab() {
        return Vec::new();
    }
    let mut v = Vec::new();
    if setting.lab {
        let at = super::views::passkey_lab::doc_input(state);
        let answer = |scales: &ScalesKey| JobKey::PasskeyAnswer {
            at: at.clone(),
            scales: scales.clone(),
        };
        v.push(JobKey::PasskeyHeads {
            at: at.clone(),
            scales: keys.scales.clone(),
        });
        v.push(answer(&keys.ones));
        if !keys.plain {
            v.push(answer(&keys.scales));
        }
    } else if !setting.tune {
        v.push(keys.entropy(&keys.ones));
        // (Step 5's promise reads the rise too; it is the step that
        // selects by it.)
        if setting.select == Select::MostRisen {
            v.push(keys.entropy_at_l(&keys.ones));
        }
    }
    v
}

/// What step `index` promises, checked on the results in `jobs` for the
/// state `keys` was built from, and on the tuning page's latest search
/// (`search`).
pub fn promise(index: usize, state: &ViewState, jobs: &Jobs, keys: &Keys, search: Option<SearchSeen>) -> Promise {
    let l = keys.info.training_length;
    let check = |ok: bool, msg: String| if ok { Promise::Met(msg) } else { Promise::Broken(msg) };
    match index {
        // Retrieval works at L and fails past it (NoPE).
        1 | 3 => {
            return match answer(jobs, state, &keys.ones) {
                None => Promise::Pending,
                Some(a) => check(a.correct == (index == 1), said(&a)),
            };
        }
        // The scales bring it back where NoPE fails.
        5 | 6 => {
            return match (answer(jobs, state, &keys.ones), answer(jobs, state, &keys.scales)) {
                (Some(nope), Some(scaled)) => check(
                    !keys.plain && !nope.correct && scaled.correct,
                    format!("without scales {}; with them \"{}\"", said(&nope), scaled.answer.trim()),
                ),
                _ => Promise::Pending,
            };
        }
        SEARCH_STEP => return search_promise(search, state, keys.info),
        _ => {}
    }
    let Some(p) = entropy(jobs, &keys.entropy(&keys.ones)) else {
        return Promise::Pending;
    };
    let m = p.mean_over_heads();
    match index {
        // Attention entropy stays under the uniform ceiling everywhere.
        0 => {
            let above = m.iter().enumerate().map(|(i, &e)| e - ((i + 1) as f32).log2());
            let worst = above.clone().fold(f32::NEG_INFINITY, f32::max);
            let below = -above.sum::<f32>() / m.len().max(1) as f32;
            check(
                p.length == l && worst <= 1e-3,
                text::tour_1_measured(p.length, below, worst),
            )
        }
        // Past L attention comes nearer uniform: the mean curve's gap
        // under the ceiling log2(i + 1) is smaller over the last L/2
        // positions than over the L/2 before L (the ceiling itself rises
        // with the position, so the entropy alone would say little).
        2 | 8 => {
            let gap: Vec<f32> = m
                .iter()
                .enumerate()
                .map(|(i, &e)| ((i + 1) as f32).log2() - e)
                .collect();
            let before = mean(&gap, l / 2, l);
            // (the user may have shortened the step's length below L)
            let end = p.length.saturating_sub(l / 2);
            let after = mean(&gap, end, p.length);
            check(
                p.length > l && after < before,
                text::tour_gap_measured(l, before, end, p.length, after),
            )
        }
        // The selected head is the most distracted one.
        4 => match rise(jobs, keys, &keys.ones) {
            None => Promise::Pending,
            Some(r) => {
                let Some((layer, head, most)) = most_distracted(&r, keys.info.heads) else {
                    return Promise::Pending;
                };
                check(
                    (state.layer, state.head) == (layer, head) && most > 0.0,
                    format!("layer {layer}, head {head} rises most: {most:+.2} bits"),
                )
            }
        },
        _ => Promise::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's check reads windows of the profile that the user may have
    /// moved out of range (a step at 4L halved four times is shorter than
    /// L): empty, never a panic.
    #[test]
    fn windows_past_the_profile_are_empty() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mean(&xs, 1, 3), 2.5);
        assert_eq!(mean(&xs, 3, 1), 0.0);
        assert_eq!(mean(&xs, 2, 99), 3.5);
        assert_eq!(mean(&xs, 64usize.saturating_sub(128), 4), 2.5);
    }

    /// The search step's promise: only the search its settings ask for,
    /// once finished, is measured; before that it says what to do.
    #[test]
    fn the_search_step_measures_its_own_finished_search() {
        use crate::lab::search::{HeadSearchConfig, HeadSearchState};
        use std::sync::Arc;
        assert!(STEPS[SEARCH_STEP].setting.tune);
        assert!(STEPS.iter().filter(|s| s.setting.tune).count() == 1);
        let info = ModelInfo::bundled(ModelChoice::Nope).unwrap();
        let mut state = ViewState::default();
        apply(SEARCH_STEP, &mut state, info).unwrap();
        assert_eq!(state.tab, Tab::Tune);
        assert_eq!(state.tune.length, 2 * info.training_length);
        let spec = state.tune.spec(state.model, info, &state.pasted_text);
        let hf: crate::model::HfConfig =
            serde_json::from_slice(super::super::models::bundled(ModelChoice::Nope).unwrap().config).unwrap();
        let config = hf.validate().unwrap();
        let report = |losses: &[f64], top: f32, spec: &SearchSpec| {
            let mut h = HeadSearchState::start(&config, &HeadSearchConfig::default()).unwrap();
            h.losses = losses.to_vec();
            h.step = losses.len();
            h.scales.values[5] = top;
            SearchReport {
                spec: spec.clone(),
                checkpoint: Arc::new(Checkpoint::Heads(h.clone())),
                scales: h.scales.values.clone(),
                done: losses.len(),
                planned: spec.steps,
                finished: true,
                fingerprint: String::new(),
            }
        };
        let falling: Vec<f64> = (0..40).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let rising: Vec<f64> = falling.iter().rev().copied().collect();
        let seen_in = |state: &ViewState, r: &SearchReport, phase: &'static Phase| {
            search_promise(
                Some(SearchSeen {
                    spec: &r.spec,
                    report: Some(r),
                    phase,
                }),
                state,
                info,
            )
        };
        let seen = |r: &SearchReport, phase: &'static Phase| seen_in(&state, r, phase);
        let good = report(&falling, 1.8, &spec);
        match seen(&good, &Phase::Finished) {
            Promise::Met(m) => assert!(m.contains("layer 1, head 1") && m.contains("s = 1.80"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            seen(&report(&rising, 1.8, &spec), &Phase::Finished),
            Promise::Broken(_)
        ));
        // No scale rose: the search did nothing.
        assert!(matches!(
            seen(&report(&falling, 1.0, &spec), &Phase::Finished),
            Promise::Broken(_)
        ));
        let waiting = |p: Promise| match p {
            Promise::Waiting(m) => m,
            other => panic!("{other:?}"),
        };
        assert!(waiting(seen(&good, &Phase::Running)).contains("40 of 40 search steps"));
        assert_eq!(waiting(seen(&good, &Phase::Paused)), text::TOUR_SEARCH_PAUSED);
        assert_eq!(waiting(search_promise(None, &state, info)), text::TOUR_SEARCH_PENDING);
        // A search of other settings (from before the step opened) is not
        // the step's, finished or running.
        let mut other = state.tune.clone();
        other.steps = 10;
        let other = report(&falling, 1.8, &other.spec(state.model, info, ""));
        assert_eq!(waiting(seen(&other, &Phase::Finished)), text::TOUR_SEARCH_PENDING);
        assert_eq!(waiting(seen(&other, &Phase::Running)), text::TOUR_SEARCH_OTHER);
        // Settings the step cannot measure say so.
        let mut one = state.clone();
        one.tune.steps = 1;
        assert_eq!(
            waiting(seen_in(&one, &good, &Phase::Finished)),
            text::TOUR_SEARCH_TWO_STEPS
        );
        let mut uniform = state.clone();
        uniform.tune.kind = SearchKind::Uniform;
        assert_eq!(
            waiting(seen_in(&uniform, &good, &Phase::Finished)),
            text::TOUR_SEARCH_PER_HEAD
        );
    }

    /// Every step outlines what its "Look at" line names, and only that;
    /// with the walkthrough closed nothing is outlined.
    #[test]
    fn each_step_points_at_what_it_names() {
        let names = [
            (Spot::Entropy, "curve"),
            (Spot::Map, "layer × head map"),
            (Spot::Attention, "attention pattern"),
            (Spot::Answers, "answer"),
            (Spot::Row, "attention row"),
            (Spot::Start, "Start search"),
            (Spot::Objective, "objective"),
            (Spot::Scales, "map of scales"),
        ];
        for (i, step) in STEPS.iter().enumerate() {
            assert!(!step.spots.is_empty(), "step {}", i + 1);
            for (spot, word) in names {
                assert_eq!(
                    step.spots.contains(&spot),
                    step.look.contains(word),
                    "step {}: {spot:?} and \"{word}\" in {:?}",
                    i + 1,
                    step.look
                );
            }
            let state = ViewState {
                tour: Some(i),
                ..Default::default()
            };
            for (spot_here, _) in names {
                assert_eq!(spot(&state, spot_here), Some(step.spots.contains(&spot_here)));
            }
        }
        assert_eq!(spot(&ViewState::default(), Spot::Entropy), None);
    }
}
