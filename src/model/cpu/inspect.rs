//! What the attention viewer shows, computed on the CPU from the weights:
//! the attention rows of chosen queries for one head, and a pooled map of
//! the whole T x T pattern, neither ever holding a T x T buffer.
//!
//! Both run the model plainly up to the layer asked for (the same ops as
//! [`super::transformer::forward`]), then score the keys of one head row by
//! row: p_ij = softmax_j(s_h q_i . k_j / sqrt(d)), j <= i. Every engine
//! reaches these through the `Engine` trait's default methods (the GPU
//! engine hands over its weights), so there is one definition to test.

use super::attention::attention_forward;
use super::ops::{embedding_forward, rmsnorm_forward, rope_apply, scale_rows, swiglu_forward};
use crate::model::config::{ModelConfig, PositionEncoding};
use crate::model::engine::check_inputs;
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;
use crate::model::params::Params;
use crate::model::real::{matmul_nt, Real};

fn w(p: &Params<f32>, off: usize, len: usize) -> &[f32] {
    &p.data[off..off + len]
}

/// q (T, H*hd) and k (T, KV*hd) of `layer`, as projected (and rotated).
fn layer_qk(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    layer: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut out = (Vec::new(), Vec::new());
    run_layers(cfg, params, tokens, head_scales, layer, |l, q, k| {
        if l == layer {
            out = (q.to_vec(), k.to_vec());
        }
    });
    out
}

