// Embedding backward, the scatter-add of the gather, without atomics and in
// a fixed order: the host groups the positions of each distinct token
// (a counting sort, src/gpu/embedding.rs), and one invocation per
// (distinct token, column) adds that token's rows of dout in position order:
//   dembed[rows[u], j] += sum over i in starts[u]..starts[u + 1] of dout[positions[i], j]
// which is the CPU twin's order of additions, so the sums agree exactly.
// CPU twin: model::cpu::ops::embedding_backward.

struct Params {
    groups: u32,
    c: u32,
}

@group(0) @binding(0) var<storage, read_write> dembed: array<f32>; // (V, C), accumulated into
@group(0) @binding(1) var<storage, read> dout: array<f32>;         // (T, C)
@group(0) @binding(2) var<storage, read> rows: array<u32>;         // (U) distinct token ids
@group(0) @binding(3) var<storage, read> starts: array<u32>;       // (U + 1) into positions
@group(0) @binding(4) var<storage, read> positions: array<u32>;    // (T) grouped by token, ascending
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn embedding_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.groups * p.c) {
        return;
    }
    let u = e / p.c;
    let j = e % p.c;
    let dst = rows[u] * p.c + j;
    var s = dembed[dst];
    for (var i = starts[u]; i < starts[u + 1u]; i++) {
        s += dout[positions[i] * p.c + j];
    }
    dembed[dst] = s;
}
