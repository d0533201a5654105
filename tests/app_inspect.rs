//! What the attention viewer shows, on both engines: the attention rows of
//! chosen queries and the pooled T x T map (`Engine::attention_rows`,
//! `Engine::pooled_attention`), checked against the engines' own streaming
//! entropy (the same softmax, never materialized), against each other, and
//! the GPU engine against the CPU. The GPU part needs an adapter (lavapipe
//! on CI): without one it fails.

use nopescope::gpu::{GpuContext, GpuEngine};
use nopescope::model::cpu::inspect::row_entropy_bits;
use nopescope::model::cpu::CpuEngine;
use nopescope::model::files::load_model_dir;
use nopescope::model::{Engine, ForwardOptions, HeadScales};
use pollster::block_on;

struct Setup {
    cpu: CpuEngine,
    tokens: Vec<u32>,
    scales: HeadScales,
    params: nopescope::model::Params<f32>,
}

fn setup(t: usize) -> Setup {
    let m = load_model_dir(std::path::Path::new("assets/models/nope-sotu")).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    let text = std::fs::read_to_string("assets/text/sotu-validation.txt").unwrap();
    let mut tokens: Vec<u32> = tok.bos_id().into_iter().collect();
    tokens.extend(tok.encode(&text[..20_000]).unwrap());
    tokens.truncate(t);
    let mut scales = HeadScales::ones(&m.config);
    for (i, s) in scales.values.iter_mut().enumerate() {
        *s = 0.8 + 0.05 * i as f32;
    }
    Setup {
        cpu: CpuEngine::new(m.config.clone(), m.params.clone()).unwrap(),
        tokens,
        scales,
        params: m.params,
    }
}

/// `tokens` repeated to `t` tokens (for the speed probes' long inputs).
fn repeated(tokens: &[u32], t: usize) -> Vec<u32> {
    tokens.iter().copied().cycle().take(t).collect()
}

