//! Kernel times from the device's own clock: while a profile runs, every
//! compute pass writes a timestamp at its start and end (the device's
//! `timestamp-query` feature), and `GpuContext::profile_finish` reads them
//! back and sums the time per kernel. For `nopescope bench --profile`:
//! where a forward's time goes on the device, which wall-clock timing of a
//! whole call cannot say.

use std::collections::BTreeMap;

use crate::model::engine::KernelTime;

/// Compute passes one profile times; later ones run untimed.
pub const PROFILE_PASSES: u32 = 2048;

/// A running profile: the query set its passes write to, and each timed
/// pass's kernel, in order.
#[derive(Debug)]
pub(crate) struct Profile {
    pub set: wgpu::QuerySet,
    pub labels: Vec<String>,
}

impl Profile {
    pub fn new(device: &wgpu::Device) -> Self {
        Profile {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_PASSES,
            }),
            labels: Vec::new(),
        }
    }

    /// The timestamp writes for the next pass, or None once the set is full.
    pub fn next_pass(&mut self, label: &str) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let n = self.labels.len() as u32;
        if n >= PROFILE_PASSES {
            return None;
        }
        self.labels.push(label.to_string());
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(2 * n),
            end_of_pass_write_index: Some(2 * n + 1),
        })
    }
}

/// Sums pass times per kernel: `ticks` holds (start, end) per pass in the
/// order of `labels`, `period_ns` the nanoseconds per tick. Sorted by time,
/// longest first.
pub fn kernel_times(labels: &[String], ticks: &[u64], period_ns: f32) -> Vec<KernelTime> {
    let mut by: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for (label, pair) in labels.iter().zip(ticks.chunks_exact(2)) {
        let seconds = pair[1].saturating_sub(pair[0]) as f64 * period_ns as f64 * 1e-9;
        let e = by.entry(label).or_default();
        e.0 += 1;
        e.1 += seconds;
    }
    let mut times: Vec<KernelTime> = by
        .into_iter()
        .map(|(kernel, (calls, seconds))| KernelTime {
            kernel: kernel.to_string(),
            calls,
            seconds,
        })
        .collect();
    times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_times_sum_per_kernel_longest_first() {
        let labels = ["a", "b", "a"].map(String::from);
        // a: 10 + 30 ticks, b: 25 ticks, at 2 ns per tick; a clock that
        // went backwards counts 0.
        let t = kernel_times(&labels, &[0, 10, 10, 35, 40, 70], 2.0);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].kernel.as_str(), t[0].calls), ("a", 2));
        assert!((t[0].seconds - 80e-9).abs() < 1e-15);
        assert_eq!((t[1].kernel.as_str(), t[1].calls), ("b", 1));
        assert!((t[1].seconds - 50e-9).abs() < 1e-15);
        assert_eq!(kernel_times(&labels[..1], &[5, 3], 1.0)[0].seconds, 0.0);
    }
}
