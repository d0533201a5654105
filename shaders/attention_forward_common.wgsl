// What the three attention forward shaders share (attention_forward.wgsl,
// attention_forward_tiled.wgsl, attention_forward_flash.wgsl), written
// once: src/gpu/attention.rs puts this text where each names
// ATTENTION_FORWARD_COMMON (in double braces), after ATTENTION_PARAMS.

@group(0) @binding(0) var<storage, read_write> out: array<f32>;          // (rows, H * hd): acc until a row's last pass
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;          // (H, rows)
@group(0) @binding(2) var<storage, read_write> entropy_bits: array<f32>; // (H, rows)
@group(0) @binding(3) var<storage, read_write> state: array<f32>;        // (H, rows, 3): m, Z, E between passes; flash, keys split: (splits, H, rows, hd + 3)
@group(0) @binding(4) var<storage, read> q: array<f32>;                  // (rows, H * hd)
@group(0) @binding(5) var<storage, read> k: array<f32>;                  // (keys, KV * hd)
@group(0) @binding(6) var<storage, read> v: array<f32>;                  // (keys, KV * hd)
@group(0) @binding(7) var<storage, read> head_scales: array<f32>;        // (H)
@group(0) @binding(8) var<uniform> p: Params;

// The query blocks of the tiled and flash forms
// (shaders/attention_blocks.wgsl).
{{ATTENTION_BLOCKS}}
