//! The decoder, forward and backward, generic over f32 / f64: embedding,
//! then per layer x += Attn(RMSNorm(x)), x += MLP(RMSNorm(x)), then a final
//! RMSNorm and the LM head. Written plainly, as the reference; the speed is
//! in the matrix products and the streaming attention.

use super::attention::{attention_backward, attention_forward};
use super::ops::*;
use crate::model::config::{ModelConfig, PositionEncoding};
use crate::model::engine::{ForwardOptions, LogitsRequest};
use crate::model::head_scales::ScaleRule;
use crate::model::params::{LayerOffsets, Params};
use crate::model::real::{matmul_nn, matmul_nt, matmul_tn, Real};

pub use crate::model::shapes::LOGIT_ROWS;

/// What one layer's forward keeps for its backward.
#[derive(Default)]
pub struct LayerCache<T> {
    x_in: Vec<T>,  // (T, C)
    rstd1: Vec<T>, // (T)
    xn1: Vec<T>,   // (T, C)
    q: Vec<T>,     // (T, H*hd), rotated if RoPE
    k: Vec<T>,     // (T, KV*hd)
    v: Vec<T>,     // (T, KV*hd)
    att: Vec<T>,   // (T, H*hd)
    lse: Vec<T>,   // (H, T)
    x_mid: Vec<T>, // (T, C)
    rstd2: Vec<T>, // (T)
    xn2: Vec<T>,   // (T, C)
    gu: Vec<T>,    // (T, 2F): gate then up, one product (their weights are adjacent)
    h: Vec<T>,     // (T, F)
}

pub struct Cache<T> {
    layers: Vec<LayerCache<T>>,
    x_final: Vec<T>, // (T, C)
    rstd_f: Vec<T>,  // (T)
    xf: Vec<T>,      // (T, C)
}

pub struct ForwardResult {
    /// Weighted by `options.loss_weights` when given.
    pub loss_sum: f64,
    pub predictions: usize,
    pub weight_sum: f64,
    /// (T - 1) unweighted, when `options.losses`.
    pub losses: Option<Vec<f32>>,
    pub logits: Option<Vec<f32>>,
    pub logits_rows: usize,
    pub entropy_bits: Option<Vec<f32>>,
}

fn w<T>(p: &Params<T>, off: usize, len: usize) -> &[T] {
    &p.data[off..off + len]
}

/// r(i) per query position, or `None` for the constant rule.
fn row_factors<T: Real>(rule: ScaleRule, t: usize) -> Option<Vec<T>> {
    rule.factors(0..t)
        .map(|f| f.iter().map(|&x| T::from_f64(x as f64)).collect())
}

/// Runs the model on `tokens`; with `keep`, returns the cache the backward
/// needs. Tokens must already be checked against the vocabulary, loss
/// weights against the tokens. Query i's scale is head_scales[h] * r(i)
/// with r from `rule`.
pub fn forward<T: Real>(
    cfg: &ModelConfig,
    params: &Params<T>,
    tokens: &[u32],
    head_scales: &[T],
    rule: ScaleRule,
    options: &ForwardOptions,
    keep: bool,
) -> (ForwardResult, Option<Cache<T>>) {
    run_unpaused(forward_pausing(
        cfg,
        params,
        tokens,
        head_scales,
        rule,
        options,
        keep,
        None,
    ))
}

/// Runs a computation that awaits nothing but its pauses, given none: one
/// poll finishes it.
pub(crate) fn run_unpaused<F: std::future::Future>(run: F) -> F::Output {
    let mut run = std::pin::pin!(run);
    match run
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("a computation without pauses never waits"),
    }
}

