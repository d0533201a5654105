//! The paper's finding on the bundled models: pass-key retrieval, validation
//! perplexity and attention entropy against length for NoPE, NoPE with the
//! best uniform scale at each length, and the RoPE twin; the entropy of the
//! retrieving query per head; the fitted scale rule s*(i) = 1 + a ln(i / L).
//! Written against the engine trait; `figures` draws it and `markdown`
//! writes docs/RESULTS.md from it.

use serde::Serialize;

use super::eval::{eval_lengths, windows, LengthResult, Silent};
use super::passkey::{passkey_lengths, Filler, PasskeyBuilder, PasskeyResult};
use crate::model::engine::{Engine, ForwardOptions};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;

/// The held-out Moby-Dick chapters, the second real-text filler.
pub const MOBY_VALIDATION: &str = "assets/text/moby-dick-validation.txt";

#[derive(Debug, Clone)]
pub struct Options {
    /// Multiples of the training length (0.5 = L/2).
    pub length_factors: Vec<f64>,
    pub scales: Vec<f32>,
    pub trials: usize,
    /// Validation windows per length for perplexity and entropy.
    pub windows: usize,
    /// Validation windows of the longest length for entropy by position.
    pub position_windows: usize,
    pub seed: u64,
}

impl Options {
    pub fn full() -> Self {
        Options {
            length_factors: vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            scales: (0..=10).map(|k| 1.0 + 0.1 * k as f32).collect(),
            trials: 50,
            windows: 4,
            position_windows: 2,
            seed: super::train::PASSKEY_EVAL_SEED,
        }
    }

    /// The smallest run that still exercises every part (CI).
    pub fn quick() -> Self {
        Options {
            length_factors: vec![0.5, 1.0],
            scales: vec![1.0, 1.5],
            trials: 4,
            windows: 1,
            position_windows: 1,
            seed: super::train::PASSKEY_EVAL_SEED,
        }
    }
}

/// One row of the comparison (a model at a scale policy) across lengths.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// The scale used at each length.
    pub scales: Vec<f32>,
    pub passkey: Vec<PasskeyResult>,
    pub validation: Vec<LengthResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub name: String,
    /// (position, entropy in bits), positions binned.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub training_length: usize,
    pub lengths: Vec<usize>,
    pub nope: Row,
    pub nope_best: Row,
    pub rope: Row,
    /// NoPE at every scale of the sweep: (scale, pass-key results per length).
    pub sweep: Vec<(f32, Vec<PasskeyResult>)>,
    /// Validation loss of NoPE at every scale: (scale, loss per length).
    pub sweep_loss: Vec<(f32, Vec<f64>)>,
    /// a of s*(i) = 1 + a ln(i / L), least squares over lengths past L.
    pub fit_a: Option<f64>,
    /// (layer, head) of the heads whose retrieving-query entropy grows most
    /// from L to the longest length, most distracted first.
    pub distracted_heads: Vec<(usize, usize)>,
    /// Entropy by position on validation text at the longest length.
    pub entropy_by_position: Vec<Curve>,
}

/// The scale of the sweep with the best accuracy; ties go to the lower key
/// loss.
pub(super) fn best_index(results: &[&PasskeyResult]) -> usize {
    let mut best = 0;
    for (i, r) in results.iter().enumerate() {
        let b = results[best];
        if r.accuracy > b.accuracy || (r.accuracy == b.accuracy && r.key_loss < b.key_loss) {
            best = i;
        }
    }
    best
}

/// Least-squares a of s - 1 = a ln(i / L) over the lengths past L.
pub fn fit_scale_rule(lengths: &[usize], scales: &[f32], training_length: usize) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (&i, &s) in lengths.iter().zip(scales) {
        if i > training_length {
            let x = (i as f64 / training_length as f64).ln();
            num += (s as f64 - 1.0) * x;
            den += x * x;
        }
    }
    (den > 0.0).then(|| num / den)
}

