//! Checkout and return: reuse, FIFO order, timeouts, exhaustion, cancel safety, panics,
//! broken connections and the validation policies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{next_event, one_pool, settle};
use parking_lot::Mutex;
use poolvisor_actors::testing::MockManager;
use poolvisor_actors::{CheckoutError, CloseReason, PoolConfig, PoolSnapshot, Validation};

fn closes(snap: &PoolSnapshot, reason: CloseReason) -> u64 {
    snap.closes.iter().find(|(r, _)| *r == reason).unwrap().1
}

#[tokio::test(start_paused = true)]
async fn sequential_checkouts_reuse_one_connection() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    for _ in 0..100 {
        let conn = pool.checkout().await.unwrap();
        conn.ping().unwrap();
    }
    assert_eq!(mock.connects(), 1);
    let snap = pool.snapshot();
    assert_eq!((snap.open, snap.idle, snap.in_use), (1, 1, 0));
    assert_eq!(snap.checkouts.ok, 100);
    assert_eq!(snap.hold.count, 100);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let (sup, pool, _mock) = one_pool(PoolConfig::default().max_size(1)).await;
    let held = pool.checkout().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let conn = pool.checkout().await.unwrap();
            order.lock().push(i);
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(conn);
        }));
        settle().await; // task i is queued before task i+1 starts
    }
    assert_eq!(pool.snapshot().waiters, 8);
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock(), (0..8).collect::<Vec<_>>());
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_does_not_overtake_waiters() {
    let (sup, pool, _mock) = one_pool(PoolConfig::default().max_size(1)).await;
    let held = pool.checkout().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|c| c.id()) })
    };
    settle().await;
    // The holder returns and at once asks again: the waiter must get it first.
    let id = held.id();
    drop(held);
    let again = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|c| c.id()) })
    };
    assert_eq!(waiter.await.unwrap().unwrap(), id);
    assert_eq!(again.await.unwrap().unwrap(), id);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn checkout_times_out_with_the_configured_bound() {
    let cfg = PoolConfig::default()
        .max_size(1)
        .checkout_timeout(Duration::from_millis(300));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let _held = pool.checkout().await.unwrap();
    let started = tokio::time::Instant::now();
    let err = pool.checkout().await.unwrap_err();
    let CheckoutError::Timeout { waited, .. } = err else {
        panic!("expected timeout, got {err:?}")
    };
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(310));
    assert!(started.elapsed() < Duration::from_millis(310));
    let snap = pool.snapshot();
    assert_eq!((snap.checkouts.timeout, snap.waiters), (1, 0));
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn full_queue_fails_at_once_with_exhausted() {
    let (sup, pool, _mock) = one_pool(PoolConfig::default().max_size(1).max_waiters(2)).await;
    let mut events = sup.subscribe();
    let _held = pool.checkout().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout().await.map(drop) })
        })
        .collect();
    settle().await;
    let started = tokio::time::Instant::now();
    let err = pool.checkout().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(
        matches!(err, CheckoutError::Exhausted { waiters: 2, .. }),
        "{err:?}"
    );
    let e = next_event(&mut events, "m", "exhausted", Duration::from_secs(1)).await;
    assert_eq!(
        e.kind,
        poolvisor_actors::EventKind::Exhausted { waiters: 2 }
    );
    for w in waiters {
        w.abort();
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_never_loses_a_delivered_connection() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(1)).await;
    let held = pool.checkout().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(drop) })
    };
    settle().await;
    // The connection is delivered into the waiter's slot; the waiter is dropped before
    // it ever runs again.
    drop(held);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    let snap = pool.snapshot();
    assert_eq!(
        (snap.open, snap.idle, snap.in_use, snap.waiters),
        (1, 1, 0, 0)
    );
    let again = pool.checkout().await.unwrap();
    assert_eq!(again.id(), 1);
    assert_eq!(mock.connects(), 1);
    drop(again);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_checkouts_at_random_points_accounts_for_every_connection() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(3)).await;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let pool = pool.clone();
        let hold = Duration::from_micros(rng.u64(0..2000));
        let give_up = Duration::from_micros(rng.u64(0..3000));
        tasks.push(tokio::spawn(async move {
            // Either finishes or is cancelled part-way, holding or waiting.
            let _ = tokio::time::timeout(give_up, async {
                let conn = pool.checkout().await.unwrap();
                tokio::time::sleep(hold).await;
                drop(conn);
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle().await;
    let snap = pool.snapshot();
    assert_eq!((snap.in_use, snap.waiters), (0, 0), "{snap:?}");
    assert_eq!(snap.open, snap.idle);
    assert_eq!(snap.open, mock.live());
    assert!(mock.peak_live() <= 3);
    sup.shutdown().await.unwrap();
}

/// Two workers; callers that give up at random points, many of them while a connection
/// is on its way to them (a returning task picks the waiter under the pool lock and
/// sends after releasing it, so a waiter can leave in between). Every connection comes
/// back, the queue empties, and the pool counted exactly the checkouts callers got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_leaving_while_served_on_another_thread_lose_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let cfg = PoolConfig::default()
        .max_size(2)
        .min_idle(2)
        .max_waiters(1_000);
    let (sup, pool, mock) = one_pool(cfg).await;
    let got = Arc::new(AtomicU64::new(0));
    let left = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32u64)
        .map(|seed| {
            let (pool, got, left) = (pool.clone(), got.clone(), left.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                for _ in 0..3_000 {
                    let patience = rng.u32(0..4);
                    tokio::select! {
                        biased;
                        conn = pool.checkout() => {
                            let conn = conn.expect("checkout");
                            got.fetch_add(1, Ordering::Relaxed);
                            // Held across a yield, so that others queue.
                            tokio::task::yield_now().await;
                            drop(conn);
                        }
                        // Gives up after a few polls of the checkout.
                        _ = async {
                            for _ in 0..patience {
                                tokio::task::yield_now().await;
                            }
                        } => {
                            left.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let snap = pool.snapshot();
    let (got, left) = (got.load(Ordering::Relaxed), left.load(Ordering::Relaxed));
    assert!(left > 1_000 && got > 1_000, "got {got}, gave up {left}");
    assert_eq!((snap.in_use, snap.waiters), (0, 0), "{snap:?}");
    assert_eq!((snap.open, snap.idle), (2, 2), "{snap:?}");
    assert_eq!(mock.live(), 2);
    assert_eq!(snap.checkouts.ok, got, "{snap:?}");
    assert_eq!(snap.wait.count, got);
    assert_eq!(snap.hold.count, got);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_holding_closes_the_connection() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(1)).await;
    let p = pool.clone();
    let crashed = tokio::spawn(async move {
        let _conn = p.checkout().await.unwrap();
        panic!("caller bug");
    })
    .await;
    assert!(crashed.unwrap_err().is_panic());
    let snap = pool.snapshot();
    assert_eq!(closes(&snap, CloseReason::Panicked), 1);
    assert_eq!((snap.open, snap.in_use), (0, 0));
    assert_eq!(mock.live(), 0);
    // The pool opens a new one for the next caller.
    pool.checkout().await.unwrap().ping().unwrap();
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn broken_and_discarded_connections_are_closed_not_reused() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    let conn = pool.checkout().await.unwrap();
    conn.mark_broken();
    drop(conn);
    let conn = pool.checkout().await.unwrap();
    assert_eq!(conn.id(), 2, "the broken one was not reused");
    conn.discard();
    let conn = pool.checkout().await.unwrap();
    assert_eq!(conn.id(), 3);
    let snap = pool.snapshot();
    assert_eq!(closes(&snap, CloseReason::Broken), 1);
    assert_eq!(closes(&snap, CloseReason::Discarded), 1);
    assert_eq!(mock.live(), 1);
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_known_broken_is_replaced_before_anyone_gets_it() {
    let cfg = PoolConfig::default().validation(Validation::Never);
    let (sup, pool, mock) = one_pool(cfg).await;
    let first = pool.checkout().await.unwrap().id();
    mock.break_all(); // its socket closed while it sat idle; the driver noticed
    let conn = pool.checkout().await.unwrap();
    assert_ne!(conn.id(), first);
    assert_eq!(closes(&pool.snapshot(), CloseReason::Broken), 1);
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_checkout_validates_one_idle_connection_not_all() {
    let cfg = PoolConfig::default()
        .max_size(5)
        .validation(Validation::Always);
    let (sup, pool, mock) = one_pool(cfg).await;
    drop(checkout_n(&pool, 5).await);
    let base = mock.validations();
    for round in 1..=3 {
        drop(pool.checkout().await.unwrap());
        assert_eq!(
            mock.validations() - base,
            round,
            "one validation per checkout"
        );
    }
    // Five callers at once: at most one validation each.
    let before = mock.validations();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout().await.map(|c| c.id()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(mock.validations() - before <= 5);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn validation_policies() {
    for (policy, expect_after_fresh, expect_after_idle) in [
        (Validation::Always, 1, 2),
        (Validation::IfIdleFor(Duration::from_millis(500)), 0, 1),
        (Validation::Never, 0, 0),
    ] {
        let cfg = PoolConfig::default()
            .validation(policy)
            .health_check_interval(None);
        let (sup, pool, mock) = one_pool(cfg).await;
        drop(pool.checkout().await.unwrap());
        let base = mock.validations();
        drop(pool.checkout().await.unwrap()); // idle for 0 ms
        assert_eq!(mock.validations() - base, expect_after_fresh, "{policy:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(pool.checkout().await.unwrap()); // idle for 1 s
        assert_eq!(mock.validations() - base, expect_after_idle, "{policy:?}");
        sup.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_killed_while_idle_is_never_handed_out() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(4)).await;
    let conns: Vec<_> = checkout_n(&pool, 4).await;
    drop(conns);
    mock.kill_all(); // the server restarted while they sat idle
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..4 {
        let conn = pool.checkout().await.unwrap();
        conn.ping().expect("a dead connection was handed out");
    }
    assert_eq!(closes(&pool.snapshot(), CloseReason::Validation), 4);
    sup.shutdown().await.unwrap();
}

async fn checkout_n(
    pool: &poolvisor_actors::PoolHandle<MockManager>,
    n: usize,
) -> Vec<poolvisor_actors::Pooled<MockManager>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.checkout().await.unwrap());
    }
    out
}
