//! The weight slots: one buffer per tensor, where each layer's tensors sit,
//! and what the device's binding limit allows of them: the two (vocab, C)
//! matrices (embedding and LM head) are split by rows into parts that fit
//! one binding each when they do not fit whole (the paper's 1.1B model has
//! 262 MB each in f32, past the 128 MiB many browsers and lavapipe allow);
//! any other matrix past the limit is refused, naming it.

use std::ops::Range;

use super::*;
use crate::gpu::shader::{Elem, Weight};

/// A run of adjacent tensors held in one buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) offset: usize,
    pub(super) len: usize,
    /// RMSNorm gains: no weight decay.
    pub(super) norm: bool,
    /// Values per row of the slot's matrix where it may be split by rows
    /// (the (vocab, C) embedding and LM head); `None` for the rest.
    pub(super) split_row: Option<usize>,
}

/// One buffer of a slot: rows `rows` of its matrix (all of them unless
/// the slot is split).
#[derive(Debug)]
pub(super) struct Part {
    pub(super) rows: Range<usize>,
    pub(super) buffer: wgpu::Buffer,
    pub(super) elem: Elem,
}

impl Part {
    pub(super) fn weight(&self) -> Weight<'_> {
        Weight {
            buffer: &self.buffer,
            elem: self.elem,
        }
    }
}

pub(super) fn slots_of(cfg: &ModelConfig, layout: &ParamLayout) -> Vec<Slot> {
    let (c, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let slot = |offset, len, norm| Slot {
        offset,
        len,
        norm,
        split_row: None,
    };
    let vocab_slot = |offset| Slot {
        offset,
        len: v * c,
        norm: false,
        split_row: Some(c),
    };
    let mut slots = vec![vocab_slot(layout.embed)];
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
        slots.push(vocab_slot(layout.lm_head));
    }
    slots
}

