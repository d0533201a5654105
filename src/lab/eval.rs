//! Loss, perplexity and attention entropy against input length: the
//! measurement behind every table of the paper, generic over the engine.

use serde::Serialize;

use crate::model::engine::{Engine, ForwardOptions};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;

/// Progress of long work; returning false asks the work to stop, keeping
/// what it has.
pub trait Progress {
    fn update(&mut self, done: usize, total: usize, message: &str) -> bool;
}

/// Progress that nobody watches.
pub struct Silent;
impl Progress for Silent {
    fn update(&mut self, _: usize, _: usize, _: &str) -> bool {
        true
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LengthResult {
    pub length: usize,
    pub windows: usize,
    /// Mean next-token loss in nats over every prediction of every window.
    pub loss: f64,
    pub perplexity: f64,
    /// Mean over layers, heads and positions.
    pub mean_entropy_bits: f64,
    /// Mean over positions and windows, per layer, per head.
    pub entropy_bits: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub results: Vec<LengthResult>,
    /// True when the caller stopped the run early; `results` holds the
    /// lengths that finished.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// -ln softmax(row)[target] in f64, for scoring a few rows of returned
/// logits (pass-key digits, copy documents); an error if the row holds no
/// finite maximum.
pub fn row_nll(row: &[f32], target: usize) -> Result<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return Err(Error::Engine(format!("logits hold {max}")));
    }
    let lse = max as f64 + row.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
    Ok(lse - row[target] as f64)
}

/// Start offsets of up to `max_windows` windows of `need` tokens, spread
/// evenly over `available` tokens without overlapping.
pub fn window_starts(available: usize, need: usize, max_windows: usize) -> Vec<usize> {
    if need == 0 || available < need || max_windows == 0 {
        return Vec::new();
    }
    let count = (available / need).min(max_windows);
    let slack = available - count * need;
    (0..count)
        .map(|k| k * need + if count > 1 { slack * k / (count - 1) } else { 0 })
        .collect()
}

/// The windows of `length` tokens: `bos` (when given) then text tokens.
pub fn windows(tokens: &[u32], bos: Option<u32>, length: usize, max_windows: usize) -> Result<Vec<Vec<u32>>> {
    if length < 2 {
        return Err(Error::Input(format!(
            "length {length} is too short: a window needs at least 2 tokens"
        )));
    }
    if max_windows == 0 {
        return Err(Error::Input(
            "windows: 0 windows were asked for; at least 1 is needed".into(),
        ));
    }
    let need = length - bos.is_some() as usize;
    let starts = window_starts(tokens.len(), need, max_windows);
    if starts.is_empty() {
        return Err(Error::Input(format!(
            "the text has {} tokens; a window of length {length} needs {need}",
            tokens.len()
        )));
    }
    Ok(starts
        .into_iter()
        .map(|s| bos.into_iter().chain(tokens[s..s + need].iter().copied()).collect())
        .collect())
}

/// Evaluates every length on windows of `tokens`.
pub async fn eval_lengths<E: Engine>(
    engine: &mut E,
    tokens: &[u32],
    bos: Option<u32>,
    lengths: &[usize],
    max_windows: usize,
    head_scales: &HeadScales,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    let cfg = engine.config().clone();
    let (layers, heads) = (cfg.num_layers, cfg.num_heads);
    let plan: Vec<Vec<Vec<u32>>> = lengths
        .iter()
        .map(|&l| windows(tokens, bos, l, max_windows))
        .collect::<Result<_>>()?;
    let total: usize = plan.iter().zip(lengths).map(|(w, &l)| w.len() * l).sum();
    let mut done = 0;
    let mut results = Vec::new();
    for (wins, &length) in plan.iter().zip(lengths) {
        let mut loss_sum = 0.0;
        let mut predictions = 0;
        let mut ent = vec![0.0f64; layers * heads];
        for (n, w) in wins.iter().enumerate() {
            if !progress.update(
                done,
                total,
                &format!("length {length}, window {}/{}", n + 1, wins.len()),
            ) {
                return Ok(EvalReport {
                    results,
                    cancelled: true,
                });
            }
            let out = engine
                .forward(
                    w,
                    head_scales,
                    &ForwardOptions {
                        entropy: true,
                        ..Default::default()
                    },
                )
                .await?;
            loss_sum += out.loss_sum;
            predictions += out.predictions;
            let e = out
                .entropy_bits
                .ok_or_else(|| Error::Engine("engine returned no entropy".into()))?;
            for (lh, acc) in ent.iter_mut().enumerate() {
                *acc += e[lh * length..(lh + 1) * length].iter().map(|&x| x as f64).sum::<f64>();
            }
            done += length;
        }
        let positions = (wins.len() * length) as f64;
        let loss = loss_sum / predictions as f64;
        let entropy_bits: Vec<Vec<f64>> = ent
            .chunks(heads)
            .map(|r| r.iter().map(|x| x / positions).collect())
            .collect();
        let mean_entropy_bits = ent.iter().sum::<f64>() / (positions * (layers * heads) as f64);
        results.push(LengthResult {
            length,
            windows: wins.len(),
            loss,
            perplexity: loss.exp(),
            mean_entropy_bits,
            entropy_bits,
        });
    }
    progress.update(total, total, "done");
    Ok(EvalReport {
        results,
        cancelled: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_spread_and_disjoint() {
        assert_eq!(window_starts(100, 30, 10), vec![0, 35, 70]);
        assert_eq!(window_starts(100, 30, 1), vec![0]);
        assert_eq!(window_starts(29, 30, 4), Vec::<usize>::new());
        let toks: Vec<u32> = (0..10).collect();
        let w = windows(&toks, Some(99), 4, 2).unwrap();
        assert_eq!(w, vec![vec![99, 0, 1, 2], vec![99, 7, 8, 9]]);
        assert!(windows(&toks, None, 11, 2)
            .unwrap_err()
            .to_string()
            .contains("10 tokens"));
        // Zero windows is said as such, not as a text too short.
        let e = windows(&toks, None, 4, 0).unwrap_err().to_string();
        assert!(e.contains("0 windows were asked for"), "{e}");
    }
}
