//! The configuration file: a full document, environment overrides, at least 30 invalid
//! documents each with its message, and random documents that must never panic.

mod common;

use std::time::Duration;

use poolvisor::backends::SupervisorBackends;
use poolvisor::config::{BackendKind, Config, FromConfig};
use poolvisor::{PoolStatus, SharePolicy, Supervisor, Validation};
use proptest::prelude::*;

const FULL: &str = r#"
[supervisor]
max_connections = 12
heartbeat_interval = "500ms"
heartbeat_timeout = "3s"
max_restarts = 3
restart_window = "30s"
fail_fast = false

[admin]
listen = "127.0.0.1:9555"
token = "t0ken-secret"

[pools.db]
kind = "postgres"
url = "postgres://app:pw-in-url@127.0.0.1:5432/test"
max_size = 6
min_idle = 1
checkout_timeout = "2s"
connect_timeout = "1s"
idle_timeout = "off"
max_lifetime = "10m"
validation = { if_idle_for = "250ms" }
health_check_interval = "15s"
leak_threshold = "30s"
reserve = 2
max_waiters = 100
down_after_failures = 2

[pools.cache]
kind = "redis"
url = "redis://127.0.0.1:6379"
validation = "always"
max_shares = 32
share_policy = "spread"

[pools.loki]
kind = "http"
url = "https://loki.internal:3100"
health_path = "/ready"
"#;

#[test]
fn a_full_document_reads_every_field() {
    let c = Config::from_toml(FULL).unwrap();
    assert_eq!(c.supervisor.max_connections, Some(12));
    assert_eq!(c.supervisor.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(c.admin.listen.port(), 9555);
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cache", "db", "loki"]);
    let db = &c.pools[1];
    assert_eq!(db.kind, BackendKind::Postgres);
    assert_eq!(
        (
            db.settings.max_size,
            db.settings.min_idle,
            db.settings.reserve
        ),
        (6, 1, 2)
    );
    assert_eq!(db.settings.idle_timeout, None);
    assert_eq!(db.settings.max_lifetime, Some(Duration::from_secs(600)));
    assert_eq!(
        db.settings.validation,
        Validation::IfIdleFor(Duration::from_millis(250))
    );
    assert_eq!(c.pools[0].settings.validation, Validation::Always);
    assert_eq!(
        (
            c.pools[0].settings.max_shares,
            c.pools[0].settings.share_policy
        ),
        (32, Some(SharePolicy::Spread))
    );
    assert_eq!(db.settings.share_policy, None, "the backend's choice");
    assert_eq!(c.pools[2].health_path.as_deref(), Some("/ready"));
    assert_eq!(db.health_path, None);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("pw-in-url") && !shown.contains("t0ken-secret"),
        "{shown}"
    );
}

#[test]
fn environment_overrides_any_key() {
    // Only this test sets these variables; the keys are this test's own pools.
    std::env::set_var("POOLVISOR_POOLS__ENVPOOL__MAX_SIZE", "30");
    std::env::set_var("POOLVISOR_POOLS__ENVPOOL__CHECKOUT_TIMEOUT", "750ms");
    std::env::set_var("POOLVISOR_SUPERVISOR__MAX_CONNECTIONS", "77");
    std::env::set_var("POOLVISOR_POOLS__ENVPOOL__SHARE_POLICY", "spread");
    let doc = "[pools.envpool]\nkind = \"http\"\nurl = \"http://127.0.0.1:1\"\nmax_size = 3\n";
    let c = Config::from_toml_with_env(doc).unwrap();
    std::env::remove_var("POOLVISOR_POOLS__ENVPOOL__MAX_SIZE");
    std::env::remove_var("POOLVISOR_POOLS__ENVPOOL__CHECKOUT_TIMEOUT");
    std::env::remove_var("POOLVISOR_SUPERVISOR__MAX_CONNECTIONS");
    std::env::remove_var("POOLVISOR_POOLS__ENVPOOL__SHARE_POLICY");
    assert_eq!(c.pools[0].settings.max_size, 30);
    assert_eq!(c.pools[0].settings.share_policy, Some(SharePolicy::Spread));
    assert_eq!(
        c.pools[0].settings.checkout_timeout,
        Duration::from_millis(750)
    );
    assert_eq!(c.supervisor.max_connections, Some(77));
}