#[test]
fn rows_match_the_streaming_entropy_and_sum_to_one() {
    let t = 300;
    let mut s = setup(t);
    let out = block_on(s.cpu.forward(
        &s.tokens,
        &s.scales,
        &ForwardOptions {
            entropy: true,
            ..Default::default()
        },
    ))
    .unwrap();
    let ent = out.entropy_bits.unwrap();
    let heads = s.cpu.config().num_heads;
    let queries = [0usize, 1, 17, 150, t - 1];
    for (layer, head) in [(0, 0), (1, 3), (3, 2)] {
        let rows = block_on(s.cpu.attention_rows(&s.tokens, &s.scales, layer, head, &queries)).unwrap();
        assert_eq!(rows.len(), queries.len() * t);
        for (row, &q) in rows.chunks_exact(t).zip(&queries) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "row {q} sums to {sum}");
            assert!(row[q + 1..].iter().all(|&p| p == 0.0), "row {q} attends to the future");
            let want = ent[(layer * heads + head) * t + q] as f64;
            let got = row_entropy_bits(row);
            assert!(
                (got - want).abs() < 2e-3,
                "layer {layer} head {head} query {q}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn pooled_map_is_the_rows_pooled() {
    let t = 96;
    let mut s = setup(t);
    let all: Vec<usize> = (0..t).collect();
    let rows = block_on(s.cpu.attention_rows(&s.tokens, &s.scales, 2, 1, &all)).unwrap();
    // At n = T the pooled map is the attention matrix itself.
    let (full, n) = block_on(s.cpu.pooled_attention(&s.tokens, &s.scales, 2, 1, 512)).unwrap();
    assert_eq!(n, t);
    for (a, b) in full.iter().zip(&rows) {
        assert!((a - b).abs() < 1e-6);
    }
    // At n = 8 each cell is the mean over its 12 queries of their mass on its 12 keys.
    let (pooled, n) = block_on(s.cpu.pooled_attention(&s.tokens, &s.scales, 2, 1, 8)).unwrap();
    assert_eq!(n, 8);
    for a in 0..8 {
        for b in 0..8 {
            let want: f32 = (a * 12..(a + 1) * 12)
                .map(|i| (b * 12..(b + 1) * 12).map(|j| rows[i * t + j]).sum::<f32>())
                .sum::<f32>()
                / 12.0;
            assert!((pooled[a * 8 + b] - want).abs() < 1e-5, "cell {a},{b}");
        }
        let row_sum: f32 = pooled[a * 8..(a + 1) * 8].iter().sum();
        assert!((row_sum - 1.0).abs() < 1e-4);
    }
    // At n = 7 the bins are uneven (13 or 14 positions, bin of x = 7x / 96)
    // and the engine's blocks of 64 query rows end inside a bin.
    let (pooled, n) = block_on(s.cpu.pooled_attention(&s.tokens, &s.scales, 2, 1, 7)).unwrap();
    assert_eq!(n, 7);
    let bin = |x: usize| x * 7 / t;
    for a in 0..7 {
        let queries: Vec<usize> = (0..t).filter(|&i| bin(i) == a).collect();
        for b in 0..7 {
            let want: f32 = queries
                .iter()
                .map(|&i| (0..t).filter(|&j| bin(j) == b).map(|j| rows[i * t + j]).sum::<f32>())
                .sum::<f32>()
                / queries.len() as f32;
            assert!(
                (pooled[a * 7 + b] - want).abs() < 1e-5,
                "cell {a},{b}: {} vs {want}",
                pooled[a * 7 + b]
            );
        }
    }
    // Out of range heads and queries are errors, not panics.
    assert!(block_on(s.cpu.attention_rows(&s.tokens, &s.scales, 9, 0, &[0])).is_err());
    assert!(block_on(s.cpu.attention_rows(&s.tokens, &s.scales, 0, 0, &[t])).is_err());
    assert!(block_on(s.cpu.pooled_attention(&s.tokens, &s.scales, 0, 0, 0)).is_err());
}

#[test]
fn gpu_engine_gives_the_cpu_rows_and_map() {
    let t = 200;
    let mut s = setup(t);
    let ctx = GpuContext::new_default().unwrap_or_else(|e| {
        panic!("this test needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers): {e}")
    });
    let mut gpu = block_on(GpuEngine::new(ctx, s.cpu.config().clone(), s.params.clone())).unwrap();
    let queries = [0usize, 99, t - 1];
    let want = block_on(s.cpu.attention_rows(&s.tokens, &s.scales, 3, 1, &queries)).unwrap();
    let got = block_on(gpu.attention_rows(&s.tokens, &s.scales, 3, 1, &queries)).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5);
    }
    let (want, _) = block_on(s.cpu.pooled_attention(&s.tokens, &s.scales, 1, 2, 64)).unwrap();
    let (got, n) = block_on(gpu.pooled_attention(&s.tokens, &s.scales, 1, 2, 64)).unwrap();
    assert_eq!(n, 64);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5);
    }
}

