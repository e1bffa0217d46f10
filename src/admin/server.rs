//! The admin endpoint's server and routes.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use poolvisor_actors::{PoolStatus, Supervisor};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::exposition::prometheus_text;
use crate::config::AdminSettings;

/// A running admin endpoint; stops when dropped.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AdminServer {
    /// Serves `sup` on `settings.listen` (loopback by default).
    pub async fn start(sup: Supervisor, settings: &AdminSettings) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let token = settings.token.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (sup, token) = (sup.clone(), token.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (sup, token) = (sup.clone(), token.clone());
                        async move { Ok::<_, Infallible>(route(&sup, token.as_deref(), req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(AdminServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

fn authorized(token: Option<&str>, req: &Request<hyper::body::Incoming>) -> bool {
    let Some(expected) = token else { return true };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

async fn route(
    sup: &Supervisor,
    token: Option<&str>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let known = matches!(path.as_str(), "/health" | "/pools" | "/metrics");
    if !known {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no such route"}),
        );
    }
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use GET"}),
        );
    }
    if path == "/health" {
        return health(sup, req.uri().query());
    }
    if !authorized(token, &req) {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "bearer token required"}),
        );
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let snapshot = match sup.metrics().await {
        Ok(s) => s,
        Err(e) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": e.to_string()}),
            )
        }
    };
    match path.as_str() {
        "/pools" => json(
            StatusCode::OK,
            &serde_json::to_value(&snapshot).unwrap_or_default(),
        ),
        _ => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            prometheus_text(&snapshot),
        ),
    }
}

/// 200 when every pool (or `?pool=NAME`) is Up; 503 naming those that are not.
fn health(sup: &Supervisor, query: Option<&str>) -> Response<Full<Bytes>> {
    let wanted: Vec<String> = match query.and_then(|q| q.strip_prefix("pool=")) {
        Some(name) => {
            if sup.status(name).is_err() {
                return json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "no such pool"}),
                );
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
