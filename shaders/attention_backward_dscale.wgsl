// Attention backward, step 4 of 4: each head's scale gradient, one
// workgroup per head, summing step 2's partials over the query rows as a
// tree in workgroup memory (a fixed order, no atomics):
//   d_head_scales[h] = sum_i dscale_partials[h, i] / sqrt(hd)
// over the bound rows; with p.accumulate, added to what is there (the
// engine sums a sequence's row chunks one after another).
// CPU twin: the d_head_scales of model::cpu::attention::attention_backward.

// The uniform every attention kernel shares (shaders/attention_params.wgsl).
{{ATTENTION_PARAMS}}

@group(0) @binding(0) var<storage, read_write> d_head_scales: array<f32>; // (H)
@group(0) @binding(1) var<storage, read> dscale_partials: array<f32>;     // (H, rows)
@group(0) @binding(2) var<uniform> p: Params;

// Invocations per head (a power of two, for the tree reduction).
const WG: u32 = {{ROW_WG}}u;

// workgroup_sum (shaders/workgroup_reduce.wgsl).
{{WORKGROUP_REDUCE}}

@compute @workgroup_size(WG)
fn attention_backward_dscale(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = wid.x + wid.y * nwg.x;
    if (h >= p.heads) {
        return;
    }
    var s = 0.0;
    for (var i = lid; i < p.rows; i += WG) {
        s += dscale_partials[h * p.rows + i];
    }
    let total = workgroup_sum(lid, s);
    if (lid == 0u) {
        let before = select(0.0, d_head_scales[h], p.accumulate == 1u);
        d_head_scales[h] = before + total * p.inv_sqrt_hd;
    }
}
