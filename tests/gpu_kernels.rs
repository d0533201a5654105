//! Every WGSL kernel against its CPU twin, on seeded random inputs whose
//! sizes are not multiples of the workgroup or block sizes (1, 7, 33, 65,
//! 129), on whatever adapter this machine has: lavapipe (Vulkan on the CPU)
//! in CI. With no adapter at all each test prints SKIP and passes; any other
//! failure to open the device or build a kernel fails.
//!
//! References are the CPU twins run in f64 on the same (f32) inputs, except
//! where the GPU promises the twin's exact f32 additions (embedding), which
//! are compared bit for bit with the f32 twin. Sizes stay small: lavapipe
//! runs at a few GFLOP/s.

use std::sync::OnceLock;

use nopescope::gpu::embedding::{TokenGroups, TokenGroupsBuffers};
use nopescope::gpu::matmul::Matmul;
use nopescope::gpu::{rmsnorm, Error, GpuContext, Kernels};
use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::ops;
use nopescope::model::real::{matmul_nn, matmul_nt, matmul_tn};
use nopescope::model::rng::Rng;
use pollster::block_on;

struct Gpu {
    ctx: GpuContext,
    kernels: Kernels,
}

/// One device and one set of pipelines for the whole file; None (after
/// printing why) only when the machine has no adapter.
fn gpu(test: &str) -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    let gpu = GPU
        .get_or_init(|| match GpuContext::new_default() {
            Ok(ctx) => {
                eprintln!("GPU kernel tests on {}", ctx.report());
                let kernels = block_on(Kernels::new(&ctx)).unwrap_or_else(|e| panic!("{e}"));
                Some(Gpu { ctx, kernels })
            }
            Err(Error::NoAdapter { message }) => {
                eprintln!("no GPU adapter on this machine ({message})");
                None
            }
            Err(e) => panic!("{e}"),
        })
        .as_ref();
    if gpu.is_none() {
        eprintln!("SKIP {test}: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    gpu
}

fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `assert_close`, after printing the worst absolute and relative errors
/// (seen with `--nocapture`; the report quotes them).
#[track_caller]
fn check(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    let (mut abs, mut rel) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let e = (g as f64 - w).abs();
        abs = abs.max(e);
        rel = rel.max(e / w.abs().max(1e-3));
    }
    eprintln!("{what}: worst |err| {abs:.2e}, worst relative (|ref| >= 1e-3) {rel:.2e}");
    assert_close(what, got, want, tol);
}