/// Mean entropy by position over windows, binned on a log scale: the mean
/// over every layer and head, and one curve per head in `heads`.
async fn entropy_curves<E: Engine>(
    engine: &mut E,
    wins: &[Vec<u32>],
    scales: &HeadScales,
    heads: &[(usize, usize)],
    name: &str,
) -> Result<Vec<Curve>> {
    let cfg = engine.config().clone();
    let t = wins[0].len();
    let lh = cfg.num_layers * cfg.num_heads;
    let mut sum = vec![0.0f64; lh * t];
    for w in wins {
        let out = engine
            .forward(
                w,
                scales,
                &ForwardOptions {
                    entropy: true,
                    ..Default::default()
                },
            )
            .await?;
        let e = out
            .entropy_bits
            .ok_or_else(|| Error::Engine("engine returned no entropy".into()))?;
        for (acc, x) in sum.iter_mut().zip(e) {
            *acc += x as f64;
        }
    }
    let n = wins.len() as f64;
    // Bins: every position up to 16, then 48 log-spaced bins.
    let mut edges: Vec<usize> = (0..=16).collect();
    let bins = 48;
    for k in 1..=bins {
        let e = (16.0 * ((t as f64) / 16.0).powf(k as f64 / bins as f64)).round() as usize;
        if e > *edges.last().expect("non-empty") {
            edges.push(e.min(t));
        }
    }
    let curve = |f: &dyn Fn(usize) -> f64| -> Vec<(f64, f64)> {
        edges
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let mean = (a..b).map(f).sum::<f64>() / (b - a) as f64;
                // Position i counts from 1 (the first query sees 1 key).
                (((a + 1) as f64 * b as f64).sqrt(), mean)
            })
            .collect()
    };
    let mut curves = vec![Curve {
        name: format!("{name}: mean of all heads"),
        points: curve(&|i| (0..lh).map(|h| sum[h * t + i]).sum::<f64>() / (lh as f64 * n)),
    }];
    for &(l, h) in heads {
        let idx = l * cfg.num_heads + h;
        curves.push(Curve {
            name: format!("{name}: layer {l} head {h}"),
            points: curve(&|i| sum[idx * t + i] / n),
        });
    }
    Ok(curves)
}

/// Pass-key retrieval and validation loss/entropy of one model at one
/// scale policy, at every length: one cell of each table.
async fn measure<E: Engine>(
    engine: &mut E,
    builder: &PasskeyBuilder<'_>,
    validation: &[u32],
    bos: Option<u32>,
    lengths: &[usize],
    opts: &Options,
    scales: &HeadScales,
) -> Result<(Vec<PasskeyResult>, Vec<LengthResult>)> {
    let p = passkey_lengths(
        engine,
        builder,
        lengths,
        opts.trials,
        opts.seed,
        Filler::Repeated,
        scales,
        &mut Silent,
    )
    .await?;
    let v = eval_lengths(engine, validation, bos, lengths, opts.windows, scales, &mut Silent).await?;
    Ok((p.results, v.results))
}

