//! The smallest poolvisor program: start a supervisor with one pool, check out, watch
//! events, read metrics, shut down. Runs anywhere: the pool uses the in-memory mock
//! manager of `poolvisor::testing`.
//!
//! `cargo run --example quickstart`

use std::time::Duration;

use poolvisor::testing::MockManager;
use poolvisor::{PoolConfig, Supervisor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockManager::new();
    let sup = Supervisor::builder()
        .max_connections(8)
        .pool(
            "mock",
            mock.clone(),
            PoolConfig::default().max_size(4).min_idle(1),
        )
        .start()
        .await?;
    let mut events = sup.subscribe();
    let events_task = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("event #{:<3} {:<6} {:?}", e.seq, e.pool, e.kind);
        }
    });

    // Many tasks share four connections.
    let pool = sup.pool::<MockManager>("mock")?;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                let conn = pool.checkout().await?;
                conn.ping()?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }

    // The backend goes away. Idle connections older than the validation threshold
    // (500 ms by default) are validated before they are lent, so the dead ones are found
    // and closed; reconnects fail and the pool goes Down, then recovers.
    mock.kill_all();
    mock.fail_connects(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = pool.checkout().await.expect_err("backend is down");
    println!("while down: {err}");
    mock.fail_connects(false);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let snap = sup.metrics().await?;
    let p = snap.pool("mock").expect("pool");
    println!(
        "checkouts ok {}, connects ok {} failed {}, peak in use {}, wait p50 {:?} p99 {:?}",
        p.checkouts.ok, p.connects_ok, p.connects_failed, p.peak_in_use, p.wait.p50, p.wait.p99
    );
    let report = sup.shutdown().await?;
    println!(
        "shut down in {:?}; open connections left: {}",
        report.took,
        mock.live()
    );
    events_task.await?;
    Ok(())
}
