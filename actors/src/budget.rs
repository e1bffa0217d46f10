//! The global connection budget: how many connections all pools together may hold open.
//!
//! Every open (or opening) connection carries a [`Permit`]; dropping the permit is the only
//! way budget comes back, so a connection closed on any path (return, discard, panic,
//! crash of its pool actor) gives its share back exactly once.
//!
//! Reserves: pool `i` is guaranteed `reserve[i]` permits. The rest, `max - Σ reserve`, is
//! shared. A pool may take a permit while it holds fewer than its reserve, or while the
//! shared part has room; so `Σ used ≤ Σ reserve + shared = max` always.
//!
//! Demand before standby: a pool asks for a permit either for callers ([`Need::Demand`])
//! or to keep `min_idle` connections ready ([`Need::Standby`]). Only a refused demand
//! presses: the supervisor then has another pool give up a connection (an idle one, or
//! a busy one from a pool holding two more of the shared part). While a pool presses, no
//! other pool takes the shared part for standby, nor for demand if it holds more of the
//! shared part than the pressing pool. So a permit given up reaches the callers it was
//! given up for, instead of a pool refilling `min_idle` or the pool that gave it up.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde::Serialize;

/// Told when budget it waited for may be free again.
pub(crate) trait BudgetListener: Send + Sync {
    fn budget_freed(&self);
}

type PressureHook = Box<dyn Fn(usize) + Send + Sync>;

/// What a permit is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Callers wait for a connection, or a Down pool probes its server.
    Demand,
    /// A connection to keep idle (`min_idle`).
    Standby,
}

pub(crate) struct Budget {
    max: usize,
    state: Mutex<BudgetState>,
    listeners: Mutex<Vec<Option<Weak<dyn BudgetListener>>>>,
    /// Called (outside the lock) with the pool index when a pool is refused a permit.
    pressure: Mutex<Option<PressureHook>>,
}

struct BudgetState {
    used: Vec<usize>,
    reserve: Vec<usize>,
    shared_used: usize,
    shared_cap: usize,
    /// Pools refused since the last release, in the order they asked.
    waiting: Vec<usize>,
    /// Pools refused a demand since the last release (the pressure hook ran for them).
    pressed: Vec<usize>,
    /// Pools with demand the budget refused and that have not settled since.
    /// (A list, not a flag per pool: few pools press at once, and many pools may share
    /// a budget.)
    pressing: Vec<usize>,
    peak: usize,
    refusals: u64,
}

impl BudgetState {
    /// Permits `pool` holds beyond its reserve: its part of the shared part.
    fn above_reserve(&self, pool: usize) -> usize {
        self.used[pool].saturating_sub(self.reserve[pool])
    }

    /// Whether `pool` must leave the shared part to another pool that presses: always for
    /// standby; for demand, to a pool holding less of it. (Granted, that permit would
    /// put `pool` two above the other, and the supervisor would move it back.)
    fn yields(&self, pool: usize, need: Need) -> bool {
        let mine = self.above_reserve(pool);
        self.pressing.iter().any(|&other| {
            other != pool && (need == Need::Standby || self.above_reserve(other) < mine)
        })
    }
}

/// One connection's share of the budget; gives it back when dropped.
pub(crate) struct Permit {
    budget: Arc<Budget>,
    pool: usize,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit(pool {})", self.pool)
    }
}

/// The budget as the metrics see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetSnapshot {
    /// The global budget (`max_connections`).
    pub max_connections: usize,
    /// Permits held now, over all pools (open and opening connections).
    pub in_use: usize,
    /// The most ever held at once.
    pub peak: usize,
    /// Times a pool was refused a permit.
    pub refusals: u64,
}

