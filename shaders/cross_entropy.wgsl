// Cross-entropy of rows of logits, forward and backward, one workgroup per
// row, reducing in workgroup memory:
//   loss[r] = lse - z[target]  with  lse = m + ln sum_j e^(z_j - m),  m = max_j z_j
// and, when p.write_grad is 1, the row is overwritten by its gradient
//   dz = (softmax(z) - onehot(target)) * p.grad_weight * row_weights[r]
// (the loss weight of that prediction; the loss itself stays unweighted:
// the host weighs the sum).
// A row whose target is NO_TARGET (the last position predicts nothing) has
// loss 0 and, when writing gradients, a zero gradient.
// CPU twin: model::cpu::ops::cross_entropy_row.

struct Params {
    rows: u32,
    vocab: u32,
    grad_weight: f32,
    // 1: overwrite z with the gradient.
    write_grad: u32,
}

@group(0) @binding(0) var<storage, read_write> losses: array<f32>; // (rows)
@group(0) @binding(1) var<storage, read_write> z: array<f32>;      // (rows, V): logits in, gradient out
@group(0) @binding(2) var<storage, read> targets: array<u32>;      // (rows), NO_TARGET for none
@group(0) @binding(3) var<storage, read> row_weights: array<f32>;  // (rows)
@group(0) @binding(4) var<uniform> p: Params;

// Invocations per row (a power of two, for the tree reductions).
const WG: u32 = {{ROW_WG}}u;
const NO_TARGET: u32 = {{NO_TARGET}}u;
// The lowest finite f32, the max of an empty part of a row (WGSL has no
// infinity literal).
// In hex, exactly -f32::MAX: Tint (Chromium) rejects the decimal
// -3.40282347e38 as not representable in f32.
const LOWEST: f32 = -0x1.fffffep+127f;

// workgroup_sum, workgroup_max (shaders/workgroup_reduce.wgsl).
{{WORKGROUP_REDUCE}}

@compute @workgroup_size(WG)
fn cross_entropy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The grid may be 2-D when rows exceed one dimension's limit.
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.vocab;
    let tgt = targets[row]; // (`target` is reserved in WGSL)
    if (tgt == NO_TARGET) {
        if (lid == 0u) {
            losses[row] = 0.0;
        }
        if (p.write_grad == 1u) {
            for (var j = lid; j < p.vocab; j += WG) {
                z[base + j] = 0.0;
            }
        }
        return;
    }
    // pass 1: the row's max
    var m = LOWEST;
    for (var j = lid; j < p.vocab; j += WG) {
        m = max(m, z[base + j]);
    }
    m = workgroup_max(lid, m);
    // pass 2: sum of e^(z - m)
    var s = 0.0;
    for (var j = lid; j < p.vocab; j += WG) {
        s += exp(z[base + j] - m);
    }
    s = workgroup_sum(lid, s);
    if (lid == 0u) {
        // m - z[target] first: exact, so a row of logits near 1234 loses
        // nothing to the rounding of m + ln s.
        losses[row] = (m - z[base + tgt]) + log(s);
    }
    // pass 3: the gradient, in place
    if (p.write_grad == 1u) {
        // Invocation 0 has read z[tgt] before its owner overwrites it.
        workgroupBarrier();
        let gw = p.grad_weight * row_weights[row];
        let k = gw / s;
        for (var j = lid; j < p.vocab; j += WG) {
            let g = exp(z[base + j] - m) * k;
            z[base + j] = select(g, g - gw, j == tgt);
        }
    }
}