/// Runs everything. `nope` and `rope` are the two bundled models; both
/// share the tokenizer behind `builder` and the validation tokens.
#[allow(clippy::too_many_arguments)]
pub async fn run<E: Engine>(
    nope: &mut E,
    rope: &mut E,
    builder: &PasskeyBuilder<'_>,
    validation: &[u32],
    bos: Option<u32>,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Results> {
    let cfg = nope.config().clone();
    let l = cfg.training_length;
    if rope.config().training_length != l {
        return Err(Error::Input(format!(
            "the NoPE model was trained at {l} tokens and the RoPE model at {}: compare models of one training length",
            rope.config().training_length
        )));
    }
    let lengths: Vec<usize> = opts
        .length_factors
        .iter()
        .map(|f| (f * l as f64).round() as usize)
        .collect();
    let mut sweep = Vec::new();
    let mut sweep_loss = Vec::new();
    let mut sweep_val = Vec::new();
    for &s in &opts.scales {
        progress(&format!(
            "NoPE, uniform scale {s:.1}: pass key and validation at {lengths:?}"
        ));
        let hs = HeadScales::uniform(&cfg, s)?;
        let (p, v) = measure(nope, builder, validation, bos, &lengths, opts, &hs).await?;
        sweep_loss.push((s, v.iter().map(|r| r.loss).collect()));
        sweep.push((s, p));
        sweep_val.push(v);
    }
    let one = opts
        .scales
        .iter()
        .position(|&s| s == 1.0)
        .ok_or_else(|| Error::Input("the scale sweep must include 1.0".into()))?;
    let mut best_scales = Vec::new();
    let mut best_passkey = Vec::new();
    let mut best_val = Vec::new();
    for k in 0..lengths.len() {
        let at: Vec<&PasskeyResult> = sweep.iter().map(|(_, r)| &r[k]).collect();
        let b = best_index(&at);
        best_scales.push(opts.scales[b]);
        best_passkey.push(at[b].clone());
        best_val.push(sweep_val[b][k].clone());
    }
    progress(&format!("RoPE: pass key and validation at {lengths:?}"));
    let (rope_p, rope_v) = measure(
        rope,
        builder,
        validation,
        bos,
        &lengths,
        opts,
        &HeadScales::ones(rope.config()),
    )
    .await?;

    let nope_row = Row {
        name: "NoPE".into(),
        scales: vec![1.0; lengths.len()],
        passkey: sweep[one].1.clone(),
        validation: sweep_val[one].clone(),
    };
    // The heads whose retrieving query grows most diffuse past L.
    let at_l = lengths.iter().position(|&x| x == l).unwrap_or(0);
    let last = lengths.len() - 1;
    let ent = |k: usize| &nope_row.passkey[k].retrieval_entropy_bits;
    let mut growth: Vec<(f64, usize, usize)> = Vec::new();
    for (layer, row) in ent(last).iter().enumerate() {
        for (head, &e) in row.iter().enumerate() {
            growth.push((e - ent(at_l)[layer][head], layer, head));
        }
    }
    growth.sort_by(|a, b| b.0.total_cmp(&a.0));
    let distracted_heads: Vec<(usize, usize)> = growth.iter().take(3).map(|&(_, l, h)| (l, h)).collect();

    let longest = *lengths.last().expect("lengths");
    progress(&format!("entropy by position at {longest} tokens"));
    let wins = windows(validation, bos, longest, opts.position_windows)?;
    let mut entropy_by_position =
        entropy_curves(nope, &wins, &HeadScales::ones(&cfg), &distracted_heads, "NoPE").await?;
    let best_last = best_scales[last];
    let mut best_curves = entropy_curves(
        nope,
        &wins,
        &HeadScales::uniform(&cfg, best_last)?,
        &distracted_heads,
        &format!("NoPE, s = {best_last:.1}"),
    )
    .await?;
    entropy_by_position.append(&mut best_curves);
    let reference = entropy_by_position[0]
        .points
        .iter()
        .map(|&(i, _)| (i, (i + 1.0).log2()))
        .collect();
    entropy_by_position.push(Curve {
        name: "log2(i+1): uniform attention".into(),
        points: reference,
    });

    Ok(Results {
        training_length: l,
        fit_a: fit_scale_rule(&lengths, &best_scales, l),
        lengths,
        nope_best: Row {
            name: "NoPE, best uniform scale".into(),
            scales: best_scales,
            passkey: best_passkey,
            validation: best_val,
        },
        nope: nope_row,
        rope: Row {
            name: "RoPE".into(),
            scales: vec![1.0; rope_p.len()],
            passkey: rope_p,
            validation: rope_v,
        },
        sweep,
        sweep_loss,
        distracted_heads,
        entropy_by_position,
    })
}

/// The conditions, each with what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The check that RoPE breaks no later than NoPE, from the first length
/// at which each breaks (None: no break measured).
pub fn rope_breaks_no_later(what: String, rope: Option<usize>, nope: Option<usize>) -> Check {
    let show = |b: Option<usize>| b.map(|x| x.to_string()).unwrap_or_else(|| "no break measured".into());
    Check {
        what,
        measured: format!("RoPE: {}, NoPE: {}", show(rope), show(nope)),
        met: match (rope, nope) {
            (Some(a), Some(b)) => Some(a <= b),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        },
    }
}

fn acc_at(row: &Row, lengths: &[usize], length: usize) -> Option<f64> {
    lengths
        .iter()
        .position(|&x| x == length)
        .map(|k| row.passkey[k].accuracy)
}

/// First length past L where accuracy falls below half of accuracy at L.
fn break_length(row: &Row, lengths: &[usize], l: usize) -> Option<usize> {
    let at_l = acc_at(row, lengths, l)?;
    lengths
        .iter()
        .zip(&row.passkey)
        .find(|(&x, p)| x > l && p.accuracy < 0.5 * at_l)
        .map(|(&x, _)| x)
}

pub fn checks(r: &Results) -> Vec<Check> {
    let l = r.training_length;
    let ls = &r.lengths;
    let pct = |x: f64| format!("{:.0}%", 100.0 * x);
    let mut out = Vec::new();
    let nope_l = acc_at(&r.nope, ls, l);
    out.push(Check {
        what: format!("NoPE pass-key accuracy at L = {l} is at least 90%"),
        measured: nope_l.map(pct).unwrap_or_else(|| "not measured".into()),
        met: nope_l.map(|a| a >= 0.9),
    });
    let nope_4l = acc_at(&r.nope, ls, 4 * l);
    out.push(Check {
        what: "NoPE accuracy at 4L is at most half of that at L".into(),
        measured: match (nope_l, nope_4l) {
            (Some(a), Some(b)) => format!("{} at 4L against {} at L", pct(b), pct(a)),
            _ => "not measured".into(),
        },
        met: nope_l.zip(nope_4l).map(|(a, b)| b <= 0.5 * a),
    });
    let k_l = ls.iter().position(|&x| x == l);
    let k_4l = ls.iter().position(|&x| x == 4 * l);
    let mean_ret = |k: usize| r.nope.passkey[k].mean_retrieval_entropy_bits();
    let heads_ret = |k: usize| -> f64 {
        let e = &r.nope.passkey[k].retrieval_entropy_bits;
        r.distracted_heads.iter().map(|&(a, b)| e[a][b]).sum::<f64>() / r.distracted_heads.len().max(1) as f64
    };
    out.push(Check {
        what: "the retrieving query's attention entropy rises past L (NoPE, mean of all heads and of the 3 most distracted)".into(),
        measured: match (k_l, k_4l) {
            (Some(a), Some(b)) => format!(
                "all heads {:.2} -> {:.2} bits, distracted heads {:.2} -> {:.2} bits (L -> 4L)",
                mean_ret(a),
                mean_ret(b),
                heads_ret(a),
                heads_ret(b)
            ),
            _ => "not measured".into(),
        },
        met: k_l.zip(k_4l).map(|(a, b)| mean_ret(b) > mean_ret(a)),
    });
    out.push(rope_breaks_no_later(
        "RoPE breaks no later than NoPE (first length past L with accuracy under half of that at L)".into(),
        break_length(&r.rope, ls, l),
        break_length(&r.nope, ls, l),
    ));
    for f in [2, 4] {
        let x = f * l;
        let (a, b, c) = (nope_l, acc_at(&r.nope, ls, x), acc_at(&r.nope_best, ls, x));
        let (met, measured) = match (a, b, c) {
            (Some(a), Some(b), Some(c)) => {
                let lost = a - b;
                let back = c - b;
                if lost <= 0.0 {
                    out.push(Check {
                        what: format!("the best uniform scale takes back at least half of the accuracy lost at {f}L"),
                        measured: format!("nothing to take back: NoPE keeps {} at {f}L ({} at L)", pct(b), pct(a)),
                        met: Some(true),
                    });
                    continue;
                }
                (
                    Some(back >= 0.5 * lost),
                    format!(
                        "lost {} (from {} at L to {}), took back {} with s = {:.1}",
                        pct(lost.max(0.0)),
                        pct(a),
                        pct(b),
                        pct(back),
                        r.nope_best.scales[ls.iter().position(|&y| y == x).expect("measured")]
                    ),
                )
            }
            _ => (None, "not measured".into()),
        };
        out.push(Check {
            what: format!("the best uniform scale takes back at least half of the accuracy lost at {f}L"),
            measured,
            met,
        });
    }
    out
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * x)
    }
}