/// The web page's forward, a few rows at a time with a K/V cache, gives the
/// engine's loss and entropy (NoPE and RoPE, chunks that do not divide T,
/// under the log-n and fitted scale rules).
#[test]
fn chunked_forward_matches_the_engine() {
    use nopescope::model::cpu::chunked::ChunkedForward;
    for dir in ["assets/models/nope-sotu", "assets/models/rope-sotu"] {
        let m = load_model_dir(std::path::Path::new(dir)).unwrap();
        let tok = m.tokenizer.as_ref().unwrap();
        let text = std::fs::read_to_string("assets/text/sotu-validation.txt").unwrap();
        let mut tokens: Vec<u32> = tok.bos_id().into_iter().collect();
        tokens.extend(tok.encode(&text[5_000..15_000]).unwrap());
        tokens.truncate(203);
        let mut scales = HeadScales::ones(&m.config);
        scales.values[3] = 1.7;
        // A scale rule whose factors pass 1 inside the 203 tokens.
        use nopescope::model::head_scales::ScaleRule;
        let scales = scales.with_rule(if dir.contains("rope") {
            ScaleRule::Fitted {
                a: 0.3,
                training_length: 64,
            }
        } else {
            ScaleRule::LogN { training_length: 64 }
        });
        let mut cpu = CpuEngine::new(m.config.clone(), m.params.clone()).unwrap();
        let out = block_on(cpu.forward(
            &tokens,
            &scales,
            &ForwardOptions {
                entropy: true,
                ..Default::default()
            },
        ))
        .unwrap();
        let mut ch = ChunkedForward::new(&m.config, &m.params, &tokens, &scales).unwrap();
        assert!(ch.rows_for(1e6) >= 1);
        let mut steps = 0;
        while !ch.is_done() {
            ch.step(7);
            steps += 1;
        }
        assert_eq!(steps, 29);
        assert!((ch.fraction() - 1.0).abs() < 1e-6);
        assert!(
            (ch.loss_sum - out.loss_sum).abs() < 1e-3 * out.loss_sum.abs(),
            "{dir}: loss {} vs {}",
            ch.loss_sum,
            out.loss_sum
        );
        let want = out.entropy_bits.unwrap();
        for (k, (a, b)) in ch.entropy_bits.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 2e-3, "{dir}: entropy {k}: {a} vs {b}");
        }
    }
}

/// A CPU engine with a `Slicer` (the web page's) gives every output of the
/// forward contract as the whole forward does: the (weighted) loss, each
/// prediction's loss, the kept logits and the entropy; it paused between
/// slices (a clock that runs 1 ms per reading makes slices of a few rows).
#[test]
fn sliced_engine_forward_matches_the_whole_forward() {
    use nopescope::model::cpu::Slicer;
    use nopescope::model::LogitsRequest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLOCK: AtomicU64 = AtomicU64::new(0);
    static PAUSES: AtomicU64 = AtomicU64::new(0);
    let mut s = setup(203);
    let weights: Vec<f32> = (0..202)
        .map(|i| if i % 3 == 0 { 0.0 } else { 0.5 + (i % 7) as f32 })
        .collect();
    let mut sliced = CpuEngine::new(s.cpu.config().clone(), s.params.clone()).unwrap();
    sliced.set_slicer(Slicer {
        clock: || CLOCK.fetch_add(1, Ordering::Relaxed) as f64,
        pause: || {
            PAUSES.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {})
        },
        slice_ms: 0.5,
    });
    for (logits, weights) in [
        (LogitsRequest::Last(5), None),
        (LogitsRequest::All, Some(weights.clone())),
        (LogitsRequest::None, None),
    ] {
        let options = ForwardOptions {
            entropy: true,
            losses: true,
            logits,
            loss_weights: weights,
        };
        let want = block_on(s.cpu.forward(&s.tokens, &s.scales, &options)).unwrap();
        let before = PAUSES.load(Ordering::Relaxed);
        let got = block_on(sliced.forward(&s.tokens, &s.scales, &options)).unwrap();
        assert!(
            PAUSES.load(Ordering::Relaxed) - before >= 3,
            "{logits:?}: paused between slices"
        );
        let what = format!("{logits:?}");
        assert_eq!(
            (got.predictions, got.logits_rows),
            (want.predictions, want.logits_rows),
            "{what}"
        );
        assert!((got.weight_sum - want.weight_sum).abs() < 1e-9, "{what}");
        assert!(
            (got.loss_sum - want.loss_sum).abs() < 1e-4 * want.loss_sum.abs(),
            "{what}: loss {} vs {}",
            got.loss_sum,
            want.loss_sum
        );
        let close = |name: &str, a: &[f32], b: &[f32], tol: f32| {
            assert_eq!(a.len(), b.len(), "{what}: {name} lengths");
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {name} {k}: {x} vs {y}");
            }
        };
        close(
            "losses",
            got.losses.as_ref().unwrap(),
            want.losses.as_ref().unwrap(),
            1e-3,
        );
        close(
            "entropy",
            got.entropy_bits.as_ref().unwrap(),
            want.entropy_bits.as_ref().unwrap(),
            2e-3,
        );
        match (&got.logits, &want.logits) {
            (Some(a), Some(b)) => close("logits", a, b, 1e-3),
            (None, None) => {}
            _ => panic!("{what}: logits kept by one forward only"),
        }
    }
    // Gradients: the same, with a pause between the batch's sequences and,
    // inside each, between the forward's layers, after the forward, after
    // the LM head and after every backward layer but the first (a frozen
    // model stops at the first layer's attention).
    use nopescope::model::GradMode;
    let batch = vec![
        s.tokens[..90].to_vec(),
        s.tokens[90..].to_vec(),
        s.tokens[..40].to_vec(),
    ];
    let w: Vec<Vec<f32>> = batch.iter().map(|b| weights[..b.len() - 1].to_vec()).collect();
    let want = block_on(
        s.cpu
            .weighted_gradients(&batch, Some(&w), &s.scales, GradMode::HeadScalesOnly),
    )
    .unwrap();
    let before = PAUSES.load(Ordering::Relaxed);
    let got = block_on(sliced.weighted_gradients(&batch, Some(&w), &s.scales, GradMode::HeadScalesOnly)).unwrap();
    let layers = s.cpu.config().num_layers as u64;
    assert_eq!(
        PAUSES.load(Ordering::Relaxed) - before,
        2 + 3 * ((layers - 1) + 2 + (layers - 1)),
        "pauses between and inside the sequences"
    );
    assert_eq!(got.predictions, want.predictions);
    assert!((got.loss - want.loss).abs() <= 1e-9 * want.loss.abs());
    assert_eq!(got.head_scales, want.head_scales, "the same sums in the same order");
}

