//! The GPU engine, whole model forward and backward: against the committed
//! PyTorch fixtures with the CPU engine's tolerances
//! (tests/pytorch_fixture.rs), and against the CPU engine on random small
//! models (NoPE and RoPE, tied and untied, grouped-query heads, batches of
//! unequal lengths, the LM head in several chunks, and sequences paged
//! under a lowered max storage binding). Runs on whatever adapter this
//! machine has (lavapipe in CI); with no adapter at all each test prints
//! SKIP and passes. Sizes stay small: lavapipe runs at a few GFLOP/s.

mod common;

use std::sync::OnceLock;

use nopescope::gpu::attention::KeySplit;
use nopescope::gpu::{Error as GpuError, GpuContext, GpuEngine};
use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::CpuEngine;
use nopescope::model::head_scales::HeadScales;
use nopescope::model::optim::AdamWConfig;
use nopescope::model::params::Params;
use nopescope::model::rng::Rng;
use nopescope::model::{Engine, ForwardOptions, GradMode, LogitsRequest, ModelConfig, PositionEncoding};
use pollster::block_on;

/// One device for the whole file; None (after printing why) only when the
/// machine has no adapter.
fn context(test: &str) -> Option<GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    let ctx = CTX
        .get_or_init(|| match GpuContext::new_default() {
            Ok(ctx) => {
                eprintln!("GPU engine tests on {}", ctx.report());
                Some(ctx)
            }
            Err(GpuError::NoAdapter { message }) => {
                eprintln!("no GPU adapter on this machine ({message})");
                None
            }
            Err(e) => panic!("{e}"),
        })
        .clone();
    if ctx.is_none() {
        no_adapter(test);
    }
    ctx
}

fn gpu_engine(ctx: GpuContext, config: ModelConfig, params: Params<f32>) -> GpuEngine {
    block_on(GpuEngine::new(ctx, config, params)).unwrap_or_else(|e| panic!("{e}"))
}

/// `assert_close`, after printing the worst absolute and relative errors
/// (seen with `--nocapture`; the report quotes them).
#[track_caller]
fn check<B: Copy + Into<f64>>(what: &str, got: &[f32], want: &[B], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut abs, mut rel, mut used) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let w: f64 = w.into();
        let e = (g as f64 - w).abs();
        abs = abs.max(e);
        rel = rel.max(e / w.abs().max(1e-3));
        used = used.max(e / (tol.atol + tol.rtol * w.abs()).max(f64::MIN_POSITIVE));
    }
    eprintln!(
        "{what}: worst |err| {abs:.2e}, worst relative (|ref| >= 1e-3) {rel:.2e}, {:.0}% of the tolerance",
        used * 100.0
    );
    assert_close(what, got, want, tol);
}

/// tests/pytorch_fixture.rs on the GPU engine, same check, same tolerances.
fn fixture(variant: &str) {
    let Some(ctx) = context(variant) else {
        return;
    };
    common::check_engine_against_fixture(variant, |c, p| gpu_engine(ctx, c, p));
}

#[test]
fn gpu_nope_matches_pytorch() {
    fixture("tiny-nope");
}

#[test]
fn gpu_rope_matches_pytorch() {
    fixture("tiny-rope");
}

fn small_config(pe: PositionEncoding, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        intermediate_size: 44,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        vocab_size: 61,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: tied,
        training_length: 64,
        position_encoding: pe,
        bos_token_id: None,
    }
}

fn random_tokens(rng: &mut Rng, t: usize, vocab: usize) -> Vec<u32> {
    (0..t).map(|_| rng.below(vocab) as u32).collect()
}

fn random_scales(rng: &mut Rng, cfg: &ModelConfig) -> HeadScales {
    let mut hs = HeadScales::ones(cfg);
    for s in &mut hs.values {
        *s = 0.5 + 1.5 * rng.uniform() as f32;
    }
    hs
}

const LOSS_TOL: Tolerance = Tolerance::new(0.0, 1e-4);
const ENTROPY_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
// Logits of weights drawn with std 0.3 reach about 10; f32 products in
// another order differ by about 1e-5 there (worst measured on lavapipe
// 1.5e-5).
const LOGITS_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const GRAD_TOL: Tolerance = Tolerance::new(1e-6, 1e-3);

/// Two f32 engines' weight gradients: rtol 1e-3, with an absolute floor of
/// 1e-4 of the tensor's largest gradient for the entries that are sums of
/// cancelling terms (on lavapipe one embedding entry of 2.7e-5 differed by
/// 1.1e-6, where the tensor's largest is about 1e-2).
fn grad_tol(reference: &[f32]) -> Tolerance {
    let max = reference.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
    Tolerance::new(1e-4 * max, 1e-3)
}

/// A forward's loss, kept logits and entropy, against another engine's.
fn check_forward(name: &str, got: &nopescope::model::ForwardOutput, want: &nopescope::model::ForwardOutput) {
    check(
        &format!("{name} loss"),
        &[got.loss_sum as f32],
        &[want.loss_sum],
        LOSS_TOL,
    );
    check(
        &format!("{name} logits"),
        got.logits.as_ref().unwrap(),
        want.logits.as_ref().unwrap(),
        LOGITS_TOL,
    );
    check(
        &format!("{name} entropy"),
        got.entropy_bits.as_ref().unwrap(),
        want.entropy_bits.as_ref().unwrap(),
        ENTROPY_TOL,
    );
}

