//! Health events, metrics snapshots, secrets, and what `start()` refuses.

mod common;

use std::time::Duration;

use common::one_pool;
use poolvisor_actors::testing::MockManager;
use poolvisor_actors::{
    CheckoutError, EventError, EventKind, PoolConfig, StartError, Supervisor, Validation,
};

#[tokio::test(start_paused = true)]
async fn every_subscriber_sees_every_event_in_the_same_order() {
    let (sup, pool, mock) = one_pool(PoolConfig::default()).await;
    let mut first = sup.subscribe();
    let mut second = sup.subscribe();
    sup.pause("m").unwrap();
    sup.resume("m").unwrap();
    sup.resize("m", 3).unwrap();
    mock.fail_connects(true);
    let held = pool.checkout().await.unwrap();
    let _ = pool.checkout().await; // needs a connect: fails until Down
    drop(held);
    sup.shutdown().await.unwrap();
    let drain = |s: &mut poolvisor_actors::EventStream| {
        let mut out = Vec::new();
        while let Some(e) = s.try_recv() {
            match e {
                Ok(e) => out.push(e),
                Err(EventError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    };
    let a = drain(&mut first);
    let b = drain(&mut second);
    assert_eq!(a, b);
    let seqs: Vec<u64> = a.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let kinds: Vec<&str> = a.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        ["paused", "resumed", "resized", "degraded", "down", "drained", "stopped"]
    );
    assert!(a
        .iter()
        .all(|e| &*e.pool == "m" && &*e.backend == "custom" && e.at_unix_ms > 0));
}

#[tokio::test(start_paused = true)]
async fn subscribers_get_closed_after_shutdown_instead_of_waiting_forever() {
    let (sup, _pool, _mock) = one_pool(PoolConfig::default()).await;
    let mut events = sup.subscribe();
    sup.shutdown().await.unwrap();
    let mut kinds = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(e)) => kinds.push(e.kind.name()),
            Ok(Err(EventError::Closed)) => break,
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    assert_eq!(kinds, ["drained", "stopped"]);
    let mut late = sup.subscribe();
    assert_eq!(late.recv().await, Err(EventError::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_is_told_how_many_events_it_missed() {
    let sup = Supervisor::builder()
        .pool("m", MockManager::new(), PoolConfig::default())
        .event_capacity(4)
        .start()
        .await
        .unwrap();
    let mut slow = sup.subscribe();
    for _ in 0..5 {
        sup.pause("m").unwrap();
        sup.resume("m").unwrap();
    }
    assert_eq!(slow.recv().await, Err(EventError::Missed { missed: 6 }));
    assert_eq!(slow.recv().await.unwrap().kind, EventKind::Paused);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn metrics_snapshot_counts_checkouts_connects_closes_and_events() {
    let cfg = PoolConfig::default()
        .max_size(2)
        .checkout_timeout(Duration::from_millis(100));
    let (sup, pool, _mock) = one_pool(cfg).await;
    let a = pool.checkout().await.unwrap();
    let b = pool.checkout().await.unwrap();
    assert!(matches!(
        pool.checkout().await,
        Err(CheckoutError::Timeout { .. })
    ));
    b.discard();
    drop(a);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let snap = sup.metrics().await.unwrap();
    let p = snap.pool("m").unwrap();
    assert_eq!((p.checkouts.ok, p.checkouts.timeout), (2, 1));
    assert_eq!((p.connects_ok, p.connects_failed), (2, 0));
    assert_eq!((p.open, p.idle, p.in_use, p.peak_in_use), (1, 1, 0, 2));
    assert_eq!(p.hold.count, 2);
    assert_eq!(snap.budget.in_use, 1);
    // The metrics actor subscribes before the pools boot, so it saw their first events.
    assert_eq!(snap.event_count("m", "started"), 1);
    assert_eq!(snap.event_count("m", "up"), 1);
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["pools"][0]["checkouts"]["timeout"], 1);
    assert_eq!(json["pools"][0]["status"], "up");
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn passwords_never_reach_errors_or_events() {
    const SENTINEL: &str = "S3CR3T-SENTINEL";
    let mock = MockManager::new();
    mock.fail_connects(true);
    mock.set_error_text(format!(
        "could not connect to postgres://app:{SENTINEL}@10.0.0.1:5432/db (password={SENTINEL})"
    ));
    let sup = Supervisor::builder()
        .pool("m", mock, PoolConfig::default())
        .start()
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let pool = sup.pool::<MockManager>("m").unwrap();
    let err = pool.checkout().await.unwrap_err();
    let snap = sup.metrics().await.unwrap();
    sup.shutdown().await.unwrap();
    let mut seen = vec![err.to_string(), format!("{err:?}"), format!("{snap:?}")];
    seen.push(serde_json::to_string(&snap).unwrap());
    while let Some(Ok(e)) = events.try_recv() {
        seen.push(format!("{e:?}"));
    }
    for text in &seen {
        assert!(!text.contains(SENTINEL), "leaked in: {text}");
    }
    assert!(
        seen[0].contains("postgres://app:***@10.0.0.1:5432/db"),
        "{}",
        seen[0]
    );
}

#[tokio::test]
async fn start_rejects_bad_configuration_naming_pool_and_field() {
    let m = MockManager::new;
    let check = |err: StartError, expect: &str| {
        assert!(
            err.to_string().contains(expect),
            "{err} does not mention {expect}"
        );
    };
    let err = Supervisor::builder()
        .pool("db", m(), PoolConfig::default().max_size(0))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::InvalidConfig { pool, source } if pool == "db" && source.field == "max_size")
    );
    check(err, "`max_size` must be at least 1");
    let err = Supervisor::builder()
        .pool("db", m(), PoolConfig::default().max_size(2).min_idle(5))
        .start()
        .await
        .unwrap_err();
    check(err, "pool `db`: `min_idle` 5 is larger than max_size 2");
    let err = Supervisor::builder()
        .pool(
            "db",
            m(),
            PoolConfig::default().validation(Validation::IfIdleFor(Duration::ZERO)),
        )
        .start()
        .await
        .unwrap_err();
    check(err, "`validation` must be greater than zero");
    let err = Supervisor::builder()
        .pool("db", m(), PoolConfig::default())
        .pool("db", m(), PoolConfig::default())
        .start()
        .await
        .unwrap_err();
    assert_eq!(err, StartError::DuplicatePool { name: "db".into() });
    let err = Supervisor::builder()
        .pool("bad name!", m(), PoolConfig::default())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InvalidName { .. }));
    let err = Supervisor::builder()
        .max_connections(3)
        .pool("a", m(), PoolConfig::default().reserve(2))
        .pool("b", m(), PoolConfig::default().reserve(2))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StartError::ReservesExceedBudget {
            reserved: 4,
            max_connections: 3
        }
    );
    // Each pool needs the larger of its min_idle and reserve: 2 + 2 > 3.
    let err = Supervisor::builder()
        .max_connections(3)
        .pool("a", m(), PoolConfig::default().min_idle(2).reserve(1))
        .pool("b", m(), PoolConfig::default().reserve(2))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StartError::MinIdleExceedsBudget {
            needed: 4,
            max_connections: 3
        }
    );
    let err = Supervisor::builder()
        .max_connections(0)
        .start()
        .await
        .unwrap_err();
    check(err, "`max_connections` must be at least 1");
    let err = Supervisor::builder()
        .heartbeat(Duration::from_secs(1), Duration::from_millis(10))
        .start()
        .await
        .unwrap_err();
    check(err, "heartbeat_timeout");
}

#[tokio::test(start_paused = true)]
async fn lookup_by_wrong_name_or_type_is_an_error() {
    let (sup, _pool, _mock) = one_pool(PoolConfig::default()).await;
    let err = sup.pool::<MockManager>("nope").unwrap_err();
    assert_eq!(
        err,
        CheckoutError::UnknownPool {
            name: "nope".into()
        }
    );
    let err = sup.pool::<OtherManager>("m").unwrap_err();
    assert!(matches!(err, CheckoutError::WrongType { .. }), "{err:?}");
    assert!(err.to_string().contains("MockManager"), "{err}");
    sup.shutdown().await.unwrap();
}

struct OtherManager;

impl bb8::ManageConnection for OtherManager {
    type Connection = ();
    type Error = ();
    async fn connect(&self) -> Result<(), ()> {
        Ok(())
    }
    async fn is_valid(&self, _: &mut ()) -> Result<(), ()> {
        Ok(())
    }
    fn has_broken(&self, _: &mut ()) -> bool {
        false
    }
}
