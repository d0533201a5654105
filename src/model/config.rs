//! The model configuration: Hugging Face's Llama `config.json`, plus one
//! field of ours (`position_encoding`), validated once into [`ModelConfig`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// `config.json` as Hugging Face writes it for Llama models. Unknown fields
/// are ignored; absent optional fields take Llama's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads.
    /// Absent means one KV head per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Read as the training length.
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Ours: "none" (NoPE, the default) or "rope".
    #[serde(default)]
    pub position_encoding: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}

/// Serialized as `{"kind": "none"}` or `{"kind": "rope", "theta": 10000.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PositionEncoding {
    /// No position encoding: the causal mask is the only source of order.
    None,
    /// Rotary embedding (Hugging Face's rotate-half convention), for the twin.
    Rope { theta: f64 },
}

impl PositionEncoding {
    /// For people: `none (NoPE)` or `RoPE (theta 10000)`.
    pub fn describe(&self) -> String {
        match self {
            PositionEncoding::None => "none (NoPE)".to_string(),
            PositionEncoding::Rope { theta } => format!("RoPE (theta {theta})"),
        }
    }
}

/// The validated configuration every engine works from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub training_length: usize,
    pub position_encoding: PositionEncoding,
    pub bos_token_id: Option<u32>,
}

impl HfConfig {
    pub fn load(path: &Path) -> Result<HfConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks every field once; each inconsistency names its field.
    pub fn validate(&self) -> Result<ModelConfig> {
        fn positive(field: &str, v: usize) -> Result<()> {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
            Ok(())
        }
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("vocab_size", self.vocab_size)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        // Sizes far past any model this program can hold are refused before
        // they overflow a product of sizes.
        // Layers far fewer: each has its own named tensors, listed before
        // the weights' size is checked.
        const LIMIT: usize = 1 << 24;
        const LAYERS_LIMIT: usize = 1 << 12;
        for (field, v, limit) in [
            ("hidden_size", self.hidden_size, LIMIT),
            ("intermediate_size", self.intermediate_size, LIMIT),
            ("num_hidden_layers", self.num_hidden_layers, LAYERS_LIMIT),
            ("num_attention_heads", self.num_attention_heads, LIMIT),
            ("vocab_size", self.vocab_size, LIMIT),
            ("max_position_embeddings", self.max_position_embeddings, LIMIT),
        ] {
            if v > limit {
                return Err(Error::config(
                    field,
                    format!("{v} is larger than this program supports ({limit})"),
                ));
            }
        }
        let heads = self.num_attention_heads;
        let kv = self.num_key_value_heads.unwrap_or(heads);
        positive("num_key_value_heads", kv)?;
        if !heads.is_multiple_of(kv) {
            return Err(Error::config(
                "num_key_value_heads",
                format!("{kv} does not divide num_attention_heads = {heads}"),
            ));
        }
        if !self.hidden_size.is_multiple_of(heads) {
            return Err(Error::config(
                "num_attention_heads",
                format!("{heads} heads do not divide hidden_size = {}", self.hidden_size),
            ));
        }
        let head_dim = self.hidden_size / heads;
        if let Some(hd) = self.head_dim {
            if hd != head_dim {
                return Err(Error::config(
                    "head_dim",
                    format!("{hd} differs from hidden_size / num_attention_heads = {head_dim}; only that layout is supported"),
                ));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::config(
                "rms_norm_eps",
                format!("{} is not a positive number", self.rms_norm_eps),
            ));
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(Error::config(
                    "hidden_act",
                    format!("`{act}` is not supported (only `silu`, SwiGLU)"),
                ));
            }
        }
        if self.attention_bias == Some(true) {
            return Err(Error::config(
                "attention_bias",
                "biases in attention projections are not supported",
            ));
        }
        if self.mlp_bias == Some(true) {
            return Err(Error::config("mlp_bias", "biases in the MLP are not supported"));
        }
        let position_encoding = match self.position_encoding.as_deref().unwrap_or("none") {
            "none" | "nope" => PositionEncoding::None,
            "rope" => {
                let theta = self.rope_theta.unwrap_or(10000.0);
                if !(theta.is_finite() && theta > 1.0) {
                    return Err(Error::config(
                        "rope_theta",
                        format!("{theta} must be a finite number above 1"),
                    ));
                }
                if !head_dim.is_multiple_of(2) {
                    return Err(Error::config(
                        "position_encoding",
                        format!("rope needs an even head dimension, got {head_dim}"),
                    ));
                }
                PositionEncoding::Rope { theta }
            }
            other => {
                return Err(Error::config(
                    "position_encoding",
                    format!("unknown position encoding `{other}` (expected `none` or `rope`)"),
                ))
            }
        };
        if let Some(b) = self.bos_token_id {
            if b as usize >= self.vocab_size {
                return Err(Error::config(
                    "bos_token_id",
                    format!("{b} is outside the vocabulary (vocab_size {})", self.vocab_size),
                ));
            }
        }
        let config = ModelConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            training_length: self.max_position_embeddings,
            position_encoding,
            bos_token_id: self.bos_token_id,
        };
        // Each size is below LIMIT, but their products over many layers can
        // still overflow a usize (on wasm32 already at two sizes).
        if config.num_params().is_none() {
            return Err(Error::config(
                "num_hidden_layers",
                format!(
                    "{} layers of this size (hidden_size {}, intermediate_size {}, vocab_size {}) hold more parameters than this program can count",
                    self.num_hidden_layers, self.hidden_size, self.intermediate_size, self.vocab_size
                ),
            ));
        }
        Ok(config)
    }
}