/// One comparison of the GPU engine with the CPU engine (`against_cpu`).
struct Case {
    name: &'static str,
    cfg: ModelConfig,
    seed: u64,
    /// Rows of logits per chunk at most (`GpuEngine::set_logit_rows`).
    logit_rows: usize,
    /// A lowered max storage binding in bytes (`set_binding_limit`), and
    /// the rows per page it must give the forward's sequence.
    paged: Option<(u64, usize)>,
    /// The forward's length; the batch holds it and these.
    t: usize,
    batch: &'static [usize],
    /// Rows of logits the forward keeps (the last ones).
    kept: usize,
    /// When the attention forward splits the keys, if not the adapter's
    /// default (`GpuEngine::set_key_split`).
    key_split: Option<KeySplit>,
}

impl Case {
    fn small(name: &'static str, cfg: ModelConfig, seed: u64, logit_rows: usize) -> Self {
        Case {
            name,
            cfg,
            seed,
            logit_rows,
            paged: None,
            t: 45,
            batch: &[17, 1, 30],
            kept: 7,
            key_split: None,
        }
    }
}

/// The GPU engine against the CPU engine on one random model: forward
/// (loss, logits of the last rows, entropy), head-scale gradients of a
/// frozen model, full gradients of a batch of unequal lengths, and two
/// AdamW steps then the weights read back. A paged case also checks the
/// forward and the full gradients against an unpaged GPU engine.
fn against_cpu(case: Case) {
    let Case {
        name,
        cfg,
        seed,
        logit_rows,
        paged,
        t,
        batch: lengths,
        kept,
        key_split,
    } = case;
    let Some(ctx) = context(name) else {
        return;
    };
    let params = Params::<f32>::random(&cfg, 0.3, seed);
    let mut cpu = CpuEngine::new(cfg.clone(), params.clone()).unwrap();
    let mut unpaged = paged.map(|_| gpu_engine(ctx.clone(), cfg.clone(), params.clone()));
    let mut gpu = gpu_engine(ctx, cfg.clone(), params);
    gpu.set_logit_rows(logit_rows);
    if let Some(key_split) = key_split {
        gpu.set_key_split(key_split);
    }
    if let Some((limit, page_rows)) = paged {
        gpu.set_binding_limit(limit);
        assert_eq!(gpu.page_rows_for(t), page_rows, "{name}: rows per page");
    }
    let mut rng = Rng::new(seed + 1);
    let hs = random_scales(&mut rng, &cfg);
    let tokens = random_tokens(&mut rng, t, cfg.vocab_size);
    let options = ForwardOptions {
        logits: LogitsRequest::Last(kept),
        entropy: true,
        ..Default::default()
    };
    let want = block_on(cpu.forward(&tokens, &hs, &options)).unwrap();
    let got = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
    assert_eq!((got.predictions, got.logits_rows), (t - 1, kept));
    check_forward(name, &got, &want);
    if let Some(unpaged) = &mut unpaged {
        let whole = block_on(unpaged.forward(&tokens, &hs, &options)).unwrap();
        check_forward(&format!("{name}, paged vs unpaged:"), &got, &whole);
    }
    // Plain forward: loss only.
    let plain = block_on(gpu.forward(&tokens, &hs, &ForwardOptions::default())).unwrap();
    assert!(plain.logits.is_none() && plain.entropy_bits.is_none());
    check(
        &format!("{name} plain loss"),
        &[plain.loss_sum as f32],
        &[want.loss_sum],
        LOSS_TOL,
    );

    let mut batch = vec![tokens.clone()];
    for &n in lengths {
        batch.push(random_tokens(&mut rng, n, cfg.vocab_size));
    }
    frozen_grads_agree(name, &mut cpu, &mut gpu, &batch, &hs);
    let want = block_on(cpu.gradients(&batch, &hs, GradMode::Full)).unwrap();
    let got = block_on(gpu.gradients(&batch, &hs, GradMode::Full)).unwrap();
    check(&format!("{name} full loss"), &[got.loss as f32], &[want.loss], LOSS_TOL);
    check(
        &format!("{name} full head-scale grads"),
        &got.head_scales,
        &want.head_scales,
        GRAD_TOL,
    );
    let (gw, ww) = (got.weights.unwrap(), want.weights.unwrap());
    let layout = cpu.params_ref().layout.clone();
    for t in &layout.tensors {
        check(
            &format!("{name} grad.{}", t.name),
            &gw[t.range()],
            &ww[t.range()],
            grad_tol(&ww[t.range()]),
        );
    }
    if let Some(unpaged) = &mut unpaged {
        let whole = block_on(unpaged.gradients(&batch, &hs, GradMode::Full)).unwrap();
        check(
            &format!("{name} head-scale grads, paged vs unpaged"),
            &got.head_scales,
            &whole.head_scales,
            GRAD_TOL,
        );
        let ww = whole.weights.unwrap();
        for t in &layout.tensors {
            check(
                &format!("{name} grad.{}, paged vs unpaged", t.name),
                &gw[t.range()],
                &ww[t.range()],
                grad_tol(&ww[t.range()]),
            );
        }
    }

    let opt = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        clip_norm: Some(0.5),
    };
    for step in 0..2 {
        let w = block_on(cpu.train_step(&batch, &hs, &opt, 1e-3)).unwrap();
        let g = block_on(gpu.train_step(&batch, &hs, &opt, 1e-3)).unwrap();
        check(
            &format!("{name} step {step} loss"),
            &[g.loss as f32],
            &[w.loss],
            LOSS_TOL,
        );
        check(
            &format!("{name} step {step} grad norm"),
            &[g.grad_norm as f32],
            &[w.grad_norm],
            GRAD_TOL,
        );
    }
    let got = block_on(gpu.params()).unwrap();
    let want = block_on(cpu.params()).unwrap();
    assert_eq!(got.layout, want.layout);
    // Two AdamW steps of lr 1e-3 move each weight by up to 2e-3, about
    // lr * m / sqrt(v) whatever the gradient's size: where a gradient is
    // near 0, its f32 rounding moves the step by a fraction of lr (worst
    // measured on lavapipe 3.6e-5). Allow a tenth of one step.
    check(
        &format!("{name} weights after 2 steps"),
        &got.data,
        &want.data,
        Tolerance::new(1e-4, 1e-5),
    );
}