/// Awaited between the stages of [`forward_pausing`] and
/// [`backward_pausing`] (the web page draws a frame there).
pub type Pause = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// [`forward`], awaiting `pause` (when given) after each layer but the
/// last: the same arithmetic in the same order.
#[allow(clippy::too_many_arguments)]
pub async fn forward_pausing<T: Real>(
    cfg: &ModelConfig,
    params: &Params<T>,
    tokens: &[u32],
    head_scales: &[T],
    rule: ScaleRule,
    options: &ForwardOptions,
    keep: bool,
    pause: Option<Pause>,
) -> (ForwardResult, Option<Cache<T>>) {
    let t = tokens.len();
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let shape = cfg.attn_shape(t);
    let lay = &params.layout;
    let mut x = vec![T::zero(); t * c];
    embedding_forward(&mut x, w(params, lay.embed, cfg.vocab_size * c), tokens, c);
    let mut entropy = options.entropy.then(|| vec![0f32; cfg.num_layers * hh * t]);
    let factors = row_factors::<T>(rule, t);
    let mut layers = Vec::new();
    // Scratch reused layer to layer when nothing is kept.
    let mut lc = LayerCache::<T>::default();
    let mut qkv = Vec::new(); // (T, H*hd + 2*KV*hd)
    for (l, o) in lay.layers.iter().enumerate() {
        let o: &LayerOffsets = o;
        lc.rstd1.resize(t, T::zero());
        lc.xn1.resize(t * c, T::zero());
        rmsnorm_forward(
            &mut lc.xn1,
            &mut lc.rstd1,
            &x,
            w(params, o.attn_norm, c),
            c,
            cfg.rms_norm_eps,
        );
        lc.q.resize(t * qd, T::zero());
        lc.k.resize(t * kvd, T::zero());
        lc.v.resize(t * kvd, T::zero());
        // [q k v] = xn1 [Wq; Wk; Wv]^T as one product (the three matrices
        // are adjacent), then split into the per-part buffers attention reads.
        debug_assert!(o.wk == o.wq + qd * c && o.wv == o.wk + kvd * c);
        qkv.resize(t * (qd + 2 * kvd), T::zero());
        matmul_nt(
            &mut qkv,
            &lc.xn1,
            w(params, o.wq, (qd + 2 * kvd) * c),
            t,
            c,
            qd + 2 * kvd,
            T::one(),
            T::zero(),
        );
        split_rows(&qkv, t, &mut [&mut lc.q[..], &mut lc.k[..], &mut lc.v[..]]);
        if let PositionEncoding::Rope { theta } = cfg.position_encoding {
            rope_apply(&mut lc.q, t, hh, hd, theta, false);
            rope_apply(&mut lc.k, t, kvh, hd, theta, false);
        }
        if let Some(r) = &factors {
            scale_rows(&mut lc.q, r, qd);
        }
        lc.att.resize(t * qd, T::zero());
        lc.lse.resize(hh * t, T::zero());
        let ent = entropy.as_mut().map(|e| &mut e[l * hh * t..(l + 1) * hh * t]);
        attention_forward(
            &mut lc.att,
            &mut lc.lse,
            ent,
            &lc.q,
            &lc.k,
            &lc.v,
            &head_scales[l * hh..(l + 1) * hh],
            shape,
        );
        if keep {
            lc.x_in = x.clone();
        }
        // x += att Wo^T
        matmul_nt(&mut x, &lc.att, w(params, o.wo, c * qd), t, qd, c, T::one(), T::one());
        lc.rstd2.resize(t, T::zero());
        lc.xn2.resize(t * c, T::zero());
        rmsnorm_forward(
            &mut lc.xn2,
            &mut lc.rstd2,
            &x,
            w(params, o.mlp_norm, c),
            c,
            cfg.rms_norm_eps,
        );
        lc.gu.resize(t * 2 * f, T::zero());
        lc.h.resize(t * f, T::zero());
        // [g u] = xn2 [Wg; Wu]^T: the gate and up matrices are adjacent (2F, C)
        debug_assert_eq!(o.w_up, o.w_gate + f * c);
        matmul_nt(
            &mut lc.gu,
            &lc.xn2,
            w(params, o.w_gate, 2 * f * c),
            t,
            c,
            2 * f,
            T::one(),
            T::zero(),
        );
        swiglu_forward(&mut lc.h, &lc.gu, f);
        if keep {
            lc.x_mid = x.clone();
        }
        // x += h Wd^T
        matmul_nt(&mut x, &lc.h, w(params, o.w_down, c * f), t, f, c, T::one(), T::one());
        if keep {
            layers.push(std::mem::take(&mut lc));
        }
        if let (Some(p), true) = (pause, l + 1 < cfg.num_layers) {
            p().await;
        }
    }
    drop(lc);
    let mut rstd_f = vec![T::zero(); t];
    let mut xf = vec![T::zero(); t * c];
    rmsnorm_forward(&mut xf, &mut rstd_f, &x, w(params, lay.norm, c), c, cfg.rms_norm_eps);
    let scoring = Scoring {
        weights: options.loss_weights.as_deref(),
        losses: options.losses.then(|| Vec::with_capacity(t - 1)),
    };
    let (loss_sum, logits, logits_rows, losses) = lm_head(cfg, params, &xf, tokens, options.logits, scoring, None);
    let result = ForwardResult {
        loss_sum,
        predictions: t - 1,
        weight_sum: match &options.loss_weights {
            Some(w) => w.iter().map(|&x| x as f64).sum(),
            None => (t - 1) as f64,
        },
        losses,
        logits,
        logits_rows,
        entropy_bits: entropy,
    };
    let cache = keep.then_some(Cache {
        layers,
        x_final: x,
        rstd_f,
        xf,
    });
    (result, cache)
}

