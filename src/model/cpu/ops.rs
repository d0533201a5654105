//! The CPU twins of every elementwise and row-wise op: embedding, RMSNorm,
//! SwiGLU, RoPE, cross-entropy, each forward and backward. Signatures read
//! outputs, then inputs, then sizes.

use crate::model::real::Real;

/// out (T, C) = embed[tokens] with embed (V, C).
pub fn embedding_forward<T: Real>(out: &mut [T], embed: &[T], tokens: &[u32], c: usize) {
    for (row, &tok) in out.chunks_exact_mut(c).zip(tokens) {
        let t = tok as usize;
        row.copy_from_slice(&embed[t * c..(t + 1) * c]);
    }
}

/// dembed[tokens[i]] += dout[i]: the scatter-add backward of the gather.
pub fn embedding_backward<T: Real>(dembed: &mut [T], dout: &[T], tokens: &[u32], c: usize) {
    for (row, &tok) in dout.chunks_exact(c).zip(tokens) {
        let t = tok as usize;
        for (d, &g) in dembed[t * c..(t + 1) * c].iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// x[i, :] *= factors[i]: the per-position scale rule applied to the query
/// rows (x is (T, width)), and, on the way back, to their gradient.
pub fn scale_rows<T: Real>(x: &mut [T], factors: &[T], width: usize) {
    for (row, &f) in x.chunks_exact_mut(width).zip(factors) {
        for v in row {
            *v *= f;
        }
    }
}

/// out = x * rstd * w per row, rstd = 1 / sqrt(mean(x^2) + eps); keeps rstd (T).
pub fn rmsnorm_forward<T: Real>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], c: usize, eps: f64) {
    let eps = T::from_f64(eps);
    let inv_c = T::one() / T::from_f64(c as f64);
    for ((o, r), xr) in out.chunks_exact_mut(c).zip(rstd.iter_mut()).zip(x.chunks_exact(c)) {
        let ms = xr.iter().map(|&v| v * v).sum::<T>() * inv_c;
        let s = T::one() / (ms + eps).sqrt();
        *r = s;
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = xv * s * wv;
        }
    }
}

/// dx += rstd * (g - xhat * mean(g * xhat)) with g = dout * w, xhat = x * rstd;
/// dw += sum_rows dout * xhat (when `dw` is given).
pub fn rmsnorm_backward<T: Real>(
    dx: &mut [T],
    mut dw: Option<&mut [T]>,
    dout: &[T],
    x: &[T],
    rstd: &[T],
    w: &[T],
    c: usize,
) {
    let inv_c = T::one() / T::from_f64(c as f64);
    for (((dxr, dor), xr), &s) in dx
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(x.chunks_exact(c))
        .zip(rstd)
    {
        let mut dot = T::zero();
        for i in 0..c {
            dot += dor[i] * w[i] * xr[i] * s;
        }
        let mean = dot * inv_c;
        for i in 0..c {
            let xhat = xr[i] * s;
            dxr[i] += s * (dor[i] * w[i] - xhat * mean);
        }
        if let Some(dw) = dw.as_deref_mut() {
            for i in 0..c {
                dw[i] += dor[i] * xr[i] * s;
            }
        }
    }
}

/// The logistic function through e^(-|x|) only, so the fast exp for
/// non-positive arguments serves (and the loop vectorizes).
#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    let e = (-x.abs()).exp_nonpos();
    let r = T::one() / (T::one() + e);
    if x >= T::zero() {
        r
    } else {
        e * r
    }
}

/// h (T, F) = silu(g) * u, from gu (T, 2F) holding each row's gate then up.
pub fn swiglu_forward<T: Real>(h: &mut [T], gu: &[T], f: usize) {
    for (h, gu) in h.chunks_exact_mut(f).zip(gu.chunks_exact(2 * f)) {
        let (g, u) = gu.split_at(f);
        for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
            *h = g * sigmoid(g) * u;
        }
    }
}

