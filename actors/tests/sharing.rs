//! Shared checkouts: one connection lent to up to `max_shares` callers at once, idle
//! connections shared before busy ones take more, the exclusive queue kept fair, and
//! discarded, panicked-on or broken connections closed once their last caller leaves.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{one_pool, settle};
use poolvisor_actors::testing::MockManager;
use poolvisor_actors::{
    CheckoutError, CloseReason, EventKind, EventStream, PoolConfig, PoolHandle, PoolSnapshot,
    SharePolicy, SLOT_MAX_TERM, SLOT_TERM,
};

fn closes(snap: &PoolSnapshot, reason: CloseReason) -> u64 {
    snap.closes.iter().find(|(r, _)| *r == reason).unwrap().1
}

#[tokio::test(start_paused = true)]
async fn a_connection_serves_at_most_max_shares_callers_and_then_callers_wait() {
    let cfg = PoolConfig::default()
        .max_size(2)
        .max_shares(3)
        .checkout_timeout(Duration::from_millis(100));
    let (sup, pool, mock) = one_pool(cfg).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        let s = pool.checkout_shared().await.unwrap();
        s.ping().unwrap();
        held.push(s);
    }
    let mut per_conn: HashMap<u64, usize> = HashMap::new();
    for s in &held {
        *per_conn.entry(s.id()).or_default() += 1;
    }
    assert_eq!(per_conn.len(), 2, "{per_conn:?}");
    assert!(per_conn.values().all(|&n| n == 3), "{per_conn:?}");
    assert_eq!(mock.connects(), 2);
    let snap = pool.snapshot();
    assert_eq!((snap.open, snap.in_use, snap.sharing), (2, 2, 6));
    assert_eq!(snap.checkouts.ok, 6);

    // Full: the seventh waits in the queue and times out like any checkout.
    let err = pool.checkout_shared().await.unwrap_err();
    assert!(matches!(err, CheckoutError::Timeout { .. }), "{err}");

    // One caller leaves: its place is taken at once.
    let freed = held.pop().unwrap().id();
    let again = pool.checkout_shared().await.unwrap();
    assert_eq!(again.id(), freed);
    held.push(again);

    held.clear();
    let snap = pool.snapshot();
    assert_eq!(
        (snap.open, snap.idle, snap.in_use, snap.sharing),
        (2, 2, 0, 0)
    );
    assert_eq!(mock.live(), 2);
    sup.shutdown().await.unwrap();
}

/// `SharePolicy::Pack`: the busiest connection with room takes the caller, so callers
/// fill one connection to `max_shares` before an idle one goes into shared use.
#[tokio::test(start_paused = true)]
async fn packed_shared_checkouts_fill_one_connection_before_sharing_another() {
    let cfg = PoolConfig::default()
        .max_size(3)
        .min_idle(3)
        .max_shares(3)
        .share_policy(SharePolicy::Pack);
    let (sup, pool, mock) = one_pool(cfg).await;
    settle().await;
    assert_eq!(pool.snapshot().idle, 3);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.checkout_shared().await.unwrap());
    }
    let first = held[0].id();
    assert!(
        held[..3].iter().all(|s| s.id() == first),
        "three on the first"
    );
    assert_ne!(held[3].id(), first, "the fourth finds the first full");
    let snap = pool.snapshot();
    assert_eq!((snap.in_use, snap.idle, snap.sharing), (2, 1, 4));
    // A place frees on the first: it is the busiest with room, so it takes the next.
    let second = held[3].id();
    held.swap_remove(0);
    let next = pool.checkout_shared().await.unwrap();
    assert_eq!(next.id(), first);
    held.push(next);
    // The second connection, with one caller, now takes callers until it is full too.
    held.push(pool.checkout_shared().await.unwrap());
    assert_eq!(held.last().unwrap().id(), second);
    assert_eq!(mock.connects(), 3);
    drop(held);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_shared_before_a_busy_one_takes_another_caller() {
    let (sup, pool, _mock) = one_pool(PoolConfig::default().max_size(3).min_idle(3)).await;
    settle().await;
    assert_eq!(pool.snapshot().idle, 3);
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    let c = pool.checkout_shared().await.unwrap();
    let mut ids = vec![a.id(), b.id(), c.id()];
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three callers on three connections");
    // No idle connection left: the least used slot takes the fourth.
    drop(b);
    let d = pool.checkout_shared().await.unwrap();
    assert!(d.id() != a.id() && d.id() != c.id());
    drop((a, c, d));
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sharing_does_not_overtake_exclusive_waiters() {
    let cfg = PoolConfig::default().max_size(1).max_shares(4);
    let (sup, pool, _mock) = one_pool(cfg).await;
    let first = pool.checkout_shared().await.unwrap();
    let exclusive = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|c| c.id()) })
    };
    settle().await;
    assert_eq!(pool.snapshot().waiters, 1);
    // The slot has room, but someone waits: a newcomer queues behind them.
    let later = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout_shared().await.map(|c| c.id()) })
    };
    settle().await;
    assert_eq!(pool.snapshot().waiters, 2);
    let id = first.id();
    drop(first);
    assert_eq!(exclusive.await.unwrap().unwrap(), id);
    assert_eq!(later.await.unwrap().unwrap(), id);
    sup.shutdown().await.unwrap();
}

