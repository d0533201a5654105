//! `ViewState`: everything the user asked for (model, text, length, head,
//! scales, engine), the one serializable thing of the app. Persisted
//! natively through eframe's storage, written to the URL on the web; every
//! view is rebuilt from it. Holds no handles and nothing computed.

use eframe::egui;
use serde::{Deserialize, Serialize};

use super::search_job::{ScalesSetting, TuneSettings};
use super::tour;
use crate::lab::backend::Backend;
use crate::model::head_scales::{HeadScales, ScaleRule, SearchedElsewhere, MAX_HEAD_SCALE};

/// Shortest and longest input the length control offers.
pub const MIN_LENGTH: usize = 16;
pub const MAX_LENGTH: usize = 16384;
/// Heads pinned beside the selected one, at most.
pub const MAX_PINNED: usize = 3;
/// Side of the pooled attention map, at most.
pub const POOLED_CELLS: usize = 512;

/// The panels a URL can hide (`"hide": ["controls", ...]` in the state, or
/// `&hide=input,scales` beside it): "controls" hides input, scales and map
/// at once.
pub const PANEL_PAGES: &str = "pages";
pub const PANEL_TOUR: &str = "tour";
pub const PANEL_STATUS: &str = "status";
pub const PANEL_CONTROLS: &str = "controls";
pub const PANEL_INPUT: &str = "input";
pub const PANEL_SCALES: &str = "scales";
pub const PANEL_MAP: &str = "map";
pub const PANEL_ENTROPY: &str = "entropy";
pub const PANEL_ATTENTION: &str = "attention";
pub const PANEL_AGAINST: &str = "against";
/// The pass-key lab's one document, and its accuracy map.
pub const PANEL_DOCUMENT: &str = "document";
pub const PANEL_ACCURACY: &str = "accuracy";
/// The tuning page's search (with its result), presets, and comparison
/// (with the scales against entropy).
pub const PANEL_SEARCH: &str = "search";
pub const PANEL_PRESETS: &str = "presets";
pub const PANEL_COMPARE: &str = "compare";
pub const PANELS: [&str; 15] = [
    PANEL_PAGES,
    PANEL_TOUR,
    PANEL_STATUS,
    PANEL_CONTROLS,
    PANEL_INPUT,
    PANEL_SCALES,
    PANEL_MAP,
    PANEL_ENTROPY,
    PANEL_ATTENTION,
    PANEL_AGAINST,
    PANEL_DOCUMENT,
    PANEL_ACCURACY,
    PANEL_SEARCH,
    PANEL_PRESETS,
    PANEL_COMPARE,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    #[default]
    Nope,
    Rope,
    /// A Hugging Face folder the user opened (not kept in the URL: a link
    /// with it opens the bundled NoPE model).
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    #[default]
    Validation,
    Passkey,
    Pasted,
}

/// The app's pages: the explorer (every view of one input), the tuning
/// panel (the temperature search) and the pass-key lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tab {
    #[default]
    Explore,
    Tune,
    Passkey,
}

/// Light or dark, or as the system says (a projector shows the light
/// theme better; a course page may want either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    #[default]
    System,
    Light,
    Dark,
}

impl Theme {
    pub fn preference(self) -> egui::ThemePreference {
        match self {
            Theme::System => egui::ThemePreference::System,
            Theme::Light => egui::ThemePreference::Light,
            Theme::Dark => egui::ThemePreference::Dark,
        }
    }

