// RoPE in Hugging Face's rotate-half convention, in place, one invocation
// per (position, head, pair): with the pair (a, b) = x[i], x[i + hd/2] of a
// head's vector at position t and the angle t * theta^(-2i/hd),
//   forward: a' = a cos - b sin,  b' = b cos + a sin
//   inverse: the same with -sin (the backward pass: a rotation's
//            transpose is its inverse).
// cos and sin come from tables the host makes in f64 (src/gpu/rope.rs):
// an f32 angle t * inv_freq loses about t * 6e-8 radians, 1e-3 at t = 16384.
// CPU twin: model::cpu::ops::rope_apply.

struct Params {
    t: u32,
    heads: u32,
    hd: u32,
    // hd / 2: the pairs per head, and the tables' row length.
    half: u32,
    // 1: rotate by -angle.
    inverse: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>; // (T, heads * hd), rotated in place
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;   // (positions >= T, hd / 2)
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;   // (positions >= T, hd / 2)
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn rope_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.t * p.heads * p.half) {
        return;
    }
    let i = e % p.half;
    let row = e / p.half; // position * heads + head
    let pos = row / p.heads;
    let c = cos_t[pos * p.half + i];
    let s = select(sin_t[pos * p.half + i], -sin_t[pos * p.half + i], p.inverse == 1u);
    let base = row * p.hd;
    let a = x[base + i];
    let b = x[base + i + p.half];
    x[base + i] = a * c - b * s;
    x[base + i + p.half] = b * c + a * s;
}
