//! A probe, not a check: the CPU engine's parts at the bundled model's
//! shapes (T = 1024, hidden 128, MLP 352, 4 heads of 32 on 2 KV heads,
//! vocabulary 4096), each timed alone, then the whole forward, so that the
//! web build and the native one can be compared part by part
//! (docs/BENCH.md, "The CPU engine in the browser"). Ignored; run it with
//!
//!     RAYON_NUM_THREADS=1 MATMUL_NUM_THREADS=1 cargo test --release \
//!         --test cpu_parts_speed -- --ignored --nocapture
//!     cargo test --release --target wasm32-unknown-unknown --no-default-features \
//!         --test cpu_parts_speed -- --include-ignored --nocapture
//!
//! (the second in Node through wasm-bindgen-test-runner: V8, as in Chromium).

use nopescope::model::cpu::attention::attention_forward;
use nopescope::model::cpu::ops::{cross_entropy_row, rmsnorm_forward, swiglu_forward};
use nopescope::model::real::matmul_nt;
use nopescope::model::rng::Rng;
use nopescope::model::shapes::AttnShape;
use nopescope::model::{Engine, ForwardOptions, HeadScales};

#[cfg(target_arch = "wasm32")]
fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[cfg(not(target_arch = "wasm32"))]
fn now_ms() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1000.0
}

fn say(line: &str) {
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_test::console_log!("{}", line);
    #[cfg(not(target_arch = "wasm32"))]
    println!("{line}");
}

/// Mean ms of `reps` calls after one warm-up call (which also lets the
/// wasm engine tier the code up).
fn time(what: &str, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = now_ms();
    for _ in 0..reps {
        f();
    }
    let ms = (now_ms() - t0) / reps as f64;
    say(&format!("{what:<36} {ms:8.2} ms"));
    ms
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

async fn probe() {
    const T: usize = 1024;
    const LAYERS: f64 = 4.0;
    let mut rng = Rng::new(1);
    let mut sum = 0.0;
    // (k, n, calls per forward): qkv, wo, gate+up, down, the LM head.
    for (k, n, calls) in [
        (128, 256, LAYERS),
        (128, 128, LAYERS),
        (128, 704, LAYERS),
        (352, 128, LAYERS),
        (128, 4096, 1.0),
    ] {
        let (a, b) = (random(&mut rng, T * k), random(&mut rng, n * k));
        let mut c = vec![0f32; T * n];
        sum += calls
            * time(&format!("product {T}x{k} by {k}x{n}"), 10, || {
                matmul_nt(&mut c, &a, &b, T, k, n, 1.0, 0.0)
            });
    }
    let gu = random(&mut rng, T * 704);
    let mut h = vec![0f32; T * 352];
    sum += LAYERS * time("SwiGLU 1024x352", 10, || swiglu_forward(&mut h, &gu, 352));
    std::hint::black_box(&h);
    let (x, w) = (random(&mut rng, T * 128), random(&mut rng, 128));
    let (mut y, mut rstd) = (vec![0f32; T * 128], vec![0f32; T]);
    sum += (2.0 * LAYERS + 1.0)
        * time("RMSNorm 1024x128", 10, || {
            rmsnorm_forward(&mut y, &mut rstd, &x, &w, 128, 1e-5)
        });
    std::hint::black_box(&y);
    let z0 = random(&mut rng, T * 4096);
    let mut z = z0.clone();
    sum += time("cross entropy 1024x4096", 5, || {
        z.copy_from_slice(&z0);
        for row in z.chunks_exact_mut(4096) {
            std::hint::black_box(cross_entropy_row(row, 5, None));
        }
    });
    let shape = AttnShape {
        t: T,
        heads: 4,
        kv_heads: 2,
        hd: 32,
    };
    let (q, k, v) = (
        random(&mut rng, T * 128),
        random(&mut rng, T * 64),
        random(&mut rng, T * 64),
    );
    let (mut out, mut lse, mut ent) = (vec![0f32; T * 128], vec![0f32; 4 * T], vec![0f32; 4 * T]);
    sum += LAYERS
        * time("attention with entropy", 10, || {
            attention_forward(&mut out, &mut lse, Some(&mut ent), &q, &k, &v, &[1.0; 4], shape)
        });
    say(&format!("{:<36} {sum:8.2} ms", "sum of the parts, one forward"));

    // What the app does once before its first result: read the model,
    // its tokenizer, and tokenize the validation text it shows.
    let tokenizer_json = include_bytes!("../assets/models/nope-sotu/tokenizer.json");
    let text = include_str!("../assets/text/sotu-validation.txt");
    let t0 = now_ms();
    let tokenizer =
        nopescope::model::tokenizer::Tokenizer::from_bytes(tokenizer_json, std::path::Path::new("tokenizer.json"))
            .unwrap();
    let t1 = now_ms();
    let mut end = 400_000.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let ids = tokenizer.encode(&text[..end]).unwrap();
    let t2 = now_ms();
    say(&format!("{:<36} {:8.2} ms", "tokenizer from JSON", t1 - t0));
    say(&format!(
        "{:<36} {:8.2} ms ({} tokens)",
        "tokenize 400,000 characters",
        t2 - t1,
        ids.len()
    ));
    let t0 = now_ms();
    let (config, params) = nopescope::model::files::model_from_bytes(
        include_bytes!("../assets/models/nope-sotu/config.json"),
        include_bytes!("../assets/models/nope-sotu/model.safetensors"),
        std::path::Path::new("assets/models/nope-sotu"),
    )
    .unwrap();
    say(&format!(
        "{:<36} {:8.2} ms",
        "model from safetensors bytes",
        now_ms() - t0
    ));
    let tokens: Vec<u32> = (0..T).map(|_| (rng.uniform() * 4096.0) as u32 % 4096).collect();
    let mut engine = nopescope::model::cpu::CpuEngine::new(config.clone(), params).unwrap();
    let (hs, opts) = (HeadScales::ones(&config), ForwardOptions::default());
    engine.forward(&tokens, &hs, &opts).await.unwrap();
    let t0 = now_ms();
    for _ in 0..5 {
        engine.forward(&tokens, &hs, &opts).await.unwrap();
    }
    let ms = (now_ms() - t0) / 5.0;
    say(&format!(
        "{:<36} {ms:8.2} ms = {:.0} tokens/s",
        "whole forward",
        T as f64 / ms * 1000.0
    ));
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen_test::wasm_bindgen_test]
#[ignore = "a measurement, not a check: prints each part's time (run with --ignored / --include-ignored and --nocapture)"]
async fn parts_of_the_forward() {
    probe().await
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore = "a measurement, not a check: prints each part's time (run with --ignored / --include-ignored and --nocapture)"]
fn parts_of_the_forward() {
    pollster::block_on(probe())
}