#[test]
fn gpu_matches_cpu_nope_untied() {
    against_cpu(Case::small(
        "nope untied",
        small_config(PositionEncoding::None, false),
        11,
        1024,
    ));
}

/// The forward with the keys split across workgroups as on a real GPU
/// (splits of at least 128 keys: 3 at 300 tokens).
#[test]
fn gpu_matches_cpu_nope_split_keys() {
    against_cpu(Case {
        t: 300,
        key_split: Some(KeySplit::GPU),
        ..Case::small(
            "nope untied, keys split",
            small_config(PositionEncoding::None, false),
            14,
            1024,
        )
    });
}

/// The split forward's partial sums as large as a binding may be: at 300
/// tokens three splits of 4 heads of dim 8 need 158,400 bytes, over a max
/// storage binding of 105,600 (the whole 300 rows of the widest
/// activation, so no paging): the engine takes fewer splits, here two
/// (105,600 bytes), instead of refusing the binding.
#[test]
fn split_keys_fit_a_lowered_binding_limit() {
    against_cpu(Case {
        t: 300,
        key_split: Some(KeySplit::GPU),
        paged: Some((105_600, 300)),
        ..Case::small(
            "nope untied, keys split under a lowered binding limit",
            small_config(PositionEncoding::None, false),
            15,
            1024,
        )
    });
}

/// The engine names the attention forms it runs (for the bench's record),
/// and the key split follows `set_key_split`: off on a CPU adapter.
#[test]
fn the_engine_names_its_attention_forms() {
    let Some(ctx) = context("the_engine_names_its_attention_forms") else {
        return;
    };
    let cfg = small_config(PositionEncoding::None, false);
    let params = Params::<f32>::random(&cfg, 0.3, 15);
    let mut gpu = gpu_engine(ctx.clone(), cfg.clone(), params);
    let kernels = gpu.kernels().expect("the GPU engine has kernel forms");
    assert!(
        kernels.contains("Flash forward (head dim") && kernels.ends_with("Flash backward"),
        "{kernels}"
    );
    if ctx.report().is_cpu {
        assert!(kernels.contains("keys not split"), "{kernels}");
    }
    gpu.set_key_split(KeySplit::GPU);
    let kernels = gpu.kernels().unwrap();
    assert!(
        kernels.contains("keys split up to 512 workgroups of at least 128 keys"),
        "{kernels}"
    );
}

#[test]
fn gpu_matches_cpu_rope_tied_chunked_logits() {
    against_cpu(Case::small(
        "rope tied, logits in chunks of 16",
        small_config(PositionEncoding::Rope { theta: 10000.0 }, true),
        12,
        16,
    ));
}

#[test]
fn gpu_matches_cpu_nope_chunked_logits() {
    against_cpu(Case::small(
        "nope untied, logits in chunks of 7",
        small_config(PositionEncoding::None, false),
        13,
        7,
    ));
}

/// Narrow weights and wide activations, so that a lowered max storage
/// binding still holds every weight matrix (at most the (V, C) embedding:
/// 61 x 16 floats, 3904 bytes) while a few hundred tokens pass it in every
/// per-token buffer: the (T, 2F) gate/up (192 bytes a row, the widest),
/// the (T, C) stream and its gradient (64), q (128), k and v (32), the
/// attention's (H, T) stats (32 per stat), the (T, V) logits (244).
fn paged_config(pe: PositionEncoding, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 61,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: tied,
        training_length: 64,
        position_encoding: pe,
        bos_token_id: None,
    }
}

/// The frozen model's loss and head-scale gradients on `batch`: the GPU
/// engine's against the CPU engine's (no weight gradients asked, none
/// returned).
fn frozen_grads_agree(name: &str, cpu: &mut CpuEngine, gpu: &mut GpuEngine, batch: &[Vec<u32>], hs: &HeadScales) {
    let want = block_on(cpu.gradients(batch, hs, GradMode::HeadScalesOnly)).unwrap();
    let got = block_on(gpu.gradients(batch, hs, GradMode::HeadScalesOnly)).unwrap();
    assert_eq!(got.predictions, want.predictions, "{name}");
    assert!(got.weights.is_none(), "{name}");
    check(
        &format!("{name} frozen loss"),
        &[got.loss as f32],
        &[want.loss],
        LOSS_TOL,
    );
    check(
        &format!("{name} frozen head-scale grads"),
        &got.head_scales,
        &want.head_scales,
        GRAD_TOL,
    );
}

