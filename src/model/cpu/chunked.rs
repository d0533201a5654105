//! The forward pass a few query rows at a time: prefill in chunks with a
//! K/V cache per layer. Causal attention lets rows [a, b) go through every
//! layer once the keys and values of rows [0, b) exist, so a single-threaded
//! caller (the web page) can stop after any chunk, let the browser draw a
//! frame, and go on. Same loss and attention entropy as
//! [`super::transformer::forward`], checked in tests/app_inspect.rs.

use super::ops::{cross_entropy_row, embedding_forward, rmsnorm_forward, scale_rows, swiglu_forward};
use crate::model::config::{ModelConfig, PositionEncoding};
use crate::model::engine::check_inputs;
use crate::model::error::Result;
use crate::model::head_scales::HeadScales;
use crate::model::params::Params;
use crate::model::real::{matmul_nn, matmul_nt, Real};

pub struct ChunkedForward<'a> {
    cfg: &'a ModelConfig,
    params: &'a Params<f32>,
    tokens: &'a [u32],
    scales: &'a [f32],
    /// The per-position scale rule.
    rule: crate::model::head_scales::ScaleRule,
    /// Rows done so far.
    done: usize,
    /// Per layer, keys and values of rows 0..done, per KV head: (KV, T,
    /// hd) each, so one head's keys are one contiguous (T, hd) matrix.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// (layers, heads, T) bits.
    pub entropy_bits: Vec<f32>,
    /// Sum of -ln p(token[i+1]) over the rows done.
    pub loss_sum: f64,
    /// With `capture(layer, head)`: that head's queries, (T, hd), as rotated.
    capture: Option<(usize, usize, Vec<f32>)>,
    /// With `stop_at(layer)`: the last layer run, up to its queries and keys.
    stop_at: Option<usize>,
    /// With `capture_query(i)`: query i's attention over keys 0..=i in
    /// every head, (layers x heads) rows of i + 1 weights, layer-major.
    query_rows: Option<(usize, Vec<f32>)>,
    /// With `outputs`: the logits of rows `keep_from`.. as they go by,
    /// each prediction's loss, and the loss weights `loss_sum` uses.
    keep_from: usize,
    pub logits: Vec<f32>,
    pub losses: Option<Vec<f32>>,
    weights: Option<&'a [f32]>,
}

fn w(p: &Params<f32>, off: usize, len: usize) -> &[f32] {
    &p.data[off..off + len]
}

/// RoPE of `n` rows at positions pos0.. (the same rotation as
/// `ops::rope_apply`, which starts at position 0).
fn rope_rows(x: &mut [f32], pos0: usize, n: usize, heads: usize, hd: usize, theta: f64) {
    let half = hd / 2;
    for r in 0..n {
        let pos = (pos0 + r) as f64;
        for i in 0..half {
            let (sin, cos) = (pos * theta.powf(-((2 * i) as f64) / hd as f64)).sin_cos();
            let (sin, cos) = (sin as f32, cos as f32);
            for h in 0..heads {
                let base = (r * heads + h) * hd;
                let (a, b) = (x[base + i], x[base + i + half]);
                x[base + i] = a * cos - b * sin;
                x[base + i + half] = b * cos + a * sin;
            }
        }
    }
}

impl<'a> ChunkedForward<'a> {
    pub fn new(cfg: &'a ModelConfig, params: &'a Params<f32>, tokens: &'a [u32], hs: &'a HeadScales) -> Result<Self> {
        check_inputs(cfg, tokens, hs)?;
        let t = tokens.len();
        Ok(ChunkedForward {
            cfg,
            params,
            tokens,
            scales: &hs.values,
            rule: hs.rule,
            done: 0,
            k: vec![vec![0.0; t * cfg.kv_dim()]; cfg.num_layers],
            v: vec![vec![0.0; t * cfg.kv_dim()]; cfg.num_layers],
            entropy_bits: vec![0.0; cfg.num_layers * cfg.num_heads * t],
            loss_sum: 0.0,
            capture: None,
            stop_at: None,
            query_rows: None,
            keep_from: t,
            logits: Vec::new(),
            losses: None,
            weights: None,
        })
    }

