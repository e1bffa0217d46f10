//! A small log-linear latency histogram (8 sub-buckets per power of two, about 12 %
//! relative error), kept per recording thread by `pool::recorder` and summed for
//! snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 ns (18 minutes) are kept apart; longer ones share the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

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

/// The samples of a histogram, written by the threads that record them while the
/// metrics actor reads them.
///
/// A writer that owns it (`exclusive`: no other thread writes it) updates it with plain
/// loads and stores, which cost a fraction of an atomic add; others use atomic adds. A
/// reader may see a sample's bucket before its sum, never a torn number.
#[derive(Default)]
pub(crate) struct AtomicHistogram {
    /// Allocated at the first sample (most of a pool's shards never get one).
    counts: OnceLock<Box<[AtomicU64]>>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// Adds `n`.
fn bump(cell: &AtomicU64, n: u64, exclusive: bool) {
    if exclusive {
        cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
    } else {
        cell.fetch_add(n, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl AtomicHistogram {
    fn counts(&self) -> &[AtomicU64] {
        self.counts
            .get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }

    pub(crate) fn record(&self, d: Duration, exclusive: bool) {
        let ns = nanos(d);
        bump(&self.counts()[index(ns)], 1, exclusive);
        if ns == 0 {
            // Every checkout that found a connection ready: keep it cheap.
            return;
        }
        bump(&self.sum_ns, ns, exclusive);
        if exclusive {
            if ns > self.max_ns.load(Relaxed) {
                self.max_ns.store(ns, Relaxed);
            }
        } else {
            self.max_ns.fetch_max(ns, Relaxed);
        }
    }
}

/// Samples summed from `AtomicHistogram`s, for a snapshot.
#[derive(Default, Clone)]
pub(crate) struct Histogram {
    /// Empty while no sample was added.
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Histogram {
    /// Adds `other`'s samples to these.
    pub(crate) fn add(&mut self, other: &AtomicHistogram) {
        let Some(theirs) = other.counts.get() else {
            return;
        };
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(theirs.iter()) {
            let c = theirs.load(Relaxed);
            *mine += c;
            // The count is the buckets' sum, so that quantiles always add up.
            self.count += c;
        }
        self.sum_ns += u128::from(other.sum_ns.load(Relaxed));
        self.max_ns = self.max_ns.max(other.max_ns.load(Relaxed));
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
        let a = AtomicHistogram::default();
        for us in [50u64, 200, 900, 5_000, 2_000_000] {
            a.record(Duration::from_micros(us), true);
        }
        let mut h = Histogram::default();
        h.add(&a);
        let b = h.buckets(&[0.0001, 0.001, 0.01]);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert_eq!(b[0], (0.0001, 1));
        assert_eq!(b[3], (f64::INFINITY, 1));
    }

    #[test]
    fn quantiles_are_within_bucket_error() {
        let a = AtomicHistogram::default();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us), us % 2 == 0);
        }
        let mut h = Histogram::default();
        h.add(&a);
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_micros(1000));
        assert_eq!(s.mean, Duration::from_nanos(500_500));
        let p50 = s.p50.as_secs_f64() * 1e6;
        let p99 = s.p99.as_secs_f64() * 1e6;
        assert!((500.0..=500.0 * 1.13).contains(&p50), "p50 {p50}");
        assert!((990.0..=1000.0).contains(&p99), "p99 {p99}");
    }
}
