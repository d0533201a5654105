//! AdamW with global gradient-norm clipping and a warm-up + cosine learning
//! rate, shared by training and by the head-scale search.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub clip_norm: Option<f32>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip_norm: Some(1.0),
        }
    }
}

/// Linear warm-up to `peak_lr`, then cosine decay to `min_ratio * peak_lr`
/// at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak_lr: f32,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub min_ratio: f32,
}

impl Schedule {
    /// Learning rate for step `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let decay = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f32 / decay as f32).min(1.0);
        let cos = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
        self.peak_lr * (self.min_ratio + (1.0 - self.min_ratio) * cos)
    }
}

/// Global L2 norm of `grads`, in f64 so long vectors sum exactly enough.
pub fn grad_norm(grads: &[f32]) -> f64 {
    // Eight independent partial sums, so the loop vectorizes.
    let mut acc = [0f64; 8];
    let chunks = grads.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&g| (g as f64) * (g as f64)).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += (c[l] as f64) * (c[l] as f64);
        }
    }
    (acc.iter().sum::<f64>() + tail).sqrt()
}

/// Scales `grads` so their global norm is at most `max_norm` (as PyTorch's
/// `clip_grad_norm_` does, with its 1e-6 guard); returns the norm before.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f64 {
    let norm = grad_norm(grads);
    let coef = max_norm as f64 / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
    norm
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdamWState {
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamWState {
    pub fn new(n: usize) -> Self {
        AdamWState {
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One AdamW update of `params` with `grads` (already clipped).
    /// `decay` says which entries get weight decay (None: all).
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], cfg: &AdamWConfig, lr: f32, decay: Option<&[bool]>) {
        assert_eq!(params.len(), grads.len());
        assert_eq!(params.len(), self.m.len());
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - (cfg.beta1 as f64).powi(t);
        let bc2 = 1.0 - (cfg.beta2 as f64).powi(t);
        let step_size = (lr as f64 / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        // Runs of equal decay flags, so the inner loop is branch-free and vectorizes.
        let n = params.len();
        let mut start = 0;
        while start < n {
            let flag = decay.is_none_or(|d| d[start]);
            let mut end = start + 1;
            while end < n && decay.is_none_or(|d| d[end]) == flag {
                end += 1;
            }
            let shrink = if flag { 1.0 - lr * cfg.weight_decay } else { 1.0 };
            let (b1, b2, eps) = (cfg.beta1, cfg.beta2, cfg.eps);
            let it = params[start..end]
                .iter_mut()
                .zip(&grads[start..end])
                .zip(&mut self.m[start..end])
                .zip(&mut self.v[start..end]);
            for (((p, &g), m), v) in it {
                *p *= shrink;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() * inv_bc2_sqrt + eps);
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_floor() {
        let s = Schedule {
            peak_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            min_ratio: 0.1,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(10) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-5);
        assert!((s.lr(110) - 0.1).abs() < 1e-6);
        assert!((s.lr(500) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = vec![3.0, 4.0];
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-9);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![0.3, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, vec![0.3, 0.4]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // With bias correction the first step is lr * g / (|g| + eps).
        let mut p = vec![1.0f32, -1.0];
        let mut st = AdamWState::new(2);
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        };
        st.update(&mut p, &[0.5, -2.0], &cfg, 0.1, None);
        assert!((p[0] - 0.9).abs() < 1e-5 && (p[1] + 0.9).abs() < 1e-5, "{p:?}");
    }
}
