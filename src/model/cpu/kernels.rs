//! f32 micro-kernels of the streaming attention (`attention.rs`).
//!
//! The attention tiles are small (32 query rows, 64 keys, head dims of 16
//! to 128), too small for a general sgemm: its per-call packing cost as much
//! as its arithmetic. These kernels instead read operands that the attention
//! packs once, and keep their accumulators in registers.
//!
//! Layout: a group of [`GROUP`] = 32 query rows lies along the vector lanes
//! (2 vectors of 16 in AVX-512, 4 of 8 in AVX2, 8 of 4 in the wasm and portable
//! copy). A score tile is stored key-major, "transposed": row j holds the 32
//! scores of key j, one per query row. Then
//!
//! * every per-query-row quantity of the online softmax (running max,
//!   normaliser, entropy sum, log-sum-exp, D_i = dO_i . O_i) is a vector, and
//!   the row maxima and rescalings need no horizontal reduction at all;
//! * in both products the broadcast operand is read at constant offsets:
//!   [`scores_t`] (S^T = K Q^T) broadcasts consecutive keys of a K^T panel
//!   (8 keys, stored head-dim-major, read front to back) against vectors
//!   of Q^T, and [`pv_t`] (Acc^T += B^T P^T, the forward's P v and the
//!   backward's dS k) broadcasts consecutive head-dim elements of a row of
//!   a V (or K) panel (8 head-dim columns, key-major) against vectors of
//!   P^T;
//! * the causal mask of a diagonal block is one integer compare per vector
//!   (lane r of key j is visible iff j0 + j <= row0 + r).
//!
//! [`rows_acc`] is the other product shape, with the head dim along the
//! lanes (the backward's dk += dS^T q and dv += P^T dO, summed over the
//! group's rows). [`softmax_t`] is the forward's online-softmax step and
//! [`bwd_t`] the backward's elementwise step.
//!
//! Every body is written once, `#[inline(always)]`, generic over [`Simd`]
//! (a vector of W f32 lanes and its operations), and instantiated four
//! times: AVX-512 (16 lanes) and AVX2 + FMA (8 lanes) copies, on x86-64
//! intrinsics inside `#[target_feature]` functions chosen at run time; a
//! wasm `simd128` copy (4 lanes, the web page's build); and a portable copy
//! over 4-lane arrays everywhere else. (Plain
//! lane arrays on x86 were tried: LLVM's SLP vectorizer then vectorized the
//! score tile along the keys, with one broadcast per query row, and spilled;
//! intrinsics pin the layout.) Tile sizes per copy keep the accumulators in
//! registers (32 zmm, 16 ymm).
//!
//! Operands are raw pointers into packed scratch; the callers check sizes.

/// Query rows along the lanes of one kernel call (the callers pad to it).
pub const GROUP: usize = 32;
/// [`scores_t`] computes keys in multiples of this; callers round up.
pub const KEY_STEP: usize = 8;
/// [`pv_t`] handles head-dim rows in multiples of this (callers pad the
/// head dim of its B operand and accumulator with zeros).
pub const HD_STEP: usize = 8;
/// [`rows_acc`] handles columns in multiples of this and output rows in
/// multiples of [`KEY_STEP`].
pub const COL_STEP: usize = 16;

/// Which copy of the kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F (and AVX2 + FMA).
    Avx512,
    /// x86-64 with AVX2 + FMA.
    Avx2,
    /// wasm32 with the `simd128` feature (the web page's build): 4 lanes
    /// on v128 intrinsics.
    Wasm128,
    /// Plain Rust, 4 lanes: other architectures.
    Portable,
}

impl Isa {
    /// The fastest copy this processor runs (detected once).
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static BEST: OnceLock<Isa> = OnceLock::new();
            *BEST.get_or_init(|| {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if avx2 && is_x86_feature_detected!("avx512f") {
                    Isa::Avx512
                } else if avx2 {
                    Isa::Avx2
                } else {
                    Isa::Portable
                }
            })
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return Isa::Wasm128;
        #[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
        Isa::Portable
    }

    /// The instruction set in words, for the engine's name.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2",
            // The web page's relaxed-SIMD builds (web/builds.sh), served to
            // browsers that validate relaxed SIMD.
            Isa::Wasm128 if cfg!(target_feature = "relaxed-simd") => "wasm SIMD, fused multiply-add",
            Isa::Wasm128 => "wasm SIMD",
            Isa::Portable => "portable",
        }
    }

    /// Every copy this processor runs, best first (the tests check each).
    pub fn available() -> Vec<Isa> {
        match Isa::best() {
            Isa::Avx512 => vec![Isa::Avx512, Isa::Avx2, Isa::Portable],
            Isa::Avx2 => vec![Isa::Avx2, Isa::Portable],
            Isa::Wasm128 => vec![Isa::Wasm128, Isa::Portable],
            Isa::Portable => vec![Isa::Portable],
        }
    }
}

/// Whether the portable copy may use fused multiply-adds: only where the
/// target has them in hardware (elsewhere `mul_add` is a slow library call).
const PORTABLE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// A vector of `W` f32 lanes and the operations the kernels use. The
/// methods are `unsafe`: the x86 ones need their instruction set (the
/// bodies run only inside functions compiled with it) and `load` / `store`
/// read and write `W` floats at a raw pointer.
trait Simd {
    type V: Copy;
    const W: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// a * b + c (fused where the copy has FMA)
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The float whose bits are ((bits of k) - (bits of 1.5 * 2^23) + 127)
    /// << 23: 2^n when k = n + 1.5 * 2^23.
    unsafe fn pow2_shifted(k: Self::V) -> Self::V;
    /// v, but 0 in the lanes where x < lim.
    unsafe fn zero_where_below(v: Self::V, x: Self::V, lim: f32) -> Self::V;
    /// v in the lanes l with lo <= from + l < hi, `fill` in the others.
    unsafe fn keep_range(v: Self::V, from: i32, lo: i32, hi: i32, fill: f32) -> Self::V;
    unsafe fn hsum(v: Self::V) -> f32;
}