/// What a model's weights are checked by, however the GPU engine holds
/// them: on 45 random tokens the forward (loss, the last 9 logits,
/// entropy), and on a batch of two sequences the frozen model's loss and
/// head-scale gradients, against the CPU engine. Returns the inputs, for
/// the caller's own checks.
fn weights_agree(name: &str, cpu: &mut CpuEngine, gpu: &mut GpuEngine, cfg: &ModelConfig, seed: u64) -> Probe {
    let mut rng = Rng::new(seed);
    let hs = random_scales(&mut rng, cfg);
    let tokens = random_tokens(&mut rng, 45, cfg.vocab_size);
    let options = ForwardOptions {
        logits: LogitsRequest::Last(9),
        entropy: true,
        ..Default::default()
    };
    let want = block_on(cpu.forward(&tokens, &hs, &options)).unwrap();
    let got = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
    check_forward(name, &got, &want);
    let batch = vec![tokens.clone(), random_tokens(&mut rng, 30, cfg.vocab_size)];
    frozen_grads_agree(name, cpu, gpu, &batch, &hs);
    Probe {
        hs,
        tokens,
        options,
        batch,
    }
}

struct Probe {
    hs: HeadScales,
    tokens: Vec<u32>,
    options: ForwardOptions,
    batch: Vec<Vec<u32>>,
}