/// The web page's attention rows (captured while the chunked forward runs)
/// are the engine's, whether it runs through or stops at the layer.
#[test]
fn chunked_capture_gives_the_attention_rows() {
    use nopescope::model::cpu::chunked::ChunkedForward;
    let t = 150;
    let mut s = setup(t);
    let cfg = s.cpu.config().clone();
    let queries = [0usize, 77, t - 1];
    for (layer, head, stop) in [(1usize, 2usize, false), (3, 0, false), (0, 1, true), (2, 3, true)] {
        let want = block_on(s.cpu.attention_rows(&s.tokens, &s.scales, layer, head, &queries)).unwrap();
        let mut ch = ChunkedForward::new(&cfg, &s.params, &s.tokens, &s.scales)
            .unwrap()
            .capture(layer, head);
        // Run only up to the layer (as the web page does), or through.
        if stop {
            ch = ch.stop_at(layer);
        }
        while !ch.is_done() {
            ch.step(11);
        }
        // Stopped: no attention at the layer (its entropy is never made)
        // and no LM head (no loss); run through: both.
        let heads = cfg.num_heads;
        let at_layer = &ch.entropy_bits[layer * heads * t..(layer + 1) * heads * t];
        assert_eq!(at_layer.iter().all(|&e| e == 0.0), stop, "layer {layer}: entropy");
        assert_eq!(ch.loss_sum == 0.0, stop, "layer {layer}: loss {}", ch.loss_sum);
        let mut row = vec![0f32; t];
        for (k, &q) in queries.iter().enumerate() {
            ch.attention_row(q, &mut row).unwrap();
            for (a, b) in row.iter().zip(&want[k * t..(k + 1) * t]) {
                assert!((a - b).abs() < 1e-5, "layer {layer} head {head} query {q}");
            }
        }
    }
}

