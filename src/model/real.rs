//! The floating-point types the CPU engine is generic over: f32 for speed,
//! f64 for the finite-difference checks of every backward pass. The matrix
//! products go through `matrixmultiply` (sgemm / dgemm).

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub trait Real:
    num_traits::Float + AddAssign + SubAssign + MulAssign + DivAssign + Sum + Default + Debug + Send + Sync + 'static
{
    fn from_f64(x: f64) -> Self;
    fn as_f64(self) -> f64;
    fn from_f32(x: f32) -> Self;
    fn as_f32(self) -> f32;
    /// e^x for x <= 0 (the only case softmax needs after subtracting the
    /// running max); returns exactly 0 below the smallest normal.
    fn exp_nonpos(self) -> Self;

    /// Largest element of a non-empty row.
    fn row_max(row: &[Self]) -> Self {
        row.iter().copied().fold(Self::neg_infinity(), Self::max)
    }

    /// The online-softmax step of one row: row[j] <- e^(row[j] - m) for
    /// row[j] <= m; returns (sum_j e^(row[j]-m), sum_j e^(row[j]-m) (row[j]-m)).
    fn exp_shift_sums(row: &mut [Self], m: Self) -> (Self, Self) {
        let (mut z, mut e) = (Self::zero(), Self::zero());
        for x in row.iter_mut() {
            let d = *x - m;
            let p = d.exp_nonpos();
            *x = p;
            z += p;
            e += p * d;
        }
        (z, e)
    }

    /// C (m x n) = alpha * A (m x k) * B (k x n) + beta * C, with arbitrary
    /// row / column strides.
    ///
    /// # Safety
    /// The strides and sizes must address memory inside the pointers' slices.
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Real for f32 {
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn exp_nonpos(self) -> Self {
        exp_nonpos_f32(self)
    }
    fn row_max(row: &[f32]) -> f32 {
        simd::row_max(row)
    }
    fn exp_shift_sums(row: &mut [f32], m: f32) -> (f32, f32) {
        simd::exp_shift_sums(row, m)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return crate::model::wasm_sgemm::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn exp_nonpos(self) -> Self {
        self.exp()
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// e^x for x <= 0 in f32, branch-free so loops over it vectorize.
///
/// n = round(x log2(e)); r = x - n ln2 with ln2 split in a high part exact
/// in f32 and a low correction (Cody and Waite), so r in [-ln2/2, ln2/2] is
/// accurate; e^r by a degree-6 polynomial fitted to e^r on that interval
/// (relative least squares on Chebyshev nodes; error below 2e-9 in exact
/// arithmetic, under f32's rounding); 2^n by building the exponent bits.
/// Inputs below -87 (where the result would be subnormal) give 0.
#[inline(always)]
pub fn exp_nonpos_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, 9 significant bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    const C2: f32 = 0.499_999_9;
    const C3: f32 = 0.166_664_21;
    const C4: f32 = 0.041_668_36;
    const C5: f32 = 0.008_374_771;
    const C6: f32 = 0.001_382_942_1;
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 0.0);
    // Adding 1.5 * 2^23 rounds x log2(e) to the nearest integer n and leaves
    // n in the low mantissa bits: bit operations alone then build 2^n, with
    // no float-to-int conversion (which would not vectorize).
    const SHIFTER: f32 = 12_582_912.0;
    let k = x * LOG2E + SHIFTER;
    let n = k - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * C6)))));
    let scale = f32::from_bits(k.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

/// Row kernels of the attention hot loop in f32. Written over fixed lanes
/// of independent accumulators so the compiler vectorizes them (a float sum
/// in one accumulator cannot be reordered); on x86-64 an AVX-512 or AVX2 +
/// FMA copy is chosen at run time when the processor has it.
mod simd {
    use super::exp_nonpos_f32;

    const LANES: usize = 16;

    #[inline(always)]
    fn row_max_body(row: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
            }
        }
        let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &x in tail {
            m = m.max(x);
        }
        m
    }

    #[inline(always)]
    fn exp_shift_sums_body(row: &mut [f32], m: f32) -> (f32, f32) {
        let mut z = [0f32; LANES];
        let mut e = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let d = c[l] - m;
                let p = exp_nonpos_f32(d);
                c[l] = p;
                z[l] += p;
                e[l] += p * d;
            }
        }
        let (mut zs, mut es) = (z.iter().sum::<f32>(), e.iter().sum::<f32>());
        for x in chunks.into_remainder() {
            let d = *x - m;
            let p = exp_nonpos_f32(d);
            *x = p;
            zs += p;
            es += p * d;
        }
        (zs, es)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_max_avx2(row: &[f32]) -> f32 {
        row_max_body(row)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_shift_sums_avx2(row: &mut [f32], m: f32) -> (f32, f32) {
        exp_shift_sums_body(row, m)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn row_max_avx512(row: &[f32]) -> f32 {
        row_max_body(row)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn exp_shift_sums_avx512(row: &mut [f32], m: f32) -> (f32, f32) {
        exp_shift_sums_body(row, m)
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx512() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && has_avx2())
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    pub fn row_max(row: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            return unsafe { row_max_avx512(row) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return unsafe { row_max_avx2(row) };
        }
        row_max_body(row)
    }

    pub fn exp_shift_sums(row: &mut [f32], m: f32) -> (f32, f32) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            return unsafe { exp_shift_sums_avx512(row, m) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return unsafe { exp_shift_sums_avx2(row, m) };
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return crate::model::cpu::kernels::exp_shift_sums_wasm(row, m);
        #[allow(unreachable_code)]
        exp_shift_sums_body(row, m)
    }
}

/// A * B^T into C: C (m x n) = alpha * A (m x k) B(n x k)^T + beta * C.
/// The `Linear` forward: y = x W^T with W stored (out, in) as Hugging Face does.
pub fn matmul_nt<T: Real>(c: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, alpha: T, beta: T) {
    assert!(
        a.len() >= m * k && b.len() >= n * k && c.len() >= m * n,
        "matmul_nt sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm_rows_parallel(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// C (m x n) = alpha * A (m x k) B (k x n) + beta * C. The input gradient of
/// a `Linear`: dx = dy W.
pub fn matmul_nn<T: Real>(c: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, alpha: T, beta: T) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul_nn sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm_rows_parallel(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// C (m x n) = alpha * A(k x m)^T B (k x n) + beta * C. The weight gradient
/// of a `Linear`: dW (out, in) = dy^T x, summed over the k rows.
pub fn matmul_tn<T: Real>(c: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, alpha: T, beta: T) {
    assert!(
        a.len() >= k * m && b.len() >= k * n && c.len() >= m * n,
        "matmul_tn sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm_rows_parallel(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Work (m * k * n multiply-adds) below which one thread does a product.
const PARALLEL_MIN_WORK: usize = 1 << 18;

#[derive(Clone, Copy)]
struct Ptr<T>(*const T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// `gemm_raw` with the rows of C (and A) split across the CPU engine's
/// threads. The products of a layer are row-independent, so this is exact;
/// using the engine's one thread pool (rather than sgemm's own threads) keeps
/// two pools from fighting over the cores.
///
/// # Safety
/// As for [`Real::gemm_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows_parallel<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    let threads = crate::model::cpu::par::num_threads();
    let work = m.saturating_mul(k).saturating_mul(n);
    let chunks = if threads <= 1 || work < PARALLEL_MIN_WORK {
        1
    } else {
        threads.min(m.div_ceil(16))
    };
    if chunks <= 1 {
        return T::gemm_raw(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    }
    // Row blocks in multiples of 16 so every chunk but the last fills the
    // sgemm kernel's row tiles.
    let step = m.div_ceil(chunks).div_ceil(16) * 16;
    let (a, b, c) = (Ptr(a), Ptr(b), Ptr(c as *const T));
    crate::model::cpu::par::for_each_task(chunks, move |i| {
        let (a, b, c) = (a, b, c);
        let m0 = i * step;
        if m0 >= m {
            return;
        }
        let rows = step.min(m - m0);
        T::gemm_raw(
            rows,
            k,
            n,
            alpha,
            a.0.offset(m0 as isize * rsa),
            rsa,
            csa,
            b.0,
            rsb,
            csb,
            beta,
            (c.0 as *mut T).offset(m0 as isize * rsc),
            rsc,
            csc,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check::{assert_close, Tolerance};
    use crate::model::rng::Rng;
    // Run in the web page's build too (see model/cpu/kernels.rs).
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The f32 product this target uses (matrixmultiply natively, the
    /// wasm kernel in the web build) against f64 loops: sizes that are not
    /// multiples of its tiles, depths past one packed block, the three
    /// stride forms of the engine, beta 0 (C is garbage, never read), 1 and
    /// 0.5, and a k of 0.
    #[test]
    fn f32_gemm_matches_loops() {
        let mut rng = Rng::new(11);
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (4, 8, 8),
            (13, 300, 19),
            (33, 530, 9),
            (9, 0, 6),
            (64, 129, 70),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
            // (name, rsa, csa, rsb, csb): A and B as (m x k) and (k x n)
            // views of the same floats, row- or column-major.
            let forms = [
                ("nn", k as isize, 1, n as isize, 1),
                ("nt", k as isize, 1, 1, k as isize),
                ("tn", 1, m as isize, n as isize, 1),
            ];
            for (name, rsa, csa, rsb, csb) in forms {
                for beta in [0.0f32, 1.0, 0.5] {
                    let mut c = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0.clone() };
                    unsafe {
                        f32::gemm_raw(
                            m,
                            k,
                            n,
                            0.75,
                            a.as_ptr(),
                            rsa,
                            csa,
                            b.as_ptr(),
                            rsb,
                            csb,
                            beta,
                            c.as_mut_ptr(),
                            n as isize,
                            1,
                        )
                    };
                    let want: Vec<f64> = (0..m * n)
                        .map(|ij| {
                            let (i, j) = (ij / n, ij % n);
                            let dot: f64 = (0..k)
                                .map(|p| {
                                    a[(i as isize * rsa + p as isize * csa) as usize] as f64
                                        * b[(p as isize * rsb + j as isize * csb) as usize] as f64
                                })
                                .sum();
                            0.75 * dot + if beta == 0.0 { 0.0 } else { beta as f64 * c0[ij] as f64 }
                        })
                        .collect();
                    let tol = Tolerance::new(1e-6 * (k as f64).sqrt().max(1.0) * 4.0, 1e-5);
                    assert_close(&format!("{name} {m}x{k}x{n} beta {beta}"), &c, &want, tol);
                }
            }
        }
    }

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -90.0 {
            let got = exp_nonpos_f32(x) as f64;
            let want = (x as f64).exp();
            if x >= -87.0 {
                let rel = ((got - want) / want).abs();
                worst = worst.max(rel);
            } else {
                assert_eq!(got, 0.0);
            }
            x -= 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos_f32(0.0), 1.0);
        assert_eq!(exp_nonpos_f32(f32::NEG_INFINITY), 0.0);
    }

    /// The online-softmax step of one row in f32 (each target's vector
    /// copy) against f64: rows that are not multiples of its steps, values
    /// down past the underflow at -87, the row's max exactly 0 after the
    /// shift.
    #[test]
    fn exp_shift_sums_matches_f64() {
        let mut rng = Rng::new(31);
        for n in [1, 3, 16, 17, 37, 4099] {
            let row: Vec<f32> = (0..n).map(|_| (rng.normal() * 30.0) as f32).collect();
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut got = row.clone();
            let (z, e) = f32::exp_shift_sums(&mut got, m);
            // The shift is rounded to f32 first, as the kernels round it.
            let want: Vec<f64> = row.iter().map(|&x| ((x - m) as f64).exp()).collect();
            let tol = Tolerance {
                atol: 1e-30,
                rtol: 1e-6,
            };
            assert_close(&format!("e^(x - m), n = {n}"), &got, &want, tol);
            let wz: f64 = want.iter().sum();
            let we: f64 = want.iter().zip(&row).map(|(p, &x)| p * (x - m) as f64).sum();
            assert_close(
                &format!("sums, n = {n}"),
                &[z, e],
                &[wz, we],
                Tolerance { atol: 1e-6, rtol: 1e-5 },
            );
        }
    }

    #[test]
    fn matmul_forms_agree_with_loops() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut c = vec![0.0; m * n];
        matmul_nt(&mut c, &a, &b, m, k, n, 1.0, 0.0);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
        // nn with b viewed as (k x n)
        let mut c2 = vec![0.0; m * n];
        matmul_nn(&mut c2, &a, &b, m, k, n, 1.0, 0.0);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((c2[i * n + j] - want).abs() < 1e-12);
            }
        }
        // tn: a viewed as (k x m)
        let mut c3 = vec![0.0; m * n];
        let a2: Vec<f64> = (0..k * m).map(|i| (i as f64 * 0.21).sin()).collect();
        let b2: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.13).cos()).collect();
        matmul_tn(&mut c3, &a2, &b2, m, k, n, 1.0, 0.0);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| a2[p * m + i] * b2[p * n + j]).sum();
                assert!((c3[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
