// Attention backward, step 2 of 4: dq, and each row's share of its head's
// scale gradient, one invocation per (query row i, head h), looping over
// the keys j <= i and recomputing the probabilities from the saved lse:
//   raw_ij = q_i . k_j,  P_ij = e^(lambda raw_ij - lse_i),  dP_ij = dO_i . v_j,
//   dS_ij = P_ij (dP_ij - D_i),
//   dq_i = lambda sum_j dS_ij k_j,
//   dscale_partials[h, i] = sum_j dS_ij raw_ij
// (step 4 sums the partials over i and divides by sqrt(hd)). One dispatch
// covers the keys [p.begin, p.end), adding into dq and the partials after
// the first (as the forward splits its keys). The bound rows may be a
// chunk of the sequence, positions as in attention_forward.wgsl.
// CPU twin: model::cpu::attention::attention_backward.

// The uniform every attention kernel shares (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

@group(0) @binding(0) var<storage, read_write> dq: array<f32>;              // (rows, H * hd)
@group(0) @binding(1) var<storage, read_write> dscale_partials: array<f32>; // (H, rows)
@group(0) @binding(2) var<storage, read> dout: array<f32>;                  // (rows, H * hd)
@group(0) @binding(3) var<storage, read> q: array<f32>;                     // (rows, H * hd)
@group(0) @binding(4) var<storage, read> k: array<f32>;                     // (keys, KV * hd)
@group(0) @binding(5) var<storage, read> v: array<f32>;                     // (keys, KV * hd)
@group(0) @binding(6) var<storage, read> rowstats: array<f32>;              // (H, rows, 2): lse, D
@group(0) @binding(7) var<storage, read> head_scales: array<f32>;           // (H)
@group(0) @binding(8) var<uniform> p: Params;

const WG: u32 = {{QUERY_WG}}u;
const MAX_HD: u32 = {{MAX_HEAD_DIM}}u;

@compute @workgroup_size(WG)
fn attention_backward_dq(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // bound rows lo..rows of every head, head after head: the rows at or
    // past key `begin`
    let lo = max(p.begin, p.q_first) - p.q_first;
    let n = p.rows - lo;
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.heads * n) {
        return;
    }
    let h = e / n;
    let il = lo + e % n;
    let i = p.q_first + il;
    let g = h / p.group;
    let qs = p.heads * p.hd;
    let kvs = p.kv_heads * p.hd;
    let lambda = head_scales[h] * p.inv_sqrt_hd;
    let r = h * p.rows + il;
    let row_lse = rowstats[2u * r];
    let row_d = rowstats[2u * r + 1u];
    let q0 = il * qs + h * p.hd;

    var qv: array<f32, MAX_HD>;
    var dov: array<f32, MAX_HD>;
    var dqa: array<f32, MAX_HD>;
    let first = p.begin == 0u;
    for (var d = 0u; d < p.hd; d++) {
        qv[d] = q[q0 + d];
        dov[d] = dout[q0 + d];
        dqa[d] = select(dq[q0 + d], 0.0, first);
    }
    var dscale = select(dscale_partials[r], 0.0, first);
    for (var j = p.begin; j < min(p.end, i + 1u); j++) {
        let k0 = (j - p.k_first) * kvs + g * p.hd;
        var raw = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.hd; d++) {
            raw += qv[d] * k[k0 + d];
            dp += dov[d] * v[k0 + d];
        }
        // min: rounding can put a score a hair above the lse
        let pij = exp(min(lambda * raw - row_lse, 0.0));
        let ds = pij * (dp - row_d);
        dscale += ds * raw;
        let a = ds * lambda;
        for (var d = 0u; d < p.hd; d++) {
            dqa[d] += a * k[k0 + d];
        }
    }
    for (var d = 0u; d < p.hd; d++) {
        dq[q0 + d] = dqa[d];
    }
    dscale_partials[r] = dscale;
}
