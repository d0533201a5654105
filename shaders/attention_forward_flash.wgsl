// Causal grouped-query attention with per-head scale, forward, flash
// form: the maths of attention_forward.wgsl (see there, with its split of
// the keys into dispatches and the online softmax with entropy), built for
// one head dim (HEAD_DIM, so every loop over the head dim has a constant
// length and the query, the accumulator and a tile's scores stay in
// registers), one workgroup per (block of WG query rows, head), one
// invocation per query row. Each tile of KEY_BLOCK keys and values is
// loaded once into workgroup memory as vec4s (zero past the head dim) and
// every row of the block reads it there. A tile's scores are all computed
// (those past the row's own position masked), so the loops over a tile
// have constant length too; the softmax moves its max once per tile.
//
// Split keys (p.split > 0, a multiple of KEY_BLOCK; whole sequences in
// one pass only, so p.begin = 0): workgroup w takes split w % splits of
// block w / splits, the keys [s split, (s + 1) split) its rows see, and
// writes each row's (m, Z, E, acc) for that split into `state`, laid out
// (splits, H, rows, hd + 3); attention_forward_combine.wgsl then merges a
// row's splits as the online softmax merges tiles. On a large GPU this
// lets a short sequence fill it: without, the block of the last rows walks
// all T keys alone while most of the device idles.
// CPU twin: model::cpu::attention::attention_forward.

// The uniform every attention kernel shares, LOWEST, LN2 and
// lse_and_entropy (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

// The bindings and the query blocks
// (shaders/attention_forward_common.wgsl).
{{ATTENTION_FORWARD_COMMON}}

// Query rows per workgroup, one per invocation.
const WG: u32 = {{QUERY_WG}}u;
// HD, HD4, q4, out4, k4, v4 (a head row's elements 4 d4 .. 4 d4 + 3 at `base`,
// zero past the head dim), write_out and write_state (src/gpu/attention.rs,
// `head_rows4`).
{{HEAD_ROWS4}}

// KEY_BLOCK, the key and value tiles and load_key_tile
// (shaders/attention_key_tiles.wgsl).
{{ATTENTION_KEY_TILES}}

@compute @workgroup_size(WG)
fn attention_forward_flash(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    var splits = 1u;
    if (p.split > 0u) {
        splits = (p.rows + p.split - 1u) / p.split;
    }
    let w = wid.x + wid.y * nwg.x;
    let b = query_block(w / splits, WG);
    if (!b.valid) {
        return;
    }
    let split = w % splits;
    let h = b.h;
    let i0 = b.i0;
    let il = i0 + lid;
    let i = p.q_first + il;
    // Rows outside [lo, rows) still load tiles and meet every barrier.
    let in_range = il < p.rows && il >= b.lo;
    let g = h / p.group;
    let qs = p.heads * HD;
    let lambda = head_scales[h] * p.inv_sqrt_hd;
    let q0 = min(il, p.rows - 1u) * qs + h * HD;
    let r = h * p.rows + il;

    var qv: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    var m = LOWEST;
    var z = 0.0;
    var ent = 0.0;
    let first = p.begin == 0u;
    for (var d4 = 0u; d4 < HD4; d4++) {
        qv[d4] = q4(q0, d4) * lambda;
        // (not for a row past the last: its clamped index is another's,
        // which that one writes in this dispatch)
        if (in_range && !first) {
            acc[d4] = out4(q0, d4);
        }
    }
    if (in_range && !first) {
        m = state[3u * r];
        z = state[3u * r + 1u];
        ent = state[3u * r + 2u];
    }
    var s: array<f32, KEY_BLOCK>;
    // The keys the block's last row sees in this pass: one bound for the
    // whole workgroup, so the barriers stay in uniform control flow.
    var kbegin = p.begin;
    var kend = min(p.end, p.q_first + min(p.rows, i0 + WG));
    if (p.split > 0u) {
        kbegin = p.begin + split * p.split;
        kend = min(kend, kbegin + p.split);
    }
    for (var j0 = kbegin; j0 < kend; j0 += KEY_BLOCK) {
        let nk = min(KEY_BLOCK, kend - j0);
        // the workgroup loads the tile, zeros past its last key
        workgroupBarrier();
        load_key_tile(lid, j0, nk, g);
        workgroupBarrier();
        if (in_range && j0 <= i) {
            // the tile's keys this row sees: 0 .. nv
            let nv = min(nk, i + 1u - j0);
            var bmax = LOWEST;
            for (var jj = 0u; jj < KEY_BLOCK; jj++) {
                var d = vec4<f32>(0.0);
                for (var d4 = 0u; d4 < HD4; d4++) {
                    d = fma(qv[d4], k_tile[jj * HD4 + d4], d);
                }
                let score = select(LOWEST, (d.x + d.y) + (d.z + d.w), jj < nv);
                s[jj] = score;
                bmax = max(bmax, score);
            }
            // rescale to the new max, add the tile's weights
            let m_new = max(m, bmax);
            let c = exp(m - m_new);
            ent = c * (ent + (m - m_new) * z);
            z *= c;
            for (var d4 = 0u; d4 < HD4; d4++) {
                acc[d4] *= c;
            }
            m = m_new;
            for (var jj = 0u; jj < KEY_BLOCK; jj++) {
                let x = s[jj] - m;
                let e = select(0.0, exp(x), jj < nv);
                z += e;
                ent += select(0.0, e * x, jj < nv);
                for (var d4 = 0u; d4 < HD4; d4++) {
                    acc[d4] = fma(vec4<f32>(e), v_tile[jj * HD4 + d4], acc[d4]);
                }
            }
        }
    }
    if (!in_range) {
        return;
    }
    if (p.split > 0u) {
        // this split's share of the row, if it saw any of its keys
        if (i >= kbegin) {
            let base = ((split * p.heads + h) * p.rows + il) * (HD + 3u);
            state[base] = m;
            state[base + 1u] = z;
            state[base + 2u] = ent;
            for (var d4 = 0u; d4 < HD4; d4++) {
                write_state(base + 3u, d4, acc[d4]);
            }
        }
    } else if (i < p.end) {
        let inv_z = 1.0 / z;
        for (var d4 = 0u; d4 < HD4; d4++) {
            write_out(q0, d4, acc[d4] * inv_z);
        }
        let stats = lse_and_entropy(m, z, ent);
        lse[r] = stats.x;
        entropy_bits[r] = stats.y;
    } else {
        for (var d4 = 0u; d4 < HD4; d4++) {
            write_out(q0, d4, acc[d4]);
        }
        state[3u * r] = m;
        state[3u * r + 1u] = z;
        state[3u * r + 2u] = ent;
    }
}
