//! Profiling aid: training steps and head-scale gradient steps on the bench
//! model at T=256 (`cargo run --release --example train256 [steps]`).
use nopescope::model::cpu::CpuEngine;
use nopescope::model::optim::AdamWConfig;
use nopescope::model::params::Params;
use nopescope::model::{Engine, ForwardOptions, GradMode, HeadScales, LogitsRequest, ModelConfig};
fn main() {
    let steps: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(20);
    let cfg = ModelConfig::bench();
    let p = Params::<f32>::random(&cfg, 0.02, 1);
    let hs = HeadScales::ones(&cfg);
    let mut e = CpuEngine::new(cfg.clone(), p).unwrap();
    let batch = vec![(0..256).map(|i| (i * 7919 % 4096) as u32).collect::<Vec<u32>>()];
    let opt = AdamWConfig::default();
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        pollster::block_on(e.train_step(&batch, &hs, &opt, 1e-4)).unwrap();
    }
    let train = t0.elapsed().as_secs_f64() / steps as f64;
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        pollster::block_on(e.gradients(&batch, &hs, GradMode::HeadScalesOnly)).unwrap();
    }
    let scales = t0.elapsed().as_secs_f64() / steps as f64;
    let long: Vec<u32> = (0..1024).map(|i| (i * 7919 % 4096) as u32).collect();
    let all = ForwardOptions {
        logits: LogitsRequest::All,
        entropy: false,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        pollster::block_on(e.forward(&long, &hs, &all)).unwrap();
    }
    let fwd = t0.elapsed().as_secs_f64() / steps as f64;
    println!(
        "train step {:.1} ms ({:.0} tok/s), head-scale grads {:.1} ms ({:.0} tok/s), forward T=1024 {:.1} ms ({:.0} tok/s)",
        train * 1e3,
        256.0 / train,
        scales * 1e3,
        256.0 / scales,
        fwd * 1e3,
        1024.0 / fwd
    );
}
