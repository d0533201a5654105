//! The f32 matrix product of the web page's build (wasm32 with `simd128`).
//!
//! `matrixmultiply` has a wasm SIMD kernel too, 8 x 8 with 16 accumulators;
//! the engines that run wasm on x86 have 15 usable vector registers, so its
//! accumulators spill. This one keeps a 4 x 8 tile of C in 8 accumulators
//! and broadcasts A's elements straight from memory (`load32_splat`): 20%
//! faster at the bundled model's shapes in V8 (docs/BENCH.md, "The CPU
//! engine in the browser"). Both sum over k in order, one product at a
//! time. In the build with relaxed SIMD (web/builds.sh) each step is one
//! `f32x4.relaxed_madd`, fused where the processor has FMA (1.5x here).
//!
//! Blocking: k in blocks of [`KC`]; per block, B packed once into panels
//! of [`NR`] columns (k-major, zero past n), then each [`MR`]-row panel of A
//! packed (k-major, zero past m) and multiplied against every B panel.

use std::arch::wasm32::*;

/// Rows of C per tile.
const MR: usize = 4;
/// Vectors of C per tile row.
const NV: usize = 2;
/// Columns of C per tile.
const NR: usize = 4 * NV;
/// Depth of one packed block (an A panel is 4 KB, in L1).
const KC: usize = 256;
/// Columns of one packed block of B (256 KB, in L2).
const NC: usize = 256;

/// C (m x n) = alpha * A (m x k) B (k x n) + beta * C with element strides
/// as in `matrixmultiply::sgemm`; beta = 0 writes C without reading it.
///
/// # Safety
/// The pointers and strides must address those extents.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
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
    if m == 0 || n == 0 {
        return;
    }
    let at = |i: usize, j: usize| c.offset(i as isize * rsc + j as isize * csc);
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                *at(i, j) = if beta == 0.0 { 0.0 } else { beta * *at(i, j) };
            }
        }
        return;
    }
    let mut bpack = vec![0f32; NC.min(n).div_ceil(NR) * NR * KC.min(k)];
    let mut apack = [0f32; MR * KC];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let npan = nc.div_ceil(NR);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for (pn, dst) in bpack[..npan * NR * kc].chunks_exact_mut(NR * kc).enumerate() {
                for p in 0..kc {
                    for jj in 0..NR {
                        let j = jc + pn * NR + jj;
                        dst[p * NR + jj] = if j < jc + nc {
                            *b.offset((k0 + p) as isize * rsb + j as isize * csb)
                        } else {
                            0.0
                        };
                    }
                }
            }
            // The first block applies beta; later ones add to C.
            let beta_here = if k0 == 0 { beta } else { 1.0 };
            for i0 in (0..m).step_by(MR) {
                let rows = MR.min(m - i0);
                for p in 0..kc {
                    for r in 0..MR {
                        apack[p * MR + r] = if r < rows {
                            *a.offset((i0 + r) as isize * rsa + (k0 + p) as isize * csa)
                        } else {
                            0.0
                        };
                    }
                }
                for pn in 0..npan {
                    let j0 = jc + pn * NR;
                    let acc = tile(kc, apack.as_ptr(), bpack.as_ptr().add(pn * NR * kc));
                    let cols = NR.min(jc + nc - j0);
                    if rows == MR && cols == NR && csc == 1 {
                        store_tile(&acc, alpha, beta_here, at(i0, j0), rsc);
                    } else {
                        let mut t = [0f32; MR * NR];
                        for (r, row) in acc.iter().enumerate() {
                            for (v, &x) in row.iter().enumerate() {
                                v128_store(t.as_mut_ptr().add(r * NR + 4 * v) as *mut v128, x);
                            }
                        }
                        for r in 0..rows {
                            for jj in 0..cols {
                                let cp = at(i0 + r, j0 + jj);
                                let old = if beta_here == 0.0 { 0.0 } else { beta_here * *cp };
                                *cp = alpha * t[r * NR + jj] + old;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// a * b + c: one `f32x4.relaxed_madd` in the build with relaxed SIMD
/// (fused where the processor has FMA), a multiply and an add elsewhere.
/// The attention kernels' `fma` too.
#[inline(always)]
pub(crate) fn madd(a: v128, b: v128, c: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    return f32x4_relaxed_madd(a, b, c);
    #[cfg(not(target_feature = "relaxed-simd"))]
    f32x4_add(f32x4_mul(a, b), c)
}

/// The MR x NR product of a packed A panel and a packed B panel over kc.
#[inline(always)]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32) -> [[v128; NV]; MR] {
    let mut acc = [[f32x4_splat(0.0); NV]; MR];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        let mut bv = [f32x4_splat(0.0); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = v128_load(bp.add(4 * v) as *const v128);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = v128_load32_splat(ap.add(r) as *const u32);
            for (x, &y) in row.iter_mut().zip(&bv) {
                *x = madd(av, y, *x);
            }
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    acc
}

/// C tile = alpha acc + beta C (C not read when beta = 0), rows at stride rsc.
#[inline(always)]
unsafe fn store_tile(acc: &[[v128; NV]; MR], alpha: f32, beta: f32, c: *mut f32, rsc: isize) {
    let (al, bt) = (f32x4_splat(alpha), f32x4_splat(beta));
    for (r, row) in acc.iter().enumerate() {
        let cp = c.offset(r as isize * rsc);
        for (v, &x) in row.iter().enumerate() {
            let p = cp.add(4 * v) as *mut v128;
            let mut y = f32x4_mul(x, al);
            if beta != 0.0 {
                y = f32x4_add(y, f32x4_mul(bt, v128_load(p)));
            }
            v128_store(p, y);
        }
    }
}
