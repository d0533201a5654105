// RMSNorm backward for the weight, summed over rows without float atomics,
// in a fixed order (so the result does not vary run to run):
//   rmsnorm_dw_partial: partials[r, j] = sum over the rows of chunk r of
//                       dout[t, j] * x[t, j] * rstd[t]
//   rmsnorm_dw_reduce:  dw[j] += sum_r partials[r, j]
// CPU twin: the `dw` part of model::cpu::ops::rmsnorm_backward.

struct Params {
    rows: u32,
    c: u32,
    chunks: u32,
}

@group(0) @binding(0) var<storage, read_write> dw: array<f32>;       // (C), accumulated into
@group(0) @binding(1) var<storage, read_write> partials: array<f32>; // (chunks, C), scratch
@group(0) @binding(2) var<storage, read> dout: array<f32>;           // (T, C)
@group(0) @binding(3) var<storage, read> x: array<f32>;              // (T, C)
@group(0) @binding(4) var<storage, read> rstd: array<f32>;           // (T)
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = {{WG}}u;
// Rows summed by one invocation of the first pass.
const CHUNK_ROWS: u32 = {{CHUNK_ROWS}}u;

@compute @workgroup_size(WG)
fn rmsnorm_dw_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // one invocation per (chunk, column); adjacent invocations read adjacent columns
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.chunks * p.c) {
        return;
    }
    let chunk = e / p.c;
    let j = e % p.c;
    let first = chunk * CHUNK_ROWS;
    let last = min(first + CHUNK_ROWS, p.rows);
    var s = 0.0;
    for (var t = first; t < last; t++) {
        s += dout[t * p.c + j] * x[t * p.c + j] * rstd[t];
    }
    partials[e] = s;
}

@compute @workgroup_size(WG)
fn rmsnorm_dw_reduce(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = (wid.x + wid.y * nwg.x) * WG + lid;
    if (j >= p.c) {
        return;
    }
    var s = dw[j];
    for (var r = 0u; r < p.chunks; r++) {
        s += partials[r * p.c + j];
    }
    dw[j] = s;
}