/// e^x for x <= 0, vector form of [`crate::model::real::exp_nonpos_f32`] (the same formula and
/// constants; see there), with fused multiply-adds where the copy has them.
/// In the forward x = s - m' <= 0 holds exactly (m' is the max of the very
/// same floats), so unlike the scalar function this one does not clamp.
#[inline(always)]
unsafe fn exp_nonpos<S: Simd>(x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const C2: f32 = 0.499_999_9;
    const C3: f32 = 0.166_664_21;
    const C4: f32 = 0.041_668_36;
    const C5: f32 = 0.008_374_771;
    const C6: f32 = 0.001_382_942_1;
    const SHIFTER: f32 = 12_582_912.0;
    // No clamp: the callers pass x <= 0 (or discard the lane), and lanes
    // below -87 become 0 at the end, whatever their intermediate values
    // (even from -inf).
    let k = S::fma(x, S::splat(LOG2E), S::splat(SHIFTER));
    let n = S::sub(k, S::splat(SHIFTER));
    let r = S::fma(n, S::splat(-LN2_LO), S::fma(n, S::splat(-LN2_HI), x));
    let mut p = S::fma(r, S::splat(C6), S::splat(C5));
    p = S::fma(p, r, S::splat(C4));
    p = S::fma(p, r, S::splat(C3));
    p = S::fma(p, r, S::splat(C2));
    p = S::fma(p, r, S::splat(1.0));
    p = S::fma(p, r, S::splat(1.0));
    S::zero_where_below(S::mul(p, S::pow2_shifted(k)), x, -87.0)
}

/// The online-softmax step of one row on wasm SIMD (the web page's build):
/// `Real::exp_shift_sums` for f32, with the attention kernels' exponential
/// (no clamp, lanes below -87 set to 0 at the end; fused multiply-adds in
/// the relaxed-SIMD build): LLVM's vectorizing of the scalar formula ran
/// the cross entropy 1.2-1.7x slower (docs/BENCH.md). Needs row[j] <= m,
/// as there.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub fn exp_shift_sums_wasm(row: &mut [f32], m: f32) -> (f32, f32) {
    use wasm::Wasm128 as S;
    /// Vectors a step: independent sums.
    const U: usize = 4;
    let mut chunks = row.chunks_exact_mut(U * S::W);
    // SAFETY: every load and store is inside a chunk of U * W floats.
    let (mut zs, mut es) = unsafe {
        let mv = S::splat(m);
        let (mut z, mut e) = ([S::splat(0.0); U], [S::splat(0.0); U]);
        for c in &mut chunks {
            for u in 0..U {
                let at = c.as_mut_ptr().add(u * S::W);
                let d = S::sub(S::load(at), mv);
                let p = exp_nonpos::<S>(d);
                S::store(at, p);
                z[u] = S::add(z[u], p);
                e[u] = S::fma(p, d, e[u]);
            }
        }
        (
            S::hsum(S::add(S::add(z[0], z[1]), S::add(z[2], z[3]))),
            S::hsum(S::add(S::add(e[0], e[1]), S::add(e[2], e[3]))),
        )
    };
    for x in chunks.into_remainder() {
        let d = *x - m;
        let p = crate::model::real::exp_nonpos_f32(d);
        *x = p;
        zs += p;
        es += p * d;
    }
    (zs, es)
}

/// The portable copy: 4 lanes as an array (LLVM vectorizes the lane loops
/// where the target has vectors; this copy is for correctness first).
struct Portable;

impl Portable {
    #[inline(always)]
    fn zip(a: [f32; 4], b: [f32; 4], f: impl Fn(f32, f32) -> f32) -> [f32; 4] {
        std::array::from_fn(|l| f(a[l], b[l]))
    }
}

