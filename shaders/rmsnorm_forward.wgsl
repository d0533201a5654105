// RMSNorm forward, one workgroup per row:
//   rstd = 1 / sqrt(mean(x^2) + eps),  out = x * rstd * w
// keeping rstd per row for the backward pass.
// CPU twin: model::cpu::ops::rmsnorm_forward.

struct Params {
    rows: u32,
    c: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (T, C)
@group(0) @binding(1) var<storage, read_write> rstd: array<f32>; // (T)
@group(0) @binding(2) var<storage, read> x: array<f32>;          // (T, C)
@group(0) @binding(3) var<storage, read> w: array<f32>;          // (C)
@group(0) @binding(4) var<uniform> p: Params;

// Invocations per row (a power of two, for the tree reduction).
const WG: u32 = {{ROW_WG}}u;

// workgroup_sum (shaders/workgroup_reduce.wgsl).
{{WORKGROUP_REDUCE}}

@compute @workgroup_size(WG)
fn rmsnorm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The grid may be 2-D when rows exceed one dimension's limit.
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.c;
    // pass 1: each invocation sums the squares of a strided part of the row
    var s = 0.0;
    for (var j = lid; j < p.c; j += WG) {
        let v = x[base + j];
        s += v * v;
    }
    // pass 2: the workgroup's total
    let total = workgroup_sum(lid, s);
    let r = 1.0 / sqrt(total / f32(p.c) + p.eps);
    // pass 3: normalize and scale
    if (lid == 0u) {
        rstd[row] = r;
    }
    for (var j = lid; j < p.c; j += WG) {
        out[base + j] = x[base + j] * r * w[j];
    }
}
