//! Causal grouped-query attention with per-head scale, forward and
//! backward, streaming over key blocks: the T x T matrix never exists.
//!
//! Forward keeps, per query row, the running max m, the normaliser
//! Z = sum_j e^{s_j - m} and E = sum_j e^{s_j - m} (s_j - m). When the max
//! moves from m to m', both are rescaled by c = e^{m - m'}:
//! Z' = c Z, E' = c (E + (m - m') Z). At the end the output is acc / Z, the
//! log-sum-exp is m + ln Z and the entropy in bits is
//! H = (ln Z - E / Z) / ln 2, since -sum p ln p = ln Z - E / Z.
//!
//! Backward recomputes p_ij = e^{s_ij - lse_i} block by block (flash style):
//! dS = P * (dP - D) with D_i = dO_i . O_i, and the head scale's gradient is
//! d s_h = sum_ij dS_ij (q_i . k_j) / sqrt(d).
//!
//! Two implementations of the same maths. The generic one (any `Real`, f64
//! for the finite-difference tests, f32 as the reference of the kernel
//! tests) multiplies tiles with sgemm / dgemm and runs the softmax row by
//! row. The f32 one, the one that runs, uses the register-blocked
//! micro-kernels of [`super::kernels`]: at head dims of 16 to 128 a tile
//! product is too small for sgemm, whose packing of both operands on every
//! call cost as much as the arithmetic. Instead:
//!
//! * K and V are packed once per call (per KV head, so the copies stay
//!   small): K transposed into key panels for S^T = K (lambda Q)^T, V in
//!   head-dim panels, zero-padded to whole panels, so that every head dim
//!   and length runs through the same kernels;
//! * a task (a head's block of BLOCK_Q query rows) holds its queries
//!   transposed, GROUP = 32 rows along the vector lanes, and walks the key
//!   blocks; per block and row group the scores go S^T -> P^T -> acc^T +=
//!   V^T P^T in an L1-sized scratch, with the online-softmax state of the
//!   group's rows held as vectors (no horizontal reductions anywhere);
//! * only blocks that the causal diagonal cuts are masked (a lane compare).
//!
//! The backward runs the same shapes per query group and key block:
//! raw^T = K Q^T and dP^T = V dO^T, then P and dS, dq^T += K^T dS^T, and,
//! with the head dim along the lanes, dk += dS^T q and dv += P^T dO.

use std::any::TypeId;

use super::kernels::{self, GroupState, Isa, COL_STEP, GROUP, HD_STEP, KEY_STEP};
use super::par::{for_each_task, SharedMut};
use crate::model::real::Real;

/// Query rows per task.
pub const BLOCK_Q: usize = 64;
/// Keys per step of the online softmax.
pub const BLOCK_K: usize = 64;

/// Floats of packed K and V the f32 forward keeps at once (4 MB).
const PACK_BUDGET: usize = 1 << 20;

// The f32 path's tiles: whole kernel key steps per key block, whole row
// groups per query block.
const _: () = assert!(BLOCK_K.is_multiple_of(KEY_STEP) && BLOCK_Q.is_multiple_of(GROUP));

pub use crate::model::shapes::AttnShape;

/// Keys row i may see inside the key block starting at j0 of width nk.
#[inline]
fn valid_keys(i: usize, j0: usize, nk: usize) -> usize {
    if i < j0 {
        0
    } else {
        (i - j0 + 1).min(nk)
    }
}

/// `x` as f32 when T is f32 (the dispatch to the f32 kernels).
fn as_f32<T: Real>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32, so this is the same slice.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) })
}

fn as_f32_mut<T: Real>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}

/// out (T, H*hd), lse (H, T), entropy_bits (H, T) from q (T, H*hd),
/// k, v (T, KV*hd) and head_scales (H). q, k: as projected (and rotated).
pub fn attention_forward<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    entropy_bits: Option<&mut [f32]>,
    q: &[T],
    k: &[T],
    v: &[T],
    head_scales: &[T],
    shape: AttnShape,
) {
    if let (Some(out), Some(lse), Some(q), Some(k), Some(v), Some(hs)) = (
        as_f32_mut(out),
        as_f32_mut(lse),
        as_f32(q),
        as_f32(k),
        as_f32(v),
        as_f32(head_scales),
    ) {
        return forward_f32(out, lse, entropy_bits, q, k, v, hs, shape, Isa::best(), PACK_BUDGET);
    }
    forward_generic(out, lse, entropy_bits, q, k, v, head_scales, shape);
}

/// KV head g's columns of x (T, heads * hd), in tiles of BLOCK_K keys,
/// zero past T: tile b starts at b * hd * BLOCK_K. Inside a tile, panels
/// of KEY_STEP keys, each transposed to (hd, KEY_STEP):
/// [`kernels::scores_t`] broadcasts a panel row's consecutive keys and
/// walks the panel front to back (sequential reads, which the prefetchers
/// follow; a column walk over an (hd, BLOCK_K) tile, touching hd cache
/// lines per 8 keys, measured a few percent slower).
fn pack_kt(x: &[f32], t: usize, heads: usize, hd: usize, g: usize) -> Vec<f32> {
    let nkb = t.div_ceil(BLOCK_K);
    let stride = heads * hd;
    let tile = hd * BLOCK_K;
    let mut kt = vec![0f32; nkb * tile];
    let p = SharedMut(kt.as_mut_ptr());
    for_each_task(nkb, |b| {
        let p = &p;
        let j0 = b * BLOCK_K;
        // SAFETY: each task writes its own tile.
        let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(b * tile), tile) };
        for jj in 0..BLOCK_K.min(t - j0) {
            let src = &x[(j0 + jj) * stride + g * hd..][..hd];
            for (d, &val) in src.iter().enumerate() {
                dst[jj / KEY_STEP * hd * KEY_STEP + d * KEY_STEP + jj % KEY_STEP] = val;
            }
        }
    });
    kt
}

