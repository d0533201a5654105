// Attention backward, step 3 of 4: dk and dv, one invocation per (key row
// j, KV head g), looping over the heads of its group and the query rows
// i >= j that see key j, so each output has one writer and no atomics:
//   dk_j = sum_h lambda_h sum_i dS_ij q_i,  dv_j = sum_h sum_i P_ij dO_i
// with P and dS recomputed as in step 2. One dispatch covers the query
// rows [p.begin, p.end): keys from p.end on see none of them and are not
// dispatched; a key's sums start in the pass holding row j and are added
// to in the later ones. The bound rows may be a chunk of the sequence,
// positions as in attention_forward.wgsl: the host runs a key chunk's
// query chunks in order, from its own on.
// CPU twin: model::cpu::attention::attention_backward.

// The uniform every attention kernel shares (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

@group(0) @binding(0) var<storage, read_write> dk: array<f32>;    // (keys, KV * hd)
@group(0) @binding(1) var<storage, read_write> dv: array<f32>;    // (keys, KV * hd)
@group(0) @binding(2) var<storage, read> dout: array<f32>;        // (rows, H * hd)
@group(0) @binding(3) var<storage, read> q: array<f32>;           // (rows, H * hd)
@group(0) @binding(4) var<storage, read> k: array<f32>;           // (keys, KV * hd)
@group(0) @binding(5) var<storage, read> v: array<f32>;           // (keys, KV * hd)
@group(0) @binding(6) var<storage, read> rowstats: array<f32>;    // (H, rows, 2): lse, D
@group(0) @binding(7) var<storage, read> head_scales: array<f32>; // (H)
@group(0) @binding(8) var<uniform> p: Params;

const WG: u32 = {{QUERY_WG}}u;
const MAX_HD: u32 = {{MAX_HEAD_DIM}}u;

@compute @workgroup_size(WG)
fn attention_backward_dkdv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // bound keys 0..n (those before position `end`) of every KV head,
    // head after head: key j sees the rows max(j, begin)..end of this pass
    let n = min(p.end - p.k_first, p.keys);
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.kv_heads * n) {
        return;
    }
    let g = e / n;
    let jl = e % n;
    let j = p.k_first + jl;
    let qs = p.heads * p.hd;
    let k0 = jl * p.kv_heads * p.hd + g * p.hd;

    var kv: array<f32, MAX_HD>;
    var vv: array<f32, MAX_HD>;
    var dka: array<f32, MAX_HD>;
    var dva: array<f32, MAX_HD>;
    let first = j >= p.begin;
    for (var d = 0u; d < p.hd; d++) {
        kv[d] = k[k0 + d];
        vv[d] = v[k0 + d];
        dka[d] = select(dk[k0 + d], 0.0, first);
        dva[d] = select(dv[k0 + d], 0.0, first);
    }
    for (var i = max(j, p.begin); i < p.end; i++) {
        for (var h = g * p.group; h < (g + 1u) * p.group; h++) {
            let lambda = head_scales[h] * p.inv_sqrt_hd;
            let il = i - p.q_first;
            let q0 = il * qs + h * p.hd;
            let r = 2u * (h * p.rows + il);
            var raw = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < p.hd; d++) {
                raw += q[q0 + d] * kv[d];
                dp += dout[q0 + d] * vv[d];
            }
            let pij = exp(min(lambda * raw - rowstats[r], 0.0));
            let a = pij * (dp - rowstats[r + 1u]) * lambda;
            for (var d = 0u; d < p.hd; d++) {
                dka[d] += a * q[q0 + d];
                dva[d] += pij * dout[q0 + d];
            }
        }
    }
    for (var d = 0u; d < p.hd; d++) {
        dk[k0 + d] = dka[d];
        dv[k0 + d] = dva[d];
    }
}
