//! Prometheus exposition of a metrics snapshot, through prometheus-client: OpenMetrics
//! for scrapers that ask for it, the classic text format (0.0.4) for everyone else.

use poolvisor_actors::{MetricsSnapshot, PoolStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The OpenMetrics content type.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format's content type.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The snapshot in OpenMetrics text, as Prometheus scrapes it.
pub fn openmetrics_text(snapshot: &MetricsSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(snapshot.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

/// The snapshot in the classic Prometheus text format (what `curl`, `promtool check
/// metrics` and older scrapers read): OpenMetrics without `# UNIT` and `# EOF`, and with
/// counter families named by their `_total` samples.
pub fn prometheus_text(snapshot: &MetricsSnapshot) -> String {
    let open = openmetrics_text(snapshot);
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let family = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split(' ').next());
        match family {
            Some(name) if counters.contains(&name) => {
                let (head, tail) = line.split_at(7 + name.len());
                out.push_str(head);
                out.push_str("_total");
                out.push_str(tail);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct Snapshot(MetricsSnapshot);

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     unit: Option<&Unit>,
                     rows: Vec<(Labels, f64)>| {
            let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
            for (labels, v) in &rows {
                m.encode_family(labels)?.encode_gauge(v)?;
            }
            Ok::<_, std::fmt::Error>(())
        };
        let counter =
            |encoder: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, u64)>| {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (labels, v) in &rows {
                    m.encode_family(labels)?
                        .encode_counter::<Labels, u64, f64>(v, None)?;
                }
                Ok::<_, std::fmt::Error>(())
            };
        let mut connections = Vec::new();
        let mut checkouts = Vec::new();
        let mut connects = Vec::new();
        let mut closes = Vec::new();
        let mut waiters = Vec::new();
        let mut oldest = Vec::new();
        let mut up = Vec::new();
        for p in &s.pools {
            let pool = p.name.as_str();
            for (state, n) in [
                ("idle", p.idle),
                ("in_use", p.in_use),
                ("connecting", p.connecting),
                ("validating", p.validating),
            ] {
                connections.push((
                    vec![
                        ("pool", pool),
                        ("backend", p.backend.as_str()),
                        ("state", state),
                    ],
                    n as f64,
                ));
            }
            let c = &p.checkouts;
            for (outcome, n) in [
                ("ok", c.ok),
                ("timeout", c.timeout),
                ("exhausted", c.exhausted),
                ("unavailable", c.unavailable),
                ("refused", c.refused),
            ] {
                checkouts.push((vec![("pool", pool), ("outcome", outcome)], n));
            }
            connects.push((vec![("pool", pool), ("outcome", "ok")], p.connects_ok));
            connects.push((
                vec![("pool", pool), ("outcome", "failed")],
                p.connects_failed,
            ));
            for (reason, n) in &p.closes {
                closes.push((vec![("pool", pool), ("reason", reason.as_str())], *n));
            }
            waiters.push((vec![("pool", pool)], p.waiters as f64));
            oldest.push((vec![("pool", pool)], p.oldest_waiter.as_secs_f64()));
            up.push((
                vec![("pool", pool)],
                if p.status == PoolStatus::Up { 1.0 } else { 0.0 },
            ));
        }
        gauge(
            &mut encoder,
            "poolvisor_connections",
            "Connections by pool, backend and state.",
            None,
            connections,
        )?;
        counter(
            &mut encoder,
            "poolvisor_checkouts",
            "Checkouts by pool and outcome.",
            checkouts,
        )?;
        counter(
            &mut encoder,
            "poolvisor_connects",
            "Connect attempts by pool and outcome.",
            connects,
        )?;
        counter(
            &mut encoder,
            "poolvisor_closes",
            "Connections closed by pool and reason.",
            closes,
        )?;
        gauge(
            &mut encoder,
            "poolvisor_waiters",
            "Callers waiting for a connection.",
            None,
            waiters,
        )?;
        gauge(
            &mut encoder,
            "poolvisor_oldest_waiter",
            "How long the oldest waiter has waited.",
            Some(&Unit::Seconds),
            oldest,
        )?;
        gauge(
            &mut encoder,
            "poolvisor_pool_up",
            "1 when the pool is Up.",
            None,
            up,
        )?;
        gauge(
            &mut encoder,
            "poolvisor_budget_connections",
            "The global connection budget: permits in use and the maximum.",
            None,
            vec![
                (vec![("state", "in_use")], s.budget.in_use as f64),
                (vec![("state", "max")], s.budget.max_connections as f64),
            ],
        )?;
        let mut m = encoder.encode_descriptor(
            "poolvisor_checkout_wait",
            "Time from checkout call to connection.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &s.pools {
            let labels: Labels = vec![("pool", p.name.as_str())];
            m.encode_family(&labels)?.encode_histogram::<Labels>(
                p.wait.sum.as_secs_f64(),
                p.wait.count,
                &p.wait_buckets,
                None,
            )?;
        }
        Ok(())
    }
}