/// KV head g's columns of x (T, heads * hd), zero-padded from hd to hd8
/// columns, in tiles of BLOCK_K keys: tile b starts at b * BLOCK_K * hd8.
/// Inside a tile, panels of HD_STEP columns, each key-major (BLOCK_K,
/// HD_STEP), at a stride of BLOCK_K * HD_STEP (the `ps` of
/// [`kernels::pv_t`], which then reads each panel front to back).
fn pack_panels(x: &[f32], t: usize, heads: usize, hd: usize, hd8: usize, g: usize) -> Vec<f32> {
    let nkb = t.div_ceil(BLOCK_K);
    let stride = heads * hd;
    let tile = BLOCK_K * hd8;
    let mut out = vec![0f32; nkb * tile];
    let p = SharedMut(out.as_mut_ptr());
    for_each_task(nkb, |b| {
        let p = &p;
        let j0 = b * BLOCK_K;
        // SAFETY: each task writes its own tile.
        let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(b * tile), tile) };
        for jj in 0..BLOCK_K.min(t - j0) {
            let src = &x[(j0 + jj) * stride + g * hd..][..hd];
            for (d, &val) in src.iter().enumerate() {
                dst[d / HD_STEP * BLOCK_K * HD_STEP + jj * HD_STEP + d % HD_STEP] = val;
            }
        }
    });
    out
}

/// Rows row0.. (at most GROUP, from a (T, stride) matrix, columns c0..c0 +
/// hd) times `scale`, transposed into (hd, GROUP), zero past `rows`.
fn group_t(dst: &mut [f32], x: &[f32], stride: usize, c0: usize, hd: usize, row0: usize, rows: usize, scale: f32) {
    dst[..hd * GROUP].fill(0.0);
    for r in 0..rows {
        for (d, &val) in x[(row0 + r) * stride + c0..][..hd].iter().enumerate() {
            dst[d * GROUP + r] = val * scale;
        }
    }
}

/// Where the f32 path keeps a key block's causal mask: None when every row
/// of the group starting at row0 sees every key of a whole block starting
/// at j0 (nk keys), else the offset j0 - row0 that [`kernels::softmax_t`]
/// and [`kernels::bwd_t`] mask with.
fn block_diag(row0: usize, j0: usize, nk: usize) -> Option<isize> {
    (nk < BLOCK_K || valid_keys(row0, j0, nk) < nk).then_some(j0 as isize - row0 as isize)
}

/// The f32 forward on the micro-kernels (see the module doc).
#[allow(clippy::too_many_arguments)]
fn forward_f32(
    out: &mut [f32],
    lse: &mut [f32],
    entropy_bits: Option<&mut [f32]>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    head_scales: &[f32],
    shape: AttnShape,
    isa: Isa,
    pack_budget: usize,
) {
    let AttnShape { t, heads, kv_heads, hd } = shape;
    let (qs, kvs) = (shape.q_stride(), shape.kv_stride());
    assert!(out.len() >= t * qs && q.len() >= t * qs && k.len() >= t * kvs && v.len() >= t * kvs);
    assert!(lse.len() >= heads * t && head_scales.len() >= heads);
    if let Some(e) = &entropy_bits {
        assert!(e.len() >= heads * t);
    }
    if t == 0 {
        return;
    }
    let hd8 = hd.next_multiple_of(HD_STEP);
    let want_entropy = entropy_bits.is_some();
    let out_p = SharedMut(out.as_mut_ptr());
    let lse_p = SharedMut(lse.as_mut_ptr());
    let ent_p = SharedMut(entropy_bits.map_or(std::ptr::null_mut(), |e| e.as_mut_ptr()));
    let nqb = t.div_ceil(BLOCK_Q);
    let group = heads / kv_heads;
    let inv_sqrt_d = 1.0 / (hd as f32).sqrt();
    // KV heads in chunks whose packed K and V fit `pack_budget` floats (one
    // head at a time at long lengths: the packs then add 2 T hd floats to
    // the peak memory, not 2 T KV hd; all heads in one parallel loop at
    // short ones, where one loop per head would be mostly start and end).
    let per_head = 2 * t.div_ceil(BLOCK_K) * BLOCK_K * hd8;
    let chunk = (pack_budget / per_head).clamp(1, kv_heads);
    for g0 in (0..kv_heads).step_by(chunk) {
        let gs = g0..kv_heads.min(g0 + chunk);
        let packs: Vec<(Vec<f32>, Vec<f32>)> = gs
            .clone()
            .map(|g| (pack_kt(k, t, kv_heads, hd, g), pack_panels(v, t, kv_heads, hd, hd8, g)))
            .collect();
        let nh = gs.len() * group;
        // Largest query blocks (most keys) first, for load balance.
        for_each_task(nh * nqb, |task| {
            let (out_p, lse_p, ent_p) = (out_p, lse_p, ent_p);
            let h = g0 * group + task % nh;
            let qb = nqb - 1 - task / nh;
            let (kt_g, v_g) = &packs[h / group - g0];
            let i0 = qb * BLOCK_Q;
            let nq = BLOCK_Q.min(t - i0);
            let ng = nq.div_ceil(GROUP);
            let lambda = head_scales[h] * inv_sqrt_d;
            // Per group of GROUP rows: the queries, scaled (the scale is applied
            // to q) and transposed, (hd, GROUP); the accumulator, transposed,
            // (hd8, GROUP); the softmax state. Rows past nq are zero queries
            // whose results are never read.
            let mut qt = vec![0f32; ng * hd * GROUP];
            for gi in 0..ng {
                let rows = GROUP.min(nq - gi * GROUP);
                group_t(
                    &mut qt[gi * hd * GROUP..],
                    q,
                    qs,
                    h * hd,
                    hd,
                    i0 + gi * GROUP,
                    rows,
                    lambda,
                );
            }
            let mut acc = vec![0f32; ng * hd8 * GROUP];
            let mut state = vec![GroupState::NEW; ng];
            let mut s = vec![0f32; BLOCK_K * GROUP]; // (keys, GROUP) scores, then probabilities
            let kend = i0 + nq;
            for b in 0..kend.div_ceil(BLOCK_K) {
                let j0 = b * BLOCK_K;
                for (gi, st) in state.iter_mut().enumerate() {
                    let row0 = i0 + gi * GROUP;
                    // The keys some row of the group sees (those of the
                    // block, but for the diagonal's). The scores of keys
                    // nk..ncols (zero keys past T, or keys no row of the
                    // group sees) are computed and then not read.
                    let nk = BLOCK_K.min(kend.min(row0 + GROUP).saturating_sub(j0));
                    if nk == 0 {
                        continue;
                    }
                    let ncols = nk.next_multiple_of(KEY_STEP);
                    // SAFETY: qt has hd rows of GROUP per group, the K tile
                    // BLOCK_K >= ncols keys, s BLOCK_K rows of GROUP, acc hd8
                    // rows of GROUP per group, v_g's tile b BLOCK_K * hd8.
                    unsafe {
                        let acc_g = acc.as_mut_ptr().add(gi * hd8 * GROUP);
                        kernels::scores_t(
                            isa,
                            qt.as_ptr().add(gi * hd * GROUP),
                            hd,
                            kt_g.as_ptr().add(b * hd * BLOCK_K),
                            ncols,
                            s.as_mut_ptr(),
                        );
                        kernels::softmax_t(isa, s.as_mut_ptr(), nk, block_diag(row0, j0, nk), st, acc_g, hd8);
                        kernels::pv_t(
                            isa,
                            s.as_ptr(),
                            nk,
                            v_g.as_ptr().add(j0 * hd8),
                            BLOCK_K * HD_STEP,
                            hd8,
                            acc_g,
                        );
                    }
                }
            }
            // normalise, write out, lse and entropy
            for r in 0..nq {
                let (gi, rr) = (r / GROUP, r % GROUP);
                let (m, z, e) = (state[gi].m[rr], state[gi].z[rr], state[gi].e[rr]);
                let i = i0 + r;
                let inv_z = 1.0 / z;
                let acc_g = &acc[gi * hd8 * GROUP..];
                // SAFETY: row i, head h's columns and slots belong to this task.
                unsafe {
                    let dst = out_p.0.add(i * qs + h * hd);
                    for d in 0..hd {
                        *dst.add(d) = acc_g[d * GROUP + rr] * inv_z;
                    }
                    let ln_z = z.ln();
                    *lse_p.0.add(h * t + i) = m + ln_z;
                    if want_entropy {
                        let bits = (ln_z - e * inv_z) / std::f32::consts::LN_2;
                        *ent_p.0.add(h * t + i) = bits.max(0.0);
                    }
                }
            }
        });
    }
}

