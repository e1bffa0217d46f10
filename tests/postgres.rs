//! PostgreSQL pools against a real server (`POOLVISOR_PG_URL`).

mod common;

use std::time::Duration;

use common::*;
use poolvisor::backends::{BackendError, PgConnection};
use poolvisor::prelude::*;
use poolvisor::{CloseReason, PoolStatus, StartError};

#[tokio::test]
async fn select_one_through_the_supervisor_reusing_one_server_connection() {
    let app = unique_name("pv_pg_reuse");
    let sup = Supervisor::builder()
        .postgres("db", &pg_url_named(&app), PoolConfig::default())
        .start()
        .await
        .unwrap();
    assert_eq!(sup.status("db").unwrap(), PoolStatus::Up);
    let db = sup.postgres("db").unwrap();
    for _ in 0..20 {
        let conn = db.checkout().await.unwrap();
        let rows = conn.simple_query("SELECT 1").await.unwrap();
        assert!(!rows.is_empty());
    }
    let admin = pg_admin().await;
    assert_eq!(
        pg_count(&admin, &app).await,
        1,
        "20 checkouts, one server connection"
    );
    sup.shutdown().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            pg_count(&admin, &app).await == 0
        })
        .await
    );
}

#[tokio::test]
async fn a_backend_terminated_while_idle_is_never_handed_out() {
    let app = unique_name("pv_pg_kill");
    let sup = Supervisor::builder()
        .postgres("db", &pg_url_named(&app), PoolConfig::default().max_size(3))
        .start()
        .await
        .unwrap();
    let db = sup.postgres("db").unwrap();
    let held = vec![
        db.checkout().await.unwrap(),
        db.checkout().await.unwrap(),
        db.checkout().await.unwrap(),
    ];
    drop(held);
    let admin = pg_admin().await;
    assert_eq!(pg_count(&admin, &app).await, 3);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 3);
    tokio::time::sleep(Duration::from_millis(600)).await; // idle past the 500 ms threshold
    for _ in 0..3 {
        let conn = db.checkout().await.unwrap();
        conn.simple_query("SELECT 1")
            .await
            .expect("a dead connection was handed out");
    }
    let snap = db.snapshot();
    let closed: u64 = snap
        .closes
        .iter()
        .filter(|(r, _)| matches!(r, CloseReason::Validation | CloseReason::Broken))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(closed, 3, "{snap:?}");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_down_fails_fast_and_comes_back() {
    let port = free_port().await;
    let url = format!("postgres://root@127.0.0.1:{port}/test");
    let sup = Supervisor::builder()
        .postgres(
            "db",
            &url,
            PoolConfig::default().connect_timeout(Duration::from_secs(2)),
        )
        .start()
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let db = sup.postgres("db").unwrap();
    assert_eq!(db.status(), PoolStatus::Down);
    let started = std::time::Instant::now();
    let err = db.checkout().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50), "fails fast");
    let CheckoutError::Unavailable { cause, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        cause.contains(&format!("127.0.0.1:{port}")),
        "cause names the address: {cause}"
    );
    // A server appears on the port.
    let target = pg_url()
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let fwd = forward(port, &target).await;
    assert!(
        saw_event(&mut events, "recovered", Duration::from_secs(10)).await,
        "no recovered event"
    );
    db.checkout()
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    sup.shutdown().await.unwrap();
    fwd.abort();
}

#[tokio::test]
async fn a_bad_url_is_an_error_naming_the_pool_without_the_password() {
    let err = Supervisor::builder()
        .postgres(
            "db",
            "postgres://app:hunter2@127.0.0.1:notaport/x",
            PoolConfig::default(),
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::InvalidBackend { pool, .. } if pool == "db"),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("pool `db`") && text.contains("app:***@"),
        "{text}"
    );
}

