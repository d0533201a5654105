//! Causal grouped-query attention with per-head scale, forward and
//! backward, streaming over keys so memory stays linear in T
//! (`shaders/attention_forward*.wgsl`, `attention_backward_*.wgsl`). The
//! CPU twins are `model::cpu::attention::{attention_forward,
//! attention_backward}`, whose top comment gives the maths; the layouts are
//! theirs: q, out (T, H*hd), k, v (T, KV*hd), lse and entropy (H, T), query
//! head h reading KV head h / (H / KV), lambda = s_h / sqrt(hd) applied to
//! the query.
//!
//! The forward's kernel form is chosen here, once (`Attention::form`):
//! - `Rows` (`attention_forward.wgsl`): one invocation per (query row,
//!   head) looping over the keys, its query, accumulators and a block of
//!   scores in private arrays (`MAX_HEAD_DIM`, `KEY_BLOCK`), no workgroup
//!   memory and no barriers: the form that was fastest for matmul on
//!   lavapipe.
//! - `Tiled` (`attention_forward_tiled.wgsl`): one workgroup per (block of
//!   `QUERY_WG` query rows, head); each tile of `KEY_BLOCK` keys and values
//!   is loaded into workgroup memory once for the whole block, the goal for
//!   real GPUs, where reading every key from the buffer once per query row
//!   is what limits `Rows`.
//!
//! - `Flash` (`attention_forward_flash.wgsl`): `Tiled` built for one head
//!   dim (`Attention::build_flash`), so its loops over the head dim have
//!   constant length and the query, the accumulator and a tile's scores
//!   live in vec4 registers instead of arrays sized for the largest head
//!   dim; the tiles are vec4s, each tile's scores are computed whole
//!   (masked past the row's position) and its max moves once per tile.
//!
//! `Rows` and `Tiled` do the same arithmetic in the same order; `Flash`
//! groups each dot product by fours. The engine uses `Flash`, the fastest
//! on every adapter measured (lavapipe, the H200: docs/BENCH.md); the
//! tests run all three.
//!
//! `Flash` may also split a whole sequence's keys across workgroups
//! (`KeySplit`): each (block of rows, head, split of keys) writes its
//! rows' online-softmax state and sums into the state buffer, and
//! `attention_forward_combine.wgsl` merges a row's splits. Without it a
//! short sequence of few heads leaves a large GPU mostly idle while the
//! block of the last rows walks every key alone (1024 tokens of 6 heads
//! are 96 workgroups). The engine splits on real GPUs (not yet measured
//! there); on lavapipe it makes no difference, and it is off.
//!
//! The backward is four steps, deterministic (every output has one
//! writer, no float atomics): (1) per (row, head) its lse and D = dO . O
//! side by side; (2) per (row, head) dq and the row's share of the head's
//! scale gradient; (3) per (key row, KV head) dk and dv, looping over the
//! query rows and heads of its group; (4) per head, a tree sum of the
//! shares. Steps 2 and 3 and the forward use exactly 8 storage bindings,
//! WebGPU's default limit. Steps 2 and 3 have two forms
//! (`Attention::backward_form`): `Rows`, one invocation per row or key
//! reading every operand from the buffers (`attention_backward_dq.wgsl`,
//! `attention_backward_dkdv.wgsl`), and `Flash`, built with the flash
//! forward for one head dim (`*_flash.wgsl`): dq per block of query rows
//! with each tile of keys and values in workgroup memory, as the forward;
//! dk, dv per block of keys with each tile of query rows (q, dO, lse, D)
//! in workgroup memory. The engine uses `Flash`, 10-20% faster on lavapipe
//! (not yet measured on a real GPU); the tests run both.
//!
//! Every call may bind a chunk of the sequence instead of all of it
//! (`AttnSpan`): `rows` query rows from position `q_first` (q, out, dout,
//! dq and the (H, rows) stats) against `keys` key rows from `k_first` (k,
//! v, dk, dv), so a long sequence's buffers can live in pages that each
//! fit the max storage binding (`gpu/engine/`). The shaders index the
//! bound rows, compare positions in the sequence for causality, and carry
//! the online softmax (forward) and the sums (dq, dk, dv, scale gradient)
//! from one key chunk (or query chunk) to the next exactly as they carry
//! them from one pass of the loop budget to the next: calling the forward
//! for key chunks 0, 1, .., i of query chunk i is the same arithmetic as
//! one call over its keys. The whole-sequence calls (`forward`,
//! `backward`) are the one-chunk case.
//!
//! Long loops are split into dispatches. llvmpipe (lavapipe) counts the
//! iterations of all loops of an invocation together and ends them all at
//! 65535 (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`), silently: outputs past
//! that point are never written. So the forward and step 2 take the keys,
//! and step 3 the query rows, `Attention::pass_len` at a time, carrying
//! their sums in the output buffers (and the forward's (m, Z, E) in
//! `AttentionScratch::forward_state`) from one dispatch to the next. On a
//! real GPU the budget is large and one dispatch usually covers T.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::{Error, Result};
use super::shader::{self, uniform_layout, Access, ShaderSource};
use super::ROW_WG;
use crate::model::shapes::AttnShape;

/// Invocations per workgroup of the per-row passes: consecutive query (or
/// key) rows of one head.
pub const QUERY_WG: u32 = 64;
/// Keys scored per step of the forward's online softmax.
pub const KEY_BLOCK: u32 = 16;
/// The largest head dim: the length of each invocation's private arrays.
pub const MAX_HEAD_DIM: u32 = 128;
/// Storage bindings of the widest passes.
const MAX_STORAGE_BINDINGS: u32 = 8;
/// WebGPU's default workgroup memory: the tiled forward's K and V tiles fit.
const _: () = assert!(2 * KEY_BLOCK * MAX_HEAD_DIM * 4 <= 16384);

/// Loop iterations one invocation may run on a CPU adapter: llvmpipe stops
/// every loop at 65535 together; this leaves a margin.
pub const CPU_LOOP_BUDGET: u64 = 60_000;
/// The same on real GPUs, which have no such limit: large, so one dispatch
/// usually covers T, yet bounded, so that no dispatch runs for seconds.
pub const GPU_LOOP_BUDGET: u64 = 1 << 24;

/// Which kernel runs the forward (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardForm {
    /// One invocation per (query row, head), keys read from the buffer.
    Rows,
    /// One workgroup per (block of query rows, head), keys and values
    /// shared through workgroup memory.
    Tiled,
    /// `Tiled` built for one head dim, its rows in vec4 registers
    /// (`Attention::build_flash`).
    Flash,
}