/// The (vocab, C) embedding and LM head split by rows across bindings, as
/// the paper's 1.1B model needs in a browser (262 MB each against 128
/// MiB): made on a context whose max storage binding is 4096 bytes, each
/// 301 x 16 matrix (19264 bytes) is 5 parts of 64 rows, the last 45; the
/// sequences are paged too (21 rows of gate/up per page). Forward (loss,
/// logits, entropy) and the head-scale gradients of the frozen model match
/// the CPU engine, the weights read back whole, and training is refused
/// with an error naming the split matrix.
#[test]
fn split_embedding_and_lm_head_match_cpu() {
    let Some(ctx) = context("split_embedding_and_lm_head_match_cpu") else {
        return;
    };
    for tied in [false, true] {
        let cfg = ModelConfig {
            vocab_size: 301,
            ..paged_config(PositionEncoding::None, tied)
        };
        let params = Params::<f32>::random(&cfg, 0.3, 70 + tied as u64);
        let mut cpu = CpuEngine::new(cfg.clone(), params.clone()).unwrap();
        let mut gpu = gpu_engine(ctx.clone().with_binding_limit(4096), cfg.clone(), params.clone());
        assert_eq!(gpu.page_rows_for(45), 21);
        let name = format!("split weights (tied {tied})");
        let Probe { hs, batch, .. } = weights_agree(&name, &mut cpu, &mut gpu, &cfg, 80);
        let read = block_on(gpu.params()).unwrap();
        assert_eq!(read.data, params.data, "{name}: the weights read back from their parts");
        // And when the whole model is larger than one buffer may be: read
        // piece by piece (it needed one buffer of the whole model).
        gpu.set_buffer_limit(4096);
        let read = block_on(gpu.params()).unwrap();
        assert_eq!(
            read.data, params.data,
            "{name}: the weights read back past the buffer limit"
        );

        let e = block_on(gpu.gradients(&batch, &hs, GradMode::Full)).unwrap_err();
        assert_eq!(e.kind(), nopescope::model::error::ErrorKind::DeviceLimit);
        let e = e.to_string();
        assert!(
            e.contains("model.embed_tokens.weight") && e.contains("5 bindings"),
            "{e}"
        );
        let e = block_on(gpu.train_step(&batch, &hs, &AdamWConfig::default(), 1e-3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("training needs each weight matrix in one binding"), "{e}");
    }
}

/// The weight matrices held in f16 (`GpuEngine::new_with(.., Elem::F16)`),
/// whole and split across bindings: forward (loss, logits, entropy) and the
/// frozen model's head-scale gradients match the CPU engine run on the same
/// weights rounded to f16, with the f32 engine's tolerances (the sums are
/// f32); the weights read back are the rounded ones; training is refused.
/// lavapipe offers shader-f16, so there its absence fails.
#[test]
fn f16_weights_match_cpu_on_the_rounded_weights() {
    let Some(ctx) = context("f16_weights_match_cpu_on_the_rounded_weights") else {
        return;
    };
    use nopescope::gpu::shader::Elem;
    if !ctx.has_f16() {
        assert!(!ctx.adapter().contains("llvmpipe"), "lavapipe offers shader-f16");
        eprintln!("SKIP: {} has no shader-f16", ctx.adapter());
        return;
    }
    for (tied, limit) in [(false, None), (true, Some(2048u64))] {
        let cfg = ModelConfig {
            vocab_size: 301,
            ..paged_config(PositionEncoding::None, tied)
        };
        let params = Params::<f32>::random(&cfg, 0.3, 90 + tied as u64);
        // The CPU engine's reference: the matrices rounded to f16, the
        // RMSNorm gains (kept f32 on the GPU) as they are.
        let mut rounded = params.clone();
        for t in params.layout.tensors.iter().filter(|t| !t.is_norm()) {
            for x in &mut rounded.data[t.range()] {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
        let mut cpu = CpuEngine::new(cfg.clone(), rounded.clone()).unwrap();
        let ctx = match limit {
            Some(bytes) => ctx.clone().with_binding_limit(bytes),
            None => ctx.clone(),
        };
        let mut gpu = block_on(GpuEngine::new_with(ctx, cfg.clone(), params, Elem::F16)).unwrap();
        let name = format!("f16 weights (tied {tied}, binding limit {limit:?})");
        let Probe {
            hs,
            tokens,
            options,
            batch,
        } = weights_agree(&name, &mut cpu, &mut gpu, &cfg, 91);
        assert_eq!(
            block_on(gpu.params()).unwrap().data,
            rounded.data,
            "{name}: the weights read back"
        );
        let e = block_on(gpu.train_step(&batch, &hs, &AdamWConfig::default(), 1e-3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("held in f16"), "{e}");

        // Weights already in f16 on the host (as `files::load_params_as`
        // reads a bf16 or f16 checkpoint): every value f16, the gains too.
        let halves: Vec<half::f16> = rounded.data.iter().map(|&x| half::f16::from_f32(x)).collect();
        let mut all_rounded = rounded.clone();
        for (x, h) in all_rounded.data.iter_mut().zip(&halves) {
            *x = h.to_f32();
        }
        let mut cpu = CpuEngine::new(cfg.clone(), all_rounded).unwrap();
        let ctx2 = match limit {
            Some(bytes) => context("f16").unwrap().with_binding_limit(bytes),
            None => context("f16").unwrap(),
        };
        let mut gpu = block_on(GpuEngine::new_from_f16(ctx2, cfg.clone(), halves)).unwrap();
        let want = block_on(cpu.forward(&tokens, &hs, &options)).unwrap();
        let got = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
        check_forward(&format!("{name}, from f16 on the host:"), &got, &want);
    }
    // A weight past f16's range is refused, naming it, not stored as inf.
    let cfg = paged_config(PositionEncoding::None, false);
    let mut params = Params::<f32>::random(&cfg, 0.3, 92);
    let t = params.layout.tensors.iter().find(|t| !t.is_norm()).unwrap().range();
    params.data[t.start + 5] = 70000.0;
    let e = block_on(GpuEngine::new_with(ctx.clone(), cfg, params, Elem::F16))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("70000") && e.contains("f16"), "{e}");
}

/// 203 tokens (not a multiple of the 64-invocation workgroups) under a
/// 4000-byte binding: pages of 4000 / 192 = 20 rows, the last of 3; no
/// (T, .) buffer of the forward's sequence fits one binding (k: 6496
/// bytes, gate/up 38976). Logits in chunks of 4000 / 244 = 16 rows, so
/// each page's head is 16 + 4 rows; every binding is checked against the
/// lowered limit, so one left unpaged fails the test.
#[test]
fn gpu_matches_cpu_nope_untied_paged() {
    against_cpu(Case {
        name: "nope untied, paged by 20 rows",
        cfg: paged_config(PositionEncoding::None, false),
        seed: 21,
        logit_rows: 1024,
        paged: Some((4000, 20)),
        t: 203,
        batch: &[150, 1, 41],
        kept: 198,
        key_split: None,
    });
}

/// RoPE (tables per page), tied embeddings and grouped heads under a
/// 5000-byte binding: pages of 26 rows (203 = 7 x 26 + 21), logits in
/// chunks of 7 within them (7 + 7 + 7 + 5).
#[test]
fn gpu_matches_cpu_rope_tied_paged() {
    against_cpu(Case {
        name: "rope tied, paged by 26 rows, logits in chunks of 7",
        cfg: paged_config(PositionEncoding::Rope { theta: 10000.0 }, true),
        seed: 22,
        logit_rows: 7,
        paged: Some((5000, 26)),
        t: 203,
        batch: &[97, 27],
        kept: 60,
        key_split: None,
    });
}

/// What paging cannot split is refused with an error naming the buffer,
/// its size and the limit, pointing at the CPU engine: a weight matrix past
/// the max storage binding (weights are bound whole), and logits asked for
/// whole past the max buffer size (they are read back in one piece). The
/// same sequence runs once the request fits.
#[test]
fn what_cannot_be_split_is_refused() {
    let Some(ctx) = context("what_cannot_be_split_is_refused") else {
        return;
    };
    let cfg = small_config(PositionEncoding::None, false);
    let params = Params::<f32>::random(&cfg, 0.3, 5);
    let hs = HeadScales::ones(&cfg);
    let tokens: Vec<u32> = (0..60).map(|i| i % 61).collect();
    let all = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: true,
        ..Default::default()
    };

    // The widest weight is gate and up together: (2F, C) = 88 x 32 floats.
    let mut gpu = gpu_engine(ctx.clone(), cfg.clone(), params.clone());
    gpu.set_binding_limit(10_000);
    let e = block_on(gpu.forward(&tokens, &hs, &ForwardOptions::default())).unwrap_err();
    // A typed kind a caller can act on (the CLI advises the CPU engine).
    assert_eq!(e.kind(), nopescope::model::error::ErrorKind::DeviceLimit);
    let e = e.to_string();
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight"), "{e}");
    assert!(e.contains("11264 bytes") && e.contains("10000 bytes"), "{e}");
    let e = block_on(gpu.gradients(std::slice::from_ref(&tokens), &hs, GradMode::HeadScalesOnly))
        .unwrap_err()
        .to_string();
    assert!(e.contains("11264 bytes"), "{e}");

    // 60 rows of 61 logits are 14640 bytes; the activations are paged
    // (12000 / 352 = 34 rows of gate/up).
    let mut gpu = gpu_engine(ctx, cfg.clone(), params.clone());
    gpu.set_binding_limit(12_000);
    gpu.set_buffer_limit(12_000);
    assert_eq!(gpu.page_rows_for(60), 34);
    let e = block_on(gpu.forward(&tokens, &hs, &all)).unwrap_err();
    assert_eq!(e.kind(), nopescope::model::error::ErrorKind::DeviceLimit);
    let e = e.to_string();
    assert!(
        e.contains("`logits`") && e.contains("14640") && e.contains("12000"),
        "{e}"
    );
    let last = ForwardOptions {
        logits: LogitsRequest::Last(40),
        entropy: true,
        ..Default::default()
    };
    let got = block_on(gpu.forward(&tokens, &hs, &last)).unwrap();
    let mut cpu = CpuEngine::new(cfg, params).unwrap();
    let want = block_on(cpu.forward(&tokens, &hs, &last)).unwrap();
    check(
        "logits of 40 rows under a 12000-byte buffer limit",
        got.logits.as_ref().unwrap(),
        want.logits.as_ref().unwrap(),
        LOGITS_TOL,
    );
}

/// Inputs are checked as the CPU engine checks them.
#[test]
fn bad_inputs_are_errors() {
    let Some(ctx) = context("bad_inputs_are_errors") else {
        return;
    };
    let cfg = small_config(PositionEncoding::None, false);
    let params = Params::<f32>::random(&cfg, 0.3, 5);
    let mut gpu = gpu_engine(ctx.clone(), cfg.clone(), params);
    let hs = HeadScales::ones(&cfg);
    let e = block_on(gpu.forward(&[1, 2, 99], &hs, &ForwardOptions::default()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("position 2"), "{e}");
    assert!(block_on(gpu.forward(&[], &hs, &ForwardOptions::default())).is_err());
    assert!(block_on(gpu.gradients(&[vec![1]], &hs, GradMode::Full)).is_err());
    let other = small_config(PositionEncoding::None, true);
    let wrong = Params::<f32>::random(&other, 0.3, 5);
    assert!(block_on(GpuEngine::new(ctx, cfg, wrong)).is_err());
}

/// Loss weights per prediction (some 0, or all but 5) and the per-position
/// scale rules, paged (pages of 20 rows, logits in chunks of 7): the
/// forward's weighted loss and per-prediction losses, and the weighted
/// gradients (frozen and full) against the CPU engine.
#[test]
fn loss_weights_and_scale_rules_match_cpu() {
    use nopescope::model::head_scales::ScaleRule;
    let Some(ctx) = context("loss weights and scale rules") else {
        return;
    };
    for (k, (pe, rule)) in [
        (PositionEncoding::None, ScaleRule::LogN { training_length: 16 }),
        (
            PositionEncoding::Rope { theta: 10000.0 },
            ScaleRule::Fitted {
                a: 0.3,
                training_length: 10,
            },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{pe:?} {rule:?}");
        let cfg = paged_config(pe, k == 1);
        let params = Params::<f32>::random(&cfg, 0.3, 40 + k as u64);
        let mut cpu = CpuEngine::new(cfg.clone(), params.clone()).unwrap();
        let mut gpu = gpu_engine(ctx.clone(), cfg.clone(), params);
        gpu.set_logit_rows(7);
        gpu.set_binding_limit(4000);
        let mut rng = Rng::new(50 + k as u64);
        let hs = random_scales(&mut rng, &cfg).with_rule(rule);
        let batch: Vec<Vec<u32>> = [83usize, 1, 41]
            .iter()
            .map(|&n| random_tokens(&mut rng, n, cfg.vocab_size))
            .collect();
        let weights: Vec<Vec<f32>> = batch
            .iter()
            .map(|s| {
                (0..s.len().saturating_sub(1))
                    .map(|i| if i % 4 == 0 { 0.0 } else { 2.0 * rng.uniform() as f32 })
                    .collect()
            })
            .collect();
        let options = ForwardOptions {
            entropy: true,
            losses: true,
            loss_weights: Some(weights[0].clone()),
            ..Default::default()
        };
        let want = block_on(cpu.forward(&batch[0], &hs, &options)).unwrap();
        let got = block_on(gpu.forward(&batch[0], &hs, &options)).unwrap();
        check(
            &format!("{name} weighted loss"),
            &[got.loss_sum as f32],
            &[want.loss_sum],
            LOSS_TOL,
        );
        assert!((got.weight_sum - want.weight_sum).abs() < 1e-9);
        check(
            &format!("{name} per-prediction losses"),
            got.losses.as_ref().unwrap(),
            want.losses.as_ref().unwrap(),
            LOSS_TOL,
        );
        check(
            &format!("{name} entropy"),
            got.entropy_bits.as_ref().unwrap(),
            want.entropy_bits.as_ref().unwrap(),
            ENTROPY_TOL,
        );
        // Every 4th weight 0 (runs of 3 scored rows across pages and logit
        // chunks), then a pass-key-like scoring: 5 rows of the first
        // sequence, none of the others (whole pages the LM head skips).
        let sparse: Vec<Vec<f32>> = weights
            .iter()
            .enumerate()
            .map(|(s, w)| {
                (0..w.len())
                    .map(|i| if s == 0 && (50..55).contains(&i) { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        for (mode, weights) in [
            (GradMode::HeadScalesOnly, &weights),
            (GradMode::Full, &weights),
            (GradMode::HeadScalesOnly, &sparse),
            (GradMode::Full, &sparse),
        ] {
            let want = block_on(cpu.weighted_gradients(&batch, Some(weights), &hs, mode)).unwrap();
            let got = block_on(gpu.weighted_gradients(&batch, Some(weights), &hs, mode)).unwrap();
            check(
                &format!("{name} {mode:?} loss"),
                &[got.loss as f32],
                &[want.loss],
                LOSS_TOL,
            );
            check(
                &format!("{name} {mode:?} head-scale grads"),
                &got.head_scales,
                &want.head_scales,
                GRAD_TOL,
            );
            if let (Some(gw), Some(ww)) = (got.weights, want.weights) {
                for t in &cpu.params_ref().layout.tensors {
                    check(
                        &format!("{name} grad.{}", t.name),
                        &gw[t.range()],
                        &ww[t.range()],
                        grad_tol(&ww[t.range()]),
                    );
                }
            }
        }
        // Weights that do not fit are refused by both engines alike.
        let short = vec![vec![1.0f32; 3]];
        for e in [
            block_on(cpu.weighted_gradients(&batch[..1], Some(&short), &hs, GradMode::HeadScalesOnly)).unwrap_err(),
            block_on(gpu.weighted_gradients(&batch[..1], Some(&short), &hs, GradMode::HeadScalesOnly)).unwrap_err(),
        ] {
            assert!(
                e.to_string().contains("3 loss weights for a sequence of 83 tokens"),
                "{e}"
            );
        }
    }
}

/// Without an adapter these tests fail (CI installs lavapipe, so a missing
/// adapter there is a broken machine, never a pass); a developer without
/// Vulkan may skip them with NOPESCOPE_ALLOW_NO_GPU=1.
fn no_adapter(test: &str) {
    if std::env::var_os("NOPESCOPE_ALLOW_NO_GPU").is_some() {
        eprintln!("SKIP {test}: no GPU adapter, and NOPESCOPE_ALLOW_NO_GPU is set");
    } else {
        panic!(
            "{test}: no GPU adapter; install mesa-vulkan-drivers (lavapipe), or set NOPESCOPE_ALLOW_NO_GPU=1 to skip"
        );
    }
}

/// The paper's checkpoint shapes (TinyLlama-NoPE-1.1B: hidden 2048, 32
/// heads, 4 KV heads, SwiGLU 5632, vocabulary 32000, untied) with 2 of its
/// 22 layers and random weights, written in the Hugging Face layout with
/// bf16 weights (438 MB): it loads, passes the memory check, and runs a
/// forward with entropy on both engines, which agree. On lavapipe (max
/// storage binding 128 MiB) the 262 MB embedding and LM head are each split
/// in two.
#[test]
fn paper_shapes_load_from_bf16_and_agree_between_engines() {
    let Some(ctx) = context("paper_shapes_load_from_bf16_and_agree_between_engines") else {
        return;
    };
    use nopescope::model::files;
    let cfg = ModelConfig {
        num_layers: 2,
        ..ModelConfig::tinyllama_nope()
    };
    let dir = std::env::temp_dir().join(format!("nopescope-paper-shapes-{}", std::process::id()));
    let bytes = files::save_random_bf16(&dir, &cfg, 0.02, 11).unwrap();
    let n = nopescope::model::ParamLayout::new(&cfg).total as u64;
    assert!(
        bytes >= 2 * n && bytes < 2 * n + 1_000_000,
        "{bytes} bytes for {n} bf16 values"
    );
    let memory = nopescope::lab::backend::check_memory_native(
        &dir,
        nopescope::lab::backend::Backend::Cpu,
        16,
        nopescope::gpu::shader::Elem::F32,
    );
    let m = files::load_model_dir(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let memory = memory.unwrap();
    assert!(memory.host_needed >= bytes + 4 * n, "{}", memory.summary());
    let m = m.unwrap();
    assert_eq!(m.config, cfg);
    assert!(m.tokenizer.is_none());

    let mut rng = Rng::new(12);
    let tokens = random_tokens(&mut rng, 16, cfg.vocab_size);
    let hs = random_scales(&mut rng, &cfg);
    let options = ForwardOptions {
        logits: LogitsRequest::Last(2),
        entropy: true,
        ..Default::default()
    };
    let mut cpu = CpuEngine::new(cfg.clone(), m.params.clone()).unwrap();
    let want = block_on(cpu.forward(&tokens, &hs, &options)).unwrap();
    drop(cpu);
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let mut gpu = gpu_engine(ctx.with_binding_limit(128 << 20), cfg.clone(), m.params);
    eprintln!("paper shapes on the GPU engine, max storage binding {limit} bytes (128 MiB in force)");
    let got = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
    check_forward("paper shapes", &got, &want);
}

/// Writes the paper's full 22-layer shape (or $NOPESCOPE_PAPER_LAYERS
/// layers) with random bf16 weights (2.2 GB) to $NOPESCOPE_PAPER_DIR, for
/// `nopescope bench --model`
/// (docs/BENCH.md). Not a check: `--ignored`.
#[test]
#[ignore = "writes 2.2 GB where NOPESCOPE_PAPER_DIR says, for the bench; not a check"]
fn write_paper_shape_model() {
    let dir = std::env::var_os("NOPESCOPE_PAPER_DIR").expect("set NOPESCOPE_PAPER_DIR to the folder to write");
    // NOPESCOPE_PAPER_LAYERS: fewer layers than the paper's 22.
    let layers = std::env::var("NOPESCOPE_PAPER_LAYERS").map_or(22, |v| v.parse().expect("a number of layers"));
    let cfg = ModelConfig {
        num_layers: layers,
        ..ModelConfig::tinyllama_nope()
    };
    let bytes = nopescope::model::files::save_random_bf16(std::path::Path::new(&dir), &cfg, 0.02, 11).unwrap();
    eprintln!("wrote {bytes} bytes of bf16 weights");
}

/// What a call makes is kept for the next (`GpuContext`'s caches): a
/// second forward of the same length makes a few buffers and bind groups
/// (those over its own tokens), not one per dispatch, and gives the same
/// outputs bit for bit; a third at another length still matches the CPU.
#[test]
fn a_repeated_forward_reuses_its_uniforms_and_bind_groups() {
    if context("a_repeated_forward_reuses_its_uniforms_and_bind_groups").is_none() {
        return;
    }
    // A device of its own: on the shared one, tests running beside this
    // one add to the counts and may clear the caches between its forwards.
    let ctx = GpuContext::new_default().unwrap_or_else(|e| panic!("{e}"));
    let cfg = small_config(PositionEncoding::None, false);
    let params = Params::<f32>::random(&cfg, 0.3, 31);
    let mut cpu = CpuEngine::new(cfg.clone(), params.clone()).unwrap();
    let mut gpu = gpu_engine(ctx, cfg.clone(), params);
    let mut rng = Rng::new(32);
    let hs = random_scales(&mut rng, &cfg);
    let options = ForwardOptions {
        logits: LogitsRequest::Last(3),
        entropy: true,
        ..Default::default()
    };
    let tokens = random_tokens(&mut rng, 40, cfg.vocab_size);
    let w0 = gpu.device_work().unwrap();
    let first = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
    let w1 = gpu.device_work().unwrap();
    let second = block_on(gpu.forward(&tokens, &hs, &options)).unwrap();
    let w2 = gpu.device_work().unwrap();
    let (a, b) = (w1.since(w0), w2.since(w1));
    eprintln!("first forward: {a:?}\nsecond forward: {b:?}");
    assert!(a.bind_groups >= 20, "{a:?}");
    assert!(
        b.bind_groups * 4 <= a.bind_groups && b.buffers * 4 <= a.buffers,
        "{b:?} against {a:?}"
    );
    assert_eq!(first.logits, second.logits);
    assert_eq!(first.entropy_bits, second.entropy_bits);
    let shorter = random_tokens(&mut rng, 23, cfg.vocab_size);
    let got = block_on(gpu.forward(&shorter, &hs, &options)).unwrap();
    let want = block_on(cpu.forward(&shorter, &hs, &options)).unwrap();
    check_forward("after the caches, another length", &got, &want);
}

/// A matrix product's rows lie along one dimension of its grid (65535
/// workgroups of 32 rows by default: about 2 million tokens). Pages are
/// capped there: with the limit lowered to 32 workgroups a 1100-token
/// forward goes in pages of 1024 rows and equals the CPU engine's; before
/// 2026-12-01 the page held all 1100 rows and a dispatch was refused
/// (rmsnorm's, one workgroup a row, at 32 x 32 here).
#[test]
fn pages_stay_within_a_products_grid() {
    let name = "pages_stay_within_a_products_grid";
    let Some(ctx) = context(name) else {
        return;
    };
    let cfg = small_config(PositionEncoding::None, false);
    let params = Params::<f32>::random(&cfg, 0.3, 41);
    let mut cpu = CpuEngine::new(cfg.clone(), params.clone()).unwrap();
    let mut gpu = gpu_engine(ctx, cfg.clone(), params);
    gpu.set_workgroup_limit(32);
    assert_eq!(gpu.page_rows_for(1100), 1024);
    let mut rng = Rng::new(42);
    let hs = random_scales(&mut rng, &cfg);
    let tokens = random_tokens(&mut rng, 1100, cfg.vocab_size);
    let options = ForwardOptions {
        logits: LogitsRequest::Last(5),
        entropy: true,
        ..Default::default()
    };
    let want = block_on(cpu.forward(&tokens, &hs, &options)).unwrap();
    let got = block_on(gpu.forward(&tokens, &hs, &options)).unwrap_or_else(|e| panic!("{e}"));
    check_forward(name, &got, &want);
}