#[tokio::test]
async fn bb8_postgres_manager_plugs_in_unchanged() {
    use poolvisor::drivers::bb8_postgres::PostgresConnectionManager;
    let app = unique_name("pv_pg_bb8");
    let config = pg_url_named(&app).parse().unwrap();
    let manager = PostgresConnectionManager::new(config, tokio_postgres::NoTls);
    let sup = Supervisor::builder()
        .pool_with_backend("db", "postgres", manager, PoolConfig::default())
        .start()
        .await
        .unwrap();
    let db = sup
        .pool::<PostgresConnectionManager<tokio_postgres::NoTls>>("db")
        .unwrap();
    let rows = db
        .checkout()
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    assert_eq!(pg_count(&pg_admin().await, &app).await, 1);
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_checkouts_pipeline_concurrent_callers_on_few_server_connections() {
    let app = unique_name("pv_pg_shared");
    let sup = Supervisor::builder()
        .postgres(
            "db",
            &pg_url_named(&app),
            PoolConfig::default().max_size(2).max_shares(8),
        )
        .start()
        .await
        .unwrap();
    let db = sup.postgres("db").unwrap();
    // 16 callers hold a place at the same moment, then each runs its queries.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (db, barrier) = (db.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = db.checkout_shared().await.unwrap();
                // Bounded: a caller left out fails the test instead of hanging it.
                tokio::time::timeout(std::time::Duration::from_secs(10), barrier.wait())
                    .await
                    .expect("all 16 got a place");
                let mut pids = Vec::new();
                for _ in 0..10 {
                    let row = conn
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .unwrap();
                    pids.push(row.get::<_, i32>(0));
                }
                (conn.id(), pids)
            })
        })
        .collect();
    let mut conns = std::collections::HashMap::<u64, std::collections::HashSet<i32>>::new();
    for t in tasks {
        let (id, pids) = t.await.unwrap();
        conns.entry(id).or_default().extend(pids);
    }
    assert_eq!(conns.len(), 2, "16 callers on 2 connections: {conns:?}");
    for pids in conns.values() {
        assert_eq!(
            pids.len(),
            1,
            "each pooled connection is one server backend"
        );
    }
    let admin = pg_admin().await;
    assert_eq!(pg_count(&admin, &app).await, 2);
    let snap = db.snapshot();
    assert_eq!((snap.in_use, snap.sharing, snap.checkouts.ok), (0, 0, 16));
    sup.shutdown().await.unwrap();
}

/// `SELECT 1` through one checkout of `pool`.
async fn select_one(pool: &PoolHandle<poolvisor::backends::Postgres>) {
    let rows = pool
        .checkout()
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    assert!(!rows.is_empty());
}

/// A TLS front for the real server on a port of its own: it answers a client's
/// `SSLRequest` with `S`, takes the TLS handshake as `localhost` (a self-signed
/// certificate, returned), and pipes what it decrypts to PostgreSQL in plain. Counts the
/// handshakes it completed; stops when dropped.
struct TlsFront {
    port: u16,
    cert_der: Vec<u8>,
    cert_pem: String,
    handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL for the server behind `front`, with `sslmode=require`.
fn tls_url(front: &TlsFront, app: &str) -> String {
    let url = pg_url();
    let (user, rest) = url.split_once('@').unwrap();
    let db = rest.split_once('/').unwrap().1;
    let sep = if db.contains('?') { '&' } else { '?' };
    format!(
        "{user}@localhost:{}/{db}{sep}sslmode=require&application_name={app}",
        front.port
    )
}

async fn tls_front() -> TlsFront {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types};
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = pki_types::CertificateDer::from(key.cert.der().to_vec());
    let pkey = pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], pkey)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 8]; // length 8, code 80877103
                if tcp.read_exact(&mut request).await.is_err()
                    || request != [0, 0, 0, 8, 4, 210, 22, 47]
                {
                    return;
                }
                tcp.write_all(b"S").await.unwrap();
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut server = tokio::net::TcpStream::connect(pg_addr()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    TlsFront {
        port,
        cert_der: cert.to_vec(),
        cert_pem: key.cert.pem(),
        handshakes,
        task,
    }
}

