// The workgroup reductions the row kernels share (rmsnorm, cross
// entropy, the gradient norm, the head-scale gradient), written once: the
// Rust side puts this text where a shader names WORKGROUP_REDUCE (in
// double braces). Needs the shader's `WG`, a power of two. A tree over
// `partial` in a fixed order, the same additions whatever the device.

var<workgroup> partial: array<f32, WG>;

// The workgroup's sum of `v`; every invocation gets it. Call from uniform
// control flow.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
    }
    workgroupBarrier();
    let total = partial[0];
    // Before `partial` is written again.
    workgroupBarrier();
    return total;
}

// The workgroup's max of `v`, likewise.
fn workgroup_max(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
    }
    workgroupBarrier();
    let total = partial[0];
    workgroupBarrier();
    return total;
}
