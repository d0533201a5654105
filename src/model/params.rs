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
}