/// docs/RESULTS.md from the results; `command` regenerates it.
/// Where a run's inputs and outputs are, as the report names them.
#[derive(Debug, Clone)]
pub struct Sources {
    pub nope: String,
    pub rope: String,
    pub text: String,
    pub out: String,
}

/// The project's own run: the bundled models and text (relative to the
/// repository's root), into docs/; the command line's defaults.
pub const BUNDLED_NOPE: &str = "assets/models/nope-sotu";
pub const BUNDLED_ROPE: &str = "assets/models/rope-sotu";
pub const BUNDLED_TEXT: &str = "assets/text/sotu-validation.txt";
pub const RESULTS_DIR: &str = "docs";

impl Default for Sources {
    fn default() -> Self {
        Sources {
            nope: BUNDLED_NOPE.into(),
            rope: BUNDLED_ROPE.into(),
            text: BUNDLED_TEXT.into(),
            out: RESULTS_DIR.into(),
        }
    }
}

impl Sources {
    /// Each input or output by its flag: (flag, as given, its default).
    pub fn by_flag<'a>(&'a self, defaults: &'a Sources) -> [(&'static str, &'a str, &'a str); 4] {
        [
            ("--nope", &self.nope, &defaults.nope),
            ("--rope", &self.rope, &defaults.rope),
            ("--text", &self.text, &defaults.text),
            ("--out", &self.out, &defaults.out),
        ]
    }

    /// The report's sentence on where its numbers come from.
    fn sentence(&self, l: usize) -> String {
        let bundled = Sources::default();
        let models = if (self.nope.as_str(), self.rope.as_str()) == (bundled.nope.as_str(), bundled.rope.as_str()) {
            "the bundled models"
        } else {
            "the models"
        };
        let text = if self.text == bundled.text {
            "the shipped validation text"
        } else {
            "the text"
        };
        format!(
            "from {models} `{}` and `{}` (training length L = {l}) and {text} `{}`",
            self.nope, self.rope, self.text
        )
    }
}

