//! Every gradient of the CPU engine against central finite differences in
//! f64, on a tiny model: all head scales, and a sample of every weight
//! tensor. Runs the same generic code the f32 engine runs.

use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::batch_gradients;
use nopescope::model::params::Params;
use nopescope::model::rng::Rng;
use nopescope::model::{GradMode, ModelConfig, PositionEncoding};

fn tiny(position_encoding: PositionEncoding, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 8,
        intermediate_size: 12,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 4,
        vocab_size: 11,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: tied,
        training_length: 7,
        position_encoding,
        bos_token_id: None,
    }
}

fn batch(seed: u64, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    vec![
        (0..7).map(|_| rng.below(vocab) as u32).collect(),
        (0..5).map(|_| rng.below(vocab) as u32).collect(),
    ]
}

fn check_model(position_encoding: PositionEncoding, tied: bool) {
    let config = tiny(position_encoding, tied);
    let mut params = Params::<f64>::random(&config, 0.5, 11);
    // Norm gains away from one, so their gradients are exercised.
    let mut rng = Rng::new(5);
    for t in params.layout.tensors.clone().iter().filter(|t| t.is_norm()) {
        for x in &mut params.data[t.range()] {
            *x = 1.0 + 0.3 * rng.normal();
        }
    }
    let scales = vec![0.7, 1.3, 1.1, 0.9];
    let data = batch(3, config.vocab_size);
    let loss = |p: &Params<f64>, s: &[f64]| batch_gradients(&config, p, &data, s, GradMode::HeadScalesOnly).0;
    let (l0, n, grads, dscales) = batch_gradients(&config, &params, &data, &scales, GradMode::Full);
    assert_eq!(n, 6 + 4);
    assert!((l0 - loss(&params, &scales)).abs() < 1e-12);
    let grads = grads.unwrap();
    let h = 1e-5;
    let tol = Tolerance::new(1e-8, 1e-5);

    let mut num_s = vec![0.0; scales.len()];
    for i in 0..scales.len() {
        let (mut a, mut b) = (scales.clone(), scales.clone());
        a[i] += h;
        b[i] -= h;
        num_s[i] = (loss(&params, &a) - loss(&params, &b)) / (2.0 * h);
    }
    assert_close(
        &format!("head-scale grads {position_encoding:?} tied={tied}"),
        &dscales,
        &num_s,
        tol,
    );

    // Frozen mode: the same head-scale gradients, no weight gradients.
    let (_, _, none, frozen) = batch_gradients(&config, &params, &data, &scales, GradMode::HeadScalesOnly);
    assert!(none.is_none());
    assert_close(
        "frozen-mode head-scale grads",
        &frozen,
        &dscales,
        Tolerance::new(1e-14, 1e-12),
    );

    // Five entries of every tensor, spread over it.
    for t in &params.layout.tensors {
        let idx: Vec<usize> = (0..5).map(|k| t.offset + (k * 7919) % t.len()).collect();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &i in &idx {
            let mut p = params.clone();
            p.data[i] += h;
            let a = loss(&p, &scales);
            p.data[i] -= 2.0 * h;
            let b = loss(&p, &scales);
            got.push(grads[i]);
            want.push((a - b) / (2.0 * h));
        }
        assert_close(
            &format!("grad {} ({position_encoding:?}, tied={tied})", t.name),
            &got,
            &want,
            tol,
        );
    }
}

#[test]
fn nope_gradients_match_finite_differences() {
    check_model(PositionEncoding::None, false);
}

#[test]
fn nope_tied_gradients_match_finite_differences() {
    check_model(PositionEncoding::None, true);
}

#[test]
fn rope_gradients_match_finite_differences() {
    check_model(PositionEncoding::Rope { theta: 10000.0 }, false);
}
