//! One attention scale per query head per layer: logits = s * q.k / sqrt(d).
//! Plain NoPE is all ones; a uniform scale is the case of all equal. Saved as
//! a small JSON file beside the model (`head_scales.json`).
//!
//! Besides the constant scale s_h, a *rule* may make the scale grow with the
//! query's position i: the query at i uses s_h * r(i) ([`ScaleRule`]). Both
//! engines apply r(i) to the query rows right after they are projected (and
//! rotated), before attention: attention then computes exactly
//! softmax_j(s_h r(i) q_i.k_j / sqrt d), the head-scale gradient it returns
//! is exact under every rule (r(i) is part of the query it differentiates
//! through), and the query's own gradient is multiplied by r(i) on the way
//! back. Files written before rules existed have none: constant.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::error::{Error, Result};

pub const HEAD_SCALES_FILE: &str = "head_scales.json";

/// How the scale of a query grows with its position i (0-based), relative
/// to the training length L: the query at i uses s_h * r(i).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScaleRule {
    /// r(i) = 1.
    #[default]
    Constant,
    /// Log-length scaling: r(i) = max(1, ln(i + 1) / ln L).
    LogN { training_length: usize },
    /// The paper's fitted s*(i): r(i) = max(1, 1 + a ln((i + 1) / L)).
    Fitted { a: f64, training_length: usize },
}

impl ScaleRule {
    /// r(i) for the query at position `i`.
    pub fn factor(&self, i: usize) -> f64 {
        let x = (i + 1) as f64;
        match *self {
            ScaleRule::Constant => 1.0,
            ScaleRule::LogN { training_length } => (x.ln() / (training_length as f64).ln()).max(1.0),
            ScaleRule::Fitted { a, training_length } => (1.0 + a * (x / training_length as f64).ln()).max(1.0),
        }
    }

    pub fn is_constant(&self) -> bool {
        matches!(self, ScaleRule::Constant)
    }

    /// r(i) for the query positions in `positions`, rounded to f32 once:
    /// the values both engines apply (one place computes them). `None` for
    /// the constant rule: nothing to apply.
    pub fn factors(&self, positions: std::ops::Range<usize>) -> Option<Vec<f32>> {
        (!self.is_constant()).then(|| positions.map(|i| self.factor(i) as f32).collect())
    }

    /// The rule's name, as files and the command line spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ScaleRule::Constant => "constant",
            ScaleRule::LogN { .. } => "log-n",
            ScaleRule::Fitted { .. } => "fitted",
        }
    }

    /// A rule from its name (`constant`, `log-n`, `fitted`), the training
    /// length and, for `fitted`, its a.
    pub fn parse(name: &str, training_length: usize, a: Option<f64>) -> Result<Self> {
        let rule = match name {
            "constant" => ScaleRule::Constant,
            "log-n" => ScaleRule::LogN { training_length },
            "fitted" => ScaleRule::Fitted {
                a: a.ok_or_else(|| Error::Input("the `fitted` rule needs its coefficient a".into()))?,
                training_length,
            },
            other => {
                return Err(Error::Input(format!(
                    "unknown scale rule `{other}`: expected constant, log-n or fitted"
                )))
            }
        };
        if a.is_some() && !matches!(rule, ScaleRule::Fitted { .. }) {
            return Err(Error::Input(format!(
                "the coefficient a is the `fitted` rule's; the `{name}` rule has none"
            )));
        }
        rule.validate(None)?;
        Ok(rule)
    }

    fn validate(&self, path: Option<&Path>) -> Result<()> {
        let err = |message: String| Error::HeadScales {
            path: path.map(Path::to_path_buf),
            message,
        };
        match *self {
            ScaleRule::Constant => Ok(()),
            ScaleRule::LogN { training_length } | ScaleRule::Fitted { training_length, .. } if training_length < 2 => {
                Err(err(format!(
                    "rule `{}`: training_length {training_length} must be at least 2",
                    self.name()
                )))
            }
            ScaleRule::Fitted { a, .. } if !(a.is_finite() && a.abs() <= MAX_RULE_A) => Err(err(format!(
                "rule `fitted`: a = {a} is not a number in [-{MAX_RULE_A}, {MAX_RULE_A}]"
            ))),
            _ => Ok(()),
        }
    }
}

/// The largest head scale taken. Far past any useful one (the paper's are
/// 1 to about 3; at 1000 a head's attention is on one key already), and
/// small enough that scaled logits stay finite: a scale of 1e38 passed
/// every check and turned attention into NaN.
pub const MAX_HEAD_SCALE: f32 = 1000.0;
/// The largest |a| of the fitted rule s(i) = 1 + a ln(i / L) (the paper's
/// fit is about 0.3).
pub const MAX_RULE_A: f64 = 100.0;

