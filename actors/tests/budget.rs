//! The global connection budget: the invariant under concurrent load, reserves, and idle
//! reclaim.

mod common;

use std::time::Duration;

use common::next_event;
use poolvisor_actors::testing::MockManager;
use poolvisor_actors::{CloseReason, PoolConfig, PoolSnapshot, PoolStatus, Supervisor};

/// 3 pools, 60 tasks on a multi-thread runtime, a budget smaller than the pools' sum:
/// the most connections ever open at once, counted exactly by the manager the three pools
/// share (one atomic count: adding up per-pool counts read one after another can count a
/// connection that moved between pools twice), never exceeds the budget, and every task
/// finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_holds_under_concurrent_load_over_three_pools() {
    const BUDGET: usize = 7;
    let mock = MockManager::new();
    let mut builder = Supervisor::builder().max_connections(BUDGET);
    for i in 0..3 {
        let cfg = PoolConfig::default()
            .max_size(5)
            .reserve(1)
            .idle_timeout(Some(Duration::from_millis(20)))
            .checkout_timeout(Duration::from_secs(10));
        builder = builder.pool(format!("p{i}"), mock.clone(), cfg);
    }
    let sup = builder.start().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..60 {
        let pool = sup.pool::<MockManager>(&format!("p{}", t % 3)).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64);
            for _ in 0..200 {
                let conn = pool.checkout().await.expect("checkout under load");
                if rng.u8(..) < 20 {
                    tokio::time::sleep(Duration::from_micros(rng.u64(..500))).await;
                }
                if rng.u8(..) < 5 {
                    conn.discard(); // churn: forces new connects
                } else {
                    drop(conn);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = mock.peak_live();
    assert!(peak <= BUDGET, "{peak} connections open at once");
    assert!(sup.budget().peak <= BUDGET, "{:?}", sup.budget());
    assert!(peak >= 5, "the load did use the budget ({peak})");
    let snap = sup.metrics().await.unwrap();
    let ok: u64 = snap.pools.iter().map(|p| p.checkouts.ok).sum();
    assert_eq!(ok, 60 * 200);
    sup.shutdown().await.unwrap();
    assert_eq!(mock.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reserve_is_available_even_when_the_shared_part_is_spent() {
    let greedy = MockManager::new();
    let sup = Supervisor::builder()
        .max_connections(3)
        .pool("greedy", greedy.clone(), PoolConfig::default().max_size(3))
        .pool(
            "reserved",
            MockManager::new(),
            PoolConfig::default().max_size(3).reserve(1),
        )
        .start()
        .await
        .unwrap();
    let g = sup.pool::<MockManager>("greedy").unwrap();
    let r = sup.pool::<MockManager>("reserved").unwrap();
    // The reserved pool's boot probe holds its reserve; greedy can take the other 2 only.
    let held = vec![g.checkout().await.unwrap(), g.checkout().await.unwrap()];
    let third = tokio::time::timeout(Duration::from_millis(200), g.checkout()).await;
    assert!(
        third.is_err() || third.unwrap().is_err(),
        "greedy got beyond the shared part"
    );
    r.checkout()
        .await
        .expect("the reserve is guaranteed")
        .ping()
        .unwrap();
    assert_eq!(sup.budget().in_use, 3);
    drop(held);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_connections_of_another_pool_are_reclaimed_for_a_waiting_pool() {
    let sup = Supervisor::builder()
        .max_connections(2)
        .pool("a", MockManager::new(), PoolConfig::default().max_size(2))
        .pool("b", MockManager::new(), PoolConfig::default().max_size(2))
        .start()
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let a = sup.pool::<MockManager>("a").unwrap();
    let b = sup.pool::<MockManager>("b").unwrap();
    // Each pool holds one idle connection from its boot probe; take both of a's.
    drop(b.checkout().await.unwrap());
    let a_held = a.checkout().await.unwrap();
    drop(a_held);
    // b needs a second connection: the budget is spent, a holds an idle one above its
    // (zero) reserve, so a gives it up.
    let b1 = b.checkout().await.unwrap();
    let b2 = b.checkout().await.expect("reclaimed from a");
    assert_ne!(b1.id(), b2.id());
    next_event(&mut events, "b", "budget_exhausted", Duration::ZERO).await;
    next_event(&mut events, "a", "connection_reclaimed", Duration::ZERO).await;
    assert_eq!(sup.budget().in_use, 2);
    drop((b1, b2));
    sup.shutdown().await.unwrap();
}

/// A pool holding `min_idle` idle connections gives them up to another pool's callers,
/// and does not take them back to refill `min_idle` while those callers wait.
#[tokio::test]
async fn callers_of_one_pool_get_another_pools_standby_connections_once() {
    let (a_mock, b_mock) = (MockManager::new(), MockManager::new());
    let sup = Supervisor::builder()
        .max_connections(2)
        .pool(
            "a",
            a_mock.clone(),
            PoolConfig::default().max_size(2).min_idle(2),
        )
        .pool("b", b_mock.clone(), PoolConfig::default().max_size(2))
        .start()
        .await
        .unwrap();
    let b = sup.pool::<MockManager>("b").unwrap();
    // b's boot probe took one of a's; b's callers need both.
    let (b1, b2) = tokio::join!(b.checkout(), b.checkout());
    let held = (b1.unwrap(), b2.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = sup.metrics().await.unwrap();
    let a = m.pools.iter().find(|p| p.name == "a").unwrap();
    let b_snap = m.pools.iter().find(|p| p.name == "b").unwrap();
    assert_eq!((a.open, b_snap.open), (0, 2));
    assert!(a.connects_ok <= 3, "a opened {} connections", a.connects_ok);
    assert!(
        b_snap.connects_ok <= 3,
        "b opened {} connections",
        b_snap.connects_ok
    );
    drop(held);
    sup.shutdown().await.unwrap();
}

/// A pool whose boot probe found the budget spent by another pool's `min_idle` probes
/// with the connection that pool gives up, instead of the other pool taking it back.
#[tokio::test(start_paused = true)]
async fn a_pool_booted_into_a_spent_budget_probes_with_the_reclaimed_connection() {
    let sup = Supervisor::builder()
        .max_connections(2)
        .pool(
            "a",
            MockManager::new(),
            PoolConfig::default().max_size(2).min_idle(2),
        )
        .pool("b", MockManager::new(), PoolConfig::default().max_size(2))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = sup.metrics().await.unwrap();
    let (a, b) = (&m.pools[0], &m.pools[1]);
    assert_eq!((a.name.as_str(), b.name.as_str()), ("a", "b"));
    assert_eq!((a.open, b.open), (1, 1));
    assert_eq!((a.connects_ok, b.connects_ok), (2, 1));
    sup.shutdown().await.unwrap();
}

/// A pool whose callers keep every connection busy gives connections up to another
/// pool's callers when the budget is spent, down to an even split (as even as an odd
/// budget allows), and the two do not pass connections back and forth.
#[tokio::test(start_paused = true)]
async fn busy_pools_split_a_spent_budget_evenly_without_passing_connections_back_and_forth() {
    let cfg = PoolConfig::default()
        .max_size(5)
        .checkout_timeout(Duration::from_secs(1));
    let sup = Supervisor::builder()
        .max_connections(5)
        .pool("a", MockManager::new(), cfg.clone())
        .pool("b", MockManager::new(), cfg)
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let run = |name: &str, tasks: usize, after: Duration| {
        let pool = sup.pool::<MockManager>(name).unwrap();
        (0..tasks)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let until = tokio::time::Instant::now() + Duration::from_secs(3);
                    let mut ops = 0u64;
                    while tokio::time::Instant::now() < until {
                        let conn = pool.checkout().await.expect("checkout");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        drop(conn);
                        ops += 1;
                    }
                    ops
                })
            })
            .collect::<Vec<_>>()
    };
    // a's eight callers take the whole budget; b's four arrive a second later.
    let a = run("a", 8, Duration::ZERO);
    let b = run("b", 4, Duration::from_secs(1));
    for at in [2000, 2500] {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        let m = sup.metrics().await.unwrap();
        assert_eq!(
            (m.pools[0].open, m.pools[1].open),
            (3, 2),
            "the split at {at} ms"
        );
        // b gave up the idle connection of its boot probe when a's callers came; a gave
        // up two busy ones when b's came; nothing moved after.
        let given_up: Vec<u64> = m.pools.iter().map(reclaimed).collect();
        assert_eq!(given_up, vec![2, 1], "connections given up at {at} ms");
    }
    for task in a.into_iter().chain(b) {
        assert!(task.await.unwrap() > 100);
    }
    assert!(sup.budget().peak <= 5);
    sup.shutdown().await.unwrap();
}

/// A Down pool probes its server with budget another pool holds idle, but not at every
/// backoff step: each such probe costs the other pool a connection closed and opened
/// again. It still recovers once its server is back.
#[tokio::test(start_paused = true)]
async fn a_down_pool_in_a_spent_budget_takes_a_connection_for_its_probe_every_ten_seconds() {
    let down = MockManager::new();
    down.fail_connects(true);
    let sup = Supervisor::builder()
        .max_connections(2)
        .pool(
            "a",
            MockManager::new(),
            PoolConfig::default().max_size(2).min_idle(2),
        )
        .pool(
            "b",
            down.clone(),
            PoolConfig::default().max_size(2).down_after_failures(1),
        )
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let m = sup.metrics().await.unwrap();
    let (a, b) = (&m.pools[0], &m.pools[1]);
    let a_reclaimed = reclaimed(a);
    // Every second before; 81 in this test.
    assert!(
        a_reclaimed <= 7,
        "a gave up {a_reclaimed} connections in 60 s"
    );
    assert!(
        (2..=8).contains(&b.connects_failed),
        "b probed {} times",
        b.connects_failed
    );
    assert_eq!(b.status, PoolStatus::Down);
    down.fail_connects(false);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(sup.status("b").unwrap(), PoolStatus::Up);
    sup.shutdown().await.unwrap();
}

/// A busy pool asked to give up a connection for another pool's callers forgets it once
/// no pool needs it (the callers gave up): its connections come back to it, not closed.
#[tokio::test(start_paused = true)]
async fn a_connection_owed_to_callers_that_gave_up_is_not_closed() {
    let sup = Supervisor::builder()
        .max_connections(2)
        .pool("a", MockManager::new(), PoolConfig::default().max_size(2))
        .pool(
            "b",
            MockManager::new(),
            PoolConfig::default().checkout_timeout(Duration::from_millis(200)),
        )
        .start()
        .await
        .unwrap();
    let (a, b) = (
        sup.pool::<MockManager>("a").unwrap(),
        sup.pool::<MockManager>("b").unwrap(),
    );
    // a's two callers hold the whole budget (b's boot connection was reclaimed for them).
    let held = (a.checkout().await.unwrap(), a.checkout().await.unwrap());
    assert!(
        b.checkout().await.is_err(),
        "a gives up only what comes back"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(held);
    let m = sup.metrics().await.unwrap();
    let a_snap = &m.pools[0];
    assert_eq!((a_snap.open, a_snap.idle, reclaimed(a_snap)), (2, 2, 0));
    sup.shutdown().await.unwrap();
}

/// Connections `pool` closed to give their budget to another pool.
fn reclaimed(pool: &PoolSnapshot) -> u64 {
    pool.closes
        .iter()
        .find(|(reason, _)| *reason == CloseReason::Reclaimed)
        .map_or(0, |(_, n)| *n)
}
