// The parameters every attention kernel reads (src/gpu/attention.rs's
// `AttnParams`, field for field), written once: src/gpu/attention.rs puts
// this text where each attention shader names ATTENTION_PARAMS (in double
// braces).
struct Params {
    // Query rows bound: q, out and the stats' row stride.
    rows: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    // heads / kv_heads: query heads per KV head.
    group: u32,
    // 1 / sqrt(hd)
    inv_sqrt_hd: f32,
    // This dispatch's keys: [begin, end).
    begin: u32,
    end: u32,
    // Positions of the first bound query row and the first bound key row.
    q_first: u32,
    k_first: u32,
    // Key rows bound.
    keys: u32,
    // attention_backward_dscale.wgsl: add to the gradient there (1) or
    // overwrite it (0); the other kernels ignore it.
    accumulate: u32,
}
