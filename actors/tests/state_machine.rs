//! A state-machine test: random sequences of checkouts (exclusive and shared), returns,
//! discards, broken returns, dropped pending checkouts, panics while holding, time passing
//! (timeouts), resizes, server kills and pool restarts, on two pools under one budget
//! (one keeping an idle connection ready, `min_idle`),
//! against a reference model of what callers hold. After every step: what is lent is
//! exactly what callers hold, no connection is held exclusively twice or both exclusively
//! and shared, no connection has more than `max_shares` callers, idle connections never
//! push a pool above `max_size`, and the connections that exist never exceed the budget.
//! Once quiet, every connection is accounted for. Failing sequences shrink to a minimal
//! case.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use poolvisor_actors::testing::{crash_pool, MockManager};
use poolvisor_actors::{
    CheckoutError, PoolConfig, PoolHandle, Pooled, SharePolicy, Shared, Supervisor,
};
use proptest::prelude::*;
use tokio::task::JoinHandle;

const BUDGET: usize = 5;
const POOLS: usize = 2;
const MAX_SHARES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Checkout(usize),
    CheckoutShared(usize),
    Return(usize),
    Discard(usize),
    ReturnBroken(usize),
    DropPending(usize),
    PanicHolding(usize),
    Advance(u64),
    Resize(usize, usize),
    KillServer(usize),
    RestartPool(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..POOLS).prop_map(Op::Checkout),
        3 => (0..POOLS).prop_map(Op::CheckoutShared),
        3 => any::<usize>().prop_map(Op::Return),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => any::<usize>().prop_map(Op::ReturnBroken),
        1 => any::<usize>().prop_map(Op::DropPending),
        1 => any::<usize>().prop_map(Op::PanicHolding),
        2 => (1u64..400).prop_map(Op::Advance),
        1 => (0..POOLS, 1usize..5).prop_map(|(p, n)| Op::Resize(p, n)),
        1 => (0..POOLS).prop_map(Op::KillServer),
        1 => (0..POOLS).prop_map(Op::RestartPool),
    ]
}

/// What a caller holds: a connection of its own, or a place on a shared one.
enum Lease {
    Own(Pooled<MockManager>),
    Share(Shared<MockManager>),
}

impl Lease {
    fn discard(self) {
        match self {
            Lease::Own(c) => c.discard(),
            Lease::Share(s) => s.discard(),
        }
    }

    fn mark_broken(&self) {
        match self {
            Lease::Own(c) => c.mark_broken(),
            Lease::Share(s) => s.mark_broken(),
        }
    }
}

struct Held {
    pool: usize,
    conn: Lease,
}

struct Pending {
    pool: usize,
    task: JoinHandle<Result<Lease, CheckoutError>>,
}

