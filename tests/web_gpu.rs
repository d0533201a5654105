//! The GPU engine on real WebGPU, in headless Chromium (SwiftShader in CI),
//! through wasm-bindgen-test: the committed PyTorch fixture (tiny-nope,
//! embedded, since the browser has no files) checked as
//! tests/pytorch_fixture.rs checks it (forward with all logits and entropy,
//! head-scale gradients of the frozen model; same rule, same tolerances,
//! tests/common), and against the CPU engine run in the same page.
//!
//! Unlike tests/gpu_engine.rs this test never skips: with no WebGPU adapter,
//! or an adapter on another backend (WebGL), it fails, so a green run proves
//! the kernels ran on WebGPU. Natively this file compiles to nothing; run it
//! with `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target
//! wasm32-unknown-unknown --test web_gpu` (the runner and Chromium's flags
//! are in .cargo/config.toml and webdriver.json; see README "Tests").

#![cfg(target_arch = "wasm32")]

mod common;

use std::path::Path;

use nopescope::gpu::{GpuContext, GpuEngine};
use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::CpuEngine;
use nopescope::model::files::model_from_bytes;
use nopescope::model::{Engine, ForwardOptions, GradMode, HeadScales, LogitsRequest};
use safetensors::SafeTensors;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const FIXTURE: &str = "tests/fixtures/tiny-nope";
const CONFIG: &[u8] = include_bytes!("fixtures/tiny-nope/config.json");
const WEIGHTS: &[u8] = include_bytes!("fixtures/tiny-nope/model.safetensors");
const HEAD_SCALES: &str = include_str!("fixtures/tiny-nope/head_scales.json");
const EXPECTED: &[u8] = include_bytes!("fixtures/tiny-nope/expected.safetensors");

// The GPU engine against the CPU engine: the tolerances of
// tests/gpu_engine.rs (two f32 engines summing in different orders).
const LOSS_TOL: Tolerance = Tolerance::new(0.0, 1e-4);
const LOGITS_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const ENTROPY_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const GRAD_TOL: Tolerance = Tolerance::new(1e-6, 1e-3);

/// The browser's own description of its default WebGPU adapter
/// (`GPUAdapterInfo` and `isFallbackAdapter`), which wgpu's `AdapterInfo`
/// leaves mostly empty: "google swiftshader ..." on SwiftShader.
async fn browser_adapter_info() -> Result<String, String> {
    use js_sys::{Function, Promise, Reflect};
    let get = |target: &js_sys::Object, key: &str| {
        Reflect::get(target, &key.into())
            .map_err(|e| format!("{key}: {e:?}"))
            .and_then(|v| {
                if v.is_undefined() {
                    Err(format!("no {key}"))
                } else {
                    Ok(v)
                }
            })
    };
    let navigator = js_sys::Object::from(get(&js_sys::global(), "navigator")?);
    let gpu = js_sys::Object::from(get(&navigator, "gpu")?);
    let request = Function::from(get(&gpu, "requestAdapter")?);
    let promise = Promise::from(request.call0(&gpu).map_err(|e| format!("{e:?}"))?);
    let adapter = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|e| format!("{e:?}"))?;
    if adapter.is_null() {
        return Err("requestAdapter() gave null".into());
    }
    let adapter = js_sys::Object::from(adapter);
    let info = js_sys::Object::from(get(&adapter, "info")?);
    let field = |key: &str| get(&info, key).ok().and_then(|v| v.as_string()).unwrap_or_default();
    let fallback = get(&info, "isFallbackAdapter")
        .or_else(|_| get(&adapter, "isFallbackAdapter"))
        .ok()
        .and_then(|v| v.as_bool());
    Ok(format!(
        "vendor {:?}, architecture {:?}, device {:?}, description {:?}, fallback adapter {fallback:?}",
        field("vendor"),
        field("architecture"),
        field("device"),
        field("description"),
    ))
}