/// Splits each of the `rows` rows of `src` into consecutive column ranges,
/// one per part (a part's width is its length / rows).
fn split_rows<T: Copy>(src: &[T], rows: usize, parts: &mut [&mut [T]]) {
    let stride = src.len() / rows;
    let mut col = 0;
    for part in parts.iter_mut() {
        let wd = part.len() / rows;
        for r in 0..rows {
            part[r * wd..(r + 1) * wd].copy_from_slice(&src[r * stride + col..r * stride + col + wd]);
        }
        col += wd;
    }
    debug_assert_eq!(col, stride);
}

/// The inverse of [`split_rows`]: each row of `dst` is the parts' rows side by side.
fn join_rows<T: Copy>(dst: &mut [T], rows: usize, parts: &[&[T]]) {
    let stride = dst.len() / rows;
    let mut col = 0;
    for part in parts {
        let wd = part.len() / rows;
        for r in 0..rows {
            dst[r * stride + col..r * stride + col + wd].copy_from_slice(&part[r * wd..(r + 1) * wd]);
        }
        col += wd;
    }
    debug_assert_eq!(col, stride);
}

/// Gradient targets of the LM head's backward.
struct HeadGrads<'a, T> {
    dxf: &'a mut [T],
    dw: Option<&'a mut [T]>,
    weight: T,
}

/// How the LM head scores predictions: per-prediction weights (None: 1),
/// and where to put each prediction's unweighted loss (None: nowhere).
struct Scoring<'a> {
    weights: Option<&'a [f32]>,
    losses: Option<Vec<f32>>,
}

/// Logits in chunks of rows; scores positions 0..T-1 against the next token
/// (the sum of weight * loss). With `grads`, also writes dxf and
/// accumulates the head's weight gradient.
///
/// Only the rows that matter are multiplied: a position whose loss weight
/// is 0 adds nothing to the loss or the gradients, so unless its logits or
/// its loss are asked for it is skipped (a pass-key objective scores 5 of
/// hundreds of positions). Each row's product does not depend on the
/// others, so the rows computed are the same numbers either way.
fn lm_head<T: Real>(
    cfg: &ModelConfig,
    params: &Params<T>,
    xf: &[T],
    tokens: &[u32],
    request: LogitsRequest,
    mut scoring: Scoring<'_>,
    mut grads: Option<HeadGrads<'_, T>>,
) -> (f64, Option<Vec<f32>>, usize, Option<Vec<f32>>) {
    let (t, c, vocab) = (tokens.len(), cfg.hidden_size, cfg.vocab_size);
    let wl = w(params, params.layout.lm_head, vocab * c);
    let first_kept = match request {
        LogitsRequest::None => t,
        LogitsRequest::All => 0,
        LogitsRequest::Last(n) => t - n.min(t),
    };
    let all_losses = scoring.losses.is_some();
    let needed =
        |i: usize| i >= first_kept || (i + 1 < t && (all_losses || scoring.weights.is_none_or(|w| w[i] != 0.0)));
    let rows: Vec<usize> = (0..t).filter(|&i| needed(i)).collect();
    if let Some(g) = grads.as_mut() {
        g.dxf.fill(T::zero()); // the rows skipped have no gradient
    }
    let mut kept = (first_kept < t).then(|| Vec::with_capacity((t - first_kept) * vocab));
    let chunk_rows = LOGIT_ROWS.min(rows.len().max(1));
    let mut chunk = vec![T::zero(); chunk_rows * vocab];
    // The chunk's rows of xf side by side (and their dxf, backward).
    let mut xg = vec![T::zero(); chunk_rows * c];
    let mut dxg = vec![T::zero(); if grads.is_some() { chunk_rows * c } else { 0 }];
    let mut loss = 0f64;
    for part in rows.chunks(chunk_rows) {
        let n = part.len();
        for (r, &i) in part.iter().enumerate() {
            xg[r * c..(r + 1) * c].copy_from_slice(&xf[i * c..(i + 1) * c]);
        }
        let xg = &xg[..n * c];
        let z = &mut chunk[..n * vocab];
        matmul_nt(z, xg, wl, n, c, vocab, T::one(), T::zero());
        if let Some(kept) = kept.as_mut() {
            for (r, _) in part.iter().enumerate().filter(|(_, &i)| i >= first_kept) {
                kept.extend(z[r * vocab..(r + 1) * vocab].iter().map(|x| x.as_f32()));
            }
        }
        for (r, &i) in part.iter().enumerate() {
            let row = &mut z[r * vocab..(r + 1) * vocab];
            if i + 1 < t {
                let target = tokens[i + 1] as usize;
                let wi = scoring.weights.map_or(1.0, |w| w[i]);
                let li =
                    cross_entropy_row(row, target, grads.as_ref().map(|g| g.weight * T::from_f64(wi as f64))).as_f64();
                loss += wi as f64 * li;
                if let Some(l) = scoring.losses.as_mut() {
                    l.push(li as f32);
                }
            } else if grads.is_some() {
                row.fill(T::zero()); // the last position predicts nothing
            }
        }
        if let Some(g) = grads.as_mut() {
            // dxf = dz W, dW += dz^T xf
            let dxg = &mut dxg[..n * c];
            matmul_nn(dxg, z, wl, n, vocab, c, T::one(), T::zero());
            for (r, &i) in part.iter().enumerate() {
                g.dxf[i * c..(i + 1) * c].copy_from_slice(&dxg[r * c..(r + 1) * c]);
            }
            if let Some(dw) = g.dw.as_deref_mut() {
                matmul_tn(dw, z, xg, vocab, n, c, T::one(), T::one());
            }
        }
    }
    (loss, kept, t - first_kept, scoring.losses)
}