/// Which kernels run the backward's steps 2 and 3 (dq; dk and dv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardForm {
    /// One invocation per (query row, head) for dq and per (key row, KV
    /// head) for dk, dv, every operand read from the buffers.
    Rows,
    /// Built for one head dim like the flash forward: dq per block of
    /// query rows with each tile of keys and values in workgroup memory;
    /// dk, dv per block of keys with each tile of query rows (q, dO, lse,
    /// D) in workgroup memory (`Attention::build_flash`).
    Flash,
}

/// When the flash forward splits the keys of a sequence across workgroups
/// (`attention_forward_flash.wgsl`, then `attention_forward_combine.wgsl`
/// merges the splits): only over a whole sequence in one pass, and only
/// when its blocks of query rows make fewer than `workgroups` workgroups;
/// then into as many splits as bring them to `workgroups`, each at least
/// `min_keys` keys (rounded up to whole tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySplit {
    pub workgroups: usize,
    pub min_keys: usize,
}

impl KeySplit {
    /// Never split.
    pub const NONE: KeySplit = KeySplit {
        workgroups: 0,
        min_keys: 0,
    };
    /// What the engine uses on real GPUs: a short sequence of few heads
    /// (1024 tokens of 6 heads: 96 blocks of 64 rows) fills a few hundred
    /// workgroups, each walking at least 128 keys.
    pub const GPU: KeySplit = KeySplit {
        workgroups: 512,
        min_keys: 128,
    };

    /// Floats of the split forward's partial sums for sequences of up to
    /// `t` tokens with `wg` rows per block, at most (what
    /// `Attention::state_len` needs beyond (H, T, 3), for estimates made
    /// before an engine exists): splits bring H ceil(T' / wg) blocks up to
    /// `workgroups`, at worst one split more, so splits x H x T' is under
    /// wg x workgroups + H T'; and there is no split past T' = wg x
    /// workgroups / H.
    pub fn state_bound(&self, wg: usize, heads: usize, hd: usize, t: usize) -> usize {
        let wg_rows = wg * self.workgroups;
        match wg_rows {
            0 => 0,
            _ => (wg_rows + heads * t.min(wg_rows / heads.max(1))) * (hd + 3),
        }
    }
}

/// Query rows (dq) or keys (dk, dv) per workgroup of the flash kernels.
pub const FLASH_WG: u32 = 64;
/// The most keys (or query rows) per tile of the flash kernels; fewer where
/// a large head dim's two tiles would pass the device's workgroup memory.
pub const FLASH_KEY_BLOCK: u32 = 32;

/// A flash kernel's bindings: the forward's, or steps 2 and 3's.
const FORWARD_BINDINGS: &[(&str, Access)] = &[
    ("out", Access::ReadWrite),
    ("lse", Access::ReadWrite),
    ("entropy_bits", Access::ReadWrite),
    ("state", Access::ReadWrite),
    ("q", Access::Read),
    ("k", Access::Read),
    ("v", Access::Read),
    ("head_scales", Access::Read),
];
const DQ_BINDINGS: &[(&str, Access)] = &[
    ("dq", Access::ReadWrite),
    ("dscale_partials", Access::ReadWrite),
    ("dout", Access::Read),
    ("q", Access::Read),
    ("k", Access::Read),
    ("v", Access::Read),
    ("rowstats", Access::Read),
    ("head_scales", Access::Read),
];
const DKDV_BINDINGS: &[(&str, Access)] = &[
    ("dk", Access::ReadWrite),
    ("dv", Access::ReadWrite),
    ("dout", Access::Read),
    ("q", Access::Read),
    ("k", Access::Read),
    ("v", Access::Read),
    ("rowstats", Access::Read),
    ("head_scales", Access::Read),
];

/// The three flash kernels' sources for head dim `hd` and `wg` query rows
/// (or keys) per workgroup: the forward and dq with `key_tile` keys per
/// tile, dk and dv with `row_tile` query rows per tile.
pub fn flash_shaders(hd: u32, wg: u32, key_tile: u32, row_tile: u32) -> [ShaderSource; 3] {
    let values = |tile: u32| [("QUERY_WG", wg), ("KEY_BLOCK", tile), ("HEAD_DIM", hd)];
    // Each with the head rows it reads and writes as vec4s (`head_rows4`).
    let forward_rows = head_rows4(&["q", "out", "k", "v"], &["out", "state"]);
    let dq_rows = head_rows4(&["dq", "dout", "q", "k", "v"], &["dq"]);
    let dkdv_rows = head_rows4(&["dk", "dv", "dout", "q", "k", "v"], &["dk", "dv"]);
    let source = |file, template, parts: &[(&str, &str)], tile, bindings| {
        ShaderSource::new(file, &shader::include(template, parts), &values(tile)).bind(bindings, params_layout())
    };
    [
        source(
            "attention_forward_flash.wgsl",
            include_str!("../../shaders/attention_forward_flash.wgsl"),
            &[
                ATTENTION_PARAMS,
                ATTENTION_FORWARD_COMMON,
                ATTENTION_BLOCKS,
                ("HEAD_ROWS4", &forward_rows),
                ATTENTION_KEY_TILES,
            ],
            key_tile,
            FORWARD_BINDINGS,
        ),
        source(
            "attention_backward_dq_flash.wgsl",
            include_str!("../../shaders/attention_backward_dq_flash.wgsl"),
            &[
                ATTENTION_PARAMS,
                ATTENTION_BLOCKS,
                ("HEAD_ROWS4", &dq_rows),
                ATTENTION_KEY_TILES,
            ],
            key_tile,
            DQ_BINDINGS,
        ),
        source(
            "attention_backward_dkdv_flash.wgsl",
            include_str!("../../shaders/attention_backward_dkdv_flash.wgsl"),
            &[ATTENTION_PARAMS, ATTENTION_BLOCKS, ("HEAD_ROWS4", &dkdv_rows)],
            row_tile,
            DKDV_BINDINGS,
        ),
    ]
}