/// A device on the browser's WebGPU adapter, or a panic saying why not.
async fn webgpu_context() -> GpuContext {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no WebGPU adapter in this browser ({e}): this test must run on WebGPU; Chromium needs \
                 --enable-unsafe-webgpu (and SwiftShader's flags without a GPU), see webdriver.json"
            )
        });
    let info = adapter.get_info();
    console_log!("wgpu AdapterInfo: {info:?}");
    match browser_adapter_info().await {
        Ok(described) => console_log!("the browser's GPUAdapterInfo: {described}"),
        Err(e) => console_log!("the browser's GPUAdapterInfo: not read ({e})"),
    }
    assert_eq!(
        info.backend,
        wgpu::Backend::BrowserWebGpu,
        "the adapter is not the browser's WebGPU: {info:?}"
    );
    GpuContext::open(&adapter).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `assert_close`, after logging the worst absolute error and how much of
/// the tolerance it used (shown with `--nocapture`).
#[track_caller]
fn check<B: Copy + Into<f64>>(what: &str, got: &[f32], want: &[B], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut abs, mut used) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let w: f64 = w.into();
        let e = (g as f64 - w).abs();
        abs = abs.max(e);
        used = used.max(e / (tol.atol + tol.rtol * w.abs()).max(f64::MIN_POSITIVE));
    }
    console_log!("{what}: worst |err| {abs:.2e}, {:.0}% of the tolerance", used * 100.0);
    assert_close(what, got, want, tol);
}

#[wasm_bindgen_test]
async fn webgpu_engine_matches_pytorch_and_the_cpu_engine() {
    let ctx = webgpu_context().await;
    console_log!("browser WebGPU test on {}", ctx.report());

    let (config, params) = model_from_bytes(CONFIG, WEIGHTS, Path::new(FIXTURE)).unwrap();
    let hs = HeadScales::from_json(HEAD_SCALES, None).unwrap();
    hs.check_for(&config, None).unwrap();
    let expected = SafeTensors::deserialize(EXPECTED).unwrap();
    let tokens = common::fixture_tokens(&expected);
    let seq = std::slice::from_ref(&tokens);

    let mut gpu = GpuEngine::new(ctx, config.clone(), params.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cpu = CpuEngine::new(config, params).unwrap();

    let options = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: true,
        ..Default::default()
    };
    let got = gpu
        .forward(&tokens, &hs, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = cpu.forward(&tokens, &hs, &options).await.unwrap();
    assert_eq!((got.predictions, got.logits_rows), (want.predictions, want.logits_rows));
    let (gl, ge) = (got.logits.as_ref().unwrap(), got.entropy_bits.as_ref().unwrap());
    check(
        "WebGPU logits vs PyTorch",
        gl,
        &common::f64s(&expected, "logits"),
        common::OUTPUT_TOL,
    );
    check(
        "WebGPU entropy vs PyTorch",
        ge,
        &common::f64s(&expected, "entropy_bits"),
        common::OUTPUT_TOL,
    );
    common::check_forward("WebGPU tiny-nope", &got, &expected);
    common::check_forward("wasm CPU tiny-nope", &want, &expected);
    check("WebGPU logits vs CPU", gl, want.logits.as_ref().unwrap(), LOGITS_TOL);
    check(
        "WebGPU entropy vs CPU",
        ge,
        want.entropy_bits.as_ref().unwrap(),
        ENTROPY_TOL,
    );
    check("WebGPU loss vs CPU", &[got.loss_sum as f32], &[want.loss_sum], LOSS_TOL);

    let got = gpu
        .gradients(seq, &hs, GradMode::HeadScalesOnly)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = cpu.gradients(seq, &hs, GradMode::HeadScalesOnly).await.unwrap();
    assert!(got.weights.is_none() && want.weights.is_none());
    check(
        "WebGPU frozen grad.head_scales vs PyTorch",
        &got.head_scales,
        &common::f64s(&expected, "grad.head_scales"),
        common::GRAD_TOL,
    );
    common::check_head_scale_grads("WebGPU tiny-nope frozen grad.head_scales", &got.head_scales, &expected);
    common::check_head_scale_grads(
        "wasm CPU tiny-nope frozen grad.head_scales",
        &want.head_scales,
        &expected,
    );
    assert_close(
        "WebGPU frozen loss vs PyTorch",
        &[got.loss],
        &common::f64s(&expected, "loss"),
        common::OUTPUT_TOL,
    );
    check(
        "WebGPU frozen grad.head_scales vs CPU",
        &got.head_scales,
        &want.head_scales,
        GRAD_TOL,
    );
    check("WebGPU frozen loss vs CPU", &[got.loss as f32], &[want.loss], LOSS_TOL);

    // Engine contract v2: loss weights per prediction (some 0) and the
    // log-n scale rule, against the CPU engine in the same page.
    let ruled = hs
        .clone()
        .with_rule(nopescope::model::head_scales::ScaleRule::LogN { training_length: 8 });
    let weights: Vec<Vec<f32>> = seq
        .iter()
        .map(|s| (0..s.len() - 1).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 }).collect())
        .collect();
    let got = gpu
        .weighted_gradients(seq, Some(&weights), &ruled, GradMode::HeadScalesOnly)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = cpu
        .weighted_gradients(seq, Some(&weights), &ruled, GradMode::HeadScalesOnly)
        .await
        .unwrap();
    check(
        "WebGPU weighted, log-n grad.head_scales vs CPU",
        &got.head_scales,
        &want.head_scales,
        GRAD_TOL,
    );
    check(
        "WebGPU weighted, log-n loss vs CPU",
        &[got.loss as f32],
        &[want.loss],
        LOSS_TOL,
    );
    console_log!("browser WebGPU test passed");
}

