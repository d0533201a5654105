//! `ViewState`: everything the user asked for (model, text, length, head,
//! scales, engine), the one serializable thing of the app. Persisted
//! natively through eframe's storage, written to the URL on the web; every
//! view is rebuilt from it. Holds no handles and nothing computed.

use serde::{Deserialize, Serialize};

use super::search_job::{ScalesSetting, TuneSettings};
use crate::lab::backend::Backend;
use crate::model::head_scales::{HeadScales, ScaleRule};

/// Shortest and longest input the length control offers.
pub const MIN_LENGTH: usize = 16;
pub const MAX_LENGTH: usize = 16384;
/// Side of the pooled attention map, at most.
pub const POOLED_CELLS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    #[default]
    Nope,
    Rope,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapMode {
    #[default]
    Entropy,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    pub model: ModelChoice,
    pub input: InputKind,
    pub pasted_text: String,
    pub passkey: PasskeySpec,
    pub length: usize,
    pub layer: usize,
    pub head: usize,
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
    /// The tuning panel's search settings.
    pub tune: TuneSettings,
    /// Setting B: what the explorer draws the current scales against
    /// (`None`: plain NoPE).
    pub compare: Option<ScalesSetting>,
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
            query: None,
            map_mode: MapMode::Entropy,
            scales: ScalesState::default(),
            backend: Backend::Auto,
            against_length: false,
            tab: Tab::Explore,
            tour: None,
            hide: Vec::new(),
            tune: TuneSettings::default(),
            compare: None,
        }
    }
}

impl ViewState {
    /// Brings every field into range (after a URL, a file or a test set it).
    pub fn sanitize(&mut self, layers: usize, heads: usize) {
        self.length = self.length.clamp(MIN_LENGTH, MAX_LENGTH);
        self.layer = self.layer.min(layers.saturating_sub(1));
        self.head = self.head.min(heads.saturating_sub(1));
        self.passkey.depth = if self.passkey.depth.is_finite() {
            self.passkey.depth.clamp(0.0, 1.0)
        } else {
            0.5
        };
        self.passkey.key = self.passkey.key.clamp(10_000, 99_999);
        if !(self.scales.uniform.is_finite() && self.scales.uniform > 0.0) {
            self.scales.uniform = 1.0;
        }
        let fits = |values: &[f32], rule: ScaleRule| {
            HeadScales {
                num_layers: layers,
                num_heads: heads,
                values: values.to_vec(),
                rule,
            }
            .validate(None)
            .is_ok()
        };
        if !fits(&vec![1.0; layers * heads], self.scales.rule) {
            self.scales.rule = ScaleRule::Constant;
        }
        if let Some(f) = &self.scales.file {
            if !fits(&f.values, f.rule) {
                self.scales.file = None;
                self.scales.use_file = false;
            }
        }
        if let Some(b) = &self.compare {
            if !fits(&b.values, b.rule) {
                self.compare = None;
            }
        }
        self.tune.sanitize();
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A state from JSON; unknown or missing fields take their defaults.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The state as a URL fragment (`#state=<percent-encoded JSON>`).
    pub fn to_fragment(&self) -> String {
        format!("#state={}", percent_encode(&self.to_json()))
    }

    /// Reads `state=` from a URL fragment or query (with or without `#`/`?`).
    pub fn from_fragment(fragment: &str) -> Option<Result<Self, String>> {
        let body = fragment.trim_start_matches(['#', '?']);
        body.split('&')
            .find_map(|part| part.strip_prefix("state="))
            .map(|v| percent_decode(v).and_then(|json| Self::from_json(&json)))
    }
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

    #[test]
    fn fragment_round_trip_and_defaults() {
        let mut s = ViewState {
            length: 4096,
            head: 2,
            pasted_text: "a b & c = d % é".into(),
            ..Default::default()
        };
        s.scales.uniform = 1.5;
        let back = ViewState::from_fragment(&s.to_fragment()).unwrap().unwrap();
        assert_eq!(back, s);
        let partial = ViewState::from_json(r#"{"length": 300}"#).unwrap();
        assert_eq!(partial.length, 300);
        assert_eq!(partial.layer, 0);
        assert!(ViewState::from_fragment("#other=1").is_none());
        assert!(ViewState::from_fragment("#state=%zz").unwrap().is_err());
        let mut wild = ViewState {
            length: 1 << 30,
            layer: 99,
            ..Default::default()
        };
        wild.scales.uniform = f32::NAN;
        wild.sanitize(4, 4);
        assert_eq!((wild.length, wild.layer, wild.scales.uniform), (MAX_LENGTH, 3, 1.0));
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