impl Budget {
    /// `reserves` must add up to at most `max` (the builder checks it).
    pub(crate) fn new(max: usize, reserves: Vec<usize>) -> Arc<Self> {
        let reserved: usize = reserves.iter().sum();
        debug_assert!(reserved <= max);
        let n = reserves.len();
        Arc::new(Budget {
            max,
            state: Mutex::new(BudgetState {
                used: vec![0; n],
                reserve: reserves,
                shared_used: 0,
                shared_cap: max.saturating_sub(reserved),
                waiting: Vec::new(),
                pressed: Vec::new(),
                pressing: Vec::new(),
                peak: 0,
                refusals: 0,
            }),
            listeners: Mutex::new(vec![None; n]),
            pressure: Mutex::new(None),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn set_listener(&self, pool: usize, listener: Weak<dyn BudgetListener>) {
        self.listeners.lock()[pool] = Some(listener);
    }

    pub(crate) fn set_pressure_hook(&self, hook: PressureHook) {
        *self.pressure.lock() = Some(hook);
    }

    /// A permit for `pool`, or `None` (and the pool is remembered as waiting; a refused
    /// demand also presses). Standby gets the shared part only while no other pool presses.
    pub(crate) fn try_acquire(self: &Arc<Self>, pool: usize, need: Need) -> Option<Permit> {
        let mut st = self.state.lock();
        let granted = if st.used[pool] < st.reserve[pool] {
            true
        } else if st.shared_used < st.shared_cap && !st.yields(pool, need) {
            st.shared_used += 1;
            true
        } else {
            false
        };
        if granted {
            st.used[pool] += 1;
            let total = st.used.iter().sum::<usize>();
            st.peak = st.peak.max(total);
            return Some(Permit {
                budget: self.clone(),
                pool,
            });
        }
        st.refusals += 1;
        if !st.waiting.contains(&pool) {
            st.waiting.push(pool);
        }
        let press = need == Need::Demand && !st.pressed.contains(&pool);
        if need == Need::Demand && !st.pressing.contains(&pool) {
            st.pressing.push(pool);
        }
        if press {
            st.pressed.push(pool);
        }
        drop(st);
        if press {
            if let Some(hook) = self.pressure.lock().as_ref() {
                hook(pool);
            }
        }
        None
    }

    /// `pool` has no demand the budget refused (any more): standby may have the shared
    /// part again.
    pub(crate) fn settle(&self, pool: usize) {
        let mut st = self.state.lock();
        let Some(at) = st.pressing.iter().position(|&p| p == pool) else {
            return;
        };
        st.pressing.swap_remove(at);
        // Pools it held back may go ahead.
        let waiting = std::mem::take(&mut st.waiting);
        drop(st);
        self.wake(waiting);
    }

    fn release(&self, pool: usize) {
        let mut st = self.state.lock();
        st.used[pool] -= 1;
        if st.used[pool] >= st.reserve[pool] {
            st.shared_used -= 1;
        }
        let waiting = std::mem::take(&mut st.waiting);
        st.pressed.clear();
        drop(st);
        self.wake(waiting);
    }

    /// How much of the shared part each pool holds (permits beyond its reserve), in one
    /// snapshot.
    pub(crate) fn shares(&self) -> Vec<usize> {
        let st = self.state.lock();
        (0..st.used.len()).map(|i| st.above_reserve(i)).collect()
    }

    /// Whether some pool has demand the budget refused and has not settled.
    pub(crate) fn anyone_presses(&self) -> bool {
        !self.state.lock().pressing.is_empty()
    }

    /// Tells `waiting` pools that budget may be free again.
    fn wake(&self, waiting: Vec<usize>) {
        if waiting.is_empty() {
            return;
        }
        let listeners: Vec<Arc<dyn BudgetListener>> = {
            let all = self.listeners.lock();
            waiting
                .iter()
                .filter_map(|&i| all[i].as_ref().and_then(Weak::upgrade))
                .collect()
        };
        for l in listeners {
            l.budget_freed();
        }
    }

    /// Permits held by `pool`, and whether it is above its reserve.
    pub(crate) fn used_by(&self, pool: usize) -> (usize, usize) {
        let st = self.state.lock();
        (st.used[pool], st.reserve[pool])
    }

    /// Pools refused a permit and not yet told that budget came back.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> Vec<usize> {
        self.state.lock().waiting.clone()
    }

    pub(crate) fn snapshot(&self) -> BudgetSnapshot {
        let st = self.state.lock();
        BudgetSnapshot {
            max_connections: self.max,
            in_use: st.used.iter().sum(),
            peak: st.peak,
            refusals: st.refusals,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.release(self.pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_are_always_available_and_total_never_exceeds_max() {
        let b = Budget::new(5, vec![2, 0, 1]);
        // Pool 1 (no reserve) takes the whole shared part.
        let shared: Vec<_> = (0..2)
            .map(|_| b.try_acquire(1, Need::Demand).unwrap())
            .collect();
        assert!(b.try_acquire(1, Need::Demand).is_none());
        // Reserves still hold.
        let r0: Vec<_> = (0..2)
            .map(|_| b.try_acquire(0, Need::Demand).unwrap())
            .collect();
        let r2 = b.try_acquire(2, Need::Demand).unwrap();
        assert!(b.try_acquire(0, Need::Demand).is_none());
        assert!(b.try_acquire(2, Need::Demand).is_none());
        assert_eq!(b.snapshot().in_use, 5);
        assert_eq!(b.waiting(), vec![1, 0, 2]);
        drop(shared);
        assert_eq!(b.snapshot().in_use, 3);
        // Now pool 0 can go beyond its reserve through the shared part.
        let extra = b.try_acquire(0, Need::Demand).unwrap();
        // Dropping a reserved permit of pool 0 while it is above reserve frees shared room.
        drop(r0);
        assert_eq!(b.used_by(0), (1, 2));
        drop((extra, r2));
        assert_eq!(b.snapshot().in_use, 0);
        assert_eq!(b.snapshot().peak, 5);
    }

    #[test]
    fn random_sequences_keep_the_invariant() {
        let reserves = vec![1, 2, 0, 0];
        let b = Budget::new(6, reserves.clone());
        let mut held: Vec<Permit> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            if rng.bool() && !held.is_empty() {
                let i = rng.usize(..held.len());
                held.swap_remove(i);
            } else {
                let need = if rng.bool() {
                    Need::Demand
                } else {
                    Need::Standby
                };
                if let Some(p) = b.try_acquire(rng.usize(..4), need) {
                    held.push(p);
                }
            }
            if rng.u8(..10) == 0 {
                b.settle(rng.usize(..4));
            }
            let snap = b.snapshot();
            assert!(snap.in_use <= 6);
            assert_eq!(snap.in_use, held.len());
            // Every pool under its reserve can get a permit.
            for (pool, &r) in reserves.iter().enumerate() {
                let (used, _) = b.used_by(pool);
                if used < r {
                    assert!(b.try_acquire(pool, Need::Demand).is_some());
                }
            }
        }
    }

    #[test]
    fn standby_yields_the_shared_part_to_a_pool_that_presses_and_never_presses_itself() {
        let b = Budget::new(2, vec![1, 0]);
        let hooked = Arc::new(Mutex::new(Vec::new()));
        let h = hooked.clone();
        b.set_pressure_hook(Box::new(move |pool| h.lock().push(pool)));
        let reserved = b.try_acquire(0, Need::Standby).unwrap();
        let shared = b.try_acquire(0, Need::Standby).unwrap();
        // Standby refused: remembered as waiting, but no pressure.
        assert!(b.try_acquire(0, Need::Standby).is_none());
        assert!(hooked.lock().is_empty());
        // Demand refused: pressure, once until budget comes back.
        assert!(b.try_acquire(1, Need::Demand).is_none());
        assert!(b.try_acquire(1, Need::Demand).is_none());
        assert_eq!(*hooked.lock(), vec![1]);
        // The shared permit comes back: pool 0's standby may not take it while pool 1
        // presses, pool 1's demand may.
        drop(shared);
        assert!(b.try_acquire(0, Need::Standby).is_none());
        let taken = b.try_acquire(1, Need::Demand).unwrap();
        drop(taken);
        // Settled: standby may have the shared part again.
        b.settle(1);
        let again = b.try_acquire(0, Need::Standby).unwrap();
        assert_eq!(b.used_by(0), (2, 1));
        drop((reserved, again));
        assert_eq!(b.snapshot().in_use, 0);
    }

    #[test]
    fn a_freed_permit_goes_to_the_pressing_pool_with_the_smaller_share() {
        let b = Budget::new(5, vec![1, 0]);
        let r = b.try_acquire(0, Need::Demand).unwrap();
        let mut zero: Vec<_> = (0..3)
            .map(|_| b.try_acquire(0, Need::Demand).unwrap())
            .collect();
        let one = b.try_acquire(1, Need::Demand).unwrap();
        // Both press; pool 0 holds 3 of the shared part (beyond its reserve), pool 1 one.
        assert!(b.try_acquire(0, Need::Demand).is_none());
        assert!(b.try_acquire(1, Need::Demand).is_none());
        drop(zero.pop());
        // Pool 0 holds 2 of it now: with this one it would be two above pool 1, so it is
        // pool 1's.
        assert!(b.try_acquire(0, Need::Demand).is_none());
        let two = b.try_acquire(1, Need::Demand).unwrap();
        assert_eq!((b.used_by(0), b.used_by(1)), ((3, 1), (2, 0)));
        // Pool 1 settled: pool 0 may take what comes back.
        b.settle(1);
        drop(two);
        let again = b.try_acquire(0, Need::Demand).unwrap();
        drop((r, zero, one, again));
        assert_eq!(b.snapshot().in_use, 0);
    }
}