/// Accumulates into `grads` (parameter layout; None = frozen model) and
/// `d_head_scales` (L*H) the gradient of `weight * sum_i w_i l_i` of one
/// sequence, w_i its loss weights (None: all 1). Returns sum_i w_i l_i.
///
/// With `pause`, awaits it after each layer of the forward, after the LM
/// head and after each layer of the backward, so that a single-threaded
/// caller holds its thread for one stage at a time (the same arithmetic in
/// the same order); without, it never waits (`run_unpaused` runs it).
#[allow(clippy::too_many_arguments)]
pub async fn backward_pausing<T: Real>(
    cfg: &ModelConfig,
    params: &Params<T>,
    tokens: &[u32],
    head_scales: &[T],
    rule: ScaleRule,
    loss_weights: Option<&[f32]>,
    weight: T,
    mut grads: Option<&mut [T]>,
    d_head_scales: &mut [T],
    pause: Option<Pause>,
) -> f64 {
    let options = ForwardOptions::default();
    let (_, cache) = forward_pausing(cfg, params, tokens, head_scales, rule, &options, true, pause).await;
    if let Some(p) = pause {
        p().await;
    }
    let factors = row_factors::<T>(rule, tokens.len());
    let cache = cache.expect("kept");
    let t = tokens.len();
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (hh, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let shape = cfg.attn_shape(t);
    let lay = &params.layout;
    let full = grads.is_some();
    let mut dxf = vec![T::zero(); t * c];
    let loss_sum = {
        // The LM head's weight gradient lands on its slot (the embedding's, if tied).
        let dw = grads
            .as_deref_mut()
            .map(|g| &mut g[lay.lm_head..lay.lm_head + cfg.vocab_size * c]);
        let hg = HeadGrads {
            dxf: &mut dxf,
            dw,
            weight,
        };
        let scoring = Scoring {
            weights: loss_weights,
            losses: None,
        };
        lm_head(cfg, params, &cache.xf, tokens, LogitsRequest::None, scoring, Some(hg)).0
    };
    if let Some(p) = pause {
        p().await;
    }
    let mut dx = vec![T::zero(); t * c];
    {
        let dw = grads.as_deref_mut().map(|g| &mut g[lay.norm..lay.norm + c]);
        rmsnorm_backward(
            &mut dx,
            dw,
            &dxf,
            &cache.x_final,
            &cache.rstd_f,
            w(params, lay.norm, c),
            c,
        );
    }
    drop(dxf);
    let mut dh = vec![T::zero(); t * f];
    let mut dgu = vec![T::zero(); t * 2 * f];
    let mut dxn = vec![T::zero(); t * c];
    let mut datt = vec![T::zero(); t * qd];
    let mut dq = vec![T::zero(); t * qd];
    let mut dk = vec![T::zero(); t * kvd];
    let mut dv = vec![T::zero(); t * kvd];
    let mut ds = vec![T::zero(); hh];
    let mut dqkv = vec![T::zero(); t * (qd + 2 * kvd)];
    for l in (0..cfg.num_layers).rev() {
        let o = &lay.layers[l];
        let lc = &cache.layers[l];
        // MLP: x_out = x_mid + h Wd^T
        matmul_nn(&mut dh, &dx, w(params, o.w_down, c * f), t, c, f, T::one(), T::zero());
        if let Some(g) = grads.as_deref_mut() {
            matmul_tn(
                &mut g[o.w_down..o.w_down + c * f],
                &dx,
                &lc.h,
                c,
                t,
                f,
                T::one(),
                T::one(),
            );
        }
        swiglu_backward(&mut dgu, &dh, &lc.gu, f);
        matmul_nn(
            &mut dxn,
            &dgu,
            w(params, o.w_gate, 2 * f * c),
            t,
            2 * f,
            c,
            T::one(),
            T::zero(),
        );
        if let Some(g) = grads.as_deref_mut() {
            let gw = &mut g[o.w_gate..o.w_gate + 2 * f * c];
            matmul_tn(gw, &dgu, &lc.xn2, 2 * f, t, c, T::one(), T::one());
        }
        {
            let dw = grads.as_deref_mut().map(|g| &mut g[o.mlp_norm..o.mlp_norm + c]);
            rmsnorm_backward(&mut dx, dw, &dxn, &lc.x_mid, &lc.rstd2, w(params, o.mlp_norm, c), c);
        }
        // Attention: x_mid = x_in + att Wo^T
        matmul_nn(&mut datt, &dx, w(params, o.wo, c * qd), t, c, qd, T::one(), T::zero());
        if let Some(g) = grads.as_deref_mut() {
            matmul_tn(&mut g[o.wo..o.wo + c * qd], &dx, &lc.att, c, t, qd, T::one(), T::one());
        }
        let scales = &head_scales[l * hh..(l + 1) * hh];
        attention_backward(
            &mut dq, &mut dk, &mut dv, &mut ds, &datt, &lc.q, &lc.k, &lc.v, &lc.att, &lc.lse, scales, shape,
        );
        for (a, &b) in d_head_scales[l * hh..(l + 1) * hh].iter_mut().zip(&ds) {
            *a += b;
        }
        if l == 0 && !full {
            break; // a frozen model needs nothing below the first attention
        }
        if let Some(p) = pause {
            p().await;
        }
        // Back through q_i <- r(i) q_i.
        if let Some(r) = &factors {
            scale_rows(&mut dq, r, qd);
        }
        if let PositionEncoding::Rope { theta } = cfg.position_encoding {
            rope_apply(&mut dq, t, hh, hd, theta, true);
            rope_apply(&mut dk, t, kvh, hd, theta, true);
        }
        // One product each for dxn and [dWq; dWk; dWv], on [dq dk dv] side by side.
        join_rows(&mut dqkv, t, &[&dq[..], &dk[..], &dv[..]]);
        let wqkv = (qd + 2 * kvd) * c;
        matmul_nn(
            &mut dxn,
            &dqkv,
            w(params, o.wq, wqkv),
            t,
            qd + 2 * kvd,
            c,
            T::one(),
            T::zero(),
        );
        if let Some(g) = grads.as_deref_mut() {
            matmul_tn(
                &mut g[o.wq..o.wq + wqkv],
                &dqkv,
                &lc.xn1,
                qd + 2 * kvd,
                t,
                c,
                T::one(),
                T::one(),
            );
        }
        let dw = grads.as_deref_mut().map(|g| &mut g[o.attn_norm..o.attn_norm + c]);
        rmsnorm_backward(&mut dx, dw, &dxn, &lc.x_in, &lc.rstd1, w(params, o.attn_norm, c), c);
    }
    if let Some(g) = grads {
        embedding_backward(&mut g[lay.embed..lay.embed + cfg.vocab_size * c], &dx, tokens, c);
    }
    loss_sum
}
