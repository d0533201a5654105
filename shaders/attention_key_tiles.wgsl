// The key and value tiles of the flash forward and the flash dq, written
// once: src/gpu/attention.rs puts this text where those shaders name
// ATTENTION_KEY_TILES (in double braces), after HEAD_ROWS4 (HD, HD4, k4,
// v4). Each shader has its own WG, the invocations per workgroup.

// Keys per tile.
const KEY_BLOCK: u32 = {{KEY_BLOCK}}u;

var<workgroup> k_tile: array<vec4<f32>, KEY_BLOCK * HD4>; // (KEY_BLOCK, HD4)
var<workgroup> v_tile: array<vec4<f32>, KEY_BLOCK * HD4>; // (KEY_BLOCK, HD4)

// Invocation `lid`'s share of loading the tile of keys j0 .. j0 + nk of KV
// head g (positions in the sequence), zeros past the last; the caller puts
// a barrier before (the tile may still be read) and after.
fn load_key_tile(lid: u32, j0: u32, nk: u32, g: u32) {
    for (var x = lid; x < KEY_BLOCK * HD4; x += WG) {
        let jj = x / HD4;
        var kx = vec4<f32>(0.0);
        var vx = vec4<f32>(0.0);
        if (jj < nk) {
            let src = (j0 + jj - p.k_first) * p.kv_heads * HD + g * HD;
            kx = k4(src, x % HD4);
            vx = v4(src, x % HD4);
        }
        k_tile[x] = kx;
        v_tile[x] = vx;
    }
}
