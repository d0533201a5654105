//! The temperature part of `nopescope reproduce`: pass-key retrieval at
//! L/2..16L for NoPE with the head scales searched at 4L and 8L (shipped
//! next to the model, made by `nopescope search`), the `fitted` and `log-n`
//! rules, the best uniform scale and RoPE, on the paper's repeated filler
//! and on real-text fillers that no search saw; a length x depth accuracy
//! heatmap; each head's searched scale against its entropy at L.
//! Written against the engine trait, like the rest of `reproduce`.

use serde::Serialize;

use super::eval::Silent;
use super::passkey::{passkey_lengths, Filler, FillerText, PasskeyBuilder, PasskeyResult};
use super::reproduce::best_index;
use super::search::rank_correlation;
use crate::model::engine::Engine;
use crate::model::error::Result;
use crate::model::head_scales::{HeadScales, ScaleRule};

/// A filler and the rows measured on it.
#[derive(Debug, Clone, Serialize)]
pub struct FillerRows {
    pub filler: String,
    /// Per row: name, then the pass-key result at each length.
    pub rows: Vec<(String, Vec<PasskeyResult>)>,
    /// The best uniform scale at each length on this filler.
    pub best_uniform: Vec<f32>,
}

/// One head's searched scale and its attention entropy at L.
#[derive(Debug, Clone, Serialize)]
pub struct HeadPoint {
    pub layer: usize,
    pub head: usize,
    pub scale: f32,
    pub entropy_bits: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub lengths: Vec<usize>,
    pub training_length: usize,
    pub fillers: Vec<FillerRows>,
    /// The searched scales the scatter uses (the first set) and its name.
    pub scatter_of: Option<String>,
    pub scatter: Vec<HeadPoint>,
    /// Spearman's rank correlation of scale and entropy over the heads.
    pub rank_correlation: Option<f64>,
}

/// What to measure: searched scale sets (name, scales), the fitted rule's
/// a (from the uniform sweep), the scales swept for the best uniform, and
/// the fillers (name, None = repeated sentences).
pub struct ScaleInputs<'a> {
    pub searched: Vec<(String, HeadScales)>,
    pub fit_a: Option<f64>,
    pub sweep: &'a [f32],
    pub fillers: Vec<(String, Option<&'a FillerText>)>,
    /// Per layer and head, the NoPE model's mean attention entropy at L.
    pub entropy_at_l: Vec<Vec<f64>>,
    pub trials: usize,
    pub seed: u64,
    /// What reproduce measured on the repeated filler, reused there.
    pub repeated: Option<Measured<'a>>,
}

/// Reproduce's own rows on the repeated filler, with the same lengths,
/// trials and seed: the uniform sweep and RoPE.
pub struct Measured<'a> {
    pub sweep: &'a [(f32, Vec<PasskeyResult>)],
    pub rope: &'a [PasskeyResult],
}

/// The best uniform scale at each length of a sweep (reproduce's rule:
/// accuracy, then key loss, then the smaller s) and its results.
fn best_by_length(sweep: &[(f32, Vec<PasskeyResult>)]) -> (Vec<f32>, Vec<PasskeyResult>) {
    let n = sweep.first().map_or(0, |s| s.1.len());
    (0..n)
        .map(|k| {
            let at: Vec<&PasskeyResult> = sweep.iter().map(|(_, r)| &r[k]).collect();
            let b = best_index(&at);
            (sweep[b].0, at[b].clone())
        })
        .unzip()
}

/// One row: pass-key retrieval of `nope` (or `rope`) under `hs` at every
/// length on `filler`, with the inputs' trials and seed.
async fn row<E: Engine>(
    engine: &mut E,
    builder: &PasskeyBuilder<'_>,
    lengths: &[usize],
    inputs: &ScaleInputs<'_>,
    filler: Filler<'_>,
    hs: &HeadScales,
) -> Result<Vec<PasskeyResult>> {
    let r = passkey_lengths(
        engine,
        builder,
        lengths,
        inputs.trials,
        inputs.seed,
        filler,
        hs,
        &mut Silent,
    )
    .await?;
    Ok(r.results)
}