/// The rows of each part of a slot under a binding limit of `limit`
/// bytes: the whole slot when it fits, else (a splittable slot) parts of as
/// many rows as fit, a multiple of 4 where at least 4 fit (so each part's
/// first column in the logits suits the vec4 products), the last shorter.
/// None when the slot cannot be held: not splittable, or one row too wide.
pub(super) fn part_rows(slot: &Slot, elem: Elem, limit: u64) -> Option<Vec<Range<usize>>> {
    if elem.bytes(slot.len) <= limit {
        let rows = slot.split_row.map_or(1, |row| slot.len / row.max(1));
        return Some(std::iter::once(0..rows).collect());
    }
    let row = slot.split_row?;
    let fit = (limit / elem.bytes(row)) as usize;
    let per_part = if fit >= 4 { fit - fit % 4 } else { fit };
    if per_part == 0 {
        return None;
    }
    let rows = slot.len / row;
    Some(
        (0..rows)
            .step_by(per_part)
            .map(|r| r..(r + per_part).min(rows))
            .collect(),
    )
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

    /// The tensors' names a slot holds, for messages.
    fn slot_names(&self, s: &Slot) -> String {
        let names: Vec<&str> = self
            .layout
            .tensors
            .iter()
            .filter(|t| t.offset >= s.offset && t.offset < s.offset + s.len)
            .map(|t| t.name.as_str())
            .collect();
        names.join(" + ")
    }

    /// How a slot's values are held: the engine's format for matrices,
    /// f32 for the RMSNorm gains.
    pub(super) fn slot_elem(&self, s: &Slot) -> Elem {
        if s.norm {
            Elem::F32
        } else {
            self.elem
        }
    }

    /// The parts of every slot under the binding limit in force; Err
    /// naming the first weight matrix that no split lets the device hold.
    pub(super) fn plan_parts(&self) -> Result<Vec<Vec<Range<usize>>>> {
        let limit = self.binding_limit();
        self.slots
            .iter()
            .map(|s| {
                part_rows(s, self.slot_elem(s), limit).ok_or_else(|| {
                    let bytes = self.slot_elem(s).bytes(s.len);
                    let why = match s.split_row {
                        None => "and only the embedding and the LM head are split by rows",
                        Some(_) => "and not even one row of it fits",
                    };
                    Error::DeviceLimit(format!(
                        "GPU engine ({}): the weight matrix {} ({} values, {bytes} bytes) is past the device's max \
                         storage buffer binding of {limit} bytes, {why}",
                        self.ctx.adapter(),
                        self.slot_names(s),
                        s.len
                    ))
                })
            })
            .collect()
    }

    /// Err naming the first weight matrix the binding limit in force does
    /// not allow: one refused by `plan_parts`, or a part uploaded under a
    /// higher limit than the one a test lowered it to since.
    pub(super) fn check_weights(&self) -> Result<()> {
        self.plan_parts()?;
        let limit = self.binding_limit();
        for (s, parts) in self.slots.iter().zip(&self.weights) {
            for part in parts {
                if part.buffer.size() > limit {
                    return Err(Error::DeviceLimit(format!(
                        "GPU engine ({}): a part of the weight matrix {} ({} bytes) is past the max storage \
                         buffer binding of {limit} bytes in force; it was split under a higher one",
                        self.ctx.adapter(),
                        self.slot_names(s),
                        part.buffer.size()
                    )));
                }
            }
        }
        Ok(())
    }

    /// A slot's one buffer: every slot but the embedding and the LM head,
    /// which `plan_parts` never splits.
    pub(super) fn whole(&self, slot: usize) -> &wgpu::Buffer {
        self.weight(slot).buffer
    }

    /// A matrix slot's one buffer as a weight operand (f32 or f16).
    pub(super) fn weight(&self, slot: usize) -> Weight<'_> {
        let parts = &self.weights[slot];
        debug_assert_eq!(parts.len(), 1, "slot {slot} is split");
        parts[0].weight()
    }

    /// Err when a weight matrix is split across bindings: the weight
    /// gradients and the optimizer's state are made per slot, bound whole.
    /// Inference and the head-scale gradients of a frozen model run on
    /// split weights; training them needs the CPU engine.
    pub(super) fn check_trainable(&self) -> Result<()> {
        if self.elem == Elem::F16 {
            return Err(Error::Engine(format!(
                "GPU engine ({}): the weights are held in f16, for forwards and head-scale searches; training \
                 needs them in f32",
                self.ctx.adapter()
            )));
        }
        for (s, parts) in self.slots.iter().zip(&self.weights) {
            if parts.len() > 1 {
                return Err(Error::DeviceLimit(format!(
                    "GPU engine ({}): training needs each weight matrix in one binding, and {} ({} bytes) is split \
                     across {} bindings of at most {} bytes; forwards and head-scale searches run, training needs \
                     the CPU engine",
                    self.ctx.adapter(),
                    self.slot_names(s),
                    s.len as u64 * 4,
                    parts.len(),
                    self.binding_limit()
                )));
            }
        }
        Ok(())
    }

    /// Every weight buffer as (offset in the flat parameters, values,
    /// buffer), in layout order.
    pub(super) fn weight_pieces(&self) -> Vec<(usize, usize, &wgpu::Buffer)> {
        let mut pieces = Vec::new();
        for (s, parts) in self.slots.iter().zip(&self.weights) {
            let row = s.split_row.unwrap_or(s.len);
            for p in parts {
                let len = match s.split_row {
                    Some(_) => p.rows.len() * row,
                    None => s.len,
                };
                pieces.push((s.offset + p.rows.start * row, len, &p.buffer));
            }
        }
        pieces
    }

    /// Per-slot buffers (gradients, moments) as `weight_pieces` gives them.
    pub(super) fn slot_pieces<'a>(&self, buffers: &'a [wgpu::Buffer]) -> Vec<(usize, usize, &'a wgpu::Buffer)> {
        self.slots
            .iter()
            .zip(buffers)
            .map(|(s, b)| (s.offset, s.len, b))
            .collect()
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
