//! Pool lifecycle: restarts, wedges, Down and Up, reaping, refill, leaks, operator
//! actions and shutdown.

mod common;

use std::time::Duration;

use common::{next_event, one_pool, settle};
use poolvisor_actors::testing::{crash_pool, wedge_pool, MockManager};
use poolvisor_actors::{
    CheckoutError, CloseReason, EventKind, PoolConfig, PoolStatus, StartError, Supervisor,
};

#[tokio::test(start_paused = true)]
async fn handles_keep_working_across_a_pool_restart() {
    let (sup, pool, _mock) = one_pool(PoolConfig::default().max_size(2)).await;
    let mut events = sup.subscribe();
    let held = pool.checkout().await.unwrap(); // taken before the crash
    crash_pool(&sup, "m").unwrap();
    let e = next_event(&mut events, "m", "restarted", Duration::from_secs(5)).await;
    let EventKind::Restarted { attempt, reason } = e.kind else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert!(reason.contains("crash requested"), "{reason}");
    // The guard taken before the restart returns fine, the old handle still lends, and
    // the new actor opens connections (the second one needs a connect).
    drop(held);
    let a = pool.checkout().await.unwrap();
    let b = pool.checkout().await.unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(pool.status(), PoolStatus::Up);
    drop((a, b));
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_mark_the_pool_failed() {
    let mock = MockManager::new();
    let sup = Supervisor::builder()
        .pool("m", mock.clone(), PoolConfig::default())
        .restart_limit(2, Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let pool = sup.pool::<MockManager>("m").unwrap();
    let mut events = sup.subscribe();
    for attempt in 1..=2 {
        crash_pool(&sup, "m").unwrap();
        let e = next_event(&mut events, "m", "restarted", Duration::from_secs(10)).await;
        assert!(matches!(e.kind, EventKind::Restarted { attempt: a, .. } if a == attempt));
    }
    crash_pool(&sup, "m").unwrap();
    let e = next_event(&mut events, "m", "failed", Duration::from_secs(10)).await;
    assert_eq!(e.kind, EventKind::Failed { restarts: 2 });
    let err = pool.checkout().await.unwrap_err();
    assert!(
        matches!(err, CheckoutError::Failed { restarts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        mock.live(),
        0,
        "idle connections of a failed pool are closed"
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_wedged_pool_actor_is_killed_and_restarted() {
    let sup = Supervisor::builder()
        .pool("m", MockManager::new(), PoolConfig::default())
        .heartbeat(Duration::from_millis(100), Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let pool = sup.pool::<MockManager>("m").unwrap();
    let mut events = sup.subscribe();
    let started = tokio::time::Instant::now();
    wedge_pool(&sup, "m", Duration::from_secs(3600)).unwrap();
    let e = next_event(&mut events, "m", "restarted", Duration::from_secs(5)).await;
    let EventKind::Restarted { reason, .. } = e.kind else {
        unreachable!()
    };
    assert!(reason.contains("wedged"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    pool.checkout().await.unwrap().ping().unwrap();
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unreachable_at_boot_starts_down_fails_fast_and_recovers() {
    let mock = MockManager::new();
    mock.fail_connects(true);
    let sup = Supervisor::builder()
        .pool("m", mock.clone(), PoolConfig::default())
        .start()
        .await
        .expect("an unreachable backend does not fail the boot");
    let pool = sup.pool::<MockManager>("m").unwrap();
    let mut events = sup.subscribe();
    assert_eq!(pool.status(), PoolStatus::Down);
    let started = tokio::time::Instant::now();
    let err = pool.checkout().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "fails fast, no waiting");
    let CheckoutError::Unavailable { cause, .. } = err else {
        panic!("{err:?}")
    };
    assert!(cause.contains("connection refused"), "{cause}");
    mock.fail_connects(false);
    let e = next_event(&mut events, "m", "recovered", Duration::from_secs(10)).await;
    assert!(matches!(e.kind, EventKind::Recovered { .. }));
    pool.checkout().await.unwrap().ping().unwrap();
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fail_fast_refuses_to_start_with_a_down_pool() {
    let mock = MockManager::new();
    mock.fail_connects(true);
    let err = Supervisor::builder()
        .pool("m", mock, PoolConfig::default())
        .fail_fast(true)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::PoolDown { pool, .. } if pool == "m"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_connect_failures_take_the_pool_down_and_fail_its_waiters() {
    let cfg = PoolConfig::default().checkout_timeout(Duration::from_secs(30));
    let (sup, pool, mock) = one_pool(cfg).await;
    let mut events = sup.subscribe();
    let held = pool.checkout().await.unwrap();
    mock.fail_connects(true);
    let started = tokio::time::Instant::now();
    let err = pool.checkout().await.unwrap_err();
    // Three failures with backoff between them, far sooner than the 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, CheckoutError::Unavailable { .. }), "{err:?}");
    next_event(&mut events, "m", "degraded", Duration::ZERO).await;
    next_event(&mut events, "m", "down", Duration::ZERO).await;
    // The connection lent before the outage still works and comes back.
    drop(held);
    mock.fail_connects(false);
    next_event(&mut events, "m", "recovered", Duration::from_secs(10)).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_and_expired_connections_are_reaped() {
    let cfg = PoolConfig::default()
        .max_size(3)
        .idle_timeout(Some(Duration::from_secs(2)))
        .max_lifetime(Some(Duration::from_secs(10)))
        .health_check_interval(None);
    let (sup, pool, mock) = one_pool(cfg).await;
    let conns = vec![
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    drop(conns);
    assert_eq!(mock.live(), 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mock.live(), 0, "idle past idle_timeout");
    let snap = pool.snapshot();
    assert_eq!(
        snap.closes
            .iter()
            .find(|c| c.0 == CloseReason::Idle)
            .unwrap()
            .1,
        3
    );
    // Lifetime: a connection in steady use is still retired after max_lifetime.
    let mut first = None;
    for _ in 0..12 {
        let conn = pool.checkout().await.unwrap();
        first.get_or_insert(conn.id());
        drop(conn);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let conn = pool.checkout().await.unwrap();
    assert_ne!(Some(conn.id()), first, "retired after max_lifetime");
    let snap = pool.snapshot();
    assert_eq!(
        snap.closes
            .iter()
            .find(|c| c.0 == CloseReason::Lifetime)
            .unwrap()
            .1,
        1
    );
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_filled_at_boot_and_refilled() {
    let cfg = PoolConfig::default().max_size(5).min_idle(2);
    let (sup, pool, mock) = one_pool(cfg).await;
    assert_eq!(pool.snapshot().idle, 2);
    let a = pool.checkout().await.unwrap();
    let b = pool.checkout().await.unwrap();
    a.discard();
    b.discard();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snap = pool.snapshot();
    assert_eq!((snap.idle, snap.open), (2, 2), "{snap:?}");
    assert_eq!(mock.live(), 2);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_check_replaces_dead_idle_connections() {
    let cfg = PoolConfig::default()
        .max_size(5)
        .min_idle(3)
        .health_check_interval(Some(Duration::from_secs(5)));
    let (sup, pool, mock) = one_pool(cfg).await;
    mock.kill_all();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let snap = pool.snapshot();
    assert_eq!(
        snap.closes
            .iter()
            .find(|c| c.0 == CloseReason::Validation)
            .unwrap()
            .1,
        3
    );
    assert_eq!(snap.idle, 3);
    assert_eq!(mock.connects(), 6);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_held_too_long_is_reported_with_its_call_site() {
    let cfg = PoolConfig::default().leak_threshold(Some(Duration::from_secs(1)));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let mut events = sup.subscribe();
    let line = line!() + 1;
    let conn = pool.checkout().await.unwrap();
    let e = next_event(&mut events, "m", "leak_suspected", Duration::from_secs(3)).await;
    let EventKind::LeakSuspected { held_for, location } = e.kind else {
        unreachable!()
    };
    assert!(held_for >= Duration::from_secs(1));
    assert!(
        location.starts_with(&format!("{}:{line}:", file!())),
        "{location}"
    );
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pause_resume_resize_and_drain() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(4)).await;
    sup.pause("m").unwrap();
    assert!(matches!(
        pool.checkout().await,
        Err(CheckoutError::Paused { .. })
    ));
    sup.resume("m").unwrap();
    let held: Vec<_> = vec![
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    sup.resize("m", 1).unwrap();
    assert!(sup.resize("m", 0).is_err());
    drop(held);
    settle().await;
    assert_eq!(mock.live(), 1, "the surplus closed on return");
    // Drain: lending stops, idle ones close, lent ones close when they come back.
    sup.resize("m", 4).unwrap();
    let lent = pool.checkout().await.unwrap();
    let drainer = {
        let sup = sup.clone();
        tokio::spawn(async move { sup.drain("m", Duration::from_secs(5)).await })
    };
    settle().await;
    assert!(matches!(
        pool.checkout().await,
        Err(CheckoutError::Draining { .. })
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(lent);
    let report = drainer.await.unwrap().unwrap();
    assert_eq!(report.still_lent, 0);
    assert_eq!(mock.live(), 0);
    sup.resume("m").unwrap();
    pool.checkout().await.unwrap().ping().unwrap();
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_lent_connections_and_closes_everything() {
    let (sup, pool, mock) = one_pool(PoolConfig::default().max_size(4).min_idle(2)).await;
    let lent = pool.checkout().await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(lent);
    });
    let report = sup.shutdown_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.pools[0].1.still_lent, 0);
    assert!(report.took >= Duration::from_secs(1) && report.took < Duration::from_secs(2));
    assert_eq!(mock.live(), 0);
    assert!(matches!(
        pool.checkout().await,
        Err(CheckoutError::ShutDown { .. })
    ));
    assert!(sup.shutdown().await.is_err(), "second shutdown is an error");
    assert!(sup.metrics().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn shutdown_keeps_its_deadline_when_a_caller_never_returns() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    let lent = pool.checkout().await.unwrap();
    let report = sup.shutdown_within(Duration::from_secs(2)).await.unwrap();
    assert_eq!(report.pools[0].1.still_lent, 1);
    assert!(
        report.took <= Duration::from_millis(2100),
        "{:?}",
        report.took
    );
    drop(lent);
    assert_eq!(mock.live(), 0, "closed when it came back");
}
