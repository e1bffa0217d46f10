//! `pg_slow_mix`: what a slow query costs the queries pipelined behind it, by share
//! policy. Shared checkouts (`checkout_shared`) on 16 open PostgreSQL connections from 8
//! and 64 tasks; one query in 200 is `SELECT pg_sleep(0.02)`, the others `SELECT 1`.
//! Evidence for PostgreSQL's default (`SharePolicy::Spread`); not one of issue 5's cases.
//!
//! `cargo bench --bench pg_slow_mix [-- --passes 3]`

mod harness;

use harness::{measure, run_grid, Contender, Op, Settings};
use poolvisor::backends::Postgres;
use poolvisor::prelude::*;

/// One query in this many is slow.
const SLOW_ONE_IN: u32 = 200;
const SLOW: &str = "SELECT pg_sleep(0.02)";

fn url() -> String {
    std::env::var("POOLVISOR_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

#[derive(Clone)]
struct Mixed(PoolHandle<Postgres>);
impl Op for Mixed {
    async fn run(&self) {
        let conn = self.0.checkout_shared().await.expect("checkout");
        let query = if fastrand::u32(..SLOW_ONE_IN) == 0 {
            SLOW
        } else {
            "SELECT 1"
        };
        conn.simple_query(query).await.expect("query");
    }
}

/// Every connection open (`min_idle = max_size`), shared by `policy` up to `max_shares`.
fn shared(policy: SharePolicy, max_shares: usize) -> Contender {
    Box::new(move |tasks, size, s: Settings| {
        Box::pin(async move {
            let cfg = PoolConfig::default()
                .max_size(size)
                .min_idle(size)
                .share_policy(policy)
                .max_shares(max_shares);
            let sup = Supervisor::builder()
                .postgres("db", &url(), cfg)
                .start()
                .await
                .unwrap();
            let o = measure(Mixed(sup.postgres("db").unwrap()), tasks, &s).await;
            sup.shutdown().await.unwrap();
            o
        })
    })
}

fn main() {
    let settings = Settings::from_args();
    let contenders: [(&str, Contender); 3] = [
        ("spread (default)", shared(SharePolicy::Spread, 16)),
        ("pack", shared(SharePolicy::Pack, 16)),
        ("pack, max_shares 8", shared(SharePolicy::Pack, 8)),
    ];
    run_grid("pg_slow_mix", &[(8, 16), (64, 16)], &contenders, &settings);
}