    /// Also keeps the logits of rows `keep_from`.. (row-major, vocab per
    /// row), each prediction's loss (`losses`), and weighs the loss sum by
    /// `weights` (one per prediction, checked by the caller), as the
    /// engine contract's forward options ask.
    pub fn outputs(mut self, keep_from: usize, losses: bool, weights: Option<&'a [f32]>) -> Self {
        let t = self.tokens.len();
        self.keep_from = keep_from.min(t);
        self.logits = Vec::with_capacity((t - self.keep_from) * self.cfg.vocab_size);
        self.losses = losses.then(|| Vec::with_capacity(t.saturating_sub(1)));
        self.weights = weights;
        self
    }

    /// The sum of the loss weights over the predictions (their count
    /// without weights), the denominator of the mean loss.
    pub fn weight_sum(&self) -> f64 {
        match self.weights {
            Some(w) => w.iter().map(|&x| x as f64).sum(),
            None => self.tokens.len().saturating_sub(1) as f64,
        }
    }

    /// Keeps the queries of one layer's head as the rows go by, for the
    /// attention viewer (see [`Self::attention_row`]).
    pub fn capture(mut self, layer: usize, head: usize) -> Self {
        let t = self.tokens.len();
        self.capture = Some((layer, head, vec![0.0; t * self.cfg.head_dim]));
        self
    }

    /// Runs each row only as far as `layer`'s queries and keys (what
    /// `capture` keeps): no attention there, no layer past it, no LM head,
    /// so neither entropy, loss nor logits are made. The attention viewer's
    /// head needs no more (for layer 0 of the bundled model, about a
    /// third of the whole forward).
    pub fn stop_at(mut self, layer: usize) -> Self {
        self.stop_at = Some(layer);
        self
    }

    /// Keeps query `i`'s attention in every head as its row goes by (the
    /// pass-key lab's ranking of heads: one run for all of them); a query
    /// past the tokens keeps nothing.
    pub fn capture_query(mut self, i: usize) -> Self {
        if i < self.tokens.len() {
            let rows = self.cfg.num_layers * self.cfg.num_heads;
            self.query_rows = Some((i, vec![0.0; rows * (i + 1)]));
        }
        self
    }

    /// With `capture_query(i)`, once row i is done: its attention over keys
    /// 0..=i in every head, layer-major (as
    /// [`super::inspect::query_rows_every_head`] gives it).
    pub fn query_rows(&self) -> Option<Vec<Vec<f32>>> {
        let (i, rows) = self.query_rows.as_ref().filter(|(i, _)| *i < self.done)?;
        Some(rows.chunks_exact(i + 1).map(<[f32]>::to_vec).collect())
    }

    /// The captured head's queries and keys, (T, hd) each, and its lambda =
    /// s_h / sqrt(d) (for [`super::inspect::head_rows`] and
    /// [`super::inspect::Pooler`]); None without a capture.
    pub fn captured(&self) -> Option<(&[f32], &[f32], f32)> {
        let (layer, head, q) = self.capture.as_ref()?;
        let hd = self.cfg.head_dim;
        let g = head / (self.cfg.num_heads / self.cfg.num_kv_heads);
        let lambda = self.scales[layer * self.cfg.num_heads + head] / (hd as f32).sqrt();
        let t = self.tokens.len();
        Some((q, &self.k[*layer][g * t * hd..(g + 1) * t * hd], lambda))
    }

    /// Attention of query `i` (a row done, of the captured head) over keys
    /// 0..=i, into `row` (length > i, zero past i); None without a capture.
    pub fn attention_row(&self, i: usize, row: &mut [f32]) -> Option<()> {
        let (q, k, lambda) = self.captured()?;
        row.copy_from_slice(&super::inspect::head_row(q, k, self.cfg.head_dim, i, lambda, row.len()));
        Some(())
    }

    pub fn is_done(&self) -> bool {
        self.done == self.tokens.len()
    }

    /// Fraction of the work done (attention grows with the row, so rows
    /// late in the sequence weigh more).
    pub fn fraction(&self) -> f32 {
        let t = self.tokens.len() as f64;
        let d = self.done as f64;
        (0.5 * (d / t + (d * d) / (t * t))) as f32
    }

