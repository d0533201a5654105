// How the kernels built in workgroups (the tiled and flash forwards, the
// flash backward's dq and dk/dv) split the bound rows into blocks, one
// block per workgroup, written once: src/gpu/attention.rs puts this text
// where a shader names ATTENTION_BLOCKS (in double braces), after
// ATTENTION_PARAMS. Both are workgroup-uniform (they read no invocation
// index), so the barriers after them stay in uniform control flow.

// A block of `wg` consecutive bound query rows of head h.
struct Block {
    // false: the workgroup has no block (past the last) and returns.
    valid: bool,
    h: u32,
    // The block's first bound row.
    i0: u32,
    // The first bound row that sees keys of this pass (at or past `begin`).
    lo: u32,
}

// The query block of workgroup `w`: blocks from the one holding row `lo`
// to the last, head after head.
fn query_block(w: u32, wg: u32) -> Block {
    var b: Block;
    b.lo = max(p.begin, p.q_first) - p.q_first;
    let first_block = b.lo / wg;
    let blocks = (p.rows + wg - 1u) / wg - first_block;
    b.valid = w < p.heads * blocks;
    if (b.valid) {
        b.h = w / blocks;
        b.i0 = (first_block + w % blocks) * wg;
    }
    return b;
}

// A block of `wg` consecutive bound key rows of KV head g, for a pass
// over the query rows [begin, end): keys from position `end` on see none
// of them and have no block.
struct KeyBlock {
    valid: bool,
    g: u32,
    // The block's first bound key, and the bound keys before `end`.
    j0: u32,
    n: u32,
}

fn key_block(w: u32, wg: u32) -> KeyBlock {
    var b: KeyBlock;
    b.n = min(p.end - p.k_first, p.keys);
    let blocks = (b.n + wg - 1u) / wg;
    b.valid = w < p.kv_heads * blocks;
    if (b.valid) {
        b.g = w / blocks;
        b.j0 = (w % blocks) * wg;
    }
    return b;
}
