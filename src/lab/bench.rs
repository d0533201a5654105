//! The benchmark behind `nopescope bench`: the bench model (random weights,
//! hidden 192, 6 layers, 6 heads, SwiGLU 512, vocab 4096) timed on forward,
//! forward with entropy at long lengths, a training step and a head-scale
//! step. Numbers come from this run; nothing here is a pass/fail test.

use std::time::Instant;

use serde::Serialize;

use crate::model::engine::{Engine, ForwardOptions, GradMode, LogitsRequest};
use crate::model::error::Result;
use crate::model::head_scales::HeadScales;
use crate::model::optim::{AdamWConfig, AdamWState};
use crate::model::rng::Rng;

#[derive(Debug, Clone, Serialize, Default)]
pub struct BenchReport {
    pub backend: String,
    /// The engine's kernel forms where it has a choice (`Engine::kernels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// A forward of 16 tokens (logits of the last): almost no arithmetic,
    /// so its time is the engine's fixed cost per call.
    pub forward_seconds_t16: f64,
    /// True when only the 16-token forward ran (`--fixed-cost`).
    pub fixed_cost_only: bool,
    /// What one such forward asks of the device (GPU engines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_work_forward_t16: Option<crate::model::engine::DeviceWork>,
    /// And one forward of 1024 tokens with all logits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_work_forward_t1024: Option<crate::model::engine::DeviceWork>,
    pub forward_tokens_per_s_t1024: f64,
    pub entropy_forward_seconds_t16384: f64,
    pub entropy_forward_peak_rss_bytes_t16384: Option<u64>,
    pub train_tokens_per_s_t256: f64,
    pub scale_only_tokens_per_s_t256: f64,
    /// One step of the per-head temperature search (`lab::search`): 8
    /// sequences of 1024 tokens, frozen model, text objective.
    pub search_step_seconds_t1024_b8: f64,
    /// Only with `--long`: (length, seconds, peak RSS bytes) of forwards with
    /// entropy at 16384, 32768 and 65536, to show memory growing linearly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub long_entropy_forward: Vec<LongRun>,
    /// Only with `--profile`, on a device with timestamp queries: each
    /// call's time per kernel on the device's clock.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfiledCall>,
}