    /// `theme=light` (or `dark`, `system`) in a URL.
    fn parse(word: &str) -> Result<Theme, String> {
        match word {
            "system" => Ok(Theme::System),
            "light" => Ok(Theme::Light),
            "dark" => Ok(Theme::Dark),
            other => Err(format!("theme={other} in the URL: expected light, dark or system")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapMode {
    /// Each head's mean entropy, coloured up to this length's ceiling.
    #[default]
    Entropy,
    /// The same, on one colour scale for every length (up to the ceiling
    /// at `MAX_LENGTH`), so a longer input's map is brighter where the
    /// heads' entropy rose.
    Shared,
    /// The rise of each head's mean entropy from L to this length.
    Rise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PasskeySpec {
    pub key: u32,
    /// 0 = right after the instruction, 1 = right before the question.
    pub depth: f32,
}

impl Default for PasskeySpec {
    fn default() -> Self {
        PasskeySpec {
            key: 47_815,
            depth: 0.5,
        }
    }
}

/// Per-head scales read from a file (L x H, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct LoadedScales {
    pub name: String,
    pub layers: usize,
    pub heads: usize,
    pub values: Vec<f32>,
    /// The file's per-position rule (constant when it has none).
    pub rule: ScaleRule,
    /// The model folder the scales were searched on, where known (a
    /// file's provenance, the app's own search on a bundled model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searched_on: Option<String>,
    /// The searched weights' `Params::fingerprint`, where the file records
    /// it (searches since 2026-12-03, the app's and the command line's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Set when a file's search was stopped before its end: the steps (or
    /// points, for a uniform search) it had run then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_after: Option<u64>,
    /// Whether the file's search was a uniform one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uniform_search: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalesState {
    pub uniform: f32,
    pub file: Option<LoadedScales>,
    /// Use `file` (when there is one) instead of the uniform scale.
    pub use_file: bool,
    /// The rule the uniform scale is used under (a file carries its own).
    pub rule: ScaleRule,
}

impl LoadedScales {
    /// The scales shipped with the model (the walkthrough, the presets and
    /// the pass-key lab put them in use), not a file of the user's own.
    pub fn is_shipped(&self) -> bool {
        [super::text::PRESET_SHIPPED, super::text::PRESET_SHIPPED_8L].contains(&self.name.as_str())
    }

    /// Whether the scales were searched on another model than the one in
    /// view (`folder`, and its weights' `fingerprint`), by the rule the
    /// command line's `eval` uses (`head_scales::searched_elsewhere`),
    /// folders compared by name (a file written on another machine names
    /// the same folder by another path). Unknown (`None`) where neither
    /// tells, as for an older search on a model opened in the app.
    pub fn searched_elsewhere<'b>(
        &self,
        folder: Option<&str>,
        fingerprint: impl FnOnce() -> Option<&'b str>,
    ) -> Option<SearchedElsewhere<'_>> {
        use crate::model::head_scales::{folder_name, searched_elsewhere};
        // A model opened in the app names no folder.
        let other_folder = |theirs: &str| {
            theirs != super::text::OPENED_MODEL
                && matches!((folder_name(theirs), folder.and_then(folder_name)), (Some(t), Some(o)) if t != o)
        };
        searched_elsewhere(
            self.searched_on.as_deref(),
            self.fingerprint.as_deref(),
            fingerprint,
            other_folder,
        )
    }
}

impl Default for ScalesState {
    fn default() -> Self {
        ScalesState {
            uniform: 1.0,
            file: None,
            use_file: false,
            rule: ScaleRule::Constant,
        }
    }
}

impl ScalesState {
    /// The scales in use for a model of `layers` x `heads`, as values.
    pub fn values(&self, layers: usize, heads: usize) -> Vec<f32> {
        match (&self.file, self.use_file) {
            (Some(f), true) => f.values.clone(),
            _ => vec![self.uniform; layers * heads],
        }
    }

    /// The per-position rule of the scales in use.
    pub fn rule(&self) -> ScaleRule {
        match (&self.file, self.use_file) {
            (Some(f), true) => f.rule,
            _ => self.rule,
        }
    }

    /// True when the scales in use are plain NoPE (every scale 1, no rule).
    pub fn is_plain(&self) -> bool {
        let ones = match (&self.file, self.use_file) {
            (Some(f), true) => f.values.iter().all(|&v| v == 1.0),
            _ => self.uniform == 1.0,
        };
        ones && self.rule().is_constant()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    pub model: ModelChoice,
    pub input: InputKind,
    pub pasted_text: String,
    pub passkey: PasskeySpec,
    pub length: usize,
    pub layer: usize,
    pub head: usize,
    /// The head was chosen: by the user (a click, a typed number), a link
    /// (one naming `layer` or `head`, and every shared one) or the
    /// walkthrough. Until then each page selects a telling one itself: the
    /// explorer the head whose curve closes in most on the ceiling past L,
    /// the pass-key lab the head that retrieves best (layer 0, head 0 of
    /// the bundled model lies along the ceiling, which showed a new user
    /// nothing).
    pub head_chosen: bool,
    /// More heads drawn beside the selected one in the entropy view
    /// ([layer, head]; shift-click in the map), at most `MAX_PINNED`.
    pub pinned: Vec<[usize; 2]>,
    /// The query whose attention row is shown; `None`: the last token (in a
    /// pass-key document, the query that predicts the key's first token).
    pub query: Option<usize>,
    pub map_mode: MapMode,
    pub scales: ScalesState,
    pub backend: Backend,
    /// The against-length sweep runs only when asked for.
    pub against_length: bool,
    pub tab: Tab,
    /// The classroom walkthrough's step (0-based), when it is open.
    pub tour: Option<usize>,
    /// Panels hidden for embedding in a course page (`views::Panel` names).
    pub hide: Vec<String>,
    /// The pass-key lab's document and accuracy map.
    pub passkey_lab: PasskeyLabState,
    /// The tuning panel's search settings.
    pub tune: TuneSettings,
    /// Setting B: what the explorer draws the current scales against
    /// (`None`: plain NoPE).
    pub compare: Option<ScalesSetting>,
    /// Light, dark or the system's.
    pub theme: Theme,
}

/// Field by field, the user's text last and in the web page 16 bytes at a
/// time (`jobs::same_text`): the page compares its whole state each frame
/// to know when to publish it, and a derived `==` went through wasm's
/// byte-wise memcmp for a pasted book. Destructured, so that a new field
/// cannot be left out.
impl PartialEq for ViewState {
    fn eq(&self, o: &Self) -> bool {
        let ViewState {
            model,
            input,
            pasted_text,
            passkey,
            length,
            layer,
            head,
            head_chosen,
            pinned,
            query,
            map_mode,
            scales,
            backend,
            against_length,
            tab,
            tour,
            hide,
            passkey_lab,
            tune,
            compare,
            theme,
        } = self;
        *model == o.model
            && *input == o.input
            && *passkey == o.passkey
            && *length == o.length
            && *layer == o.layer
            && *head == o.head
            && *head_chosen == o.head_chosen
            && *pinned == o.pinned
            && *query == o.query
            && *map_mode == o.map_mode
            && *scales == o.scales
            && *backend == o.backend
            && *against_length == o.against_length
            && *tab == o.tab
            && *tour == o.tour
            && *hide == o.hide
            && *passkey_lab == o.passkey_lab
            && *tune == o.tune
            && *compare == o.compare
            && *theme == o.theme
            && crate::app::jobs::same_text(pasted_text, &o.pasted_text)
    }
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState {
            model: ModelChoice::Nope,
            input: InputKind::Validation,
            pasted_text: String::new(),
            passkey: PasskeySpec::default(),
            length: 1024,
            layer: 0,
            head: 0,
            head_chosen: false,
            pinned: Vec::new(),
            query: None,
            map_mode: MapMode::Entropy,
            scales: ScalesState::default(),
            backend: Backend::Auto,
            against_length: false,
            tab: Tab::Explore,
            tour: None,
            hide: Vec::new(),
            passkey_lab: PasskeyLabState::default(),
            tune: TuneSettings::default(),
            compare: None,
            theme: Theme::System,
        }
    }
}

/// The state's fields that are f64 (a rule's `a`, the tuning page's): left
/// as they are by `short_floats`.
const F64_FIELDS: [&str; 2] = ["rule", "fitted_a"];

/// Numbers that are f32 values written with an f32's shortest digits:
/// through `serde_json::Value` an f32 becomes an f64 and a link read
/// `"uniform":1.2999999523162842` for 1.3. Read back into the f32 field
/// it is the same number. The f64 fields (`F64_FIELDS`) are skipped: one
/// holding exactly an f32 value would come back as another number.
fn short_floats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let f = x as f32;
            if f64::from(f) == x && f.is_finite() {
                if let Some(short) = format!("{f}")
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *n = short;
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(short_floats),
        serde_json::Value::Object(fields) => fields
            .iter_mut()
            .filter(|(name, _)| !F64_FIELDS.contains(&name.as_str()))
            .for_each(|(_, v)| short_floats(v)),
        _ => {}
    }
}

/// The groups of `ViewState` a link writes field by field
/// (`changed_json`): structs with `#[serde(default)]`, so a field left out
/// reads as its default. A tagged enum's fields are never split (its tag
/// would be lost), so the groups stop one level down.
const LINK_GROUPS: [&str; 4] = ["passkey", "passkey_lab", "tune", "scales"];

impl ViewState {
    /// The page as it first opens ("Start over"), keeping what is not the
    /// view: the engine chosen, the theme, the panels hidden for
    /// embedding, and what the user brought (their text, a scales file
    /// loaded or searched, both unused). The scales shipped with the model
    /// are the page's own, not the user's: they go.
    pub fn started_over(&self) -> ViewState {
        ViewState {
            backend: self.backend,
            theme: self.theme,
            hide: self.hide.clone(),
            pasted_text: self.pasted_text.clone(),
            scales: ScalesState {
                file: self.scales.file.clone().filter(|f| !f.is_shipped()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The state kept from the last run, as the next run opens it: without
    /// the panels an embed's link hid. Only a link hides panels, and the
    /// page opened plainly (on the same site as an embed, which keeps its
    /// state in the same storage) had lost its page bar, so Share and
    /// Start over were out of reach.
    pub fn restored(mut self) -> ViewState {
        self.hide.clear();
        self
    }

    /// Brings every field into range (after a URL, a file or a test set
    /// it), and says what it changed, one line per field (named as a
    /// link's JSON names it), for the note a link's reader sees.
    pub fn sanitize(&mut self, layers: usize, heads: usize) -> Vec<String> {
        let mut notes = Vec::new();
        let n = &mut notes;
        clamp_noted(n, "length", &mut self.length, MIN_LENGTH, MAX_LENGTH);
        let (last_layer, last_head) = (layers.saturating_sub(1), heads.saturating_sub(1));
        clamp_noted(n, "layer", &mut self.layer, 0, last_layer);
        clamp_noted(n, "head", &mut self.head, 0, last_head);
        let mut seen = std::collections::HashSet::new();
        let pinned = self.pinned.len();
        self.pinned
            .retain(|&[l, h]| l < layers && h < heads && seen.insert([l, h]));
        self.pinned.truncate(MAX_PINNED);
        if self.pinned.len() < pinned {
            n.push(format!(
                "pinned: {} of {pinned} heads left out (at most {MAX_PINNED}, each once, of this model's {layers} x {heads})",
                pinned - self.pinned.len()
            ));
        }
        if let Some(step) = self.tour.filter(|&s| s >= tour::STEPS.len()) {
            let last = tour::STEPS.len() - 1;
            n.push(format!(
                "tour {step} (step {}): the walkthrough has {} steps; the last opens",
                step + 1,
                last + 1
            ));
            self.tour = Some(last);
        }
        finite_noted(n, "passkey.depth", &mut self.passkey.depth, 0.5);
        clamp_noted(n, "passkey.depth", &mut self.passkey.depth, 0.0, 1.0);
        clamp_noted(n, "passkey.key", &mut self.passkey.key, 10_000, 99_999);
        self.passkey_lab.sanitize(n);
        let uniform = self.scales.uniform;
        if !(uniform.is_finite() && uniform > 0.0 && uniform <= MAX_HEAD_SCALE) {
            n.push(format!(
                "scales.uniform {uniform} is out of range (above 0, at most {MAX_HEAD_SCALE}): 1 used"
            ));
            self.scales.uniform = 1.0;
        }
        let fits = |values: &[f32], rule: ScaleRule| fits_shape(layers, heads, values, rule);
        if !fits(&vec![1.0; layers * heads], self.scales.rule) {
            n.push(format!(
                "scales.rule {} cannot be used (a value out of range): the constant rule used",
                serde_json::to_string(&self.scales.rule).unwrap_or_default()
            ));
            self.scales.rule = ScaleRule::Constant;
        }
        // Scales loaded for another shape are kept, unused, for when that
        // model is back (the scales panel says so); malformed ones go.
        if let Some(f) = &self.scales.file {
            let valid_somewhere = fits_shape(f.layers, f.heads, &f.values, f.rule);
            if !valid_somewhere {
                n.push(format!(
                    "scales.file {:?} is not valid scales (its values, shape or rule): left out",
                    f.name
                ));
                self.scales.file = None;
                self.scales.use_file = false;
            } else if (f.layers, f.heads) != (layers, heads) {
                self.scales.use_file = false;
            }
        }
        if let Some(b) = &self.compare {
            if !fits(&b.values, b.rule) {
                n.push(format!(
                    "compare {:?} is not valid scales for this {layers} x {heads} model: left out",
                    b.name
                ));
                self.compare = None;
            }
        }
        self.tune.sanitize(n);
        notes
    }

    /// Selects a head the user chose (no page replaces it with its own).
    pub fn choose_head(&mut self, layer: usize, head: usize) {
        (self.layer, self.head, self.head_chosen) = (layer, head, true);
    }

    /// Whether a page may select a head it found telling: not once one
    /// was chosen, nor while the walkthrough is open (its steps select
    /// their own).
    pub fn takes_suggestions(&self) -> bool {
        !self.head_chosen && self.tour.is_none()
    }

    /// Selects a head a page found telling, if it `takes_suggestions`.
    pub fn suggest_head(&mut self, layer: usize, head: usize) {
        if self.takes_suggestions() {
            (self.layer, self.head) = (layer, head);
        }
    }

    /// Pins a head beside the selected one, or unpins it; past
    /// `MAX_PINNED` the first pinned makes room (a pin that did nothing
    /// looked broken).
    pub fn toggle_pinned(&mut self, layer: usize, head: usize) {
        if let Some(i) = self.pinned.iter().position(|&p| p == [layer, head]) {
            self.pinned.remove(i);
        } else {
            if self.pinned.len() >= MAX_PINNED {
                self.pinned.remove(0);
            }
            self.pinned.push([layer, head]);
        }
    }

    /// True when `panel` is hidden (the three control panels also through
    /// "controls").
    pub fn hidden(&self, panel: &str) -> bool {
        let controls = [PANEL_INPUT, PANEL_SCALES, PANEL_MAP].contains(&panel);
        self.hide
            .iter()
            .any(|h| h == panel || (controls && h == PANEL_CONTROLS))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A state from JSON; unknown or missing fields take their defaults
    /// (a state saved before `head_chosen` existed takes no head as
    /// chosen).
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// A state from a link's JSON (a URL, or the page's API): one that
    /// names `layer` or `head` without `head_chosen`, written by hand,
    /// chose that head, even layer 0, head 0.
    pub fn from_link_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let names_head = ["layer", "head"].iter().any(|k| value.get(k).is_some());
        let says = value.get("head_chosen").is_some();
        let mut s: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        s.head_chosen |= names_head && !says;
        Ok(s)
    }

    /// The state as shared in a link or an embedded page: the explorer's
    /// suggested head (`suggested`) fixed as a chosen one is (on the
    /// reader's engine near-equal heads may rank the other way round);
    /// before any suggestion, none. A scales file loaded but not in use is
    /// left out: it computes nothing in the view, and it made the link
    /// long (the reader's scales panel then offers no file to switch on).
    pub fn shared(&self, suggested: Option<(usize, usize)>) -> Self {
        let mut scales = self.scales.clone();
        if !scales.use_file {
            scales.file = None;
        }
        ViewState {
            head_chosen: self.head_chosen || suggested == Some((self.layer, self.head)),
            scales,
            ..self.clone()
        }
    }

    /// The state as a URL fragment (`#state=<percent-encoded JSON>`), with
    /// the fields that differ from the default state only (a missing field
    /// reads as its default): a link to the default view at 300 tokens is
    /// `#state=%7B%22length%22%3A300%7D`, not two thousand characters.
    pub fn to_fragment(&self) -> String {
        format!("#state={}", percent_encode(&self.changed_json()))
    }

    /// The fields that differ from `ViewState::default()`, as JSON.
    fn changed_json(&self) -> String {
        let (Ok(serde_json::Value::Object(mut fields)), Ok(serde_json::Value::Object(default))) =
            (serde_json::to_value(self), serde_json::to_value(Self::default()))
        else {
            return self.to_json();
        };
        fields.retain(|name, value| default.get(name) != Some(value) || name == "head_chosen");
        // Inside the settings' groups too (each a struct read with its
        // defaults, its fields plain values or kept whole): a link that
        // changes the search's length carries that, not all ten settings.
        for group in LINK_GROUPS {
            if let (Some(serde_json::Value::Object(inner)), Some(serde_json::Value::Object(d))) =
                (fields.get_mut(group), default.get(group))
            {
                inner.retain(|name, value| d.get(name) != Some(value));
            }
        }
        // Beside a head it names, whether it was chosen (a link naming a
        // head without saying chose it, `from_link_json`).
        if !fields.contains_key("layer") && !fields.contains_key("head") && !self.head_chosen {
            fields.remove("head_chosen");
        }
        let mut changed = serde_json::Value::Object(fields);
        short_floats(&mut changed);
        changed.to_string()
    }

    /// Reads `state=` from a URL fragment or query (with or without `#`/`?`).
    /// Beside it, `hide=a,b` hides panels, `step=N` opens the
    /// walkthrough at step N (1-based) and `theme=light` (or `dark`,
    /// `system`) sets the theme, so a course page can link
    /// `#step=3&hide=pages,status&theme=light` without writing JSON.
    pub fn from_fragment(fragment: &str) -> Option<Result<Self, String>> {
        let (s, problems) = Self::read_link(fragment)?;
        Some(if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems.join("; "))
        })
    }

    /// A link's view, read as far as it can be: each part that cannot be
    /// used (JSON cut short, a misspelt theme, an unknown panel, a step 0)
    /// is left as it is and said in the list, so that an author sees what
    /// was wrong while the rest of the link still applies. `None` when the
    /// fragment is not one of the app's links.
    pub fn read_link(fragment: &str) -> Option<(Self, Vec<String>)> {
        Self::read_link_onto(fragment, Self::default)
    }

    /// `read_link`, where a `state=` that cannot be read leaves `base()`
    /// (the view kept from the last visit, or the one on screen) rather
    /// than the default view: a link cut short by a chat app must not
    /// throw away the user's own text at the next save. `base` is called
    /// only then.
    pub fn read_link_onto(fragment: &str, base: impl FnOnce() -> ViewState) -> Option<(Self, Vec<String>)> {
        let body = fragment.trim_start_matches(['#', '?']);
        let part = |name: &str| {
            body.split('&')
                .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let (state, hide, step, theme) = (part("state"), part("hide"), part("step"), part("theme"));
        if state.is_none() && hide.is_none() && step.is_none() && theme.is_none() {
            return None;
        }
        let mut problems = Vec::new();
        let mut s = match state.map(|v| percent_decode(v).and_then(|json| Self::from_link_json(&json))) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(format!("state= in the link could not be read ({e})"));
                base()
            }
            None => Self::default(),
        };
        if let Some(h) = hide {
            match percent_decode(h) {
                Ok(h) => s
                    .hide
                    .extend(h.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from)),
                Err(e) => problems.push(format!("hide= in the link: {e}")),
            }
        }
        // Through `hide=` or the state's own list: only the panels there are.
        let unknown: Vec<String> = s
            .hide
            .iter()
            .filter(|p| !PANELS.contains(&p.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            s.hide.retain(|p| PANELS.contains(&p.as_str()));
            problems.push(format!(
                "no panel is called {} (the panels: {})",
                unknown.join(", "),
                PANELS.join(", ")
            ));
        }
        if let Some(n) = step {
            match n.parse::<usize>() {
                Ok(n) if n >= 1 => s.tour = Some(n - 1),
                _ => problems.push(format!("step={n} in the URL: expected a step number from 1")),
            }
        }
        if let Some(t) = theme {
            match Theme::parse(t) {
                Ok(t) => s.theme = t,
                Err(e) => problems.push(e),
            }
        }
        Some((s, problems))
    }
}

/// Where the pass-key lab's filler comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillerChoice {
    /// The paper's sentences, repeated.
    #[default]
    Repeated,
    /// Spans of the bundled validation text.
    Validation,
    /// Spans of the user's text (`ViewState::pasted_text`).
    Pasted,
}

/// Most trials per cell and depth rows the accuracy map offers.
pub const MAX_GRID_TRIALS: usize = 32;
pub const MAX_GRID_DEPTHS: usize = 10;
/// The map's longest length as a multiple of L: 1, 2, 4, 8 or 16.
pub const MAX_GRID_FACTOR: usize = 16;

/// The pass-key lab: one document (length, depth, key, filler) and the
/// length x depth accuracy map (asked for, trials, depths, reach, series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PasskeyLabState {
    pub length: usize,
    pub depth: f32,
    pub key: u32,
    pub filler: FillerChoice,
    /// The accuracy map runs only when asked for.
    pub grid: bool,
    pub grid_trials: usize,
    pub grid_depths: usize,
    /// The longest length of the map, as a multiple of L.
    pub grid_factor: usize,
    /// Which series the map computes: NoPE, the current scales, the RoPE twin.
    pub grid_nope: bool,
    pub grid_scaled: bool,
    pub grid_rope: bool,
}