#[test]
fn invalid_documents_name_the_key_and_the_value() {
    // A valid certificate, for a `ca_file` given where no TLS is asked for.
    let pem = std::env::temp_dir().join(format!("pv_config_ca_{}.pem", std::process::id()));
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&pem, key.cert.pem()).unwrap();
    let pool = |extra: &str| {
        format!("[pools.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@127.0.0.1/x\"\n{extra}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        ("[pool.db]\n".into(), "unknown field: found `pool`"),
        ("[supervisor]\nmax_conections = 3\n".into(), "max_conections"),
        ("[supervisor]\nmax_connections = 0\n".into(), "supervisor.max_connections: 0"),
        ("[supervisor]\nmax_connections = -1\n".into(), "supervisor.max_connections"),
        ("[supervisor]\nheartbeat_interval = \"0s\"\n".into(), "supervisor.heartbeat_interval"),
        ("[supervisor]\nheartbeat_interval = \"soon\"\n".into(), "invalid duration \"soon\""),
        ("[supervisor]\nheartbeat_interval = \"2s\"\nheartbeat_timeout = \"1s\"\n".into(), "supervisor.heartbeat_timeout: 1s is shorter"),
        ("[supervisor]\nrestart_window = \"0ms\"\n".into(), "supervisor.restart_window"),
        ("[supervisor]\nfail_fast = \"yes\"\n".into(), "supervisor.fail_fast"),
        ("[admin]\nlisten = \"not an address\"\n".into(), "admin.listen"),
        ("[admin]\nport = 9000\n".into(), "unknown field: found `port`"),
        ("[pools.db]\nurl = \"postgres://127.0.0.1/x\"\n".into(), "pools.db.kind: missing"),
        ("[pools.db]\nkind = \"mysql\"\nurl = \"x\"\n".into(), "pools.db.kind"),
        ("[pools.db]\nkind = \"postgres\"\n".into(), "pools.db.url: missing"),
        ("[pools.db]\nkind = \"postgres\"\nurl = 5\n".into(), "pools.db.url: expected a string"),
        (pool("max_size = 0"), "pools.db.max_size: must be at least 1"),
        (pool("max_size = -3"), "pools.db.max_size"),
        (pool("max_size = \"ten\""), "pools.db.max_size"),
        (pool("max_size = 2\nmin_idle = 3"), "pools.db.min_idle: 3 is larger than max_size 2"),
        (pool("max_size = 2\nreserve = 3"), "pools.db.reserve: 3 is larger than max_size 2"),
        (pool("max_waiters = 0"), "pools.db.max_waiters"),
        (pool("down_after_failures = 0"), "pools.db.down_after_failures"),
        (pool("checkout_timeout = \"0s\""), "pools.db.checkout_timeout"),
        (pool("checkout_timeout = \"5 parsecs\""), "invalid duration \"5 parsecs\""),
        (pool("connect_timeout = 5"), "pools.db.connect_timeout"),
        (pool("idle_timeout = \"0s\""), "pools.db.idle_timeout"),
        (pool("leak_threshold = \"never\""), "invalid duration \"never\""),
        (pool("validation = \"sometimes\""), "pools.db.validation"),
        (pool("share_policy = \"fill\""), "pools.db.share_policy"),
        (pool("validation = { if_idle_for = \"0s\" }"), "pools.db.validation"),
        (pool("max_sise = 4"), "unknown field: found `max_sise`"),
        (pool("reserve = 9\nmax_size = 10\n[supervisor]\nmax_connections = 5"), "supervisor.max_connections: 5: the pools' reserves add up to 9"),
        (pool("min_idle = 6\nreserve = 2\n[supervisor]\nmax_connections = 5"), "supervisor.max_connections: 5: the pools' min_idle (or reserve, where larger) add up to 6"),
        ("[pools.db]\nkind = \"postgres\"\nurl = \"mysql://u:hunter2@h/x\"\n".into(), "pools.db.url: invalid postgres URL"),
        ("[pools.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h:port/x\"\n".into(), "pools.db.url"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://:hunter2@h:notaport\"\n".into(), "pools.c.url: invalid redis URL"),
        ("[pools.h]\nkind = \"http\"\nurl = \"ftp://h\"\n".into(), "pools.h.url: invalid http URL"),
        (pool("response_timeout = \"1s\""), "pools.db.response_timeout: only for kind = \"redis\""),
        (pool("ca_file = 5"), "pools.db.ca_file: expected a path"),
        (pool("init_sql = \"SET x = 1\""), "pools.db.init_sql: expected a list of SQL statements"),
        (pool("init_sql = [5]"), "pools.db.init_sql: expected a statement"),
        (pool("init_sql = [\"SET x = 1\", \" \"]"), "pools.db.init_sql: an empty statement"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://h\"\ninit_sql = [\"SET x\"]\n".into(), "pools.c.init_sql: only for kind = \"postgres\""),
        (pool("ca_file = \"/nonexistent/ca.pem\""), "pools.db.ca_file: /nonexistent/ca.pem: "),
        (pool(&format!("ca_file = \"{}/Cargo.toml\"", env!("CARGO_MANIFEST_DIR"))), "Cargo.toml: no PEM certificate in it"),
        (pool(&format!("ca_file = \"{}\"", pem.display())), "pools.db.ca_file: 127.0.0.1:5432/x: root certificates need sslmode=require"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://h\"\n".to_string() + &format!("ca_file = \"{}\"\n", pem.display()), "root certificates need a rediss:// URL"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://h\"\nresponse_timeout = \"0s\"\n".into(), "pools.c.response_timeout: 0s: must be greater than zero"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://h\"\nresponse_timeout = 5\n".into(), "pools.c.response_timeout: expected a duration"),
        ("[pools.c]\nkind = \"redis\"\nurl = \"redis://h\"\nresponse_timeout = \"soon\"\n".into(), "pools.c.response_timeout: invalid duration \"soon\""),
        (pool("health_path = \"/ready\""), "pools.db.health_path: only for kind = \"http\""),
        ("[pools.h]\nkind = \"http\"\nurl = \"http://h\"\nhealth_path = 5\n".into(), "pools.h.health_path: expected a path such as \"/ready\""),
        ("[pools.h]\nkind = \"http\"\nurl = \"http://h\"\nhealth_path = \"ready?key=hunter2\"\n".into(), "pools.h.health_path: invalid http URL `ready`: a health path starts with /"),
        ("[pools.\"bad name!\"]\nkind = \"http\"\nurl = \"http://h\"\n".into(), "pools.bad name!: pool names"),
        ("[pools.db]\nkind = \"postgres\"\nurl = \"postgres://h/x\"\n[pools.db]\nkind = \"redis\"\n".into(), "duplicate"),
        ("not toml at all = = =".into(), ""),
    ];
    assert!(cases.len() >= 30);
    for (doc, expected) in &cases {
        let err = match Config::from_toml(doc) {
            Ok(c) => panic!("accepted:\n{doc}\nas {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(expected),
            "document:\n{doc}\nerror: {err}\nexpected: {expected}"
        );
        assert!(!err.contains("hunter2"), "password in: {err}");
    }
    let _ = std::fs::remove_file(&pem);
}

#[tokio::test]
async fn from_config_starts_every_pool() {
    let doc = format!(
        "[supervisor]\nmax_connections = 4\n[pools.db]\nkind = \"postgres\"\nurl = \"{}\"\n[pools.api]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}\"\n",
        common::pg_url(),
        common::free_port().await
    );
    let config = Config::from_toml(&doc).unwrap();
    let sup = Supervisor::from_config(&config).await.unwrap();
    assert_eq!(sup.pool_names(), ["api", "db"]);
    assert_eq!(sup.status("db").unwrap(), PoolStatus::Up);
    assert_eq!(sup.status("api").unwrap(), PoolStatus::Down);
    assert_eq!(sup.budget().max_connections, 4);
    sup.shutdown().await.unwrap();
}

/// `init_sql` runs on every new connection of a PostgreSQL pool from a config file.
#[tokio::test]
async fn a_postgres_pools_init_sql_runs_on_every_new_connection() {
    let doc = format!(
        "[pools.db]\nkind = \"postgres\"\nurl = \"{}\"\nmax_size = 2\ninit_sql = [\"SET search_path TO pv_init, public\", \"SET lock_timeout = '2s'\"]\n",
        common::pg_url(),
    );
    let config = Config::from_toml(&doc).unwrap();
    assert_eq!(config.pools[0].init_sql.len(), 2);
    let sup = Supervisor::from_config(&config).await.unwrap();
    let pool = sup.postgres("db").unwrap();
    let (a, b) = (
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    );
    for conn in [&a, &b] {
        assert_eq!(
            common::pg_settings(conn, &["search_path", "lock_timeout"]).await,
            ["pv_init, public", "2s"]
        );
    }
    drop((a, b));
    sup.shutdown().await.unwrap();
}

fn fragment() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "max_size",
        "min_idle",
        "reserve",
        "kind",
        "url",
        "checkout_timeout",
        "validation",
        "max_connections",
        "listen",
        "idle_timeout",
        "init_sql",
    ])
    .prop_map(String::from);
    let keys = prop_oneof![known, "[a-z_]{1,8}"];
    let values = prop_oneof![
        Just("\"postgres\"".to_string()),
        Just("\"redis\"".to_string()),
        Just("\"http\"".to_string()),
        Just("\"2s\"".to_string()),
        Just("\"off\"".to_string()),
        Just("{ if_idle_for = \"1s\" }".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\"[ -~]{0,24}\"".prop_map(|s| s.replace('\\', "")),
        Just("true".to_string()),
        Just("[1, 2]".to_string()),
    ];
    let tables = prop_oneof![
        Just("[supervisor]".to_string()),
        Just("[admin]".to_string()),
        "[a-z]{1,5}".prop_map(|n| format!("[pools.{n}]")),
        Just("[pools]".to_string()),
        "[ -~]{0,12}".prop_map(|s| s),
    ];
    prop_oneof![
        3 => (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => tables,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_documents_never_panic(lines in proptest::collection::vec(fragment(), 0..24)) {
        let doc = lines.join("\n");
        let _ = Config::from_toml(&doc);
    }
}

#[tokio::test]
async fn a_redis_pools_response_timeout_reaches_its_connections() {
    use poolvisor::backends::SupervisorBackends;
    let doc = format!(
        "[pools.cache]\nkind = \"redis\"\nurl = \"{}\"\nresponse_timeout = \"3s\"\n",
        common::redis_url()
    );
    let config = Config::from_toml(&doc).unwrap();
    assert_eq!(
        config.pools[0].response_timeout,
        Some(Duration::from_secs(3))
    );
    let sup = Supervisor::from_config(&config).await.unwrap();
    let pool = sup.redis("cache").unwrap();
    let mut conn = pool.checkout().await.unwrap();
    // Longer than redis-rs's default 500 ms: only the configured timeout lets it finish.
    let reply: redis::Value = redis::cmd("BLPOP")
        .arg(common::unique_name("pv_config_blpop"))
        .arg(1)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(reply, redis::Value::Nil);
    drop(conn);
    sup.shutdown().await.unwrap();
}
