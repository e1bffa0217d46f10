//! The admin endpoint's server and its routing table.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use poolvisor_actors::{PoolStatus, Supervisor};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::control;
use super::events;
use super::exposition::{
    openmetrics_text, prometheus_text, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};
use super::response::{error, json, respond, AdminResponse};
use crate::config::AdminSettings;

/// A running admin endpoint. Dropping it stops accepting at once and closes every open
/// connection: idle ones at once, a request in flight once its response is written, an
/// `/events` stream within [`CLOSE_GRACE`].
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// Dropped with the server; every connection task watches it.
    _open: watch::Sender<()>,
}

/// How long a client may take to send a request's headers before its connection is
/// closed (so an idle or stalled client cannot hold a connection task forever).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long open connections get to finish once the server is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AdminServer {
    /// Serves `sup` on `settings.listen` (loopback by default).
    ///
    /// ```no_run
    /// # async fn f(sup: poolvisor::Supervisor) -> std::io::Result<()> {
    /// use poolvisor::admin::AdminServer;
    /// use poolvisor::config::AdminSettings;
    ///
    /// let admin = AdminServer::start(sup, &AdminSettings::default()).await?;
    /// println!("metrics on http://{}/metrics", admin.addr());
    /// # Ok(()) }
    /// ```
    pub async fn start(sup: Supervisor, settings: &AdminSettings) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let token = settings.token.clone();
        let (open, watch) = watch::channel(());
        let task = tokio::spawn(
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (sup, token) = (sup.clone(), token.clone());
                    tokio::spawn(serve(tcp, sup, token, watch.clone()));
                }
            }
            .instrument(tracing::info_span!("admin", %addr)),
        );
        Ok(AdminServer {
            addr,
            task,
            _open: open,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One client connection, until it closes, stalls before its headers, or the server is
/// dropped (`open` then reports its sender gone).
async fn serve(
    tcp: TcpStream,
    sup: Supervisor,
    token: Option<String>,
    mut open: watch::Receiver<()>,
) {
    let svc = service_fn(move |req| {
        let (sup, token) = (sup.clone(), token.clone());
        async move { Ok::<_, Infallible>(route(&sup, token.as_deref(), req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = open.changed() => {
            conn.as_mut().graceful_shutdown();
            // An `/events` response never completes on its own; dropping the connection
            // after the grace ends it (its pump sees the body gone).
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
}

fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(expected) = token else { return true };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// What a request asks for, once its path is understood.
enum Route<'a> {
    Health,
    Pools,
    Metrics,
    Events,
    Control { pool: &'a str, action: &'a str },
}

impl Route<'_> {
    fn parse(path: &str) -> Option<Route<'_>> {
        Some(match path {
            "/health" => Route::Health,
            "/pools" => Route::Pools,
            "/metrics" => Route::Metrics,
            "/events" => Route::Events,
            _ => {
                let (pool, action) = path.strip_prefix("/pools/")?.split_once('/')?;
                if !control::ACTIONS.contains(&action) {
                    return None;
                }
                Route::Control { pool, action }
            }
        })
    }

    fn method(&self) -> Method {
        match self {
            Route::Control { .. } => Method::POST,
            _ => Method::GET,
        }
    }
}

async fn route(sup: &Supervisor, token: Option<&str>, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().to_string();
    let Some(route) = Route::parse(&path) else {
        return error(StatusCode::NOT_FOUND, "no such route");
    };
    if req.method() != route.method() {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("use {}", route.method()),
        );
    }
    if let Route::Health = route {
        return health(sup, req.uri().query());
    }
    if !authorized(token, &req) {
        let mut resp = error(StatusCode::UNAUTHORIZED, "bearer token required");
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let wants_openmetrics = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match route {
        Route::Events => events::stream(sup.subscribe()),
        Route::Control { pool, action } => {
            let span = tracing::info_span!("admin_control", pool, action);
            control::run(sup, pool, action, req.into_body())
                .instrument(span)
                .await
        }
        _ => {
            let snapshot = match sup.metrics().await {
                Ok(s) => s,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
            };
            if let Route::Pools = route {
                json(
                    StatusCode::OK,
                    &serde_json::to_value(&snapshot).unwrap_or_default(),
                )
            } else if wants_openmetrics {
                respond(
                    StatusCode::OK,
                    OPENMETRICS_CONTENT_TYPE,
                    openmetrics_text(&snapshot),
                )
            } else {
                respond(
                    StatusCode::OK,
                    TEXT_CONTENT_TYPE,
                    prometheus_text(&snapshot),
                )
            }
        }
    }
}

/// 200 when every pool (or `?pool=NAME`) is Up; 503 naming those that are not.
fn health(sup: &Supervisor, query: Option<&str>) -> AdminResponse {
    let wanted: Vec<String> = match query.and_then(|q| q.strip_prefix("pool=")) {
        Some(name) => {
            if sup.status(name).is_err() {
                return error(StatusCode::NOT_FOUND, "no such pool");
            }
            vec![name.to_string()]
        }
        None => sup.pool_names().into_iter().map(String::from).collect(),
    };
    let not_up: serde_json::Map<String, serde_json::Value> = wanted
        .iter()
        .filter_map(|name| {
            let status = sup.status(name).ok()?;
            (status != PoolStatus::Up)
                .then(|| (name.clone(), serde_json::Value::from(status.as_str())))
        })
        .collect();
    if not_up.is_empty() {
        json(StatusCode::OK, &serde_json::json!({"status": "up"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "unhealthy", "pools": not_up}),
        )
    }
}