#[tokio::test]
async fn sslmode_require_speaks_tls_and_checks_the_servers_certificate() {
    use std::sync::atomic::Ordering;
    use tokio_rustls::rustls::{pki_types::CertificateDer, RootCertStore};
    let front = tls_front().await;
    let port = front.port;
    let app = unique_name("pv_pg_tls");
    let url = tls_url(&front, &app);

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(front.cert_der.clone()))
        .unwrap();
    let trusted = poolvisor::backends::Postgres::from_url(&url)
        .unwrap()
        .root_certificates(roots)
        .unwrap();
    let sup = Supervisor::builder()
        .graceful_pool("db", "postgres", trusted, PoolConfig::default().max_size(2))
        .start()
        .await
        .unwrap();
    select_one(&sup.postgres("db").unwrap()).await;
    assert_eq!(front.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(pg_count(&pg_admin().await, &app).await, 1);
    // Closing over TLS still waits for the server to let go.
    sup.shutdown().await.unwrap();
    assert_eq!(pg_count(&pg_admin().await, &app).await, 0);

    // With the system's roots, the self-signed certificate is refused, clearly.
    let untrusted = Supervisor::builder()
        .postgres("db", &url, PoolConfig::default().down_after_failures(1))
        .start()
        .await
        .unwrap();
    let err = untrusted
        .postgres("db")
        .unwrap()
        .checkout()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("localhost:{port}")), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    untrusted.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_config_files_ca_file_is_trusted_for_sslmode_require() {
    use poolvisor::config::{Config, FromConfig};
    let front = tls_front().await;
    let app = unique_name("pv_pg_ca_file");
    let dir = std::env::temp_dir().join(unique_name("pv_pg_ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &front.cert_pem).unwrap();
    let doc = format!(
        "[pools.db]\nkind = \"postgres\"\nurl = \"{}\"\nca_file = \"{}\"\n",
        tls_url(&front, &app),
        ca.display()
    );
    let config = Config::from_toml(&doc).unwrap();
    let sup = Supervisor::from_config(&config).await.unwrap();
    select_one(&sup.postgres("db").unwrap()).await;
    assert_eq!(pg_count(&pg_admin().await, &app).await, 1);
    sup.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// SCRAM with channel binding (`SCRAM-SHA-256-PLUS`) against the server itself, over its
/// own TLS: `channel_binding=require` refuses to log in without it, and the server checks
/// the hash of its certificate that the client binds into the exchange
/// (tls-server-end-point), so a login proves the hash right. `scripts/services.sh` gives
/// the server a certificate for `localhost` and the role `pv_scram`, which may log in
/// only over TLS with SCRAM.
#[tokio::test]
async fn channel_binding_require_logs_in_with_scram_plus_over_the_servers_tls() {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    use tokio_rustls::rustls::RootCertStore;
    let admin = pg_admin().await;
    let pem: String = admin
        .query_one("select pg_read_file(current_setting('ssl_cert_file'))", &[])
        .await
        .unwrap()
        .get(0);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let (port, db) = (
        pg_addr().port(),
        pg_url().rsplit('/').next().unwrap().to_owned(),
    );
    let app = unique_name("pv_pg_scram_plus");
    let url = format!(
        "postgres://pv_scram:pv-scram-test@localhost:{port}/{db}\
         ?sslmode=require&channel_binding=require&application_name={app}"
    );
    let manager = poolvisor::backends::Postgres::from_url(&url)
        .unwrap()
        .root_certificates(roots)
        .unwrap();
    let sup = Supervisor::builder()
        .graceful_pool("db", "postgres", manager, PoolConfig::default().max_size(1))
        .start()
        .await
        .unwrap();
    let conn = sup
        .postgres("db")
        .unwrap()
        .checkout()
        .await
        .unwrap_or_else(|e| {
            panic!("{e} (scripts/services.sh gives the server TLS and the role pv_scram)")
        });
    conn.simple_query("SELECT 1").await.unwrap();
    drop(conn);
    let row = admin
        .query_one(
            "select s.ssl, a.usename::text from pg_stat_activity a \
             join pg_stat_ssl s using (pid) where a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, String>(1)),
        (true, "pv_scram".into())
    );
    sup.shutdown().await.unwrap();
}

/// Sets a search path on every new connection, or fails doing it (`bad`).
#[derive(Debug)]
struct SearchPath {
    bad: bool,
}

impl CustomizeConnection<PgConnection, BackendError> for SearchPath {
    fn on_acquire<'a>(&'a self, conn: &'a mut PgConnection) -> SetupFuture<'a, BackendError> {
        Box::pin(async move {
            let setting = if self.bad { "nonsense" } else { "'1s'" };
            conn.batch_execute("SET search_path TO pv_custom, public")
                .await?;
            conn.batch_execute(&format!("SET statement_timeout = {setting}"))
                .await?;
            Ok(())
        })
    }
}

/// A customizer runs on every new server connection before a caller gets it; one whose
/// setup the server refuses closes that connection (the server lets go of it) and takes
/// the pool Down with the server's message.
#[tokio::test]
async fn a_customizer_sets_up_every_new_connection_and_a_refused_setup_closes_it() {
    use poolvisor::backends::Postgres;
    let admin = pg_admin().await;
    let app = unique_name("pv_pg_customized");
    let cfg = PoolConfig::default().max_size(2);
    let sup = Supervisor::builder()
        .postgres("db", &pg_url_named(&app), cfg.clone())
        .customize::<Postgres>("db", SearchPath { bad: false })
        .start()
        .await
        .unwrap();
    let pool = sup.postgres("db").unwrap();
    for _ in 0..3 {
        let conn = pool.checkout().await.unwrap();
        assert_eq!(
            pg_settings(&conn, &["search_path", "statement_timeout"]).await,
            ["pv_custom, public", "1s"]
        );
    }
    sup.shutdown().await.unwrap();

    let bad_app = unique_name("pv_pg_bad_setup");
    let sup = Supervisor::builder()
        .postgres("db", &pg_url_named(&bad_app), cfg.down_after_failures(1))
        .customize::<Postgres>("db", SearchPath { bad: true })
        .start()
        .await
        .unwrap();
    let err = sup.postgres("db").unwrap().checkout().await.unwrap_err();
    let CheckoutError::Unavailable { cause, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(cause.contains("connection setup failed"), "{cause}");
    assert!(cause.contains("statement_timeout"), "{cause}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            pg_count(&admin, &bad_app).await == 0
        })
        .await,
        "the connection whose setup failed is closed on the server"
    );
    sup.shutdown().await.unwrap();
}
