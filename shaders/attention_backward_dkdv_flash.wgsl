// Attention backward, step 3 of 4, flash form: the maths of
// attention_backward_dkdv.wgsl (see there: dk and dv of each key over the
// query rows and heads that see it, the query rows split into
// dispatches), built for one head dim (HEAD_DIM): one workgroup per (block
// of WG key rows, KV head), one invocation per key, its k, v, dk and dv in
// vec4 registers. The workgroup walks the pass's query rows from the
// block's first key on in tiles of ROW_BLOCK rows; for each head of the
// group it loads the tile's q, dO, lse and D into workgroup memory once,
// and every key of the block reads them there. A term of a row before the
// key's own position is dropped.
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

// The key blocks (shaders/attention_blocks.wgsl).
{{ATTENTION_BLOCKS}}

// Keys per workgroup, one per invocation.
const WG: u32 = {{QUERY_WG}}u;
// Query rows per tile.
const ROW_BLOCK: u32 = {{KEY_BLOCK}}u;

var<workgroup> q_tile: array<vec4<f32>, ROW_BLOCK * HD4>;  // (ROW_BLOCK, HD4)
var<workgroup> do_tile: array<vec4<f32>, ROW_BLOCK * HD4>; // (ROW_BLOCK, HD4)
var<workgroup> stat_tile: array<vec2<f32>, ROW_BLOCK>;     // (ROW_BLOCK): lse, D

// HD, HD4, dk4, dv4, dout4, q4, k4, v4 (a head row's elements 4 d4 .. 4 d4 + 3 at
// `base`, zero past the head dim), write_dk and write_dv
// (src/gpu/attention.rs, `head_rows4`).
{{HEAD_ROWS4}}

@compute @workgroup_size(WG)
fn attention_backward_dkdv_flash(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = key_block(wid.x + wid.y * nwg.x, WG);
    if (!b.valid) {
        return;
    }
    let g = b.g;
    let jl = b.j0 + lid;
    let j = p.k_first + jl;
    // Keys past the block's last still load tiles and meet every barrier.
    let in_range = jl < b.n;
    let qs = p.heads * HD;
    let k0 = min(jl, b.n - 1u) * p.kv_heads * HD + g * HD;

    var kv: array<vec4<f32>, HD4>;
    var vv: array<vec4<f32>, HD4>;
    var dka: array<vec4<f32>, HD4>;
    var dva: array<vec4<f32>, HD4>;
    // a key's sums start in the pass holding its own row
    let first = j >= p.begin;
    for (var d4 = 0u; d4 < HD4; d4++) {
        kv[d4] = k4(k0, d4);
        vv[d4] = v4(k0, d4);
        // (not for a key past the last: its clamped index is another's,
        // which that one writes in this dispatch)
        if (in_range && !first) {
            dka[d4] = dk4(k0, d4);
            dva[d4] = dv4(k0, d4);
        }
    }
    // The rows the block's first key sees in this pass: one range for the
    // whole workgroup, so the barriers stay in uniform control flow.
    for (var i0 = max(p.k_first + b.j0, p.begin); i0 < p.end; i0 += ROW_BLOCK) {
        let nr = min(ROW_BLOCK, p.end - i0);
        for (var h = g * p.group; h < (g + 1u) * p.group; h++) {
            // the workgroup loads the tile's rows of head h
            workgroupBarrier();
            for (var x = lid; x < ROW_BLOCK * HD4; x += WG) {
                let ii = x / HD4;
                var qx = vec4<f32>(0.0);
                var dx = vec4<f32>(0.0);
                if (ii < nr) {
                    let src = (i0 + ii - p.q_first) * qs + h * HD;
                    qx = q4(src, x % HD4);
                    dx = dout4(src, x % HD4);
                }
                q_tile[x] = qx;
                do_tile[x] = dx;
            }
            for (var ii = lid; ii < ROW_BLOCK; ii += WG) {
                var st = vec2<f32>(0.0);
                if (ii < nr) {
                    let r = 2u * (h * p.rows + i0 + ii - p.q_first);
                    st = vec2<f32>(rowstats[r], rowstats[r + 1u]);
                }
                stat_tile[ii] = st;
            }
            workgroupBarrier();
            if (in_range) {
                let lambda = head_scales[h] * p.inv_sqrt_hd;
                for (var ii = 0u; ii < nr; ii++) {
                    var raw = vec4<f32>(0.0);
                    var dp = vec4<f32>(0.0);
                    for (var d4 = 0u; d4 < HD4; d4++) {
                        raw = fma(q_tile[ii * HD4 + d4], kv[d4], raw);
                        dp = fma(do_tile[ii * HD4 + d4], vv[d4], dp);
                    }
                    let st = stat_tile[ii];
                    // min: rounding can put a score a hair above the lse;
                    // rows before key j do not see it
                    let seen = i0 + ii >= j;
                    let pij = select(0.0, exp(min(lambda * ((raw.x + raw.y) + (raw.z + raw.w)) - st.x, 0.0)), seen);
                    let a = vec4<f32>(pij * (((dp.x + dp.y) + (dp.z + dp.w)) - st.y) * lambda);
                    let pv = vec4<f32>(pij);
                    for (var d4 = 0u; d4 < HD4; d4++) {
                        dka[d4] = fma(a, q_tile[ii * HD4 + d4], dka[d4]);
                        dva[d4] = fma(pv, do_tile[ii * HD4 + d4], dva[d4]);
                    }
                }
            }
        }
    }
    if (!in_range) {
        return;
    }
    for (var d4 = 0u; d4 < HD4; d4++) {
        write_dk(k0, d4, dka[d4]);
        write_dv(k0, d4, dva[d4]);
    }
}
