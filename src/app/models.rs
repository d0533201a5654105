//! The bundled models and validation text, compiled into the program so the
//! desktop app and the web page work offline with nothing to fetch.

use super::state::ModelChoice;

pub struct Bundled {
    pub name: &'static str,
    pub config: &'static [u8],
    pub weights: &'static [u8],
    pub tokenizer: &'static [u8],
}

pub static NOPE: Bundled = Bundled {
    name: "assets/models/nope-sotu",
    config: include_bytes!("../../assets/models/nope-sotu/config.json"),
    weights: include_bytes!("../../assets/models/nope-sotu/model.safetensors"),
    tokenizer: include_bytes!("../../assets/models/nope-sotu/tokenizer.json"),
};

pub static ROPE: Bundled = Bundled {
    name: "assets/models/rope-sotu",
    config: include_bytes!("../../assets/models/rope-sotu/config.json"),
    weights: include_bytes!("../../assets/models/rope-sotu/model.safetensors"),
    tokenizer: include_bytes!("../../assets/models/rope-sotu/tokenizer.json"),
};

/// Held-out State of the Union text (CC0), never seen in training.
pub static VALIDATION_TEXT: &str = include_str!("../../assets/text/sotu-validation.txt");

/// The last chapters of Moby-Dick (public domain), held out of the
/// bundled models' training: a novel, beside the speeches.
static MOBY_DICK: &str = include_str!("../../assets/text/moby-dick-validation.txt");

/// About this many bytes of Moby-Dick make the sample input: past 16L =
/// 4096 tokens of the bundled models, short enough to edit.
const SAMPLE_BYTES: usize = 24_000;

/// A sample for "your text": the first chapters of the held-out Moby-Dick,
/// cut at the end of a paragraph.
pub fn sample_text() -> &'static str {
    let head = &MOBY_DICK[..MOBY_DICK.floor_char_boundary(SAMPLE_BYTES.min(MOBY_DICK.len()))];
    head.rfind("\n\n").map_or(head, |end| &head[..end])
}

/// The samples "your text" offers while it is empty: the same failure
/// seen from three sides (docs/APP.md, "Input", has what each showed on
/// the bundled models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// A novel the models never read (`sample_text`).
    Novel,
    /// The paper's pass-key filler, repeated, with no key: text the model
    /// predicts almost perfectly within L.
    Filler,
    /// The novel's words in a random order (a fixed seed): no grammar.
    Shuffled,
}

impl Sample {
    pub const ALL: [Sample; 3] = [Sample::Novel, Sample::Filler, Sample::Shuffled];

    /// The sample's text, about `SAMPLE_BYTES` long.
    pub fn text(self) -> String {
        match self {
            Sample::Novel => sample_text().to_string(),
            Sample::Filler => {
                let sentence = crate::lab::passkey::FILLER.trim();
                let times = SAMPLE_BYTES / (sentence.len() + 1);
                vec![sentence; times].join(" ")
            }
            Sample::Shuffled => {
                let mut words: Vec<&str> = sample_text().split_whitespace().collect();
                let mut rng = crate::model::rng::Rng::new(124);
                for i in (1..words.len()).rev() {
                    words.swap(i, rng.below(i + 1));
                }
                // Short lines (8 words), as the novel is wrapped.
                words
                    .chunks(8)
                    .map(|line| line.join(" "))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }
}

/// The per-head scales shipped with the NoPE model: `nopescope search` at
/// 4L on the pass-key objective (the command is inside the file).
pub static NOPE_HEAD_SCALES_4L: &str = include_str!("../../assets/models/nope-sotu/head_scales-4L.json");
/// The same search at 8L.
pub static NOPE_HEAD_SCALES_8L: &str = include_str!("../../assets/models/nope-sotu/head_scales-8L.json");

/// Text for the tuning panel's text objective: the tuning split, never the
/// validation text the views evaluate on.
pub static TUNING_TEXT: &str = include_str!("../../assets/text/sotu-tuning.txt");

/// What `nopescope reproduce` measured on the bundled NoPE model; the app
/// reads the fitted rule's a from it (`fit_a`).
static REPRODUCTION: &str = include_str!("../../docs/results.json");

/// The a of the fitted rule s*(i) = 1 + a ln(i / L), as the reproduction
/// fitted it on the bundled NoPE model (None if the file has none).
pub fn fitted_a() -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Fit {
        fit_a: Option<f64>,
    }
    serde_json::from_str::<Fit>(REPRODUCTION)
        .ok()
        .and_then(|f| f.fit_a)
        .filter(|a| a.is_finite())
}

/// The bundled model of `choice` (none for a model the user opened).
pub fn bundled(choice: ModelChoice) -> Option<&'static Bundled> {
    match choice {
        ModelChoice::Nope => Some(&NOPE),
        ModelChoice::Rope => Some(&ROPE),
        ModelChoice::Custom => None,
    }
}