impl ModelConfig {
    /// The configuration written back as Hugging Face's `config.json`.
    pub fn to_hf(&self) -> HfConfig {
        let (pe, theta) = match self.position_encoding {
            PositionEncoding::None => ("none", None),
            PositionEncoding::Rope { theta } => ("rope", Some(theta)),
        };
        HfConfig {
            architectures: Some(vec!["LlamaForCausalLM".into()]),
            model_type: Some("llama".into()),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_layers,
            num_attention_heads: self.num_heads,
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            max_position_embeddings: self.training_length,
            hidden_act: Some("silu".into()),
            bos_token_id: self.bos_token_id,
            eos_token_id: None,
            position_encoding: Some(pe.into()),
            rope_theta: theta,
            attention_bias: Some(false),
            mlp_bias: Some(false),
            torch_dtype: Some("float32".into()),
        }
    }

    /// The number of parameters, as [`ParamLayout::new`] lays them out
    /// (`layout.total`), or `None` where it overflows a usize. Computed
    /// without allocating, so sizes can be checked before any allocation.
    ///
    /// [`ParamLayout::new`]: super::params::ParamLayout::new
    pub fn num_params(&self) -> Option<usize> {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_heads.checked_mul(self.head_dim)?;
        let kv = self.num_kv_heads.checked_mul(self.head_dim)?;
        let embed = v.checked_mul(d)?;
        // Two norms, q/o projections, k/v projections, three MLP matrices.
        let per_layer = d
            .checked_mul(2)?
            .checked_add(q.checked_mul(d)?.checked_mul(2)?)?
            .checked_add(kv.checked_mul(d)?.checked_mul(2)?)?
            .checked_add(f.checked_mul(d)?.checked_mul(3)?)?;
        let lm_head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_layers
            .checked_mul(per_layer)?
            .checked_add(embed)?
            .checked_add(d)?
            .checked_add(lm_head)
    }

