// Attention backward, step 1 of 4: per (query row i, head h) the two
// numbers the other steps need about that row, side by side:
//   rowstats[h, i] = (lse[h, i], D_i = dO_i . O_i)
// (one buffer for both keeps the next steps within 8 storage bindings,
// WebGPU's default). The bound rows may be a chunk of the sequence
// (see attention_forward.wgsl).
// CPU twin: the D of model::cpu::attention::attention_backward.

// The uniform every attention kernel shares (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

@group(0) @binding(0) var<storage, read_write> rowstats: array<f32>; // (H, rows, 2): lse, D
@group(0) @binding(1) var<storage, read> dout: array<f32>;           // (rows, H * hd)
@group(0) @binding(2) var<storage, read> out: array<f32>;            // (rows, H * hd)
@group(0) @binding(3) var<storage, read> lse: array<f32>;            // (H, rows)
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = {{QUERY_WG}}u;

@compute @workgroup_size(WG)
fn attention_backward_delta(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.heads * p.rows) {
        return;
    }
    let h = e / p.rows;
    let i = e % p.rows;
    let o0 = i * p.heads * p.hd + h * p.hd;
    var dd = 0.0;
    for (var d = 0u; d < p.hd; d++) {
        dd += dout[o0 + d] * out[o0 + d];
    }
    rowstats[2u * e] = lse[e];
    rowstats[2u * e + 1u] = dd;
}
