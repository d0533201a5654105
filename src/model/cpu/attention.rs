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

use super::par::{for_each_task, SharedMut};
use crate::model::real::Real;

/// Query rows per task.
pub const BLOCK_Q: usize = 64;
/// Keys per step of the online softmax.
pub const BLOCK_K: usize = 128;

#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
}

impl AttnShape {
    fn q_stride(&self) -> usize {
        self.heads * self.hd
    }
    fn kv_stride(&self) -> usize {
        self.kv_heads * self.hd
    }
    fn group(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }
}

/// Keys row i may see inside the key block starting at j0 of width nk.
#[inline]
fn valid_keys(i: usize, j0: usize, nk: usize) -> usize {
    if i < j0 {
        0
    } else {
        (i - j0 + 1).min(nk)
    }
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
