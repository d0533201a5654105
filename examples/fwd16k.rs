use nopescope::model::cpu::CpuEngine;
use nopescope::model::params::Params;
use nopescope::model::{Engine, ForwardOptions, HeadScales, ModelConfig};
fn main() {
    let t: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(16384);
    let cfg = ModelConfig::bench();
    let p = Params::<f32>::random(&cfg, 0.02, 1);
    let hs = HeadScales::ones(&cfg);
    let mut e = CpuEngine::new(cfg.clone(), p).unwrap();
    let toks: Vec<u32> = (0..t).map(|i| (i * 7919 % 4096) as u32).collect();
    let t0 = std::time::Instant::now();
    pollster::block_on(e.forward(
        &toks,
        &hs,
        &ForwardOptions {
            entropy: true,
            ..Default::default()
        },
    ))
    .unwrap();
    println!("T={t}: {:.2}s", t0.elapsed().as_secs_f64());
}