/// The CPU engine's forward speed on the bundled NoPE model natively, the
/// number the web page's `nopescope_bench_forward` is compared with in
/// docs/BENCH.md (information only; run with one thread:
/// `RAYON_NUM_THREADS=1 MATMUL_NUM_THREADS=1 cargo test --release --test
/// app_inspect bundled_forward_speed -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn bundled_forward_speed() {
    let start = std::time::Instant::now();
    let now = move || start.elapsed().as_secs_f64() * 1000.0;
    for length in [256, 1024] {
        let tps = pollster::block_on(nopescope::app::compute::time_bundled_forward(length, 7, &now)).unwrap();
        eprintln!("native CPU engine, bundled NoPE, forward at {length}: {tps:.0} tokens/s");
    }
}

/// The sliced forward (the web page's) against the whole forward, on the
/// bundled NoPE model, tokens/s (information for docs/APP.md; run with
/// `RAYON_NUM_THREADS=1 MATMUL_NUM_THREADS=1 cargo test --release --test
/// app_inspect sliced_forward_speed -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn sliced_forward_speed() {
    use nopescope::model::cpu::Slicer;
    fn clock() -> f64 {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1000.0
    }
    for t in [1024, 4096] {
        let mut s = setup(t);
        let tokens = repeated(&s.tokens, t);
        let options = ForwardOptions {
            entropy: true,
            ..Default::default()
        };
        let mut sliced = CpuEngine::new(s.cpu.config().clone(), s.params.clone()).unwrap();
        sliced.set_slicer(Slicer {
            clock,
            pause: || Box::pin(async {}),
            slice_ms: 25.0,
        });
        for (name, engine) in [("whole", &mut s.cpu), ("sliced", &mut sliced)] {
            let t0 = std::time::Instant::now();
            block_on(engine.forward(&tokens, &s.scales, &options)).unwrap();
            let secs = t0.elapsed().as_secs_f64();
            eprintln!("{name} forward at {t}: {secs:.3} s, {:.0} tokens/s", t as f64 / secs);
        }
        // The attention viewer's capture of one head (the web page's), run
        // through every layer and the LM head, or stopped at the layer.
        use nopescope::model::cpu::chunked::ChunkedForward;
        let cfg = s.cpu.config().clone();
        for layer in [0, cfg.num_layers - 1] {
            for stop in [false, true] {
                let mut ch = ChunkedForward::new(&cfg, &s.params, &tokens, &s.scales)
                    .unwrap()
                    .capture(layer, 0);
                if stop {
                    ch = ch.stop_at(layer);
                }
                let t0 = std::time::Instant::now();
                while !ch.is_done() {
                    ch.step(64);
                }
                let how = if stop { "stopped at the layer" } else { "run through" };
                eprintln!(
                    "capture of layer {layer} at {t}, {how}: {:.3} s",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// The pooled map's time (the attention viewer's whole pattern) against the
/// forward with entropy at the same length, on the bundled NoPE model
/// (information for docs/APP.md: `cargo test --release --test app_inspect
/// pooled_map_speed -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn pooled_map_speed() {
    for t in [4096, 16384] {
        let mut s = setup(64);
        let tokens = repeated(&s.tokens, t);
        let options = ForwardOptions {
            entropy: true,
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        block_on(s.cpu.forward(&tokens, &s.scales, &options)).unwrap();
        let forward = t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        block_on(s.cpu.pooled_attention(&tokens, &s.scales, 3, 1, 512)).unwrap();
        let pooled = t0.elapsed().as_secs_f64();
        eprintln!("T = {t}: forward with entropy {forward:.3} s, pooled map (layer 3) {pooled:.3} s");
    }
    // In the app (`Lab`): the attention viewer's row, its pooled map, then
    // another query of the same head, at 16384 tokens of validation text.
    use nopescope::app::compute::{JobControl, Lab};
    use nopescope::app::jobs::{InputAt, InputKey, JobKey, JobResult, ScalesKey};
    use nopescope::app::state::ModelChoice;
    struct Quiet;
    impl JobControl for Quiet {
        fn progress(&mut self, _: f32, _: &str) -> bool {
            true
        }
        fn partial(&mut self, _: JobResult) {}
    }
    let mut lab = Lab::new(nopescope::lab::backend::Backend::Cpu, None);
    let at = InputAt {
        model: ModelChoice::Nope,
        input: InputKey::Validation,
        length: 16384,
    };
    let scales = ScalesKey::ones(16);
    let row = |query| JobKey::AttnRow {
        at: at.clone(),
        scales: scales.clone(),
        layer: 3,
        head: 1,
        query: Some(query),
    };
    let pooled = JobKey::Pooled {
        at: at.clone(),
        scales: scales.clone(),
        layer: 3,
        head: 1,
    };
    block_on(lab.run(&row(1), &mut Quiet)).unwrap();
    for (name, key) in [
        ("row of query 9000", row(9000)),
        ("pooled map", pooled),
        ("row of query 16000", row(16000)),
    ] {
        let t0 = std::time::Instant::now();
        block_on(lab.run(&key, &mut Quiet)).unwrap();
        eprintln!(
            "app at 16384, layer 3 head 1 viewed before: {name} {:.3} s",
            t0.elapsed().as_secs_f64()
        );
    }
}

/// Every head's row for one query, from one run of the model (the pass-key
/// lab's ranking of heads), is each head's own row; on a model with grouped
/// keys (4 query heads on 2 key heads) and the bundled one; and the chunked
/// forward's kept rows are the same.
#[test]
fn every_heads_row_in_one_run_is_each_heads_own() {
    use nopescope::model::cpu::inspect::query_rows_every_head;
    let mut s = setup(150);
    let gqa = nopescope::model::ModelConfig {
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 2,
        ..s.cpu.config().clone()
    };
    let gqa_params = nopescope::model::params::Params::random(&gqa, 0.05, 11);
    let mut gqa_engine = CpuEngine::new(gqa.clone(), gqa_params.clone()).unwrap();
    let mut gqa_scales = HeadScales::ones(&gqa);
    for (i, v) in gqa_scales.values.iter_mut().enumerate() {
        *v = 0.7 + 0.1 * i as f32;
    }
    let bundled_config = s.cpu.config().clone();
    let cases: [(
        &mut CpuEngine,
        &nopescope::model::Params<f32>,
        &HeadScales,
        &nopescope::model::ModelConfig,
    ); 2] = [
        (&mut s.cpu, &s.params, &s.scales, &bundled_config),
        (&mut gqa_engine, &gqa_params, &gqa_scales, &gqa),
    ];
    for (engine, params, scales, cfg) in cases {
        for query in [0, 57, 149] {
            let rows = query_rows_every_head(cfg, params, &s.tokens, scales, query).unwrap();
            assert_eq!(rows.len(), cfg.num_layers * cfg.num_heads);
            for l in 0..cfg.num_layers {
                for h in 0..cfg.num_heads {
                    let want = block_on(engine.attention_rows(&s.tokens, scales, l, h, &[query])).unwrap();
                    let got = &rows[l * cfg.num_heads + h];
                    assert_eq!(got.len(), query + 1);
                    for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                            "layer {l} head {h} query {query} key {j}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
    assert!(query_rows_every_head(&gqa, &gqa_params, &s.tokens, &gqa_scales, 150).is_err());
    // The chunked forward (the web page's) keeps the same rows as they go
    // by, in chunks that end before, at and after the query.
    use nopescope::model::cpu::chunked::ChunkedForward;
    for query in [0, 57, 149] {
        let want = query_rows_every_head(&gqa, &gqa_params, &s.tokens, &gqa_scales, query).unwrap();
        let mut ch = ChunkedForward::new(&gqa, &gqa_params, &s.tokens, &gqa_scales)
            .unwrap()
            .capture_query(query);
        assert!(ch.query_rows().is_none(), "not before its row is done");
        while !ch.is_done() {
            ch.step(13);
        }
        let got = ch.query_rows().unwrap();
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            for (j, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                    "chunked, head {k} query {query} key {j}: {a} vs {b}"
                );
            }
        }
    }
}
