//! The `nopescope` command line: a thin layer over `lab/` and `model/`.

pub mod search;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use nopescope::gpu::shader::Elem;
use nopescope::gpu::GpuContext;
use nopescope::lab::backend::{self, AnyEngine};
use nopescope::lab::passkey::{self, Filler, FillerText, PasskeyBuilder};
use nopescope::lab::train::{self, Recipe, Start, TrainData};
use nopescope::lab::{bench, eval};
use nopescope::model::files::{self, load_model_dir};
use nopescope::model::head_scales::{self, f32_json, HeadScales, ScaleRule, SearchedElsewhere};
use nopescope::model::params::Params;
use nopescope::model::tokenizer::Tokenizer;
use nopescope::model::{Engine, Error, HfConfig, ModelConfig};

#[derive(Parser)]
#[command(
    name = "nopescope",
    version,
    about = "Attention distraction and head temperatures in NoPE transformers"
)]
struct Cli {
    /// Without a subcommand, the desktop app opens.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Backend {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum GpuWeights {
    F32,
    F16,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialised model (Hugging Face layout) with a
    /// byte-level BPE tokenizer trained on the text.
    Init {
        /// The model's config.json (Llama-style; NoPE or RoPE).
        #[arg(long)]
        config: PathBuf,
        /// The text the tokenizer is trained on.
        #[arg(long)]
        text: PathBuf,
        /// The folder to write the model to.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace a model already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Config, parameter count, tokenizer size and training length of a
    /// model; or, with --devices, the GPU adapters of this machine.
    Info {
        /// The model's folder (Hugging Face layout: config.json,
        /// model.safetensors or its shards, tokenizer.json).
        #[arg(required_unless_present = "devices")]
        dir: Option<PathBuf>,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
        /// List the GPU adapters (backend, type, the limits that matter).
        #[arg(long, conflicts_with = "dir")]
        devices: bool,
    },
    /// Loss, perplexity and attention entropy at each length.
    Eval {
        /// The model's folder (Hugging Face layout: config.json,
        /// model.safetensors or its shards, tokenizer.json).
        dir: PathBuf,
        /// The text to read (plain UTF-8), cut into windows of each length.
        #[arg(long)]
        text: PathBuf,
        /// Comma-separated lengths, e.g. 256,1024,4096.
        #[arg(long, value_delimiter = ',', required = true)]
        lengths: Vec<usize>,
        #[command(flatten)]
        scales: ScalesArgs,
        /// Most windows per length (fewer if the text is short).
        #[arg(long, default_value_t = 4)]
        windows: usize,
        /// Where to compute: the CPU engine, the GPU engine (wgpu), or
        /// auto (the GPU engine on a real GPU, else the CPU).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train a model from a recipe (a JSON file: the model's config.json
    /// under "model", the texts, the schedule and the data mix).
    Train {
        /// The training recipe (JSON; see assets/configs/*.train.json), not
        /// a model's config.json: that goes under its "model".
        #[arg(long)]
        config: PathBuf,
        /// The folder the model, its checkpoints and its log go to.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Stop (after a checkpoint) once this many steps have run.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Where to compute (default the CPU engine: a recipe's run is
        /// then the same on any machine; gpu or auto for the GPU engine).
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
    },
    /// Pass-key retrieval at each length: greedy exact match of the key
    /// hidden at depths spread over the filler.
    Passkey {
        /// The model's folder (Hugging Face layout: config.json,
        /// model.safetensors or its shards, tokenizer.json).
        dir: PathBuf,
        /// Comma-separated lengths, e.g. 256,1024,4096.
        #[arg(long, value_delimiter = ',', required = true)]
        lengths: Vec<usize>,
        /// Documents per length, the key's depth spread evenly over them
        /// (`search` calls them --docs; either name works).
        #[arg(long, visible_alias = "docs", default_value_t = 50)]
        trials: usize,
        #[command(flatten)]
        scales: ScalesArgs,
        /// Real text (a file) as filler instead of the paper's repeated
        /// sentences (`search` calls it --text; either name works).
        #[arg(long, visible_alias = "text")]
        text_filler: Option<PathBuf>,
        /// Where to compute: the CPU engine, the GPU engine (wgpu), or
        /// auto (the GPU engine on a real GPU, else the CPU).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Regenerate docs/RESULTS.md, its figures and results.json from the
    /// bundled NoPE and RoPE models and the shipped validation text.
    Reproduce {
        /// The NoPE model's folder.
        #[arg(long, default_value = nopescope::lab::reproduce::BUNDLED_NOPE)]
        nope: PathBuf,
        /// Its RoPE twin's folder (same data and recipe, rotary positions).
        #[arg(long, default_value = nopescope::lab::reproduce::BUNDLED_ROPE)]
        rope: PathBuf,
        /// The validation text the entropy and perplexity are read on.
        #[arg(long, default_value = nopescope::lab::reproduce::BUNDLED_TEXT)]
        text: PathBuf,
        /// Folder for RESULTS.md, results.json and figures/ (default docs;
        /// a --quick run needs it given, so it never replaces the full
        /// results there).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only L/2 and L, 4 trials, scales 1.0 and 1.5 (a smoke run).
        #[arg(long)]
        quick: bool,
        /// Pass-key trials per cell (default 50; 4 with --quick).
        #[arg(long)]
        trials: Option<usize>,
        /// Where to compute: the CPU engine, the GPU engine (wgpu), or
        /// auto (the GPU engine on a real GPU, else the CPU).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
    /// Search attention scales with the model frozen: one uniform scale
    /// (a grid, then refined) or one per layer and head (AdamW, clamp
    /// s >= 1), on the pass-key or text objective at a target length.
    Search(search::SearchArgs),
    /// Time the bench model (random weights): forward, forward with
    /// entropy at 16384, a training step and a head-scale step.
    Bench {
        /// Where to compute: the CPU engine, the GPU engine (wgpu), or
        /// auto (the GPU engine on a real GPU, else the CPU).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
        /// Also run forwards with entropy at 32768 and 65536.
        #[arg(long)]
        long: bool,
        /// Only the 16-token forward (the fixed cost per call, with the
        /// device work it asks for): quick, even on a software adapter.
        #[arg(long)]
        fixed_cost: bool,
        /// Then time every kernel of a few calls on the device's clock
        /// (GPU engine, where the device has timestamp queries).
        #[arg(long)]
        profile: bool,
        /// Time this model folder instead of the bench model: loading,
        /// forwards with entropy at --tokens, peak memory against the
        /// estimate made before loading.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Tokens per forward with --model.
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Forwards with --model (the first also makes the buffers).
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        runs: usize,
        /// How the GPU engine holds the weight matrices with --model (f16
        /// needs the device's shader-f16; the CPU engine is always f32).
        #[arg(long, value_enum, default_value_t = GpuWeights::F32)]
        gpu_weights: GpuWeights,
    },
}

type CliResult<T> = Result<T, String>;

/// On a machine with no desktop session (a batch job, a container) Mesa's
/// Vulkan device-select layer asks Wayland for the display, and Wayland
/// prints "error: XDG_RUNTIME_DIR is invalid or not set" for each GPU
/// enumeration, though nothing failed: a log grepped for errors trips on
/// it. The commands pick their adapter themselves, so without a session
/// (and unless the user chose a device through the layer) it is turned
/// off for this process. Called first, while the program has one thread.
fn quiet_headless_vulkan() {
    let set = |name: &str| std::env::var_os(name).is_some();
    let chose_device = ["MESA_VK_DEVICE_SELECT", "DRI_PRIME", "NODEVICE_SELECT"]
        .iter()
        .any(|n| set(n));
    if cfg!(target_os = "linux") && !set("XDG_RUNTIME_DIR") && !set("WAYLAND_DISPLAY") && !chose_device {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

pub fn main() -> ExitCode {
    // Parsed through its matches, which also say which options were typed
    // (`search` notes those its kind of search does not use).
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let typed: Vec<String> = matches
        .subcommand()
        .map(|(_, m)| {
            m.ids()
                .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
                .map(|id| id.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    let Some(command) = cli.command else {
        return run_app();
    };
    quiet_headless_vulkan();
    let result = match command {
        Command::Init {
            config,
            text,
            out,
            seed,
            force,
        } => init(&config, &text, &out, seed, force),
        Command::Info {
            devices: true, json, ..
        } => devices(json),
        Command::Info { dir, json, .. } => info(&dir.expect("clap requires it"), json),
        Command::Eval {
            dir,
            text,
            lengths,
            scales,
            windows,
            backend,
            json,
        } => eval_cmd(&dir, &text, &lengths, &scales, windows, backend, json),
        Command::Bench {
            backend,
            json,
            long,
            fixed_cost,
            profile,
            model,
            tokens,
            runs,
            gpu_weights,
        } => match model {
            Some(dir) => bench_model_cmd(&dir, backend, tokens, runs, gpu_weights, json),
            None => bench_cmd(backend, json, long, fixed_cost, profile),
        },
        Command::Search(args) => search::run(args, &typed),
        Command::Reproduce {
            nope,
            rope,
            text,
            out,
            quick,
            trials,
            backend,
        } => match (out, quick) {
            (None, true) => Err(
                "reproduce --quick would replace the full results in docs/: give the folder for its results with --out"
                    .into(),
            ),
            (out, _) => reproduce_cmd(
                &nope,
                &rope,
                &text,
                &out.unwrap_or_else(|| PathBuf::from(nopescope::lab::reproduce::RESULTS_DIR)),
                quick,
                trials,
                backend,
            ),
        },
        Command::Train {
            config,
            out,
            resume,
            stop_after,
            backend,
        } => train_cmd(&config, &out, resume, stop_after, backend),
        Command::Passkey {
            dir,
            lengths,
            trials,
            scales,
            text_filler,
            backend,
            json,
        } => passkey_cmd(&dir, &lengths, trials, &scales, text_filler.as_deref(), backend, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// No subcommand: the desktop app (src/app/).
#[cfg(feature = "app")]
fn run_app() -> ExitCode {
    match nopescope::app::run_native() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the app could not open a window: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "app"))]
fn run_app() -> ExitCode {
    eprintln!("error: built without the app (feature `app`); give a subcommand, see --help");
    ExitCode::FAILURE
}

/// The CLI's wording of a library error: the message, and what to do
/// where the kind of failure says.
fn err(e: Error) -> String {
    use nopescope::model::error::ErrorKind;
    match e.kind() {
        ErrorKind::DeviceLimit => format!("{e}; use --backend cpu"),
        ErrorKind::DeviceLost => format!("{e}; run again, or use --backend cpu"),
        ErrorKind::DeviceMemory => {
            format!("{e}; try fewer tokens, --gpu-weights f16 where the command has it, or --backend cpu")
        }
        _ => e.to_string(),
    }
}

/// The model's tokenizer, or an error naming the folder and the command.
fn tokenizer_of<'a>(
    tokenizer: &'a Option<Tokenizer>,
    dir: &Path,
    vocab: usize,
    command: &str,
) -> CliResult<&'a Tokenizer> {
    let tok = tokenizer.as_ref().ok_or_else(|| {
        format!(
            "{}: no {} ({command} needs the tokenizer)",
            dir.display(),
            files::TOKENIZER_FILE
        )
    })?;
    if let Some(note) = few_entries_note(tok.vocab_size(), vocab) {
        eprintln!("note: {}: {note}", dir.display());
    }
    Ok(tok)
}

/// Says when a tokenizer trained on a text came out far smaller than the
/// vocabulary it was trained for (`few_entries_note`'s measure).
fn short_text_note(entries: usize, vocab: usize) {
    if few_entries_note(entries, vocab).is_some() {
        eprintln!(
            "note: the text gave a tokenizer of {entries} entries for a vocabulary of {vocab}: the other rows of the embedding are never used (a longer text gives more entries, or lower vocab_size)"
        );
    }
}

/// When a tokenizer has far fewer entries than the model's vocabulary
/// (under 90%: checkpoints pad theirs by a few per cent at most), what to
/// say: a tokenizer of another model gives plausible-looking nonsense
/// (a perplexity of 3635 where the model's own gives 109).
fn few_entries_note(entries: usize, vocab: usize) -> Option<String> {
    (entries * 10 < vocab * 9).then(|| {
        format!(
            "the tokenizer has {entries} entries, the model's vocabulary {vocab}: if the tokenizer is another model's, every number measured is meaningless"
        )
    })
}

fn read_text(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{}: the text is empty", path.display()));
    }
    Ok(text)
}

fn init(config: &Path, text: &Path, out: &Path, seed: u64, force: bool) -> CliResult<()> {
    let hf = HfConfig::load(config).map_err(|e| {
        let bytes = std::fs::read(config).unwrap_or_default();
        if train::json_kind(&bytes) == train::JsonKind::Recipe {
            format!(
                "{}: a training recipe (its model's config is under \"model\"), not a model's config.json; \
                 `train --config` takes a recipe",
                config.display()
            )
        } else {
            err(e)
        }
    })?;
    let mut cfg = hf.validate().map_err(err)?;
    if out.join(files::WEIGHTS_FILE).exists() && !force {
        return Err(format!(
            "{} already holds a model; pass --force to replace it",
            out.display()
        ));
    }
    let text = read_text(text)?;
    eprintln!(
        "training a byte-level BPE tokenizer of up to {} entries ...",
        cfg.vocab_size
    );
    let tok = Tokenizer::train_byte_level_bpe(&text, cfg.vocab_size).map_err(err)?;
    short_text_note(tok.vocab_size(), cfg.vocab_size);
    cfg.bos_token_id = tok.bos_id();
    let params = Params::<f32>::random(&cfg, 0.02, seed);
    files::save_model_with(out, &cfg, &params, Some(&tok)).map_err(err)?;
    eprintln!(
        "wrote {} ({} parameters, tokenizer of {} entries)",
        out.display(),
        params.data.len(),
        tok.vocab_size()
    );
    Ok(())
}

fn info(dir: &Path, json: bool) -> CliResult<()> {
    let m = load_model_dir(dir).map_err(err)?;
    let c = &m.config;
    let tok = m.tokenizer.as_ref().map(|t| t.vocab_size());
    if let Some(note) = tok.and_then(|n| few_entries_note(n, c.vocab_size)) {
        eprintln!("note: {note}");
    }
    if json {
        let v = serde_json::json!({
            "config": c,
            "parameters": m.params.data.len(),
            "tokenizer_size": tok,
            "training_length": c.training_length,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    let pe = c.position_encoding.describe();
    println!("model            {}", dir.display());
    println!("parameters       {}", m.params.data.len());
    println!("layers           {}", c.num_layers);
    println!("hidden size      {}", c.hidden_size);
    println!(
        "heads            {} query, {} key/value (head dim {})",
        c.num_heads, c.num_kv_heads, c.head_dim
    );
    println!("MLP (SwiGLU)     {}", c.intermediate_size);
    println!("vocabulary       {}", c.vocab_size);
    println!("tied embeddings  {}", c.tie_word_embeddings);
    println!("position enc.    {pe}");
    println!("training length  {}", c.training_length);
    match tok {
        Some(n) => println!("tokenizer        {n} entries"),
        None => println!("tokenizer        none ({} missing)", files::TOKENIZER_FILE),
    }
    Ok(())
}

fn devices(json: bool) -> CliResult<()> {
    let adapters = GpuContext::list_adapters();
    if json {
        let v: Vec<_> = adapters
            .iter()
            .map(|a| {
                let l = &a.limits;
                serde_json::json!({
                    "name": a.name,
                    "backend": a.backend.to_string(),
                    "type": format!("{:?}", a.device_type),
                    "driver": a.driver,
                    "driver_info": a.driver_info,
                    "cpu_or_fallback": a.is_cpu,
                    "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                    "max_buffer_size": l.max_buffer_size,
                    "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                    "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                    "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                    "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapters (no Vulkan, Metal or DX12 driver found); --backend auto uses the CPU engine");
        return Ok(());
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("{i}: {}", a.label());
        if !a.driver.is_empty() {
            println!("   driver   {} {}", a.driver, a.driver_info);
        }
        let kind = if a.is_cpu {
            "a CPU / fallback adapter: --backend auto picks the CPU engine over it"
        } else {
            "a GPU: --backend auto picks the GPU engine on it"
        };
        println!("   kind     {kind}");
        println!("   limits   {}", a.limits);
    }
    Ok(())
}

/// The library's backend for the CLI's flag.
fn lab_backend(backend: Backend) -> backend::Backend {
    match backend {
        Backend::Cpu => backend::Backend::Cpu,
        Backend::Gpu => backend::Backend::Gpu,
        Backend::Auto => backend::Backend::Auto,
    }
}

/// Before the weights of `dir` are read: refuses (with needed and
/// available) a model that cannot fit where `backend` will run it at up to
/// `t` tokens, its GPU weights held as `elem`; otherwise says what it needs
/// on stderr.
fn check_fits(dir: &Path, backend: Backend, t: usize, elem: Elem) -> CliResult<backend::MemoryCheck> {
    let check = backend::check_memory_native(dir, lab_backend(backend), t, elem).map_err(err)?;
    eprintln!("memory: {} {}", dir.display(), check.summary());
    Ok(check)
}

/// Picks the engine with the library's one rule (`lab::backend`, shared
/// with the app): `cpu`; `gpu` (an error if the device or a shader fails);
/// `auto`: the GPU engine on a real GPU, the CPU engine on a CPU / fallback
/// adapter (lavapipe, SwiftShader, WARP are slower than it) or when there is
/// no usable adapter. The choice and why go to stderr.
fn make_engine(backend: Backend, config: ModelConfig, params: Params<f32>) -> CliResult<AnyEngine> {
    let chosen = backend::choose_engine_native(lab_backend(backend), config, params).map_err(|e| {
        format!(
            "{}; use --backend cpu",
            e.to_string().trim_end_matches("; use the CPU engine")
        )
    })?;
    eprintln!("backend: {} ({})", chosen.engine.name(), chosen.reason);
    Ok(chosen.engine)
}

struct Bar(ProgressBar);
impl eval::Progress for Bar {
    fn update(&mut self, done: usize, total: usize, message: &str) -> bool {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
        self.0.set_message(message.to_string());
        true
    }
}

fn progress_bar(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}"
        ))
        .expect("template")
        .progress_chars("=> "),
    );
    // The clock moves while one long window computes (at 100000 tokens a
    // window takes minutes, and the count moves only between windows).
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    bar
}

fn eval_cmd(
    dir: &Path,
    text: &Path,
    lengths: &[usize],
    given: &ScalesArgs,
    windows: usize,
    backend: Backend,
    json: bool,
) -> CliResult<()> {
    let (m, hs, scales) = load_for_lengths(dir, backend, lengths, given)?;
    let tok = tokenizer_of(&m.tokenizer, &m.dir, m.config.vocab_size, "eval")?;
    let text_path = text;
    let text = read_text(text)?;
    let tokens = tok.encode(&text).map_err(err)?;
    let bos = tok.bos_id();
    let l = m.config.training_length;
    let mut engine = make_engine(backend, m.config.clone(), m.params)?;
    let bar = progress_bar("tokens");
    let report = pollster::block_on(eval::eval_lengths(
        &mut engine,
        &tokens,
        bos,
        lengths,
        windows,
        &hs,
        &mut Bar(bar.clone()),
    ))
    .map_err(err)?;
    bar.finish_and_clear();
    let context = serde_json::json!({
        "model": dir.display().to_string(),
        "training_length": l,
        "scales": scales,
        "head_scales": f32_json(&hs.rows()),
        "rule": hs.rule,
        "backend": engine.name(),
        "text": text_path.display().to_string(),
        "text_tokens": tokens.len(),
    });
    print_measured(json, &report, context, |report| {
        println!(
            "{:>8} {:>6} {:>8} {:>12} {:>12} {:>22}",
            "length", "x L", "windows", "loss (nats)", "perplexity", "mean entropy (bits)"
        );
        for r in &report.results {
            println!(
                "{:>8} {:>6} {:>8} {:>12.4} {:>12.2} {:>22.3}",
                r.length,
                times_l(r.length, l),
                r.windows,
                r.loss,
                r.perplexity,
                r.mean_entropy_bits
            );
        }
    });
    Ok(())
}

/// A length as a multiple of the training length L, for the tables'
/// "x L" column ("0.5", "4"): past 1 the model reads further than it
/// was trained to.
fn times_l(length: usize, l: usize) -> String {
    let x = length as f64 / l.max(1) as f64;
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A report as `print_report` prints it, its JSON with what it was
/// measured on (`context`: the model, its L, the scales, the engine, the
/// text) beside the rows, so that a saved JSON says what it is.
fn print_measured<T: serde::Serialize>(json: bool, report: &T, context: serde_json::Value, table: impl FnOnce(&T)) {
    if !json {
        return table(report);
    }
    let mut v = context;
    if let (Some(v), Ok(serde_json::Value::Object(rows))) = (v.as_object_mut(), serde_json::to_value(report)) {
        v.extend(rows);
    }
    println!("{v}");
}

fn bench_cmd(backend: Backend, json: bool, long: bool, fixed_cost: bool, profile: bool) -> CliResult<()> {
    let cfg = ModelConfig::bench();
    let params = Params::<f32>::random(&cfg, 0.02, 7);
    let mut engine = make_engine(backend, cfg, params)?;
    let report = pollster::block_on(bench::run(&mut engine, long, fixed_cost, profile, &mut |line| {
        eprintln!("{line}")
    }))
    .map_err(err)?;
    print_report(json, &report, |report| print!("{}", report.table()));
    Ok(())
}

fn bench_model_cmd(
    dir: &Path,
    backend: Backend,
    tokens: usize,
    runs: usize,
    gpu_weights: GpuWeights,
    json: bool,
) -> CliResult<()> {
    if tokens < 2 {
        return Err(format!("--tokens {tokens}: a forward needs at least 2 tokens"));
    }
    let elem = match gpu_weights {
        GpuWeights::F32 => Elem::F32,
        GpuWeights::F16 => Elem::F16,
    };
    if elem == Elem::F16 && !matches!(backend, Backend::Gpu) {
        return Err("--gpu-weights f16 is for the GPU engine: add --backend gpu".into());
    }
    let memory = check_fits(dir, backend, tokens, elem)?;
    let t0 = std::time::Instant::now();
    let (parameters, mut engine) = match elem {
        Elem::F32 => {
            let m = load_model_dir(dir).map_err(err)?;
            (m.params.data.len(), make_engine(backend, m.config.clone(), m.params)?)
        }
        // Read straight into f16: no f32 copy of the model on the host.
        Elem::F16 => {
            let config = files::load_config(dir).map_err(err)?;
            let (_, data) = files::load_params_as::<half::f16>(dir, &config).map_err(err)?;
            let ctx = GpuContext::new_default().map_err(|e| format!("no usable GPU ({e}); use --backend cpu"))?;
            let engine = pollster::block_on(nopescope::gpu::GpuEngine::new_from_f16(ctx, config, data)).map_err(err)?;
            eprintln!("backend: {} (f16 weights, as asked)", engine.name());
            let n = nopescope::model::ParamLayout::new(engine.config()).total;
            (n, AnyEngine::Gpu(engine))
        }
    };
    let load_seconds = t0.elapsed().as_secs_f64();
    eprintln!("loaded in {load_seconds:.1} s; {runs} forward(s) with entropy at {tokens} tokens");
    // Before the forwards reset it: the peak of loading.
    let load_peak = bench::peak_rss_bytes();
    let forwards = pollster::block_on(bench::model_forwards(&mut engine, tokens, runs)).map_err(err)?;
    let fastest = forwards.iter().map(|r| r.seconds).fold(f64::INFINITY, f64::min);
    let forward_peak = forwards.iter().filter_map(|r| r.peak_rss_bytes).max();
    let report = bench::ModelBenchReport {
        model: dir.display().to_string(),
        backend: engine.name(),
        kernels: engine.kernels(),
        parameters,
        tokens,
        load_seconds,
        forward_seconds: forwards.iter().map(|r| r.seconds).collect(),
        tokens_per_s: tokens as f64 / fastest,
        peak_rss_bytes: load_peak.max(forward_peak),
        forward_peak_rss_bytes: forward_peak,
        estimated_host_bytes: memory.host_needed,
        estimated_device_bytes: memory.device_needed,
    };
    print_report(json, &report, |report| print!("{}", report.table()));
    Ok(())
}

/// The scales `eval` and `passkey` run with.
#[derive(clap::Args, Debug)]
pub struct ScalesArgs {
    /// One scale for every head (1.0 is plain NoPE).
    #[arg(long, conflicts_with = "head_scales", allow_negative_numbers = true)]
    uniform_scale: Option<f32>,
    /// A head_scales.json with one scale per layer and head.
    #[arg(long)]
    head_scales: Option<PathBuf>,
    #[command(flatten)]
    rule: RuleArgs,
}

/// A per-position rule for the scales (`search`, `eval`, `passkey`).
#[derive(clap::Args, Debug)]
pub struct RuleArgs {
    /// Per-position rule the scales are used under: constant (the
    /// default), log-n (max(1, ln(i + 1) / ln L)), fitted (max(1, 1 + a
    /// ln((i + 1) / L))). Not given, `eval` and `passkey` use a head-scales
    /// file's own rule.
    #[arg(long, value_parser = ["constant", "log-n", "fitted"])]
    rule: Option<String>,
    /// The `fitted` rule's a in 1 + a ln((i + 1) / L) (may be negative).
    #[arg(long, allow_negative_numbers = true)]
    rule_a: Option<f64>,
}

impl RuleArgs {
    /// The rule's name as given, or `constant`.
    pub fn name(&self) -> &str {
        self.rule.as_deref().unwrap_or("constant")
    }

    /// The rule given for a model trained at `l` tokens, if any.
    pub fn parse(&self, l: usize) -> CliResult<Option<ScaleRule>> {
        match (&self.rule, self.rule_a) {
            (None, None) => return Ok(None),
            (None, Some(a)) => {
                return Err(format!(
                    "--rule-a {a} is the fitted rule's a: give --rule fitted with it"
                ))
            }
            _ => {}
        }
        if self.name() == "fitted" && self.rule_a.is_none() {
            return Err("--rule fitted needs --rule-a, its a in 1 + a ln((i + 1) / L)".into());
        }
        ScaleRule::parse(self.name(), l, self.rule_a)
            .map(Some)
            .map_err(|e| format!("--rule {}: {e}", self.name()))
    }
}

/// A rule as the reports name it: "log-n (L = 256)", "fitted (a = 0.2, L = 256)".
fn rule_text(rule: &ScaleRule) -> String {
    match *rule {
        ScaleRule::Constant => "constant".into(),
        ScaleRule::LogN { training_length } => format!("log-n (L = {training_length})"),
        ScaleRule::Fitted { a, training_length } => format!("fitted (a = {a}, L = {training_length})"),
    }
}

/// What a run over `lengths` loads: the model, once the longest length
/// is known to fit on the backend, and the head scales asked for.
fn load_for_lengths(
    dir: &Path,
    backend: Backend,
    lengths: &[usize],
    scales: &ScalesArgs,
) -> CliResult<(files::ModelDir, HeadScales, String)> {
    // A bad scale or rule is the flag's, said before the model loads.
    if let Some(s) = scales.uniform_scale {
        HeadScales::check_scale(s).map_err(|e| format!("--uniform-scale {s}: {e}"))?;
    }
    // (Checked with a valid L; the model's own comes below.)
    scales.rule.parse(2)?;
    check_fits(dir, backend, lengths.iter().copied().max().unwrap_or(1), Elem::F32)?;
    let m = load_model_dir(dir).map_err(err)?;
    let rule = scales.rule.parse(m.config.training_length)?;
    let (hs, source) = load_head_scales(
        dir,
        &m.config,
        scales.uniform_scale,
        scales.head_scales.as_deref(),
        rule,
        &m.params.fingerprint(),
    )?;
    Ok((m, hs, source))
}

/// Whether `searched`, the model folder a scales file was searched on,
/// names another folder than `dir` (by folder name: the paths themselves
/// may be relative to another working folder). False where either names
/// none.
fn other_folder(searched: &str, dir: &Path) -> bool {
    let name = |p: &Path| {
        p.canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(ToOwned::to_owned))
            .or_else(|| p.file_name().map(ToOwned::to_owned))
    };
    let theirs = head_scales::folder_name(searched);
    let ours = name(dir);
    matches!((theirs, ours.as_ref().and_then(|o| o.to_str())), (Some(t), Some(o)) if t != o)
}

/// A report as one line of JSON on stdout, or as `table` prints it.
fn print_report<T: serde::Serialize>(json: bool, report: &T, table: impl FnOnce(&T)) {
    if json {
        println!("{}", serde_json::to_string(report).expect("json"));
    } else {
        table(report);
    }
}

/// The scales to run with; says on stderr which, beside the memory and
/// backend lines (a report did not show what it was run with).
fn load_head_scales(
    dir: &Path,
    config: &ModelConfig,
    uniform: Option<f32>,
    file: Option<&Path>,
    rule: Option<ScaleRule>,
    fingerprint: &str,
) -> CliResult<(HeadScales, String)> {
    let (hs, source, searched) = match (uniform, file) {
        (Some(s), _) => (
            HeadScales::uniform(config, s).map_err(err)?,
            format!("uniform s = {s}"),
            None,
        ),
        (None, Some(p)) => {
            let (hs, searched) = HeadScales::load_searched(p, config).map_err(err)?;
            if let Some(n) = searched.stopped_after {
                let unit = head_scales::search_unit(searched.uniform, n);
                eprintln!(
                    "note: {}: its search was stopped by the user after {n} {unit}: these are the scales it had then, not its result",
                    p.display()
                );
            }
            (hs, p.display().to_string(), Some(searched))
        }
        (None, None) => (
            HeadScales::ones(config),
            "none (s = 1 for every head)".to_string(),
            None,
        ),
    };
    // A rule given applies to the scales, unless a file has another one.
    let hs = match rule {
        Some(r) if !hs.rule.is_constant() && hs.rule != r => {
            return Err(format!(
                "--rule {}: {source} has its own rule, {}; leave --rule out to use it",
                rule_text(&r),
                rule_text(&hs.rule)
            ))
        }
        Some(r) => hs.with_rule(r),
        None => hs,
    };
    // The source names the rule (a file's own, or the one given).
    let source = match (hs.rule, file) {
        (ScaleRule::Constant, _) => source,
        (_, None) if uniform.is_none() => format!("s = 1 for every head, rule {}", rule_text(&hs.rule)),
        _ => format!("{source}, rule {}", rule_text(&hs.rule)),
    };
    if file.is_some() {
        let (lo, hi) = hs.min_max();
        eprintln!(
            "scales: {source}: {} layers x {} heads, s from {lo:.3} to {hi:.3}",
            hs.num_layers, hs.num_heads,
        );
        let searched = searched.unwrap_or_default();
        let elsewhere = head_scales::searched_elsewhere(
            searched.model.as_deref(),
            searched.fingerprint.as_deref(),
            || Some(fingerprint),
            |theirs| other_folder(theirs, dir),
        );
        match elsewhere {
            Some(SearchedElsewhere::Weights(model)) => eprintln!(
                "note: these scales were searched on other weights than {}'s (the file's provenance: model {}, \
                 fingerprint {}; this model's is {fingerprint}): they fit its shape, but each head's scale \
                 was tuned for that model's heads",
                dir.display(),
                model.unwrap_or("unnamed"),
                searched.fingerprint.as_deref().unwrap_or_default(),
            ),
            Some(SearchedElsewhere::Folder(other)) => eprintln!(
                "note: these scales were searched on the model {other} (the file's provenance), not on {}: \
                 they fit its shape, but each head's scale was tuned for that model's heads",
                dir.display()
            ),
            None => {}
        }
    } else {
        eprintln!("scales: {source}");
    }
    Ok((hs, source))
}

#[allow(clippy::too_many_arguments)]
fn passkey_cmd(
    dir: &Path,
    lengths: &[usize],
    trials: usize,
    given: &ScalesArgs,
    text_filler: Option<&Path>,
    backend: Backend,
    json: bool,
) -> CliResult<()> {
    let (m, hs, scales) = load_for_lengths(dir, backend, lengths, given)?;
    let tok = tokenizer_of(&m.tokenizer, &m.dir, m.config.vocab_size, "passkey")?;
    let l = m.config.training_length;
    let filler_tokens = match text_filler {
        Some(p) => {
            let text = FillerText::from_text(tok, &read_text(p)?).map_err(err)?;
            if let Some(&longest) = lengths.iter().max() {
                if text.cycles_for(longest) {
                    eprintln!(
                        "note: {} has {} tokens, fewer than a {longest}-token document: its filler reads the text again from the start",
                        p.display(),
                        text.len()
                    );
                }
            }
            Some(text)
        }
        None => None,
    };
    let filler = match &filler_tokens {
        Some(t) => Filler::Text(t),
        None => Filler::Repeated,
    };
    let builder = PasskeyBuilder::new(tok).map_err(err)?;
    let mut engine = make_engine(backend, m.config.clone(), m.params)?;
    let bar = progress_bar("tokens");
    let report = pollster::block_on(passkey::passkey_lengths(
        &mut engine,
        &builder,
        lengths,
        trials,
        train::PASSKEY_EVAL_SEED,
        filler,
        &hs,
        &mut Bar(bar.clone()),
    ))
    .map_err(err)?;
    bar.finish_and_clear();
    let context = serde_json::json!({
        "model": dir.display().to_string(),
        "training_length": l,
        "scales": scales,
        "head_scales": f32_json(&hs.rows()),
        "rule": hs.rule,
        "backend": engine.name(),
        "filler": text_filler.map_or("the repeated sentences".to_string(), |p| p.display().to_string()),
    });
    print_measured(json, &report, context, |report| {
        // Two entropies: over every query, and the answering query's alone
        // (the one that must find the key), each the mean over heads.
        println!(
            "{:>8} {:>6} {:>7} {:>9} {:>16} {:>11} {:>22} {:>30}",
            "length",
            "x L",
            "trials",
            "accuracy",
            "key loss (nats)",
            "key digits",
            "mean entropy (bits)",
            "answering query entropy (bits)"
        );
        for r in &report.results {
            println!(
                "{:>8} {:>6} {:>7} {:>8.0}% {:>16.3} {:>10.0}% {:>22.3} {:>30.3}",
                r.length,
                times_l(r.length, l),
                r.trials,
                100.0 * r.accuracy,
                r.key_loss,
                100.0 * r.token_accuracy,
                r.mean_entropy_bits,
                r.mean_retrieval_entropy_bits()
            );
        }
    });
    Ok(())
}

struct TrainBar {
    bar: ProgressBar,
    /// When stderr is no terminal (a log file), a line every half minute.
    last_line: std::time::Instant,
}

impl train::TrainProgress for TrainBar {
    fn step(&mut self, row: &train::LogRow, total: usize, tokens_per_s: f64) -> bool {
        if self.bar.is_hidden() && self.last_line.elapsed().as_secs() >= 30 {
            self.last_line = std::time::Instant::now();
            eprintln!(
                "step {}/{total}  loss {:.4}  lr {:.2e}  {:.0} tok/s  {:.1} min",
                row.step,
                row.loss,
                row.lr,
                tokens_per_s,
                row.elapsed_s / 60.0
            );
        }
        self.bar.set_length(total as u64);
        self.bar.set_position(row.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            row.loss, row.lr, tokens_per_s
        ));
        true
    }

    fn message(&mut self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

fn train_cmd(
    recipe_path: &Path,
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    backend: Backend,
) -> CliResult<()> {
    let recipe = Recipe::load(recipe_path).map_err(err)?;
    let mut config = recipe.config().map_err(err)?;
    let weights = out.join(files::WEIGHTS_FILE);
    if !resume && (weights.exists() || out.join(train::CHECKPOINT_DIR).exists()) {
        return Err(format!(
            "{} already holds a model or checkpoint; pass --resume to continue it, or choose another --out",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _lock = train::RunLock::acquire(out).map_err(err)?;
    let train_text = read_text(&recipe.train_text)?;
    let validation_text = read_text(&recipe.validation_text)?;
    let tok_path = out.join(files::TOKENIZER_FILE);
    let tok = if tok_path.exists() {
        Tokenizer::load(&tok_path).map_err(err)?
    } else if let Some(p) = &recipe.tokenizer {
        let t = Tokenizer::load(p).map_err(err)?;
        t.save(&tok_path).map_err(err)?;
        t
    } else {
        eprintln!(
            "training a byte-level BPE tokenizer of up to {} entries ...",
            config.vocab_size
        );
        let t = Tokenizer::train_byte_level_bpe(&train_text, config.vocab_size).map_err(err)?;
        short_text_note(t.vocab_size(), config.vocab_size);
        t.save(&tok_path).map_err(err)?;
        t
    };
    if tok.vocab_size() > config.vocab_size {
        return Err(format!(
            "{}: {} entries, more than the model's vocab_size {}",
            tok_path.display(),
            tok.vocab_size(),
            config.vocab_size
        ));
    }
    config.bos_token_id = tok.bos_id();
    eprintln!("tokenizing the texts ...");
    let data = TrainData::new(&tok, &train_text, &validation_text).map_err(err)?;
    eprintln!(
        "training text {} tokens, validation text {} tokens",
        data.train.len(),
        data.validation.len()
    );
    let (params, start, opt) = if resume {
        let ck = train::read_checkpoint(out).map_err(err)?;
        if ck.state.recipe != recipe {
            return Err(format!(
                "{}: the checkpoint was made with a different recipe than {}; resume with the same recipe",
                out.display(),
                recipe_path.display()
            ));
        }
        let log_path = out.join(train::LOG_FILE);
        // No log yet is fine; one that cannot be read is not (resuming would
        // write a new one over it with only the rows from here on).
        let log = match std::fs::read_to_string(&log_path) {
            Ok(text) => train::log_until(train::log_from_csv(&text, &log_path).map_err(err)?, ck.state.step),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", log_path.display())),
        };
        eprintln!("resuming at step {} of {}", ck.state.step, recipe.steps);
        let start = Start {
            step: ck.state.step,
            tokens: ck.state.tokens,
            elapsed_s: ck.state.elapsed_s,
            log,
        };
        (ck.params, start, Some(ck.optimizer))
    } else {
        (
            Params::<f32>::random(&config, recipe.init_std as f64, recipe.seed),
            Start::default(),
            None,
        )
    };
    let nparams = params.data.len();
    let mut engine = make_engine(backend, config.clone(), params)?;
    if let Some(opt) = opt {
        pollster::block_on(engine.set_optimizer_state(opt)).map_err(err)?;
    }
    let bar = progress_bar("steps");
    let mut progress = TrainBar {
        bar: bar.clone(),
        last_line: std::time::Instant::now(),
    };
    let summary = pollster::block_on(train::train(
        &mut engine,
        &recipe,
        &data,
        &tok,
        out,
        start,
        stop_after,
        &mut progress,
    ))
    .map_err(err)?;
    bar.finish_and_clear();
    let Some(summary) = summary else {
        return Ok(());
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let command = format!(
        "nopescope train --config {} --out {}",
        recipe_path.display(),
        out.display()
    );
    let card = train::model_card(&name, &summary, &config, &command, nparams);
    files::write_atomic(&out.join("README.md"), card.as_bytes()).map_err(err)?;
    println!(
        "trained {} steps, {} tokens in {:.1} min: training loss {:.4}, validation loss {:.4} at {}, pass key {:.0}% at {}",
        summary.steps,
        summary.tokens,
        summary.elapsed_s / 60.0,
        summary.final_train_loss,
        summary.validation.loss,
        summary.validation.length,
        100.0 * summary.passkey.accuracy,
        summary.passkey.length
    );
    Ok(())
}

fn reproduce_cmd(
    nope: &Path,
    rope: &Path,
    text: &Path,
    out: &Path,
    quick: bool,
    trials: Option<usize>,
    backend: Backend,
) -> CliResult<()> {
    use nopescope::lab::{figures, reproduce};
    let clock = std::time::Instant::now();
    let sources = reproduce::Sources {
        nope: nope.display().to_string(),
        rope: rope.display().to_string(),
        text: text.display().to_string(),
        out: out.display().to_string(),
    };
    let bundled = reproduce::Sources::default();
    // The defaults are the repository's own files, relative to its root.
    for (flag, given, default) in sources.by_flag(&bundled) {
        if flag != "--out" && given == default && !Path::new(given).exists() {
            return Err(format!(
                "{default} (the default of {flag}) is not here: run from the repository's root, or give {flag}"
            ));
        }
    }
    let n = load_model_dir(nope).map_err(err)?;
    let r = load_model_dir(rope).map_err(err)?;
    let tok = tokenizer_of(&n.tokenizer, &n.dir, n.config.vocab_size, "reproduce")?;
    let rope_tok = tokenizer_of(&r.tokenizer, &r.dir, r.config.vocab_size, "reproduce")?;
    if tok.to_json().map_err(err)? != rope_tok.to_json().map_err(err)? {
        return Err(format!(
            "{} and {} have different tokenizers: the comparison needs one",
            nope.display(),
            rope.display()
        ));
    }
    let validation = tok.encode(&read_text(text)?).map_err(err)?;
    let builder = PasskeyBuilder::new(tok).map_err(err)?;
    // The output folder before the hours of work, not after.
    let figures_dir = out.join("figures");
    std::fs::create_dir_all(&figures_dir).map_err(|e| format!("{}: {e}", figures_dir.display()))?;
    let mut ne = make_engine(backend, n.config.clone(), n.params)?;
    let mut re = make_engine(backend, r.config.clone(), r.params)?;
    let mut opts = if quick {
        reproduce::Options::quick()
    } else {
        reproduce::Options::full()
    };
    if let Some(t) = trials {
        opts.trials = t;
    }
    let results = pollster::block_on(reproduce::run(
        &mut ne,
        &mut re,
        &builder,
        &validation,
        tok.bos_id(),
        &opts,
        &mut |m| eprintln!("[{:>6.1} min] {m}", clock.elapsed().as_secs_f64() / 60.0),
    ))
    .map_err(err)?;
    // The temperatures: searched head scales shipped beside the model, the
    // rules, on the repeated filler and on held-out real text.
    let mut searched = Vec::new();
    for (file, name) in [
        ("head_scales-4L.json", "NoPE, head scales searched at 4L"),
        ("head_scales-8L.json", "NoPE, head scales searched at 8L"),
        // The same search from the paper's start (issue 8's comparison).
        (
            "head_scales-4L-init1.6.json",
            "NoPE, head scales from s = 1.6, searched at 4L",
        ),
    ] {
        let path = nope.join(file);
        if path.exists() {
            let hs = HeadScales::load(&path, &n.config).map_err(err)?;
            searched.push((name.to_string(), hs));
        }
    }
    let mut filler_texts = Vec::new();
    for (name, path) in [
        ("State of the Union, held-out addresses", text.to_path_buf()),
        (
            "Moby-Dick, held-out chapters",
            PathBuf::from(reproduce::MOBY_VALIDATION),
        ),
    ] {
        if path.exists() {
            let t = FillerText::from_text(tok, &read_text(&path)?).map_err(err)?;
            filler_texts.push((format!("{name} (`{}`)", path.display()), t));
        }
    }
    let mut fillers: Vec<(String, Option<&FillerText>)> = vec![("the paper's repeated sentences".into(), None)];
    fillers.extend(filler_texts.iter().map(|(n, t)| (n.clone(), Some(t))));
    let at_l = results
        .lengths
        .iter()
        .position(|&x| x == results.training_length)
        .unwrap_or(0);
    let inputs = nopescope::lab::scales_report::ScaleInputs {
        searched,
        fit_a: results.fit_a,
        sweep: &opts.scales,
        fillers,
        entropy_at_l: results.nope.validation[at_l].entropy_bits.clone(),
        trials: opts.trials,
        seed: opts.seed,
        repeated: Some(nopescope::lab::scales_report::Measured {
            sweep: &results.sweep,
            rope: &results.rope.passkey,
        }),
    };
    let temps = pollster::block_on(nopescope::lab::scales_report::run(
        &mut ne,
        &mut re,
        &builder,
        &results.lengths,
        &inputs,
        &mut |m| eprintln!("[{:>6.1} min] {m}", clock.elapsed().as_secs_f64() / 60.0),
    ))
    .map_err(err)?;
    // The measurements first (results.json, temperatures.json): a figure
    // that fails to draw then loses no result.
    let json = serde_json::to_string_pretty(&results).expect("json");
    files::write_atomic(&out.join("results.json"), json.as_bytes()).map_err(err)?;
    let temps_json = serde_json::to_string_pretty(&temps).expect("json");
    files::write_atomic(&out.join("temperatures.json"), temps_json.as_bytes()).map_err(err)?;
    figures::write_figures(&results, &figures_dir).map_err(err)?;
    figures::write_scale_figures(&temps, &figures_dir).map_err(err)?;
    let mut command = "nopescope reproduce".to_string();
    if quick {
        command.push_str(" --quick");
    }
    if let Some(t) = trials {
        command.push_str(&format!(" --trials {t}"));
    }
    for (flag, given, default) in sources.by_flag(&bundled) {
        if given != default {
            command.push_str(&format!(" {flag} {given}"));
        }
    }
    if backend != Backend::Auto {
        // The flag's own spelling of the value (`cpu`, `gpu`).
        if let Some(value) = backend.to_possible_value() {
            command.push_str(&format!(" --backend {}", value.get_name()));
        }
    }
    let mut md = reproduce::markdown(
        &results,
        &command,
        &ne.name(),
        clock.elapsed().as_secs_f64() / 60.0,
        &sources,
    );
    md.push_str(&nopescope::lab::scales_report::markdown(&temps));
    files::write_atomic(&out.join("RESULTS.md"), md.as_bytes()).map_err(err)?;
    print!("{}", reproduce::short_table(&results));
    for c in reproduce::checks(&results)
        .into_iter()
        .chain(nopescope::lab::scales_report::checks(&temps))
    {
        let met = match c.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        eprintln!("{met:>12}: {} ({})", c.what, c.measured);
    }
    println!(
        "wrote {}, results.json, temperatures.json and figures/ in {:.1} min",
        out.join("RESULTS.md").display(),
        clock.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
