//! Pool lifecycle: restarts, wedges, Down and Up, connection setup (customizers),
//! reaping, refill, leaks, operator actions and shutdown.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{next_event, one_pool, settle};
use poolvisor_actors::testing::{crash_pool, wedge_pool, MockConnection, MockError, MockManager};
use poolvisor_actors::{
    CheckoutError, CloseReason, EventKind, PoolConfig, PoolStatus, SetupFuture, StartError,
    Supervisor,
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

/// A mock manager that tells when the pool that owns it was freed, and whose first
/// connection may take a while to drop.
struct Freed {
    mock: MockManager,
    freed: Arc<AtomicBool>,
    slow_drop: Option<Duration>,
    slowed: AtomicBool,
}

impl Freed {
    fn new(mock: &MockManager, slow_drop: Option<Duration>) -> (Freed, Arc<AtomicBool>) {
        let freed = Arc::new(AtomicBool::new(false));
        let manager = Freed {
            mock: mock.clone(),
            freed: freed.clone(),
            slow_drop,
            slowed: AtomicBool::new(false),
        };
        (manager, freed)
    }
}

impl Drop for Freed {
    fn drop(&mut self) {
        self.freed.store(true, Ordering::SeqCst);
    }
}

struct SlowDrop(MockConnection, Option<Duration>);

impl std::ops::Deref for SlowDrop {
    type Target = MockConnection;
    fn deref(&self) -> &MockConnection {
        &self.0
    }
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        if let Some(pause) = self.1 {
            std::thread::sleep(pause);
        }
    }
}

impl bb8::ManageConnection for Freed {
    type Connection = SlowDrop;
    type Error = MockError;
    async fn connect(&self) -> Result<SlowDrop, MockError> {
        let slow = self
            .slow_drop
            .filter(|_| !self.slowed.swap(true, Ordering::SeqCst));
        Ok(SlowDrop(self.mock.connect().await?, slow))
    }
    async fn is_valid(&self, conn: &mut SlowDrop) -> Result<(), MockError> {
        self.mock.is_valid(&mut conn.0).await
    }
    fn has_broken(&self, conn: &mut SlowDrop) -> bool {
        self.mock.has_broken(&mut conn.0)
    }
}

/// A guard holds no reference count of its own: the pool keeps itself alive while it
/// lends (see `Pooled`). A guard that outlives the supervisor and every handle still
/// works and gives its connection back, and then the pool is freed.
#[tokio::test(start_paused = true)]
async fn a_guard_outlives_the_supervisor_and_every_handle() {
    for shut_down in [true, false] {
        let mock = MockManager::new();
        let (manager, freed) = Freed::new(&mock, None);
        let sup = Supervisor::builder()
            .pool("m", manager, PoolConfig::default().max_size(2))
            .start()
            .await
            .unwrap();
        let pool = sup.pool::<Freed>("m").unwrap();
        let (lent, idle) = (
            pool.checkout().await.unwrap(),
            pool.checkout().await.unwrap(),
        );
        drop(idle);
        drop(pool);
        if shut_down {
            let report = sup
                .shutdown_within(Duration::from_millis(100))
                .await
                .unwrap();
            assert_eq!(report.pools[0].1.still_lent, 1);
        }
        drop(sup);
        settle().await;
        assert!(
            !freed.load(Ordering::SeqCst),
            "alive while a connection is lent"
        );
        assert_eq!(lent.pool(), "m");
        lent.ping().unwrap();
        drop(lent);
        settle().await;
        assert!(freed.load(Ordering::SeqCst), "freed once nothing is lent");
        assert_eq!(mock.live(), 0, "every connection closed");
    }
}

/// A guard whose return is slow to close its connection, while the others come back on
/// another thread, after the supervisor is gone: every return closes its connection
/// (the pool is shut down) and then touches the pool again, and the slow one does so
/// after the others took `lent` to zero. Nothing is lost, and the pool is freed once the
/// last return is done. (Without `hold_pool`'s clone the others free the pool while the
/// slow return still uses it, and the first assertion fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_return_after_the_supervisor_is_gone_keeps_the_pool_until_it_is_done() {
    let mock = MockManager::new();
    let (manager, freed) = Freed::new(&mock, Some(Duration::from_millis(100)));
    let sup = Supervisor::builder()
        .pool("m", manager, PoolConfig::default().max_size(4))
        .start()
        .await
        .unwrap();
    let pool = sup.pool::<Freed>("m").unwrap();
    let slow = pool.checkout().await.unwrap(); // the first connection: slow to close
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(pool.checkout().await.unwrap());
    }
    drop(pool);
    let report = sup
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(report.pools[0].1.still_lent, 4);
    drop(sup);
    // Let the actors stop, so that the guards hold the pool's last claim.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let slow = std::thread::spawn(move || drop(slow));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(others);
    assert!(
        !freed.load(Ordering::SeqCst),
        "alive while a return is under way"
    );
    slow.join().unwrap();
    // (Should an actor still hold the pool, it lets go on its own task.)
    for _ in 0..200 {
        if freed.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        freed.load(Ordering::SeqCst),
        "freed once the last return is done"
    );
    assert_eq!(mock.live(), 0, "every connection closed");
}

