// One AdamW step, one invocation per parameter, with the gradient scaled by
// the clipping scale in stats[1] (1 when not clipping), weight decay only
// where the packed flags say so (RMSNorm gains get none), and the bias
// corrections folded into step_size and inv_bc2_sqrt on the host:
//   w *= shrink (where decayed),  m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   w -= step_size * m / (sqrt(v) * inv_bc2_sqrt + eps)
// CPU twin: model::optim::AdamWState::update.

struct Params {
    n: u32,
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    // lr / (1 - beta1^step)
    step_size: f32,
    // 1 / sqrt(1 - beta2^step)
    inv_bc2_sqrt: f32,
    // 1 - lr * weight_decay
    shrink: f32,
}

@group(0) @binding(0) var<storage, read_write> weights: array<f32>; // (n)
@group(0) @binding(1) var<storage, read_write> m: array<f32>;       // (n), first moments
@group(0) @binding(2) var<storage, read_write> v: array<f32>;       // (n), second moments
@group(0) @binding(3) var<storage, read> grads: array<f32>;         // (n)
@group(0) @binding(4) var<storage, read> decay: array<u32>;         // (ceil(n / 32)): bit e % 32 of word e / 32
@group(0) @binding(5) var<storage, read> stats: array<f32>;         // (2): norm, clipping scale
@group(0) @binding(6) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn adamw(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.n) {
        return;
    }
    let decayed = ((decay[e / 32u] >> (e % 32u)) & 1u) == 1u;
    let g = grads[e] * stats[1];
    let w = weights[e] * select(1.0, p.shrink, decayed);
    let m1 = p.beta1 * m[e] + p.one_minus_beta1 * g;
    let v1 = p.beta2 * v[e] + p.one_minus_beta2 * g * g;
    m[e] = m1;
    v[e] = v1;
    weights[e] = w - p.step_size * m1 / (sqrt(v1) * p.inv_bc2_sqrt + p.eps);
}
