// Matrix products in the three forms a Linear layer needs:
//   C (M, N) = alpha * op(A) op(B) + beta * C
//   matmul_nt: A (M, K), B (N, K)   forward, y = x W^T (W stored (out, in))
//   matmul_nn: A (M, K), B (K, N)   input gradient, dx = dy W
//   matmul_tn: A (K, M), B (K, N)   weight gradient, dW = dy^T x
// CPU twins: model::real::{matmul_nt, matmul_nn, matmul_tn}.
//
// Each invocation owns a BLOCK x BLOCK block of C held in four vec4
// accumulators: no workgroup memory and no barriers (the fastest form on
// lavapipe; the choice and the sizes live in src/gpu/matmul.rs). Rows and
// columns past the edge read the last valid row or column (clamped) and are
// never stored, so any M, N, K work without padding.

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

@group(0) @binding(0) var<storage, read_write> c: array<f32>; // (M, N)
@group(0) @binding(1) var<storage, read> a: array<f32>;       // nt, nn: (M, K); tn: (K, M)
@group(0) @binding(2) var<storage, read> b: array<WT>;        // nt: (N, K); nn, tn: (K, N)
@group(0) @binding(3) var<uniform> p: Params;

// B's element: f32, or f16 for weights held in half precision (the
// variant src/gpu/matmul.rs makes by substitution; sums stay in f32).
alias WT = f32;

// The width of a vec4: one accumulator holds one row of the block.
const BLOCK: u32 = {{BLOCK}}u;

// first, first + 1, .., first + 3, each clamped below count.
fn clamped4(first: u32, count: u32) -> vec4<u32> {
    return min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(count - 1u));
}

// Four consecutive elements from offset o.
fn a4(o: u32) -> vec4<f32> {
    return vec4<f32>(a[o], a[o + 1u], a[o + 2u], a[o + 3u]);
}

fn bv(i: u32) -> f32 {
    return f32(b[i]);
}

fn b4(o: u32) -> vec4<f32> {
    return vec4<f32>(bv(o), bv(o + 1u), bv(o + 2u), bv(o + 3u));
}

// The elements at o + each of four offsets.
fn a_at(o: u32, offsets: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(a[o + offsets.x], a[o + offsets.y], a[o + offsets.z], a[o + offsets.w]);
}

fn b_at(o: u32, offsets: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(bv(o + offsets.x), bv(o + offsets.y), bv(o + offsets.z), bv(o + offsets.w));
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
fn matmul_nt(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let k = p.k;
    let ra = clamped4(i0, p.m) * p.lda + vec4<u32>(p.a_off); // row offsets into A
    let rb = clamped4(j0, p.n) * k; // row offsets into B
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var q = 0u;
    // pass 1: four steps of k at a time, as 16 vec4 dot products
    for (; q + 4u <= k; q += 4u) {
        let x0 = a4(ra.x + q);
        let x1 = a4(ra.y + q);
        let x2 = a4(ra.z + q);
        let x3 = a4(ra.w + q);
        let y0 = b4(rb.x + q);
        let y1 = b4(rb.y + q);
        let y2 = b4(rb.z + q);
        let y3 = b4(rb.w + q);
        acc0 += vec4<f32>(dot(x0, y0), dot(x0, y1), dot(x0, y2), dot(x0, y3));
        acc1 += vec4<f32>(dot(x1, y0), dot(x1, y1), dot(x1, y2), dot(x1, y3));
        acc2 += vec4<f32>(dot(x2, y0), dot(x2, y1), dot(x2, y2), dot(x2, y3));
        acc3 += vec4<f32>(dot(x3, y0), dot(x3, y1), dot(x3, y2), dot(x3, y3));
    }
    // pass 2: the K % 4 steps left
    for (; q < k; q++) {
        let y = b_at(q, rb);
        acc0 += a[ra.x + q] * y;
        acc1 += a[ra.y + q] * y;
        acc2 += a[ra.z + q] * y;
        acc3 += a[ra.w + q] * y;
    }
    store_row(i0, j0, acc0);
    store_row(i0 + 1u, j0, acc1);
    store_row(i0 + 2u, j0, acc2);
    store_row(i0 + 3u, j0, acc3);
}

@compute @workgroup_size({{WG_SIDE}}, {{WG_SIDE}})
fn matmul_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let k = p.k;
    let n = p.n;
    let ra = clamped4(i0, p.m) * p.lda + vec4<u32>(p.a_off); // row offsets into A
    let cb = clamped4(j0, n);       // column indices into B
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var q = 0u;
    // pass 1: four rows of B at a time; acc_r += sum_t A[i0 + r, q + t] B[q + t, j0..j0 + 4]
    for (; q + 4u <= k; q += 4u) {
        let x0 = a4(ra.x + q);
        let x1 = a4(ra.y + q);
        let x2 = a4(ra.z + q);
        let x3 = a4(ra.w + q);
        let y0 = b_at(q * n, cb);
        let y1 = b_at((q + 1u) * n, cb);
        let y2 = b_at((q + 2u) * n, cb);
        let y3 = b_at((q + 3u) * n, cb);
        acc0 += x0.x * y0 + x0.y * y1 + x0.z * y2 + x0.w * y3;
        acc1 += x1.x * y0 + x1.y * y1 + x1.z * y2 + x1.w * y3;
        acc2 += x2.x * y0 + x2.y * y1 + x2.z * y2 + x2.w * y3;
        acc3 += x3.x * y0 + x3.y * y1 + x3.z * y2 + x3.w * y3;
    }
    // pass 2: the K % 4 rows left
    for (; q < k; q++) {
        let y = b_at(q * n, cb);
        acc0 += a[ra.x + q] * y;
        acc1 += a[ra.y + q] * y;
        acc2 += a[ra.z + q] * y;
        acc3 += a[ra.w + q] * y;
    }
    store_row(i0, j0, acc0);
    store_row(i0 + 1u, j0, acc1);
    store_row(i0 + 2u, j0, acc2);
    store_row(i0 + 3u, j0, acc3);
}

@compute @workgroup_size({{WG_SIDE}}, {{WG_SIDE}})
fn matmul_tn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * BLOCK;
    let j0 = gid.x * BLOCK;
    if (i0 >= p.m || j0 >= p.n) {
        return;
    }
    let ca = clamped4(i0, p.m); // column indices into A
    let cb = clamped4(j0, p.n); // column indices into B
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // one outer product of A[q, i0..i0 + 4] and B[q, j0..j0 + 4] per row q
    for (var q = 0u; q < p.k; q++) {
        let x = a_at(q * p.lda + p.a_off, ca);
        let y = b_at(q * p.n, cb);
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