struct World {
    sup: Supervisor,
    pools: Vec<PoolHandle<MockManager>>,
    mocks: Vec<MockManager>,
    held: Vec<Held>,
    pending: Vec<Pending>,
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

impl World {
    async fn new() -> World {
        let mocks: Vec<MockManager> = (0..POOLS).map(|_| MockManager::new()).collect();
        let mut b = Supervisor::builder()
            .max_connections(BUDGET)
            .restart_limit(1000, Duration::from_secs(60));
        for (i, m) in mocks.iter().enumerate() {
            let cfg = PoolConfig::default()
                .max_size(3)
                .checkout_timeout(Duration::from_millis(300))
                .max_shares(MAX_SHARES)
                // Both ways of placing shared checkouts, one per pool.
                .share_policy(if i % 2 == 0 {
                    SharePolicy::Spread
                } else {
                    SharePolicy::Pack
                })
                .reserve(1)
                // One pool keeps connections ready, so standby refills meet callers'
                // demand for the budget.
                .min_idle(i);
            b = b.pool(format!("p{i}"), m.clone(), cfg);
        }
        let sup = b.start().await.unwrap();
        let pools = (0..POOLS)
            .map(|i| sup.pool(&format!("p{i}")).unwrap())
            .collect();
        World {
            sup,
            pools,
            mocks,
            held: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Moves finished checkouts to `held` (or drops their errors).
    async fn collect(&mut self) {
        settle().await;
        let mut still = Vec::new();
        for p in self.pending.drain(..) {
            if p.task.is_finished() {
                match p.task.await {
                    Ok(Ok(conn)) => self.held.push(Held { pool: p.pool, conn }),
                    Ok(Err(_)) => {}
                    Err(e) => panic!("checkout task failed: {e}"),
                }
            } else {
                still.push(p);
            }
        }
        self.pending = still;
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Checkout(p) => {
                let pool = self.pools[p].clone();
                let task = tokio::spawn(async move { pool.checkout().await.map(Lease::Own) });
                self.pending.push(Pending { pool: p, task });
            }
            Op::CheckoutShared(p) => {
                let pool = self.pools[p].clone();
                let task =
                    tokio::spawn(async move { pool.checkout_shared().await.map(Lease::Share) });
                self.pending.push(Pending { pool: p, task });
            }
            Op::Return(i) if !self.held.is_empty() => {
                let h = self.held.swap_remove(i % self.held.len());
                drop(h.conn);
            }
            Op::Discard(i) if !self.held.is_empty() => {
                let h = self.held.swap_remove(i % self.held.len());
                h.conn.discard();
            }
            Op::ReturnBroken(i) if !self.held.is_empty() => {
                let h = self.held.swap_remove(i % self.held.len());
                h.conn.mark_broken();
                drop(h.conn);
            }
            Op::DropPending(i) if !self.pending.is_empty() => {
                let p = self.pending.swap_remove(i % self.pending.len());
                p.task.abort();
                let _ = p.task.await;
            }
            Op::PanicHolding(i) if !self.held.is_empty() => {
                let h = self.held.swap_remove(i % self.held.len());
                let crashed = tokio::spawn(async move {
                    let _conn = h.conn;
                    panic!("caller bug while holding a connection");
                })
                .await;
                assert!(crashed.unwrap_err().is_panic());
            }
            Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Resize(p, n) => self.sup.resize(&format!("p{p}"), n).unwrap(),
            Op::KillServer(p) => self.mocks[p].kill_all(),
            Op::RestartPool(p) => {
                // A crash between restarts finds no live actor: that is fine.
                let _ = crash_pool(&self.sup, &format!("p{p}"));
            }
            _ => {}
        }
        self.collect().await;
    }

    fn check(&self, step: usize, op: &Op) {
        let ctx = || format!("after step {step} ({op:?})");
        let mut own = HashSet::new();
        let mut shared: HashMap<(usize, u64), usize> = HashMap::new();
        for h in &self.held {
            match &h.conn {
                Lease::Own(c) => assert!(
                    own.insert((h.pool, c.id())),
                    "connection {} of p{} held twice, {}",
                    c.id(),
                    h.pool,
                    ctx()
                ),
                Lease::Share(s) => *shared.entry((h.pool, s.id())).or_default() += 1,
            }
        }
        for (&(pool, id), &callers) in &shared {
            assert!(
                !own.contains(&(pool, id)),
                "connection {id} of p{pool} held exclusively and shared, {}",
                ctx()
            );
            assert!(
                callers <= MAX_SHARES,
                "connection {id} of p{pool} shared by {callers}, {}",
                ctx()
            );
        }
        let mut live = 0;
        for (i, pool) in self.pools.iter().enumerate() {
            let s = pool.snapshot();
            let held = own.iter().filter(|(p, _)| *p == i).count()
                + shared.keys().filter(|(p, _)| *p == i).count();
            assert_eq!(
                s.in_use,
                held,
                "p{i}: lent {} but callers hold {held}, {}",
                s.in_use,
                ctx()
            );
            let sharing: usize = shared
                .iter()
                .filter(|((p, _), _)| *p == i)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(s.sharing, sharing, "p{i}: {}", ctx());
            assert!(
                s.open <= s.max_size.max(s.in_use),
                "p{i}: open {} above max_size {} with {} lent, {}",
                s.open,
                s.max_size,
                s.in_use,
                ctx()
            );
            live += self.mocks[i].live();
        }
        assert!(
            live <= BUDGET,
            "{live} connections exist, budget {BUDGET}, {}",
            ctx()
        );
        assert!(self.sup.budget().in_use <= BUDGET, "{}", ctx());
    }

    /// Everything back, time passed: every connection that exists is an idle one.
    async fn quiesce(mut self) {
        for p in self.pending.drain(..) {
            p.task.abort();
            let _ = p.task.await;
        }
        self.held.clear();
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let mut open = 0;
        for (i, pool) in self.pools.iter().enumerate() {
            let s = pool.snapshot();
            assert_eq!(
                (s.in_use, s.waiters, s.connecting, s.validating),
                (0, 0, 0, 0),
                "p{i} not quiet: {s:?}"
            );
            assert_eq!(s.open, s.idle, "p{i}: {s:?}");
            assert_eq!(
                s.open,
                self.mocks[i].live(),
                "p{i}: the pool counts {} but {} exist",
                s.open,
                self.mocks[i].live()
            );
            open += s.open;
        }
        assert_eq!(
            self.sup.budget().in_use,
            open,
            "permits held without a connection"
        );
        self.sup.shutdown().await.unwrap();
        for m in &self.mocks {
            assert_eq!(m.live(), 0, "a connection survived shutdown");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut world = World::new().await;
            for (step, op) in ops.iter().enumerate() {
                world.apply(op).await;
                world.check(step, op);
            }
            world.quiesce().await;
        });
    }
}
