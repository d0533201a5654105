//! C = alpha op(A) op(B) + beta C in the three forms a `Linear` needs
//! (`shaders/matmul.wgsl`, `shaders/matmul_vec4.wgsl`): `nt` (forward, W stored (out, in)), `nn` (input
//! gradient), `tn` (weight gradient). The CPU twins are
//! `model::real::{matmul_nt, matmul_nn, matmul_tn}`, with the same argument
//! order: outputs, inputs, sizes, alpha, beta.
//!
//! The kernel form is chosen here, once: each invocation computes a 4 x 4
//! block of C in registers with no workgroup memory and no barriers. On
//! lavapipe that form was the fastest measured: 512^3 `nt` ran at ~6
//! GFLOP/s with vec4-typed loads, ~3.5 with vec4s built from scalar loads,
//! and ~0.5 as a 16 x 16 workgroup-memory tiled kernel (2 shared cores). So two shaders:
//! `matmul_vec4.wgsl` when the contiguous dimensions are multiples of 4
//! (every width of the model's weights), `matmul.wgsl` for any size
//! (`Matmul::variant` picks). A tiled kernel for real GPUs would be a third
//! variant picked in the same place.

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Recorder};
use super::error::Result;
use super::shader::{self, uniform_layout, Access, Elem, ShaderSource, Weight};

/// Rows and columns of C per invocation: the width of the shader's vec4
/// accumulators, so it cannot change without rewriting the shader.
pub const BLOCK: u32 = 4;
const _: () = assert!(BLOCK == 4, "matmul.wgsl holds one block row in one vec4");

/// Invocations per workgroup side: a workgroup covers (WG_SIDE * BLOCK)^2
/// elements of C.
pub const WG_SIDE: u32 = 8;
/// Rows (and columns) of C per workgroup: a product's grid of rows holds at
/// most `max_compute_workgroups_per_dimension` of them, which caps the rows
/// of one product (`GpuEngine::page_rows` pages longer sequences).
pub const ROWS_PER_WORKGROUP: usize = (BLOCK * WG_SIDE) as usize;

/// Mirrors `Params` in matmul.wgsl field by field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub alpha: f32,
    pub beta: f32,
    pub lda: u32,
    pub a_off: u32,
    pub ldc: u32,
    pub c_off: u32,
}

/// A matrix inside a buffer: row r starts at f32 `offset + r * ld`. The
/// products read A and write C through one (dense when `ld` is the row's
/// length and `offset` 0), so a block of columns of a wider matrix (the
/// logits of one part of a split LM head) is an operand without a copy.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub ld: usize,
    pub offset: usize,
}

impl<'a> Strided<'a> {
    pub fn dense(buffer: &'a wgpu::Buffer, row: usize) -> Self {
        Strided {
            buffer,
            ld: row,
            offset: 0,
        }
    }

    /// f32s a binding must hold for `rows` rows of `cols`.
    fn extent(&self, rows: usize, cols: usize) -> usize {
        match rows {
            0 => 0,
            r => (r - 1) * self.ld + self.offset + cols,
        }
    }
}

pub fn shaders() -> [ShaderSource; 2] {
    let sizes = [("BLOCK", BLOCK), ("WG_SIDE", WG_SIDE)];
    const STORAGE: &[(&str, Access)] = &[("c", Access::ReadWrite), ("a", Access::Read), ("b", Access::Read)];
    let uniform = || uniform_layout!(MatmulParams: m, k, n, alpha, beta, lda, a_off, ldc, c_off);
    [
        ShaderSource::new("matmul.wgsl", include_str!("../../shaders/matmul.wgsl"), &sizes).bind(STORAGE, uniform()),
        ShaderSource::new(
            "matmul_vec4.wgsl",
            include_str!("../../shaders/matmul_vec4.wgsl"),
            &sizes,
        )
        .bind(STORAGE, uniform()),
    ]
}

/// The f16-weight variants of both shaders (B read as f16, sums in f32).
pub fn f16_shaders() -> [ShaderSource; 2] {
    let [general, vec4] = shaders();
    [
        general.with_f16_weights("matmul.wgsl (f16 weights)"),
        vec4.with_f16_weights("matmul_vec4.wgsl (f16 weights)"),
    ]
}

/// Which shader runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `matmul.wgsl`: any sizes.
    General,
    /// `matmul_vec4.wgsl`: contiguous dimensions multiples of 4.
    Vec4,
}

