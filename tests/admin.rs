//! The admin endpoint over real HTTP: health, pools, Prometheus metrics, the token, and
//! requests it must refuse without falling over.

mod common;

use std::time::Duration;

use common::{get, http, post};
use poolvisor::admin::AdminServer;
use poolvisor::config::AdminSettings;
use poolvisor::prelude::*;
use poolvisor::PoolStatus;

async fn setup(token: Option<&str>) -> (Supervisor, AdminServer, u16) {
    let down = common::free_port().await;
    let pg = common::pg_url().replacen("://root@", "://root:ADMINSECRET@", 1);
    let sup = Supervisor::builder()
        .postgres("db", &pg, PoolConfig::default())
        .http(
            "api",
            &format!("http://u:ADMINSECRET@127.0.0.1:{down}"),
            PoolConfig::default(),
        )
        .start()
        .await
        .unwrap();
    let settings = AdminSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(String::from),
    };
    let admin = AdminServer::start(sup.clone(), &settings).await.unwrap();
    (sup, admin, down)
}

#[tokio::test]
async fn health_reports_pools_that_are_not_up() {
    let (sup, admin, _) = setup(None).await;
    let (status, body) = get(admin.addr(), "/health", None).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pools"]["api"], "down");
    assert!(v["pools"].get("db").is_none());
    assert_eq!(get(admin.addr(), "/health?pool=db", None).await.0, 200);
    assert_eq!(get(admin.addr(), "/health?pool=api", None).await.0, 503);
    assert_eq!(get(admin.addr(), "/health?pool=nope", None).await.0, 404);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn pools_and_metrics_show_the_state_without_secrets() {
    let (sup, admin, _) = setup(None).await;
    let db = sup.postgres("db").unwrap();
    for _ in 0..3 {
        db.checkout()
            .await
            .unwrap()
            .simple_query("SELECT 1")
            .await
            .unwrap();
    }
    let (status, pools) = get(admin.addr(), "/pools", None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(v["pools"][0]["name"], "db");
    assert_eq!(v["pools"][0]["checkouts"]["ok"], 3);
    let (status, metrics) = get(admin.addr(), "/metrics", None).await;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE poolvisor_connections gauge",
        "poolvisor_connections{pool=\"db\",backend=\"postgres\",state=\"idle\"} 1",
        "poolvisor_checkouts_total{pool=\"db\",outcome=\"ok\"} 3",
        "poolvisor_connects_total{pool=\"api\",outcome=\"failed\"}",
        "poolvisor_closes_total{pool=\"db\",reason=\"idle\"} 0",
        "poolvisor_pool_up{pool=\"db\"} 1",
        "poolvisor_pool_up{pool=\"api\"} 0",
        "poolvisor_budget_connections{state=\"max\"}",
        "# TYPE poolvisor_checkout_wait_seconds histogram",
        "poolvisor_checkout_wait_seconds_bucket{le=\"+Inf\",pool=\"db\"} 3",
        "poolvisor_checkout_wait_seconds_count{pool=\"db\"} 3",
        "# TYPE poolvisor_checkouts_total counter",
    ] {
        assert!(
            metrics.contains(needle),
            "missing {needle:?} in:\n{metrics}"
        );
    }
    assert!(!metrics.contains("# EOF"), "classic text by default");
    let (status, openmetrics) = http(
        admin.addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        openmetrics.contains("# TYPE poolvisor_checkouts counter"),
        "{openmetrics}"
    );
    assert!(openmetrics.trim_end().ends_with("# EOF"), "{openmetrics}");
    promtool_check_metrics(&metrics);
    for text in [&pools, &metrics, &openmetrics] {
        assert!(
            !text.contains("ADMINSECRET"),
            "a password in the admin output"
        );
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let (sup, admin, _) = setup(Some("s3cr3t-token")).await;
    assert_eq!(get(admin.addr(), "/metrics", None).await.0, 401);
    assert_eq!(get(admin.addr(), "/pools", Some("wrong")).await.0, 401);
    assert_eq!(
        get(admin.addr(), "/pools", Some("s3cr3t-token")).await.0,
        200
    );
    assert_eq!(get(admin.addr(), "/health?pool=db", None).await.0, 200);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_a_4xx_and_the_server_stays_up() {
    let (sup, admin, _) = setup(None).await;
    let addr = admin.addr();
    assert_eq!(get(addr, "/nope", None).await.0, 404);
    assert_eq!(
        http(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .await
        .0,
        405
    );
    let (status, _) = http(addr, "GARBAGE\r\n\r\n").await;
    assert!((400..500).contains(&status) || status == 0, "{status}");
    let (status, _) = http(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nonsense\r\n\r\n",
    )
    .await;
    assert!((400..500).contains(&status) || status == 0, "{status}");
    // Still serving.
    assert_eq!(get(addr, "/health?pool=db", None).await.0, 200);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_stream_until_the_supervisor_shuts_down() {
    let (sup, admin, _) = setup(None).await;
    let mut sse = common::Sse::open(admin.addr(), None).await;
    assert_eq!(post(admin.addr(), "/pools/db/pause", "", None).await.0, 200);
    assert!(
        sse.read_until("event: paused", Duration::from_secs(5))
            .await,
        "{}",
        sse.text
    );
    assert_eq!(
        post(admin.addr(), "/pools/db/resume", "", None).await.0,
        200
    );
    assert!(
        sse.read_until("event: resumed", Duration::from_secs(5))
            .await,
        "{}",
        sse.text
    );
    sup.shutdown().await.unwrap();
    assert!(
        sse.read_to_end(Duration::from_secs(5)).await,
        "the stream ends with the supervisor"
    );
    // Each event: an id, its kind, one line of JSON; in order, without gaps.
    let events: Vec<(u64, String, serde_json::Value)> = sse
        .text
        .split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((id?, kind?, data?))
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(&kinds[..2], ["paused", "resumed"], "{}", sse.text);
    assert!(kinds.contains(&"stopped"), "{kinds:?}");
    for pair in events.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "seq without gaps: {kinds:?}");
    }
    for (id, kind, data) in &events {
        assert_eq!(data["seq"], *id);
        assert_eq!(data["kind"]["type"], kind.as_str());
    }
    assert_eq!(events[0].2["pool"], "db");
}

#[tokio::test]
async fn control_routes_pause_resume_resize_and_drain_a_pool() {
    let token = Some("ops-token");
    let (sup, admin, _) = setup(token).await;
    let addr = admin.addr();
    let db = sup.postgres("db").unwrap();
    assert_eq!(post(addr, "/pools/db/pause", "", None).await.0, 401);

    let (status, body) = post(addr, "/pools/db/pause", "", token).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"pool":"db","state":"paused"}"#)
    );
    assert!(matches!(
        db.checkout().await.unwrap_err(),
        CheckoutError::Paused { .. }
    ));
    assert_eq!(post(addr, "/pools/db/resume", "", token).await.0, 200);
    db.checkout().await.unwrap();

    let (status, body) = post(addr, "/pools/db/resize", r#"{"max_size": 3}"#, token).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"pool": "db", "max_size": 3})
    );
    let (_, pools) = get(addr, "/pools", token).await;
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(pools["pools"][0]["max_size"], 3);

    let held = db.checkout().await.unwrap();
    let (status, body) = post(addr, "/pools/db/drain", r#"{"deadline": "200ms"}"#, token).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["still_lent"], 1, "{body}");
    assert!(matches!(
        db.checkout().await.unwrap_err(),
        CheckoutError::Draining { .. }
    ));
    drop(held);
    assert_eq!(post(addr, "/pools/db/resume", "", token).await.0, 200);
    db.checkout().await.unwrap();
    sup.shutdown().await.unwrap();
    // A shut-down supervisor answers, with 503.
    assert_eq!(post(addr, "/pools/db/pause", "", token).await.0, 503);
}

#[tokio::test]
async fn control_routes_refuse_bad_requests_with_a_4xx() {
    let (sup, admin, _) = setup(None).await;
    let addr = admin.addr();
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("GET", "/pools/db/pause", "", 405, "use POST"),
        ("POST", "/pools/nope/pause", "", 404, "no pool named `nope`"),
        ("POST", "/pools/db/explode", "", 404, "no such route"),
        ("POST", "/pools//pause", "", 404, "no pool named"),
        ("POST", "/events", "", 405, "use GET"),
        ("POST", "/pools/db/resize", "", 400, "max_size"),
        (
            "POST",
            "/pools/db/resize",
            "not json",
            400,
            "invalid JSON body",
        ),
        (
            "POST",
            "/pools/db/resize",
            r#"{"max": 3}"#,
            400,
            "unknown field `max`",
        ),
        (
            "POST",
            "/pools/db/resize",
            r#"{"max_size": -1}"#,
            400,
            "invalid value",
        ),
        (
            "POST",
            "/pools/db/resize",
            r#"{"max_size": 0}"#,
            422,
            "max_size",
        ),
        (
            "POST",
            "/pools/db/drain",
            r#"{"deadline": "soon"}"#,
            400,
            "soon",
        ),
        (
            "POST",
            "/pools/db/drain",
            r#"{"deadline": "1h"}"#,
            400,
            "at most 5m",
        ),
    ];
    for (method, path, body, want, message) in cases {
        let (status, text) = if method == "GET" {
            get(addr, path, None).await
        } else {
            post(addr, path, body, None).await
        };
        assert_eq!(status, want, "{method} {path} {body}: {text}");
        assert!(text.contains(message), "{method} {path} {body}: {text}");
    }
    let big = format!(r#"{{"max_size": 3, "pad": "{}"}}"#, "x".repeat(5000));
    assert_eq!(post(addr, "/pools/db/resize", &big, None).await.0, 413);
    // Nothing above changed the pool, and the server still serves.
    let (_, pools) = get(addr, "/pools", None).await;
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(
        pools["pools"][0]["max_size"],
        PoolConfig::default().max_size
    );
    assert_eq!(sup.status("db").unwrap(), PoolStatus::Up);
    sup.shutdown().await.unwrap();
}

/// `promtool check metrics` (from Debian's `prometheus` package, which
/// `scripts/services.sh` installs) must accept `text` without a complaint.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH: run scripts/services.sh (it installs Debian's `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `tcp` until the server closes it (true) or `within` passes (false).
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    // A reset also means closed.
    tokio::time::timeout(within, tcp.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// One request on a keep-alive connection, answered; the connection is left open.
async fn served_keep_alive(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "));
    tcp
}

/// A client that stalls before finishing its headers is cut off after
/// `HEADER_READ_TIMEOUT` (so is an idle keep-alive connection); dropping the server
/// closes what it still has open (a keep-alive connection, an `/events` stream) while
/// the supervisor keeps running.
#[tokio::test]
async fn stalled_clients_are_cut_off_and_dropping_the_server_closes_its_connections() {
    use poolvisor::admin::{CLOSE_GRACE, HEADER_READ_TIMEOUT};
    use tokio::io::AsyncWriteExt;

    let (sup, admin, _) = setup(None).await;
    let addr = admin.addr();
    let mut sse = common::Sse::open(addr, None).await;
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"GET /hea").await.unwrap();
    assert!(
        closed_within(&mut stalled, HEADER_READ_TIMEOUT + Duration::from_secs(3)).await,
        "a stalled client holds its connection"
    );

    let mut idle = served_keep_alive(addr).await;
    assert!(
        !closed_within(&mut idle, Duration::from_millis(200)).await,
        "keep-alive connections stay open while the server runs"
    );
    drop(admin);
    let within = CLOSE_GRACE + Duration::from_secs(2);
    assert!(
        closed_within(&mut idle, within).await,
        "keep-alive connection left open"
    );
    assert!(sse.read_to_end(within).await, "`/events` stream left open");
    assert_eq!(sup.status("db").unwrap(), PoolStatus::Up);
    sup.shutdown().await.unwrap();
}
