//! The PyTorch-fixture check, written once for every engine: logits, loss
//! and entropy to rtol 1e-4, every weight and head-scale gradient (full and
//! frozen mode) to rtol 1e-3, and the losses of 3 AdamW steps. The fixtures
//! are written by tests/reference/make_fixture.py in f64 from the saved f32
//! weights.
//!
//! The parts that need no files (the tolerances, reading the expected
//! values, the forward and head-scale checks) are shared with the browser
//! test (tests/web_gpu.rs), which embeds the fixture's bytes.

use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::engine::ForwardOutput;
use safetensors::SafeTensors;

/// Logits, loss and entropy against the fixture.
pub const OUTPUT_TOL: Tolerance = Tolerance::new(1e-5, 1e-4);
/// Weight and head-scale gradients against the fixture.
pub const GRAD_TOL: Tolerance = Tolerance::new(1e-6, 1e-3);

/// An f64 tensor of the expected values.
pub fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The fixture's token sequence (stored as i64).
pub fn fixture_tokens(expected: &SafeTensors) -> Vec<u32> {
    expected
        .tensor("tokens")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

/// A forward of all logits with entropy against the fixture.
pub fn check_forward(variant: &str, out: &ForwardOutput, expected: &SafeTensors) {
    assert_close(
        &format!("{variant} logits"),
        out.logits.as_ref().unwrap(),
        &f64s(expected, "logits"),
        OUTPUT_TOL,
    );
    assert_close(
        &format!("{variant} loss"),
        &[out.mean_loss()],
        &f64s(expected, "loss"),
        OUTPUT_TOL,
    );
    assert_close(
        &format!("{variant} entropy"),
        out.entropy_bits.as_ref().unwrap(),
        &f64s(expected, "entropy_bits"),
        OUTPUT_TOL,
    );
}

/// Head-scale gradients (`what` names the mode) against the fixture.
pub fn check_head_scale_grads(what: &str, got: &[f32], expected: &SafeTensors) {
    assert_close(what, got, &f64s(expected, "grad.head_scales"), GRAD_TOL);
}

/// Loads fixture `variant` (tests/fixtures/<variant>), builds an engine
/// with `make` and checks it against the fixture.
/// The repository's root: where the test runs when cargo starts it (cargo
/// sets CARGO_MANIFEST_DIR then too), else where it was built. A test
/// binary copied to another machine (tests/gpu_kit.sh) is run with the
/// variable set to the copy of the repository there.
#[cfg(not(target_arch = "wasm32"))]
pub fn repo_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn check_engine_against_fixture<E: nopescope::model::Engine>(
    variant: &str,
    make: impl FnOnce(nopescope::model::ModelConfig, nopescope::model::params::Params<f32>) -> E,
) {
    use nopescope::model::files::load_model_dir;
    use nopescope::model::head_scales::{HeadScales, HEAD_SCALES_FILE};
    use nopescope::model::optim::AdamWConfig;
    use nopescope::model::{ForwardOptions, GradMode, LogitsRequest};
    use pollster::block_on;

    let dir = repo_dir().join("tests/fixtures").join(variant);
    let model = load_model_dir(&dir).unwrap();
    let hs = HeadScales::load(&dir.join(HEAD_SCALES_FILE), &model.config).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = fixture_tokens(&expected);
    let layout = model.params.layout.clone();
    let mut engine = make(model.config.clone(), model.params);
    let seq = std::slice::from_ref(&tokens);

    let options = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: true,
        ..Default::default()
    };
    let out = block_on(engine.forward(&tokens, &hs, &options)).unwrap();
    check_forward(variant, &out, &expected);

    let g = block_on(engine.gradients(seq, &hs, GradMode::Full)).unwrap();
    let weights = g.weights.as_ref().unwrap();
    assert_eq!(weights.len(), layout.total);
    for t in &layout.tensors {
        let want = f64s(&expected, &format!("grad.{}", t.name));
        assert_close(
            &format!("{variant} grad.{}", t.name),
            &weights[t.range()],
            &want,
            GRAD_TOL,
        );
    }
    check_head_scale_grads(&format!("{variant} grad.head_scales"), &g.head_scales, &expected);
    let frozen = block_on(engine.gradients(seq, &hs, GradMode::HeadScalesOnly)).unwrap();
    assert!(frozen.weights.is_none());
    check_head_scale_grads(
        &format!("{variant} frozen grad.head_scales"),
        &frozen.head_scales,
        &expected,
    );

    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();

    // Engine contract v2: loss weights and a scale rule, full and frozen,
    // and the forward's weighted loss and per-prediction losses.
    let rule: nopescope::model::head_scales::ScaleRule =
        serde_json::from_str(meta.get("weighted_rule").expect("metadata weighted_rule")).unwrap();
    let ruled = hs.clone().with_rule(rule);
    let w: Vec<f32> = f64s(&expected, "weighted.loss_weights")
        .iter()
        .map(|&x| x as f32)
        .collect();
    let weights_batch = vec![w.clone()];
    let g = block_on(engine.weighted_gradients(seq, Some(&weights_batch), &ruled, GradMode::Full)).unwrap();
    assert_close(
        &format!("{variant} weighted loss ({rule:?})"),
        &[g.loss],
        &f64s(&expected, "weighted.loss"),
        OUTPUT_TOL,
    );
    let weights = g.weights.as_ref().unwrap();
    for t in &layout.tensors {
        let want = f64s(&expected, &format!("weighted.grad.{}", t.name));
        // rtol 1e-3 with an absolute floor of 1e-4 of the tensor's largest
        // gradient, for entries that are sums of cancelling terms: the
        // rule's sharper attention makes more of them (CPU f32, k_proj of
        // tiny-nope: 1.41e-4 against 1.397e-4, where the largest is ~1e-2).
        let max = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        assert_close(
            &format!("{variant} weighted grad.{} ({rule:?})", t.name),
            &weights[t.range()],
            &want,
            Tolerance::new((1e-4 * max).max(GRAD_TOL.atol), GRAD_TOL.rtol),
        );
    }
    let want_hs = f64s(&expected, "weighted.grad.head_scales");
    assert_close(
        &format!("{variant} weighted grad.head_scales"),
        &g.head_scales,
        &want_hs,
        GRAD_TOL,
    );
    let frozen =
        block_on(engine.weighted_gradients(seq, Some(&weights_batch), &ruled, GradMode::HeadScalesOnly)).unwrap();
    assert_close(
        &format!("{variant} weighted frozen grad.head_scales"),
        &frozen.head_scales,
        &want_hs,
        GRAD_TOL,
    );
    let fwd = ForwardOptions {
        losses: true,
        loss_weights: Some(w),
        ..Default::default()
    };
    let out = block_on(engine.forward(&tokens, &ruled, &fwd)).unwrap();
    assert_eq!(out.losses.as_ref().map(Vec::len), Some(tokens.len() - 1));
    assert_close(
        &format!("{variant} weighted forward loss"),
        &[out.mean_loss()],
        &f64s(&expected, "weighted.loss"),
        OUTPUT_TOL,
    );
    let m = |k: &str| -> f32 { meta.get(k).unwrap_or_else(|| panic!("metadata {k}")).parse().unwrap() };
    let opt = AdamWConfig {
        beta1: m("beta1"),
        beta2: m("beta2"),
        eps: m("eps"),
        weight_decay: m("weight_decay"),
        clip_norm: Some(m("grad_clip_norm")),
    };
    assert_eq!(m("weight_decay_norms"), 0.0, "the engines never decay norm gains");
    let losses: Vec<f64> = (0..3)
        .map(|_| block_on(engine.train_step(seq, &hs, &opt, m("lr"))).unwrap().loss)
        .collect();
    assert_close(
        &format!("{variant} AdamW losses"),
        &losses,
        &f64s(&expected, "adamw_losses"),
        Tolerance::new(1e-5, 1e-3),
    );
}
