//! Where every weight lives: all parameters in one flat vector, addressed by
//! a layout of Hugging Face tensor names, shapes and offsets. One flat vector
//! lets the optimizer, gradient clipping and the gradient checks treat the
//! whole model as one array.

use super::config::ModelConfig;
use super::real::Real;
use super::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// RMSNorm gains are initialised to one, matrices at random.
    pub fn is_norm(&self) -> bool {
        self.shape.len() == 1
    }
}

/// Offsets of one decoder layer's tensors in the flat vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerOffsets {
    pub attn_norm: usize, // (C)
    pub wq: usize,        // (H*hd, C)
    pub wk: usize,        // (KV*hd, C)
    pub wv: usize,        // (KV*hd, C)
    pub wo: usize,        // (C, H*hd)
    pub mlp_norm: usize,  // (C)
    pub w_gate: usize,    // (F, C)
    pub w_up: usize,      // (F, C)
    pub w_down: usize,    // (C, F)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    pub total: usize,
    pub embed: usize, // (V, C)
    pub layers: Vec<LayerOffsets>,
    pub norm: usize,    // (C)
    pub lm_head: usize, // (V, C); equals `embed` when tied
}

impl ParamLayout {
    pub fn new(c: &ModelConfig) -> ParamLayout {
        let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let mut tensors = Vec::new();
        let mut total = 0usize;
        let mut push = |name: String, shape: Vec<usize>| -> usize {
            let offset = total;
            total += shape.iter().product::<usize>();
            tensors.push(TensorSpec { name, shape, offset });
            offset
        };
        let embed = push("model.embed_tokens.weight".into(), vec![v, d]);
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}.");
            layers.push(LayerOffsets {
                attn_norm: push(format!("{p}input_layernorm.weight"), vec![d]),
                wq: push(format!("{p}self_attn.q_proj.weight"), vec![c.q_dim(), d]),
                wk: push(format!("{p}self_attn.k_proj.weight"), vec![c.kv_dim(), d]),
                wv: push(format!("{p}self_attn.v_proj.weight"), vec![c.kv_dim(), d]),
                wo: push(format!("{p}self_attn.o_proj.weight"), vec![d, c.q_dim()]),
                mlp_norm: push(format!("{p}post_attention_layernorm.weight"), vec![d]),
                w_gate: push(format!("{p}mlp.gate_proj.weight"), vec![f, d]),
                w_up: push(format!("{p}mlp.up_proj.weight"), vec![f, d]),
                w_down: push(format!("{p}mlp.down_proj.weight"), vec![d, f]),
            });
        }
        let norm = push("model.norm.weight".into(), vec![d]);
        let lm_head = if c.tie_word_embeddings {
            embed
        } else {
            push("lm_head.weight".into(), vec![v, d])
        };
        ParamLayout {
            tensors,
            total,
            embed,
            layers,
            norm,
            lm_head,
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// All parameters of a model in one vector, with their layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<T> {
    pub layout: ParamLayout,
    pub data: Vec<T>,
}

impl<T: Real> Params<T> {
    pub fn zeros(layout: ParamLayout) -> Self {
        let data = vec![T::zero(); layout.total];
        Params { layout, data }
    }

    /// Gains of one, matrices from N(0, std^2) as Llama initialises them.
    pub fn random(config: &ModelConfig, std: f64, seed: u64) -> Self {
        let layout = ParamLayout::new(config);
        let mut data = vec![T::zero(); layout.total];
        let mut rng = Rng::new(seed);
        for t in &layout.tensors {
            for x in &mut data[t.range()] {
                *x = if t.is_norm() {
                    T::one()
                } else {
                    T::from_f64(rng.normal() * std)
                };
            }
        }
        Params { layout, data }
    }

    pub fn tensor(&self, name: &str) -> Option<&[T]> {
        self.layout.get(name).map(|t| &self.data[t.range()])
    }

    pub fn convert<U: Real>(&self) -> Params<U> {
        Params {
            layout: self.layout.clone(),
            data: self.data.iter().map(|x| U::from_f64(x.as_f64())).collect(),
        }
    }

    /// A short name for these weights, to tell two models apart (a scales
    /// file records its model's): 16 hex digits of FNV-1a over the count
    /// and up to 2^16 values spread evenly over all of them, read as f32
    /// (a model retrained, or another model of the same shape, changes
    /// nearly every value; a copy or another path to it, none). Not a
    /// checksum of the files: it reads the weights as loaded.
    pub fn fingerprint(&self) -> String {
        const SAMPLES: usize = 1 << 16;
        let n = self.data.len();
        let step = n.div_ceil(SAMPLES).max(1);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let sampled = self.data.iter().step_by(step).map(|x| x.as_f32().to_bits());
        for word in std::iter::once(n as u64).chain(sampled.map(u64::from)) {
            for byte in word.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::PositionEncoding;

    #[test]
    fn layout_counts_parameters() {
        let mut c = ModelConfig::bench();
        let l = ParamLayout::new(&c);
        let per_layer = 192 + 4 * 192 * 192 + 192 + 3 * 192 * 512;
        assert_eq!(l.total, 2 * 4096 * 192 + 6 * per_layer + 192);
        c.tie_word_embeddings = true;
        c.position_encoding = PositionEncoding::None;
        let l2 = ParamLayout::new(&c);
        assert_eq!(l2.total, l.total - 4096 * 192);
        assert_eq!(l2.lm_head, l2.embed);
        assert!(l2.get("lm_head.weight").is_none());
    }

    /// Two seeds, or one value changed where it is sampled, give another
    /// fingerprint; a copy and an f64 copy of the same weights the same.
    #[test]
    fn fingerprints_tell_weights_apart() {
        let c = ModelConfig::bench();
        let a = Params::<f32>::random(&c, 0.02, 1);
        let print = a.fingerprint();
        assert_eq!(print.len(), 16);
        assert_eq!(a.clone().fingerprint(), print);
        assert_eq!(a.convert::<f64>().fingerprint(), print);
        assert_ne!(Params::<f32>::random(&c, 0.02, 2).fingerprint(), print);
        let mut b = a.clone();
        b.data[0] += 1e-3;
        assert_ne!(b.fingerprint(), print);
    }
}