/// The f32 backward on the micro-kernels: per query group and key block,
/// raw^T = K Q^T and dP^T = V dO^T ([`kernels::scores_t`]), P and dS
/// ([`kernels::bwd_t`]), dq^T += K^T (lambda dS^T) ([`kernels::pv_t`]),
/// dk += (lambda dS^T) q and dv += P^T dO ([`kernels::rows_acc`]).
#[allow(clippy::too_many_arguments)]
fn backward_f32(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    d_head_scales: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    head_scales: &[f32],
    shape: AttnShape,
    isa: Isa,
) {
    let AttnShape { t, heads, kv_heads, hd } = shape;
    let (qs, kvs) = (shape.q_stride(), shape.kv_stride());
    assert!(dq.len() >= t * qs && dk.len() >= t * kvs && dv.len() >= t * kvs && d_head_scales.len() >= heads);
    assert!(dout.len() >= t * qs && out.len() >= t * qs && lse.len() >= heads * t);
    assert!(q.len() >= t * qs && k.len() >= t * kvs && v.len() >= t * kvs && head_scales.len() >= heads);
    let hd8 = hd.next_multiple_of(HD_STEP);
    let hdc = hd.next_multiple_of(COL_STEP);
    let nkb = t.div_ceil(BLOCK_K);
    let dq_p = SharedMut(dq.as_mut_ptr());
    let dk_p = SharedMut(dk.as_mut_ptr());
    let dv_p = SharedMut(dv.as_mut_ptr());
    let ds_p = SharedMut(d_head_scales.as_mut_ptr());
    let group = heads / kv_heads;
    let inv_sqrt_d = 1.0 / (hd as f32).sqrt();
    // One task per KV head: it owns its dk, dv columns and its heads' dq columns.
    for_each_task(kv_heads, |g| {
        let (dq_p, dk_p, dv_p, ds_p) = (dq_p, dk_p, dv_p, ds_p);
        // (keys, hdc): dk and dv of this KV head, rows padded to whole blocks.
        let mut dk_acc = vec![0f32; nkb * BLOCK_K * hdc];
        let mut dv_acc = vec![0f32; nkb * BLOCK_K * hdc];
        let mut raw = vec![0f32; BLOCK_K * GROUP]; // k . q, then lambda dS
        let mut dpb = vec![0f32; BLOCK_K * GROUP]; // v . dO, then P
        let mut qt = vec![0f32; hd * GROUP];
        let mut dot = vec![0f32; hd * GROUP];
        let mut qr = vec![0f32; GROUP * hdc];
        let mut dor = vec![0f32; GROUP * hdc];
        let mut dqt = vec![0f32; hd8 * GROUP];
        // This KV head's K and V, packed: K^T and V^T in key panels for
        // scores_t, K in head-dim panels for pv_t.
        let kt_g = pack_kt(k, t, kv_heads, hd, g);
        let vt_g = pack_kt(v, t, kv_heads, hd, g);
        let kr_g = pack_panels(k, t, kv_heads, hd, hd8, g);
        for h in g * group..(g + 1) * group {
            let lambda = head_scales[h] * inv_sqrt_d;
            let mut dlambda = 0.0;
            for row0 in (0..t).step_by(GROUP) {
                let rows = GROUP.min(t - row0);
                group_t(&mut qt, q, qs, h * hd, hd, row0, rows, 1.0);
                group_t(&mut dot, dout, qs, h * hd, hd, row0, rows, 1.0);
                let mut lse_g = [0f32; GROUP];
                let mut dd = [0f32; GROUP];
                for r in 0..rows {
                    let i = row0 + r;
                    let qsrc = &q[i * qs + h * hd..][..hd];
                    let dsrc = &dout[i * qs + h * hd..][..hd];
                    let osrc = &out[i * qs + h * hd..][..hd];
                    qr[r * hdc..r * hdc + hd].copy_from_slice(qsrc);
                    dor[r * hdc..r * hdc + hd].copy_from_slice(dsrc);
                    lse_g[r] = lse[h * t + i];
                    dd[r] = dsrc.iter().zip(osrc).map(|(&a, &b)| a * b).sum();
                }
                for r in rows..GROUP {
                    qr[r * hdc..(r + 1) * hdc].fill(0.0);
                    dor[r * hdc..(r + 1) * hdc].fill(0.0);
                }
                dqt.fill(0.0);
                let kend = row0 + rows;
                for b in 0..kend.div_ceil(BLOCK_K) {
                    let j0 = b * BLOCK_K;
                    let nk = BLOCK_K.min(kend - j0);
                    // Keys nk..ncols come out of bwd_t as zeros (hidden):
                    // rows_acc adds them to padding or to later keys as 0.
                    let ncols = nk.next_multiple_of(KEY_STEP);
                    // SAFETY: the K, V^T tiles hold BLOCK_K >= ncols keys;
                    // raw, dpb BLOCK_K rows of GROUP; kr_g tile b BLOCK_K
                    // * hd8; dk_acc, dv_acc nkb * BLOCK_K >= j0 + ncols rows.
                    unsafe {
                        let tile = b * hd * BLOCK_K;
                        kernels::scores_t(isa, qt.as_ptr(), hd, kt_g.as_ptr().add(tile), ncols, raw.as_mut_ptr());
                        kernels::scores_t(isa, dot.as_ptr(), hd, vt_g.as_ptr().add(tile), ncols, dpb.as_mut_ptr());
                        dlambda += kernels::bwd_t(
                            isa,
                            raw.as_mut_ptr(),
                            dpb.as_mut_ptr(),
                            ncols,
                            block_diag(row0, j0, nk),
                            rows,
                            &lse_g,
                            &dd,
                            lambda,
                        );
                        kernels::pv_t(
                            isa,
                            raw.as_ptr(),
                            nk,
                            kr_g.as_ptr().add(j0 * hd8),
                            BLOCK_K * HD_STEP,
                            hd8,
                            dqt.as_mut_ptr(),
                        );
                        let (dk_b, dv_b) = (dk_acc.as_mut_ptr().add(j0 * hdc), dv_acc.as_mut_ptr().add(j0 * hdc));
                        kernels::rows_acc(isa, raw.as_ptr(), ncols, qr.as_ptr(), hdc, hdc, dk_b, hdc);
                        kernels::rows_acc(isa, dpb.as_ptr(), ncols, dor.as_ptr(), hdc, hdc, dv_b, hdc);
                    }
                }
                // SAFETY: head h's dq columns belong to this task.
                unsafe {
                    for r in 0..rows {
                        let dst = dq_p.0.add((row0 + r) * qs + h * hd);
                        for d in 0..hd {
                            *dst.add(d) = dqt[d * GROUP + r];
                        }
                    }
                }
            }
            // SAFETY: slot h belongs to this task.
            unsafe {
                *ds_p.0.add(h) = dlambda * inv_sqrt_d;
            }
        }
        // SAFETY: KV head g's dk, dv columns belong to this task.
        unsafe {
            for j in 0..t {
                for d in 0..hd {
                    *dk_p.0.add(j * kvs + g * hd + d) = dk_acc[j * hdc + d];
                    *dv_p.0.add(j * kvs + g * hd + d) = dv_acc[j * hdc + d];
                }
            }
        }
    });
}