#[derive(Debug, Clone, PartialEq)]
pub struct HeadScales {
    pub num_layers: usize,
    pub num_heads: usize,
    /// (L, H), row-major.
    pub values: Vec<f32>,
    /// How each query's scale grows with its position.
    pub rule: ScaleRule,
}

#[derive(Serialize, Deserialize)]
struct HeadScalesFile {
    /// One row per layer, one scale per query head.
    head_scales: Vec<Vec<f32>>,
    /// Absent in files written before rules existed: constant.
    #[serde(default, skip_serializing_if = "ScaleRule::is_constant")]
    rule: ScaleRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// Where the scales came from (a search's settings and result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provenance: Option<serde_json::Value>,
}

impl HeadScales {
    /// One row per layer, one scale per query head: the file's layout.
    pub fn rows(&self) -> Vec<Vec<f32>> {
        self.values.chunks(self.num_heads).map(<[f32]>::to_vec).collect()
    }

    /// The smallest and largest scale (infinities when there are none).
    pub fn min_max(&self) -> (f32, f32) {
        self.values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)))
    }

    pub fn uniform(config: &ModelConfig, s: f32) -> Result<Self> {
        let hs = HeadScales {
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            values: vec![s; config.num_layers * config.num_heads],
            rule: ScaleRule::Constant,
        };
        hs.validate(None)?;
        Ok(hs)
    }

    pub fn ones(config: &ModelConfig) -> Self {
        HeadScales {
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            values: vec![1.0; config.num_layers * config.num_heads],
            rule: ScaleRule::Constant,
        }
    }

    /// The same scales under another rule.
    pub fn with_rule(mut self, rule: ScaleRule) -> Self {
        self.rule = rule;
        self
    }

    /// Plain NoPE: every scale 1, constant.
    pub fn is_identity(&self) -> bool {
        self.rule.is_constant() && self.values.iter().all(|&s| s == 1.0)
    }

    pub fn get(&self, layer: usize, head: usize) -> f32 {
        self.values[layer * self.num_heads + head]
    }

    /// Every scale must be a positive number up to `MAX_HEAD_SCALE`, the
    /// rule well formed.
    pub fn validate(&self, path: Option<&Path>) -> Result<()> {
        let err = |message: String| Error::HeadScales {
            path: path.map(Path::to_path_buf),
            message,
        };
        self.rule.validate(path)?;
        if self.values.len() != self.num_layers * self.num_heads {
            return Err(err(format!(
                "{} values for {} layers x {} heads",
                self.values.len(),
                self.num_layers,
                self.num_heads
            )));
        }
        for (i, &s) in self.values.iter().enumerate() {
            Self::check_scale(s).map_err(|e| {
                err(format!(
                    "layer {} head {}: {e}",
                    i / self.num_heads.max(1),
                    i % self.num_heads.max(1)
                ))
            })?;
        }
        Ok(())
    }

    /// One scale: a positive number up to `MAX_HEAD_SCALE`; the error says
    /// so of `s`.
    pub fn check_scale(s: f32) -> std::result::Result<(), String> {
        if s.is_finite() && s > 0.0 && s <= MAX_HEAD_SCALE {
            Ok(())
        } else {
            Err(format!("scale {s} is not a positive number up to {MAX_HEAD_SCALE}"))
        }
    }

    /// Checks the shape against a model as well as the values.
    pub fn check_for(&self, config: &ModelConfig, path: Option<&Path>) -> Result<()> {
        if self.num_layers != config.num_layers || self.num_heads != config.num_heads {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: format!(
                    "shape ({}, {}) does not match the model's {} layers x {} query heads",
                    self.num_layers, self.num_heads, config.num_layers, config.num_heads
                ),
            });
        }
        self.validate(path)
    }

    pub fn from_json(text: &str, path: Option<&Path>) -> Result<Self> {
        Self::from_json_with_provenance(text, path).map(|(hs, _)| hs)
    }

    /// `from_json`, and where the scales came from (a search's settings and
    /// result), when the file says.
    fn from_json_with_provenance(text: &str, path: Option<&Path>) -> Result<(Self, Option<serde_json::Value>)> {
        let f: HeadScalesFile = serde_json::from_str(text).map_err(|e| Error::HeadScales {
            path: path.map(Path::to_path_buf),
            message: format!(
                "not a head-scales file ({e}); expected {{\"head_scales\": [[layer 0 heads..], ..], \"rule\": {{\"rule\": \"constant\" | \"log-n\" | \"fitted\", ..}}}}"
            ),
        })?;
        let num_layers = f.head_scales.len();
        let num_heads = f.head_scales.first().map_or(0, Vec::len);
        if num_layers == 0 || num_heads == 0 {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: "no scales".into(),
            });
        }
        if let Some((l, row)) = f.head_scales.iter().enumerate().find(|(_, r)| r.len() != num_heads) {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: format!("layer {l} has {} scales, layer 0 has {num_heads}", row.len()),
            });
        }
        let hs = HeadScales {
            num_layers,
            num_heads,
            values: f.head_scales.concat(),
            rule: f.rule,
        };
        hs.validate(path)?;
        Ok((hs, f.provenance))
    }

    pub fn to_json(&self, note: Option<String>) -> String {
        self.to_json_with(note, None)
    }

    /// The file's text, with where the scales came from.
    pub fn to_json_with(&self, note: Option<String>, provenance: Option<serde_json::Value>) -> String {
        let f = HeadScalesFile {
            head_scales: self.rows(),
            rule: self.rule,
            note,
            provenance,
        };
        serde_json::to_string_pretty(&f).expect("head scales serialize")
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &Path, config: &ModelConfig) -> Result<Self> {
        Self::load_searched(path, config).map(|(hs, _)| hs)
    }

    /// `load`, and what the file's provenance says of the search that
    /// wrote it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_searched(path: &Path, config: &ModelConfig) -> Result<(Self, Searched)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let (hs, searched) = Self::from_json_searched(&text, Some(path))?;
        hs.check_for(config, Some(path))?;
        Ok((hs, searched))
    }

    /// `from_json`, and what the file's provenance says of the search
    /// that wrote it.
    pub fn from_json_searched(text: &str, path: Option<&Path>) -> Result<(Self, Searched)> {
        let (hs, provenance) = Self::from_json_with_provenance(text, path)?;
        let field = |name: &str| provenance.as_ref().and_then(|p| p.get(name));
        let searched = Searched {
            model: field("model").and_then(|m| m.as_str()).map(Into::into),
            stopped_after: field("stopped_after").and_then(|n| n.as_u64()),
            fingerprint: field("model_fingerprint").and_then(|f| f.as_str()).map(Into::into),
            // `"search": "uniform"` (the app's) or `{"kind": "uniform", ..}`
            // (the command line's).
            uniform: field("search").and_then(|s| s.as_str().or_else(|| s.get("kind").and_then(|k| k.as_str())))
                == Some("uniform"),
        };
        Ok((hs, searched))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &Path, note: Option<String>) -> Result<()> {
        super::files::write_atomic(path, self.to_json(note).as_bytes())
    }
}