/// Runs the model plainly through layers 0..=`last`, handing each layer's
/// q (T, H*hd) and k (T, KV*hd), as projected (and rotated), to `visit`.
fn run_layers(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    last: usize,
    mut visit: impl FnMut(usize, &[f32], &[f32]),
) {
    let t = tokens.len();
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let lay = &params.layout;
    let mut x = vec![0f32; t * c]; // (T, C)
    embedding_forward(&mut x, w(params, lay.embed, cfg.vocab_size * c), tokens, c);
    let mut xn = vec![0f32; t * c];
    let mut rstd = vec![0f32; t];
    let mut qkv = vec![0f32; t * (qd + 2 * kvd)]; // (T, qd + 2 kvd): q, k, v
    let (mut q, mut k, mut v) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
    for (l, o) in lay.layers.iter().enumerate().take(last + 1) {
        rmsnorm_forward(&mut xn, &mut rstd, &x, w(params, o.attn_norm, c), c, cfg.rms_norm_eps);
        // Wq, Wk, Wv are adjacent: one product, then split per row.
        matmul_nt(
            &mut qkv,
            &xn,
            w(params, o.wq, (qd + 2 * kvd) * c),
            t,
            c,
            qd + 2 * kvd,
            1.0,
            0.0,
        );
        for (i, row) in qkv.chunks_exact(qd + 2 * kvd).enumerate() {
            q[i * qd..(i + 1) * qd].copy_from_slice(&row[..qd]);
            k[i * kvd..(i + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
            v[i * kvd..(i + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
        }
        if let PositionEncoding::Rope { theta } = cfg.position_encoding {
            rope_apply(&mut q, t, hh, hd, theta, false);
            rope_apply(&mut k, t, kvh, hd, theta, false);
        }
        // The scale rule: q_i <- r(i) q_i, as the engines apply it.
        if let Some(factors) = head_scales.rule.factors(0..t) {
            scale_rows(&mut q, &factors, qd);
        }
        visit(l, &q, &k);
        if l == last {
            break;
        }
        let mut att = vec![0f32; t * qd];
        let mut lse = vec![0f32; hh * t];
        let shape = cfg.attn_shape(t);
        let scales = &head_scales.values[l * hh..(l + 1) * hh];
        attention_forward(&mut att, &mut lse, None, &q, &k, &v, scales, shape);
        // x += att Wo^T
        matmul_nt(&mut x, &att, w(params, o.wo, c * qd), t, qd, c, 1.0, 1.0);
        rmsnorm_forward(&mut xn, &mut rstd, &x, w(params, o.mlp_norm, c), c, cfg.rms_norm_eps);
        let mut gu = vec![0f32; t * 2 * f]; // (T, 2F): gate then up
        matmul_nt(&mut gu, &xn, w(params, o.w_gate, 2 * f * c), t, c, 2 * f, 1.0, 0.0);
        let mut h = vec![0f32; t * f];
        swiglu_forward(&mut h, &gu, f);
        // x += h Wd^T
        matmul_nt(&mut x, &h, w(params, o.w_down, c * f), t, f, c, 1.0, 1.0);
    }
}

/// Query `query`'s attention over keys 0..=query in every head, one run
/// of the model: (layers x heads) rows of query + 1 weights, layer-major.
/// (One head at a time would run the model up to its layer for each.)
pub fn query_rows_every_head(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    query: usize,
) -> Result<Vec<Vec<f32>>> {
    check(cfg, tokens, head_scales, 0, 0)?;
    let t = tokens.len();
    if query >= t {
        return Err(Error::Input(format!("query {query} is past the {t} tokens")));
    }
    let (hh, hd) = (cfg.num_heads, cfg.head_dim);
    let group = hh / cfg.num_kv_heads;
    let mut rows = Vec::with_capacity(cfg.num_layers * hh);
    run_layers(cfg, params, tokens, head_scales, cfg.num_layers - 1, |l, q, k| {
        for h in 0..hh {
            let qh = gather(q, query + 1, cfg.q_dim(), h * hd, hd);
            let kh = gather(k, query + 1, cfg.kv_dim(), (h / group) * hd, hd);
            let lambda = head_scales.get(l, h) / (hd as f32).sqrt();
            rows.push(head_row(&qh, &kh, hd, query, lambda, query + 1));
        }
    });
    Ok(rows)
}

fn check(cfg: &ModelConfig, tokens: &[u32], head_scales: &HeadScales, layer: usize, head: usize) -> Result<()> {
    check_inputs(cfg, tokens, head_scales)?;
    if layer >= cfg.num_layers || head >= cfg.num_heads {
        return Err(Error::Input(format!(
            "layer {layer}, head {head} is outside the model's {} layers x {} heads",
            cfg.num_layers, cfg.num_heads
        )));
    }
    Ok(())
}

/// Query rows `i0..i0 + rows` of one head's attention over keys 0..=i
/// (row r is query i = i0 + r), into `out` as `rows` rows of width
/// `i0 + rows`, zero past each query (the mask); returns the width. `q`
/// holds the head's queries and `k` its keys, (T, hd) each; `lambda` =
/// s_h / sqrt(d). The scores are one matrix product, the softmax the
/// vectorized row kernels (what the engines' attention uses).
pub fn head_rows(out: &mut Vec<f32>, q: &[f32], k: &[f32], hd: usize, i0: usize, rows: usize, lambda: f32) -> usize {
    let width = i0 + rows;
    out.clear();
    out.resize(rows * width, 0.0);
    matmul_nt(
        out,
        &q[i0 * hd..width * hd],
        &k[..width * hd],
        rows,
        hd,
        width,
        lambda,
        0.0,
    );
    for (r, row) in out.chunks_exact_mut(width).enumerate() {
        let (live, masked) = row.split_at_mut(i0 + r + 1);
        let m = f32::row_max(live);
        let (z, _) = f32::exp_shift_sums(live, m);
        live.iter_mut().for_each(|p| *p /= z);
        masked.fill(0.0);
    }
    width
}

/// Query `i`'s attention over keys 0..=i of one head (`head_rows` for one
/// row), zero-padded to `width` (at least i + 1) weights.
pub fn head_row(q: &[f32], k: &[f32], hd: usize, i: usize, lambda: f32, width: usize) -> Vec<f32> {
    let mut row = Vec::with_capacity(width);
    head_rows(&mut row, q, k, hd, i, 1, lambda);
    row.resize(width, 0.0);
    row
}

/// One head's T x T attention pooled to n x n cells, built a block of query
/// rows at a time (`step`), so a caller can pause between blocks (the web
/// page draws a frame there): cell (a, b) is the mean over the queries of
/// bin a of the attention they give the keys of bin b, bin of position x =
/// x n / T; each row of cells sums to 1.
pub struct Pooler {
    t: usize,
    n: usize,
    /// Where each bin starts, and T: bin b is starts[b]..starts[b + 1].
    starts: Vec<usize>,
    map: Vec<f32>,
    /// The first query not pooled yet.
    next: usize,
    rows: Vec<f32>,
}

/// Query rows a `Pooler` step scores at once.
pub const POOL_BLOCK: usize = 64;

impl Pooler {
    /// A map of `cells` x `cells` (at most T x T) for T = `t` positions.
    pub fn new(t: usize, cells: usize) -> Self {
        let n = cells.min(t).max(1);
        let starts = (0..=n).map(|b| (b * t).div_ceil(n)).collect();
        Pooler {
            t,
            n,
            starts,
            map: vec![0.0; n * n],
            next: 0,
            rows: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.t
    }

    /// Fraction of the work done (later rows have more keys).
    pub fn fraction(&self) -> f32 {
        (self.next as f64 / self.t.max(1) as f64).powi(2) as f32
    }

    /// Pools the next block of at most `POOL_BLOCK` queries (`q`, `k`,
    /// `hd` and `lambda` as in [`head_rows`]).
    pub fn step(&mut self, q: &[f32], k: &[f32], hd: usize, lambda: f32) {
        let (i0, n) = (self.next, self.n);
        let rows = POOL_BLOCK.min(self.t - i0);
        let width = head_rows(&mut self.rows, q, k, hd, i0, rows, lambda);
        for (r, row) in self.rows.chunks_exact(width).enumerate() {
            let i = i0 + r;
            let a = i * n / self.t;
            let count = (self.starts[a + 1] - self.starts[a]) as f32;
            let cells = &mut self.map[a * n..(a + 1) * n];
            for (b, cell) in cells.iter_mut().enumerate().take(a + 1) {
                let keys = self.starts[b]..self.starts[b + 1].min(i + 1);
                *cell += row[keys].iter().sum::<f32>() / count;
            }
        }
        self.next = i0 + rows;
    }

    /// The map and its side n.
    pub fn finish(self) -> (Vec<f32>, usize) {
        (self.map, self.n)
    }
}

/// One head's queries and keys at `layer`, (T, hd) each, as the model
/// computes them (rotated, and scaled by the rule), and its lambda =
/// s_h / sqrt(d): what [`head_rows`] and [`Pooler`] read.
pub fn head_qk(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    layer: usize,
    head: usize,
) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    check(cfg, tokens, head_scales, layer, head)?;
    let t = tokens.len();
    let (q, k) = layer_qk(cfg, params, tokens, head_scales, layer);
    let hd = cfg.head_dim;
    let g = head / (cfg.num_heads / cfg.num_kv_heads);
    let lambda = head_scales.get(layer, head) / (hd as f32).sqrt();
    Ok((
        gather(&q, t, cfg.q_dim(), head * hd, hd),
        gather(&k, t, cfg.kv_dim(), g * hd, hd),
        lambda,
    ))
}

/// Columns `col..col + width` of each of the `t` rows of `m` (row stride
/// `stride`), as one (t, width) matrix.
fn gather(m: &[f32], t: usize, stride: usize, col: usize, width: usize) -> Vec<f32> {
    (0..t)
        .flat_map(|i| &m[i * stride + col..i * stride + col + width])
        .copied()
        .collect()
}

/// Attention of each query in `queries` over every key (`queries.len()` rows
/// of T; zero past the query: the mask) for `layer`, query head `head`.
pub fn attention_rows(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    layer: usize,
    head: usize,
    queries: &[usize],
) -> Result<Vec<f32>> {
    let t = tokens.len();
    if let Some(&bad) = queries.iter().find(|&&i| i >= t) {
        return Err(Error::Input(format!("query {bad} is past the {t} tokens")));
    }
    let (q, k, lambda) = head_qk(cfg, params, tokens, head_scales, layer, head)?;
    let hd = cfg.head_dim;
    Ok(queries
        .iter()
        .flat_map(|&i| head_row(&q, &k, hd, i, lambda, t))
        .collect())
}

/// The T x T attention of one head pooled to n x n cells, n = min(cells, T):
/// cell (a, b) is the mean over the queries of bin a of the attention they
/// give the keys of bin b (bin of position x: x n / T), so each row of
/// cells sums to 1. Returns (cells, n). Memory O(T (hd + `POOL_BLOCK`) + n^2).
pub fn pooled_attention(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    layer: usize,
    head: usize,
    cells: usize,
) -> Result<(Vec<f32>, usize)> {
    if cells == 0 {
        return Err(Error::Input("a pooled map needs at least one cell".into()));
    }
    let (q, k, lambda) = head_qk(cfg, params, tokens, head_scales, layer, head)?;
    let mut pooler = Pooler::new(tokens.len(), cells);
    while !pooler.is_done() {
        pooler.step(&q, &k, cfg.head_dim, lambda);
    }
    Ok(pooler.finish())
}

/// Entropy in bits of one attention row (zeros contribute nothing).
pub fn row_entropy_bits(row: &[f32]) -> f64 {
    -row.iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p as f64 * (p as f64).log2())
        .sum::<f64>()
}