/// The head dim's constants `HD` (`{{HEAD_DIM}}`, substituted after) and
/// `HD4`, and WGSL functions over the head rows of the kernels built for
/// that head dim, one set per binding: `NAME4(base, d4)`
/// reads elements 4 d4 .. 4 d4 + 3 of the row at `base` of binding NAME as
/// a vec4 (zero past the head dim), for each of `reads`; `write_NAME(base,
/// d4, x)` writes them (those within the head dim), for each of `writes`.
fn head_rows4(reads: &[&str], writes: &[&str]) -> String {
    // The head dim the pipeline is built for (p.hd, checked on the host),
    // and the vec4s that hold one head's row.
    let mut text = String::from("const HD: u32 = {{HEAD_DIM}}u;\nconst HD4: u32 = (HD + 3u) / 4u;\n\n");
    for name in reads {
        text += &format!(
            "fn {name}4(base: u32, d4: u32) -> vec4<f32> {{
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {{
        let d = 4u * d4 + c;
        if (d < HD) {{
            x[c] = {name}[base + d];
        }}
    }}
    return x;
}}

"
        );
    }
    for name in writes {
        text += &format!(
            "fn write_{name}(base: u32, d4: u32, x: vec4<f32>) {{
    for (var c = 0u; c < 4u; c++) {{
        let d = 4u * d4 + c;
        if (d < HD) {{
            {name}[base + d] = x[c];
        }}
    }}
}}

"
        );
    }
    text
}

/// Keys (forward, dq) per tile of the flash kernels for head dim `hd`:
/// the K and V tiles (vec4s, the head dim rounded up to 4) within
/// `workgroup_bytes`.
pub fn flash_key_block(hd: u32, workgroup_bytes: u32) -> u32 {
    tile_len(2 * 16 * hd.div_ceil(4).max(1), workgroup_bytes)
}

/// Query rows per tile of the flash dk, dv for head dim `hd`: the q and dO
/// tiles and the rows' (lse, D) within `workgroup_bytes`.
pub fn flash_row_block(hd: u32, workgroup_bytes: u32) -> u32 {
    tile_len(2 * 16 * hd.div_ceil(4).max(1) + 8, workgroup_bytes)
}

/// Items of `per_item` bytes in `workgroup_bytes`, 1 to `FLASH_KEY_BLOCK`.
fn tile_len(per_item: u32, workgroup_bytes: u32) -> u32 {
    (workgroup_bytes / per_item).clamp(1, FLASH_KEY_BLOCK)
}

/// The flash kernels' pipelines for one head dim.
#[derive(Debug)]
struct FlashKernels {
    hd: u32,
    wg: u32,
    /// Keys per tile of the forward and dq.
    key_tile: u32,
    forward: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    dq: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    dkdv: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
}

/// `AttnParams`' fields, to check against every attention shader's `Params`.
fn params_layout() -> shader::UniformLayout {
    uniform_layout!(AttnParams: rows, heads, kv_heads, hd, group, inv_sqrt_hd, begin, end, q_first, k_first, keys, accumulate, split)
}

/// Mirrors `Params` in every attention shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AttnParams {
    /// Query rows bound (`AttnSpan::rows`).
    pub rows: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub hd: u32,
    pub group: u32,
    pub inv_sqrt_hd: f32,
    /// The dispatch's keys (forward, dq) or query rows (dk, dv), as
    /// positions in the sequence: [begin, end).
    pub begin: u32,
    pub end: u32,
    pub q_first: u32,
    pub k_first: u32,
    pub keys: u32,
    /// 1: the scale gradient adds to what is there (step 4).
    pub accumulate: u32,
    /// The flash forward with split keys: keys per split (0: not split).
    pub split: u32,
}

/// Which rows of a sequence one call binds: `rows` query rows from
/// position `q_first` and `keys` key rows from `k_first`, the keys ending
/// at or before the query rows do (`k_first + keys <= q_first + rows`); a
/// key chunk wholly before the query rows is the case of a paged sequence
/// (`gpu/engine/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnSpan {
    pub q_first: usize,
    pub rows: usize,
    pub k_first: usize,
    pub keys: usize,
}

impl AttnSpan {
    /// All `t` rows against all `t` keys.
    pub fn whole(t: usize) -> Self {
        AttnSpan {
            q_first: 0,
            rows: t,
            k_first: 0,
            keys: t,
        }
    }
}

/// The attention kernels' shared uniform struct, written once.
const ATTENTION_PARAMS: (&str, &str) = ("ATTENTION_PARAMS", include_str!("../../shaders/attention_params.wgsl"));

/// What the forward shaders share: the bindings, constants and the tiled
/// forms' blocks.
const ATTENTION_FORWARD_COMMON: (&str, &str) = (
    "ATTENTION_FORWARD_COMMON",
    include_str!("../../shaders/attention_forward_common.wgsl"),
);

/// The key and value tiles of the flash forward and dq.
const ATTENTION_KEY_TILES: (&str, &str) = (
    "ATTENTION_KEY_TILES",
    include_str!("../../shaders/attention_key_tiles.wgsl"),
);

/// How the kernels built in workgroups split the rows into blocks.
const ATTENTION_BLOCKS: (&str, &str) = ("ATTENTION_BLOCKS", include_str!("../../shaders/attention_blocks.wgsl"));

/// An attention shader with the shared `Params` where it says so.
fn with_params(template: &str) -> String {
    shader::include(template, &[ATTENTION_PARAMS])
}

/// A forward shader with the shared `Params` and forward parts.
fn forward_source(template: &str) -> String {
    shader::include(
        template,
        &[ATTENTION_PARAMS, ATTENTION_FORWARD_COMMON, ATTENTION_BLOCKS],
    )
}

