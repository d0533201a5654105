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
// CPU twin: model::cpu::attention::attention_forward.

// The uniform every attention kernel shares (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

// The bindings, LOWEST, LN2 and the tiled forms' blocks
// (shaders/attention_forward_common.wgsl).
{{ATTENTION_FORWARD_COMMON}}

// Query rows per workgroup, one per invocation.
const WG: u32 = {{QUERY_WG}}u;
// Keys per tile.
const KEY_BLOCK: u32 = {{KEY_BLOCK}}u;
// The head dim this pipeline is built for (p.hd, checked on the host),
// and the vec4s that hold one head's row.
const HD: u32 = {{HEAD_DIM}}u;
const HD4: u32 = (HD + 3u) / 4u;

var<workgroup> k_tile: array<vec4<f32>, KEY_BLOCK * HD4>; // (KEY_BLOCK, HD4)
var<workgroup> v_tile: array<vec4<f32>, KEY_BLOCK * HD4>; // (KEY_BLOCK, HD4)

// Elements d4*4 .. d4*4+3 of the head row at `base`, zero past the head dim.
fn q4(base: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = 4u * d4 + c;
        if (d < HD) {
            x[c] = q[base + d];
        }
    }
    return x;
}

fn out4(base: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = 4u * d4 + c;
        if (d < HD) {
            x[c] = out[base + d];
        }
    }
    return x;
}

fn k4(base: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = 4u * d4 + c;
        if (d < HD) {
            x[c] = k[base + d];
        }
    }
    return x;
}

fn v4(base: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = 4u * d4 + c;
        if (d < HD) {
            x[c] = v[base + d];
        }
    }
    return x;
}

fn write_out(base: u32, d4: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let d = 4u * d4 + c;
        if (d < HD) {
            out[base + d] = x[c];
        }
    }
}

@compute @workgroup_size(WG)
fn attention_forward_flash(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = forward_block(wid.x + wid.y * nwg.x, WG);
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
    let qs = p.heads * HD;
    let kvs = p.kv_heads * HD;
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
        if (!first) {
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
    let kend = min(p.end, p.q_first + min(p.rows, i0 + WG));
    for (var j0 = p.begin; j0 < kend; j0 += KEY_BLOCK) {
        let nk = min(KEY_BLOCK, kend - j0);
        // the workgroup loads the tile, zeros past its last key
        workgroupBarrier();
        for (var x = lid; x < KEY_BLOCK * HD4; x += WG) {
            let jj = x / HD4;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (jj < nk) {
                let src = (j0 + jj - p.k_first) * kvs + g * HD;
                kx = k4(src, x % HD4);
                vx = v4(src, x % HD4);
            }
            k_tile[x] = kx;
            v_tile[x] = vx;
        }
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
    if (i < p.end) {
        let inv_z = 1.0 / z;
        for (var d4 = 0u; d4 < HD4; d4++) {
            write_out(q0, d4, acc[d4] * inv_z);
        }
        let ln_z = log(z);
        lse[r] = m + ln_z;
        entropy_bits[r] = max((ln_z - ent * inv_z) / LN2, 0.0);
    } else {
        for (var d4 = 0u; d4 < HD4; d4++) {
            write_out(q0, d4, acc[d4]);
        }
        state[3u * r] = m;
        state[3u * r + 1u] = z;
        state[3u * r + 2u] = ent;
    }
}
