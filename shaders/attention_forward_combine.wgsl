// Attention forward with split keys, second step: one invocation per
// (query row i, head h) merges the (m, Z, E, acc) that
// attention_forward_flash.wgsl wrote for each split of keys the row sees
// (the splits s with s * p.split <= i), rescaling each to the common max
// as the online softmax does from tile to tile:
//   m' = max(m, m_s), c = e^(m - m'), c_s = e^(m_s - m'),
//   E' = c (E + (m - m') Z) + c_s (E_s + (m_s - m') Z_s),
//   Z' = c Z + c_s Z_s,  acc' = c acc + c_s acc_s,
// then out = acc / Z, lse = m + ln Z, entropy in bits = (ln Z - E / Z) / ln 2
// (see attention_forward.wgsl). Whole sequences only (p.begin = 0).
// CPU twin: model::cpu::attention::attention_forward.

// The uniform every attention kernel shares, LOWEST, LN2 and
// lse_and_entropy (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;          // (rows, H * hd)
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;          // (H, rows)
@group(0) @binding(2) var<storage, read_write> entropy_bits: array<f32>; // (H, rows)
@group(0) @binding(3) var<storage, read> state: array<f32>;              // (splits, H, rows, hd + 3): m, Z, E, acc
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = {{QUERY_WG}}u;
const MAX_HD: u32 = {{MAX_HEAD_DIM}}u;

@compute @workgroup_size(WG)
fn attention_forward_combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.heads * p.rows) {
        return;
    }
    let h = e / p.rows;
    let il = e % p.rows;
    let i = p.q_first + il;
    let stride = p.hd + 3u;

    var acc: array<f32, MAX_HD>;
    var m = LOWEST;
    var z = 0.0;
    var ent = 0.0;
    let splits = (i - p.begin) / p.split + 1u;
    for (var s = 0u; s < splits; s++) {
        let base = ((s * p.heads + h) * p.rows + il) * stride;
        let m_s = state[base];
        let m_new = max(m, m_s);
        let c = exp(m - m_new);
        let c_s = exp(m_s - m_new);
        let z_s = state[base + 1u];
        ent = c * (ent + (m - m_new) * z) + c_s * (state[base + 2u] + (m_s - m_new) * z_s);
        z = c * z + c_s * z_s;
        for (var d = 0u; d < p.hd; d++) {
            acc[d] = c * acc[d] + c_s * state[base + 3u + d];
        }
        m = m_new;
    }
    let inv_z = 1.0 / z;
    let q0 = il * p.heads * p.hd + h * p.hd;
    for (var d = 0u; d < p.hd; d++) {
        out[q0 + d] = acc[d] * inv_z;
    }
    let r = h * p.rows + il;
    let stats = lse_and_entropy(m, z, ent);
    lse[r] = stats.x;
    entropy_bits[r] = stats.y;
}
