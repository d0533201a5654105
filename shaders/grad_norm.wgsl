// The global L2 norm of a gradient and the clipping scale it implies, in
// two passes and a fixed order, without float atomics (so the result does
// not vary run to run):
//   grad_norm_partial: partials[first + c] = sum of g^2 over chunk c of
//                      CHUNK elements, one workgroup per chunk, a tree
//                      reduction; a gradient held in several buffers (one
//                      per weight slot) is one dispatch per buffer, each
//                      writing its chunks after the previous one's
//   grad_norm_final:   one workgroup sums the partials in order;
//                      stats = (norm, scale) with scale = max_norm / (norm + guard)
//                      where clipping is on and that is below 1, else 1
// CPU twins: model::optim::{grad_norm, clip_grad_norm}.

struct Params {
    // Elements of this dispatch's grads.
    n: u32,
    // Its chunks (partial pass), or all the partials (final pass).
    chunks: u32,
    max_norm: f32,
    // PyTorch's clip_grad_norm_ guard against a zero norm.
    guard: f32,
    // 1: clip to max_norm.
    clip: u32,
    // Where this dispatch's partials start.
    first: u32,
}

@group(0) @binding(0) var<storage, read_write> stats: array<f32>;    // (2): norm, scale
@group(0) @binding(1) var<storage, read_write> partials: array<f32>; // (all chunks), scratch
@group(0) @binding(2) var<storage, read> grads: array<f32>;          // (n)
@group(0) @binding(3) var<uniform> p: Params;

// Invocations per workgroup (a power of two, for the tree reduction).
const WG: u32 = {{ROW_WG}}u;
// Elements each invocation of the first pass adds.
const PER_INVOCATION: u32 = {{PER_INVOCATION}}u;
const CHUNK: u32 = WG * PER_INVOCATION;

// workgroup_sum (shaders/workgroup_reduce.wgsl).
{{WORKGROUP_REDUCE}}

@compute @workgroup_size(WG)
fn grad_norm_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let chunk = wid.x + wid.y * nwg.x;
    if (chunk >= p.chunks) {
        return;
    }
    // adjacent invocations read adjacent elements
    var s = 0.0;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let e = chunk * CHUNK + k * WG + lid;
        if (e < p.n) {
            let g = grads[e];
            s += g * g;
        }
    }
    let total = workgroup_sum(lid, s);
    if (lid == 0u) {
        partials[p.first + chunk] = total;
    }
}

@compute @workgroup_size(WG)
fn grad_norm_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var c = lid; c < p.chunks; c += WG) {
        s += partials[c];
    }
    let norm = sqrt(workgroup_sum(lid, s));
    if (lid == 0u) {
        let coef = p.max_norm / (norm + p.guard);
        stats[0] = norm;
        // A NaN norm compares false: scale 1, as the twin leaves the gradient.
        stats[1] = select(1.0, coef, p.clip == 1u && coef < 1.0);
    }
}
