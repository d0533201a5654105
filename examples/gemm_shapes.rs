//! Profiling aid: sgemm throughput on the bench model's shapes.
use nopescope::model::real::matmul_nt;
fn main() {
    for &(m, k, n) in &[
        (256, 192, 4096),
        (256, 192, 576),
        (256, 512, 192),
        (1024, 192, 4096),
        (4096, 256, 192),
        (2048, 2048, 2048),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; n * k];
        let mut c = vec![0f32; m * n];
        let reps = (2e9 / (2.0 * (m * k * n) as f64)).max(1.0) as usize;
        matmul_nt(&mut c, &a, &b, m, k, n, 1.0, 0.0);
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            matmul_nt(&mut c, &a, &b, m, k, n, 1.0, 0.0);
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!("{m}x{k}x{n}: {:.1} GFLOP/s", 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}