/// The generic forward (f64 and the f32 reference of the kernel tests):
/// sgemm / dgemm tiles, the online softmax row by row.
#[allow(clippy::too_many_arguments)]
fn forward_generic<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    entropy_bits: Option<&mut [f32]>,
    q: &[T],
    k: &[T],
    v: &[T],
    head_scales: &[T],
    shape: AttnShape,
) {
    let AttnShape { t, heads, hd, .. } = shape;
    let (qs, kvs) = (shape.q_stride(), shape.kv_stride());
    assert!(out.len() >= t * qs && q.len() >= t * qs && k.len() >= t * kvs && v.len() >= t * kvs);
    assert!(lse.len() >= heads * t && head_scales.len() >= heads);
    let want_entropy = entropy_bits.is_some();
    if let Some(e) = &entropy_bits {
        assert!(e.len() >= heads * t);
    }
    let out_p = SharedMut(out.as_mut_ptr());
    let lse_p = SharedMut(lse.as_mut_ptr());
    let ent_p = SharedMut(entropy_bits.map_or(std::ptr::null_mut(), |e| e.as_mut_ptr()));
    let nqb = t.div_ceil(BLOCK_Q);
    let inv_sqrt_d = T::one() / T::from_f64(hd as f64).sqrt();
    let ln2 = T::from_f64(std::f64::consts::LN_2);
    // Largest query blocks (most keys) first, for load balance.
    for_each_task(heads * nqb, |task| {
        let (out_p, lse_p, ent_p) = (out_p, lse_p, ent_p);
        let h = task % heads;
        let qb = nqb - 1 - task / heads;
        let g = shape.group(h);
        let i0 = qb * BLOCK_Q;
        let nq = BLOCK_Q.min(t - i0);
        let lambda = head_scales[h] * inv_sqrt_d;
        // (nq, hd): this block's queries, scaled: the scale is applied to q.
        let mut qblk = vec![T::zero(); nq * hd];
        for r in 0..nq {
            let src = &q[(i0 + r) * qs + h * hd..][..hd];
            for (d, &x) in qblk[r * hd..(r + 1) * hd].iter_mut().zip(src) {
                *d = x * lambda;
            }
        }
        let mut s = vec![T::zero(); nq * BLOCK_K]; // (nq, nk) scores, then probabilities
        let mut acc = vec![T::zero(); nq * hd];
        let mut m = vec![T::neg_infinity(); nq];
        let mut z = vec![T::zero(); nq];
        let mut e = vec![T::zero(); nq];
        let kend = i0 + nq;
        let mut j0 = 0;
        while j0 < kend {
            let nk = BLOCK_K.min(kend - j0);
            // pass 1: S = (lambda q) k^T for this key block
            unsafe {
                T::gemm_raw(
                    nq,
                    hd,
                    nk,
                    T::one(),
                    qblk.as_ptr(),
                    hd as isize,
                    1,
                    k.as_ptr().add(j0 * kvs + g * hd),
                    1,
                    kvs as isize,
                    T::zero(),
                    s.as_mut_ptr(),
                    nk as isize,
                    1,
                );
            }
            // pass 2: online softmax update, row by row
            for r in 0..nq {
                let row = &mut s[r * nk..(r + 1) * nk];
                let valid = valid_keys(i0 + r, j0, nk);
                if valid == 0 {
                    row.fill(T::zero());
                    continue;
                }
                let bmax = T::row_max(&row[..valid]);
                let m_old = m[r];
                let m_new = m_old.max(bmax);
                let (psum, pent) = T::exp_shift_sums(&mut row[..valid], m_new);
                row[valid..].fill(T::zero());
                if m_old != T::neg_infinity() {
                    let c = (m_old - m_new).exp_nonpos();
                    e[r] = c * (e[r] + (m_old - m_new) * z[r]);
                    z[r] = c * z[r];
                    if c != T::one() {
                        for a in &mut acc[r * hd..(r + 1) * hd] {
                            *a *= c;
                        }
                    }
                }
                z[r] += psum;
                e[r] += pent;
                m[r] = m_new;
            }
            // pass 3: acc += P v
            unsafe {
                T::gemm_raw(
                    nq,
                    nk,
                    hd,
                    T::one(),
                    s.as_ptr(),
                    nk as isize,
                    1,
                    v.as_ptr().add(j0 * kvs + g * hd),
                    kvs as isize,
                    1,
                    T::one(),
                    acc.as_mut_ptr(),
                    hd as isize,
                    1,
                );
            }
            j0 += nk;
        }
        // pass 4: normalise, write out, lse and entropy
        for r in 0..nq {
            let i = i0 + r;
            let inv_z = T::one() / z[r];
            unsafe {
                let dst = out_p.0.add(i * qs + h * hd);
                for d in 0..hd {
                    *dst.add(d) = acc[r * hd + d] * inv_z;
                }
                let ln_z = z[r].ln();
                *lse_p.0.add(h * t + i) = m[r] + ln_z;
                if want_entropy {
                    let bits = (ln_z - e[r] * inv_z) / ln2;
                    *ent_p.0.add(h * t + i) = bits.max(T::zero()).as_f32();
                }
            }
        }
    });
}