/// dgu (T, 2F) = [dg du] with dg = dh * u * silu'(g), du = dh * silu(g),
/// silu'(g) = sig(g) (1 + g (1 - sig(g))).
pub fn swiglu_backward<T: Real>(dgu: &mut [T], dh: &[T], gu: &[T], f: usize) {
    for ((dgu, dh), gu) in dgu
        .chunks_exact_mut(2 * f)
        .zip(dh.chunks_exact(f))
        .zip(gu.chunks_exact(2 * f))
    {
        let (dg, du) = dgu.split_at_mut(f);
        let (g, u) = gu.split_at(f);
        for ((((dg, du), &dh), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(dh).zip(g).zip(u) {
            let s = sigmoid(g);
            *du = dh * g * s;
            *dg = dh * u * s * (T::one() + g * (T::one() - s));
        }
    }
}

/// Rotates each head's (x1, x2) halves by position * theta^(-2i/hd), in
/// place, Hugging Face's rotate-half convention; `inverse` rotates back,
/// which is the backward pass (a rotation's transpose is its inverse).
pub fn rope_apply<T: Real>(x: &mut [T], t: usize, heads: usize, hd: usize, theta: f64, inverse: bool) {
    let half = hd / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| theta.powf(-((2 * i) as f64) / hd as f64)).collect();
    for pos in 0..t {
        for (i, &f) in inv_freq.iter().enumerate() {
            let angle = pos as f64 * f;
            let (sin, cos) = angle.sin_cos();
            let (sin, cos) = (T::from_f64(if inverse { -sin } else { sin }), T::from_f64(cos));
            for h in 0..heads {
                let base = (pos * heads + h) * hd;
                let a = x[base + i];
                let b = x[base + i + half];
                x[base + i] = a * cos - b * sin;
                x[base + i + half] = b * cos + a * sin;
            }
        }
    }
}

/// Cross-entropy of one row of logits against `target`: returns
/// -ln softmax(z)[target] = m + ln sum_j e^(z_j - m) - z_target. The row is
/// used as scratch: with `grad_weight` it ends as its gradient
/// (softmax(z) - onehot(target)) * weight, else its contents are unspecified.
pub fn cross_entropy_row<T: Real>(z: &mut [T], target: usize, grad_weight: Option<T>) -> T {
    let m = T::row_max(z);
    let z_target = z[target];
    // z <- e^(z - m), vectorized; the second sum is not needed here.
    let (sum, _) = T::exp_shift_sums(z, m);
    let loss = m + sum.ln() - z_target;
    if let Some(weight) = grad_weight {
        let k = weight / sum;
        for v in z.iter_mut() {
            *v *= k;
        }
        z[target] -= weight;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::Rng;

    fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// Central differences of a scalar function of `x` in f64.
    fn numeric_grad(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-6;
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|i| {
                xp[i] = x[i] + h;
                let a = f(&xp);
                xp[i] = x[i] - h;
                let b = f(&xp);
                xp[i] = x[i];
                (a - b) / (2.0 * h)
            })
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let mut rng = Rng::new(1);
        let (t, c) = (3, 5);
        let x = rand_vec(&mut rng, t * c);
        let w = rand_vec(&mut rng, c);
        let up = rand_vec(&mut rng, t * c); // upstream gradient
        let f = |x: &[f64], w: &[f64]| {
            let mut out = vec![0.0; t * c];
            let mut r = vec![0.0; t];
            rmsnorm_forward(&mut out, &mut r, x, w, c, 1e-5);
            out.iter().zip(&up).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut out = vec![0.0; t * c];
        let mut rstd = vec![0.0; t];
        rmsnorm_forward(&mut out, &mut rstd, &x, &w, c, 1e-5);
        let mut dx = vec![0.0; t * c];
        let mut dw = vec![0.0; c];
        rmsnorm_backward(&mut dx, Some(&mut dw), &up, &x, &rstd, &w, c);
        assert_close(&dx, &numeric_grad(&x, &|x| f(x, &w)), 1e-7, "dx");
        assert_close(&dw, &numeric_grad(&w, &|w| f(&x, w)), 1e-7, "dw");
    }

    #[test]
    fn swiglu_and_rope_backward_match_finite_differences() {
        let mut rng = Rng::new(2);
        let (rows, f) = (2, 7);
        let gu = rand_vec(&mut rng, rows * 2 * f);
        let up = rand_vec(&mut rng, rows * f);
        let fw = |gu: &[f64]| {
            let mut h = vec![0.0; rows * f];
            swiglu_forward(&mut h, gu, f);
            h.iter().zip(&up).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut dgu = vec![0.0; rows * 2 * f];
        swiglu_backward(&mut dgu, &up, &gu, f);
        assert_close(&dgu, &numeric_grad(&gu, &fw), 1e-7, "dgu");

        let (t, heads, hd) = (5, 2, 6);
        let x = rand_vec(&mut rng, t * heads * hd);
        let up = rand_vec(&mut rng, x.len());
        let fr = |x: &[f64]| {
            let mut y = x.to_vec();
            rope_apply(&mut y, t, heads, hd, 10000.0, false);
            y.iter().zip(&up).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut dx = up.clone();
        rope_apply(&mut dx, t, heads, hd, 10000.0, true);
        assert_close(&dx, &numeric_grad(&x, &fr), 1e-7, "rope dx");
    }

    #[test]
    fn cross_entropy_is_stable_and_differentiates() {
        let mut z = vec![1000.0f64, -1000.0, 999.0];
        let l = cross_entropy_row(&mut z, 2, None);
        assert!((l - ((1.0f64).exp() + 1.0).ln()).abs() < 1e-9, "{l}");
        let mut rng = Rng::new(3);
        let z = rand_vec(&mut rng, 6);
        let mut dz = z.clone();
        cross_entropy_row(&mut dz, 4, Some(0.5));
        let num = numeric_grad(&z, &|z| 0.5 * cross_entropy_row(&mut z.to_vec(), 4, None));
        assert_close(&dz, &num, 1e-7, "dz");
    }
}