pub fn markdown(r: &Results, command: &str, engine: &str, minutes: f64, sources: &Sources) -> String {
    use std::fmt::Write;
    let l = r.training_length;
    let mut s = String::new();
    let head = |s: &mut String, first: &str| {
        let _ = write!(s, "| {first} |");
        for &x in &r.lengths {
            let f = x as f64 / l as f64;
            let label = if f >= 1.0 {
                format!("{f:.0}L")
            } else {
                format!("L/{:.0}", 1.0 / f)
            };
            let _ = write!(s, " {x} ({label}) |");
        }
        s.push('\n');
        s.push_str(&format!("|---|{}\n", "---:|".repeat(r.lengths.len())));
    };
    let _ = writeln!(s, "# Results: where NoPE breaks, and what a temperature takes back\n");
    let _ = writeln!(
        s,
        "Generated by `{command}` ({engine}, {minutes:.1} min) {}. Nothing here is edited by hand: rerun the command to \
regenerate this file, `{out}/figures/` and `{out}/results.json`.\n",
        sources.sentence(l),
        out = sources.out
    );
    let _ = writeln!(s, "## What the issue asked, checked on these numbers\n");
    s.push_str("| condition | measured | met |\n|---|---|---|\n");
    for c in checks(r) {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", c.what, c.measured);
    }
    let trials = r.nope.passkey.first().map(|p| p.trials).unwrap_or(0);
    let _ = writeln!(
        s,
        "\n## Pass-key retrieval\n\nGreedy, all key digits exact; {trials} trials per cell, the key at depths spread \
evenly from the start to the end of the filler (the paper's repeated sentences); the same keys and depths in \
every cell. The best uniform scale is chosen per length from the sweep below (ties: lower key loss).\n"
    );
    head(&mut s, "accuracy");
    for row in [&r.nope, &r.nope_best, &r.rope] {
        let _ = write!(s, "| {} |", row.name);
        for (p, sc) in row.passkey.iter().zip(&row.scales) {
            if row.name.contains("best") {
                let _ = write!(s, " {} (s = {sc:.1}) |", pct(p.accuracy));
            } else {
                let _ = write!(s, " {} |", pct(p.accuracy));
            }
        }
        s.push('\n');
    }
    s.push('\n');
    head(&mut s, "mean loss on the key digits (nats)");
    for row in [&r.nope, &r.nope_best, &r.rope] {
        let _ = write!(s, "| {} |", row.name);
        for p in &row.passkey {
            let _ = write!(s, " {:.3} |", p.key_loss);
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n![pass-key accuracy against length](figures/{}.svg)\n\n### The scale sweep (NoPE)\n",
        super::figures::PASSKEY_FIGURE
    );
    head(&mut s, "scale");
    for (sc, res) in &r.sweep {
        let _ = write!(s, "| {sc:.1} |");
        for p in res {
            let _ = write!(s, " {} ({:.2}) |", pct(p.accuracy), p.key_loss);
        }
        s.push('\n');
    }
    s.push_str("\nEach cell: accuracy (mean key loss in nats).\n\n");
    match r.fit_a {
        Some(a) => {
            let _ = writeln!(
                s,
                "Fitted rule for the best uniform scale past L: **s\\*(i) = 1 + {a:.3} ln(i / {l})** \
(least squares on the best scales at {:?}).\n",
                r.lengths.iter().filter(|&&x| x > l).collect::<Vec<_>>()
            );
        }
        None => s.push_str("No length past L was measured, so no scale rule was fitted.\n\n"),
    }
    let _ = writeln!(
        s,
        "## Validation perplexity and attention entropy\n\nOn up to {} windows per length of the validation \
text, each starting with `<s>`; entropy is the mean over layers, heads and positions.\n",
        r.nope.validation.first().map(|v| v.windows).unwrap_or(0)
    );
    head(&mut s, "perplexity / mean entropy (bits)");
    for row in [&r.nope, &r.nope_best, &r.rope] {
        let _ = write!(s, "| {} |", row.name);
        for v in &row.validation {
            let _ = write!(s, " {:.1} / {:.2} |", v.perplexity, v.mean_entropy_bits);
        }
        s.push('\n');
    }
    s.push('\n');
    head(&mut s, "NoPE validation loss by scale");
    for (sc, losses) in &r.sweep_loss {
        let _ = write!(s, "| {sc:.1} |");
        for x in losses {
            let _ = write!(s, " {x:.3} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n## Which heads are distracted\n\nEntropy (bits) of the attention row of the query that must \
retrieve the key (the position that predicts its first digit), NoPE at s = 1, mean over trials; \
log2 of the number of keys it sees is the entropy of uniform attention. Most distracted (largest rise from L to \
the longest length): {}.\n",
        r.distracted_heads
            .iter()
            .map(|(a, b)| format!("layer {a} head {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    head(&mut s, "layer, head");
    if let Some(first) = r.nope.passkey.first() {
        for (layer, heads) in first.retrieval_entropy_bits.iter().enumerate() {
            for head in 0..heads.len() {
                let mark = if r.distracted_heads.contains(&(layer, head)) {
                    " **"
                } else {
                    " "
                };
                let _ = write!(s, "|{mark}{layer}, {head}{} |", mark.trim());
                for p in &r.nope.passkey {
                    let _ = write!(s, " {:.2} |", p.retrieval_entropy_bits[layer][head]);
                }
                s.push('\n');
            }
        }
        let _ = write!(s, "| log2(keys seen) |");
        for p in &r.nope.passkey {
            let _ = write!(s, " {:.2} |", ((p.length - 5) as f64).log2());
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n![attention entropy against position](figures/{}.svg)\n\nEntropy against query position on validation \
windows of {} tokens: the mean of all heads and the most distracted heads, for NoPE and NoPE with the best uniform \
scale at that length, against log2(i+1), the entropy of uniform attention over the i+1 keys a query sees. PNG \
versions sit beside the SVGs.",
        super::figures::ENTROPY_FIGURE,
        r.lengths.last().copied().unwrap_or(0)
    );
    s
}

/// The length table in plain text (the CLI prints it).
pub fn short_table(r: &Results) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>7} | {:>14} | {:>24} | {:>14} | {:>10} | {:>12}",
        "length", "NoPE pass key", "NoPE, best scale s", "RoPE pass key", "NoPE ppl", "NoPE entropy"
    );
    for (k, &x) in r.lengths.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>7} | {:>14} | {:>15} (s = {:.1}) | {:>14} | {:>10.1} | {:>7.2} bits",
            x,
            pct(r.nope.passkey[k].accuracy),
            pct(r.nope_best.passkey[k].accuracy),
            r.nope_best.scales[k],
            pct(r.rope.passkey[k].accuracy),
            r.nope.validation[k].perplexity,
            r.nope.validation[k].mean_entropy_bits
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::Sources;

    /// The report names the models and text it was run on: the bundled
    /// ones as such (the words of docs/RESULTS.md), others by their paths
    /// (a run on one's own model named the bundled ones).
    #[test]
    fn the_report_names_what_it_ran_on() {
        assert_eq!(
            Sources::default().sentence(256),
            "from the bundled models `assets/models/nope-sotu` and `assets/models/rope-sotu` (training length L = 256) \
             and the shipped validation text `assets/text/sotu-validation.txt`"
        );
        let own = Sources {
            nope: "/data/my-nope".into(),
            text: "book.txt".into(),
            ..Sources::default()
        };
        assert_eq!(
            own.sentence(512),
            "from the models `/data/my-nope` and `assets/models/rope-sotu` (training length L = 512) and the text `book.txt`"
        );
    }
}