pub fn shaders() -> [ShaderSource; 7] {
    let rows = [
        ("QUERY_WG", QUERY_WG),
        ("KEY_BLOCK", KEY_BLOCK),
        ("MAX_HEAD_DIM", MAX_HEAD_DIM),
    ];
    [
        ShaderSource::new(
            "attention_forward.wgsl",
            &forward_source(include_str!("../../shaders/attention_forward.wgsl")),
            &rows,
        )
        .bind(FORWARD_BINDINGS, params_layout()),
        ShaderSource::new(
            "attention_forward_tiled.wgsl",
            &forward_source(include_str!("../../shaders/attention_forward_tiled.wgsl")),
            &rows,
        )
        .bind(FORWARD_BINDINGS, params_layout()),
        ShaderSource::new(
            "attention_forward_combine.wgsl",
            &with_params(include_str!("../../shaders/attention_forward_combine.wgsl")),
            &[rows[0], rows[2]],
        )
        .bind(
            &[
                ("out", Access::ReadWrite),
                ("lse", Access::ReadWrite),
                ("entropy_bits", Access::ReadWrite),
                ("state", Access::Read),
            ],
            params_layout(),
        ),
        ShaderSource::new(
            "attention_backward_delta.wgsl",
            &with_params(include_str!("../../shaders/attention_backward_delta.wgsl")),
            &rows[..1],
        )
        .bind(
            &[
                ("rowstats", Access::ReadWrite),
                ("dout", Access::Read),
                ("out", Access::Read),
                ("lse", Access::Read),
            ],
            params_layout(),
        ),
        ShaderSource::new(
            "attention_backward_dq.wgsl",
            &with_params(include_str!("../../shaders/attention_backward_dq.wgsl")),
            &[rows[0], rows[2]],
        )
        .bind(DQ_BINDINGS, params_layout()),
        ShaderSource::new(
            "attention_backward_dkdv.wgsl",
            &with_params(include_str!("../../shaders/attention_backward_dkdv.wgsl")),
            &[rows[0], rows[2]],
        )
        .bind(DKDV_BINDINGS, params_layout()),
        ShaderSource::new(
            "attention_backward_dscale.wgsl",
            &shader::include(
                include_str!("../../shaders/attention_backward_dscale.wgsl"),
                &[ATTENTION_PARAMS, shader::WORKGROUP_REDUCE],
            ),
            &[("ROW_WG", ROW_WG)],
        )
        .bind(
            &[("d_head_scales", Access::ReadWrite), ("dscale_partials", Access::Read)],
            params_layout(),
        ),
    ]
}

/// Scratch of the whole-sequence forward and backward (the engine keeps
/// its own, per row chunk): forward_state (H, T, 3) holds
/// (m, Z, E) between the forward's dispatches, rowstats (H, T, 2) the
/// backward's (lse, D), dscale_partials (H, T) each row's share of its
/// head's scale gradient.
#[derive(Debug)]
pub struct AttentionScratch {
    pub forward_state: wgpu::Buffer,
    pub rowstats: wgpu::Buffer,
    pub dscale_partials: wgpu::Buffer,
}

impl AttentionScratch {
    /// Enough for `attn` over `shape`'s heads and sequences up to `shape.t`
    /// long.
    pub async fn new(ctx: &GpuContext, attn: &Attention, shape: AttnShape) -> Result<Self> {
        let AttnShape { t, heads, .. } = shape;
        Ok(AttentionScratch {
            forward_state: ctx.zeros("attention forward state", attn.state_len(ctx, shape)).await?,
            rowstats: ctx.zeros("attention rowstats", 2 * heads * t).await?,
            dscale_partials: ctx.zeros("attention dscale partials", heads * t).await?,
        })
    }
}

#[derive(Debug)]
pub struct Attention {
    rows_layout: wgpu::BindGroupLayout,
    forward_rows: wgpu::ComputePipeline,
    tiled_layout: wgpu::BindGroupLayout,
    forward_tiled: wgpu::ComputePipeline,
    /// The second step of the flash forward with split keys.
    combine: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    delta_layout: wgpu::BindGroupLayout,
    delta: wgpu::ComputePipeline,
    dq_layout: wgpu::BindGroupLayout,
    dq: wgpu::ComputePipeline,
    dkdv_layout: wgpu::BindGroupLayout,
    dkdv: wgpu::ComputePipeline,
    dscale_layout: wgpu::BindGroupLayout,
    dscale: wgpu::ComputePipeline,
    /// The flash kernels, once built for a head dim (`build_flash`).
    flash: Option<FlashKernels>,
    /// The forward's kernel; `Rows` unless changed (tests run all three;
    /// the engine picks `Flash`).
    pub form: ForwardForm,
    /// The backward's dq and dk, dv kernels; `Rows` unless changed.
    pub backward_form: BackwardForm,
    /// When the flash forward splits a sequence's keys across workgroups;
    /// `KeySplit::NONE` unless changed (the engine splits on real GPUs).
    pub key_split: KeySplit,
    /// Loop iterations one invocation may run, which sets how many keys
    /// (or query rows) one dispatch covers: `CPU_LOOP_BUDGET` on a CPU
    /// adapter, else `GPU_LOOP_BUDGET`. Tests lower it to split small T.
    pub loop_budget: u64,
}