/// The index of each form's pipeline in `Pipelines::forms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Nt = 0,
    Nn = 1,
    Tn = 2,
}

const FORMS: [Form; 3] = [Form::Nt, Form::Nn, Form::Tn];

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Nt => "matmul_nt",
            Form::Nn => "matmul_nn",
            Form::Tn => "matmul_tn",
        }
    }

    fn vec4_name(self) -> &'static str {
        match self {
            Form::Nt => "matmul_nt_vec4",
            Form::Nn => "matmul_nn_vec4",
            Form::Tn => "matmul_tn_vec4",
        }
    }

    /// Whether the vec4 shader can read these operands: every dimension
    /// that is contiguous in A or B a multiple of 4, and A's stride and
    /// offset too (and none empty, since a vec4 binding holds at least one
    /// vec4).
    fn vec4_fits(self, m: usize, k: usize, n: usize, a: &Strided) -> bool {
        let contiguous_ok = match self {
            Form::Nt => k.is_multiple_of(4),
            Form::Nn => k.is_multiple_of(4) && n.is_multiple_of(4),
            Form::Tn => m.is_multiple_of(4) && n.is_multiple_of(4),
        };
        let a_ok = a.ld.is_multiple_of(4) && a.offset.is_multiple_of(4);
        contiguous_ok && a_ok && m > 0 && k > 0 && n > 0
    }

    /// A's rows and columns as stored: (m, k) for nt and nn, (k, m) for tn.
    fn a_shape(self, m: usize, k: usize) -> (usize, usize) {
        match self {
            Form::Nt | Form::Nn => (m, k),
            Form::Tn => (k, m),
        }
    }
}

/// One shader's layout and its pipelines, one per form (nt, nn, tn).
#[derive(Debug)]
struct Pipelines {
    layout: wgpu::BindGroupLayout,
    forms: [wgpu::ComputePipeline; 3],
}

impl Pipelines {
    async fn new(ctx: &GpuContext, source: &ShaderSource, entry_points: [&str; 3]) -> Result<Self> {
        let (layout, pipelines) = shader::build(ctx, source, &entry_points).await?;
        let forms = pipelines.try_into().expect("one pipeline per form");
        Ok(Pipelines { layout, forms })
    }
}

/// The pipelines of both shaders, built once.
#[derive(Debug)]
pub struct Matmul {
    general: Pipelines,
    vec4: Pipelines,
    /// The same for f16 weights, where the device has `shader-f16`.
    f16: Option<(Pipelines, Pipelines)>,
    /// Use the vec4 shader where it fits (the default); false forces the
    /// general one (for tests and measurements).
    pub prefer_vec4: bool,
}