impl Gpu {
    fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        block_on(self.ctx.upload(label, data)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn read(&self, what: &str, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
        block_on(self.ctx.read_f32(what, buffer, len)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(&self, what: &str, record: impl FnOnce(&mut wgpu::CommandEncoder) -> nopescope::gpu::Result<()>) {
        block_on(self.ctx.submit(what, record)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// (m, k, n): edges of the 4 x 4 block and of the 32 x 32 workgroup tile,
/// k with and without a remainder of 4; the last five fit the vec4 shader
/// in one form or more (nt: k % 4 = 0; nn: k, n; tn: m, n).
const MATMUL_SHAPES: [(usize, usize, usize); 11] = [
    (1, 1, 1),
    (7, 5, 3),
    (33, 65, 7),
    (65, 33, 129),
    (129, 7, 65),
    (1, 129, 33),
    (4, 8, 12),
    (66, 64, 31),
    (33, 64, 36),
    (65, 32, 12),
    (12, 33, 8),
];

// Sums of k <= 129 products of standard normals, in f32 and in another
// order than the reference: the worst measured on lavapipe is 1.0e-5.
const MATMUL_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

#[derive(Clone, Copy, Debug)]
enum Form {
    Nt,
    Nn,
    Tn,
}

fn matmul_case(g: &Gpu, mm: &Matmul, form: Form, m: usize, k: usize, n: usize, alpha: f32, beta: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = normal(&mut rng, m * k);
    let b = normal(&mut rng, n * k);
    // beta = 0 must not read C: start it at NaN, the reference at 0.
    let c0 = if beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        normal(&mut rng, m * n)
    };
    let mut want: Vec<f64> = if beta == 0.0 { vec![0.0; m * n] } else { f64s(&c0) };
    let (a64, b64) = (f64s(&a), f64s(&b));
    let (al, be) = (alpha as f64, beta as f64);
    match form {
        Form::Nt => matmul_nt(&mut want, &a64, &b64, m, k, n, al, be),
        Form::Nn => matmul_nn(&mut want, &a64, &b64, m, k, n, al, be),
        Form::Tn => matmul_tn(&mut want, &a64, &b64, m, k, n, al, be),
    }
    let (cb, ab, bb) = (g.upload("c", &c0), g.upload("a", &a), g.upload("b", &b));
    g.run("matmul test", |enc| match form {
        Form::Nt => mm.matmul_nt(&g.ctx, enc, &cb, &ab, &bb, m, k, n, alpha, beta),
        Form::Nn => mm.matmul_nn(&g.ctx, enc, &cb, &ab, &bb, m, k, n, alpha, beta),
        Form::Tn => mm.matmul_tn(&g.ctx, enc, &cb, &ab, &bb, m, k, n, alpha, beta),
    });
    let got = g.read("c", &cb, m * n);
    check(
        &format!(
            "{form:?} m={m} k={k} n={n} alpha={alpha} beta={beta} vec4 allowed: {}",
            mm.prefer_vec4
        ),
        &got,
        &want,
        MATMUL_TOL,
    );
}

#[test]
fn matmul_three_forms_match_cpu() {
    let Some(g) = gpu("matmul_three_forms_match_cpu") else {
        return;
    };
    // The default (vec4 shader where it fits) and the general shader alone.
    let mut general_only = block_on(Matmul::new(&g.ctx)).unwrap();
    general_only.prefer_vec4 = false;
    for mm in [&g.kernels.matmul, &general_only] {
        for (i, &(m, k, n)) in MATMUL_SHAPES.iter().enumerate() {
            for form in [Form::Nt, Form::Nn, Form::Tn] {
                matmul_case(g, mm, form, m, k, n, 1.0, 0.0, 100 + i as u64);
                matmul_case(g, mm, form, m, k, n, -0.75, 0.5, 200 + i as u64);
            }
        }
    }
}

#[test]
fn matmul_with_k_zero_scales_c() {
    let Some(g) = gpu("matmul_with_k_zero_scales_c") else {
        return;
    };
    for form in [Form::Nt, Form::Nn, Form::Tn] {
        matmul_case(g, &g.kernels.matmul, form, 5, 0, 6, 1.0, 0.5, 7);
        matmul_case(g, &g.kernels.matmul, form, 4, 0, 8, 1.0, 0.5, 8);
    }
}

// Sums of squares and dot products over c <= 200 values, reduced as a
// tree, and dw over up to 129 rows in chunks: the worst measured on
// lavapipe is 6.2e-6 absolute (dw), 6.6e-7 elsewhere.
const NORM_TOL: Tolerance = Tolerance::new(1e-5, 1e-4);

#[test]
fn rmsnorm_forward_and_backward_match_cpu() {
    let Some(g) = gpu("rmsnorm_forward_and_backward_match_cpu") else {
        return;
    };
    let rmsnorm = &g.kernels.rmsnorm;
    let eps = 1e-5f32;
    // rows past one and two dw chunks (64 rows), columns past one workgroup (64).
    for (i, &(rows, c)) in [(1, 1), (7, 33), (65, 129), (129, 7), (3, 200), (64, 64)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(300 + i as u64);
        let x = normal(&mut rng, rows * c);
        let w: Vec<f32> = (0..c).map(|_| 1.0 + 0.1 * rng.normal() as f32).collect();
        let dout = normal(&mut rng, rows * c);
        let dx0 = normal(&mut rng, rows * c);
        let dw0 = normal(&mut rng, c);

        let (x64, w64) = (f64s(&x), f64s(&w));
        let mut out_ref = vec![0.0; rows * c];
        let mut rstd_ref = vec![0.0; rows];
        ops::rmsnorm_forward(&mut out_ref, &mut rstd_ref, &x64, &w64, c, eps as f64);
        let (mut dx_ref, mut dw_ref) = (f64s(&dx0), f64s(&dw0));
        ops::rmsnorm_backward(&mut dx_ref, Some(&mut dw_ref), &f64s(&dout), &x64, &rstd_ref, &w64, c);

        let xb = g.upload("x", &x);
        let wb = g.upload("w", &w);
        let out = block_on(g.ctx.zeros("out", rows * c)).unwrap();
        let rstd = block_on(g.ctx.zeros("rstd", rows)).unwrap();
        let doutb = g.upload("dout", &dout);
        let dx = g.upload("dx", &dx0);
        let dw = g.upload("dw", &dw0);
        let partials = block_on(g.ctx.zeros("dw partials", rmsnorm::dw_partials_len(rows, c))).unwrap();
        g.run("rmsnorm test", |enc| {
            rmsnorm.forward(&g.ctx, enc, &out, &rstd, &xb, &wb, rows, c, eps)?;
            rmsnorm.backward_dx(&g.ctx, enc, &dx, &doutb, &xb, &rstd, &wb, rows, c)?;
            rmsnorm.backward_dw(&g.ctx, enc, &dw, &partials, &doutb, &xb, &rstd, rows, c)
        });
        let what = format!("rows={rows} c={c}");
        check(
            &format!("rmsnorm out {what}"),
            &g.read("out", &out, rows * c),
            &out_ref,
            NORM_TOL,
        );
        check(
            &format!("rmsnorm rstd {what}"),
            &g.read("rstd", &rstd, rows),
            &rstd_ref,
            NORM_TOL,
        );
        check(
            &format!("rmsnorm dx {what}"),
            &g.read("dx", &dx, rows * c),
            &dx_ref,
            NORM_TOL,
        );
        check(&format!("rmsnorm dw {what}"), &g.read("dw", &dw, c), &dw_ref, NORM_TOL);
    }
}

/// The GPU makes the twin's additions in the twin's order: equal bit for bit.
const EXACT: Tolerance = Tolerance::new(0.0, 0.0);

fn embedding_case(g: &Gpu, t: usize, c: usize, vocab: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let embed = normal(&mut rng, vocab * c);
    // A few distinct ids so that most of them repeat.
    let distinct = vocab.min(1 + t / 3);
    let ids: Vec<u32> = (0..distinct).map(|_| rng.below(vocab) as u32).collect();
    let tokens: Vec<u32> = (0..t).map(|_| ids[rng.below(distinct)]).collect();
    let dout = normal(&mut rng, t * c);
    let dembed0 = normal(&mut rng, vocab * c);

    let mut out_ref = vec![0f32; t * c];
    ops::embedding_forward(&mut out_ref, &embed, &tokens, c);
    let mut dembed_ref = dembed0.clone();
    ops::embedding_backward(&mut dembed_ref, &dout, &tokens, c);

    let groups = TokenGroups::new(&tokens, vocab).unwrap();
    let groups = block_on(TokenGroupsBuffers::upload(&g.ctx, &groups)).unwrap();
    let embedb = g.upload("embed", &embed);
    let tokensb = g.upload("tokens", &tokens);
    let out = block_on(g.ctx.zeros("out", t * c)).unwrap();
    let doutb = g.upload("dout", &dout);
    let dembed = g.upload("dembed", &dembed0);
    let emb = &g.kernels.embedding;
    g.run("embedding test", |enc| {
        emb.forward(&g.ctx, enc, &out, &embedb, &tokensb, t, c, vocab)?;
        emb.backward(&g.ctx, enc, &dembed, &doutb, &groups, c, vocab)
    });
    let what = format!("t={t} c={c} vocab={vocab}");
    assert_close(
        &format!("embedding out {what}"),
        &g.read("out", &out, t * c),
        &out_ref,
        EXACT,
    );
    assert_close(
        &format!("embedding dembed {what}"),
        &g.read("dembed", &dembed, vocab * c),
        &dembed_ref,
        EXACT,
    );
}

#[test]
fn embedding_gather_and_scatter_add_match_cpu() {
    let Some(g) = gpu("embedding_gather_and_scatter_add_match_cpu") else {
        return;
    };
    for (i, &(t, c, vocab)) in [(1, 1, 1), (7, 33, 5), (129, 65, 33), (65, 7, 1000), (33, 129, 2)]
        .iter()
        .enumerate()
    {
        embedding_case(g, t, c, vocab, 400 + i as u64);
    }
}

/// More workgroups than one grid dimension holds (65535): the 2-D grid.
#[test]
fn embedding_past_one_grid_dimension() {
    let Some(g) = gpu("embedding_past_one_grid_dimension") else {
        return;
    };
    let c = nopescope::gpu::ELEMENT_WG as usize;
    let t = g.ctx.limits().max_compute_workgroups_per_dimension as usize + 77;
    embedding_case(g, t, c, 11, 500);
}

#[test]
fn a_buffer_too_small_is_a_shape_error() {
    let Some(g) = gpu("a_buffer_too_small_is_a_shape_error") else {
        return;
    };
    let small = g.upload("small", &[0f32; 6]);
    let e = block_on(g.ctx.submit("too small", |enc| {
        g.kernels
            .matmul
            .matmul_nt(&g.ctx, enc, &small, &small, &small, 2, 3, 4, 1.0, 0.0)
    }))
    .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(e.to_string().contains("`c` holds 6 elements, the sizes need 8"), "{e}");
}

/// A wgpu validation error inside `submit` comes back as Err naming the
/// adapter, not as wgpu's default panic.
#[test]
fn a_validation_error_is_returned() {
    let Some(g) = gpu("a_validation_error_is_returned") else {
        return;
    };
    let a = g.upload("a", &[1f32; 4]);
    let b = g.upload("b", &[0f32; 4]);
    let e = block_on(g.ctx.submit("misaligned copy", |enc| {
        // 3 bytes: copies must be multiples of 4.
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, 3);
        Ok(())
    }))
    .unwrap_err();
    assert!(matches!(e, Error::Validation { .. }), "{e}");
    assert!(e.to_string().contains(&g.ctx.report().name), "{e}");
    // The context stays usable.
    assert_eq!(g.read("a", &a, 4), vec![1.0; 4]);
}

/// After the device is gone, every call returns Err; none panics.
#[test]
fn a_lost_device_is_an_error() {
    if gpu("a_lost_device_is_an_error").is_none() {
        return;
    }
    let ctx = GpuContext::new_default().unwrap();
    let kernels = block_on(Kernels::new(&ctx)).unwrap();
    let x = block_on(ctx.upload("x", &[1f32; 16])).unwrap();
    ctx.device.destroy();
    let e = block_on(ctx.submit("after destroy", |enc| {
        kernels.matmul.matmul_nt(&ctx, enc, &x, &x, &x, 4, 4, 4, 1.0, 0.0)
    }))
    .unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e}");
    assert!(e.to_string().contains(&ctx.report().name), "{e}");
    let e = block_on(ctx.read_f32("x", &x, 16)).unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e}");
    assert!(block_on(Kernels::new(&ctx)).is_err());
    assert!(block_on(ctx.upload("y", &[1f32; 4])).is_err());
}

/// An error made outside any scope (here: a bind group that does not match
/// its layout) is returned by the next call, once, instead of panicking.
#[test]
fn an_error_outside_the_scopes_is_returned_once() {
    if gpu("an_error_outside_the_scopes_is_returned_once").is_none() {
        return;
    }
    let ctx = GpuContext::new_default().unwrap();
    let layout = ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("one uniform"),
        entries: &[wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }],
    });
    let _ = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("missing its entry"),
        layout: &layout,
        entries: &[],
    });
    let e = block_on(ctx.upload("x", &[1f32; 4])).unwrap_err();
    assert!(e.to_string().contains("outside any error scope"), "{e}");
    let x = block_on(ctx.upload("x", &[1f32; 4])).unwrap();
    assert_eq!(block_on(ctx.read_f32("x", &x, 4)).unwrap(), vec![1.0; 4]);
}

