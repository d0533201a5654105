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
use crate::model::real::matmul_nt;

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
    for (l, o) in lay.layers.iter().enumerate().take(layer + 1) {
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
        if l == layer {
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
    (q, k)
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

/// Writes query i's attention over keys 0..=i into `row` (length >= i + 1)
/// and returns nothing else; `lambda` = s_h / sqrt(d).
fn softmax_row(row: &mut [f32], q: &[f32], k: &[f32], i: usize, kv_stride: usize, koff: usize, lambda: f32) {
    let hd = q.len();
    let mut m = f32::NEG_INFINITY;
    for (j, r) in row.iter_mut().enumerate().take(i + 1) {
        let kj = &k[j * kv_stride + koff..j * kv_stride + koff + hd];
        let s = lambda * q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>();
        *r = s;
        m = m.max(s);
    }
    let mut z = 0.0f32;
    for r in row.iter_mut().take(i + 1) {
        *r = (*r - m).exp();
        z += *r;
    }
    for r in row.iter_mut().take(i + 1) {
        *r /= z;
    }
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
    check(cfg, tokens, head_scales, layer, head)?;
    let t = tokens.len();
    if let Some(&bad) = queries.iter().find(|&&i| i >= t) {
        return Err(Error::Input(format!("query {bad} is past the {t} tokens")));
    }
    let (q, k) = layer_qk(cfg, params, tokens, head_scales, layer);
    let hd = cfg.head_dim;
    let (qs, kvs) = (cfg.q_dim(), cfg.kv_dim());
    let g = head / (cfg.num_heads / cfg.num_kv_heads);
    let lambda = head_scales.get(layer, head) / (hd as f32).sqrt();
    let mut out = vec![0f32; queries.len() * t];
    for (row, &i) in out.chunks_exact_mut(t).zip(queries) {
        let qi = &q[i * qs + head * hd..i * qs + (head + 1) * hd];
        softmax_row(row, qi, &k, i, kvs, g * hd, lambda);
    }
    Ok(out)
}

/// The T x T attention of one head pooled to n x n cells, n = min(cells, T):
/// cell (a, b) is the mean over the queries of bin a of the attention they
/// give the keys of bin b (bin of position x: x n / T), so each row of
/// cells sums to 1. Returns (cells, n). Memory O(T + n^2).
pub fn pooled_attention(
    cfg: &ModelConfig,
    params: &Params<f32>,
    tokens: &[u32],
    head_scales: &HeadScales,
    layer: usize,
    head: usize,
    cells: usize,
) -> Result<(Vec<f32>, usize)> {
    check(cfg, tokens, head_scales, layer, head)?;
    if cells == 0 {
        return Err(Error::Input("a pooled map needs at least one cell".into()));
    }
    let t = tokens.len();
    let n = cells.min(t);
    let (q, k) = layer_qk(cfg, params, tokens, head_scales, layer);
    let hd = cfg.head_dim;
    let (qs, kvs) = (cfg.q_dim(), cfg.kv_dim());
    let g = head / (cfg.num_heads / cfg.num_kv_heads);
    let lambda = head_scales.get(layer, head) / (hd as f32).sqrt();
    let bin = |x: usize| x * n / t;
    let mut map = vec![0f32; n * n];
    let mut count = vec![0usize; n];
    let mut row = vec![0f32; t];
    for i in 0..t {
        let qi = &q[i * qs + head * hd..i * qs + (head + 1) * hd];
        softmax_row(&mut row, qi, &k, i, kvs, g * hd, lambda);
        let a = bin(i);
        count[a] += 1;
        let cells_a = &mut map[a * n..(a + 1) * n];
        for (j, &p) in row.iter().enumerate().take(i + 1) {
            cells_a[bin(j)] += p;
        }
    }
    for (cells_a, &c) in map.chunks_exact_mut(n).zip(&count) {
        if c > 0 {
            cells_a.iter_mut().for_each(|x| *x /= c as f32);
        }
    }
    Ok((map, n))
}

/// Entropy in bits of one attention row (zeros contribute nothing).
pub fn row_entropy_bits(row: &[f32]) -> f64 {
    -row.iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p as f64 * (p as f64).log2())
        .sum::<f64>()
}