impl Attention {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let limit = ctx.limits().max_storage_buffers_per_shader_stage;
        if limit < MAX_STORAGE_BINDINGS {
            return Err(Error::Limit {
                adapter: ctx.adapter(),
                what: "attention".into(),
                needed: MAX_STORAGE_BINDINGS as u64,
                limit: limit as u64,
                limit_name: "storage buffers per shader stage",
            });
        }
        let [rows_src, tiled_src, combine_src, delta_src, dq_src, dkdv_src, dscale_src] = shaders();
        let (rows_layout, forward_rows) = build_one(ctx, &rows_src, "attention_forward").await?;
        let (tiled_layout, forward_tiled) = build_one(ctx, &tiled_src, "attention_forward_tiled").await?;
        let combine = build_one(ctx, &combine_src, "attention_forward_combine").await?;
        let (delta_layout, delta) = build_one(ctx, &delta_src, "attention_backward_delta").await?;
        let (dq_layout, dq) = build_one(ctx, &dq_src, "attention_backward_dq").await?;
        let (dkdv_layout, dkdv) = build_one(ctx, &dkdv_src, "attention_backward_dkdv").await?;
        let (dscale_layout, dscale) = build_one(ctx, &dscale_src, "attention_backward_dscale").await?;
        Ok(Attention {
            rows_layout,
            forward_rows,
            tiled_layout,
            forward_tiled,
            combine,
            delta_layout,
            delta,
            dq_layout,
            dq,
            dkdv_layout,
            dkdv,
            dscale_layout,
            dscale,
            flash: None,
            form: ForwardForm::Rows,
            backward_form: BackwardForm::Rows,
            key_split: KeySplit::NONE,
            loop_budget: if ctx.report().is_cpu {
                CPU_LOOP_BUDGET
            } else {
                GPU_LOOP_BUDGET
            },
        })
    }

    /// Builds the flash kernels for head dim `hd` with `wg` query rows (or
    /// keys) per workgroup (`FLASH_WG` unless a probe asks otherwise) and
    /// makes the forward's form `Flash` (the backward's stays as it is).
    /// Their calls must then have this head dim.
    pub async fn build_flash(&mut self, ctx: &GpuContext, hd: usize, wg: u32) -> Result<()> {
        if hd == 0 || hd > MAX_HEAD_DIM as usize {
            return Err(Error::Shape {
                op: "attention_forward_flash",
                message: format!("head dim {hd}: the flash kernels are built for 1 to {MAX_HEAD_DIM}"),
            });
        }
        let hd = hd as u32;
        let bytes = ctx.limits().max_compute_workgroup_storage_size;
        let key_tile = flash_key_block(hd, bytes);
        let [forward, dq, dkdv] = flash_shaders(hd, wg, key_tile, flash_row_block(hd, bytes));
        self.flash = Some(FlashKernels {
            hd,
            wg,
            key_tile,
            forward: build_one(ctx, &forward, "attention_forward_flash").await?,
            dq: build_one(ctx, &dq, "attention_backward_dq_flash").await?,
            dkdv: build_one(ctx, &dkdv, "attention_backward_dkdv_flash").await?,
        });
        self.form = ForwardForm::Flash;
        Ok(())
    }

    /// The flash kernels for `shape`'s head dim, or the error `op` returns
    /// without them.
    fn flash_for(&self, op: &'static str, shape: AttnShape) -> Result<&FlashKernels> {
        match &self.flash {
            Some(f) if f.hd as usize == shape.hd => Ok(f),
            f => Err(Error::Shape {
                op,
                message: match f {
                    Some(f) => format!("the flash kernels were built for head dim {}, not {}", f.hd, shape.hd),
                    None => "the flash kernels were not built (Attention::build_flash)".into(),
                },
            }),
        }
    }

    /// The forms in use, for a benchmark's record: e.g. "attention: Flash
    /// forward (head dim 32, 64 rows per workgroup), keys split up to 512
    /// workgroups of at least 128 keys; Flash backward".
    pub fn describe(&self) -> String {
        let built = match &self.flash {
            Some(f) if self.form == ForwardForm::Flash || self.backward_form == BackwardForm::Flash => {
                format!(" (head dim {}, {} rows per workgroup)", f.hd, f.wg)
            }
            _ => String::new(),
        };
        let split = match self.key_split {
            KeySplit { workgroups: 0, .. } => "keys not split".to_string(),
            KeySplit { workgroups, min_keys } => {
                format!("keys split up to {workgroups} workgroups of at least {min_keys} keys")
            }
        };
        format!(
            "attention: {:?} forward{built}, {split}; {:?} backward",
            self.form, self.backward_form
        )
    }

    /// Keys (forward, dq) or query rows (dk, dv) one dispatch covers, so
    /// that no invocation loops more than `loop_budget` times. Each key
    /// costs at most 3 hd + 4 loop iterations per head it is scored for
    /// (`heads_per_key`: 1, or the group for dk, dv); setting up and
    /// writing out at most 6 hd + 16.
    pub fn pass_len(&self, hd: usize, heads_per_key: usize) -> usize {
        let per_key = (heads_per_key * (3 * hd + 4)) as u64;
        let fixed = (6 * hd + 16) as u64;
        (self.loop_budget.saturating_sub(fixed) / per_key).max(1) as usize
    }

    /// Keys per split of the flash forward over `span` (a multiple of its
    /// key tile), or None where it does not split (`KeySplit`; and where a
    /// split would pass the loop budget). The partial sums of all splits
    /// stay within one binding of `binding` bytes: fewer splits where they
    /// would not, none where two would not fit.
    fn split_len(&self, shape: AttnShape, span: AttnSpan, binding: u64) -> Option<usize> {
        let f = self.flash.as_ref().filter(|f| f.hd as usize == shape.hd)?;
        let whole = span.q_first == 0 && span.k_first == 0 && span.keys == span.rows;
        let KeySplit { workgroups, min_keys } = self.key_split;
        let blocks = shape.heads * span.rows.div_ceil(f.wg as usize);
        if self.form != ForwardForm::Flash || !whole || blocks == 0 || blocks >= workgroups {
            return None;
        }
        let tile = f.key_tile as usize;
        let per_split = (shape.heads * span.rows * (shape.hd + 3)) as u64 * 4;
        let fit = usize::try_from(binding / per_split).unwrap_or(usize::MAX);
        let splits = workgroups
            .div_ceil(blocks)
            .min(span.keys.div_ceil(min_keys.max(1)))
            .min(fit);
        if splits < 2 {
            return None;
        }
        let len = span.keys.div_ceil(splits).div_ceil(tile) * tile;
        // A workgroup walks `len` keys: within the loop budget, in one pass.
        (len < span.keys && len <= self.pass_len(shape.hd, 1)).then_some(len)
    }

    /// The forward's state buffer for `shape`: (H, T, 3) floats, or more
    /// where the flash forward splits the keys of a sequence of T tokens
    /// or fewer (a buffer made for T serves shorter sequences too): the
    /// largest (splits, H, T', hd + 3) partial sums for T' up to T, found
    /// by walking T' up to where the blocks alone make
    /// `KeySplit::workgroups` (`KeySplit::state_bound` bounds it).
    pub fn state_len(&self, ctx: &GpuContext, shape: AttnShape) -> usize {
        let binding = ctx.limits().max_storage_buffer_binding_size;
        let AttnShape { t, heads, .. } = shape;
        let last = match &self.flash {
            Some(f) if self.key_split.workgroups > 0 => t.min(f.wg as usize * self.key_split.workgroups / heads.max(1)),
            _ => 0,
        };
        let split = (1..=last)
            .filter_map(|t| {
                Some(split_state_len(
                    shape,
                    t,
                    self.split_len(shape, AttnSpan::whole(t), binding)?,
                ))
            })
            .max();
        split.unwrap_or(0).max(3 * heads * t)
    }

    /// The shaders' parameters for `span` of a sequence of `shape.t`
    /// tokens, after checking both.
    fn params(op: &'static str, shape: AttnShape, span: AttnSpan) -> Result<AttnParams> {
        let AttnShape { t, heads, kv_heads, hd } = shape;
        if kv_heads == 0 || heads % kv_heads != 0 || hd == 0 || hd > MAX_HEAD_DIM as usize {
            return Err(Error::Shape {
                op,
                message: format!(
                    "{heads} heads over {kv_heads} KV heads of dim {hd}: the KV heads must divide the heads, \
                     and the head dim be 1 to {MAX_HEAD_DIM}"
                ),
            });
        }
        let AttnSpan {
            q_first,
            rows,
            k_first,
            keys,
        } = span;
        if q_first + rows > t || k_first + keys > q_first + rows || (rows > 0 && keys == 0) {
            return Err(Error::Shape {
                op,
                message: format!(
                    "query rows {q_first}..{} and keys {k_first}..{} of a sequence of {t}: the rows must lie in \
                     the sequence and the keys end at or before them",
                    q_first + rows,
                    k_first + keys
                ),
            });
        }
        shader::to_u32(op, "t * heads * hd", t as u64 * heads as u64 * hd as u64)?;
        shader::to_u32(op, "3 * heads * t", 3 * heads as u64 * t as u64)?;
        Ok(AttnParams {
            rows: rows as u32,
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            hd: hd as u32,
            group: (heads / kv_heads) as u32,
            inv_sqrt_hd: (1.0 / (hd as f64).sqrt()) as f32,
            begin: k_first as u32,
            end: (k_first + keys) as u32,
            q_first: q_first as u32,
            k_first: k_first as u32,
            keys: keys as u32,
            accumulate: 0,
            split: 0,
        })
    }

    /// out (T, H*hd), lse (H, T) and entropy_bits (H, T), overwritten, from
    /// q (T, H*hd), k, v (T, KV*hd) and head_scales (H); `scratch` from
    /// `AttentionScratch::new(ctx, H, T)` (or larger).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        out: &wgpu::Buffer,
        lse: &wgpu::Buffer,
        entropy_bits: &wgpu::Buffer,
        scratch: &AttentionScratch,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        head_scales: &wgpu::Buffer,
        shape: AttnShape,
    ) -> Result<()> {
        self.forward_span(
            ctx,
            encoder,
            out,
            lse,
            entropy_bits,
            &scratch.forward_state,
            q,
            k,
            v,
            head_scales,
            shape,
            AttnSpan::whole(shape.t),
        )
    }

    /// The forward for the query rows of `span` over its keys: out
    /// (rows, H*hd), lse and entropy_bits (H, rows) from q (rows, H*hd), k,
    /// v (keys, KV*hd), with state (H, rows, 3) carried between calls. Call
    /// it for the key chunks 0, 1, .. of a query chunk in order, the last
    /// being the chunk's own keys: its rows are done when the call holding
    /// their own key returns.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_span(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        out: &wgpu::Buffer,
        lse: &wgpu::Buffer,
        entropy_bits: &wgpu::Buffer,
        state: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        head_scales: &wgpu::Buffer,
        shape: AttnShape,
        span: AttnSpan,
    ) -> Result<()> {
        let op = "attention_forward";
        let base = Self::params(op, shape, span)?;
        let heads = shape.heads;
        let AttnSpan {
            q_first, rows, keys, ..
        } = span;
        let (qn, kvn, stats) = span_sizes(shape, span);
        let split_len = self.split_len(shape, span, ctx.limits().max_storage_buffer_binding_size);
        let state_len = split_len.map_or(3 * stats, |len| split_state_len(shape, rows, len));
        let storage = [
            ("out", out, qn),
            ("lse", lse, stats),
            ("entropy_bits", entropy_bits, stats),
            ("forward_state", state, state_len),
            ("q", q, qn),
            ("k", k, kvn),
            ("v", v, kvn),
            ("head_scales", head_scales, heads),
        ];
        for (name, buffer, len) in storage {
            ctx.check_binding(op, name, buffer, len)?;
        }
        if stats == 0 {
            return Ok(());
        }
        let storage = storage.map(|(_, buffer, len)| (buffer, len));
        if let Some(len) = split_len {
            // The flash forward per (block, head, split), then the merge per
            // (row, head); one pass over the whole sequence (`split_len`).
            let f = self.flash_for(op, shape)?;
            let params = AttnParams {
                begin: 0,
                end: keys as u32,
                split: len as u32,
                ..base
            };
            let params = ctx.uniform("attention_forward params", &params);
            let splits = rows.div_ceil(len) as u64;
            let workgroups = heads as u64 * (rows as u64).div_ceil(f.wg as u64) * splits;
            let bind_group = ctx.bind("attention_forward bind group", &f.forward.0, &storage, &params);
            ctx.dispatch(encoder, op, &f.forward.1, &bind_group, ctx.grid(op, workgroups)?);
            let op = "attention_forward_combine";
            let (layout, pipeline) = &self.combine;
            let bind_group = ctx.bind("attention_forward_combine bind group", layout, &storage[..4], &params);
            let workgroups = ctx.grid(op, (stats as u64).div_ceil(QUERY_WG as u64))?;
            ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
            return Ok(());
        }
        let wg = QUERY_WG as u64;
        for (begin, end) in passes(span.k_first, span.k_first + keys, self.pass_len(shape.hd, 1)) {
            let params = AttnParams {
                begin: begin as u32,
                end: end as u32,
                ..base
            };
            // The bound rows from `lo` on see keys of this pass. Rows: one
            // invocation per (row, head); Tiled: one workgroup per (block
            // of QUERY_WG rows, head) from the block holding row `lo`.
            let lo = begin.max(q_first) - q_first;
            // Tiled and Flash: whole blocks of `block` rows per head.
            let blocks = |block: u64| heads as u64 * ((rows as u64).div_ceil(block) - lo as u64 / block);
            let (layout, pipeline, workgroups) = match self.form {
                ForwardForm::Rows => (
                    &self.rows_layout,
                    &self.forward_rows,
                    ((heads * (rows - lo)) as u64).div_ceil(wg),
                ),
                ForwardForm::Tiled => (&self.tiled_layout, &self.forward_tiled, blocks(wg)),
                ForwardForm::Flash => {
                    let f = self.flash_for(op, shape)?;
                    (&f.forward.0, &f.forward.1, blocks(f.wg as u64))
                }
            };
            let params = ctx.uniform("attention_forward params", &params);
            let bind_group = ctx.bind("attention_forward bind group", layout, &storage, &params);
            let workgroups = ctx.grid(op, workgroups)?;
            ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
        }
        Ok(())
    }

    /// dq (T, H*hd), dk, dv (T, KV*hd) and d_head_scales (H), overwritten,
    /// from dout (T, H*hd), the forward's inputs, out and lse; `scratch`
    /// from `AttentionScratch::new(ctx, H, T)` (or larger).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dq: &wgpu::Buffer,
        dk: &wgpu::Buffer,
        dv: &wgpu::Buffer,
        d_head_scales: &wgpu::Buffer,
        scratch: &AttentionScratch,
        dout: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        out: &wgpu::Buffer,
        lse: &wgpu::Buffer,
        head_scales: &wgpu::Buffer,
        shape: AttnShape,
    ) -> Result<()> {
        let span = AttnSpan::whole(shape.t);
        let (rowstats, partials) = (&scratch.rowstats, &scratch.dscale_partials);
        self.backward_rowstats(ctx, encoder, rowstats, dout, out, lse, shape, span.rows)?;
        self.backward_dq(
            ctx,
            encoder,
            dq,
            partials,
            dout,
            q,
            k,
            v,
            rowstats,
            head_scales,
            shape,
            span,
        )?;
        self.backward_dscale(ctx, encoder, d_head_scales, partials, shape, span.rows, false)?;
        self.backward_dkdv(ctx, encoder, dk, dv, dout, q, k, v, rowstats, head_scales, shape, span)
    }

    /// Backward step 1 for `rows` query rows: rowstats (H, rows, 2) =
    /// (lse, D = dout . out) from dout, out (rows, H*hd) and lse (H, rows).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_rowstats(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        rowstats: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        out: &wgpu::Buffer,
        lse: &wgpu::Buffer,
        shape: AttnShape,
        rows: usize,
    ) -> Result<()> {
        let op = "attention_backward_delta";
        let span = AttnSpan {
            q_first: 0,
            rows,
            k_first: 0,
            keys: rows,
        };
        let params = Self::params(op, shape, span)?;
        let (qn, stats) = (rows * shape.heads * shape.hd, shape.heads * rows);
        let storage = [
            ("rowstats", rowstats, 2 * stats),
            ("dout", dout, qn),
            ("out", out, qn),
            ("lse", lse, stats),
        ];
        for (name, buffer, len) in storage {
            ctx.check_binding(op, name, buffer, len)?;
        }
        if stats == 0 {
            return Ok(());
        }
        let params = ctx.uniform("attention_backward_delta params", &params);
        let bind_group = ctx.bind(
            "attention_backward_delta bind group",
            &self.delta_layout,
            &storage.map(|(_, buffer, len)| (buffer, len)),
            &params,
        );
        let workgroups = ctx.grid(op, (stats as u64).div_ceil(QUERY_WG as u64))?;
        ctx.dispatch(encoder, op, &self.delta, &bind_group, workgroups);
        Ok(())
    }

    /// Backward step 2 for the query rows of `span` over its keys: dq
    /// (rows, H*hd) and each row's share of its head's scale gradient,
    /// dscale_partials (H, rows), from dout, q (rows, H*hd), k, v
    /// (keys, KV*hd) and step 1's rowstats. Call it for a query chunk's key
    /// chunks in order from key 0: the first call overwrites, the later add.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_dq(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dq: &wgpu::Buffer,
        dscale_partials: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        rowstats: &wgpu::Buffer,
        head_scales: &wgpu::Buffer,
        shape: AttnShape,
        span: AttnSpan,
    ) -> Result<()> {
        let op = "attention_backward_dq";
        let base = Self::params(op, shape, span)?;
        let (qn, _, stats) = span_sizes(shape, span);
        let storage = Self::gradient_bindings(
            ctx,
            op,
            [("dq", dq, qn), ("dscale_partials", dscale_partials, stats)],
            [dout, q, k, v, rowstats, head_scales],
            shape,
            span,
        )?;
        let AttnSpan {
            q_first,
            rows,
            k_first,
            keys,
        } = span;
        if rows == 0 {
            return Ok(());
        }
        // The keys split into passes; each covers the rows from its first
        // key on.
        for (begin, end) in passes(k_first, k_first + keys, self.pass_len(shape.hd, 1)) {
            let params = AttnParams {
                begin: begin as u32,
                end: end as u32,
                ..base
            };
            let lo = begin.max(q_first) - q_first;
            // Rows: one invocation per (row, head) from row `lo`; Flash:
            // one workgroup per (block of rows, head) from the block
            // holding it.
            let (layout, pipeline, workgroups) = match self.backward_form {
                BackwardForm::Rows => (
                    &self.dq_layout,
                    &self.dq,
                    ((shape.heads * (rows - lo)) as u64).div_ceil(QUERY_WG as u64),
                ),
                BackwardForm::Flash => {
                    let f = self.flash_for(op, shape)?;
                    let wg = f.wg as usize;
                    (&f.dq.0, &f.dq.1, (shape.heads * (rows.div_ceil(wg) - lo / wg)) as u64)
                }
            };
            let params = ctx.uniform("attention_backward_dq params", &params);
            let bind_group = ctx.bind("attention_backward_dq bind group", layout, &storage, &params);
            let workgroups = ctx.grid(op, workgroups)?;
            ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
        }
        Ok(())
    }

    /// Backward step 3 for the keys of `span` over its query rows: dk, dv
    /// (keys, KV*hd) from dout, q (rows, H*hd), k, v and step 1's rowstats
    /// of those rows. Call it for a key chunk's query chunks in order from
    /// its own: a key's sums start with the rows holding its own position
    /// and the later calls add.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_dkdv(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        dk: &wgpu::Buffer,
        dv: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        rowstats: &wgpu::Buffer,
        head_scales: &wgpu::Buffer,
        shape: AttnShape,
        span: AttnSpan,
    ) -> Result<()> {
        let op = "attention_backward_dkdv";
        let base = Self::params(op, shape, span)?;
        let (_, kvn, _) = span_sizes(shape, span);
        let storage = Self::gradient_bindings(
            ctx,
            op,
            [("dk", dk, kvn), ("dv", dv, kvn)],
            [dout, q, k, v, rowstats, head_scales],
            shape,
            span,
        )?;
        let AttnSpan {
            q_first,
            rows,
            k_first,
            keys,
        } = span;
        if rows == 0 {
            return Ok(());
        }
        // The query rows split into passes; each covers the bound keys
        // before its last row.
        let group = shape.heads / shape.kv_heads;
        for (begin, end) in passes(q_first, q_first + rows, self.pass_len(shape.hd, group)) {
            let params = AttnParams {
                begin: begin as u32,
                end: end as u32,
                ..base
            };
            let n = end.saturating_sub(k_first).min(keys);
            if n == 0 {
                continue;
            }
            // Rows: one invocation per (key, KV head); Flash: one workgroup
            // per (block of keys, KV head).
            let (layout, pipeline, workgroups) = match self.backward_form {
                BackwardForm::Rows => (
                    &self.dkdv_layout,
                    &self.dkdv,
                    ((shape.kv_heads * n) as u64).div_ceil(QUERY_WG as u64),
                ),
                BackwardForm::Flash => {
                    let f = self.flash_for(op, shape)?;
                    (
                        &f.dkdv.0,
                        &f.dkdv.1,
                        (shape.kv_heads * n.div_ceil(f.wg as usize)) as u64,
                    )
                }
            };
            let params = ctx.uniform("attention_backward_dkdv params", &params);
            let bind_group = ctx.bind("attention_backward_dkdv bind group", layout, &storage, &params);
            let workgroups = ctx.grid(op, workgroups)?;
            ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
        }
        Ok(())
    }

    /// Steps 2 and 3's bindings after checking them: their two outputs,
    /// then dout, q (rows, H*hd), k, v (keys, KV*hd), rowstats
    /// (H, rows, 2) and head_scales (H).
    fn gradient_bindings<'a>(
        ctx: &GpuContext,
        op: &'static str,
        outputs: [(&'static str, &'a wgpu::Buffer, usize); 2],
        [dout, q, k, v, rowstats, head_scales]: [&'a wgpu::Buffer; 6],
        shape: AttnShape,
        span: AttnSpan,
    ) -> Result<Vec<(&'a wgpu::Buffer, usize)>> {
        let (qn, kvn, stats) = span_sizes(shape, span);
        let mut storage = outputs.to_vec();
        storage.extend([
            ("dout", dout, qn),
            ("q", q, qn),
            ("k", k, kvn),
            ("v", v, kvn),
            ("rowstats", rowstats, 2 * stats),
            ("head_scales", head_scales, shape.heads),
        ]);
        for &(name, buffer, len) in &storage {
            ctx.check_binding(op, name, buffer, len)?;
        }
        Ok(storage.into_iter().map(|(_, buffer, len)| (buffer, len)).collect())
    }

    /// Backward step 4: d_head_scales (H) = the sum of dscale_partials
    /// (H, rows) over the rows / sqrt(hd), added to what is there with
    /// `accumulate` (a sequence's later row chunks).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_dscale(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        d_head_scales: &wgpu::Buffer,
        dscale_partials: &wgpu::Buffer,
        shape: AttnShape,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let op = "attention_backward_dscale";
        let span = AttnSpan {
            q_first: 0,
            rows,
            k_first: 0,
            keys: rows,
        };
        let params = AttnParams {
            accumulate: accumulate as u32,
            ..Self::params(op, shape, span)?
        };
        let heads = shape.heads;
        ctx.check_binding(op, "d_head_scales", d_head_scales, heads)?;
        ctx.check_binding(op, "dscale_partials", dscale_partials, heads * rows)?;
        if heads == 0 {
            return Ok(());
        }
        let params = ctx.uniform("attention_backward_dscale params", &params);
        let bind_group = ctx.bind(
            "attention_backward_dscale bind group",
            &self.dscale_layout,
            &[(d_head_scales, heads), (dscale_partials, heads * rows)],
            &params,
        );
        // one workgroup per head
        let workgroups = ctx.grid(op, heads as u64)?;
        ctx.dispatch(encoder, op, &self.dscale, &bind_group, workgroups);
        Ok(())
    }
}

