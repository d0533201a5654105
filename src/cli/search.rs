//! `nopescope search`: the temperature search of `lab::search` from the
//! command line, with a progress bar, a per-step CSV log and the result
//! written atomically with its provenance. Failed, nothing is written and
//! an existing scales file stays as it was. Stopped by Ctrl-C (on Unix),
//! the scales found so far are written, marked as stopped, beside any
//! existing file rather than over it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use indicatif::ProgressBar;
use nopescope::lab::passkey::FillerText;
use nopescope::lab::search::{self, HeadSearchConfig, Objective, SearchData, SearchProgress, SearchStep};
use nopescope::model::files::{self, write_atomic};
use nopescope::model::head_scales::{f32_json, HeadScales};

use super::{err, make_engine, progress_bar, read_text, tokenizer_of, Backend, CliResult, RuleArgs};

/// The command line's settings for one search.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// The model's folder (Hugging Face layout).
    dir: PathBuf,
    /// `uniform` (one scale, a grid) or `heads` (one per layer and head).
    #[arg(long, default_value = "heads", value_parser = ["uniform", "heads"])]
    scales: String,
    /// `passkey` (loss of the key digits) or `text` (next-token loss).
    #[arg(long, default_value = "passkey", value_parser = ["passkey", "text"])]
    objective: String,
    /// The target length in tokens.
    #[arg(long)]
    length: usize,
    /// Steps of the per-head search (AdamW); not used by --scales uniform.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Peak learning rate of the per-head search (warm-up, then cosine).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    lr: f32,
    /// Every scale's starting value (the paper used 1.6).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    init: f32,
    /// Share of the steps spent warming up.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    warmup: f64,
    /// Gradient norm clip.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    clip: f32,
    #[command(flatten)]
    rule: RuleArgs,
    /// The text objective's text; for `passkey`, the filler text (default:
    /// the paper's repeated sentences).
    #[arg(long, visible_alias = "text-filler")]
    text: Option<PathBuf>,
    /// Documents (or text windows) per point of the uniform search; not
    /// used by --scales heads (`passkey` calls its documents --trials;
    /// either name works).
    #[arg(long, visible_alias = "trials", default_value_t = 16)]
    docs: usize,
    /// Seed of the documents and batches (the default, the shipped
    /// scales' own, is disjoint from the evaluation's documents).
    #[arg(long, default_value_t = search::SEARCH_SEED)]
    seed: u64,
    /// Where the scales go (default
    /// DIR/head_scales-<kind>-<objective>-<length>[-<rule>].json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace --out and --log if they exist (without it an existing file
    /// is refused before the search runs).
    #[arg(long)]
    force: bool,
    /// The per-step CSV log (default: --out with .csv).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Where to compute: the CPU engine, the GPU engine (wgpu), or auto.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

/// The signal that asked the search to stop (SIGINT from Ctrl-C, or
/// SIGTERM), 0 while none has: the search stops at its next step and the
/// scales found so far are written; a second one ends the program at once.
static STOP: AtomicI32 = AtomicI32::new(0);

/// From the search's start (nothing to save before it: the default action,
/// ending the program, is right while the model loads). A signal the
/// program was started ignoring (`cmd &` in a script) stays ignored.
#[cfg(unix)]
fn stop_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        if ignored(signal) {
            continue;
        }
        // SAFETY: the action only swaps an atomic, writes a fixed line to
        // stderr and calls `_exit`, all async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(signal, move || {
                if STOP.swap(signal, Ordering::SeqCst) != 0 {
                    libc::_exit(128 + signal);
                }
                let line = b"\nstopping after this step, keeping the scales so far (again to quit now)\n";
                libc::write(2, line.as_ptr().cast(), line.len());
            })
        };
        if let Err(e) = registered {
            eprintln!("note: Ctrl-C will end the search without saving ({e})");
        }
    }
}

/// Whether `signal`'s action is to ignore it.
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: a query (no new action); `old` is plain data it fills.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(unix))]
fn stop_on_signals() {}

/// The CSV log is written beside its place (`partial_log`) this often
/// during a search, so that a run ended by force keeps its record up to
/// there without replacing an earlier run's log before this one is done.
const LOG_EVERY_S: u64 = 10;