impl Matmul {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        let [general, vec4] = shaders();
        Ok(Matmul {
            general: Pipelines::new(ctx, &general, FORMS.map(Form::name)).await?,
            vec4: Pipelines::new(ctx, &vec4, FORMS.map(Form::vec4_name)).await?,
            f16: match ctx.has_f16() {
                true => {
                    let [general, vec4] = f16_shaders();
                    Some((
                        Pipelines::new(ctx, &general, FORMS.map(Form::name)).await?,
                        Pipelines::new(ctx, &vec4, FORMS.map(Form::vec4_name)).await?,
                    ))
                }
                false => None,
            },
            prefer_vec4: true,
        })
    }

    /// The one place the kernel for a product is chosen.
    fn variant(&self, form: Form, m: usize, k: usize, n: usize, a: &Strided) -> Variant {
        if self.prefer_vec4 && form.vec4_fits(m, k, n, a) {
            Variant::Vec4
        } else {
            Variant::General
        }
    }

    /// C (m, n) = alpha A (m, k) B (n, k)^T + beta C.
    pub fn matmul_nt(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        c: &wgpu::Buffer,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let a_row = Form::Nt.a_shape(m, k).1;
        let (c, a) = (Strided::dense(c, n), Strided::dense(a, a_row));
        self.encode(ctx, encoder, Form::Nt, c, a, Weight::f32(b), m, k, n, alpha, beta)
    }

    /// C (m, n) = alpha A (m, k) B (k, n) + beta C.
    pub fn matmul_nn(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        c: &wgpu::Buffer,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let a_row = Form::Nn.a_shape(m, k).1;
        let (c, a) = (Strided::dense(c, n), Strided::dense(a, a_row));
        self.encode(ctx, encoder, Form::Nn, c, a, Weight::f32(b), m, k, n, alpha, beta)
    }

    /// C (m, n) = alpha A (k, m)^T B (k, n) + beta C.
    pub fn matmul_tn(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        c: &wgpu::Buffer,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let a_row = Form::Tn.a_shape(m, k).1;
        let (c, a) = (Strided::dense(c, n), Strided::dense(a, a_row));
        self.encode(ctx, encoder, Form::Tn, c, a, Weight::f32(b), m, k, n, alpha, beta)
    }

    /// C (m, n), a block of a wider matrix or dense, = alpha A (m, k)
    /// W (n, k)^T + beta C: the forward through a weight (f32 or f16), or
    /// through one part of a weight split by rows.
    pub fn matmul_nt_into(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        c: Strided,
        a: &wgpu::Buffer,
        b: Weight,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let a = Strided::dense(a, k);
        self.encode(ctx, encoder, Form::Nt, c, a, b, m, k, n, alpha, beta)
    }

    /// C (m, n) = alpha A (m, k) W (k, n) + beta C, A a block of a wider
    /// matrix or dense: the input gradient through a weight (f32 or f16),
    /// or through one part of a split weight.
    pub fn matmul_nn_from(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        c: &wgpu::Buffer,
        a: Strided,
        b: Weight,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let c = Strided::dense(c, n);
        self.encode(ctx, encoder, Form::Nn, c, a, b, m, k, n, alpha, beta)
    }

    fn encode(
        &self,
        ctx: &GpuContext,
        encoder: &mut Recorder,
        form: Form,
        c: Strided,
        a: Strided,
        b: Weight,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let op = form.name();
        // The largest flat index the shader forms must fit u32 too.
        let (a_rows, a_cols) = form.a_shape(m, k);
        if c.ld < n || a.ld < a_cols {
            return Err(super::error::Error::Shape {
                op,
                message: format!(
                    "row strides ({}, {}) shorter than the rows of C ({n}) and A ({a_cols})",
                    c.ld, a.ld
                ),
            });
        }
        let (c_len, a_len) = (c.extent(m, n), a.extent(a_rows, a_cols));
        shader::to_u32(op, "the extent of C", c_len as u64)?;
        shader::to_u32(op, "the extent of A", a_len as u64)?;
        shader::to_u32(op, "n * k", n as u64 * k as u64)?;
        ctx.check_binding(op, "c", c.buffer, c_len)?;
        ctx.check_binding(op, "a", a.buffer, a_len)?;
        let b_words = b.elem.words(n * k);
        ctx.check_binding(op, "b", b.buffer, b_words)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let params = MatmulParams {
            m: m as u32,
            k: k as u32,
            n: n as u32,
            alpha,
            beta,
            lda: a.ld as u32,
            a_off: a.offset as u32,
            ldc: c.ld as u32,
            c_off: c.offset as u32,
        };
        let pipelines = match (b.elem, self.variant(form, m, k, n, &a)) {
            (Elem::F32, Variant::General) => &self.general,
            (Elem::F32, Variant::Vec4) => &self.vec4,
            (Elem::F16, variant) => {
                let Some((general, vec4)) = &self.f16 else {
                    return Err(super::error::Error::Shape {
                        op,
                        message: format!("f16 weights, and {} has no shader-f16", ctx.adapter()),
                    });
                };
                match variant {
                    Variant::General => general,
                    Variant::Vec4 => vec4,
                }
            }
        };
        let params = ctx.uniform(&format!("{op} params"), &params);
        let bind_group = ctx.bind(
            &format!("{op} bind group"),
            &pipelines.layout,
            &[(c.buffer, c_len), (a.buffer, a_len), (b.buffer, b_words)],
            &params,
        );
        let per_workgroup = ROWS_PER_WORKGROUP as u64;
        let workgroups = ctx.grid_2d(
            op,
            (n as u64).div_ceil(per_workgroup),
            (m as u64).div_ceil(per_workgroup),
        )?;
        let pipeline = &pipelines.forms[form as usize];
        if ctx.profiling() {
            // timed per shape (`gpu::profile`)
            let label = format!("{op} {m}x{k}x{n}");
            ctx.dispatch(encoder, &label, pipeline, &bind_group, workgroups);
        } else {
            ctx.dispatch(encoder, op, pipeline, &bind_group, workgroups);
        }
        Ok(())
    }
}
