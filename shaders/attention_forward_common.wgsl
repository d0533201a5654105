// What the three attention forward shaders share (attention_forward.wgsl,
// attention_forward_tiled.wgsl, attention_forward_flash.wgsl), written
// once: src/gpu/attention.rs puts this text where each names
// ATTENTION_FORWARD_COMMON (in double braces), after ATTENTION_PARAMS.

@group(0) @binding(0) var<storage, read_write> out: array<f32>;          // (rows, H * hd): acc until a row's last pass
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;          // (H, rows)
@group(0) @binding(2) var<storage, read_write> entropy_bits: array<f32>; // (H, rows)
@group(0) @binding(3) var<storage, read_write> state: array<f32>;        // (H, rows, 3): m, Z, E between passes
@group(0) @binding(4) var<storage, read> q: array<f32>;                  // (rows, H * hd)
@group(0) @binding(5) var<storage, read> k: array<f32>;                  // (keys, KV * hd)
@group(0) @binding(6) var<storage, read> v: array<f32>;                  // (keys, KV * hd)
@group(0) @binding(7) var<storage, read> head_scales: array<f32>;        // (H)
@group(0) @binding(8) var<uniform> p: Params;

// In hex, exactly -f32::MAX: Tint (Chromium) rejects the decimal
// -3.40282347e38 as not representable in f32. The max before any key:
// e^(LOWEST - m') is 0 for every finite score m'.
const LOWEST: f32 = -0x1.fffffep+127f;
const LN2: f32 = 0.693147180559945;

// The rows of one workgroup of the tiled and flash forms: a block of
// `wg` consecutive bound rows of head h. Workgroup-uniform (it reads no
// invocation index), so the barriers after it stay in uniform control flow.
struct Block {
    // false: the workgroup has no block (past the last) and returns.
    valid: bool,
    h: u32,
    // The block's first bound row.
    i0: u32,
    // The first bound row that sees keys of this pass (at or past `begin`).
    lo: u32,
}

// The block of workgroup `w`: blocks from the one holding row `lo` to the
// last, head after head.
fn forward_block(w: u32, wg: u32) -> Block {
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