/// One call run once under the kernel profiler (`Engine::profile_start`).
#[derive(Debug, Clone, Serialize)]
pub struct ProfiledCall {
    pub call: String,
    /// The whole call on the host's clock, read-back included.
    pub wall_seconds: f64,
    /// The sum of its kernels' times on the device's clock.
    pub kernel_seconds: f64,
    /// Longest first.
    pub kernels: Vec<crate::model::engine::KernelTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LongRun {
    pub length: usize,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident memory since the last reset (Linux: VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak to the current resident size (Linux >= 4.0).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn random_tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

pub async fn timed_entropy_forward<E: Engine>(
    engine: &mut E,
    rng: &mut Rng,
    length: usize,
    hs: &HeadScales,
) -> Result<LongRun> {
    let vocab = engine.config().vocab_size;
    let tokens = random_tokens(rng, length, vocab);
    let reset = reset_peak_rss();
    let t0 = Instant::now();
    let out = engine
        .forward(
            &tokens,
            hs,
            &ForwardOptions {
                entropy: true,
                logits: LogitsRequest::None,
                ..Default::default()
            },
        )
        .await?;
    let seconds = t0.elapsed().as_secs_f64();
    assert!(out.entropy_bits.is_some());
    Ok(LongRun {
        length,
        seconds,
        peak_rss_bytes: if reset { peak_rss_bytes() } else { None },
    })
}

/// Runs the benchmark on `engine` (which must hold the bench model).
/// `log` receives a line per measurement as it finishes.
/// The device work of one call, from counts before and after `calls`.
fn per_call(
    before: Option<crate::model::engine::DeviceWork>,
    after: Option<crate::model::engine::DeviceWork>,
    calls: u64,
) -> Option<crate::model::engine::DeviceWork> {
    let w = after?.since(before?);
    Some(crate::model::engine::DeviceWork {
        submits: w.submits / calls,
        dispatches: w.dispatches / calls,
        buffers: w.buffers / calls,
        bind_groups: w.bind_groups / calls,
        read_backs: w.read_backs / calls,
    })
}

fn fmt_work(w: Option<crate::model::engine::DeviceWork>) -> String {
    match w {
        Some(w) => format!(
            " ({} submits, {} dispatches, {} buffers, {} bind groups, {} read-backs per call)",
            w.submits, w.dispatches, w.buffers, w.bind_groups, w.read_backs
        ),
        None => String::new(),
    }
}

/// `only_fixed_cost`: stop after the 16-token forward (a quick look at the
/// fixed cost, e.g. on a software adapter where the rest takes long).
/// `profile`: then time each kernel of a few calls on the device's clock
/// (`profile_calls`).
pub async fn run<E: Engine>(
    engine: &mut E,
    long: bool,
    only_fixed_cost: bool,
    profile: bool,
    log: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let cfg = engine.config().clone();
    let hs = HeadScales::ones(&cfg);
    let mut rng = Rng::new(2024);
    let mut report = BenchReport {
        backend: engine.name(),
        kernels: engine.kernels(),
        ..Default::default()
    };

    // The fixed cost: 16 tokens, the last one's logits.
    let short = random_tokens(&mut rng, 16, cfg.vocab_size);
    engine.forward(&short, &hs, &ForwardOptions::default()).await?; // warm-up
    let before = engine.device_work();
    let mut times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        engine.forward(&short, &hs, &ForwardOptions::default()).await?;
        times.push(t0.elapsed().as_secs_f64());
    }
    report.forward_seconds_t16 = median(times);
    report.device_work_forward_t16 = per_call(before, engine.device_work(), 7);
    log(&format!(
        "forward, T=16: {:.2} ms{}",
        1e3 * report.forward_seconds_t16,
        fmt_work(report.device_work_forward_t16)
    ));
    if only_fixed_cost {
        report.fixed_cost_only = true;
        if profile {
            report.profiles = profile_calls(engine, &mut rng, true, log).await?;
        }
        return Ok(report);
    }

    // Long forward with entropy first, while the heap is small, so the peak
    // it records is this forward's.
    let r = timed_entropy_forward(engine, &mut rng, 16384, &hs).await?;
    report.entropy_forward_seconds_t16384 = r.seconds;
    report.entropy_forward_peak_rss_bytes_t16384 = r.peak_rss_bytes;
    log(&format!(
        "forward + entropy, T=16384: {:.2} s, peak RSS {}",
        r.seconds,
        fmt_bytes(r.peak_rss_bytes)
    ));

    let tokens = random_tokens(&mut rng, 1024, cfg.vocab_size);
    let all_logits = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: false,
        ..Default::default()
    };
    engine.forward(&tokens, &hs, &all_logits).await?; // warm-up
    let before = engine.device_work();
    let mut times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        engine.forward(&tokens, &hs, &all_logits).await?;
        times.push(t0.elapsed().as_secs_f64());
    }
    report.device_work_forward_t1024 = per_call(before, engine.device_work(), 7);
    report.forward_tokens_per_s_t1024 = 1024.0 / median(times);
    log(&format!(
        "forward (logits), T=1024: {:.0} tokens/s",
        report.forward_tokens_per_s_t1024
    ));

