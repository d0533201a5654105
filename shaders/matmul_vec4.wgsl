// The three matrix products of matmul.wgsl, for operands whose contiguous
// dimension is a multiple of 4, read through vec4-typed bindings (one
// 16-byte load instead of four scalar ones: 1.4 to 1.8x faster on lavapipe):
//   matmul_nt_vec4: A (M, K), B (N, K)   needs K % 4 == 0
//   matmul_nn_vec4: A (M, K), B (K, N)   needs K % 4 == 0 and N % 4 == 0
//   matmul_tn_vec4: A (K, M), B (K, N)   needs M % 4 == 0 and N % 4 == 0
//   C (M, N) = alpha * op(A) op(B) + beta * C
// lda and a_off are multiples of 4 too (A is read in vec4s).
// src/gpu/matmul.rs picks this file or matmul.wgsl per call.
// CPU twins: model::real::{matmul_nt, matmul_nn, matmul_tn}.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    alpha: f32,
    beta: f32,
    // Row strides and first elements (in f32s) of A and C inside their
    // buffers: lda = K (nt, nn) or M (tn), ldc = N and 0 for dense ones.
    lda: u32,
    a_off: u32,
    ldc: u32,
    c_off: u32,
}

@group(0) @binding(0) var<storage, read_write> c: array<f32>;  // (M, N)
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;  // nt, nn: (M, K / 4); tn: (K, M / 4)
@group(0) @binding(2) var<storage, read> b: array<vec4<WT>>;  // nt: (N, K / 4); nn, tn: (K, N / 4)
@group(0) @binding(3) var<uniform> p: Params;

// B's element: f32, or f16 for weights held in half precision (the
// variant src/gpu/matmul.rs makes by substitution; sums stay in f32).
alias WT = f32;

fn bv(i: u32) -> vec4<f32> {
    return vec4<f32>(b[i]);
}

// The width of a vec4: one accumulator holds one row of the block.
const BLOCK: u32 = {{BLOCK}}u;

// first, first + 1, .., first + 3, each clamped below count.
fn clamped4(first: u32, count: u32) -> vec4<u32> {
    return min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(count - 1u));
}

// C[i, j0..j0 + 4] = alpha * acc + beta * C, for i < M and columns < N.
fn store_row(i: u32, j0: u32, acc: vec4<f32>) {
    if (i >= p.m) {
        return;
    }
    for (var s = 0u; s < BLOCK; s++) {
        let j = j0 + s;
        if (j >= p.n) {
            return;
        }
        let idx = i * p.ldc + p.c_off + j;
        var v = p.alpha * acc[s];
        // beta = 0 must not read C: it may hold anything, NaN included.
        if (p.beta != 0.0) {
            v += p.beta * c[idx];
        }
        c[idx] = v;
    }
}

@compute @workgroup_size({{WG_SIDE}}, {{WG_SIDE}})
fn matmul_nt_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let ra = (clamped4(i0, p.m) * p.lda + vec4<u32>(p.a_off)) / 4u; // row offsets into A, in vec4s
    let rb = clamped4(j0, p.n) * k4; // row offsets into B, in vec4s
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) {
        let x0 = a[ra.x + q];
        let x1 = a[ra.y + q];
        let x2 = a[ra.z + q];
        let x3 = a[ra.w + q];
        let y0 = bv(rb.x + q);
        let y1 = bv(rb.y + q);
        let y2 = bv(rb.z + q);
        let y3 = bv(rb.w + q);
        acc0 += vec4<f32>(dot(x0, y0), dot(x0, y1), dot(x0, y2), dot(x0, y3));
        acc1 += vec4<f32>(dot(x1, y0), dot(x1, y1), dot(x1, y2), dot(x1, y3));
        acc2 += vec4<f32>(dot(x2, y0), dot(x2, y1), dot(x2, y2), dot(x2, y3));
        acc3 += vec4<f32>(dot(x3, y0), dot(x3, y1), dot(x3, y2), dot(x3, y3));
    }
    store_row(i0, j0, acc0);
    store_row(i0 + 1u, j0, acc1);
    store_row(i0 + 2u, j0, acc2);
    store_row(i0 + 3u, j0, acc3);
}

@compute @workgroup_size({{WG_SIDE}}, {{WG_SIDE}})
fn matmul_nn_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let ra = (clamped4(i0, p.m) * p.lda + vec4<u32>(p.a_off)) / 4u; // row offsets into A, in vec4s
    let cb = j0 / 4u;                // this block's vec4 within a row of B
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // acc_r += sum_t A[i0 + r, 4q + t] B[4q + t, j0..j0 + 4]
    for (var q = 0u; q < k4; q++) {
        let x0 = a[ra.x + q];
        let x1 = a[ra.y + q];
        let x2 = a[ra.z + q];
        let x3 = a[ra.w + q];
        let rb = 4u * q * n4 + cb;
        let y0 = bv(rb);
        let y1 = bv(rb + n4);
        let y2 = bv(rb + 2u * n4);
        let y3 = bv(rb + 3u * n4);
        acc0 += x0.x * y0 + x0.y * y1 + x0.z * y2 + x0.w * y3;
        acc1 += x1.x * y0 + x1.y * y1 + x1.z * y2 + x1.w * y3;
        acc2 += x2.x * y0 + x2.y * y1 + x2.z * y2 + x2.w * y3;
        acc3 += x3.x * y0 + x3.y * y1 + x3.z * y2 + x3.w * y3;
    }
    store_row(i0, j0, acc0);
    store_row(i0 + 1u, j0, acc1);
    store_row(i0 + 2u, j0, acc2);
    store_row(i0 + 3u, j0, acc3);
}

@compute @workgroup_size({{WG_SIDE}}, {{WG_SIDE}})
fn matmul_tn_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let lda4 = p.lda / 4u;
    let a_off4 = p.a_off / 4u;
    let n4 = p.n / 4u;
    let ca = i0 / 4u; // this block's vec4 within a row of A
    let cb = j0 / 4u; // and of B
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // one outer product of A[q, i0..i0 + 4] and B[q, j0..j0 + 4] per row q
    for (var q = 0u; q < p.k; q++) {
        let x = a[q * lda4 + a_off4 + ca];
        let y = bv(q * n4 + cb);
        acc0 += x.x * y;
        acc1 += x.y * y;
        acc2 += x.z * y;
        acc3 += x.w * y;
    }
    store_row(i0, j0, acc0);
    store_row(i0 + 1u, j0, acc1);
    store_row(i0 + 2u, j0, acc2);
    store_row(i0 + 3u, j0, acc3);
}
