// RMSNorm backward for the input, one workgroup per row:
//   g = dout * w,  xhat = x * rstd,
//   dx += rstd * (g - xhat * mean(g * xhat))
// (the weight's gradient is rmsnorm_backward_dw.wgsl).
// CPU twin: model::cpu::ops::rmsnorm_backward.

struct Params {
    rows: u32,
    c: u32,
}

@group(0) @binding(0) var<storage, read_write> dx: array<f32>; // (T, C), accumulated into
@group(0) @binding(1) var<storage, read> dout: array<f32>;     // (T, C)
@group(0) @binding(2) var<storage, read> x: array<f32>;        // (T, C)
@group(0) @binding(3) var<storage, read> rstd: array<f32>;     // (T)
@group(0) @binding(4) var<storage, read> w: array<f32>;        // (C)
@group(0) @binding(5) var<uniform> p: Params;

// Invocations per row (a power of two, for the tree reduction).
const WG: u32 = {{ROW_WG}}u;

// workgroup_sum (shaders/workgroup_reduce.wgsl).
{{WORKGROUP_REDUCE}}

@compute @workgroup_size(WG)
fn rmsnorm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.c;
    let s = rstd[row];
    // pass 1: sum of g * xhat over the row
    var d = 0.0;
    for (var j = lid; j < p.c; j += WG) {
        d += dout[base + j] * w[j] * x[base + j] * s;
    }
    // pass 2: the workgroup's total
    let total = workgroup_sum(lid, d);
    let mean = total / f32(p.c);
    // pass 3: the input gradient
    for (var j = lid; j < p.c; j += WG) {
        let xhat = x[base + j] * s;
        dx[base + j] += s * (dout[base + j] * w[j] - xhat * mean);
    }
}