    let opt = AdamWConfig::default();
    let mut times = Vec::new();
    for step in 0..12 {
        let batch = vec![random_tokens(&mut rng, 256, cfg.vocab_size)];
        let t0 = Instant::now();
        engine.train_step(&batch, &hs, &opt, 1e-4).await?;
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    report.train_tokens_per_s_t256 = 256.0 / median(times);
    log(&format!(
        "training step, T=256: {:.0} tokens/s",
        report.train_tokens_per_s_t256
    ));

    // Head-scale step: frozen model, gradients of the scales only, AdamW on
    // the scales, clamp s >= 1 (the focus constraint).
    let mut scales = HeadScales::uniform(&cfg, 1.6)?;
    let mut state = AdamWState::new(scales.values.len());
    let scale_opt = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut times = Vec::new();
    for step in 0..12 {
        let batch = vec![random_tokens(&mut rng, 256, cfg.vocab_size)];
        let t0 = Instant::now();
        let g = engine.gradients(&batch, &scales, GradMode::HeadScalesOnly).await?;
        let mut grads = g.head_scales;
        crate::model::optim::clip_grad_norm(&mut grads, 1.0);
        state.update(&mut scales.values, &grads, &scale_opt, 0.1, None);
        for s in &mut scales.values {
            *s = s.max(1.0);
        }
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    report.scale_only_tokens_per_s_t256 = 256.0 / median(times);
    log(&format!(
        "head-scale step, T=256: {:.0} tokens/s",
        report.scale_only_tokens_per_s_t256
    ));

    // One step of the temperature search as the app and `search` run it.
    {
        use super::search::{head_search, HeadSearchConfig, SearchData, SearchProgress, SearchStep};
        struct Times(Instant, Vec<f64>);
        impl SearchProgress for Times {
            fn step(&mut self, _: &SearchStep) -> bool {
                self.1.push(self.0.elapsed().as_secs_f64());
                self.0 = Instant::now();
                true
            }
        }
        let text = random_tokens(&mut rng, 16 * 1024, cfg.vocab_size);
        let data = SearchData::text(1024, &text, None)?;
        let recipe = HeadSearchConfig {
            steps: 3,
            ..HeadSearchConfig::default()
        };
        let mut times = Times(Instant::now(), Vec::new());
        head_search(engine, &data, &recipe, &mut times).await?;
        report.search_step_seconds_t1024_b8 = median(times.1[1..].to_vec());
        log(&format!(
            "temperature search step, 8 x 1024 tokens: {:.2} s",
            report.search_step_seconds_t1024_b8
        ));
    }

    if long {
        for length in [16384, 32768, 65536] {
            let r = timed_entropy_forward(engine, &mut rng, length, &hs).await?;
            log(&format!(
                "forward + entropy, T={length}: {:.2} s, peak RSS {}",
                r.seconds,
                fmt_bytes(r.peak_rss_bytes)
            ));
            report.long_entropy_forward.push(r);
        }
    }
    if profile {
        report.profiles = profile_calls(engine, &mut rng, false, log).await?;
    }
    Ok(report)
}

/// Each of the bench's calls once more under the kernel profiler (the
/// 16-token forward alone with `short`), warm: the time of every kernel
/// on the device's clock beside the call's wall time. Empty, with a line
/// saying so, where the engine cannot profile.
pub async fn profile_calls<E: Engine>(
    engine: &mut E,
    rng: &mut Rng,
    short: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ProfiledCall>> {
    let cfg = engine.config().clone();
    let hs = HeadScales::ones(&cfg);
    let forward = |logits, entropy| {
        Some(ForwardOptions {
            logits,
            entropy,
            ..Default::default()
        })
    };
    // (call, tokens, the forward's options; None: a training step)
    let mut plan = vec![("forward, T=16, last logits", 16, Some(ForwardOptions::default()))];
    if !short {
        plan.extend([
            ("forward, T=1024, all logits", 1024, forward(LogitsRequest::All, false)),
            ("forward + entropy, T=16384", 16384, forward(LogitsRequest::None, true)),
            ("training step, T=256", 256, None),
        ]);
    }
    let mut calls = Vec::new();
    for (call, t, options) in plan {
        let tokens = random_tokens(rng, t, cfg.vocab_size);
        if !engine.profile_start() {
            log("profile: this engine or device cannot time kernels (no timestamp queries)");
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        match options {
            Some(options) => {
                engine.forward(&tokens, &hs, &options).await?;
            }
            None => {
                engine.train_step(&[tokens], &hs, &AdamWConfig::default(), 1e-4).await?;
            }
        }
        let wall_seconds = t0.elapsed().as_secs_f64();
        let kernels = engine.profile_finish().await?;
        let kernel_seconds = kernels.iter().map(|k| k.seconds).sum();
        let c = ProfiledCall {
            call: call.to_string(),
            wall_seconds,
            kernel_seconds,
            kernels,
        };
        log(&c.table());
        calls.push(c);
    }
    Ok(calls)
}

impl ProfiledCall {
    /// The call's kernels, longest first, with their share of the kernel time.
    pub fn table(&self) -> String {
        let mut s = format!(
            "profile: {}: {:.3} ms wall, {:.3} ms in kernels\n",
            self.call,
            1e3 * self.wall_seconds,
            1e3 * self.kernel_seconds
        );
        s += &format!("  {:<40} {:>6} {:>10} {:>7}\n", "kernel", "calls", "ms", "share");
        for k in &self.kernels {
            s += &format!(
                "  {:<40} {:>6} {:>10.3} {:>6.1}%\n",
                k.kernel,
                k.calls,
                1e3 * k.seconds,
                100.0 * k.seconds / self.kernel_seconds.max(1e-12)
            );
        }
        s
    }
}

pub fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) => format!("{:.0} MB", b as f64 / 1e6),
        None => "n/a".into(),
    }
}

impl BenchReport {
    pub fn table(&self) -> String {
        let mut s = format!("backend: {}\n", self.backend);
        if let Some(k) = &self.kernels {
            s += &format!("kernels: {k}\n");
        }
        s += &format!("{:<44} {:>14}\n", "measurement", "value");
        s += &format!(
            "{:<44} {:>14.3}\n",
            "forward ms, T=16 (fixed cost)",
            1e3 * self.forward_seconds_t16
        );
        for (name, w) in [
            ("T=16", self.device_work_forward_t16),
            ("T=1024", self.device_work_forward_t1024),
        ] {
            if let Some(w) = w {
                s += &format!("{:<44} {:>14}\n", format!("submits per forward, {name}"), w.submits);
                s += &format!(
                    "{:<44} {:>14}\n",
                    format!("dispatches per forward, {name}"),
                    w.dispatches
                );
                s += &format!(
                    "{:<44} {:>14}\n",
                    format!("buffers made per forward, {name}"),
                    w.buffers
                );
                s += &format!(
                    "{:<44} {:>14}\n",
                    format!("bind groups made per forward, {name}"),
                    w.bind_groups
                );
                s += &format!(
                    "{:<44} {:>14}\n",
                    format!("read-backs per forward, {name}"),
                    w.read_backs
                );
            }
        }
        if self.fixed_cost_only {
            return s;
        }
        s += &format!(
            "{:<44} {:>14.0}\n",
            "forward tokens/s, T=1024", self.forward_tokens_per_s_t1024
        );
        s += &format!(
            "{:<44} {:>14.2}\n",
            "forward + entropy seconds, T=16384", self.entropy_forward_seconds_t16384
        );
        s += &format!(
            "{:<44} {:>14}\n",
            "forward + entropy peak RSS, T=16384",
            fmt_bytes(self.entropy_forward_peak_rss_bytes_t16384)
        );
        s += &format!(
            "{:<44} {:>14.0}\n",
            "training step tokens/s, T=256", self.train_tokens_per_s_t256
        );
        s += &format!(
            "{:<44} {:>14.0}\n",
            "head-scale step tokens/s, T=256", self.scale_only_tokens_per_s_t256
        );
        s += &format!(
            "{:<44} {:>14.2}\n",
            "search step seconds, 8 x 1024 tokens", self.search_step_seconds_t1024_b8
        );
        for r in &self.long_entropy_forward {
            s += &format!(
                "{:<44} {:>14}\n",
                format!("forward + entropy, T={}", r.length),
                format!("{:.2} s {}", r.seconds, fmt_bytes(r.peak_rss_bytes))
            );
        }
        s
    }
}

/// `nopescope bench --model DIR`: one model folder, timed on forwards with
/// entropy at one length, with the memory estimated before loading beside
/// the memory measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelBenchReport {
    pub model: String,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    pub parameters: usize,
    pub tokens: usize,
    /// Reading the files and making the engine (weights uploaded).
    pub load_seconds: f64,
    /// Each forward with entropy (no logits kept), in order: the first
    /// also makes the engine's per-length buffers.
    pub forward_seconds: Vec<f64>,
    pub tokens_per_s: f64,
    /// This process's peak resident memory over the whole run (loading
    /// included), and during the forwards alone.
    pub peak_rss_bytes: Option<u64>,
    pub forward_peak_rss_bytes: Option<u64>,
    /// `lab::backend::check_memory`'s estimate, made before loading.
    pub estimated_host_bytes: u64,
    pub estimated_device_bytes: Option<u64>,
}

