//! Shared checkouts: one connection lent to up to `max_shares` callers at once, idle
//! connections shared before busy ones take more, the exclusive queue kept fair, and
//! discarded, panicked-on or broken connections closed once their last caller leaves.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{one_pool, settle};
use poolvisor_actors::{
    CheckoutError, CloseReason, EventKind, PoolConfig, PoolSnapshot, SharePolicy, SLOT_TERM,
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
    let mut leaks = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let e = events.recv().await.unwrap();
            if let EventKind::LeakSuspected { location, .. } = e.kind {
                leaks.push(location);
            }
        }
    })
    .await;
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