/// Runs every row on every filler.
#[allow(clippy::too_many_arguments)]
pub async fn run<E: Engine>(
    nope: &mut E,
    rope: &mut E,
    builder: &PasskeyBuilder<'_>,
    lengths: &[usize],
    inputs: &ScaleInputs<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ScaleReport> {
    let cfg = nope.config().clone();
    let l = cfg.training_length;
    let mut policies: Vec<(String, HeadScales)> = inputs.searched.clone();
    if let Some(a) = inputs.fit_a {
        policies.push((
            format!("NoPE, fitted rule s(i) = 1 + {a:.3} ln(i/L)"),
            HeadScales::ones(&cfg).with_rule(ScaleRule::Fitted { a, training_length: l }),
        ));
    }
    policies.push((
        "NoPE, log-n rule ln(i)/ln(L)".into(),
        HeadScales::ones(&cfg).with_rule(ScaleRule::LogN { training_length: l }),
    ));
    let mut fillers = Vec::new();
    for (fname, text) in &inputs.fillers {
        let filler = text.map_or(Filler::Repeated, Filler::Text);
        // On the repeated filler, the sweep and RoPE are what reproduce
        // measured already (same lengths, trials and seed).
        let known = inputs.repeated.as_ref().filter(|_| text.is_none());
        let sweep = match known {
            Some(m) => m.sweep.to_vec(),
            None => {
                let mut sweep = Vec::new();
                for &s in inputs.sweep {
                    progress(&format!("NoPE, uniform scale {s:.1}, filler {fname}"));
                    let hs = HeadScales::uniform(&cfg, s)?;
                    sweep.push((s, row(nope, builder, lengths, inputs, filler, &hs).await?));
                }
                sweep
            }
        };
        let nope_row = match sweep.iter().find(|(s, _)| *s == 1.0) {
            Some((_, r)) => r.clone(),
            None => row(nope, builder, lengths, inputs, filler, &HeadScales::ones(&cfg)).await?,
        };
        let (best_uniform, best) = best_by_length(&sweep);
        let mut rows = vec![
            ("NoPE".to_string(), nope_row),
            ("NoPE, best uniform scale".into(), best),
        ];
        for (name, hs) in &policies {
            progress(&format!("{name}, filler {fname}: pass key at {lengths:?}"));
            rows.push((name.clone(), row(nope, builder, lengths, inputs, filler, hs).await?));
        }
        let rope_row = match known {
            Some(m) => m.rope.to_vec(),
            None => {
                progress(&format!("RoPE, filler {fname}"));
                let ones = HeadScales::ones(rope.config());
                row(rope, builder, lengths, inputs, filler, &ones).await?
            }
        };
        rows.push(("RoPE".into(), rope_row));
        fillers.push(FillerRows {
            filler: fname.clone(),
            rows,
            best_uniform,
        });
    }
    let (scatter_of, scatter, rank) = match inputs.searched.first() {
        Some((name, hs)) => {
            let mut pts = Vec::new();
            for (layer, row) in inputs.entropy_at_l.iter().enumerate() {
                for (head, &e) in row.iter().enumerate() {
                    pts.push(HeadPoint {
                        layer,
                        head,
                        scale: hs.get(layer, head),
                        entropy_bits: e,
                    });
                }
            }
            let xs: Vec<f64> = pts.iter().map(|p| p.entropy_bits).collect();
            let ys: Vec<f64> = pts.iter().map(|p| p.scale as f64).collect();
            (Some(name.clone()), pts, Some(rank_correlation(&xs, &ys)))
        }
        None => (None, Vec::new(), None),
    };
    Ok(ScaleReport {
        lengths: lengths.to_vec(),
        training_length: l,
        fillers,
        scatter_of,
        scatter,
        rank_correlation: rank,
    })
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The rows NoPE loses and a policy takes back at `length`, on one filler:
/// (lost points, points taken back), from accuracy at L.
pub fn taken_back(f: &FillerRows, name_prefix: &str, length: usize, lengths: &[usize], l: usize) -> Option<(f64, f64)> {
    let base = acc(f, "NoPE", lengths, l)?;
    let nope = acc(f, "NoPE", lengths, length)?;
    let with = acc(f, name_prefix, lengths, length)?;
    Some((base - nope, with - nope))
}

/// Accuracy of the row whose name starts with `name` at `length`.
fn acc(f: &FillerRows, name: &str, lengths: &[usize], length: usize) -> Option<f64> {
    let k = lengths.iter().position(|&x| x == length)?;
    f.rows
        .iter()
        .find(|(n, _)| n.starts_with(name))
        .map(|(_, r)| r[k].accuracy)
}

/// The first length past L where a row's accuracy falls under half of its
/// accuracy at L.
fn breaks_at(f: &FillerRows, name: &str, lengths: &[usize], l: usize) -> Option<usize> {
    let at_l = acc(f, name, lengths, l)?;
    lengths
        .iter()
        .copied()
        .filter(|&x| x > l)
        .find(|&x| acc(f, name, lengths, x).is_some_and(|a| a < 0.5 * at_l))
}

/// The issues' conditions on the temperatures, per filler, each with what
/// was measured (`met` is None where a length was not measured).
pub fn checks(r: &ScaleReport) -> Vec<super::reproduce::Check> {
    use super::reproduce::Check;
    let l = r.training_length;
    let lens = &r.lengths;
    let mut out = Vec::new();
    for f in &r.fillers {
        let name = f.filler.split(" (").next().unwrap_or(&f.filler);
        let nope_l = acc(f, "NoPE", lens, l);
        out.push(Check {
            what: format!("{name}: NoPE retrieves at L at least 90%"),
            measured: nope_l.map_or("not measured".into(), pct),
            met: nope_l.map(|a| a >= 0.9),
        });
        let nope_4l = acc(f, "NoPE", lens, 4 * l);
        out.push(Check {
            what: format!("{name}: NoPE at 4L at most half of its accuracy at L"),
            measured: nope_4l.map_or("not measured".into(), pct),
            met: nope_l.zip(nope_4l).map(|(a, b)| b <= 0.5 * a),
        });
        out.push(super::reproduce::rope_breaks_no_later(
            format!("{name}: RoPE breaks no later than NoPE"),
            breaks_at(f, "RoPE", lens, l),
            breaks_at(f, "NoPE", lens, l),
        ));
        for factor in [2, 4] {
            for policy in ["NoPE, best uniform scale", "NoPE, head scales searched at 4L"] {
                if let Some((lost, back)) = taken_back(f, policy, factor * l, lens, l) {
                    let half = policy.contains("searched") && factor == 2;
                    out.push(Check {
                        what: format!(
                            "{name}: {policy} at {factor}L{}",
                            if half {
                                " takes back at least half of what is lost"
                            } else {
                                ": what it takes back"
                            }
                        ),
                        measured: format!("lost {:.0} points, took back {:+.0}", 100.0 * lost, 100.0 * back),
                        met: if half {
                            Some(lost <= 0.0 || back >= 0.5 * lost)
                        } else {
                            None
                        },
                    });
                }
            }
        }
        if let (Some(h), Some(u)) = (
            acc(f, "NoPE, head scales searched at 4L", lens, 4 * l),
            acc(f, "NoPE, best uniform scale", lens, 4 * l),
        ) {
            out.push(Check {
                what: format!(
                    "{name}: scales searched at 4L retrieve at 4L at least as well as the best uniform scale"
                ),
                measured: format!("{} against {}", pct(h), pct(u)),
                met: Some(h >= u),
            });
        }
        for searched in ["NoPE, head scales searched at 4L", "NoPE, head scales searched at 8L"] {
            if let (Some(h), Some(u)) = (
                acc(f, searched, lens, 8 * l),
                acc(f, "NoPE, best uniform scale", lens, 8 * l),
            ) {
                out.push(Check {
                    what: format!("{name}: {searched} beat the best uniform scale at 8L"),
                    measured: format!("{} against {}", pct(h), pct(u)),
                    met: Some(h > u),
                });
            }
        }
    }
    if let Some(rho) = r.rank_correlation {
        out.push(Check {
            what: "heads with higher entropy at L get larger searched scales (Spearman's rho > 0)".into(),
            measured: format!("rho = {rho:.2}"),
            met: Some(rho > 0.0),
        });
    }
    out
}

/// The markdown section for docs/RESULTS.md.
pub fn markdown(r: &ScaleReport) -> String {
    use std::fmt::Write;
    let l = r.training_length;
    let mut s = String::new();
    let label = |x: usize| {
        let f = x as f64 / l as f64;
        if f >= 1.0 {
            format!("{x} ({f:.0}L)")
        } else {
            format!("{x} (L/{:.0})", 1.0 / f)
        }
    };
    let _ = writeln!(
        s,
        "\n## Temperatures: searched head scales, rules and uniform scales\n\nThe head scales were searched with the \
model frozen by `nopescope search` (pass-key objective: the loss of the key digits, on documents whose filler is \
`assets/text/sotu-tuning.txt`, drawn from their own seed) at 4L and at 8L and ship beside the model \
(`head_scales-4L.json`, `head_scales-8L.json`, with the command that made them inside). The fitted rule's a comes \
from the uniform sweep above; log-n is max(1, ln(i+1)/ln L). The best uniform scale is chosen per length and per \
filler. The real-text fillers were never used by a search: they are the held-out check.\n"
    );
    s.push_str("| condition | measured | met |\n|---|---|---|\n");
    for c in checks(r) {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "reported",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", c.what, c.measured);
    }
    s.push('\n');
    for f in &r.fillers {
        let _ = writeln!(s, "### Filler: {}\n", f.filler);
        let _ = write!(s, "| pass key |");
        for &x in &r.lengths {
            let _ = write!(s, " {} |", label(x));
        }
        s.push('\n');
        s.push_str(&format!("|---|{}\n", "---:|".repeat(r.lengths.len())));
        for (name, row) in &f.rows {
            let _ = write!(s, "| {name} |");
            for (k, p) in row.iter().enumerate() {
                if name.contains("best uniform") {
                    let _ = write!(s, " {} (s = {:.1}) |", pct(p.accuracy), f.best_uniform[k]);
                } else {
                    let _ = write!(s, " {} |", pct(p.accuracy));
                }
            }
            s.push('\n');
        }
        for factor in [2, 4] {
            let x = factor * l;
            let mut parts = Vec::new();
            for (name, _) in f.rows.iter().filter(|(n, _)| n != "NoPE" && n != "RoPE") {
                if let Some((lost, back)) = taken_back(f, name, x, &r.lengths, l) {
                    parts.push(format!("{name}: {:+.0} points", 100.0 * back));
                    if parts.len() == 1 {
                        parts.insert(0, format!("NoPE loses {:.0} points from L", 100.0 * lost));
                    }
                }
            }
            if !parts.is_empty() {
                let _ = writeln!(s, "\nAt {factor}L: {}.", parts.join("; "));
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "![pass-key accuracy by length and depth](figures/{}.svg)\n\nAccuracy by length (columns) and depth of the key \
(rows, 0 = right after the instruction) on the repeated filler, for NoPE, the best uniform scale, the head scales \
searched at 4L and RoPE.\n",
        super::figures::HEATMAP_FIGURE
    );
    if let (Some(name), Some(rho)) = (&r.scatter_of, r.rank_correlation) {
        let _ = writeln!(
            s,
            "![searched scale against entropy](figures/{}.svg)\n\nEach head's scale in {name} against its mean attention \
entropy at L on the validation text. Spearman's rank correlation: **{rho:.2}** ({}).\n",
            super::figures::SCATTER_FIGURE,
            if rho > 0.0 {
                "heads with higher entropy got larger scales, as the paper reports"
            } else {
                "the paper's trend, larger scales for higher-entropy heads, does not hold here"
            }
        );
    }
    s
}
