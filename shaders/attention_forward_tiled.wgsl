// Causal grouped-query attention with per-head scale, forward, tiled: the
// maths of attention_forward.wgsl (see there, with its split of the keys
// into dispatches), with one workgroup per (block of WG query rows, head),
// one invocation per query row. The workgroup loads each tile of
// KEY_BLOCK keys and values into workgroup memory once and every row of
// the block reads it there, instead of each invocation reading every key
// from the buffer. The bound rows may be a chunk of the sequence, as
// there.
// CPU twin: model::cpu::attention::attention_forward.

// The uniform every attention kernel shares, LOWEST, LN2 and
// lse_and_entropy (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

// The bindings and the query blocks
// (shaders/attention_forward_common.wgsl).
{{ATTENTION_FORWARD_COMMON}}

// Query rows per workgroup, one per invocation.
const WG: u32 = {{QUERY_WG}}u;
// Keys per tile, and per step of the online softmax.
const KEY_BLOCK: u32 = {{KEY_BLOCK}}u;
const MAX_HD: u32 = {{MAX_HEAD_DIM}}u;

var<workgroup> k_tile: array<f32, KEY_BLOCK * MAX_HD>; // (KEY_BLOCK, hd)
var<workgroup> v_tile: array<f32, KEY_BLOCK * MAX_HD>; // (KEY_BLOCK, hd)

@compute @workgroup_size(WG)
fn attention_forward_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = query_block(wid.x + wid.y * nwg.x, WG);
    if (!b.valid) {
        return;
    }
    let h = b.h;
    let i0 = b.i0;
    let il = i0 + lid;
    let i = p.q_first + il;
    // Rows outside [lo, rows) still load tiles and meet every barrier.
    let in_range = il < p.rows && il >= b.lo;
    let g = h / p.group;
    let qs = p.heads * p.hd;
    let kvs = p.kv_heads * p.hd;
    let lambda = head_scales[h] * p.inv_sqrt_hd;
    let q0 = min(il, p.rows - 1u) * qs + h * p.hd;
    let r = h * p.rows + il;

    var qv: array<f32, MAX_HD>;
    var acc: array<f32, MAX_HD>;
    var m = LOWEST;
    var z = 0.0;
    var ent = 0.0;
    let first = p.begin == 0u;
    for (var d = 0u; d < p.hd; d++) {
        qv[d] = q[q0 + d] * lambda;
        acc[d] = select(out[q0 + d], 0.0, first);
    }
    if (in_range && !first) {
        m = state[3u * r];
        z = state[3u * r + 1u];
        ent = state[3u * r + 2u];
    }
    var s: array<f32, KEY_BLOCK>;
    // The keys the block's last row sees in this pass: one bound for the
    // whole workgroup, so the barriers stay in uniform control flow.
    let kend = min(p.end, p.q_first + min(p.rows, i0 + WG));
    for (var j0 = p.begin; j0 < kend; j0 += KEY_BLOCK) {
        let nk = min(KEY_BLOCK, kend - j0);
        // pass 1: the workgroup loads the tile
        workgroupBarrier();
        for (var x = lid; x < nk * p.hd; x += WG) {
            let src = (j0 + x / p.hd - p.k_first) * kvs + g * p.hd + x % p.hd;
            k_tile[x] = k[src];
            v_tile[x] = v[src];
        }
        workgroupBarrier();
        if (in_range && j0 <= i) {
            let nv = min(nk, i + 1u - j0);
            // pass 2: scores and their max
            var bmax = LOWEST;
            for (var jj = 0u; jj < nv; jj++) {
                var dot = 0.0;
                for (var d = 0u; d < p.hd; d++) {
                    dot += qv[d] * k_tile[jj * p.hd + d];
                }
                s[jj] = dot;
                bmax = max(bmax, dot);
            }
            // pass 3: rescale to the new max, add the tile's weights
            let m_new = max(m, bmax);
            let c = exp(m - m_new);
            ent = c * (ent + (m - m_new) * z);
            z *= c;
            for (var d = 0u; d < p.hd; d++) {
                acc[d] *= c;
            }
            m = m_new;
            for (var jj = 0u; jj < nv; jj++) {
                let x = s[jj] - m;
                let e = exp(x);
                z += e;
                ent += e * x;
                for (var d = 0u; d < p.hd; d++) {
                    acc[d] += e * v_tile[jj * p.hd + d];
                }
            }
        }
    }
    if (!in_range) {
        return;
    }
    if (i < p.end) {
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
