// Attention backward, step 2 of 4, flash form: the maths of
// attention_backward_dq.wgsl (see there: dq and each row's share of its
// head's scale gradient, the keys split into dispatches), laid out as
// attention_forward_flash.wgsl: built for one head dim (HEAD_DIM), one
// workgroup per (block of WG query rows, head), one invocation per query
// row, its q, dO and dq in vec4 registers; each tile of KEY_BLOCK keys and
// values is loaded once into workgroup memory and every row of the block
// reads it there. A tile's terms are all computed and those past the row's
// own position dropped, so the loops over a tile have constant length.
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

// The query blocks (shaders/attention_blocks.wgsl).
{{ATTENTION_BLOCKS}}

// Query rows per workgroup, one per invocation.
const WG: u32 = {{QUERY_WG}}u;
// HD, HD4, dq4, dout4, q4, k4, v4 (a head row's elements 4 d4 .. 4 d4 + 3 at
// `base`, zero past the head dim) and write_dq (src/gpu/attention.rs,
// `head_rows4`).
{{HEAD_ROWS4}}

// KEY_BLOCK, the key and value tiles and load_key_tile
// (shaders/attention_key_tiles.wgsl).
{{ATTENTION_KEY_TILES}}

@compute @workgroup_size(WG)
fn attention_backward_dq_flash(
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
    let qs = p.heads * HD;
    let lambda = head_scales[h] * p.inv_sqrt_hd;
    let q0 = min(il, p.rows - 1u) * qs + h * HD;
    let r = h * p.rows + min(il, p.rows - 1u);
    let row_lse = rowstats[2u * r];
    let row_d = rowstats[2u * r + 1u];

    var qv: array<vec4<f32>, HD4>;
    var dov: array<vec4<f32>, HD4>;
    var dqa: array<vec4<f32>, HD4>;
    let first = p.begin == 0u;
    for (var d4 = 0u; d4 < HD4; d4++) {
        qv[d4] = q4(q0, d4);
        dov[d4] = dout4(q0, d4);
        // (not for a row past the last: its clamped index is another's,
        // which that one writes in this dispatch)
        if (in_range && !first) {
            dqa[d4] = dq4(q0, d4);
        }
    }
    var dscale = 0.0;
    if (in_range && !first) {
        dscale = dscale_partials[r];
    }
    // The keys the block's last row sees in this pass: one bound for the
    // whole workgroup, so the barriers stay in uniform control flow.
    let kend = min(p.end, p.q_first + min(p.rows, i0 + WG));
    for (var j0 = p.begin; j0 < kend; j0 += KEY_BLOCK) {
        let nk = min(KEY_BLOCK, kend - j0);
        // the workgroup loads the tile, zeros past its last key
        workgroupBarrier();
        load_key_tile(lid, j0, nk, g);
        workgroupBarrier();
        if (in_range && j0 <= i) {
            // the tile's keys this row sees: 0 .. nv
            let nv = min(nk, i + 1u - j0);
            for (var jj = 0u; jj < KEY_BLOCK; jj++) {
                var raw = vec4<f32>(0.0);
                var dp = vec4<f32>(0.0);
                for (var d4 = 0u; d4 < HD4; d4++) {
                    raw = fma(qv[d4], k_tile[jj * HD4 + d4], raw);
                    dp = fma(dov[d4], v_tile[jj * HD4 + d4], dp);
                }
                let raw_ij = (raw.x + raw.y) + (raw.z + raw.w);
                // min: rounding can put a score a hair above the lse
                let pij = exp(min(lambda * raw_ij - row_lse, 0.0));
                let ds = select(0.0, pij * (((dp.x + dp.y) + (dp.z + dp.w)) - row_d), jj < nv);
                // (a masked key's score may be anything; its term is 0)
                dscale += select(0.0, ds * raw_ij, jj < nv);
                let a = vec4<f32>(ds * lambda);
                for (var d4 = 0u; d4 < HD4; d4++) {
                    dqa[d4] = fma(a, k_tile[jj * HD4 + d4], dqa[d4]);
                }
            }
        }
    }
    if (!in_range) {
        return;
    }
    for (var d4 = 0u; d4 < HD4; d4++) {
        write_dq(q0, d4, dqa[d4]);
    }
    dscale_partials[r] = dscale;
}