/// Spawns a checkout of either kind; `got` yields the connection's id, and the guard is
/// kept until `release` is dropped.
fn waiter(
    pool: &PoolHandle<MockManager>,
    shared: bool,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<u64>,
) {
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let (got_tx, got) = tokio::sync::oneshot::channel();
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        if shared {
            let s = pool.checkout_shared().await.unwrap();
            let _ = got_tx.send(s.id());
            let _ = hold.await;
        } else {
            let c = pool.checkout().await.unwrap();
            let _ = got_tx.send(c.id());
            let _ = hold.await;
        }
    });
    (task, release, got)
}

/// A connection coming back goes to the oldest waiter, shared or exclusive: a shared
/// checkout that came first is served before an exclusive one that came later, and a
/// shared one that came after an exclusive one does not slip onto the connection the
/// earlier shared caller put into shared use.
#[tokio::test(start_paused = true)]
async fn shared_and_exclusive_waiters_are_served_in_arrival_order() {
    let cfg = PoolConfig::default().max_size(1).max_shares(4);
    let (sup, pool, _mock) = one_pool(cfg).await;
    let first = pool.checkout().await.unwrap();
    let (s1, s1_release, mut s1_got) = waiter(&pool, true);
    settle().await;
    let (e2, e2_release, mut e2_got) = waiter(&pool, false);
    settle().await;
    let (s3, s3_release, mut s3_got) = waiter(&pool, true);
    settle().await;
    assert_eq!(pool.snapshot().waiters, 3);

    drop(first);
    settle().await;
    assert!(
        s1_got.try_recv().is_ok(),
        "the oldest waiter, shared, goes first"
    );
    assert!(e2_got.try_recv().is_err() && s3_got.try_recv().is_err());
    assert_eq!(pool.snapshot().waiters, 2, "s3 waits behind e2");

    drop(s1_release);
    s1.await.unwrap();
    settle().await;
    assert!(e2_got.try_recv().is_ok(), "then the exclusive one");
    assert!(s3_got.try_recv().is_err());

    drop(e2_release);
    e2.await.unwrap();
    settle().await;
    assert!(s3_got.try_recv().is_ok(), "then the last");
    drop(s3_release);
    s3.await.unwrap();
    let snap = pool.snapshot();
    assert_eq!((snap.in_use, snap.waiters, snap.checkouts.ok), (0, 0, 4));
    sup.shutdown().await.unwrap();
}

/// A place a caller leaves on a full shared connection passes to the oldest shared
/// waiter, unless an exclusive checkout came before it (that one waits for the whole
/// connection, which then comes back sooner).
#[tokio::test(start_paused = true)]
async fn a_freed_place_goes_to_the_oldest_shared_waiter_unless_an_exclusive_one_came_first() {
    let cfg = PoolConfig::default().max_size(1).max_shares(2);
    let (sup, pool, _mock) = one_pool(cfg).await;
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    let id = a.id();
    let (s, s_release, mut s_got) = waiter(&pool, true);
    settle().await;
    drop(a);
    settle().await;
    assert_eq!(s_got.try_recv().ok(), Some(id), "the freed place, at once");

    let (e, e_release, mut e_got) = waiter(&pool, false);
    settle().await;
    let (t, t_release, mut t_got) = waiter(&pool, true);
    settle().await;
    drop(b);
    settle().await;
    assert!(t_got.try_recv().is_err(), "the exclusive waiter came first");
    drop(s_release);
    s.await.unwrap();
    settle().await;
    assert_eq!(e_got.try_recv().ok(), Some(id));
    assert!(t_got.try_recv().is_err());
    drop(e_release);
    e.await.unwrap();
    settle().await;
    assert_eq!(t_got.try_recv().ok(), Some(id));
    drop(t_release);
    t.await.unwrap();
    assert_eq!(pool.snapshot().checkouts.timeout, 0);
    sup.shutdown().await.unwrap();
}