/// Where the log goes while the search runs: `log` with `.partial` added.
fn partial_log(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// A step of the head search: the bar, and the CSV log's row.
struct StepBar {
    bar: ProgressBar,
    start: Instant,
    rows: Vec<String>,
    /// When stderr is not a terminal (a log file), a plain line every 30 s.
    last_line: Option<Instant>,
    /// The log as it goes: its path, header and last write.
    log: (PathBuf, &'static str, Instant),
}

impl StepBar {
    fn line(&mut self, text: String) {
        if let Some(last) = self.last_line.as_mut() {
            if last.elapsed().as_secs() >= 30 {
                eprintln!("{text}");
                *last = Instant::now();
            }
        }
    }

    /// The log's text: its header and every row so far.
    fn csv(&self) -> String {
        format!("{}\n{}\n", self.log.1, self.rows.join("\n"))
    }

    /// After a row: the log rewritten if `LOG_EVERY_S` have passed; true
    /// to go on (no Ctrl-C yet).
    fn go_on(&mut self) -> bool {
        if self.log.2.elapsed().as_secs() >= LOG_EVERY_S {
            // A write that fails now is tried again, and said, at the end.
            let _ = write_atomic(&partial_log(&self.log.0), self.csv().as_bytes());
            self.log.2 = Instant::now();
        }
        STOP.load(Ordering::SeqCst) == 0
    }
}

impl SearchProgress for StepBar {
    fn step(&mut self, s: &SearchStep) -> bool {
        let elapsed = self.start.elapsed().as_secs_f64();
        let left = elapsed / s.step as f64 * (s.steps - s.step) as f64;
        self.bar.set_length(s.steps as u64);
        self.bar.set_position(s.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.3}  s min/mean/max {:.3}/{:.3}/{:.3}  {:.0} s left",
            s.loss, s.lr, s.min, s.mean, s.max, left
        ));
        self.line(format!(
            "step {}/{}  loss {:.4}  s min/mean/max {:.3}/{:.3}/{:.3}  {:.0} s left",
            s.step, s.steps, s.loss, s.min, s.mean, s.max, left
        ));
        self.rows.push(format!(
            "{},{},{},{},{},{},{},{:.3}",
            s.step, s.loss, s.lr, s.grad_norm, s.min, s.mean, s.max, elapsed
        ));
        self.go_on()
    }

    fn point(&mut self, scale: f32, loss: f64, done: usize, total: usize) -> bool {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.bar.set_message(format!("s = {scale:.2}: objective {loss:.4}"));
        self.rows
            .push(format!("{scale},{loss},{:.3}", self.start.elapsed().as_secs_f64()));
        self.go_on()
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

/// `typed`: the options given on the command line (by their field names),
/// so that one the search's kind does not use is said, not ignored.
pub fn run(a: SearchArgs, typed: &[String]) -> CliResult<()> {
    let uniform = a.scales == "uniform";
    let unused: &[&str] = if uniform {
        &["steps", "batch", "lr", "init", "warmup", "clip"]
    } else {
        &["docs"]
    };
    let unused: Vec<String> = unused
        .iter()
        .filter(|o| typed.iter().any(|t| t == *o))
        .map(|o| match *o {
            "docs" => "--docs (--trials)".to_string(),
            o => format!("--{o}"),
        })
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "note: {} {} not used by --scales {}",
            unused.join(", "),
            if unused.len() == 1 { "is" } else { "are" },
            if uniform { "uniform (it takes --docs)" } else { "heads" }
        );
    }
    // The command as typed, for the provenance.
    let command = std::iter::once("nopescope".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let objective = Objective::parse(&a.objective).map_err(err)?;
    // Where the results go, checked before the search, not after it.
    // (A search under a rule is named after it: it does not replace the
    // constant rule's scales of the same search.)
    let out = a.out.clone().unwrap_or_else(|| {
        let rule = if a.rule.name() == "constant" {
            String::new()
        } else {
            format!("-{}", a.rule.name())
        };
        a.dir.join(format!(
            "head_scales-{}-{}-{}{rule}.json",
            if uniform { "uniform" } else { "heads" },
            objective.name(),
            a.length
        ))
    });
    let log = a.log.clone().unwrap_or_else(|| out.with_extension("csv"));
    // The same file however each is written (`./a.json` and `a.json`, a
    // folder by two paths): the log would be written over the scales.
    let place = |p: &Path| {
        (
            files::folder_of(p).canonicalize().ok(),
            p.file_name().map(ToOwned::to_owned),
        )
    };
    let (log_place, out_place) = (place(&log), place(&out));
    if log == out || (log_place.0.is_some() && log_place == out_place) {
        return Err(format!(
            "{}: the log and the scales would be the same file; give --log another name",
            out.display()
        ));
    }
    for path in [&out, &log] {
        let folder = files::folder_of(path);
        if !folder.is_dir() {
            return Err(format!(
                "{}: the folder {} does not exist",
                path.display(),
                folder.display()
            ));
        }
        if is_model_file(path) {
            return Err(format!(
                "{}: that is a model's own file name (config, weights, tokenizer or training record); give --out and --log other names",
                path.display()
            ));
        }
        files::check_replaceable(path).map_err(err)?;
        if path.exists() && !a.force {
            let flag = if path == &out { "--out" } else { "--log" };
            return Err(format!(
                "{}: exists (an earlier search's?); give --force to replace it, or another {flag}",
                path.display()
            ));
        }
        // A read-only model folder is found now, not after the search.
        files::check_writable(&folder).map_err(|e| format!("{e}; give --out (and --log) in a folder you can write"))?;
    }
    // The rule from the config alone, before the weights are read.
    let l = files::load_config(&a.dir).map_err(err)?.training_length;
    let rule = a.rule.parse(l)?.unwrap_or_default();
    super::check_fits(&a.dir, a.backend, a.length, nopescope::gpu::shader::Elem::F32)?;
    let m = files::load_model_dir(&a.dir).map_err(err)?;
    let cfg = m.config.clone();
    let recipe = HeadSearchConfig {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        init: a.init,
        warmup_share: a.warmup,
        clip_norm: a.clip,
        rule,
        seed: a.seed,
        ..HeadSearchConfig::default()
    };
    if !uniform {
        recipe.check().map_err(err)?;
        if a.init < recipe.min_scale {
            eprintln!(
                "note: --init {} is below {}, where every scale is clamped after each step: the first step lifts it there",
                a.init, recipe.min_scale
            );
        }
    }
    let tok = tokenizer_of(&m.tokenizer, &m.dir, cfg.vocab_size, "search")?;
    let text = match &a.text {
        Some(p) => Some(read_text(p)?),
        None => None,
    };
    let filler;
    let text_tokens;
    let data = match objective {
        Objective::Passkey => {
            filler = match &text {
                Some(t) => Some(FillerText::from_text(tok, t).map_err(err)?),
                None => None,
            };
            SearchData::passkey(a.length, tok, filler.as_ref()).map_err(err)?
        }
        Objective::Text => {
            let t = text.as_deref().ok_or("--objective text needs --text FILE")?;
            text_tokens = tok.encode(t).map_err(err)?;
            SearchData::text(a.length, &text_tokens, tok.bos_id()).map_err(err)?
        }
    };
    let fingerprint = m.params.fingerprint();
    let mut engine = make_engine(a.backend, cfg.clone(), m.params)?;
    // What the progress counts: the per-head search's steps, the uniform
    // search's points.
    let unit = if uniform { "points" } else { "steps" };
    let csv_header = if uniform {
        "scale,objective,elapsed_s"
    } else {
        "step,loss,lr,grad_norm,min,mean,max,elapsed_s"
    };
    let mut progress = StepBar {
        bar: progress_bar(unit),
        start: Instant::now(),
        rows: Vec::new(),
        last_line: (!std::io::IsTerminal::is_terminal(&std::io::stderr())).then(Instant::now),
        log: (log.clone(), csv_header, Instant::now()),
    };
    // From here a Ctrl-C is the search's to handle: it stops at its next
    // step and keeps what it found.
    stop_on_signals();
    let mut provenance = serde_json::json!({
        "model": a.dir.display().to_string(),
        "model_fingerprint": fingerprint,
        "objective": objective.name(),
        "target_length": a.length,
        "filler": a.text.as_ref().map(|p| p.display().to_string()),
        "rule": rule,
        "date": today(),
        "command": command,
    });
    let (scales, stopped, summary) = if uniform {
        let r = pollster::block_on(search::uniform_search(
            &mut engine,
            &data,
            a.docs,
            rule,
            a.seed,
            &mut progress,
        ))
        .map_err(err)?;
        progress.bar.finish_and_clear();
        if !a.json {
            // Both objectives are a cross-entropy: the key digits' or every
            // next token's, in nats.
            println!("{:>6} {:>16}", "s", "objective (nats)");
            for (s, l) in &r.curve {
                let mark = if *s == r.best_scale { "  <- best" } else { "" };
                println!("{s:>6.2} {l:>16.4}{mark}");
            }
        }
        provenance["search"] = serde_json::json!({"kind": "uniform", "documents": a.docs, "curve": f32_json(&r.curve)});
        provenance["final_loss"] = r.best_loss.into();
        let hs = HeadScales::uniform(&cfg, r.best_scale).map_err(err)?.with_rule(rule);
        (hs, r.cancelled, f32_json(&r))
    } else {
        let r = pollster::block_on(search::head_search(&mut engine, &data, &recipe, &mut progress)).map_err(err)?;
        progress.bar.finish_and_clear();
        provenance["search"] = serde_json::json!({"kind": "heads", "recipe": f32_json(&recipe)});
        provenance["final_loss"] = r.final_loss.into();
        provenance["first_loss"] = r.losses.first().copied().unwrap_or(f64::NAN).into();
        if !a.json {
            println!(
                "{} steps: objective {:.4} (first step) -> {:.4} (mean of the last 10%)",
                r.steps_run,
                r.losses.first().copied().unwrap_or(f64::NAN),
                r.final_loss
            );
            for (l, row) in r.scales.rows().iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|s| format!("{s:.3}")).collect();
                println!("layer {l}: {}", cells.join(" "));
            }
        }
        // Stopped in its last step, the search had finished.
        (r.scales.clone(), r.cancelled && r.steps_run < a.steps, f32_json(&r))
    };
    let done = progress.rows.len();
    if stopped {
        provenance["stopped_after"] = done.into();
    }
    // A stopped run's scales go beside an earlier file, not over it (that
    // may be a finished search's, even the shipped one's).
    let (out, log) = if stopped && (out.exists() || log.exists()) {
        (beside(&out, "stopped"), beside(&log, "stopped"))
    } else {
        (out, log)
    };
    let note = format!(
        "{} search on the {} objective at {} tokens",
        if uniform { "uniform" } else { "per-head" },
        objective.name(),
        a.length
    );
    let note = if stopped {
        format!("{note}, stopped by the user after {done} {unit}")
    } else {
        note
    };
    // The scales first: they are the result; the log is its record.
    let replaced = out.exists();
    let file = scales.to_json_with(Some(note), Some(provenance));
    if let Err(e) = write_atomic(&out, file.as_bytes()) {
        // Not lost: the whole file on stdout, to save by hand.
        println!("{file}");
        return Err(format!(
            "{e}: the scales could not be written; the file's text is printed above on stdout"
        ));
    }
    write_atomic(&log, progress.csv().as_bytes()).map_err(|e| {
        format!(
            "{e}: the log could not be written (the scales are in {})",
            out.display()
        )
    })?;
    let _ = std::fs::remove_file(partial_log(&progress.log.0));
    if a.json {
        // A struct, not `json!`: the scales keep their shortest f32 digits.
        #[derive(serde::Serialize)]
        struct Printed {
            out: String,
            replaced: bool,
            log: String,
            result: serde_json::Value,
            head_scales: Vec<Vec<f32>>,
        }
        let printed = Printed {
            out: out.display().to_string(),
            replaced,
            log: log.display().to_string(),
            result: summary,
            head_scales: scales.rows(),
        };
        println!("{}", serde_json::to_string(&printed).expect("json"));
    } else if replaced {
        eprintln!(
            "wrote {} (replacing the file of that name that was there) and {}",
            out.display(),
            log.display()
        );
    } else {
        eprintln!("wrote {} and {}", out.display(), log.display());
    }
    if stopped {
        // As a program stopped by a signal ends (128 + its number: 130 for
        // Ctrl-C), after saving.
        eprintln!(
            "stopped by the user after {done} {unit}: the scales found so far are in {}",
            out.display()
        );
        std::process::exit(128 + STOP.load(Ordering::SeqCst));
    }
    Ok(())
}

/// `path` with `.tag` before its extension (`scales.json` ->
/// `scales.stopped.json`).
fn beside(path: &Path, tag: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

/// A file name a model folder's own files have (Hugging Face's, and the
/// training record this program keeps beside a model): `search` never
/// writes over one, even with --force. Compared in lower case, as file
/// systems that ignore case would match them.
fn is_model_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let own = [
        files::CONFIG_FILE,
        files::TOKENIZER_FILE,
        files::WEIGHTS_INDEX_FILE,
        "generation_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
        "readme.md",
        "training.json",
        "train_log.csv",
    ];
    let weights = [".safetensors", ".bin", ".gguf", ".pt", ".pth"];
    own.contains(&name.as_str()) || weights.iter().any(|ext| name.ends_with(ext))
}
