//! The engine on its production clock (the CPU's counter, see `actors/src/clock.rs`), in
//! real time: the engine's own tests pause tokio's clock and so run on the `tokio-clock`
//! build. `scripts/test.sh` runs this crate's tests apart from the engine's, so that these
//! run on the build users get.

use std::time::{Duration, Instant};

use poolvisor::testing::MockManager;
use poolvisor::{CheckoutError, PoolConfig, Supervisor, Validation};

async fn start(manager: &MockManager, cfg: PoolConfig) -> Supervisor {
    Supervisor::builder()
        .pool("mock", manager.clone(), cfg)
        .start()
        .await
        .expect("start")
}

#[tokio::test]
async fn timeouts_and_waits_follow_real_time() {
    let m = MockManager::new();
    let cfg = PoolConfig::default()
        .max_size(1)
        .checkout_timeout(Duration::from_millis(150));
    let sup = start(&m, cfg).await;
    let pool = sup.pool::<MockManager>("mock").unwrap();

    let held = pool.checkout().await.unwrap();
    let started = Instant::now();
    let err = pool
        .checkout()
        .await
        .expect_err("the only connection is held");
    let took = started.elapsed();
    assert!(matches!(err, CheckoutError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(150),
        "timed out after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "timed out after {took:?}");

    // A shared checkout's wait is bounded by the same clock (through a tokio timer).
    let started = Instant::now();
    let err = pool.checkout_shared().await.expect_err("no place to share");
    assert!(matches!(err, CheckoutError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(150));

    // A waiter served after 100 ms records a wait of about that; the holder's hold too.
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { drop(pool.checkout().await.unwrap()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    waiter.await.unwrap();
    let snap = pool.snapshot();
    assert!(
        (Duration::from_millis(90)..Duration::from_secs(2)).contains(&snap.wait.max),
        "wait {:?}",
        snap.wait
    );
    assert!(
        snap.hold.max >= Duration::from_millis(400) && snap.hold.max < Duration::from_secs(5),
        "hold {:?}",
        snap.hold
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_validated_past_the_threshold() {
    let m = MockManager::new();
    let cfg = PoolConfig::default()
        .max_size(1)
        .validation(Validation::IfIdleFor(Duration::from_millis(200)));
    let sup = start(&m, cfg).await;
    let pool = sup.pool::<MockManager>("mock").unwrap();

    drop(pool.checkout().await.unwrap());
    let before = m.validations();
    drop(pool.checkout().await.unwrap());
    assert_eq!(m.validations(), before, "validated inside the threshold");

    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(pool.checkout().await.unwrap());
    assert_eq!(
        m.validations(),
        before + 1,
        "not validated past the threshold"
    );
    sup.shutdown().await.unwrap();
}

/// A test that pauses tokio's clock without the `tokio-clock` feature still sees checkout
/// timeouts in tokio's time: the sweeper's timer decides, not the pool's clock (which
/// does not stop). Before, the sweeper woke early by the pool's clock and slept again,
/// spinning for the whole timeout in real time.
#[tokio::test(start_paused = true)]
async fn checkout_timeouts_follow_a_paused_tokio_clock() {
    let m = MockManager::new();
    let cfg = PoolConfig::default()
        .max_size(1)
        .checkout_timeout(Duration::from_secs(30));
    let sup = start(&m, cfg).await;
    let pool = sup.pool::<MockManager>("mock").unwrap();
    let held = pool.checkout().await.unwrap();

    let (real, virtual_) = (Instant::now(), tokio::time::Instant::now());
    let err = pool
        .checkout()
        .await
        .expect_err("the only connection is held");
    assert!(matches!(err, CheckoutError::Timeout { .. }), "{err}");
    assert!(virtual_.elapsed() >= Duration::from_secs(30));
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "took {:?}",
        real.elapsed()
    );
    drop(held);
    sup.shutdown().await.unwrap();
}