#[test]
fn the_adapter_report_names_the_limits() {
    let Some(g) = gpu("the_adapter_report_names_the_limits") else {
        return;
    };
    let r = g.ctx.report();
    let text = r.to_string();
    eprintln!("{text}");
    assert!(text.contains(&r.name) && text.contains("max storage binding"), "{text}");
    assert!(r.limits.max_storage_buffer_binding_size >= 128 << 20);
    assert!(r.limits.max_compute_invocations_per_workgroup >= 256);
    if r.name.contains("llvmpipe") {
        assert!(r.is_cpu, "lavapipe is a CPU adapter");
    }
}

/// GFLOP/s of each matmul form (information only; `--ignored --nocapture`).
#[test]
#[ignore]
fn matmul_speed() {
    let Some(g) = gpu("matmul_speed") else {
        return;
    };
    let (m, k, n) = (512, 512, 512);
    let mut rng = Rng::new(9);
    let a = g.upload("a", &normal(&mut rng, m * k));
    let b = g.upload("b", &normal(&mut rng, n * k));
    let c = block_on(g.ctx.zeros("c", m * n)).unwrap();
    let mut general_only = block_on(Matmul::new(&g.ctx)).unwrap();
    general_only.prefer_vec4 = false;
    for (mm, form) in [&g.kernels.matmul, &general_only]
        .into_iter()
        .flat_map(|mm| [Form::Nt, Form::Nn, Form::Tn].map(|f| (mm, f)))
    {
        let reps = 5;
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let start = std::time::Instant::now();
            g.run("matmul speed", |enc| match form {
                Form::Nt => mm.matmul_nt(&g.ctx, enc, &c, &a, &b, m, k, n, 1.0, 0.0),
                Form::Nn => mm.matmul_nn(&g.ctx, enc, &c, &a, &b, m, k, n, 1.0, 0.0),
                Form::Tn => mm.matmul_tn(&g.ctx, enc, &c, &a, &b, m, k, n, 1.0, 0.0),
            });
            g.ctx.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            best = best.min(start.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
        let shader = if mm.prefer_vec4 {
            "matmul_vec4.wgsl"
        } else {
            "matmul.wgsl"
        };
        eprintln!(
            "{shader} {form:?} {m}x{k}x{n}: {:.1} ms, {gflops:.2} GFLOP/s",
            best * 1e3
        );
    }
}
