//! What every checkout and return records — the count of checkouts served, wait and hold
//! times — kept outside the pool lock, in shards chosen by the recording thread.
//!
//! Under load two workers check out from one pool at once. Recorded under the pool lock,
//! these counters were written by both cores in turn and their cache lines moved between
//! the cores on every checkout and every return, on top of the lock's own line (about a
//! sixth of a contended checkout's cost: benches/HISTORY.md). Each thread records into a shard
//! of its own instead, with plain stores (an atomic add, like a lock, costs several
//! times more even uncontended), and a snapshot sums the shards. A thread takes a shard
//! at its first record and gives it back when it exits; threads beyond `SHARDS - 1`
//! share the last one, with atomic adds.

use std::sync::Mutex;
use std::time::Duration;

use crate::histogram::{AtomicHistogram, Histogram};

const SHARDS: usize = 8;
/// The shard written by threads that found every other one taken (with atomic adds).
const COMMON: usize = SHARDS - 1;

/// Which shards threads own; a thread gives its own back when it exits.
static TAKEN: Mutex<[bool; COMMON]> = Mutex::new([false; COMMON]);

/// This thread's own shard, if it got one.
struct Claim(Option<usize>);

impl Claim {
    fn take() -> Claim {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let free = taken.iter().position(|t| !t);
        if let Some(i) = free {
            taken[i] = true;
        }
        Claim(free)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // The next owner's writes come after this thread's: the lock orders them.
        if let Some(i) = self.0 {
            TAKEN.lock().unwrap_or_else(|e| e.into_inner())[i] = false;
        }
    }
}

thread_local! {
    static CLAIM: Claim = Claim::take();
}

/// The shard this thread writes, and whether it owns it.
fn writer() -> (usize, bool) {
    CLAIM
        .try_with(|c| c.0.map_or((COMMON, false), |i| (i, true)))
        // Thread teardown, after this thread's claim went back.
        .unwrap_or((COMMON, false))
}

/// What a pool recorded, summed over its shards.
#[derive(Default, Clone)]
pub(crate) struct Tally {
    /// Checkouts that got a connection (exclusive or shared): one wait sample each.
    pub(crate) checkouts: u64,
    pub(crate) wait: Histogram,
    pub(crate) hold: Histogram,
}

/// One shard on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    wait: AtomicHistogram,
    hold: AtomicHistogram,
}

/// Kept inline in the pool's shared state: reaching a shard costs no pointer load.
#[derive(Default)]
pub(crate) struct Recorder {
    shards: [Shard; SHARDS],
}

impl Recorder {
    /// A checkout got a connection after waiting `waited`.
    pub(crate) fn checkout(&self, waited: Duration) {
        let (i, own) = writer();
        self.shards[i].wait.record(waited, own);
    }

    /// A caller held a connection (or its place on a shared one) for `held`.
    pub(crate) fn hold(&self, held: Duration) {
        let (i, own) = writer();
        self.shards[i].hold.record(held, own);
    }

    pub(crate) fn total(&self) -> Tally {
        let mut sum = Tally::default();
        for shard in self.shards.iter() {
            sum.wait.add(&shard.wait);
            sum.hold.add(&shard.hold);
        }
        sum.checkouts = sum.wait.summary().count;
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests here take shards; run them one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A process that starts and drops runtimes over and over (every benchmark
    /// measurement does) must not run out of shards: a thread's goes back when it exits.
    #[test]
    fn exiting_threads_give_their_shard_back() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..3 * SHARDS {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let owned = rt.block_on(async {
                let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(async { writer().1 })).collect();
                let mut owned = true;
                for t in tasks {
                    owned &= t.await.unwrap();
                }
                owned
            });
            drop(rt);
            assert!(owned, "a worker thread found no shard of its own");
        }
    }

    #[test]
    fn totals_sum_every_thread() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let rec = std::sync::Arc::new(Recorder::default());
        // More threads than shards: some write the common one at once.
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|i| {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    rec.checkout(Duration::from_micros(i as u64));
                    rec.hold(Duration::from_millis(1));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total = rec.total();
        assert_eq!(total.checkouts, SHARDS as u64 + 3);
        assert_eq!(total.wait.summary().count, SHARDS as u64 + 3);
        assert_eq!(
            total.wait.summary().max,
            Duration::from_micros(SHARDS as u64 + 2)
        );
        assert_eq!(total.hold.summary().count, SHARDS as u64 + 3);
    }
}