/// Times `runs` forwards with entropy of `tokens` random tokens on an
/// engine holding the model; the caller fills in the loading.
pub async fn model_forwards<E: Engine>(engine: &mut E, tokens: usize, runs: usize) -> Result<Vec<LongRun>> {
    let mut rng = Rng::new(3);
    let hs = HeadScales::ones(engine.config());
    let mut out = Vec::new();
    for _ in 0..runs.max(1) {
        out.push(timed_entropy_forward(engine, &mut rng, tokens, &hs).await?);
    }
    Ok(out)
}

impl ModelBenchReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "model: {} ({} parameters)\nbackend: {}\n",
            self.model, self.parameters, self.backend
        );
        if let Some(k) = &self.kernels {
            s += &format!("kernels: {k}\n");
        }
        s += &format!("{:<44} {:>14}\n", "measurement", "value");
        s += &format!("{:<44} {:>14.2}\n", "load seconds (files + engine)", self.load_seconds);
        for (i, t) in self.forward_seconds.iter().enumerate() {
            s += &format!(
                "{:<44} {:>14.2}\n",
                format!("forward + entropy seconds, T={}, run {}", self.tokens, i + 1),
                t
            );
        }
        s += &format!("{:<44} {:>14.0}\n", "tokens/s (fastest run)", self.tokens_per_s);
        s += &format!("{:<44} {:>14}\n", "peak RSS, whole run", fmt_bytes(self.peak_rss_bytes));
        s += &format!(
            "{:<44} {:>14}\n",
            "peak RSS, forwards",
            fmt_bytes(self.forward_peak_rss_bytes)
        );
        s += &format!(
            "{:<44} {:>14}\n",
            "estimated before loading, host",
            fmt_bytes(Some(self.estimated_host_bytes))
        );
        if let Some(d) = self.estimated_device_bytes {
            s += &format!("{:<44} {:>14}\n", "estimated before loading, GPU", fmt_bytes(Some(d)));
        }
        s
    }
}