/// Weights split across bindings (a 301 x 16 embedding and LM head under a
/// 4096-byte binding: 5 parts each, the sequence paged too) and, where the
/// browser's adapter offers shader-f16, weights held in f16: forward and
/// the frozen model's head-scale gradients against the CPU engine in the
/// same page (on the f16-rounded weights for the f16 engine).
#[wasm_bindgen_test]
async fn webgpu_split_and_f16_weights_match_the_cpu_engine() {
    use nopescope::gpu::shader::Elem;
    use nopescope::model::rng::Rng;
    use nopescope::model::{ModelConfig, Params, PositionEncoding};
    let ctx = webgpu_context().await;
    let cfg = ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 301,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: false,
        training_length: 64,
        position_encoding: PositionEncoding::None,
        bos_token_id: None,
    };
    let params = Params::<f32>::random(&cfg, 0.3, 70);
    let mut rng = Rng::new(71);
    let tokens: Vec<u32> = (0..45).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let mut hs = HeadScales::ones(&cfg);
    for s in &mut hs.values {
        *s = 0.5 + 1.5 * rng.uniform() as f32;
    }
    let options = ForwardOptions {
        logits: LogitsRequest::Last(9),
        entropy: true,
        ..Default::default()
    };
    let seq = std::slice::from_ref(&tokens);
    let mut cases = vec![("split", Elem::F32, params.clone())];
    if ctx.has_f16() {
        let mut rounded = params.clone();
        for t in params.layout.tensors.iter().filter(|t| !t.is_norm()) {
            for x in &mut rounded.data[t.range()] {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
        cases.push(("split, f16 weights", Elem::F16, rounded));
    } else {
        console_log!("this browser's adapter has no shader-f16: the f16 case does not run here");
    }
    for (name, elem, reference) in cases {
        let mut gpu = GpuEngine::new_with(ctx.clone().with_binding_limit(4096), cfg.clone(), params.clone(), elem)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cpu = CpuEngine::new(cfg.clone(), reference).unwrap();
        let got = gpu
            .forward(&tokens, &hs, &options)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = cpu.forward(&tokens, &hs, &options).await.unwrap();
        check(
            &format!("WebGPU {name}: loss"),
            &[got.loss_sum as f32],
            &[want.loss_sum],
            LOSS_TOL,
        );
        check(
            &format!("WebGPU {name}: logits"),
            got.logits.as_ref().unwrap(),
            want.logits.as_ref().unwrap(),
            LOGITS_TOL,
        );
        check(
            &format!("WebGPU {name}: entropy"),
            got.entropy_bits.as_ref().unwrap(),
            want.entropy_bits.as_ref().unwrap(),
            ENTROPY_TOL,
        );
        let got = gpu
            .gradients(seq, &hs, GradMode::HeadScalesOnly)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = cpu.gradients(seq, &hs, GradMode::HeadScalesOnly).await.unwrap();
        check(
            &format!("WebGPU {name}: frozen grad.head_scales"),
            &got.head_scales,
            &want.head_scales,
            GRAD_TOL,
        );
    }
    console_log!("browser split / f16 test passed");
}