/// dq (T, H*hd), dk, dv (T, KV*hd) and d_head_scales (H), overwritten, from
/// dout (T, H*hd) and the forward's inputs, out and lse.
pub fn attention_backward<T: Real>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    d_head_scales: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    head_scales: &[T],
    shape: AttnShape,
) {
    if let (Some(dq), Some(dk), Some(dv), Some(dhs)) = (
        as_f32_mut(dq),
        as_f32_mut(dk),
        as_f32_mut(dv),
        as_f32_mut(d_head_scales),
    ) {
        let (dout, q, k, v, out, lse, hs) = (
            as_f32(dout).unwrap(),
            as_f32(q).unwrap(),
            as_f32(k).unwrap(),
            as_f32(v).unwrap(),
            as_f32(out).unwrap(),
            as_f32(lse).unwrap(),
            as_f32(head_scales).unwrap(),
        );
        return backward_f32(dq, dk, dv, dhs, dout, q, k, v, out, lse, hs, shape, Isa::best());
    }
    backward_generic(dq, dk, dv, d_head_scales, dout, q, k, v, out, lse, head_scales, shape);
}

/// The generic backward (f64 and the f32 reference of the kernel tests).
#[allow(clippy::too_many_arguments)]
fn backward_generic<T: Real>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    d_head_scales: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    head_scales: &[T],
    shape: AttnShape,
) {
    let AttnShape { t, heads, kv_heads, hd } = shape;
    let (qs, kvs) = (shape.q_stride(), shape.kv_stride());
    assert!(dq.len() >= t * qs && dk.len() >= t * kvs && dv.len() >= t * kvs && d_head_scales.len() >= heads);
    assert!(dout.len() >= t * qs && out.len() >= t * qs && lse.len() >= heads * t);
    let dq_p = SharedMut(dq.as_mut_ptr());
    let dk_p = SharedMut(dk.as_mut_ptr());
    let dv_p = SharedMut(dv.as_mut_ptr());
    let ds_p = SharedMut(d_head_scales.as_mut_ptr());
    let group = heads / kv_heads;
    let inv_sqrt_d = T::one() / T::from_f64(hd as f64).sqrt();
    // One task per KV head: it owns its dk, dv columns and its heads' dq columns.
    for_each_task(kv_heads, |g| {
        let (dq_p, dk_p, dv_p, ds_p) = (dq_p, dk_p, dv_p, ds_p);
        unsafe {
            for i in 0..t {
                for d in 0..hd {
                    *dk_p.0.add(i * kvs + g * hd + d) = T::zero();
                    *dv_p.0.add(i * kvs + g * hd + d) = T::zero();
                }
            }
        }
        let mut raw = vec![T::zero(); BLOCK_Q * BLOCK_K]; // q.k, then lambda dS
        let mut dp = vec![T::zero(); BLOCK_Q * BLOCK_K]; // dO v^T
        let mut p = [T::zero(); BLOCK_Q * BLOCK_K];
        let mut qblk = vec![T::zero(); BLOCK_Q * hd];
        let mut doblk = vec![T::zero(); BLOCK_Q * hd];
        let mut dqblk = vec![T::zero(); BLOCK_Q * hd];
        let mut dd = [T::zero(); BLOCK_Q];
        for h in g * group..(g + 1) * group {
            let lambda = head_scales[h] * inv_sqrt_d;
            let mut dlambda = T::zero();
            let mut i0 = 0;
            while i0 < t {
                let nq = BLOCK_Q.min(t - i0);
                for r in 0..nq {
                    let i = i0 + r;
                    let qsrc = &q[i * qs + h * hd..][..hd];
                    let osrc = &out[i * qs + h * hd..][..hd];
                    let dsrc = &dout[i * qs + h * hd..][..hd];
                    qblk[r * hd..(r + 1) * hd].copy_from_slice(qsrc);
                    doblk[r * hd..(r + 1) * hd].copy_from_slice(dsrc);
                    dd[r] = dsrc.iter().zip(osrc).map(|(&a, &b)| a * b).sum();
                }
                dqblk[..nq * hd].fill(T::zero());
                let kend = i0 + nq;
                let mut j0 = 0;
                while j0 < kend {
                    let nk = BLOCK_K.min(kend - j0);
                    unsafe {
                        // raw = q k^T (nq, nk)
                        T::gemm_raw(
                            nq,
                            hd,
                            nk,
                            T::one(),
                            qblk.as_ptr(),
                            hd as isize,
                            1,
                            k.as_ptr().add(j0 * kvs + g * hd),
                            1,
                            kvs as isize,
                            T::zero(),
                            raw.as_mut_ptr(),
                            nk as isize,
                            1,
                        );
                        // dp = dO v^T (nq, nk)
                        T::gemm_raw(
                            nq,
                            hd,
                            nk,
                            T::one(),
                            doblk.as_ptr(),
                            hd as isize,
                            1,
                            v.as_ptr().add(j0 * kvs + g * hd),
                            1,
                            kvs as isize,
                            T::zero(),
                            dp.as_mut_ptr(),
                            nk as isize,
                            1,
                        );
                    }
                    for (r, &d_r) in dd[..nq].iter().enumerate() {
                        let i = i0 + r;
                        let valid = valid_keys(i, j0, nk);
                        let l = lse[h * t + i];
                        for j in 0..nk {
                            let idx = r * nk + j;
                            if j < valid {
                                let pij = (lambda * raw[idx] - l).min(T::zero()).exp_nonpos();
                                let ds = pij * (dp[idx] - d_r);
                                dlambda += ds * raw[idx];
                                p[idx] = pij;
                                raw[idx] = ds * lambda;
                            } else {
                                p[idx] = T::zero();
                                raw[idx] = T::zero();
                            }
                        }
                    }
                    unsafe {
                        // dq += (lambda dS) k
                        T::gemm_raw(
                            nq,
                            nk,
                            hd,
                            T::one(),
                            raw.as_ptr(),
                            nk as isize,
                            1,
                            k.as_ptr().add(j0 * kvs + g * hd),
                            kvs as isize,
                            1,
                            T::one(),
                            dqblk.as_mut_ptr(),
                            hd as isize,
                            1,
                        );
                        // dk += (lambda dS)^T q
                        T::gemm_raw(
                            nk,
                            nq,
                            hd,
                            T::one(),
                            raw.as_ptr(),
                            1,
                            nk as isize,
                            qblk.as_ptr(),
                            hd as isize,
                            1,
                            T::one(),
                            dk_p.0.add(j0 * kvs + g * hd),
                            kvs as isize,
                            1,
                        );
                        // dv += P^T dO
                        T::gemm_raw(
                            nk,
                            nq,
                            hd,
                            T::one(),
                            p.as_ptr(),
                            1,
                            nk as isize,
                            doblk.as_ptr(),
                            hd as isize,
                            1,
                            T::one(),
                            dv_p.0.add(j0 * kvs + g * hd),
                            kvs as isize,
                            1,
                        );
                    }
                    j0 += nk;
                }
                unsafe {
                    for r in 0..nq {
                        let dst = dq_p.0.add((i0 + r) * qs + h * hd);
                        for d in 0..hd {
                            *dst.add(d) = dqblk[r * hd + d];
                        }
                    }
                }
                i0 += nq;
            }
            unsafe {
                *ds_p.0.add(h) = dlambda * inv_sqrt_d;
            }
        }
    });
}