/// Shared callers that queued behind an exclusive one take the room left on a connection
/// in shared use as soon as that one is served, as newcomers would with nobody waiting.
#[tokio::test(start_paused = true)]
async fn shared_waiters_take_room_on_a_shared_connection_once_the_exclusive_one_ahead_is_served() {
    let cfg = PoolConfig::default().max_size(2).max_shares(4);
    let (sup, pool, _mock) = one_pool(cfg).await;
    let held = pool.checkout().await.unwrap();
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    let id = a.id();
    assert_eq!(b.id(), id, "no idle connection left: b joins a");
    let (e, e_release, mut e_got) = waiter(&pool, false);
    settle().await;
    let (s1, s1_release, mut s1_got) = waiter(&pool, true);
    settle().await;
    let (s2, s2_release, mut s2_got) = waiter(&pool, true);
    settle().await;
    assert_eq!(pool.snapshot().waiters, 3, "the shared ones queue behind e");

    drop(held);
    settle().await;
    assert!(e_got.try_recv().is_ok(), "the exclusive waiter came first");
    assert_eq!(s1_got.try_recv().ok(), Some(id), "room beside a and b");
    assert_eq!(s2_got.try_recv().ok(), Some(id), "and more");
    assert_eq!(pool.snapshot().waiters, 0);

    for (task, release) in [(e, e_release), (s1, s1_release), (s2, s2_release)] {
        drop(release);
        task.await.unwrap();
    }
    drop((a, b));
    assert_eq!(pool.snapshot().checkouts.timeout, 0);
    sup.shutdown().await.unwrap();
}

/// The same when the exclusive waiter ahead gives up instead (its future dropped) or
/// times out: the shared waiters behind it take the room at once; the one that finds no
/// room gets the next place a caller leaves.
#[tokio::test(start_paused = true)]
async fn shared_waiters_take_room_at_once_when_the_exclusive_one_ahead_leaves_or_times_out() {
    for times_out in [false, true] {
        // Short enough that the connection in shared use is still within its term
        // (`SLOT_TERM`, at least half of it) when the shared waiters are served.
        let timeout = Duration::from_millis(100);
        let cfg = PoolConfig::default()
            .max_size(2)
            .max_shares(3)
            .checkout_timeout(timeout);
        let (sup, pool, _mock) = one_pool(cfg).await;
        let held = pool.checkout().await.unwrap();
        let a = pool.checkout_shared().await.unwrap();
        let b = pool.checkout_shared().await.unwrap();
        let id = a.id();
        let (e, _e_release, _e_got) = waiter(&pool, false);
        settle().await;
        tokio::time::advance(timeout / 2).await;
        let (s1, s1_release, mut s1_got) = waiter(&pool, true);
        settle().await;
        let (s2, s2_release, mut s2_got) = waiter(&pool, true);
        settle().await;
        assert_eq!(pool.snapshot().waiters, 3, "the shared ones queue behind e");

        if times_out {
            tokio::time::advance(timeout / 2).await;
            assert!(e.await.unwrap_err().is_panic(), "e's checkout timed out");
        } else {
            e.abort();
            assert!(e.await.unwrap_err().is_cancelled());
        }
        settle().await;
        assert_eq!(s1_got.try_recv().ok(), Some(id), "the room beside a and b");
        assert!(s2_got.try_recv().is_err(), "no room left");
        drop(a);
        settle().await;
        assert_eq!(s2_got.try_recv().ok(), Some(id), "a's place");
        assert_eq!(pool.snapshot().waiters, 0);

        for (task, release) in [(s1, s1_release), (s2, s2_release)] {
            drop(release);
            task.await.unwrap();
        }
        drop((b, held));
        let timeouts = pool.snapshot().checkouts.timeout;
        assert_eq!(timeouts, u64::from(times_out));
        sup.shutdown().await.unwrap();
    }
}

