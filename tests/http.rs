//! HTTP pools against a real hyper server started in the test: HTTP/1.1, HTTP/2 with
//! prior knowledge, HTTPS with a self-signed certificate and ALPN h2.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::saw_event;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolvisor::backends::{Http, HttpError, HttpVersion};
use poolvisor::prelude::*;
use poolvisor::CloseReason;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, RootCertStore};

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    H1,
    H2,
    Tls,
}

/// A hello-world server on an ephemeral loopback port that counts accepted sockets and
/// can close every open connection on command. `/ready` answers 200 while `healthy`,
/// else 503.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    close_all: watch::Sender<u64>,
    root: Option<CertificateDer<'static>>,
}

impl Server {
    async fn start(proto: Proto) -> Server {
        Self::start_on(proto, 0).await
    }

    async fn start_on(proto: Proto, port: u16) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (close_all, close_rx) = watch::channel(0u64);
        let (acceptor, root) = if proto == Proto::Tls {
            let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let cert = CertificateDer::from(key.cert.der().to_vec());
            let pkey =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], pkey)
                .unwrap();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
                Some(cert),
            )
        } else {
            (None, None)
        };
        let (counter, health) = (accepted.clone(), healthy.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut close = close_rx.clone();
                close.borrow_and_update(); // only closes after this point count

                let acceptor = acceptor.clone();
                let health = health.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let healthy = health.load(Ordering::SeqCst);
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from("hello")));
                            match req.uri().path() {
                                "/slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                                "/ready" if !healthy => {
                                    *response.status_mut() = 503.try_into().unwrap()
                                }
                                _ => {}
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let serve = async move {
                        match (proto, acceptor) {
                            (Proto::H1, _) => {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tcp), svc)
                                    .await;
                            }
                            (Proto::H2, _) => {
                                let _ =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(TokioIo::new(tcp), svc)
                                        .await;
                            }
                            (Proto::Tls, Some(acceptor)) => {
                                let Ok(tls) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                let io = TokioIo::new(tls);
                                if h2 {
                                    let _ = hyper::server::conn::http2::Builder::new(
                                        TokioExecutor::new(),
                                    )
                                    .serve_connection(io, svc)
                                    .await;
                                } else {
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(io, svc)
                                        .await;
                                }
                            }
                            (Proto::Tls, None) => unreachable!(),
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = close.changed() => {} // drop the socket
                    }
                });
            }
        });
        Server {
            port,
            accepted,
            healthy,
            close_all,
            root,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn close_all(&self) {
        self.close_all.send_modify(|n| *n += 1);
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

async fn start(manager: Http, cfg: PoolConfig) -> (Supervisor, PoolHandle<Http>) {
    let sup = Supervisor::builder()
        .graceful_pool("api", "http", manager, cfg)
        .start()
        .await
        .unwrap();
    let pool = sup.http("api").unwrap();
    (sup, pool)
}

#[tokio::test]
async fn http1_get_reuses_one_socket() {
    let server = Server::start(Proto::H1).await;
    let (sup, pool) = start(Http::new(&server.url()).unwrap(), PoolConfig::default()).await;
    for _ in 0..20 {
        let resp = pool
            .request(get("/"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body().as_ref(), b"hello");
    }
    assert!(!pool.checkout().await.unwrap().is_http2());
    assert_eq!(server.accepted(), 1, "20 requests over one connection");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_never_handed_out() {
    let server = Server::start(Proto::H1).await;
    let (sup, pool) = start(
        Http::new(&server.url()).unwrap(),
        PoolConfig::default().max_size(2),
    )
    .await;
    let held = vec![
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    drop(held);
    assert_eq!(server.accepted(), 2);
    server.close_all();
    // Right away (inside the validation threshold) and after it.
    for wait in [Duration::from_millis(50), Duration::from_millis(600)] {
        tokio::time::sleep(wait).await;
        for _ in 0..2 {
            let resp = pool.request(get("/"), Duration::from_secs(5)).await;
            assert_eq!(
                resp.expect("a dead connection was handed out").status(),
                200
            );
        }
    }
    let snap = pool.snapshot();
    let replaced: u64 = snap
        .closes
        .iter()
        .filter(|(r, _)| matches!(r, CloseReason::Broken | CloseReason::Validation))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(replaced, 2, "{snap:?}");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_prior_knowledge_multiplexes_on_one_socket() {
    let server = Server::start(Proto::H2).await;
    let manager = Http::new(&server.url())
        .unwrap()
        .version(HttpVersion::Http2)
        .unwrap();
    let (sup, pool) = start(manager, PoolConfig::default().max_size(1)).await;
    assert!(pool.checkout().await.unwrap().is_http2());
    for _ in 0..10 {
        assert_eq!(
            pool.request(get("/x"), Duration::from_secs(5))
                .await
                .unwrap()
                .body()
                .as_ref(),
            b"hello"
        );
    }
    assert_eq!(server.accepted(), 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_checkouts_run_side_by_side_on_one_http2_connection() {
    let server = Server::start(Proto::H2).await;
    let manager = Http::new(&server.url())
        .unwrap()
        .version(HttpVersion::Http2)
        .unwrap();
    let (sup, pool) = start(manager, PoolConfig::default().max_size(1).max_shares(8)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = pool.checkout_shared().await.unwrap();
                // All eight hold the one connection now (bounded: a caller left out
                // fails the test instead of hanging it).
                tokio::time::timeout(Duration::from_secs(10), barrier.wait())
                    .await
                    .expect("all eight got a place");
                let resp = conn.send_shared(get("/x")).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.as_ref(), b"hello");
                conn.id()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(server.accepted(), 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_http1_connection_refuses_to_be_shared() {
    let server = Server::start(Proto::H1).await;
    let manager = Http::new(&format!("http://u:pw@127.0.0.1:{}", server.port)).unwrap();
    let (sup, pool) = start(manager, PoolConfig::default()).await;
    let conn = pool.checkout_shared().await.unwrap();
    let err = conn.send_shared(get("/x")).await.unwrap_err();
    assert!(matches!(err, HttpError::NotMultiplexed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "http://127.0.0.1:{}: an HTTP/1.1 connection cannot be shared; use checkout()",
            server.port
        )
    );
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_with_a_trusted_self_signed_certificate_negotiates_h2() {
    let server = Server::start(Proto::Tls).await;
    let mut roots = RootCertStore::empty();
    roots.add(server.root.clone().unwrap()).unwrap();
    let manager = Http::new(&format!("https://localhost:{}", server.port))
        .unwrap()
        .root_certificates(roots)
        .unwrap();
    let (sup, pool) = start(manager, PoolConfig::default()).await;
    assert!(pool.checkout().await.unwrap().is_http2(), "ALPN chose h2");
    let resp = pool
        .request(get("/"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.body().as_ref(), b"hello");
    sup.shutdown().await.unwrap();

    // Without trusting the certificate, the pool is Down with a certificate error.
    let untrusted = Http::new(&format!("https://localhost:{}", server.port)).unwrap();
    let (sup, pool) = start(untrusted, PoolConfig::default()).await;
    let err = pool.checkout().await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_past_its_timeout_fails_and_its_connection_is_not_reused() {
    let server = Server::start(Proto::H1).await;
    let (sup, pool) = start(Http::new(&server.url()).unwrap(), PoolConfig::default()).await;
    let started = std::time::Instant::now();
    let err = pool
        .request(get("/slow"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The next request works, on a fresh connection.
    let resp = pool
        .request(get("/"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.accepted(), 2);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_upstream_is_down_with_the_address_and_comes_back() {
    let port = common::free_port().await;
    let sup = Supervisor::builder()
        .http(
            "api",
            &format!("http://127.0.0.1:{port}"),
            PoolConfig::default(),
        )
        .start()
        .await
        .unwrap();
    let pool = sup.http("api").unwrap();
    let mut events = sup.subscribe();
    assert_eq!(pool.status(), poolvisor::PoolStatus::Down);
    let err = pool
        .request(get("/"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // A server appears on that port.
    let server = Server::start_on(Proto::H1, port).await;
    assert!(
        saw_event(&mut events, "recovered", Duration::from_secs(10)).await,
        "no recovered event"
    );
    assert_eq!(
        pool.request(get("/"), Duration::from_secs(5))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(server.accepted() >= 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_urls_name_the_pool_and_hide_the_password() {
    for (kind, url) in [
        ("http", "ftp://user:hunter2@127.0.0.1/"),
        ("http", "http://user:hunter2@/nohost"),
        ("redis", "redis://:hunter2@127.0.0.1:notaport"),
        ("postgres", "mysql://user:hunter2@127.0.0.1/db"),
    ] {
        let builder = Supervisor::builder();
        let builder = match kind {
            "http" => builder.http("p", url, PoolConfig::default()),
            "redis" => builder.redis("p", url, PoolConfig::default()),
            _ => builder.postgres("p", url, PoolConfig::default()),
        };
        let err = builder.start().await.unwrap_err();
        let text = format!("{err} / {err:?}");
        assert!(text.contains("pool `p`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// With a health path, an upstream that accepts connections but answers 503 keeps the
/// pool Down with that answer as the cause (the path's query, which may hold a key, left
/// out); once it answers 200 the pool comes Up.
#[tokio::test]
async fn an_upstream_failing_its_health_path_is_down_until_it_answers() {
    let server = Server::start(Proto::H1).await;
    server.healthy.store(false, Ordering::SeqCst);
    let manager = Http::new(&server.url())
        .unwrap()
        .health_path("/ready?key=hunter2")
        .unwrap();
    assert!(!format!("{manager:?}").contains("hunter2"));
    let (sup, pool) = start(manager, PoolConfig::default()).await;
    let mut events = sup.subscribe();
    assert_eq!(pool.status(), poolvisor::PoolStatus::Down);
    let err = pool
        .request(get("/"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("GET /ready: answered 503"),
        "{err}"
    );
    let snap = format!("{:?}", sup.metrics().await.unwrap());
    assert!(!snap.contains("hunter2") && !err.to_string().contains("hunter2"));
    server.healthy.store(true, Ordering::SeqCst);
    assert!(
        saw_event(&mut events, "recovered", Duration::from_secs(10)).await,
        "no recovered event"
    );
    let response = pool
        .request(get("/"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sup.shutdown().await.unwrap();
}

/// Validation asks the health path too: an idle connection to an upstream that has
/// turned unhealthy is closed, not lent.
#[tokio::test]
async fn validation_asks_the_health_path_and_closes_connections_that_fail_it() {
    let server = Server::start(Proto::H1).await;
    let manager = Http::new(&server.url())
        .unwrap()
        .health_path("/ready")
        .unwrap();
    let cfg = PoolConfig::default()
        .validation(Validation::Always)
        .checkout_timeout(Duration::from_millis(500));
    let (sup, pool) = start(manager, cfg).await;
    let response = pool
        .request(get("/"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.healthy.store(false, Ordering::SeqCst);
    assert!(
        pool.checkout().await.is_err(),
        "lent a connection that failed validation"
    );
    let snap = pool.snapshot();
    assert!(
        snap.closes.contains(&(CloseReason::Validation, 1)),
        "{snap:?}"
    );
    sup.shutdown().await.unwrap();
}
