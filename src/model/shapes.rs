//! What both engines share about the shape of their work: the attention's
//! shape, and how many rows of logits are made at once. `model::cpu` and
//! `gpu` both use these; neither reaches into the other.

/// One attention call: `t` positions, `heads` query heads sharing
/// `kv_heads` key/value heads (grouped-query attention), head dim `hd`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
}

impl AttnShape {
    /// Floats between one position's queries and the next's.
    pub fn q_stride(&self) -> usize {
        self.heads * self.hd
    }
    /// Floats between one position's keys (or values) and the next's.
    pub fn kv_stride(&self) -> usize {
        self.kv_heads * self.hd
    }
    /// The key/value head query head `h` reads.
    pub fn group(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }
}

/// Rows of logits made at once: the (T, V) matrix is never whole unless
/// asked for.
pub const LOGIT_ROWS: usize = 1024;