impl Simd for Portable {
    type V = [f32; 4];
    const W: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 4] {
        std::ptr::read_unaligned(p as *const [f32; 4])
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 4]) {
        std::ptr::write_unaligned(p as *mut [f32; 4], v)
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        Self::zip(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        Self::zip(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        Self::zip(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        Self::zip(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    unsafe fn min(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        Self::zip(a, b, |x, y| if x < y { x } else { y })
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|l| {
            if PORTABLE_FMA {
                a[l].mul_add(b[l], c[l])
            } else {
                a[l] * b[l] + c[l]
            }
        })
    }
    #[inline(always)]
    unsafe fn pow2_shifted(k: [f32; 4]) -> [f32; 4] {
        const SHIFTER: f32 = 12_582_912.0;
        k.map(|x| f32::from_bits(x.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23))
    }
    #[inline(always)]
    unsafe fn zero_where_below(v: [f32; 4], x: [f32; 4], lim: f32) -> [f32; 4] {
        Self::zip(v, x, |v, x| if x < lim { 0.0 } else { v })
    }
    #[inline(always)]
    unsafe fn keep_range(v: [f32; 4], from: i32, lo: i32, hi: i32, fill: f32) -> [f32; 4] {
        std::array::from_fn(|l| {
            let i = from + l as i32;
            if i >= lo && i < hi {
                v[l]
            } else {
                fill
            }
        })
    }
    #[inline(always)]
    unsafe fn hsum(v: [f32; 4]) -> f32 {
        (v[0] + v[2]) + (v[1] + v[3])
    }
}

// ---------------------------------------------------------------------------
// S^T = K Q^T

/// s[j][r] = sum_d k[j][d] qt[d][r] for j < ncols, r < GROUP.
///
/// `qt`: `hd` rows of GROUP (the group's queries, transposed); `kt`: the
/// keys in panels of [`KEY_STEP`]: panel p, keys p * KEY_STEP.., is an
/// (hd, KEY_STEP) matrix at p * hd * KEY_STEP, so that the kernel reads it
/// front to back; `s`: `ncols` rows of GROUP. `ncols` must be a multiple
/// of [`KEY_STEP`].
///
/// # Safety
/// The pointers must address those extents.
pub unsafe fn scores_t(isa: Isa, qt: *const f32, hd: usize, kt: *const f32, ncols: usize, s: *mut f32) {
    assert!(ncols.is_multiple_of(KEY_STEP));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::scores_t_avx512(qt, hd, kt, ncols, s),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::scores_t_avx2(qt, hd, kt, ncols, s),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Wasm128 => scores_t_body::<wasm::Wasm128, 8, 2, 4>(qt, hd, kt, ncols, s),
        _ => scores_t_body::<Portable, 8, 2, 8>(qt, hd, kt, ncols, s),
    }
}

/// RK keys by CV of a key's C vectors (C = GROUP / W) at a time: RK * CV
/// accumulators. Every score is the same sum in the same order whatever
/// the tile.
#[inline(always)]
unsafe fn scores_t_body<S: Simd, const C: usize, const RK: usize, const CV: usize>(
    qt: *const f32,
    hd: usize,
    kt: *const f32,
    ncols: usize,
    s: *mut f32,
) {
    debug_assert!(C * S::W == GROUP && KEY_STEP.is_multiple_of(RK) && C.is_multiple_of(CV));
    for c0 in (0..C).step_by(CV) {
        for j0 in (0..ncols).step_by(RK) {
            let mut acc = [[S::splat(0.0); CV]; RK];
            let panel = kt.add(j0 / KEY_STEP * hd * KEY_STEP + j0 % KEY_STEP);
            let (mut kp, mut qp) = (panel, qt.add(c0 * S::W));
            for _ in 0..hd {
                let mut qv = [S::splat(0.0); CV];
                for (c, x) in qv.iter_mut().enumerate() {
                    *x = S::load(qp.add(c * S::W));
                }
                for (t, row) in acc.iter_mut().enumerate() {
                    let kb = S::splat(*kp.add(t));
                    for (a, &x) in row.iter_mut().zip(&qv) {
                        *a = S::fma(kb, x, *a);
                    }
                }
                kp = kp.add(KEY_STEP);
                qp = qp.add(GROUP);
            }
            for (t, row) in acc.iter().enumerate() {
                for (c, &a) in row.iter().enumerate() {
                    S::store(s.add((j0 + t) * GROUP + (c0 + c) * S::W), a);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Acc^T += B^T P^T

/// acc[d][r] += sum_{j < n} b[j][d] p[j][r] for d < nd, r < GROUP.
///
/// `p`: `n` rows of GROUP; `b`: `n` rows of `nd` columns in panels of
/// [`HD_STEP`] columns: b[j][d] is at (d / HD_STEP) * `ps` + j * HD_STEP +
/// d % HD_STEP (so the kernel walks each panel front to back); `acc`: `nd`
/// rows of GROUP. `nd` must be a multiple of [`HD_STEP`].
///
/// # Safety
/// The pointers must address those extents.
pub unsafe fn pv_t(isa: Isa, p: *const f32, n: usize, b: *const f32, ps: usize, nd: usize, acc: *mut f32) {
    assert!(nd.is_multiple_of(HD_STEP));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::pv_t_avx512(p, n, b, ps, nd, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::pv_t_avx2(p, n, b, ps, nd, acc),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Wasm128 => pv_t_body::<wasm::Wasm128, 8, 2, 4>(p, n, b, ps, nd, acc),
        _ => pv_t_body::<Portable, 8, 2, 8>(p, n, b, ps, nd, acc),
    }
}

/// DT head-dim rows by CV of a row's C vectors at a time: DT * CV
/// accumulators (each sum in the same order whatever the tile).
#[inline(always)]
unsafe fn pv_t_body<S: Simd, const C: usize, const DT: usize, const CV: usize>(
    p: *const f32,
    n: usize,
    b: *const f32,
    ps: usize,
    nd: usize,
    acc: *mut f32,
) {
    debug_assert!(C * S::W == GROUP && HD_STEP.is_multiple_of(DT) && C.is_multiple_of(CV));
    for c0 in (0..C).step_by(CV) {
        for d0 in (0..nd).step_by(DT) {
            let mut o = [[S::splat(0.0); CV]; DT];
            for (t, row) in o.iter_mut().enumerate() {
                for (c, x) in row.iter_mut().enumerate() {
                    *x = S::load(acc.add((d0 + t) * GROUP + (c0 + c) * S::W));
                }
            }
            let (mut pp, mut bp) = (p.add(c0 * S::W), b.add(d0 / HD_STEP * ps + d0 % HD_STEP));
            for _ in 0..n {
                let mut pv = [S::splat(0.0); CV];
                for (c, x) in pv.iter_mut().enumerate() {
                    *x = S::load(pp.add(c * S::W));
                }
                for (t, row) in o.iter_mut().enumerate() {
                    let bb = S::splat(*bp.add(t));
                    for (x, &y) in row.iter_mut().zip(&pv) {
                        *x = S::fma(bb, y, *x);
                    }
                }
                pp = pp.add(GROUP);
                bp = bp.add(HD_STEP);
            }
            for (t, row) in o.iter().enumerate() {
                for (c, &x) in row.iter().enumerate() {
                    S::store(acc.add((d0 + t) * GROUP + (c0 + c) * S::W), x);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Acc += A B, the head dim along the lanes

/// acc[j][c] += sum_{r < GROUP} a[j][r] b[r][c] for j < nrows, c < ncols.
///
/// `a`: `nrows` rows of GROUP (a key-major tile: P^T or dS^T); `b`: GROUP
/// rows (stride `ldb`) of at least `ncols`; `acc`: `nrows` rows (stride
/// `ldacc`). `nrows` must be a multiple of [`KEY_STEP`], `ncols` of
/// [`COL_STEP`].
///
/// # Safety
/// The pointers must address those extents.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_acc(
    isa: Isa,
    a: *const f32,
    nrows: usize,
    b: *const f32,
    ldb: usize,
    ncols: usize,
    acc: *mut f32,
    ldacc: usize,
) {
    assert!(nrows.is_multiple_of(KEY_STEP) && ncols.is_multiple_of(COL_STEP));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::rows_acc_avx512(a, nrows, b, ldb, ncols, acc, ldacc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::rows_acc_avx2(a, nrows, b, ldb, ncols, acc, ldacc),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Wasm128 => rows_acc_body::<wasm::Wasm128, 4, 2>(a, nrows, b, ldb, ncols, acc, ldacc),
        _ => rows_acc_body::<Portable, 8, 2>(a, nrows, b, ldb, ncols, acc, ldacc),
    }
}

/// R output rows at a time, in column chunks of NV vectors (or one, last).
#[inline(always)]
unsafe fn rows_acc_body<S: Simd, const R: usize, const NV: usize>(
    a: *const f32,
    nrows: usize,
    b: *const f32,
    ldb: usize,
    ncols: usize,
    acc: *mut f32,
    ldacc: usize,
) {
    for j0 in (0..nrows).step_by(R) {
        let mut c0 = 0;
        while c0 < ncols {
            let (ap, bp, out) = (a.add(j0 * GROUP), b.add(c0), acc.add(j0 * ldacc + c0));
            if ncols - c0 >= NV * S::W {
                rows_acc_tile::<S, R, NV>(ap, bp, ldb, out, ldacc);
                c0 += NV * S::W;
            } else {
                rows_acc_tile::<S, R, 1>(ap, bp, ldb, out, ldacc);
                c0 += S::W;
            }
        }
    }
}

#[inline(always)]
unsafe fn rows_acc_tile<S: Simd, const R: usize, const NV: usize>(
    a: *const f32,
    b: *const f32,
    ldb: usize,
    acc: *mut f32,
    ldacc: usize,
) {
    let mut o = [[S::splat(0.0); NV]; R];
    for (j, row) in o.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = S::load(acc.add(j * ldacc + c * S::W));
        }
    }
    let (mut ap, mut bp) = (a, b);
    for _ in 0..GROUP {
        let mut bv = [S::splat(0.0); NV];
        for (c, x) in bv.iter_mut().enumerate() {
            *x = S::load(bp.add(c * S::W));
        }
        for (j, row) in o.iter_mut().enumerate() {
            let ab = S::splat(*ap.add(j * GROUP));
            for (x, &y) in row.iter_mut().zip(&bv) {
                *x = S::fma(ab, y, *x);
            }
        }
        ap = ap.add(1);
        bp = bp.add(ldb);
    }
    for (j, row) in o.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            S::store(acc.add(j * ldacc + c * S::W), x);
        }
    }
}

// ---------------------------------------------------------------------------
// The online-softmax step (forward)

/// The online-softmax state of a group of query rows: per row, the running
/// max m, the normaliser Z = sum_j e^{s_j - m} and E = sum_j e^{s_j - m}
/// (s_j - m).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct GroupState {
    pub m: [f32; GROUP],
    pub z: [f32; GROUP],
    pub e: [f32; GROUP],
}

impl GroupState {
    pub const NEW: GroupState = GroupState {
        m: [f32::NEG_INFINITY; GROUP],
        z: [0.0; GROUP],
        e: [0.0; GROUP],
    };
}

/// The online-softmax step of a group against one key block.
///
/// `s` holds `nk` rows (keys) of GROUP scores (query rows), `acc` the
/// group's accumulator, transposed (`nd` rows of GROUP). With `diag` =
/// Some(j0 - row0) (the block's first key minus the group's first row),
/// lane r of key j is visible only if j + diag <= r (causality); None: all
/// are. With m' = max(m, the block's max over visible scores) and
/// c = e^{m - m'}: Z <- c Z, E <- c (E + (m - m') Z), acc <- c acc; then
/// s <- p = e^{s - m'} (0 where hidden), Z += sum p, E += sum p (s - m').
///
/// # Safety
/// `s` must hold `nk` rows of GROUP, `acc` `nd` rows of GROUP.
pub unsafe fn softmax_t(
    isa: Isa,
    s: *mut f32,
    nk: usize,
    diag: Option<isize>,
    state: &mut GroupState,
    acc: *mut f32,
    nd: usize,
) {
    let dg = diag.unwrap_or(0).clamp(-(1 << 30), 1 << 30) as i32;
    match (isa, diag.is_some()) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => x86::softmax_t_avx512(s, nk, state, acc, nd),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => x86::softmax_t_masked_avx512(s, nk, dg, state, acc, nd),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => x86::softmax_t_avx2(s, nk, state, acc, nd),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => x86::softmax_t_masked_avx2(s, nk, dg, state, acc, nd),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Wasm128, false) => softmax_t_body::<wasm::Wasm128, 8, 2, false>(s, nk, 0, state, acc, nd),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Wasm128, true) => softmax_t_body::<wasm::Wasm128, 8, 2, true>(s, nk, dg, state, acc, nd),
        (_, false) => softmax_t_body::<Portable, 8, 2, false>(s, nk, 0, state, acc, nd),
        (_, true) => softmax_t_body::<Portable, 8, 2, true>(s, nk, dg, state, acc, nd),
    }
}

#[inline(always)]
unsafe fn softmax_t_body<S: Simd, const C: usize, const CB: usize, const MASKED: bool>(
    s: *mut f32,
    nk: usize,
    diag: i32,
    state: &mut GroupState,
    acc: *mut f32,
    nd: usize,
) {
    debug_assert!(C * S::W == GROUP && C.is_multiple_of(CB));
    let ninf = f32::NEG_INFINITY;
    // CB vectors of rows at a time, their state in registers (all C at once
    // spilled AVX2's 16 registers; one at a time slowed AVX-512). Lane l of
    // vector c is row c * W + l; key j is visible from row j + diag on.
    let visible =
        |v: S::V, c: usize, j: usize, fill: f32| S::keep_range(v, (c * S::W) as i32, j as i32 + diag, i32::MAX, fill);
    for c0 in (0..C).step_by(CB) {
        // The block's max over the visible scores.
        let mut bm = [S::splat(ninf); CB];
        for j in 0..nk {
            for (i, m) in bm.iter_mut().enumerate() {
                let x = S::load(s.add(j * GROUP + (c0 + i) * S::W));
                *m = S::max(*m, if MASKED { visible(x, c0 + i, j, ninf) } else { x });
            }
        }
        // Rescale the state and the accumulator to the new max. A row with
        // no key yet (m = -inf, Z = E = acc = 0) takes delta = 0, c = 1.
        let mut m_new = [S::splat(0.0); CB];
        let mut z = [S::splat(0.0); CB];
        let mut e = [S::splat(0.0); CB];
        for i in 0..CB {
            let off = (c0 + i) * S::W;
            let m_old = S::load(state.m.as_ptr().add(off));
            m_new[i] = S::max(m_old, bm[i]);
            // m_old - m_new, or 0 where m_old = -inf (-inf - -inf is NaN).
            let delta = S::zero_where_below(S::sub(m_old, m_new[i]), m_old, f32::MIN);
            let scale = exp_nonpos::<S>(delta);
            let z_old = S::load(state.z.as_ptr().add(off));
            let e_old = S::load(state.e.as_ptr().add(off));
            e[i] = S::mul(scale, S::fma(delta, z_old, e_old));
            z[i] = S::mul(scale, z_old);
            S::store(state.m.as_mut_ptr().add(off), m_new[i]);
            for d in 0..nd {
                let a = acc.add(d * GROUP + off);
                S::store(a, S::mul(S::load(a), scale));
            }
        }
        // p = e^{s - m'}, the sums.
        for j in 0..nk {
            for i in 0..CB {
                let sp = s.add(j * GROUP + (c0 + i) * S::W);
                let mut d = S::sub(S::load(sp), m_new[i]);
                let mut p = exp_nonpos::<S>(d);
                if MASKED {
                    // Hidden lanes: p = 0 and d = 0 (d may be inf or NaN).
                    p = visible(p, c0 + i, j, 0.0);
                    d = visible(d, c0 + i, j, 0.0);
                }
                S::store(sp, p);
                z[i] = S::add(z[i], p);
                e[i] = S::fma(p, d, e[i]);
            }
        }
        for i in 0..CB {
            S::store(state.z.as_mut_ptr().add((c0 + i) * S::W), z[i]);
            S::store(state.e.as_mut_ptr().add((c0 + i) * S::W), e[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// The backward's elementwise step

/// For a group against one key block, with raw = k . q (unscaled) in `raw`
/// and dp = v . dO in `dp`, both `nk` rows of GROUP: p = e^{lambda raw -
/// lse} (the exponent clamped at 0: it is <= 0 but for rounding),
/// dS = p (dp - D); `raw` <- lambda dS and `dp` <- p. With `diag` (as in
/// [`softmax_t`]) hidden entries, and lanes r >= `rows`, become 0. Returns
/// sum dS raw (the head scale's gradient, before the 1 / sqrt(d)).
///
/// # Safety
/// Both buffers must hold `nk` rows of GROUP.
#[allow(clippy::too_many_arguments)]
pub unsafe fn bwd_t(
    isa: Isa,
    raw: *mut f32,
    dp: *mut f32,
    nk: usize,
    diag: Option<isize>,
    rows: usize,
    lse: &[f32; GROUP],
    dd: &[f32; GROUP],
    lambda: f32,
) -> f32 {
    let masked = diag.is_some() || rows < GROUP;
    // No diagonal: every key visible from row 0 on (keys < 2^30 here).
    let dg = diag.unwrap_or(-(1 << 30)).clamp(-(1 << 30), 1 << 30) as i32;
    let rows = rows.min(GROUP) as i32;
    match (isa, masked) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => x86::bwd_t_avx512(raw, dp, nk, dg, rows, lse, dd, lambda),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => x86::bwd_t_masked_avx512(raw, dp, nk, dg, rows, lse, dd, lambda),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => x86::bwd_t_avx2(raw, dp, nk, dg, rows, lse, dd, lambda),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => x86::bwd_t_masked_avx2(raw, dp, nk, dg, rows, lse, dd, lambda),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Wasm128, false) => bwd_t_body::<wasm::Wasm128, 8, false>(raw, dp, nk, dg, rows, lse, dd, lambda),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Wasm128, true) => bwd_t_body::<wasm::Wasm128, 8, true>(raw, dp, nk, dg, rows, lse, dd, lambda),
        (_, false) => bwd_t_body::<Portable, 8, false>(raw, dp, nk, dg, rows, lse, dd, lambda),
        (_, true) => bwd_t_body::<Portable, 8, true>(raw, dp, nk, dg, rows, lse, dd, lambda),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_t_body<S: Simd, const C: usize, const MASKED: bool>(
    raw: *mut f32,
    dp: *mut f32,
    nk: usize,
    diag: i32,
    rows: i32,
    lse: &[f32; GROUP],
    dd: &[f32; GROUP],
    lambda: f32,
) -> f32 {
    debug_assert!(C * S::W == GROUP);
    let lam = S::splat(lambda);
    let zero = S::splat(0.0);
    let mut dl = zero;
    // One vector of rows at a time, as in softmax_t_body.
    for c in 0..C {
        let first = (c * S::W) as i32;
        let neg_lse = S::sub(zero, S::load(lse.as_ptr().add(c * S::W)));
        let dv = S::load(dd.as_ptr().add(c * S::W));
        for j in 0..nk {
            let (rp, pp) = (raw.add(j * GROUP + c * S::W), dp.add(j * GROUP + c * S::W));
            let mut x = S::load(rp);
            let mut p = exp_nonpos::<S>(S::min(S::fma(lam, x, neg_lse), zero));
            if MASKED {
                // Lanes r visible: j + diag <= r < rows.
                let lo = j as i32 + diag;
                p = S::keep_range(p, first, lo, rows, 0.0);
                x = S::keep_range(x, first, lo, rows, 0.0);
            }
            let ds = S::mul(p, S::sub(S::load(pp), dv));
            dl = S::fma(ds, x, dl);
            S::store(rp, S::mul(ds, lam));
            S::store(pp, p);
        }
    }
    S::hsum(dl)
}

// ---------------------------------------------------------------------------
// The wasm copy: the same bodies on v128 (4 lanes). The web page's build
// has `simd128` (.cargo/config.toml); engines compile each v128 operation
// to one SSE/AVX or NEON instruction. They have 16 vector registers (on
// x86, one of them their scratch), so the tiles are the AVX2 copy's
// register counts: 8 accumulators in the products.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::Simd;
    use std::arch::wasm32::*;

    pub struct Wasm128;

    impl Simd for Wasm128 {
        type V = v128;
        const W: usize = 4;
        #[inline(always)]
        unsafe fn splat(x: f32) -> v128 {
            f32x4_splat(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> v128 {
            v128_load(p as *const v128)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: v128) {
            v128_store(p as *mut v128, v)
        }
        #[inline(always)]
        unsafe fn add(a: v128, b: v128) -> v128 {
            f32x4_add(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: v128, b: v128) -> v128 {
            f32x4_sub(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: v128, b: v128) -> v128 {
            f32x4_mul(a, b)
        }
        // The pseudo-min/max (`b < a ? b : a`): one instruction on x86,
        // where the IEEE forms need several; equal to them without NaN.
        #[inline(always)]
        unsafe fn max(a: v128, b: v128) -> v128 {
            f32x4_pmax(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: v128, b: v128) -> v128 {
            f32x4_pmin(a, b)
        }
        /// Fused only in the build with relaxed SIMD (web/builds.sh: the
        /// page loads it where the browser validates it); a module using
        /// relaxed SIMD does not load where it is missing.
        #[inline(always)]
        unsafe fn fma(a: v128, b: v128, c: v128) -> v128 {
            crate::model::wasm_sgemm::madd(a, b, c)
        }
        #[inline(always)]
        unsafe fn pow2_shifted(k: v128) -> v128 {
            const SHIFTER_BITS: i32 = 0x4b40_0000; // 12582912.0 = 1.5 * 2^23
            i32x4_shl(i32x4_sub(k, i32x4_splat(SHIFTER_BITS - 127)), 23)
        }
        #[inline(always)]
        unsafe fn zero_where_below(v: v128, x: v128, lim: f32) -> v128 {
            v128_andnot(v, f32x4_lt(x, f32x4_splat(lim)))
        }
        #[inline(always)]
        unsafe fn keep_range(v: v128, from: i32, lo: i32, hi: i32, fill: f32) -> v128 {
            let idx = i32x4_add(i32x4_splat(from), i32x4(0, 1, 2, 3));
            let keep = v128_and(i32x4_ge(idx, i32x4_splat(lo)), i32x4_lt(idx, i32x4_splat(hi)));
            v128_bitselect(v, f32x4_splat(fill), keep)
        }
        #[inline(always)]
        unsafe fn hsum(v: v128) -> f32 {
            (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<2>(v))
                + (f32x4_extract_lane::<1>(v) + f32x4_extract_lane::<3>(v))
        }
    }
}

// ---------------------------------------------------------------------------
// The x86-64 copies: the same bodies on AVX-512 and AVX2 vectors.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    const SHIFTER_BITS: i32 = 0x4b40_0000; // 12582912.0 = 1.5 * 2^23

    struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        const W: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn pow2_shifted(k: __m512) -> __m512 {
            let n = _mm512_sub_epi32(_mm512_castps_si512(k), _mm512_set1_epi32(SHIFTER_BITS - 127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(n))
        }
        #[inline(always)]
        unsafe fn zero_where_below(v: __m512, x: __m512, lim: f32) -> __m512 {
            // not (x < lim), true for NaN like the scalar `if x < lim`.
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(lim)), v)
        }
        #[inline(always)]
        unsafe fn keep_range(v: __m512, from: i32, lo: i32, hi: i32, fill: f32) -> __m512 {
            let idx = _mm512_add_epi32(
                _mm512_set1_epi32(from),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            let m = _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32(lo))
                & _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32(hi));
            _mm512_mask_blend_ps(m, _mm512_set1_ps(fill), v)
        }
        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
    }

    struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        const W: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn pow2_shifted(k: __m256) -> __m256 {
            let n = _mm256_sub_epi32(_mm256_castps_si256(k), _mm256_set1_epi32(SHIFTER_BITS - 127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(n))
        }
        #[inline(always)]
        unsafe fn zero_where_below(v: __m256, x: __m256, lim: f32) -> __m256 {
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(x, _mm256_set1_ps(lim)), v)
        }
        #[inline(always)]
        unsafe fn keep_range(v: __m256, from: i32, lo: i32, hi: i32, fill: f32) -> __m256 {
            let idx = _mm256_add_epi32(_mm256_set1_epi32(from), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            // lo <= idx  <=>  idx > lo - 1;  idx < hi  <=>  hi > idx.
            let ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(lo.saturating_sub(1)));
            let lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), idx);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(_mm256_and_si256(ge, lt)))
        }
        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
    }

    /// e^x of GROUP values (tests).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn exp_avx512(x: &[f32; GROUP]) -> [f32; GROUP] {
        exp_group::<Avx512>(x)
    }

    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_avx2(x: &[f32; GROUP]) -> [f32; GROUP] {
        exp_group::<Avx2>(x)
    }

    // AVX-512: 32 zmm. Products: 8 x 2 = 16 accumulators + 2 loaded vectors.

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn scores_t_avx512(qt: *const f32, hd: usize, kt: *const f32, ncols: usize, s: *mut f32) {
        scores_t_body::<Avx512, 2, 8, 2>(qt, hd, kt, ncols, s)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn pv_t_avx512(p: *const f32, n: usize, b: *const f32, ps: usize, nd: usize, acc: *mut f32) {
        pv_t_body::<Avx512, 2, 8, 2>(p, n, b, ps, nd, acc)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn rows_acc_avx512(
        a: *const f32,
        nrows: usize,
        b: *const f32,
        ldb: usize,
        ncols: usize,
        acc: *mut f32,
        ldacc: usize,
    ) {
        rows_acc_body::<Avx512, 8, 2>(a, nrows, b, ldb, ncols, acc, ldacc)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn softmax_t_avx512(s: *mut f32, nk: usize, state: &mut GroupState, acc: *mut f32, nd: usize) {
        softmax_t_body::<Avx512, 2, 2, false>(s, nk, 0, state, acc, nd)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn softmax_t_masked_avx512(
        s: *mut f32,
        nk: usize,
        diag: i32,
        state: &mut GroupState,
        acc: *mut f32,
        nd: usize,
    ) {
        softmax_t_body::<Avx512, 2, 2, true>(s, nk, diag, state, acc, nd)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn bwd_t_avx512(
        raw: *mut f32,
        dp: *mut f32,
        nk: usize,
        diag: i32,
        rows: i32,
        lse: &[f32; GROUP],
        dd: &[f32; GROUP],
        lambda: f32,
    ) -> f32 {
        bwd_t_body::<Avx512, 2, false>(raw, dp, nk, diag, rows, lse, dd, lambda)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn bwd_t_masked_avx512(
        raw: *mut f32,
        dp: *mut f32,
        nk: usize,
        diag: i32,
        rows: i32,
        lse: &[f32; GROUP],
        dd: &[f32; GROUP],
        lambda: f32,
    ) -> f32 {
        bwd_t_body::<Avx512, 2, true>(raw, dp, nk, diag, rows, lse, dd, lambda)
    }

    // AVX2: 16 ymm. Products: 2 x 4 = 8 accumulators + 4 loaded vectors.

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores_t_avx2(qt: *const f32, hd: usize, kt: *const f32, ncols: usize, s: *mut f32) {
        scores_t_body::<Avx2, 4, 2, 4>(qt, hd, kt, ncols, s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pv_t_avx2(p: *const f32, n: usize, b: *const f32, ps: usize, nd: usize, acc: *mut f32) {
        pv_t_body::<Avx2, 4, 2, 4>(p, n, b, ps, nd, acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows_acc_avx2(
        a: *const f32,
        nrows: usize,
        b: *const f32,
        ldb: usize,
        ncols: usize,
        acc: *mut f32,
        ldacc: usize,
    ) {
        rows_acc_body::<Avx2, 4, 2>(a, nrows, b, ldb, ncols, acc, ldacc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_t_avx2(s: *mut f32, nk: usize, state: &mut GroupState, acc: *mut f32, nd: usize) {
        softmax_t_body::<Avx2, 4, 1, false>(s, nk, 0, state, acc, nd)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_t_masked_avx2(
        s: *mut f32,
        nk: usize,
        diag: i32,
        state: &mut GroupState,
        acc: *mut f32,
        nd: usize,
    ) {
        softmax_t_body::<Avx2, 4, 1, true>(s, nk, diag, state, acc, nd)
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn bwd_t_avx2(
        raw: *mut f32,
        dp: *mut f32,
        nk: usize,
        diag: i32,
        rows: i32,
        lse: &[f32; GROUP],
        dd: &[f32; GROUP],
        lambda: f32,
    ) -> f32 {
        bwd_t_body::<Avx2, 4, false>(raw, dp, nk, diag, rows, lse, dd, lambda)
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn bwd_t_masked_avx2(
        raw: *mut f32,
        dp: *mut f32,
        nk: usize,
        diag: i32,
        rows: i32,
        lse: &[f32; GROUP],
        dd: &[f32; GROUP],
        lambda: f32,
    ) -> f32 {
        bwd_t_body::<Avx2, 4, true>(raw, dp, nk, diag, rows, lse, dd, lambda)
    }
}

/// e^x of GROUP values with one copy's vector exp (tests).
#[cfg(test)]
#[inline(always)]
unsafe fn exp_group<S: Simd>(x: &[f32; GROUP]) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    for c in (0..GROUP).step_by(S::W) {
        S::store(out.as_mut_ptr().add(c), exp_nonpos::<S>(S::load(x.as_ptr().add(c))));
    }
    out
}

#[cfg(test)]
fn exp_test(isa: Isa, x: &[f32; GROUP]) -> [f32; GROUP] {
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::exp_avx512(x),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::exp_avx2(x),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm128 => exp_group::<wasm::Wasm128>(x),
            _ => exp_group::<Portable>(x),
        }
    }
}

/// Each kernel of each copy this processor runs against a plain loop, on
/// seeded random inputs whose sizes are not multiples of the tiles.
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

    fn rand(rng: &mut Rng, n: usize, spread: f64) -> Vec<f32> {
        (0..n).map(|_| (rng.normal() * spread) as f32).collect()
    }

    /// Products in f32 against f64 sums: error ~ n * eps * |terms|.
    const PRODUCT: Tolerance = Tolerance::new(1e-5, 1e-5);

    #[test]
    fn exp_matches_scalar_and_std() {
        for isa in Isa::available() {
            let mut worst = 0f64;
            let mut x = 0f32;
            while x > -95.0 {
                let xs: [f32; GROUP] = std::array::from_fn(|l| x - l as f32 * 0.0029);
                let got = exp_test(isa, &xs);
                for (l, &g) in got.iter().enumerate() {
                    let xv = xs[l];
                    if xv < -87.0 {
                        assert_eq!(g, 0.0, "{isa:?} e^{xv}");
                    } else {
                        let want = (xv as f64).exp();
                        worst = worst.max(((g as f64 - want) / want).abs());
                    }
                }
                x -= 0.0931;
            }
            assert!(worst < 4e-7, "{isa:?}: worst relative error {worst}");
            let mut special = [0f32; GROUP];
            special[1] = f32::NEG_INFINITY;
            special[2] = -87.5;
            let got = exp_test(isa, &special);
            assert_eq!(got[0], 1.0, "{isa:?}");
            assert_eq!(got[1], 0.0, "{isa:?}");
            assert_eq!(got[2], 0.0, "{isa:?}");
        }
    }

    #[test]
    fn scores_t_matches_loops() {
        let mut rng = Rng::new(11);
        for &(hd, ncols) in &[(1, 8), (5, 24), (13, 40), (32, 128), (37, 16)] {
            let qt = rand(&mut rng, hd * GROUP, 1.0);
            let kt = rand(&mut rng, hd * ncols, 1.0);
            let k = |j: usize, d: usize| kt[j / KEY_STEP * hd * KEY_STEP + d * KEY_STEP + j % KEY_STEP] as f64;
            let mut want = vec![0f64; ncols * GROUP];
            for j in 0..ncols {
                for r in 0..GROUP {
                    want[j * GROUP + r] = (0..hd).map(|d| k(j, d) * qt[d * GROUP + r] as f64).sum();
                }
            }
            for isa in Isa::available() {
                let mut s = vec![f32::NAN; ncols * GROUP];
                unsafe { scores_t(isa, qt.as_ptr(), hd, kt.as_ptr(), ncols, s.as_mut_ptr()) };
                assert_close(&format!("scores_t {isa:?} hd={hd} ncols={ncols}"), &s, &want, PRODUCT);
            }
        }
    }

    #[test]
    fn pv_t_matches_loops() {
        let mut rng = Rng::new(12);
        for &(n, nd, ps) in &[(1, 8, 8), (7, 8, 60), (37, 24, 300), (128, 40, 1024), (3, 64, 24)] {
            let p = rand(&mut rng, n * GROUP, 1.0);
            let b = rand(&mut rng, nd / HD_STEP * ps, 1.0);
            let bv = |j: usize, d: usize| b[d / HD_STEP * ps + j * HD_STEP + d % HD_STEP] as f64;
            let acc0 = rand(&mut rng, nd * GROUP, 1.0);
            let mut want = vec![0f64; nd * GROUP];
            for d in 0..nd {
                for r in 0..GROUP {
                    want[d * GROUP + r] =
                        acc0[d * GROUP + r] as f64 + (0..n).map(|j| bv(j, d) * p[j * GROUP + r] as f64).sum::<f64>();
                }
            }
            for isa in Isa::available() {
                let mut acc = acc0.clone();
                unsafe { pv_t(isa, p.as_ptr(), n, b.as_ptr(), ps, nd, acc.as_mut_ptr()) };
                assert_close(&format!("pv_t {isa:?} n={n} nd={nd}"), &acc, &want, PRODUCT);
            }
        }
    }

    #[test]
    fn rows_acc_matches_loops() {
        let mut rng = Rng::new(13);
        for &(nrows, ncols, ldb, ldacc) in &[(8, 16, 16, 16), (24, 48, 50, 48), (128, 32, 32, 40), (16, 80, 80, 96)] {
            let a = rand(&mut rng, nrows * GROUP, 1.0);
            let b = rand(&mut rng, GROUP * ldb, 1.0);
            let acc0 = rand(&mut rng, nrows * ldacc, 1.0);
            let mut want: Vec<f64> = acc0.iter().map(|&x| x as f64).collect();
            for j in 0..nrows {
                for c in 0..ncols {
                    want[j * ldacc + c] += (0..GROUP)
                        .map(|r| a[j * GROUP + r] as f64 * b[r * ldb + c] as f64)
                        .sum::<f64>();
                }
            }
            for isa in Isa::available() {
                let mut acc = acc0.clone();
                unsafe { rows_acc(isa, a.as_ptr(), nrows, b.as_ptr(), ldb, ncols, acc.as_mut_ptr(), ldacc) };
                assert_close(&format!("rows_acc {isa:?} {nrows}x{ncols}"), &acc, &want, PRODUCT);
            }
        }
    }

    /// The online-softmax step, in f64, one row at a time.
    fn softmax_ref(
        s: &mut [f64],
        nk: usize,
        diag: Option<isize>,
        m: &mut [f64],
        z: &mut [f64],
        e: &mut [f64],
        acc: &mut [f64],
        nd: usize,
    ) {
        for r in 0..GROUP {
            let vis = |j: usize| diag.is_none_or(|dg| j as isize + dg <= r as isize);
            let bmax = (0..nk)
                .filter(|&j| vis(j))
                .map(|j| s[j * GROUP + r])
                .fold(f64::NEG_INFINITY, f64::max);
            let mn = m[r].max(bmax);
            if m[r] != f64::NEG_INFINITY {
                let c = (m[r] - mn).exp();
                e[r] = c * (e[r] + (m[r] - mn) * z[r]);
                z[r] *= c;
                for d in 0..nd {
                    acc[d * GROUP + r] *= c;
                }
            }
            m[r] = mn;
            for j in 0..nk {
                let x = &mut s[j * GROUP + r];
                if vis(j) {
                    let p = (*x - mn).exp();
                    z[r] += p;
                    e[r] += p * (*x - mn);
                    *x = p;
                } else {
                    *x = 0.0;
                }
            }
        }
    }

    #[test]
    fn softmax_t_matches_loops() {
        let mut rng = Rng::new(14);
        // (keys, diagonal, spread): whole blocks, diagonals cutting a
        // group at various places, a row group that sees nothing.
        let cases: [(usize, Option<isize>, f64); 7] = [
            (128, None, 1.0),
            (37, None, 3.0),
            (128, Some(-96), 2.0),
            (64, Some(0), 1.0),
            (50, Some(-20), 30.0),
            (9, Some(25), 1.0),
            (16, Some(40), 1.0),
        ];
        for (n, &(nk, diag, spread)) in cases.iter().enumerate() {
            let nd = 24;
            let s0 = rand(&mut rng, nk * GROUP, spread);
            let mut acc0 = rand(&mut rng, nd * GROUP, 1.0);
            // A state from earlier blocks: some rows fresh (m = -inf, and
            // then Z = E = acc = 0), some not.
            let mut st0 = GroupState::NEW;
            for r in 0..GROUP {
                if (r + n) % 3 != 0 {
                    st0.m[r] = (rng.normal() * spread) as f32;
                    st0.z[r] = 1.0 + rng.uniform() as f32 * 5.0;
                    st0.e[r] = -(rng.uniform() as f32) * 3.0;
                } else {
                    for d in 0..nd {
                        acc0[d * GROUP + r] = 0.0;
                    }
                }
            }
            let f64s = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let (mut s_r, mut acc_r) = (f64s(&s0), f64s(&acc0));
            let (mut m_r, mut z_r, mut e_r) = (f64s(&st0.m), f64s(&st0.z), f64s(&st0.e));
            softmax_ref(&mut s_r, nk, diag, &mut m_r, &mut z_r, &mut e_r, &mut acc_r, nd);
            for isa in Isa::available() {
                let (mut s, mut acc, mut st) = (s0.clone(), acc0.clone(), st0);
                unsafe { softmax_t(isa, s.as_mut_ptr(), nk, diag, &mut st, acc.as_mut_ptr(), nd) };
                let what = format!("softmax_t {isa:?} nk={nk} diag={diag:?}");
                let tol = Tolerance::new(1e-6, 1e-5);
                assert_close(&format!("{what} p"), &s, &s_r, tol);
                assert_close(&format!("{what} acc"), &acc, &acc_r, tol);
                // Rows that saw no key keep m = -inf: compare the others.
                let seen: Vec<usize> = (0..GROUP).filter(|&r| m_r[r] != f64::NEG_INFINITY).collect();
                let pick = |x: &[f32]| seen.iter().map(|&r| x[r]).collect::<Vec<f32>>();
                let pick64 = |x: &[f64]| seen.iter().map(|&r| x[r]).collect::<Vec<f64>>();
                assert_close(
                    &format!("{what} m"),
                    &pick(&st.m),
                    &pick64(&m_r),
                    Tolerance::new(0.0, 0.0),
                );
                assert_close(&format!("{what} z"), &pick(&st.z), &pick64(&z_r), tol);
                assert_close(
                    &format!("{what} e"),
                    &pick(&st.e),
                    &pick64(&e_r),
                    Tolerance::new(1e-5, 1e-5),
                );
                for (r, &mr) in m_r.iter().enumerate() {
                    if mr == f64::NEG_INFINITY {
                        assert!(
                            st.m[r] == f32::NEG_INFINITY && st.z[r] == 0.0 && st.e[r] == 0.0,
                            "{what} row {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bwd_t_matches_loops() {
        let mut rng = Rng::new(15);
        let cases: [(usize, Option<isize>, usize); 5] = [
            (128, None, GROUP),
            (40, None, 21),
            (64, Some(-32), GROUP),
            (24, Some(3), 30),
            (8, Some(31), 1),
        ];
        for &(nk, diag, rows) in &cases {
            let lambda = 0.7f32;
            let raw0 = rand(&mut rng, nk * GROUP, 2.0);
            let dp0 = rand(&mut rng, nk * GROUP, 1.0);
            let dd: [f32; GROUP] = std::array::from_fn(|_| rng.normal() as f32);
            // lse >= every visible lambda raw, as a real log-sum-exp is.
            let lse: [f32; GROUP] = std::array::from_fn(|r| {
                (0..nk)
                    .map(|j| lambda * raw0[j * GROUP + r])
                    .fold(f32::NEG_INFINITY, f32::max)
                    + rng.uniform() as f32
            });
            let mut raw_r = vec![0f64; nk * GROUP];
            let mut p_r = vec![0f64; nk * GROUP];
            let mut dl_r = 0f64;
            for j in 0..nk {
                for r in 0..GROUP {
                    let vis = r < rows && diag.is_none_or(|dg| j as isize + dg <= r as isize);
                    if vis {
                        let x = raw0[j * GROUP + r] as f64;
                        let p = (lambda as f64 * x - lse[r] as f64).min(0.0).exp();
                        let ds = p * (dp0[j * GROUP + r] as f64 - dd[r] as f64);
                        dl_r += ds * x;
                        raw_r[j * GROUP + r] = ds * lambda as f64;
                        p_r[j * GROUP + r] = p;
                    }
                }
            }
            for isa in Isa::available() {
                let (mut raw, mut dp) = (raw0.clone(), dp0.clone());
                let dl = unsafe {
                    bwd_t(
                        isa,
                        raw.as_mut_ptr(),
                        dp.as_mut_ptr(),
                        nk,
                        diag,
                        rows,
                        &lse,
                        &dd,
                        lambda,
                    )
                };
                let what = format!("bwd_t {isa:?} nk={nk} diag={diag:?} rows={rows}");
                let tol = Tolerance::new(1e-6, 1e-5);
                assert_close(&format!("{what} lambda dS"), &raw, &raw_r, tol);
                assert_close(&format!("{what} P"), &dp, &p_r, tol);
                assert_close(&format!("{what} d lambda"), &[dl], &[dl_r], Tolerance::new(1e-4, 1e-5));
            }
        }
    }
}