/// The plain reference: the whole attention matrix, materialized, in f64.
/// Returns (out, lse, entropy_bits) in the same layouts as the fast path.
pub fn attention_reference(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    head_scales: &[f64],
    shape: AttnShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let AttnShape { t, heads, hd, .. } = shape;
    let (qs, kvs) = (shape.q_stride(), shape.kv_stride());
    let mut out = vec![0.0; t * qs];
    let mut lse = vec![0.0; heads * t];
    let mut ent = vec![0.0; heads * t];
    for h in 0..heads {
        let g = shape.group(h);
        let lambda = head_scales[h] / (hd as f64).sqrt();
        for i in 0..t {
            let s: Vec<f64> = (0..=i)
                .map(|j| {
                    lambda
                        * (0..hd)
                            .map(|d| q[i * qs + h * hd + d] * k[j * kvs + g * hd + d])
                            .sum::<f64>()
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            let a: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
            lse[h * t + i] = m + z.ln();
            ent[h * t + i] = -a.iter().filter(|&&p| p > 0.0).map(|p| p * p.log2()).sum::<f64>();
            for d in 0..hd {
                out[i * qs + h * hd + d] = (0..=i).map(|j| a[j] * v[j * kvs + g * hd + d]).sum();
            }
        }
    }
    (out, lse, ent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check::{assert_close, Tolerance};
    use crate::model::rng::Rng;
    // In the web page's build these tests run too (wasm-bindgen-test in
    // Node: `cargo test --target wasm32-unknown-unknown --lib`), so the
    // wasm copy of the kernels is checked where it runs.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn inputs(seed: u64, shape: AttnShape, spread: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut rng = Rng::new(seed);
        let mut r = |n: usize| (0..n).map(|_| rng.normal() * spread).collect::<Vec<f64>>();
        let q = r(shape.t * shape.heads * shape.hd);
        let k = r(shape.t * shape.kv_heads * shape.hd);
        let v = r(shape.t * shape.kv_heads * shape.hd);
        (q, k, v)
    }

    fn run_fast<T: Real>(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        scales: &[f64],
        shape: AttnShape,
    ) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
        let cv = |x: &[f64]| x.iter().map(|&a| T::from_f64(a)).collect::<Vec<T>>();
        let mut out = vec![T::zero(); shape.t * shape.heads * shape.hd];
        let mut lse = vec![T::zero(); shape.heads * shape.t];
        let mut ent = vec![0f32; shape.heads * shape.t];
        attention_forward(
            &mut out,
            &mut lse,
            Some(&mut ent),
            &cv(q),
            &cv(k),
            &cv(v),
            &cv(scales),
            shape,
        );
        (
            out.iter().map(|x| x.as_f64()).collect(),
            lse.iter().map(|x| x.as_f64()).collect(),
            ent,
        )
    }

    /// Sizes that are and are not multiples of the blocks, GQA and not.
    #[test]
    fn streaming_matches_materialized_reference() {
        let shapes = [
            (1, 2, 1, 4),
            (7, 4, 2, 8),
            (64, 2, 2, 8),
            (65, 3, 1, 5),
            (200, 4, 2, 16),
            (300, 2, 1, 8),
        ];
        for (n, &(t, heads, kv_heads, hd)) in shapes.iter().enumerate() {
            let shape = AttnShape { t, heads, kv_heads, hd };
            let (q, k, v) = inputs(n as u64, shape, 1.5);
            let scales: Vec<f64> = (0..heads).map(|h| 0.6 + 0.5 * h as f64).collect();
            let (ro, rl, re) = attention_reference(&q, &k, &v, &scales, shape);
            let (o, l, e) = run_fast::<f64>(&q, &k, &v, &scales, shape);
            let tight = Tolerance::new(1e-10, 1e-9);
            assert_close(&format!("f64 out {shape:?}"), &o, &ro, tight);
            assert_close(&format!("f64 lse {shape:?}"), &l, &rl, tight);
            assert_close(&format!("f64 entropy {shape:?}"), &e, &re, Tolerance::new(1e-5, 1e-5));
            let (o, l, e) = run_fast::<f32>(&q, &k, &v, &scales, shape);
            let loose = Tolerance::new(1e-5, 1e-4);
            assert_close(&format!("f32 out {shape:?}"), &o, &ro, loose);
            assert_close(&format!("f32 lse {shape:?}"), &l, &rl, loose);
            assert_close(&format!("f32 entropy {shape:?}"), &e, &re, Tolerance::new(1e-4, 1e-4));
        }
    }

    /// The f32 kernels (every copy this processor runs) against the generic
    /// sgemm path in f32, forward and backward: lengths that are not
    /// multiples of the blocks or the row groups, head dims that are not
    /// multiples of the lanes, GQA, scales from 0.3 to 4.
    #[test]
    fn f32_kernels_match_generic_path() {
        let shapes = [
            (1, 1, 1, 4),
            (7, 4, 2, 8),
            (33, 2, 1, 3),
            (65, 3, 3, 16),
            (130, 4, 2, 20),
            (200, 2, 1, 32),
            (129, 2, 2, 40),
            (300, 6, 3, 64),
        ];
        for (n, &(t, heads, kv_heads, hd)) in shapes.iter().enumerate() {
            let shape = AttnShape { t, heads, kv_heads, hd };
            let (q, k, v) = inputs(100 + n as u64, shape, 1.5);
            let f32s = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let (q, k, v) = (f32s(&q), f32s(&k), f32s(&v));
            let scales: Vec<f32> = (0..heads).map(|h| 0.3 + 0.7 * h as f32).collect();
            let mut rng = Rng::new(7 + n as u64);
            let dout: Vec<f32> = (0..t * heads * hd).map(|_| rng.normal() as f32).collect();
            let mut out = vec![0f32; t * heads * hd];
            let mut lse = vec![0f32; heads * t];
            let mut ent = vec![0f32; heads * t];
            forward_generic(&mut out, &mut lse, Some(&mut ent), &q, &k, &v, &scales, shape);
            // dq, dk, dv, d head scales from a backward run into fresh
            // buffers (which start as garbage: the backward overwrites).
            type Backward<'a> = &'a dyn Fn(&mut [f32], &mut [f32], &mut [f32], &mut [f32]);
            let grads = |f: Backward| {
                let (mut dq, mut dk, mut dv) = (vec![7f32; q.len()], vec![7f32; k.len()], vec![7f32; v.len()]);
                let mut ds = vec![7f32; heads];
                f(&mut dq, &mut dk, &mut dv, &mut ds);
                (dq, dk, dv, ds)
            };
            let want = grads(&|dq, dk, dv, ds| {
                backward_generic(dq, dk, dv, ds, &dout, &q, &k, &v, &out, &lse, &scales, shape)
            });
            for isa in Isa::available() {
                let what = format!("{isa:?} {shape:?}");
                let mut o = vec![0f32; t * heads * hd];
                let mut l = vec![0f32; heads * t];
                let mut e = vec![0f32; heads * t];
                // The default budget packs all KV heads at once at these
                // lengths; a budget of 1 float packs one head at a time.
                let budget = if n % 2 == 0 { PACK_BUDGET } else { 1 };
                forward_f32(&mut o, &mut l, Some(&mut e), &q, &k, &v, &scales, shape, isa, budget);
                let tol = Tolerance::new(1e-5, 1e-4);
                assert_close(&format!("out {what}"), &o, &out, tol);
                assert_close(&format!("lse {what}"), &l, &lse, tol);
                assert_close(&format!("entropy {what}"), &e, &ent, Tolerance::new(1e-4, 1e-4));
                let got = grads(&|dq, dk, dv, ds| {
                    backward_f32(dq, dk, dv, ds, &dout, &q, &k, &v, &out, &lse, &scales, shape, isa)
                });
                // Gradients are f32 sums over up to T keys (and the head
                // scales' over T^2 / 2 pairs) of terms as large as the
                // largest gradient: both paths round at ~1e-6 of it.
                let grad_tol = |x: &[f32], per: f64| {
                    let big = x.iter().fold(1f64, |m, &a| m.max(a.abs() as f64));
                    Tolerance::new(per * big, 1e-4)
                };
                assert_close(&format!("dq {what}"), &got.0, &want.0, grad_tol(&want.0, 1e-5));
                assert_close(&format!("dk {what}"), &got.1, &want.1, grad_tol(&want.1, 1e-5));
                assert_close(&format!("dv {what}"), &got.2, &want.2, grad_tol(&want.2, 1e-5));
                assert_close(
                    &format!("d head scales {what}"),
                    &got.3,
                    &want.3,
                    grad_tol(&want.3, 1e-4),
                );
            }
        }
    }

    /// Length 1, scales 0.01 and 100, logits of magnitude ~1000: finite,
    /// in [0, log2(i+1)], and equal to the direct formula.
    #[test]
    fn entropy_at_extremes() {
        for (t, scale, spread) in [
            (1, 1.0, 1.0),
            (33, 0.01, 1.0),
            (33, 100.0, 1.0),
            (150, 1.0, 60.0),
            (150, 100.0, 10.0),
        ] {
            let shape = AttnShape {
                t,
                heads: 2,
                kv_heads: 1,
                hd: 4,
            };
            let (q, k, v) = inputs(t as u64 + 7, shape, spread);
            let scales = vec![scale; 2];
            let (_, rl, re) = attention_reference(&q, &k, &v, &scales, shape);
            let (o, l, e) = run_fast::<f32>(&q, &k, &v, &scales, shape);
            assert!(
                o.iter().chain(&l).all(|x| x.is_finite()),
                "non-finite at t={t} scale={scale}"
            );
            for h in 0..2 {
                for i in 0..t {
                    let x = e[h * t + i] as f64;
                    assert!(
                        x.is_finite() && x >= 0.0 && x <= ((i + 1) as f64).log2() + 1e-4,
                        "H={x} at i={i}"
                    );
                }
            }
            assert_close(&format!("lse t={t} s={scale}"), &l, &rl, Tolerance::new(1e-3, 1e-5));
            assert_close(&format!("entropy t={t} s={scale}"), &e, &re, Tolerance::new(2e-4, 1e-3));
        }
        // Length 1: one key, entropy exactly 0.
        let shape = AttnShape {
            t: 1,
            heads: 1,
            kv_heads: 1,
            hd: 3,
        };
        let (_, _, e) = run_fast::<f32>(&[1.0, 2.0, 3.0], &[0.5, 0.5, 0.5], &[1.0, 1.0, 1.0], &[1.0], shape);
        assert_eq!(e, vec![0.0]);
        // Scale 0.01 on equal keys is uniform: entropy = log2(i + 1).
        let t = 9;
        let shape = AttnShape {
            t,
            heads: 1,
            kv_heads: 1,
            hd: 2,
        };
        let q = vec![1.0; 2 * t];
        let (_, _, e) = run_fast::<f32>(&q, &q, &q, &[0.01], shape);
        for (i, &x) in e.iter().enumerate() {
            assert!((x as f64 - ((i + 1) as f64).log2()).abs() < 1e-5);
        }
    }

    /// Every input and the head scales, against central differences in f64.
    #[test]
    fn backward_matches_finite_differences() {
        for &(t, heads, kv_heads, hd) in &[(5, 2, 1, 3), (70, 2, 2, 4), (131, 2, 1, 3)] {
            let shape = AttnShape { t, heads, kv_heads, hd };
            let (q, k, v) = inputs(t as u64, shape, 1.0);
            let scales = vec![0.7, 1.9];
            let mut rng = Rng::new(99);
            let up: Vec<f64> = (0..t * heads * hd).map(|_| rng.normal()).collect();
            let f = |q: &[f64], k: &[f64], v: &[f64], s: &[f64]| -> f64 {
                let (o, _, _) = attention_reference(q, k, v, s, shape);
                o.iter().zip(&up).map(|(a, b)| a * b).sum()
            };
            let (out, lse, _) = attention_reference(&q, &k, &v, &scales, shape);
            let mut dq = vec![0.0; q.len()];
            let mut dk = vec![0.0; k.len()];
            let mut dv = vec![0.0; v.len()];
            let mut ds = vec![0.0; heads];
            attention_backward(
                &mut dq, &mut dk, &mut dv, &mut ds, &up, &q, &k, &v, &out, &lse, &scales, shape,
            );
            let h = 1e-5;
            let tol = Tolerance::new(1e-6, 1e-5);
            let num = |x: &[f64], which: usize| -> Vec<f64> {
                // a sample of entries keeps the reference's cost down
                let idx: Vec<usize> = (0..x.len()).step_by((x.len() / 40).max(1)).collect();
                let mut g = vec![0.0; idx.len()];
                for (n, &i) in idx.iter().enumerate() {
                    let mut xp = x.to_vec();
                    xp[i] += h;
                    let mut xm = x.to_vec();
                    xm[i] -= h;
                    let (a, b) = match which {
                        0 => (f(&xp, &k, &v, &scales), f(&xm, &k, &v, &scales)),
                        1 => (f(&q, &xp, &v, &scales), f(&q, &xm, &v, &scales)),
                        2 => (f(&q, &k, &xp, &scales), f(&q, &k, &xm, &scales)),
                        _ => (f(&q, &k, &v, &xp), f(&q, &k, &v, &xm)),
                    };
                    g[n] = (a - b) / (2.0 * h);
                }
                g
            };
            let pick = |g: &[f64]| -> Vec<f64> { (0..g.len()).step_by((g.len() / 40).max(1)).map(|i| g[i]).collect() };
            assert_close(&format!("dq {shape:?}"), &pick(&dq), &num(&q, 0), tol);
            assert_close(&format!("dk {shape:?}"), &pick(&dk), &num(&k, 1), tol);
            assert_close(&format!("dv {shape:?}"), &pick(&dv), &num(&v, 2), tol);
            assert_close(&format!("d head scale {shape:?}"), &ds, &num(&scales, 3), tol);
        }
    }
}
