//! How much memory a model needs, estimated from its config before its
//! weights are read, and how much this machine has: so that a model too
//! big for the chosen engine is refused with both numbers instead of
//! failing part way (or taking the machine down) while it loads.
//!
//! Estimates, not measurements: the f32 weights exactly, the working
//! memory of a forward with entropy from the buffers the engine makes per
//! token (`nopescope bench --model DIR` prints the estimate beside the
//! measured peak).

use super::config::ModelConfig;
use super::params::ParamLayout;
use super::shapes::LOGIT_ROWS;

/// Bytes an engine holds for a model: its weights and the working memory
/// of one forward with entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub weights: u64,
    pub working: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.working)
    }
}

/// The f32 weights of `cfg`.
pub fn weights_bytes(cfg: &ModelConfig) -> u64 {
    (ParamLayout::new(cfg).total as u64).saturating_mul(4)
}

/// Bytes of `per_token` values a token over `t` tokens and `fixed` more,
/// in f32; in u64 and saturating, so that no size a file or an argument
/// gives can wrap it to a small number that then passes the check (it
/// saturates to one no machine has).
pub fn working_bytes(per_token: u64, t: usize, fixed: u64) -> u64 {
    per_token
        .saturating_mul(t as u64)
        .saturating_add(fixed)
        .saturating_mul(4)
}

/// Values of one chunk of logits at `t` tokens (rows times the
/// vocabulary: past 2^32, so in u64 on wasm32 too).
pub fn logit_chunk(cfg: &ModelConfig, t: usize) -> u64 {
    LOGIT_ROWS.min(t.max(1)) as u64 * cfg.vocab_size as u64
}

/// The widths the engines' working memory is made of, in u64 (each at
/// most 2^24, so their sums and the layers x heads product cannot wrap).
pub struct Widths {
    pub c: u64,
    pub f: u64,
    pub qd: u64,
    pub kvd: u64,
    pub h: u64,
    pub layers: u64,
}

impl Widths {
    pub fn of(cfg: &ModelConfig) -> Self {
        Widths {
            c: cfg.hidden_size as u64,
            f: cfg.intermediate_size as u64,
            qd: cfg.q_dim() as u64,
            kvd: cfg.kv_dim() as u64,
            h: cfg.num_heads as u64,
            layers: cfg.num_layers as u64,
        }
    }
}

/// The CPU engine at `t` tokens on `threads` threads (`model::cpu::transformer`'s
/// forward: the residual stream and its norms, q, k, v and their joint
/// product, the attention output, gate/up and SwiGLU per token; the
/// entropy (L, H, T); one chunk of logits; a row of scores per thread).
pub fn cpu_engine(cfg: &ModelConfig, t: usize, threads: usize) -> Footprint {
    let Widths {
        c,
        f,
        qd,
        kvd,
        h,
        layers,
    } = Widths::of(cfg);
    let per_token = 4 * c + 3 * qd + 4 * kvd + 3 * f + h + layers * h;
    let fixed = logit_chunk(cfg, t) + (threads.max(1) as u64 * 2).saturating_mul(t as u64);
    Footprint {
        weights: weights_bytes(cfg),
        working: working_bytes(per_token, t, fixed),
    }
}

/// Memory this machine can still give a process (Linux: `MemAvailable`
/// of /proc/meminfo); None where it is not known.
pub fn available_host() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        meminfo_available(&info)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub fn meminfo_available(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes for people: "1.23 GiB", "45.6 MiB".
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    let gib = 1024.0 * 1024.0 * 1024.0;
    if b < gib {
        return format!("{:.1} MiB", b / (1024.0 * 1024.0));
    }
    // Past a TiB (an absurd size from a file or an argument), the unit grows.
    let mut v = b / gib;
    for unit in ["GiB", "TiB", "PiB"] {
        if v < 1024.0 {
            return format!("{v:.2} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.2} EiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read() {
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(meminfo_available(info), Some(23_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
        assert_eq!(human(3 * 1024 * 1024 * 1024 / 2), "1.50 GiB");
        assert_eq!(human(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(human(3 << 40), "3.00 TiB");
        assert_eq!(human(u64::MAX), "16.00 EiB");
    }
}