/// Exclusive callers that keep the queue full do not starve a shared checkout: it
/// takes its turn in arrival order, long before its timeout.
#[tokio::test(start_paused = true)]
async fn shared_checkouts_are_not_starved_by_sustained_exclusive_load() {
    let cfg = PoolConfig::default()
        .max_size(2)
        .checkout_timeout(Duration::from_secs(1));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = pool.checkout().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    drop(c);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pool.snapshot().waiters >= 4, "the queue never empties");
    let started = tokio::time::Instant::now();
    let shared = pool.checkout_shared().await.expect("served in turn");
    let waited = started.elapsed();
    // Four exclusive callers at most were ahead of it, each holding for 5 ms on two
    // connections.
    assert!(waited <= Duration::from_millis(30), "waited {waited:?}");
    drop(shared);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(pool.snapshot().checkouts.timeout, 0);
    sup.shutdown().await.unwrap();
}

/// Two workers; callers of both kinds give up at random points, many of them while a
/// connection or a place is on its way to them. Every connection comes back, both queues
/// empty, and the pool counted exactly the checkouts callers got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_callers_leaving_while_served_lose_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let cfg = PoolConfig::default()
        .max_size(2)
        .min_idle(2)
        .max_shares(2)
        .max_waiters(1_000);
    let (sup, pool, mock) = one_pool(cfg).await;
    let got = Arc::new(AtomicU64::new(0));
    let left = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32u64)
        .map(|seed| {
            let (pool, got, left) = (pool.clone(), got.clone(), left.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                for _ in 0..2_000 {
                    let patience = rng.u32(0..4);
                    let shared = rng.bool();
                    let served = async {
                        if shared {
                            let s = pool.checkout_shared().await.expect("shared checkout");
                            tokio::task::yield_now().await;
                            drop(s);
                        } else {
                            let c = pool.checkout().await.expect("checkout");
                            tokio::task::yield_now().await;
                            drop(c);
                        }
                    };
                    tokio::select! {
                        biased;
                        () = served => {
                            got.fetch_add(1, Ordering::Relaxed);
                        }
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
    tokio::time::sleep(Duration::from_millis(50)).await;
    let snap = pool.snapshot();
    let (got, left) = (got.load(Ordering::Relaxed), left.load(Ordering::Relaxed));
    assert!(left > 1_000 && got > 1_000, "got {got}, gave up {left}");
    assert_eq!(
        (snap.in_use, snap.sharing, snap.waiters),
        (0, 0, 0),
        "{snap:?}"
    );
    assert_eq!((snap.open, snap.idle), (2, 2), "{snap:?}");
    assert_eq!(mock.live(), 2);
    // A caller that gave up while holding its connection did check out.
    assert!(snap.checkouts.ok >= got, "{snap:?}");
    assert_eq!(snap.checkouts.ok, snap.hold.count, "{snap:?}");
    assert_eq!(snap.checkouts.timeout, 0);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_discarded_connection_takes_no_new_callers_and_closes_after_the_last() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(2)).await;
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    let bad = a.id();
    assert_eq!(b.id(), bad);
    a.discard();
    let c = pool.checkout_shared().await.unwrap();
    assert_ne!(c.id(), bad, "no new caller on a discarded connection");
    assert_eq!(mock.live(), 2);
    drop(b);
    settle().await;
    assert_eq!(mock.live(), 1, "closed once its last caller left");
    assert_eq!(closes(&pool.snapshot(), CloseReason::Discarded), 1);
    drop(c);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_sharing_closes_the_connection() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    let other = pool.checkout_shared().await.unwrap();
    let task = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let _s = pool.checkout_shared().await.unwrap();
            panic!("caller bug");
        })
    };
    assert!(task.await.is_err());
    drop(other);
    settle().await;
    assert_eq!(mock.live(), 0);
    assert_eq!(closes(&pool.snapshot(), CloseReason::Panicked), 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_broken_shared_connection_is_replaced_within_a_term() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(2)).await;
    let held = pool.checkout_shared().await.unwrap();
    let old = held.id();
    held.mark_broken(); // its socket closed; nobody discards it
                        // Within its term it still takes callers (nothing can look at it while shared)...
    let same = pool.checkout_shared().await.unwrap();
    assert_eq!(same.id(), old);
    drop(same);
    // ...after it, newcomers go elsewhere, and it closes when its last caller leaves.
    tokio::time::advance(SLOT_TERM).await;
    let fresh = pool.checkout_shared().await.unwrap();
    assert_ne!(fresh.id(), old);
    drop(held);
    settle().await;
    assert_eq!(closes(&pool.snapshot(), CloseReason::Broken), 1);
    assert_eq!(mock.live(), 1);
    drop(fresh);
    sup.shutdown().await.unwrap();
}