    /// How many rows from here make about `budget` multiply-adds.
    pub fn rows_for(&self, budget: f64) -> usize {
        let c = self.cfg;
        let per_row = (c.num_layers
            * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim() + c.q_dim()) + 3 * c.hidden_size * c.intermediate_size)
            + c.vocab_size * c.hidden_size) as f64;
        let per_key = (c.num_layers * c.num_heads * c.head_dim * 2) as f64;
        let mut cost = 0.0;
        let mut rows = 0;
        while self.done + rows < self.tokens.len() && (rows == 0 || cost < budget) {
            cost += per_row + per_key * (self.done + rows + 1) as f64;
            rows += 1;
        }
        rows
    }

    /// Runs to the end a slice of rows at a time, each sized to about
    /// `slice_ms` by `clock` (milliseconds), awaiting `between(fraction)`
    /// after every slice but the last: the caller's frame, progress and
    /// cancel (`false` stops with `Error::Cancelled`).
    pub async fn run_sliced<F, Fut>(&mut self, clock: fn() -> f64, slice_ms: f64, mut between: F) -> Result<()>
    where
        F: FnMut(f32) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // Multiply-adds per slice, adjusted to the clock as slices finish.
        let mut budget = 2e6f64;
        while !self.is_done() {
            let t0 = clock();
            self.step(self.rows_for(budget));
            let ms = (clock() - t0).max(0.1);
            budget = (budget * (slice_ms / ms).clamp(0.5, 2.0)).max(1e5);
            if !self.is_done() && !between(self.fraction()).await {
                return Err(crate::model::error::Error::Cancelled);
            }
        }
        Ok(())
    }

    /// Runs rows done..done+rows through every layer and the LM head.
    pub fn step(&mut self, rows: usize) {
        let cfg = self.cfg;
        let (a, t) = (self.done, self.tokens.len());
        let n = rows.min(t - a);
        if n == 0 {
            return;
        }
        let (c, f, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let group = hh / kvh;
        let lay = &self.params.layout;
        let p = self.params;
        let mut x = vec![0f32; n * c]; // (n, C)
        embedding_forward(&mut x, w(p, lay.embed, vocab * c), &self.tokens[a..a + n], c);
        let mut xn = vec![0f32; n * c];
        let mut rstd = vec![0f32; n];
        let mut qkv = vec![0f32; n * (qd + 2 * kvd)];
        let mut q = vec![0f32; n * qd];
        let mut att = vec![0f32; n * qd];
        let mut gu = vec![0f32; n * 2 * f];
        let mut h = vec![0f32; n * f];
        let keys = a + n;
        let (mut kn, mut vn) = (vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let mut qh = vec![0f32; n * hd]; // one head's queries
        let mut scores = vec![0f32; n * keys]; // one head's (rows, keys)
        let mut oh = vec![0f32; n * hd]; // one head's output
        for (l, o) in lay.layers.iter().enumerate() {
            rmsnorm_forward(&mut xn, &mut rstd, &x, w(p, o.attn_norm, c), c, cfg.rms_norm_eps);
            matmul_nt(
                &mut qkv,
                &xn,
                w(p, o.wq, (qd + 2 * kvd) * c),
                n,
                c,
                qd + 2 * kvd,
                1.0,
                0.0,
            );
            for (r, row) in qkv.chunks_exact(qd + 2 * kvd).enumerate() {
                q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
                kn[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                vn[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
            }
            if let PositionEncoding::Rope { theta } = cfg.position_encoding {
                rope_rows(&mut q, a, n, hh, hd, theta);
                rope_rows(&mut kn, a, n, kvh, hd, theta);
            }
            // The new rows' keys and values into each KV head's (T, hd).
            let (kc, vc) = (&mut self.k[l], &mut self.v[l]);
            for g in 0..kvh {
                for r in 0..n {
                    let (dst, src) = ((g * t + a + r) * hd, r * kvd + g * hd);
                    kc[dst..dst + hd].copy_from_slice(&kn[src..src + hd]);
                    vc[dst..dst + hd].copy_from_slice(&vn[src..src + hd]);
                }
            }
            // The scale rule: q_i <- r(i) q_i for the rows a..a+n.
            if let Some(factors) = self.rule.factors(a..a + n) {
                scale_rows(&mut q, &factors, qd);
            }
            if let Some((cl, ch, cq)) = self.capture.as_mut() {
                if *cl == l {
                    for r in 0..n {
                        cq[(a + r) * hd..(a + r + 1) * hd]
                            .copy_from_slice(&q[r * qd + *ch * hd..r * qd + (*ch + 1) * hd]);
                    }
                }
            }
            if self.stop_at == Some(l) {
                self.done = a + n;
                return;
            }
            // Attention of the new rows over keys 0..=i, per head as two
            // matrix products (scores, then the weighted values) around a
            // masked softmax with its entropy: H = ln Z - E / Z in nats
            // (E = sum e^{s-m} (s-m)), over ln 2.
            for head in 0..hh {
                let g = head / group;
                let lambda = self.scales[l * hh + head] / (hd as f32).sqrt();
                let kg = &kc[g * t * hd..(g * t + keys) * hd];
                let vg = &vc[g * t * hd..(g * t + keys) * hd];
                for r in 0..n {
                    qh[r * hd..(r + 1) * hd].copy_from_slice(&q[r * qd + head * hd..r * qd + (head + 1) * hd]);
                }
                matmul_nt(&mut scores, &qh, kg, n, hd, keys, lambda, 0.0);
                for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                    let i = a + r;
                    let (seen, future) = row.split_at_mut(i + 1);
                    // The engine's vectorized max and exponentials (a
                    // polynomial, not the scalar library call).
                    let m = f32::row_max(seen);
                    let (z, e) = f32::exp_shift_sums(seen, m);
                    let inv = 1.0 / z;
                    seen.iter_mut().for_each(|x| *x *= inv);
                    future.fill(0.0);
                    self.entropy_bits[(l * hh + head) * t + i] = (z.ln() - e / z) / std::f32::consts::LN_2;
                    if let Some((qi, rows)) = self.query_rows.as_mut().filter(|(qi, _)| *qi == i) {
                        let w = *qi + 1;
                        rows[(l * hh + head) * w..(l * hh + head + 1) * w].copy_from_slice(seen);
                    }
                }
                matmul_nn(&mut oh, &scores, vg, n, keys, hd, 1.0, 0.0);
                for r in 0..n {
                    att[r * qd + head * hd..r * qd + (head + 1) * hd].copy_from_slice(&oh[r * hd..(r + 1) * hd]);
                }
            }
            matmul_nt(&mut x, &att, w(p, o.wo, c * qd), n, qd, c, 1.0, 1.0);
            rmsnorm_forward(&mut xn, &mut rstd, &x, w(p, o.mlp_norm, c), c, cfg.rms_norm_eps);
            matmul_nt(&mut gu, &xn, w(p, o.w_gate, 2 * f * c), n, c, 2 * f, 1.0, 0.0);
            swiglu_forward(&mut h, &gu, f);
            matmul_nt(&mut x, &h, w(p, o.w_down, c * f), n, f, c, 1.0, 1.0);
        }
        rmsnorm_forward(&mut xn, &mut rstd, &x, w(p, lay.norm, c), c, cfg.rms_norm_eps);
        let mut z = vec![0f32; n * vocab];
        matmul_nt(&mut z, &xn, w(p, lay.lm_head, vocab * c), n, c, vocab, 1.0, 0.0);
        for (r, row) in z.chunks_exact_mut(vocab).enumerate() {
            let i = a + r;
            if i >= self.keep_from {
                self.logits.extend_from_slice(row);
            }
            if i + 1 < t {
                let loss = cross_entropy_row(row, self.tokens[i + 1] as usize, None);
                self.loss_sum += match self.weights {
                    Some(w) => loss as f64 * w[i] as f64,
                    None => loss as f64,
                };
                if let Some(losses) = self.losses.as_mut() {
                    losses.push(loss);
                }
            }
        }
        self.done = a + n;
    }
}
