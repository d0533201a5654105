//! The weight slots: one buffer per tensor, where each layer's tensors sit,
//! and what the device's binding limit allows of them.

use super::*;

/// A run of adjacent tensors held in one buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) offset: usize,
    pub(super) len: usize,
    /// RMSNorm gains: no weight decay.
    pub(super) norm: bool,
}

pub(super) fn slots_of(cfg: &ModelConfig, layout: &ParamLayout) -> Vec<Slot> {
    let (c, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let slot = |offset, len, norm| Slot { offset, len, norm };
    let mut slots = vec![slot(layout.embed, v * c, false)];
    for o in &layout.layers {
        slots.extend([
            slot(o.attn_norm, c, true),
            slot(o.wq, qd * c, false),
            slot(o.wk, kvd * c, false),
            slot(o.wv, kvd * c, false),
            slot(o.wo, c * qd, false),
            slot(o.mlp_norm, c, true),
            slot(o.w_gate, 2 * f * c, false),
            slot(o.w_down, c * f, false),
        ]);
    }
    slots.push(slot(layout.norm, c, true));
    if !cfg.tie_word_embeddings {
        slots.push(slot(layout.lm_head, v * c, false));
    }
    slots
}

impl GpuEngine {
    pub(super) fn slot(&self, layer: usize, which: usize) -> usize {
        1 + layer * LAYER_SLOTS + which
    }

    pub(super) fn norm_slot(&self) -> usize {
        1 + self.config.num_layers * LAYER_SLOTS
    }

    pub(super) fn lm_head_slot(&self) -> usize {
        if self.config.tie_word_embeddings {
            0
        } else {
            self.norm_slot() + 1
        }
    }

    /// The max storage binding in force (the device's unless lowered).
    pub(super) fn binding_limit(&self) -> u64 {
        self.ctx.limits().max_storage_buffer_binding_size
    }

    /// Err naming the first weight matrix past the max storage binding:
    /// each slot is bound whole, and the engine does not split weights.
    pub(super) fn check_weights(&self) -> Result<()> {
        let limit = self.binding_limit();
        for s in &self.slots {
            let bytes = s.len as u64 * 4;
            if bytes > limit {
                let names: Vec<&str> = self
                    .layout
                    .tensors
                    .iter()
                    .filter(|t| t.offset >= s.offset && t.offset < s.offset + s.len)
                    .map(|t| t.name.as_str())
                    .collect();
                return Err(Error::DeviceLimit(format!(
                    "GPU engine ({}): the weight matrix {} ({} values, {bytes} bytes) is past the device's max \
                     storage buffer binding of {limit} bytes, and weights are not split",
                    self.ctx.adapter(),
                    names.join(" + "),
                    s.len
                )));
            }
        }
        Ok(())
    }

    /// The widest of the per-token buffers that are paged by rows: (what,
    /// f32 per row).
    pub(super) fn widest_row(&self) -> (&'static str, usize) {
        let cfg = &self.config;
        [
            ("the (T, 2F) gate/up activations", 2 * cfg.intermediate_size),
            ("the (T, C) residual stream", cfg.hidden_size),
            ("the (T, H*hd) queries", cfg.q_dim()),
            ("the (T, KV*hd) keys", cfg.kv_dim()),
            ("the attention state (H, T, 3)", 3 * cfg.num_heads),
        ]
        .into_iter()
        .max_by_key(|&(_, w)| w)
        .expect("five")
    }
}
