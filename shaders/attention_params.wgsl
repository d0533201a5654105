// The parameters every attention kernel reads (src/gpu/attention.rs's
// `AttnParams`, field for field), and the forward's constants and row
// statistics, written once: src/gpu/attention.rs puts this text where each
// attention shader names ATTENTION_PARAMS (in double braces).
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
    // attention_forward_flash.wgsl and attention_forward_combine.wgsl:
    // keys per split where the keys are split across workgroups (0: not
    // split); the other kernels ignore it.
    split: u32,
}

// In hex, exactly -f32::MAX: Tint (Chromium) rejects the decimal
// -3.40282347e38 as not representable in f32. The max before any key:
// e^(LOWEST - m') is 0 for every finite score m'.
const LOWEST: f32 = -0x1.fffffep+127f;
const LN2: f32 = 0.693147180559945;

// A finished row's lse and entropy in bits from its online-softmax state
// (m, Z, E) (see attention_forward.wgsl): lse = m + ln Z, entropy =
// (ln Z - E / Z) / ln 2, never below 0 (rounding).
fn lse_and_entropy(m: f32, z: f32, ent: f32) -> vec2<f32> {
    let ln_z = log(z);
    return vec2<f32>(m + ln_z, max((ln_z - ent * (1.0 / z)) / LN2, 0.0));
}
