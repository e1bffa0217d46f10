//! `noop`: checkout + drop on a manager whose connect and validation do nothing —
//! the cost of the pool itself. poolvisor (default config), bb8 (default, and without
//! its check-out test) and deadpool (default), in one run.
//!
//! `cargo bench --bench noop [-- --passes 5 --seconds 3]`

mod harness;

use harness::noop::{Deadpool, Noop};
use harness::{
    header, measure, median, one_phase, progress, row, runtime, Op, Outcome, Ratio, Settings,
};
use poolvisor::{PoolConfig, PoolHandle, Supervisor};

#[derive(Clone)]
struct Poolvisor(PoolHandle<Noop>);
impl Op for Poolvisor {
    async fn run(&self) {
        drop(self.0.checkout().await.expect("poolvisor checkout"));
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<Noop>);
impl Op for Bb8 {
    async fn run(&self) {
        drop(self.0.get().await.expect("bb8 checkout"));
    }
}

const POOLS: [&str; 5] = [
    "poolvisor",
    "bb8",
    "bb8 no test",
    "deadpool",
    "poolvisor warm",
];

async fn one(pool: &str, tasks: usize, size: usize, settings: &Settings) -> Outcome {
    match pool {
        "poolvisor" | "poolvisor warm" => {
            let mut cfg = PoolConfig::default().max_size(size);
            if pool == "poolvisor warm" {
                // Every connection opened at start (HikariCP's default): no caller waits
                // for the first connects, so no queue forms then.
                cfg = cfg.min_idle(size);
            }
            let sup = Supervisor::builder()
                .pool("noop", Noop, cfg)
                .start()
                .await
                .unwrap();
            let h = sup.pool::<Noop>("noop").unwrap();
            let o = measure(Poolvisor(h), tasks, settings).await;
            sup.shutdown().await.unwrap();
            o
        }
        "bb8" | "bb8 no test" => {
            let p = bb8::Pool::builder()
                .max_size(size as u32)
                .test_on_check_out(pool == "bb8")
                .build(Noop)
                .await
                .unwrap();
            measure(Bb8(p), tasks, settings).await
        }
        "deadpool" => {
            let p = deadpool::managed::Pool::builder(Noop)
                .max_size(size)
                .build()
                .unwrap();
            measure(Deadpool(p), tasks, settings).await
        }
        _ => unreachable!(),
    }
}

fn main() {
    let settings = Settings::from_args();
    let cases = [(1usize, 8usize), (64, 8), (512, 16)];
    let mut results: Vec<Vec<Vec<Outcome>>> = vec![vec![Vec::new(); POOLS.len()]; cases.len()];
    for pass in 0..settings.passes {
        for (c, &(tasks, size)) in cases.iter().enumerate() {
            // Each pass starts at a different pool (as `harness::run_grid` does).
            for i in 0..POOLS.len() {
                let p = (i + pass) % POOLS.len();
                let pool = POOLS[p];
                if !settings.wants(pool, tasks) {
                    continue;
                }
                // A fresh runtime per measurement: no state carried between pools.
                let o = runtime().block_on(one(pool, tasks, size, &settings));
                progress(pass, &format!("noop {tasks} / {size}"), pool, &o);
                results[c][p].push(o);
            }
        }
    }
    println!(
        "noop: {} pass(es), {:?} warm-up, {:?} measured per case, 2 workers\n",
        settings.passes, settings.warmup, settings.measure
    );
    header();
    let mut ratios = Vec::new();
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        for (p, pool) in POOLS.iter().enumerate() {
            if !results[c][p].is_empty() {
                row(
                    &format!("noop {tasks} / {size}"),
                    pool,
                    &median(results[c][p].clone()),
                );
            }
        }
        // The ratios need bb8 (default) and deadpool in the same passes.
        if results[c][1].is_empty() || results[c][3].is_empty() {
            continue;
        }
        for p in [0, 4] {
            if !results[c][p].is_empty() {
                ratios.push((
                    POOLS[p],
                    tasks,
                    size,
                    against_best_peer(&results[c], p),
                    median(results[c][p].clone()).jain,
                ));
            }
        }
    }
    println!(
        "\npoolvisor / better of bb8 default and deadpool, per pass: median (range) (target ≥ 1.2, Jain ≥ 0.99):"
    );
    for (pool, tasks, size, r, jain) in ratios {
        println!("- noop {tasks} / {size} {pool}: {r} (Jain {jain:.3})");
    }
}

/// Pool `p` over the better of bb8 (default) and deadpool, pass by pass.
fn against_best_peer(passes: &[Vec<Outcome>], p: usize) -> Ratio {
    Ratio::of(
        (0..passes[p].len())
            .map(|i| {
                let (pv, bb8, deadpool) = (&passes[p][i], &passes[1][i], &passes[3][i]);
                (
                    pv.ops_per_s / bb8.ops_per_s.max(deadpool.ops_per_s),
                    one_phase(&[pv, bb8, deadpool]),
                )
            })
            .collect(),
    )
}