impl Default for PasskeyLabState {
    fn default() -> Self {
        PasskeyLabState {
            length: 256,
            depth: 0.5,
            key: 47_815,
            filler: FillerChoice::Repeated,
            grid: false,
            grid_trials: 4,
            grid_depths: 5,
            grid_factor: 8,
            grid_nope: true,
            grid_scaled: true,
            grid_rope: true,
        }
    }
}

impl PasskeyLabState {
    /// Brings every field into range, each change said in `notes`.
    pub fn sanitize(&mut self, notes: &mut Vec<String>) {
        let n = notes;
        clamp_noted(n, "passkey_lab.length", &mut self.length, MIN_LENGTH, MAX_LENGTH);
        finite_noted(n, "passkey_lab.depth", &mut self.depth, 0.5);
        clamp_noted(n, "passkey_lab.depth", &mut self.depth, 0.0, 1.0);
        clamp_noted(n, "passkey_lab.key", &mut self.key, 10_000, 99_999);
        clamp_noted(n, "passkey_lab.grid_trials", &mut self.grid_trials, 1, MAX_GRID_TRIALS);
        clamp_noted(n, "passkey_lab.grid_depths", &mut self.grid_depths, 1, MAX_GRID_DEPTHS);
        clamp_noted(n, "passkey_lab.grid_factor", &mut self.grid_factor, 1, MAX_GRID_FACTOR);
        let factor = self.grid_factor.next_power_of_two();
        if factor != self.grid_factor {
            n.push(format!(
                "passkey_lab.grid_factor {} is not a power of two: {factor} used",
                self.grid_factor
            ));
            self.grid_factor = factor;
        }
    }
}