/// The one pipeline of `src`, its entry point `entry`, and its layout.
async fn build_one(
    ctx: &GpuContext,
    src: &ShaderSource,
    entry: &str,
) -> Result<(wgpu::BindGroupLayout, wgpu::ComputePipeline)> {
    let (layout, mut pipelines) = shader::build(ctx, src, &[entry]).await?;
    Ok((layout, pipelines.remove(0)))
}

/// Floats of the split forward's partial sums over `rows` rows of
/// `shape`'s heads in splits of `len` keys: (splits, H, rows, hd + 3).
fn split_state_len(shape: AttnShape, rows: usize, len: usize) -> usize {
    rows.div_ceil(len) * shape.heads * rows * (shape.hd + 3)
}

/// The elements `span` binds: of q (and out, dq), of k (and v, dk, dv),
/// and of one (H, rows) stat.
fn span_sizes(shape: AttnShape, span: AttnSpan) -> (usize, usize, usize) {
    let AttnShape {
        heads, kv_heads, hd, ..
    } = shape;
    (span.rows * heads * hd, span.keys * kv_heads * hd, heads * span.rows)
}

/// [from, to) in consecutive ranges of at most `len`.
fn passes(from: usize, to: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
    (from..to)
        .step_by(len.max(1))
        .map(move |begin| (begin, (begin + len).min(to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_cover_t_in_order() {
        assert_eq!(passes(0, 10, 4).collect::<Vec<_>>(), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(passes(0, 3, 100).collect::<Vec<_>>(), vec![(0, 3)]);
        assert_eq!(passes(0, 0, 5).count(), 0);
        assert_eq!(passes(5, 12, 4).collect::<Vec<_>>(), vec![(5, 9), (9, 12)]);
    }

    /// The flash kernels validate for every kind of head dim (under a
    /// vec4, not a multiple of 4, the largest) with their workgroup sizes,
    /// and their tiles fit WebGPU's default 16 KiB of workgroup memory.
    #[test]
    fn flash_variants_validate_and_fit() {
        for hd in [1, 5, 8, 32, 63, 64, 128] {
            for wg in [32, FLASH_WG] {
                let (key_tile, row_tile) = (flash_key_block(hd, 16384), flash_row_block(hd, 16384));
                assert!(2 * 16 * hd.div_ceil(4) * key_tile <= 16384, "hd {hd}");
                assert!((2 * 16 * hd.div_ceil(4) + 8) * row_tile <= 16384, "hd {hd}");
                for src in flash_shaders(hd, wg, key_tile, row_tile) {
                    let module = src.validate().unwrap_or_else(|e| panic!("hd {hd} wg {wg}: {e}"));
                    assert_eq!(module.entry_points[0].workgroup_size, [wg, 1, 1]);
                }
            }
        }
        assert_eq!(flash_key_block(32, 16384), FLASH_KEY_BLOCK);
        assert_eq!(flash_key_block(128, 16384), 16);
        assert_eq!(flash_key_block(128, 49152), FLASH_KEY_BLOCK);
        assert_eq!(flash_row_block(128, 16384), 15);
        assert_eq!(flash_row_block(32, 16384), FLASH_KEY_BLOCK);
    }
}
