// Embedding gather, one invocation per output element:
//   out[t, j] = embed[tokens[t], j]
// `embed` holds the table's rows row0 .. row0 + rows (the whole table, or
// one part of a table split across bindings): positions whose token is in
// another part are left as they are, for that part's dispatch to write.
// Token ids are checked on the host (they come from there); a bad one is
// clamped to the last row here rather than read out of bounds.
// CPU twin: model::cpu::ops::embedding_forward.

struct Params {
    tokens: u32,
    c: u32,
    vocab: u32,
    row0: u32,
    rows: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (T, C)
@group(0) @binding(1) var<storage, read> embed: array<WT>;     // (rows, C)
@group(0) @binding(2) var<storage, read> tokens: array<u32>;    // (T)
@group(0) @binding(3) var<uniform> p: Params;

// The table's element: f32, or f16 for weights held in half precision
// (the variant src/gpu/embedding.rs makes by substitution).
alias WT = f32;

const WG: u32 = {{WG}}u;

@compute @workgroup_size(WG)
fn embedding_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= p.tokens * p.c) {
        return;
    }
    let t = e / p.c;
    let j = e % p.c;
    let row = min(tokens[t], p.vocab - 1u);
    if (row < p.row0 || row - p.row0 >= p.rows) {
        return;
    }
    out[e] = f32(embed[(row - p.row0) * p.c + j]);
}
