//! The `nopescope` command line: a thin layer over `lab/` and `model/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use nopescope::gpu::{GpuContext, GpuEngine};
use nopescope::lab::{bench, eval};
use nopescope::model::cpu::CpuEngine;
use nopescope::model::engine::StepStats;
use nopescope::model::files::{self, load_model_dir, save_model};
use nopescope::model::head_scales::HeadScales;
use nopescope::model::optim::AdamWConfig;
use nopescope::model::params::Params;
use nopescope::model::tokenizer::Tokenizer;
use nopescope::model::{
    Engine, Error, ForwardOptions, ForwardOutput, GradMode, Gradients, HfConfig, ModelConfig, PositionEncoding,
};

#[derive(Parser)]
#[command(
    name = "nopescope",
    version,
    about = "Attention distraction and head temperatures in NoPE transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Backend {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialised model (Hugging Face layout) with a
    /// byte-level BPE tokenizer trained on the text.
    Init {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        text: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace a model already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Config, parameter count, tokenizer size and training length of a
    /// model; or, with --devices, the GPU adapters of this machine.
    Info {
        #[arg(required_unless_present = "devices")]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// List the GPU adapters (backend, type, the limits that matter).
        #[arg(long, conflicts_with = "dir")]
        devices: bool,
    },
    /// Loss, perplexity and attention entropy at each length.
    Eval {
        dir: PathBuf,
        #[arg(long)]
        text: PathBuf,
        /// Comma-separated lengths, e.g. 256,1024,4096.
        #[arg(long, value_delimiter = ',', required = true)]
        lengths: Vec<usize>,
        /// One scale for every head (1.0 is plain NoPE).
        #[arg(long, conflicts_with = "head_scales")]
        uniform_scale: Option<f32>,
        /// A head_scales.json with one scale per layer and head.
        #[arg(long)]
        head_scales: Option<PathBuf>,
        /// Most windows per length (fewer if the text is short).
        #[arg(long, default_value_t = 4)]
        windows: usize,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
    /// Time the bench model (random weights): forward, forward with
    /// entropy at 16384, a training step and a head-scale step.
    Bench {
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        #[arg(long)]
        json: bool,
        /// Also run forwards with entropy at 32768 and 65536.
        #[arg(long)]
        long: bool,
    },
}

type CliResult<T> = Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
            uniform_scale,
            head_scales,
            windows,
            backend,
            json,
        } => eval_cmd(
            &dir,
            &text,
            &lengths,
            uniform_scale,
            head_scales.as_deref(),
            windows,
            backend,
            json,
        ),
        Command::Bench { backend, json, long } => bench_cmd(backend, json, long),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn err(e: Error) -> String {
    e.to_string()
}

fn read_text(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{}: the text is empty", path.display()));
    }
    Ok(text)
}

fn init(config: &Path, text: &Path, out: &Path, seed: u64, force: bool) -> CliResult<()> {
    let hf = HfConfig::load(config).map_err(err)?;
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
    cfg.bos_token_id = tok.bos_id();
    let params = Params::<f32>::random(&cfg, 0.02, seed);
    save_model(out, &cfg, &params).map_err(err)?;
    tok.save(&out.join(files::TOKENIZER_FILE)).map_err(err)?;
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
    let pe = match c.position_encoding {
        PositionEncoding::None => "none (NoPE)".to_string(),
        PositionEncoding::Rope { theta } => format!("rope (theta {theta})"),
    };
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

/// Either engine, chosen at run time; `lab/` stays generic over `Engine`.
/// One engine lives per command, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum AnyEngine {
    Cpu(CpuEngine),
    Gpu(GpuEngine),
}

impl Engine for AnyEngine {
    fn name(&self) -> String {
        match self {
            AnyEngine::Cpu(e) => e.name(),
            AnyEngine::Gpu(e) => e.name(),
        }
    }

    fn config(&self) -> &ModelConfig {
        match self {
            AnyEngine::Cpu(e) => e.config(),
            AnyEngine::Gpu(e) => e.config(),
        }
    }

    async fn forward(
        &mut self,
        tokens: &[u32],
        head_scales: &HeadScales,
        options: &ForwardOptions,
    ) -> nopescope::model::Result<ForwardOutput> {
        match self {
            AnyEngine::Cpu(e) => e.forward(tokens, head_scales, options).await,
            AnyEngine::Gpu(e) => e.forward(tokens, head_scales, options).await,
        }
    }

    async fn gradients(
        &mut self,
        batch: &[Vec<u32>],
        head_scales: &HeadScales,
        mode: GradMode,
    ) -> nopescope::model::Result<Gradients> {
        match self {
            AnyEngine::Cpu(e) => e.gradients(batch, head_scales, mode).await,
            AnyEngine::Gpu(e) => e.gradients(batch, head_scales, mode).await,
        }
    }

