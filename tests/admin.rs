//! The admin endpoint over real HTTP: health, pools, Prometheus metrics, the token, and
//! requests it must refuse without falling over.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use poolvisor::admin::AdminServer;
use poolvisor::config::AdminSettings;
use poolvisor::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw HTTP/1.1 exchange; returns (status, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await
}

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
        "# EOF",
    ] {
        assert!(
            metrics.contains(needle),
            "missing {needle:?} in:\n{metrics}"
        );
    }
    for text in [&pools, &metrics] {
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