/// Brings `value` into `lo..=hi`; a change is said in `notes` as
/// "`field` value is out of range (lo to hi): the value used".
pub fn clamp_noted<T>(notes: &mut Vec<String>, field: &str, value: &mut T, lo: T, hi: T)
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    let used = if *value < lo {
        lo
    } else if *value > hi {
        hi
    } else {
        return;
    };
    notes.push(format!("{field} {value} is out of range ({lo} to {hi}): {used} used"));
    *value = used;
}

/// Replaces a NaN or infinite `value` by `default`, said in `notes`.
pub fn finite_noted(notes: &mut Vec<String>, field: &str, value: &mut f32, default: f32) {
    if !value.is_finite() {
        notes.push(format!("{field} {value} is not a number: {default} used"));
        *value = default;
    }
}

/// `first`, 2 `first`, 4 `first`, ... up to `last` and the app's longest
/// length (`MAX_LENGTH`): the lengths of the sweeps, the pass-key maps and
/// the comparisons, multiples of an opened model's L that may be far past
/// what the app computes. None when `first` is 0; no product overflows.
pub fn doublings(first: usize, last: usize) -> Vec<usize> {
    let last = last.min(MAX_LENGTH);
    std::iter::successors((first > 0).then_some(first), |&l| l.checked_mul(2))
        .take_while(|&l| l <= last)
        .collect()
}

