// Scales a gradient by the clipping scale grad_norm.wgsl left in stats[1]
// (1 when the norm is within bounds), one invocation per element.
// CPU twin: the scaling in model::optim::clip_grad_norm.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read_write> grads: array<f32>; // (n), scaled in place
@group(0) @binding(1) var<storage, read> stats: array<f32>;       // (2): norm, scale
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn grad_clip(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.n) {
        return;
    }
    grads[e] *= stats[1];
}