/// `value` as JSON whose f32 numbers keep their own shortest digits, as a
/// scales file's provenance records them (`to_value` widens them to f64
/// first: 1.13 became 1.1299999952316284).
pub fn f32_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_string(value)
        .and_then(|text| serde_json::from_str(&text))
        .expect("plain data serializes")
}

/// What `n` of a search's rounds are called: steps of a per-head search,
/// points of a uniform one.
pub fn search_unit(uniform: bool, n: u64) -> &'static str {
    match (uniform, n == 1) {
        (true, true) => "point",
        (true, false) => "points",
        (false, true) => "step",
        (false, false) => "steps",
    }
}

/// What a scales file's provenance says of the search that wrote it (each
/// `None` where it does not say).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Searched {
    /// The model folder it was searched on.
    pub model: Option<String>,
    /// Set when the search was stopped before its end: the steps (or
    /// points) it had run.
    pub stopped_after: Option<u64>,
    /// A uniform search's (its `stopped_after` counts points, not steps).
    pub uniform: bool,
    /// The weights' `Params::fingerprint` (the command line's searches
    /// since 2026-12-03 record it).
    pub fingerprint: Option<String>,
}

/// The other model scales were searched on (`searched_elsewhere`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchedElsewhere<'a> {
    /// Other weights (the fingerprints differ), with the model their file
    /// names, if it names one.
    Weights(Option<&'a str>),
    /// Another folder, as the file names it.
    Folder(&'a str),
}

/// Whether scales were searched on another model than the one in use, as
/// `eval`, `passkey` and the app decide it, from their file's provenance
/// (`model`, `fingerprint`: `Searched`'s): by the weights' fingerprints
/// where both are known (`ours`, asked only then: a model retrained in its
/// folder is another model, a copy elsewhere the same), else by
/// `other_folder`, the caller's comparison of the folder the file names
/// with its own (paths differ from machine to machine). `None` where
/// neither tells.
pub fn searched_elsewhere<'a, 'b>(
    model: Option<&'a str>,
    fingerprint: Option<&str>,
    ours: impl FnOnce() -> Option<&'b str>,
    other_folder: impl FnOnce(&'a str) -> bool,
) -> Option<SearchedElsewhere<'a>> {
    if let Some(theirs) = fingerprint {
        if let Some(ours) = ours() {
            return (theirs != ours).then_some(SearchedElsewhere::Weights(model));
        }
    }
    let theirs = model?;
    other_folder(theirs).then_some(SearchedElsewhere::Folder(theirs))
}

/// The folder a model path names, as scales files' provenance is compared
/// with a model (its last component: a file written on another machine
/// names the same folder by another path); `None` for a path that names
/// none ("", ".", "..").
pub fn folder_name(path: &str) -> Option<&str> {
    let last = path.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next()?;
    (!matches!(last, "" | "." | "..")).then_some(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn folder_names_compare_across_paths() {
        for (path, name) in [
            ("assets/models/nope-sotu", Some("nope-sotu")),
            ("/home/a/nope-sotu/", Some("nope-sotu")),
            ("C:\\models\\nope-sotu", Some("nope-sotu")),
            ("nope-sotu", Some("nope-sotu")),
            (".", None),
            ("..", None),
            ("", None),
            ("/", None),
        ] {
            assert_eq!(folder_name(path), name, "{path:?}");
        }
    }

    use super::*;

    #[test]
    fn round_trip_and_rejects_bad_values() {
        let hs = HeadScales {
            num_layers: 2,
            num_heads: 3,
            values: vec![1.0, 1.5, 2.0, 1.0, 1.25, 3.0],
            rule: ScaleRule::Constant,
        };
        let back = HeadScales::from_json(&hs.to_json(None), None).unwrap();
        assert_eq!(back, hs);
        for bad in [
            "[[1.0, NaN]]",
            "{\"head_scales\": [[1.0, 0.0]]}",
            "{\"head_scales\": [[1.0, -2]]}",
            "{\"head_scales\": [[1.0], [1.0, 2.0]]}",
            // finite but past any use, and scaled logits past f32
            "{\"head_scales\": [[1.0, 1e38]]}",
            "{\"head_scales\": [[1.0, 1000.5]]}",
            "{\"head_scales\": [[1.0]], \"rule\": {\"rule\": \"fitted\", \"a\": 1e300, \"training_length\": 256}}",
        ] {
            assert!(HeadScales::from_json(bad, None).is_err(), "{bad}");
        }
        // (the same rule with the paper's a, and the largest scale, load)
        let ok =
            "{\"head_scales\": [[1.0, 1000]], \"rule\": {\"rule\": \"fitted\", \"a\": 0.3, \"training_length\": 256}}";
        HeadScales::from_json(ok, None).unwrap();
        let nan = HeadScales {
            num_layers: 1,
            num_heads: 2,
            values: vec![1.0, f32::NAN],
            rule: ScaleRule::Constant,
        };
        assert!(nan.validate(None).unwrap_err().to_string().contains("head 1"));
    }

    #[test]
    fn rules_round_trip_old_files_load_and_factors_follow_the_formulas() {
        let base = HeadScales {
            num_layers: 1,
            num_heads: 2,
            values: vec![1.0, 2.0],
            rule: ScaleRule::Constant,
        };
        for rule in [
            ScaleRule::Constant,
            ScaleRule::LogN { training_length: 256 },
            ScaleRule::Fitted {
                a: 0.207,
                training_length: 256,
            },
        ] {
            let hs = base.clone().with_rule(rule);
            assert_eq!(HeadScales::from_json(&hs.to_json(None), None).unwrap(), hs);
        }
        // A file from before rules: constant.
        let old = HeadScales::from_json("{\"head_scales\": [[1.0, 2.0]]}", None).unwrap();
        assert_eq!(old.rule, ScaleRule::Constant);
        for bad in [
            "{\"head_scales\": [[1.0]], \"rule\": {\"rule\": \"yarn\"}}",
            "{\"head_scales\": [[1.0]], \"rule\": {\"rule\": \"log-n\", \"training_length\": 1}}",
            "{\"head_scales\": [[1.0]], \"rule\": {\"rule\": \"fitted\", \"training_length\": 256}}",
        ] {
            assert!(HeadScales::from_json(bad, None).is_err(), "{bad}");
        }
        let logn = ScaleRule::LogN { training_length: 256 };
        assert_eq!(logn.factor(0), 1.0);
        assert_eq!(logn.factor(255), 1.0);
        assert!((logn.factor(1023) - 1024f64.ln() / 256f64.ln()).abs() < 1e-12);
        let fitted = ScaleRule::Fitted {
            a: 0.5,
            training_length: 100,
        };
        assert_eq!(fitted.factor(10), 1.0);
        assert!((fitted.factor(399) - (1.0 + 0.5 * 4f64.ln())).abs() < 1e-12);
        assert!(ScaleRule::parse("fitted", 256, None).is_err());
        let e = ScaleRule::parse("log-n", 256, Some(0.3)).unwrap_err().to_string();
        assert!(e.contains("`log-n` rule has none"), "{e}");
        assert!(ScaleRule::parse("fitted", 256, Some(-0.5)).is_ok());
        assert!(ScaleRule::parse("nope", 256, None)
            .unwrap_err()
            .to_string()
            .contains("unknown scale rule"));
    }
}