    async fn train_step(
        &mut self,
        batch: &[Vec<u32>],
        head_scales: &HeadScales,
        optimizer: &AdamWConfig,
        lr: f32,
    ) -> nopescope::model::Result<StepStats> {
        match self {
            AnyEngine::Cpu(e) => e.train_step(batch, head_scales, optimizer, lr).await,
            AnyEngine::Gpu(e) => e.train_step(batch, head_scales, optimizer, lr).await,
        }
    }

    async fn params(&mut self) -> nopescope::model::Result<Params<f32>> {
        match self {
            AnyEngine::Cpu(e) => e.params().await,
            AnyEngine::Gpu(e) => e.params().await,
        }
    }
}

fn cpu_engine(config: ModelConfig, params: Params<f32>) -> CliResult<AnyEngine> {
    let e = CpuEngine::new(config, params).map_err(err)?;
    eprintln!("backend: {}", e.name());
    Ok(AnyEngine::Cpu(e))
}

/// Picks the engine: `cpu`; `gpu` (an error, suggesting `--backend cpu`,
/// if the device or a shader fails); `auto`: the GPU engine on a real GPU,
/// the CPU engine on a CPU / fallback adapter (lavapipe, SwiftShader, WARP
/// are slower than it) or when there is no usable adapter. The choice and
/// the adapter go to stderr.
fn make_engine(backend: Backend, config: ModelConfig, params: Params<f32>) -> CliResult<AnyEngine> {
    match backend {
        Backend::Cpu => cpu_engine(config, params),
        Backend::Gpu => {
            let ctx = GpuContext::new_default().map_err(|e| format!("{e}; use --backend cpu"))?;
            let adapter = ctx.adapter();
            let e = pollster::block_on(GpuEngine::new(ctx, config, params))
                .map_err(|e| format!("the GPU engine failed on {adapter}: {e}; use --backend cpu"))?;
            eprintln!("backend: {}", e.name());
            Ok(AnyEngine::Gpu(e))
        }
        Backend::Auto => {
            let ctx = match GpuContext::new_default() {
                Ok(ctx) => ctx,
                Err(e) => {
                    eprintln!("backend auto: no usable GPU ({e}); using the CPU engine");
                    return cpu_engine(config, params);
                }
            };
            if ctx.report().is_cpu {
                eprintln!(
                    "backend auto: {} is a CPU / fallback adapter, slower than the CPU engine; using the CPU engine",
                    ctx.adapter()
                );
                return cpu_engine(config, params);
            }
            let adapter = ctx.adapter();
            match pollster::block_on(GpuEngine::new(ctx, config.clone(), params.clone())) {
                Ok(e) => {
                    eprintln!("backend auto: the GPU engine on {adapter}");
                    Ok(AnyEngine::Gpu(e))
                }
                Err(e) => {
                    eprintln!("backend auto: the GPU engine failed on {adapter} ({e}); using the CPU engine");
                    cpu_engine(config, params)
                }
            }
        }
    }
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
    bar
}

fn eval_cmd(
    dir: &Path,
    text: &Path,
    lengths: &[usize],
    uniform_scale: Option<f32>,
    head_scales: Option<&Path>,
    windows: usize,
    backend: Backend,
    json: bool,
) -> CliResult<()> {
    let m = load_model_dir(dir).map_err(err)?;
    let tok = m.tokenizer.as_ref().ok_or_else(|| {
        format!(
            "{}: no {} (eval needs the tokenizer)",
            dir.display(),
            files::TOKENIZER_FILE
        )
    })?;
    let hs = match (uniform_scale, head_scales) {
        (Some(s), _) => HeadScales::uniform(&m.config, s).map_err(err)?,
        (None, Some(p)) => HeadScales::load(p, &m.config).map_err(err)?,
        (None, None) => HeadScales::ones(&m.config),
    };
    let text = read_text(text)?;
    let tokens = tok.encode(&text).map_err(err)?;
    let bos = tok.bos_id();
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
    if json {
        println!("{}", serde_json::to_string(&report).expect("json"));
    } else {
        println!(
            "{:>8} {:>8} {:>10} {:>12} {:>14}",
            "length", "windows", "loss", "perplexity", "entropy (bits)"
        );
        for r in &report.results {
            println!(
                "{:>8} {:>8} {:>10.4} {:>12.2} {:>14.3}",
                r.length, r.windows, r.loss, r.perplexity, r.mean_entropy_bits
            );
        }
    }
    Ok(())
}

fn bench_cmd(backend: Backend, json: bool, long: bool) -> CliResult<()> {
    let cfg = ModelConfig::bench();
    let params = Params::<f32>::random(&cfg, 0.02, 7);
    let mut engine = make_engine(backend, cfg, params)?;
    let report = pollster::block_on(bench::run(&mut engine, long, &mut |line| eprintln!("{line}"))).map_err(err)?;
    if json {
        println!("{}", serde_json::to_string(&report).expect("json"));
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