/// True when `values` are valid scales of a `layers` x `heads` model.
fn fits_shape(layers: usize, heads: usize, values: &[f32], rule: ScaleRule) -> bool {
    HeadScales {
        num_layers: layers,
        num_heads: heads,
        values: values.to_vec(),
        rule,
    }
    .validate(None)
    .is_ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a truncated %-escape in the URL")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex} in the URL"))?);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's state is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins toggle; past the most, the first pinned makes room.
    #[test]
    fn a_pin_past_the_most_replaces_the_first() {
        let mut s = ViewState::default();
        for h in 0..MAX_PINNED {
            s.toggle_pinned(1, h);
        }
        assert_eq!(s.pinned.len(), MAX_PINNED);
        s.toggle_pinned(2, 0);
        assert_eq!(s.pinned.len(), MAX_PINNED);
        assert_eq!(s.pinned.first(), Some(&[1, 1]));
        assert_eq!(s.pinned.last(), Some(&[2, 0]));
        s.toggle_pinned(2, 0);
        assert!(!s.pinned.contains(&[2, 0]), "a second toggle unpins");
    }

    /// The hand-written `==` sees a change in the text and in a field
    /// beside it, and equal states as equal.
    #[test]
    fn states_compare_field_by_field_and_by_text() {
        let a = ViewState {
            pasted_text: "x".repeat(100),
            ..Default::default()
        };
        assert_eq!(a, a.clone());
        let mut b = a.clone();
        b.pasted_text.replace_range(50..51, "y");
        assert_ne!(a, b);
        let mut c = a.clone();
        c.tune.steps += 1;
        assert_ne!(a, c);
        let mut d = a.clone();
        d.hide.push("status".into());
        assert_ne!(a, d);
    }

    #[test]
    fn the_theme_travels_in_links_and_survives_start_over() {
        let light = ViewState::from_fragment("#step=2&theme=light").unwrap().unwrap();
        assert_eq!((light.theme, light.tour), (Theme::Light, Some(1)));
        assert_eq!(
            ViewState::from_fragment("theme=dark").unwrap().unwrap().theme,
            Theme::Dark
        );
        let err = ViewState::from_fragment("#theme=blue").unwrap().unwrap_err();
        assert!(
            err.contains("theme=blue") && err.contains("light, dark or system"),
            "{err}"
        );
        // In the state's JSON too (a shared link), and kept by Start over.
        assert!(
            light.to_fragment().contains("%22theme%22%3A%22light%22"),
            "{}",
            light.to_fragment()
        );
        assert_eq!(
            ViewState::from_fragment(&light.to_fragment()).unwrap().unwrap().theme,
            Theme::Light
        );
        assert_eq!(light.started_over().theme, Theme::Light);
        // A scales file of the user's own is kept (unused); the shipped ones go.
        let mut with_file = light.clone();
        with_file.scales.use_file = true;
        for (name, kept) in [
            ("head_scales-heads-passkey-1024.json", true),
            (crate::app::text::PRESET_SHIPPED, false),
            (crate::app::text::PRESET_SHIPPED_8L, false),
        ] {
            with_file.scales.file = Some(LoadedScales {
                name: name.into(),
                layers: 1,
                heads: 2,
                values: vec![1.0, 2.0],
                rule: ScaleRule::Constant,
                searched_on: None,
                ..Default::default()
            });
            let after = with_file.started_over().scales;
            assert_eq!((after.file.is_some(), after.use_file), (kept, false), "{name}");
        }
        assert_eq!(ViewState::default().theme, Theme::System);
    }

    #[test]
    fn fragment_round_trip_and_defaults() {
        let mut s = ViewState {
            length: 4096,
            head: 2,
            head_chosen: true,
            pasted_text: "a b & c = d % é".into(),
            ..Default::default()
        };
        s.scales.uniform = 1.5;
        let back = ViewState::from_fragment(&s.to_fragment()).unwrap().unwrap();
        assert_eq!(back, s);
        // Only what differs from the default travels.
        let short = ViewState {
            length: 300,
            ..Default::default()
        };
        assert_eq!(short.to_fragment(), "#state=%7B%22length%22%3A300%7D");
        assert_eq!(ViewState::default().to_fragment(), "#state=%7B%7D");
        // Inside a group, only the field that changed; read back whole.
        let mut tuned = ViewState::default();
        tuned.tune.steps = 12;
        tuned.passkey_lab.grid = true;
        tuned.scales.rule = ScaleRule::LogN { training_length: 256 };
        let json = percent_decode(tuned.to_fragment().strip_prefix("#state=").unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"passkey_lab":{"grid":true},"scales":{"rule":{"rule":"log-n","training_length":256}},"tune":{"steps":12}}"#
        );
        assert_eq!(ViewState::from_fragment(&tuned.to_fragment()).unwrap().unwrap(), tuned);
        // f32s with their own shortest digits, and the same numbers back.
        let mut floats = ViewState::default();
        floats.scales.uniform = 1.3;
        floats.passkey.depth = 0.7;
        floats.scales.file = Some(LoadedScales {
            name: "f".into(),
            layers: 1,
            heads: 3,
            values: vec![1.4330342, 1.0, 0.1],
            rule: ScaleRule::Constant,
            searched_on: None,
            ..Default::default()
        });
        let link = floats.to_fragment();
        assert!(
            link.contains("%22uniform%22%3A1.3%7D")
                && link.contains("%5B1.4330342%2C1.0%2C0.1%5D")
                && !link.contains("99999"),
            "{link}"
        );
        assert_eq!(ViewState::from_fragment(&link).unwrap().unwrap(), floats);
        // An f64 holding exactly an f32 value keeps all its digits.
        floats.tune.fitted_a = f64::from(0.3f32);
        let link = floats.to_fragment();
        assert_eq!(ViewState::from_fragment(&link).unwrap().unwrap(), floats, "{link}");
        // A state= cut short leaves the base view (the one kept), the rest
        // of the link applied on it.
        let kept = ViewState {
            length: 700,
            pasted_text: "mine".into(),
            ..Default::default()
        };
        let (s, problems) = ViewState::read_link_onto("#state=%7B%22length%22%3A3&step=2", || kept.clone()).unwrap();
        assert_eq!(
            (s.length, s.pasted_text.as_str(), s.tour, problems.len()),
            (700, "mine", Some(1), 1)
        );
        let (s, _) = ViewState::read_link_onto("#step=2", || kept).unwrap();
        assert_eq!(
            s.length,
            ViewState::default().length,
            "a link without state= is the default view"
        );
        let partial = ViewState::from_json(r#"{"length": 300}"#).unwrap();
        assert_eq!(partial.length, 300);
        assert_eq!(partial.layer, 0);
        assert!(!partial.head_chosen, "no head named: the pages may select one");
        // A link naming layer 0, head 0 chose it; so does the app's own;
        // a saved state from before `head_chosen` chose none.
        assert!(ViewState::from_link_json(r#"{"head": 0}"#).unwrap().head_chosen);
        assert!(!ViewState::from_json(r#"{"layer": 0, "head": 0}"#).unwrap().head_chosen);
        let mut chosen = ViewState::default();
        chosen.choose_head(0, 0);
        assert_eq!(chosen.to_fragment(), "#state=%7B%22head_chosen%22%3Atrue%7D");
        assert!(
            ViewState::from_fragment(&chosen.to_fragment())
                .unwrap()
                .unwrap()
                .head_chosen
        );
        // A page's suggestion is taken only while none is chosen, and its
        // link says so.
        let mut s = ViewState::default();
        s.suggest_head(1, 2);
        assert_eq!((s.layer, s.head, s.head_chosen), (1, 2, false));
        assert!(s.to_fragment().contains("%22head_chosen%22%3Afalse"));
        assert_eq!(ViewState::from_fragment(&s.to_fragment()).unwrap().unwrap(), s);
        // Shared, the suggested head is fixed; with none yet, no head is.
        let opened = |s: ViewState| ViewState::from_fragment(&s.to_fragment()).unwrap().unwrap();
        assert!(opened(s.shared(Some((1, 2)))).head_chosen);
        assert!(!opened(s.shared(None)).head_chosen);
        // A scales file loaded but switched off is not shared; one in use is.
        s.scales.file = Some(LoadedScales {
            name: "mine".into(),
            layers: 1,
            heads: 2,
            values: vec![1.5, 2.0],
            ..Default::default()
        });
        assert_eq!(opened(s.shared(None)).scales.file, None);
        s.scales.use_file = true;
        assert_eq!(opened(s.shared(None)).scales.file, s.scales.file);
        chosen.suggest_head(1, 2);
        assert_eq!((chosen.layer, chosen.head), (0, 0));
        assert!(ViewState::from_fragment("#other=1").is_none());
        let linked = ViewState::from_fragment("#step=3&hide=pages,status").unwrap().unwrap();
        assert_eq!(linked.tour, Some(2));
        assert!(linked.hidden(PANEL_STATUS) && linked.hidden(PANEL_PAGES) && !linked.hidden(PANEL_MAP));
        // A link read as far as it can be: each part that cannot be used
        // is said, and the rest still applies.
        let (s, problems) =
            ViewState::read_link("#state=%7B%22length%22%3A300&hide=pages,stauts&theme=blue&step=2").unwrap();
        assert_eq!((s.length, s.tour, s.theme), (1024, Some(1), Theme::System));
        assert_eq!(s.hide, vec![PANEL_PAGES.to_string()]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("state= in the link could not be read"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("stauts") && problems[1].contains(PANEL_STATUS),
            "{problems:?}"
        );
        assert!(problems[2].contains("theme=blue"), "{problems:?}");
        // Through the state's own list too.
        let (s, problems) = ViewState::read_link("#state=%7B%22hide%22%3A%5B%22map%22%2C%22nope%22%5D%7D").unwrap();
        assert_eq!((s.hide, problems.len()), (vec![PANEL_MAP.to_string()], 1));
        let (_, problems) = ViewState::read_link("#step=3&hide=pages,status").unwrap();
        assert!(problems.is_empty());
        let controls = ViewState::from_fragment("#hide=controls").unwrap().unwrap();
        assert!(controls.hidden(PANEL_MAP) && controls.hidden(PANEL_INPUT) && !controls.hidden(PANEL_ENTROPY));
        assert!(ViewState::from_fragment("#step=0").unwrap().is_err());
        assert!(ViewState::from_fragment("#state=%zz").unwrap().is_err());
        let mut wild = ViewState {
            length: 1 << 30,
            layer: 99,
            ..Default::default()
        };
        wild.scales.uniform = f32::NAN;
        wild.sanitize(4, 4);
        assert_eq!((wild.length, wild.layer, wild.scales.uniform), (MAX_LENGTH, 3, 1.0));
        // Finite but enormous: scaled logits past f32 (attention of NaN).
        let mut huge = ViewState::default();
        huge.scales.uniform = 3e38;
        huge.scales.rule = ScaleRule::Fitted {
            a: 1e300,
            training_length: 256,
        };
        let mut huge = ViewState::from_fragment(&huge.to_fragment()).unwrap().unwrap();
        assert_eq!(huge.scales.uniform, 3e38);
        assert!(matches!(huge.scales.rule, ScaleRule::Fitted { .. }));
        huge.sanitize(4, 4);
        assert_eq!((huge.scales.uniform, huge.scales.rule), (1.0, ScaleRule::Constant));
    }

    /// Scales loaded on one model survive a visit to a model of another
    /// shape (unused there) and are there again, to tick, on return; they
    /// were dropped without a word before 2026-12-01.
    #[test]
    fn scales_of_another_shape_are_kept_unused() {
        let mut s = ViewState::default();
        s.scales.file = Some(LoadedScales {
            name: "searched.json".into(),
            layers: 4,
            heads: 4,
            values: vec![1.5; 16],
            rule: ScaleRule::Constant,
            searched_on: None,
            ..Default::default()
        });
        s.scales.use_file = true;
        s.sanitize(4, 4);
        assert!(s.scales.use_file);
        s.sanitize(2, 8);
        assert!(s.scales.file.is_some() && !s.scales.use_file, "kept, unused");
        assert_eq!(s.scales.values(2, 8), vec![1.0; 16], "the uniform scale instead");
        s.sanitize(4, 4);
        assert!(s.scales.file.is_some());
        // Malformed values go whatever the model.
        s.scales.file.as_mut().unwrap().values[3] = f32::NAN;
        s.sanitize(4, 4);
        assert!(s.scales.file.is_none());
    }

    /// Without fingerprints in the file (the model in view's is given but
    /// not used), scales are said to be searched elsewhere only when both
    /// folders are known and differ, whatever the paths around them.
    #[test]
    fn scales_searched_elsewhere_compares_folder_names() {
        let searched_on = |on: Option<&str>| LoadedScales {
            searched_on: on.map(Into::into),
            ..Default::default()
        };
        let nope = "assets/models/nope-sotu";
        for (on, model, elsewhere) in [
            (Some(nope), nope, false),
            (Some("/home/a/nope-sotu/"), nope, false),
            (Some("./rope-sotu"), nope, true),
            (Some("."), nope, false),
            (Some(crate::app::text::OPENED_MODEL), nope, false),
            (Some(nope), "..", false),
            (None, nope, false),
        ] {
            let file = searched_on(on);
            assert_eq!(
                file.searched_elsewhere(Some(model), || Some("0123456789abcdef"))
                    .is_some(),
                elsewhere,
                "{on:?} on {model}"
            );
        }
    }

    /// Where the file and the model in view both have a fingerprint, the
    /// weights decide: other weights in the same folder are another model
    /// (also one opened in the app), the same weights elsewhere are not.
    #[test]
    fn scales_searched_elsewhere_compares_weights_first() {
        let file = |on: &str, print: &str| LoadedScales {
            searched_on: Some(on.into()),
            fingerprint: Some(print.into()),
            ..Default::default()
        };
        let nope = "assets/models/nope-sotu";
        let (ours, other) = ("00000000000000aa", "00000000000000bb");
        let opened = crate::app::text::OPENED_MODEL;
        for (file, folder, elsewhere) in [
            (
                file(nope, other),
                Some(nope),
                Some(SearchedElsewhere::Weights(Some(nope))),
            ),
            (file("/copy/rope-sotu", ours), Some(nope), None),
            (
                file(opened, other),
                None,
                Some(SearchedElsewhere::Weights(Some(opened))),
            ),
            (file(opened, ours), None, None),
        ] {
            assert_eq!(file.searched_elsewhere(folder, || Some(ours)), elsewhere, "{file:?}");
        }
        // A model in view whose weights are not known: the folders decide.
        let copy = file("/copy/rope-sotu", ours);
        assert_eq!(
            copy.searched_elsewhere(Some(nope), || None),
            Some(SearchedElsewhere::Folder("/copy/rope-sotu"))
        );
    }

    #[test]
    fn scales_carry_their_rule_and_old_states_still_load() {
        // A state saved before rules existed.
        let old = ViewState::from_json(r#"{"scales": {"uniform": 1.5, "file": {"name": "f", "layers": 1, "heads": 2, "values": [1.0, 2.0]}, "use_file": true}}"#).unwrap();
        assert_eq!(old.scales.rule(), ScaleRule::Constant);
        assert!(old.compare.is_none());
        let mut s = ViewState::default();
        s.scales.rule = ScaleRule::Fitted {
            a: 0.25,
            training_length: 256,
        };
        assert!(!s.scales.is_plain(), "a rule is not plain NoPE");
        let back = ViewState::from_fragment(&s.to_fragment()).unwrap().unwrap();
        assert_eq!(back.scales.rule(), s.scales.rule);
        // A malformed rule from a URL falls back to constant.
        s.scales.rule = ScaleRule::LogN { training_length: 1 };
        s.sanitize(4, 4);
        assert_eq!(s.scales.rule, ScaleRule::Constant);
        use crate::app::jobs::ScalesKey;
        let v = [1.0f32; 4];
        assert_ne!(
            ScalesKey::of(&v),
            ScalesKey::with_rule(&v, ScaleRule::LogN { training_length: 256 })
        );
    }
}
