//! Helpers shared by the engine tests.
#![allow(dead_code)]

use std::time::Duration;

use poolvisor_actors::testing::MockManager;
use poolvisor_actors::{EventKind, EventStream, HealthEvent, PoolConfig, PoolHandle, Supervisor};

/// A supervisor with one mock pool named `m`.
pub async fn one_pool(cfg: PoolConfig) -> (Supervisor, PoolHandle<MockManager>, MockManager) {
    let mock = MockManager::new();
    let sup = Supervisor::builder()
        .pool("m", mock.clone(), cfg)
        .start()
        .await
        .expect("start");
    let pool = sup.pool::<MockManager>("m").expect("pool");
    (sup, pool, mock)
}

/// The next event of `pool` whose kind has this name, skipping others; fails the test
/// after `within` (of tokio time).
pub async fn next_event(
    events: &mut EventStream,
    pool: &str,
    kind: &str,
    within: Duration,
) -> HealthEvent {
    let found = tokio::time::timeout(within, async {
        loop {
            let e = events.recv().await.expect("event stream");
            if &*e.pool == pool && e.kind.name() == kind {
                return e;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no `{kind}` event for `{pool}` within {within:?}"))
}

/// Lets spawned tasks run until they block (paused clock, current-thread runtime).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

pub fn is_kind(e: &HealthEvent, kind: EventKind) -> bool {
    e.kind == kind
}
