//! Every gradient of the CPU engine against central finite differences in
//! f64, on a tiny model: all head scales, and a sample of every weight
//! tensor. Runs the same generic code the f32 engine runs.

use nopescope::model::check::{assert_close, Tolerance};
use nopescope::model::cpu::{batch_gradients, weighted_batch_gradients};
use nopescope::model::head_scales::ScaleRule;
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
    check_model_with(position_encoding, tied, None, ScaleRule::Constant);
}

/// Loss weights per prediction (some 0, some above 1) for `batch`'s sequences.
fn weights_for(data: &[Vec<u32>]) -> Vec<Vec<f32>> {
    data.iter()
        .enumerate()
        .map(|(s, seq)| {
            (0..seq.len() - 1)
                .map(|i| if (i + s) % 3 == 0 { 0.0 } else { 0.5 + 0.25 * i as f32 })
                .collect()
        })
        .collect()
}

fn check_model_with(position_encoding: PositionEncoding, tied: bool, weights: Option<&[Vec<f32>]>, rule: ScaleRule) {
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
    let run = |p: &Params<f64>, s: &[f64], mode| {
        if weights.is_none() && rule.is_constant() {
            batch_gradients(&config, p, &data, s, mode)
        } else {
            weighted_batch_gradients(&config, p, &data, weights, s, rule, mode)
        }
    };
    let loss = |p: &Params<f64>, s: &[f64]| run(p, s, GradMode::HeadScalesOnly).0;
    let (l0, n, grads, dscales) = run(&params, &scales, GradMode::Full);
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
        &format!(
            "head-scale grads {position_encoding:?} tied={tied} {rule:?} weighted={}",
            weights.is_some()
        ),
        &dscales,
        &num_s,
        tol,
    );

    // Frozen mode: the same head-scale gradients, no weight gradients.
    let (_, _, none, frozen) = run(&params, &scales, GradMode::HeadScalesOnly);
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
            &format!("grad {} ({position_encoding:?}, tied={tied}, {rule:?})", t.name),
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

/// Loss weights and the log-n rule (training length 3, so positions 3..6
/// have r(i) > 1): every gradient against central differences.
#[test]
fn weighted_loss_and_log_n_rule_gradients_match_finite_differences() {
    let w = weights_for(&batch(3, 11));
    check_model_with(
        PositionEncoding::None,
        false,
        Some(&w),
        ScaleRule::LogN { training_length: 3 },
    );
}

#[test]
fn weighted_loss_and_fitted_rule_gradients_match_finite_differences_with_rope() {
    let w = weights_for(&batch(3, 11));
    check_model_with(
        PositionEncoding::Rope { theta: 10000.0 },
        true,
        Some(&w),
        ScaleRule::Fitted {
            a: 0.4,
            training_length: 2,
        },
    );
}

/// The weighted mean is sum w l / sum w: weights of one everywhere give the
/// plain mean, and a weight of 0 removes a prediction.
#[test]
fn loss_weights_weigh_the_mean() {
    let config = tiny(PositionEncoding::None, false);
    let params = Params::<f64>::random(&config, 0.5, 11);
    let data = batch(3, config.vocab_size);
    let scales = vec![1.0; 4];
    let ones: Vec<Vec<f32>> = data.iter().map(|s| vec![1.0; s.len() - 1]).collect();
    let plain = batch_gradients(&config, &params, &data, &scales, GradMode::HeadScalesOnly).0;
    let c = ScaleRule::Constant;
    let weighted = weighted_batch_gradients(
        &config,
        &params,
        &data,
        Some(&ones),
        &scales,
        c,
        GradMode::HeadScalesOnly,
    )
    .0;
    assert!((plain - weighted).abs() < 1e-12);
    // Only the first sequence's first prediction scored: its loss alone.
    let mut one: Vec<Vec<f32>> = data.iter().map(|s| vec![0.0; s.len() - 1]).collect();
    one[0][0] = 3.0;
    let only = weighted_batch_gradients(
        &config,
        &params,
        &data,
        Some(&one),
        &scales,
        c,
        GradMode::HeadScalesOnly,
    )
    .0;
    let single = batch_gradients(
        &config,
        &params,
        &[data[0][..2].to_vec()],
        &scales,
        GradMode::HeadScalesOnly,
    )
    .0;
    assert!((only - single).abs() < 1e-12, "{only} vs {single}");
}