    /// One attention call of this model over `t` positions.
    pub fn attn_shape(&self, t: usize) -> super::shapes::AttnShape {
        super::shapes::AttnShape {
            t,
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            hd: self.head_dim,
        }
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// The benchmark model: random weights, hidden 192, 6 layers, 6 heads,
    /// SwiGLU 512, vocabulary 4096, trained length 256.
    pub fn bench() -> ModelConfig {
        ModelConfig {
            hidden_size: 192,
            intermediate_size: 512,
            num_layers: 6,
            num_heads: 6,
            num_kv_heads: 6,
            head_dim: 32,
            vocab_size: 4096,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            training_length: 256,
            position_encoding: PositionEncoding::None,
            bos_token_id: None,
        }
    }

    /// The shapes of the paper's checkpoint, TinyLlama-NoPE-1.1B: 22
    /// layers, 32 heads of 64, 4 KV heads, hidden 2048, SwiGLU 5632,
    /// vocabulary 32000, untied, trained to 2048 tokens (1.1B parameters;
    /// its embedding and LM head are 262 MB each in f32).
    pub fn tinyllama_nope() -> ModelConfig {
        ModelConfig {
            hidden_size: 2048,
            intermediate_size: 5632,
            num_layers: 22,
            num_heads: 32,
            num_kv_heads: 4,
            head_dim: 64,
            vocab_size: 32000,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            training_length: 2048,
            position_encoding: PositionEncoding::None,
            bos_token_id: Some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5
        })
    }

    fn parse(v: serde_json::Value) -> Result<ModelConfig> {
        serde_json::from_value::<HfConfig>(v).unwrap().validate()
    }

    #[test]
    fn defaults_to_nope() {
        let c = parse(base()).unwrap();
        assert_eq!(c.position_encoding, PositionEncoding::None);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.group_size(), 2);
        assert_eq!(c.training_length, 128);
        // round trip
        assert_eq!(c.to_hf().validate().unwrap(), c);
    }

    #[test]
    fn each_inconsistency_names_its_field() {
        let cases = [
            (
                "num_attention_heads",
                serde_json::json!({"num_attention_heads": 5, "num_key_value_heads": 5}),
            ),
            ("num_key_value_heads", serde_json::json!({"num_key_value_heads": 3})),
            ("position_encoding", serde_json::json!({"position_encoding": "alibi"})),
            (
                "rope_theta",
                serde_json::json!({"position_encoding": "rope", "rope_theta": -1.0}),
            ),
            ("rms_norm_eps", serde_json::json!({"rms_norm_eps": 0.0})),
            ("hidden_size", serde_json::json!({"hidden_size": 0})),
            ("head_dim", serde_json::json!({"head_dim": 8})),
            ("hidden_act", serde_json::json!({"hidden_act": "gelu"})),
            (
                "max_position_embeddings",
                serde_json::json!({"max_position_embeddings": (1u64 << 24) + 1}),
            ),
            ("num_hidden_layers", serde_json::json!({"num_hidden_layers": 4097})),
        ];
        for (field, patch) in cases {
            let mut v = base();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let err = parse(v).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn num_params_matches_layout_and_overflow_is_refused() {
        use crate::model::params::ParamLayout;
        let mut c = ModelConfig::bench();
        for tied in [false, true] {
            c.tie_word_embeddings = tied;
            assert_eq!(c.num_params(), Some(ParamLayout::new(&c).total));
        }
        let g = parse(base()).unwrap();
        assert_eq!(g.num_params(), Some(ParamLayout::new(&g).total));
        // Every size at the per-field limit: the count overflows a usize and
        // validation says so instead of panicking in ParamLayout::new.
        let mut v = base();
        for k in ["hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"] {
            v[k] = (1usize << 24).into();
        }
        v["num_attention_heads"] = 1.into();
        v["num_key_value_heads"] = 1.into();
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers"), "{err}");
        // At the layers' own limit the count fits a usize, but its bytes do
        // not fit a u64: the estimate saturates (a model no machine holds)
        // instead of wrapping to a small number or panicking.
        let mut v = base();
        for k in ["hidden_size", "intermediate_size", "vocab_size"] {
            v[k] = (1usize << 24).into();
        }
        v["num_hidden_layers"] = 4096.into();
        v["num_attention_heads"] = 1.into();
        v["num_key_value_heads"] = 1.into();
        let c = parse(v).unwrap();
        assert_eq!(crate::model::memory::weights_bytes(&c), u64::MAX);
        let f = crate::model::memory::cpu_engine(&c, usize::MAX / 2, 2);
        assert_eq!((f.working, f.total()), (u64::MAX, u64::MAX));
    }

    #[test]
    fn tinyllama_nope_shape_validates() {
        let c = parse(serde_json::json!({
            "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
            "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
        }))
        .unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.group_size(), 8);
    }
}
