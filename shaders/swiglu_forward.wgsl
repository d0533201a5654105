// SwiGLU forward, one invocation per output element:
//   h[t, j] = silu(g) * u,  g = gu[t, j], u = gu[t, F + j]
// with the logistic function built from e^(-|g|) only, so it never
// overflows (as the CPU twin does).
// CPU twin: model::cpu::ops::swiglu_forward.

struct Params {
    rows: u32,
    f: u32,
}

@group(0) @binding(0) var<storage, read_write> h: array<f32>; // (T, F)
@group(0) @binding(1) var<storage, read> gu: array<f32>;      // (T, 2F): each row's gate, then up
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, x >= 0.0);
}

@compute @workgroup_size(WG)
fn swiglu_forward(
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
    let g = gu[t * 2u * p.f + j];
    let u = gu[t * 2u * p.f + p.f + j];
    h[e] = g * sigmoid(g) * u;
}
