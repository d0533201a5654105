//! The PyTorch-fixture check, written once for every engine: logits, loss
//! and entropy to rtol 1e-4, every weight and head-scale gradient (full and
//! frozen mode) to rtol 1e-3, and the losses of 3 AdamW steps. The fixtures
//! are written by tests/reference/make_fixture.py in f64 from the saved f32
//! weights.

use std::path::Path;

use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::files::load_model_dir;
use nopescope::model::head_scales::{HeadScales, HEAD_SCALES_FILE};
use nopescope::model::optim::AdamWConfig;
use nopescope::model::params::Params;
use pollster::block_on;

use nopescope::model::{Engine, ForwardOptions, GradMode, LogitsRequest, ModelConfig};
use safetensors::SafeTensors;

fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Loads fixture `variant` (tests/fixtures/<variant>), builds an engine
/// with `make` and checks it against the fixture.
pub fn check_engine_against_fixture<E: Engine>(variant: &str, make: impl FnOnce(ModelConfig, Params<f32>) -> E) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(variant);
    let model = load_model_dir(&dir).unwrap();
    let hs = HeadScales::load(&dir.join(HEAD_SCALES_FILE), &model.config).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&bytes).unwrap();
    let tokens: Vec<u32> = expected
        .tensor("tokens")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let layout = model.params.layout.clone();
    let mut engine = make(model.config.clone(), model.params);
    let seq = std::slice::from_ref(&tokens);

    let options = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: true,
    };
    let out = block_on(engine.forward(&tokens, &hs, &options)).unwrap();
    let tol4 = Tolerance::new(1e-5, 1e-4);
    assert_close(
        &format!("{variant} logits"),
        out.logits.as_ref().unwrap(),
        &f64s(&expected, "logits"),
        tol4,
    );
    assert_close(
        &format!("{variant} loss"),
        &[out.mean_loss()],
        &f64s(&expected, "loss"),
        tol4,
    );
    assert_close(
        &format!("{variant} entropy"),
        out.entropy_bits.as_ref().unwrap(),
        &f64s(&expected, "entropy_bits"),
        tol4,
    );

    let g = block_on(engine.gradients(seq, &hs, GradMode::Full)).unwrap();
    let tol3 = Tolerance::new(1e-6, 1e-3);
    let weights = g.weights.as_ref().unwrap();
    assert_eq!(weights.len(), layout.total);
    for t in &layout.tensors {
        let want = f64s(&expected, &format!("grad.{}", t.name));
        assert_close(&format!("{variant} grad.{}", t.name), &weights[t.range()], &want, tol3);
    }
    let want_scales = f64s(&expected, "grad.head_scales");
    assert_close(
        &format!("{variant} grad.head_scales"),
        &g.head_scales,
        &want_scales,
        tol3,
    );
    let frozen = block_on(engine.gradients(seq, &hs, GradMode::HeadScalesOnly)).unwrap();
    assert!(frozen.weights.is_none());
    assert_close(
        &format!("{variant} frozen grad.head_scales"),
        &frozen.head_scales,
        &want_scales,
        tol3,
    );

    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
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
