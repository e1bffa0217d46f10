//! A small log-linear latency histogram (8 sub-buckets per power of two, about 12 %
//! relative error), updated under the pool's lock and read by the metrics actor.

use std::time::Duration;

use serde::Serialize;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 ns (18 minutes) are kept apart; longer ones share the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

fn index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exp = (63 - ns.leading_zeros()).min(MAX_EXP);
    let sub = (ns >> (exp - SUB_BITS)) & (SUB - 1);
    let idx = ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize;
    idx.min(BUCKETS - 1)
}

/// The largest value that falls into bucket `idx`.
fn upper_bound(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < SUB {
        return idx;
    }
    let exp = (idx / SUB) as u32 + SUB_BITS - 1;
    let sub = idx % SUB;
    let low = (1u64 << exp) + (sub << (exp - SUB_BITS));
    low + (1u64 << (exp - SUB_BITS)) - 1
}

impl Histogram {
    pub(crate) fn record(&mut self, d: Duration) {
        if d.is_zero() {
            // Every checkout that found a connection ready: keep it cheap.
            self.counts[0] += 1;
            self.count += 1;
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.count += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Counts per bucket at these upper bounds (seconds, increasing), the last bucket
    /// being `+Inf`; each internal bucket goes to the first bound at or above its upper
    /// edge (so a sample may land one bound high, never low).
    pub(crate) fn buckets(&self, bounds_s: &[f64]) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = bounds_s.iter().map(|&b| (b, 0)).collect();
        out.push((f64::INFINITY, 0));
        for (idx, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let upper = upper_bound(idx) as f64 / 1e9;
            let slot = bounds_s
                .iter()
                .position(|&b| upper <= b)
                .unwrap_or(bounds_s.len());
            out[slot].1 += c;
        }
        out
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(upper_bound(idx).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            mean: if self.count == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos((self.sum_ns / self.count as u128) as u64)
            },
            sum: Duration::from_nanos(self.sum_ns.min(u64::MAX as u128) as u64),
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: Duration::from_nanos(self.max_ns),
        }
    }
}

/// Count, mean, p50, p99 and max of a latency distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Sum of all samples.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub sum: Duration,
    /// Mean.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub mean: Duration,
    /// Median (upper bound of its bucket, about 12 % high at most).
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub p50: Duration,
    /// 99th percentile (likewise).
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub p99: Duration,
    /// Largest sample, exact.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for idx in 0..BUCKETS - 1 {
            assert_eq!(index(upper_bound(idx)), idx, "idx {idx}");
            assert_eq!(index(upper_bound(idx) + 1), idx + 1, "idx {idx}");
        }
    }

    #[test]
    fn buckets_count_every_sample_once() {
        let mut h = Histogram::default();
        for us in [50u64, 200, 900, 5_000, 2_000_000] {
            h.record(Duration::from_micros(us));
        }
        let b = h.buckets(&[0.0001, 0.001, 0.01]);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert_eq!(b[0], (0.0001, 1));
        assert_eq!(b[3], (f64::INFINITY, 1));
    }

    #[test]
    fn quantiles_are_within_bucket_error() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_micros(1000));
        let p50 = s.p50.as_secs_f64() * 1e6;
        let p99 = s.p99.as_secs_f64() * 1e6;
        assert!((500.0..=500.0 * 1.13).contains(&p50), "p50 {p50}");
        assert!((990.0..=1000.0).contains(&p99), "p99 {p99}");
    }
}
