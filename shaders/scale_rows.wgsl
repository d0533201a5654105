// Scales each row of x by its factor, in place: x[r, :] *= factors[r]. The
// per-position scale rule (the query at position i uses s_h * r(i)) applied
// to the query rows before attention, and to their gradient on the way back.
// The factors come from the host (src/gpu/scale_rows.rs), computed there in
// f64 and rounded once, exactly as the CPU engine uses them.
// CPU twin: model::cpu::ops::scale_rows.

struct Params {
    rows: u32,
    width: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // (rows, width), scaled in place
@group(0) @binding(1) var<storage, read> factors: array<f32>;   // (rows)
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn scale_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.rows * p.width) {
        return;
    }
    x[e] = x[e] * factors[e / p.width];
}
