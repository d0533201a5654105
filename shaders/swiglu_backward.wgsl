// SwiGLU backward, one invocation per element of dh, writing both halves
// of dgu's row:
//   dg = dh * u * silu'(g),  du = dh * silu(g),
//   silu'(g) = sig(g) (1 + g (1 - sig(g)))
// CPU twin: model::cpu::ops::swiglu_backward.

struct Params {
    rows: u32,
    f: u32,
}

@group(0) @binding(0) var<storage, read_write> dgu: array<f32>; // (T, 2F): dg, then du; overwritten
@group(0) @binding(1) var<storage, read> dh: array<f32>;        // (T, F)
@group(0) @binding(2) var<storage, read> gu: array<f32>;        // (T, 2F): gate, then up
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, x >= 0.0);
}

@compute @workgroup_size(WG)
fn swiglu_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.rows * p.f) {
        return;
    }
    let t = e / p.f;
    let j = e % p.f;
    let gi = t * 2u * p.f + j;
    let ui = gi + p.f;
    let g = gu[gi];
    let u = gu[ui];
    let s = sigmoid(g);
    let d = dh[e];
    dgu[ui] = d * g * s;
    dgu[gi] = d * u * s * (1.0 + g * (1.0 - s));
}
