// Causal grouped-query attention with per-head scale, forward, streaming:
// one invocation per (query row i, head h), looping over key blocks of
// KEY_BLOCK with the online softmax, so the T x T matrix never exists.
//   lambda = head_scales[h] / sqrt(hd), applied to the query;
//   s_j = (lambda q_i) . k_j for j <= i, with k, v from KV head h / group.
// Per row it keeps the running max m, Z = sum_j e^(s_j - m),
// E = sum_j e^(s_j - m) (s_j - m) and acc = sum_j e^(s_j - m) v_j. When a
// block moves the max from m to m', each is rescaled by c = e^(m - m'):
// Z' = c Z, E' = c (E + (m - m') Z), acc' = c acc. At the end
//   out = acc / Z,  lse = m + ln Z,  entropy in bits = (ln Z - E / Z) / ln 2
// (since -sum p ln p = ln Z - E / Z).
//
// One dispatch covers the keys [p.begin, p.end) (src/gpu/attention.rs
// splits T so that no invocation loops too long): rows below p.begin are
// done and not dispatched; (m, Z, E) wait in `state` and acc in `out`
// between dispatches; a row's state starts in the pass with key 0 and is
// finished in the pass holding its last key, i.
//
// The bound rows may be a chunk of the sequence (the engine pages buffers
// that would pass the max storage binding): q, out and the (H, rows)
// stats hold `rows` query rows from position p.q_first, k and v `keys` key
// rows from p.k_first; begin, end, i and j are positions in the sequence.
// CPU twin: model::cpu::attention::attention_forward.

// The uniform every attention kernel shares, LOWEST, LN2 and
// lse_and_entropy (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

// The bindings and the query blocks
// (shaders/attention_forward_common.wgsl).
{{ATTENTION_FORWARD_COMMON}}

// Invocations per workgroup: consecutive query rows of one head, which
// read the same keys.
const WG: u32 = {{QUERY_WG}}u;
// Keys scored per step of the online softmax.
const KEY_BLOCK: u32 = {{KEY_BLOCK}}u;
// The private arrays' length: hd <= MAX_HD (checked on the host).
const MAX_HD: u32 = {{MAX_HEAD_DIM}}u;

@compute @workgroup_size(WG)
fn attention_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // bound rows lo..rows of every head, head after head: the rows at or
    // past key `begin` (the host binds no row chunk ending before it)
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
    let q0 = il * qs + h * p.hd;
    let r = h * p.rows + il;

    var qv: array<f32, MAX_HD>;  // lambda q_i
    var acc: array<f32, MAX_HD>; // sum_j e^(s_j - m) v_j
    var m = LOWEST;
    var z = 0.0;
    var ent = 0.0;
    let first = p.begin == 0u;
    for (var d = 0u; d < p.hd; d++) {
        qv[d] = q[q0 + d] * lambda;
        acc[d] = select(out[q0 + d], 0.0, first);
    }
    if (!first) {
        m = state[3u * r];
        z = state[3u * r + 1u];
        ent = state[3u * r + 2u];
    }
    var s: array<f32, KEY_BLOCK>;
    // this pass's keys for row i: [begin, min(end, i + 1))
    let kend = min(p.end, i + 1u);
    for (var j0 = p.begin; j0 < kend; j0 += KEY_BLOCK) {
        let nk = min(KEY_BLOCK, kend - j0);
        // pass 1: this block's scores and their max
        var bmax = LOWEST;
        for (var jj = 0u; jj < nk; jj++) {
            let k0 = (j0 + jj - p.k_first) * kvs + g * p.hd;
            var dot = 0.0;
            for (var d = 0u; d < p.hd; d++) {
                dot += qv[d] * k[k0 + d];
            }
            s[jj] = dot;
            bmax = max(bmax, dot);
        }
        // pass 2: rescale the running sums to the new max
        let m_new = max(m, bmax);
        let c = exp(m - m_new);
        ent = c * (ent + (m - m_new) * z);
        z *= c;
        for (var d = 0u; d < p.hd; d++) {
            acc[d] *= c;
        }
        m = m_new;
        // pass 3: add the block's weights
        for (var jj = 0u; jj < nk; jj++) {
            let x = s[jj] - m;
            let w = exp(x);
            z += w;
            ent += w * x;
            let v0 = (j0 + jj - p.k_first) * kvs + g * p.hd;
            for (var d = 0u; d < p.hd; d++) {
                acc[d] += w * v[v0 + d];
            }
        }
    }
    if (i < p.end) {
        // key i was in this pass: the row is done
        let inv_z = 1.0 / z;
        for (var d = 0u; d < p.hd; d++) {
            out[q0 + d] = acc[d] * inv_z;
        }
        let stats = lse_and_entropy(m, z, ent);
        lse[r] = stats.x;
        entropy_bits[r] = stats.y;
    } else {
        for (var d = 0u; d < p.hd; d++) {
            out[q0 + d] = acc[d];
        }
        state[3u * r] = m;
        state[3u * r + 1u] = z;
        state[3u * r + 2u] = ent;
    }
}