/// Under sustained shared overload (every connection in shared use, shared callers
/// always waiting) slots take callers past their term, but not without end: a connection
/// that broke while shared drains and is replaced within `SLOT_MAX_TERM` and a hold.
#[tokio::test(start_paused = true)]
async fn a_broken_shared_connection_is_replaced_under_sustained_overload() {
    let cfg = PoolConfig::default().max_size(1).max_shares(2);
    let (sup, pool, mock) = one_pool(cfg).await;
    let first = pool.checkout_shared().await.unwrap();
    let old = first.id();
    let start = tokio::time::Instant::now();
    let hold = Duration::from_millis(10);
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let end = tokio::time::Instant::now() + 3 * SLOT_MAX_TERM;
                while tokio::time::Instant::now() < end {
                    let s = pool.checkout_shared().await.unwrap();
                    ids.push((tokio::time::Instant::now(), s.id()));
                    tokio::time::sleep(hold).await;
                }
                ids
            })
        })
        .collect();
    settle().await;
    first.mark_broken(); // its socket closed; nobody discards it
    drop(first); // the others keep it in use
    let mut last_on_old = start;
    for caller in callers {
        for (at, id) in caller.await.unwrap() {
            if id == old {
                last_on_old = last_on_old.max(at);
            }
        }
    }
    assert!(
        last_on_old - start <= SLOT_MAX_TERM + hold,
        "the broken connection took callers for {:?}",
        last_on_old - start
    );
    assert_eq!(closes(&pool.snapshot(), CloseReason::Broken), 1);
    assert_eq!(mock.live(), 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shared_callers_block_a_drain_until_they_leave() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    let drain = {
        let sup = sup.clone();
        tokio::spawn(async move { sup.drain("m", Duration::from_secs(5)).await })
    };
    settle().await;
    assert!(matches!(
        pool.checkout_shared().await.unwrap_err(),
        CheckoutError::Draining { .. }
    ));
    drop(a);
    settle().await;
    assert!(!drain.is_finished());
    drop(b);
    let report = drain.await.unwrap().unwrap();
    assert_eq!(report.still_lent, 0);
    settle().await;
    assert_eq!(mock.live(), 0);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_shared_callers_on_a_cold_pool_open_every_connection_and_all_finish() {
    let cfg = PoolConfig::default().max_size(4).max_shares(4);
    let (sup, pool, mock) = one_pool(cfg).await;
    let peak_sharing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (pool, peak) = (pool.clone(), peak_sharing.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let s = pool.checkout_shared().await.unwrap();
                    s.ping().unwrap();
                    let sharing = pool.snapshot().sharing;
                    peak.fetch_max(sharing, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(mock.connects(), 4, "every connection opened, none more");
    assert!(mock.peak_live() <= 4);
    assert_eq!(
        peak_sharing.load(std::sync::atomic::Ordering::Relaxed),
        16,
        "4 connections × 4 callers in use at the peak"
    );
    let snap = pool.snapshot();
    assert_eq!((snap.in_use, snap.sharing, snap.waiters), (0, 0, 0));
    assert_eq!((snap.checkouts.ok, snap.checkouts.timeout), (64 * 20, 0));
    sup.shutdown().await.unwrap();
}

/// The call sites of the leaks reported within `within` (of tokio time).
async fn leaks_within(events: &mut EventStream, within: Duration) -> Vec<String> {
    let mut leaks = Vec::new();
    let _ = tokio::time::timeout(within, async {
        loop {
            if let EventKind::LeakSuspected { location, .. } = events.recv().await.unwrap().kind {
                leaks.push(location);
            }
        }
    })
    .await;
    leaks
}

/// Leak detection sees each caller on a shared connection: the one that holds its place
/// past `leak_threshold` is reported with its own call site, the one that left in time
/// is not (the first caller's lease comes from the connection's own).
#[tokio::test(start_paused = true)]
async fn a_caller_holding_a_shared_connection_too_long_is_reported_with_its_call_site() {
    let cfg = PoolConfig::default()
        .max_size(1)
        .max_shares(4)
        .leak_threshold(Some(Duration::from_secs(1)));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let mut events = sup.subscribe();
    let first_line = line!() + 1;
    let first = pool.checkout_shared().await.unwrap();
    let line = line!() + 1;
    let second = pool.checkout_shared().await.unwrap();
    assert_eq!(first.id(), second.id());
    drop(first);
    let leaks = leaks_within(&mut events, Duration::from_secs(3)).await;
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(
        leaks[0].starts_with(&format!("{}:{line}:", file!())),
        "{leaks:?} (first caller at line {first_line})"
    );
    drop(second);
    sup.shutdown().await.unwrap();
}

/// The hold-time histogram records each shared caller's own hold, once per checkout,
/// not the connection's stretch in shared use.
#[tokio::test(start_paused = true)]
async fn hold_times_are_recorded_per_shared_caller() {
    let cfg = PoolConfig::default().max_size(1).max_shares(4);
    let (sup, pool, _mock) = one_pool(cfg).await;
    let long = pool.checkout_shared().await.unwrap();
    for _ in 0..3 {
        let short = pool.checkout_shared().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(short);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(long);
    let snap = pool.snapshot();
    assert_eq!(snap.checkouts.ok, 4);
    assert_eq!(snap.hold.count, 4, "{:?}", snap.hold);
    // Three holds of 10 ms and one of 130 ms (12 % histogram resolution).
    assert!(
        snap.hold.max >= Duration::from_millis(120),
        "{:?}",
        snap.hold
    );
    assert!(snap.hold.p50 < Duration::from_millis(20), "{:?}", snap.hold);
    sup.shutdown().await.unwrap();
}

/// Two workers; eight shared checkouts at once on a pool whose one connection is idle,
/// over and over. The one that takes the idle connection lists it for sharing after the
/// others may have queued: they must be offered its room then, not left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_queue_while_a_connection_goes_into_shared_use_get_a_place() {
    use std::sync::Arc;
    let cfg = PoolConfig::default()
        .max_size(1)
        .min_idle(1)
        .max_shares(8)
        .checkout_timeout(Duration::from_secs(2));
    let (sup, pool, _mock) = one_pool(cfg).await;
    for round in 0..500 {
        let all_in = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, all_in) = (pool.clone(), all_in.clone());
                tokio::spawn(async move {
                    let conn = pool.checkout_shared().await?;
                    // Bounded, so that a caller left out fails the test instead of
                    // hanging it.
                    let _ = tokio::time::timeout(Duration::from_secs(3), all_in.wait()).await;
                    Ok::<_, CheckoutError>(conn.id())
                })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
    let snap = pool.snapshot();
    assert_eq!(
        (snap.sharing, snap.waiters, snap.checkouts.timeout),
        (0, 0, 0)
    );
    sup.shutdown().await.unwrap();
}

/// A place passed from a caller that leaves to a waiting one carries the new caller's
/// lease: leak detection reports the waiter's call site, not the first caller's.
#[tokio::test(start_paused = true)]
async fn a_passed_place_is_leased_to_the_caller_that_got_it() {
    let cfg = PoolConfig::default()
        .max_size(1)
        .max_shares(1)
        .leak_threshold(Some(Duration::from_secs(1)));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let mut events = sup.subscribe();
    let first = pool.checkout_shared().await.unwrap();
    let line = line!() + 3;
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout_shared().await.unwrap() })
    };
    settle().await;
    assert_eq!(pool.snapshot().waiters, 1);
    let id = first.id();
    drop(first);
    let second = waiting.await.unwrap();
    assert_eq!(second.id(), id, "the place passed on");
    let leaks = leaks_within(&mut events, Duration::from_secs(3)).await;
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(
        leaks[0].starts_with(&format!("{}:{line}:", file!())),
        "{leaks:?} (the waiter's checkout is at line {line})"
    );
    drop(second);
    sup.shutdown().await.unwrap();
}