/// A customizer that counts its runs, fails while `fail` is set, stalls (longer than
/// any connect timeout here) while `stall` is set, and panics while `panic` is set.
#[derive(Debug, Default)]
struct Setup {
    runs: std::sync::atomic::AtomicU64,
    fail: AtomicBool,
    stall: AtomicBool,
    panic: AtomicBool,
}

/// The customizer the pool gets: a handle on the test's `Setup`.
#[derive(Debug, Clone)]
struct SetupHandle(Arc<Setup>);

impl poolvisor_actors::CustomizeConnection<MockConnection, MockError> for SetupHandle {
    fn on_acquire<'a>(&'a self, conn: &'a mut MockConnection) -> SetupFuture<'a, MockError> {
        Box::pin(async move {
            self.0.runs.fetch_add(1, Ordering::SeqCst);
            if self.0.stall.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if self.0.panic.load(Ordering::SeqCst) {
                panic!("a bug in the customizer");
            }
            if self.0.fail.load(Ordering::SeqCst) {
                return Err(MockError(format!(
                    "setup of connection {} refused",
                    conn.id()
                )));
            }
            conn.ping()
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_customizer_runs_once_on_every_new_connection_and_a_failing_one_closes_it() {
    let setup = Arc::new(Setup::default());
    let mock = MockManager::new();
    let cfg = PoolConfig::default()
        .max_size(2)
        .connect_timeout(Duration::from_secs(1))
        .checkout_timeout(Duration::from_secs(30));
    let sup = Supervisor::builder()
        .pool("m", mock.clone(), cfg)
        .customize::<MockManager>("m", SetupHandle(setup.clone()))
        .start()
        .await
        .unwrap();
    let pool = sup.pool::<MockManager>("m").unwrap();
    let (a, b) = (
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    );
    drop((a, b));
    for _ in 0..10 {
        drop(pool.checkout().await.unwrap());
    }
    assert_eq!((setup.runs.load(Ordering::SeqCst), mock.connects()), (2, 2));

    // Set-up that fails, outlasts `connect_timeout` or panics: the connection is
    // closed and the connect counted as failed, with the customizer's error; three take
    // the pool Down. Then it comes back: nothing of the failed connects is left counted.
    for (flag, expected) in [
        (&setup.fail, "setup of connection"),
        (&setup.stall, "setup timed out"),
        (&setup.panic, "connection setup panicked"),
    ] {
        // Every open connection discarded: the next checkout needs a new one.
        let held = [
            pool.checkout().await.unwrap(),
            pool.checkout().await.unwrap(),
        ];
        held.into_iter().for_each(|c| c.discard());
        flag.store(true, Ordering::SeqCst);
        let err = pool.checkout().await.unwrap_err();
        let CheckoutError::Unavailable { cause, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(cause.contains(expected), "{cause}");
        settle().await;
        assert_eq!(
            mock.live(),
            0,
            "every connection that failed its setup is closed"
        );
        let snap = pool.snapshot();
        assert_eq!((snap.open, snap.in_use), (0, 0));
        assert!(snap.connects_failed >= 3, "{snap:?}");
        flag.store(false, Ordering::SeqCst);
        let mut events = sup.subscribe();
        next_event(&mut events, "m", "recovered", Duration::from_secs(30)).await;
    }
    // Both connections can be opened again.
    let both = [
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    assert_eq!(pool.snapshot().connecting, 0);
    drop(both);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_customizer_for_no_pool_or_another_type_of_pool_is_refused_at_start() {
    let setup = Arc::new(Setup::default());
    let start = |name: &str| {
        Supervisor::builder()
            .pool("m", MockManager::new(), PoolConfig::default())
            .customize::<MockManager>(name, SetupHandle(setup.clone()))
    };
    let err = start("nope").start().await.unwrap_err();
    assert!(
        matches!(&err, StartError::InvalidCustomizer { pool, message } if pool == "nope" && message == "no such pool"),
        "{err}"
    );
    let err = start("m")
        .customize::<MockManager>("m", SetupHandle(setup.clone()))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("customized twice"), "{err}");

    #[derive(Clone, Debug)]
    struct Other(MockManager);
    impl poolvisor_actors::ManageConnection for Other {
        type Connection = MockConnection;
        type Error = MockError;
        async fn connect(&self) -> Result<MockConnection, MockError> {
            self.0.connect().await
        }
        async fn is_valid(&self, conn: &mut MockConnection) -> Result<(), MockError> {
            self.0.is_valid(conn).await
        }
        fn has_broken(&self, conn: &mut MockConnection) -> bool {
            self.0.has_broken(conn)
        }
    }
    let err = Supervisor::builder()
        .pool("m", Other(MockManager::new()), PoolConfig::default())
        .customize::<MockManager>("m", SetupHandle(setup))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the customizer is for a"), "{err}");
    assert!(err.to_string().contains("Other"), "{err}");
}