/// A bundled model's weights' `Params::fingerprint`, as a scales file's
/// provenance records it; read once, when first asked (a scales file that
/// records one is compared with it).
pub fn bundled_fingerprint(choice: ModelChoice) -> Option<&'static str> {
    let b = bundled(choice)?;
    fingerprint_slot(choice)?
        .get_or_init(|| {
            crate::model::files::model_from_bytes(b.config, b.weights, std::path::Path::new(b.name))
                .ok()
                .map(|(_, params)| params.fingerprint())
        })
        .as_deref()
}

/// A bundled model's fingerprint from its weights as the lab read them
/// (`bundled_fingerprint` then reads them no second time).
pub fn note_bundled_fingerprint(choice: ModelChoice, params: &crate::model::params::Params<f32>) -> String {
    let print = || params.fingerprint();
    match fingerprint_slot(choice) {
        Some(slot) => slot.get_or_init(|| Some(print())).clone().unwrap_or_else(print),
        None => print(),
    }
}

fn fingerprint_slot(choice: ModelChoice) -> Option<&'static std::sync::OnceLock<Option<String>>> {
    use std::sync::OnceLock;
    static PRINTS: [OnceLock<Option<String>>; 2] = [OnceLock::new(), OnceLock::new()];
    match choice {
        ModelChoice::Nope => Some(&PRINTS[0]),
        ModelChoice::Rope => Some(&PRINTS[1]),
        ModelChoice::Custom => None,
    }
}

/// What the UI needs to know of a model before any engine runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelInfo {
    pub layers: usize,
    pub heads: usize,
    pub training_length: usize,
    /// Rotary position encoding (the RoPE twin, or a RoPE checkpoint):
    /// the views name its unscaled setting "RoPE (s = 1)", not NoPE.
    pub rope: bool,
    /// 0 for a bundled model; for one the user opened, which opening of
    /// the session (1, 2, ...), so that what was found on one opened model
    /// is not taken for another of the same shape.
    pub opened: u64,
}

impl ModelInfo {
    /// A bundled model's, read once (`of` parses its config each call).
    pub fn bundled(choice: ModelChoice) -> Option<Self> {
        static INFOS: std::sync::OnceLock<[Option<ModelInfo>; 2]> = std::sync::OnceLock::new();
        let infos = INFOS.get_or_init(|| [Self::of(ModelChoice::Nope).ok(), Self::of(ModelChoice::Rope).ok()]);
        match choice {
            ModelChoice::Nope => infos[0],
            ModelChoice::Rope => infos[1],
            ModelChoice::Custom => None,
        }
    }

    pub fn of(choice: ModelChoice) -> Result<Self, String> {
        let b = bundled(choice).ok_or_else(|| super::text::NO_MODEL_OPENED.to_string())?;
        let hf: crate::model::HfConfig = serde_json::from_slice(b.config).map_err(|e| e.to_string())?;
        let c = hf.validate().map_err(|e| e.to_string())?;
        Ok(Self::of_config(&c))
    }

    pub fn of_config(c: &crate::model::ModelConfig) -> Self {
        ModelInfo {
            layers: c.num_layers,
            heads: c.num_heads,
            training_length: c.training_length,
            rope: matches!(c.position_encoding, crate::model::PositionEncoding::Rope { .. }),
            opened: 0,
        }
    }
}
