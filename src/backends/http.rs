//! HTTP pools: our own manager over hyper 1.x client connections — HTTP/1.1, HTTP/2 with
//! prior knowledge, or HTTPS (rustls) with ALPN choosing h2 when the server offers it.

use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolvisor_actors::{CheckoutError, GracefulClose, PoolHandle};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use super::error::BackendError;
use super::tls;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 over plain TCP; over TLS, h2 if the server offers it by ALPN, else 1.1.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: prior knowledge over plain TCP, ALPN `h2` over TLS.
    Http2,
}

/// An HTTP(S) connection manager for one upstream (scheme, host and port of a base URL).
///
/// ```
/// use poolvisor::backends::Http;
/// let h = Http::new("http://user:secret@127.0.0.1:3100/loki").unwrap();
/// assert_eq!(h.target(), "http://127.0.0.1:3100");
/// assert!(Http::new("ftp://x").is_err());
/// ```
#[derive(Clone)]
pub struct Http {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    target: Arc<str>,
    version: HttpVersion,
    tls: Option<TlsConnector>,
    roots: Option<Arc<RootCertStore>>,
    health_path: Option<PathAndQuery>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("target", &self.target)
            .field("version", &self.version)
            .field("health_path", &self.health_path.as_ref().map(|p| p.path()))
            .finish()
    }
}

impl Http {
    /// For the upstream of `base_url` (`http://host[:port]` or `https://host[:port]`; a
    /// path is ignored). HTTPS trusts the system's root certificates unless
    /// `root_certificates` says otherwise.
    pub fn new(base_url: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::invalid_url("http", base_url, reason);
        let uri: Uri = base_url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("scheme must be http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let authority: Authority = match uri.port_u16() {
            Some(p) => format!("{}:{p}", uri.host().unwrap_or_default()),
            None => uri.host().unwrap_or_default().to_string(),
        }
        .parse()
        .map_err(|_| bad("bad host"))?;
        let target = format!("{scheme}://{authority}").into();
        let mut http = Http {
            scheme,
            authority,
            host,
            port,
            target,
            version: HttpVersion::Auto,
            tls: None,
            roots: None,
            health_path: None,
        };
        http.rebuild_tls()?;
        Ok(http)
    }

    /// Chooses the protocol (default `Auto`).
    pub fn version(mut self, version: HttpVersion) -> Result<Self, BackendError> {
        self.version = version;
        self.rebuild_tls()?;
        Ok(self)
    }

    /// Trusts exactly these roots for HTTPS instead of the system's.
    pub fn root_certificates(mut self, roots: RootCertStore) -> Result<Self, BackendError> {
        self.roots = Some(Arc::new(roots));
        self.rebuild_tls()?;
        Ok(self)
    }

    /// Makes every new connection, and every validation of an idle one, send `GET path`
    /// and require a 2xx or 3xx answer, like HikariCP's `connectionTestQuery`. An upstream
    /// that accepts connections but answers 503, or nothing within the pool's
    /// `connect_timeout`, then counts as down, and its pool goes Down instead of lending
    /// connections to it. Without a health path a connection is up once its handshake is
    /// done, which for HTTP/1.1 is the TCP (and TLS) connect.
    ///
    /// ```
    /// use poolvisor::backends::Http;
    /// let h = Http::new("http://127.0.0.1:3100").unwrap().health_path("/ready").unwrap();
    /// assert!(Http::new("http://h").unwrap().health_path("ready").is_err());
    /// ```
    pub fn health_path(mut self, path: &str) -> Result<Self, BackendError> {
        // Shown without its query, which may carry a key.
        let shown = path.split('?').next().unwrap_or_default();
        let bad = |reason: &str| BackendError::invalid_url("http", shown, reason);
        if !path.starts_with('/') {
            return Err(bad("a health path starts with /"));
        }
        self.health_path = Some(path.parse().map_err(|_| bad("not a valid path"))?);
        Ok(self)
    }

    /// `scheme://host:port`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `GET health_path` on `conn`, if there is one: it must answer 2xx or 3xx, with a
    /// body small enough to read (read, so that an HTTP/1.1 connection is free again).
    async fn probe(&self, conn: &mut HttpConnection) -> Result<(), BackendError> {
        let Some(path) = &self.health_path else {
            return Ok(());
        };
        // Named by its path alone: a query may carry a key.
        let failed = |what: &dyn std::fmt::Display| {
            BackendError::server(&self.target, format_args!("GET {}: {what}", path.path()))
        };
        let req = Request::get(Uri::from(path.clone()))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = conn.send(req).await.map_err(|e| failed(&e))?;
        let status = response.status();
        if !status.is_success() && !status.is_redirection() {
            return Err(failed(&format_args!("answered {status}")));
        }
        Limited::new(response.into_body(), HEALTH_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| match e.downcast::<LengthLimitError>() {
                Ok(_) => failed(&"answered with a body over 64 KiB (choose a smaller health path)"),
                Err(e) => failed(&e),
            })?;
        Ok(())
    }

    fn rebuild_tls(&mut self) -> Result<(), BackendError> {
        if self.scheme != Scheme::HTTPS {
            return Ok(());
        }
        let alpn = match self.version {
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        };
        self.tls = Some(tls::connector(self.roots.as_ref(), alpn, &self.target)?);
        Ok(())
    }
}

/// The most of a health answer's body that is read.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A pooled HTTP connection: send requests on it with [`HttpConnection::send`].
pub struct HttpConnection {
    sender: Sender,
    driver: tokio::task::JoinHandle<()>,
    scheme: Scheme,
    authority: Authority,
}

impl HttpConnection {
    /// `true` for an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Sends a request, once the connection is ready for one (an HTTP/1.1 connection whose
    /// previous exchange was abandoned first finishes it). A URI that is only a path
    /// (`/loki/api/v1/push`) is completed with the upstream's scheme and authority; `Host`
    /// is set for HTTP/1.1.
    pub async fn send(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, hyper::Error> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| "/".parse().expect("valid path"));
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                *req.uri_mut() = Uri::from(path);
                if !req.headers().contains_key(HOST) {
                    if let Ok(v) = HeaderValue::from_str(self.authority.as_str()) {
                        req.headers_mut().insert(HOST, v);
                    }
                }
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                *req.uri_mut() = absolute(&self.scheme, &self.authority, path);
                s.send_request(req).await
            }
        }
    }

    /// Sends a request from a shared reference, for callers of `checkout_shared`: an
    /// HTTP/2 connection runs it on a stream of its own, beside the other callers'. An
    /// HTTP/1.1 connection cannot; it answers [`HttpError::NotMultiplexed`] (share only
    /// pools whose upstream speaks HTTP/2).
    pub async fn send_shared(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, HttpError> {
        let target = || format!("{}://{}", self.scheme, self.authority);
        let Sender::H2(sender) = &self.sender else {
            return Err(HttpError::NotMultiplexed { target: target() });
        };
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| "/".parse().expect("valid path"));
        *req.uri_mut() = absolute(&self.scheme, &self.authority, path);
        let mut sender = sender.clone();
        let failed = |source| HttpError::Request {
            target: target(),
            source,
        };
        sender.ready().await.map_err(failed)?;
        sender.send_request(req).await.map_err(failed)
    }
}

/// `path` on the upstream: what an HTTP/2 request carries.
fn absolute(scheme: &Scheme, authority: &Authority, path: hyper::http::uri::PathAndQuery) -> Uri {
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .expect("valid parts")
}

impl ManageConnection for Http {
    type Connection = HttpConnection;
    type Error = BackendError;

    async fn connect(&self) -> Result<HttpConnection, BackendError> {
        let err = |e: &dyn std::fmt::Display| BackendError::server(&self.target, e);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| err(&e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, driver) = match &self.tls {
            None => match self.version {
                HttpVersion::Http2 => handshake_h2(tcp).await,
                HttpVersion::Auto | HttpVersion::Http1 => handshake_h1(tcp).await,
            },
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| err(&e))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| err(&e))?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if h2 {
                    handshake_h2(stream).await
                } else if self.version == HttpVersion::Http2 {
                    return Err(err(&"the server did not agree to HTTP/2 (ALPN)"));
                } else {
                    handshake_h1(stream).await
                }
            }
        }
        .map_err(|e| err(&e))?;
        let mut conn = HttpConnection {
            sender,
            driver,
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
        };
        self.probe(&mut conn).await?;
        Ok(conn)
    }

    async fn is_valid(&self, conn: &mut HttpConnection) -> Result<(), BackendError> {
        let ready = match &mut conn.sender {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        };
        ready.map_err(|e| BackendError::server(&self.target, e))?;
        self.probe(conn).await
    }

    fn has_broken(&self, conn: &mut HttpConnection) -> bool {
        match &conn.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

impl GracefulClose for Http {
    /// Drops the sender and waits for hyper's connection task to end (socket closed).
    async fn close(&self, conn: HttpConnection) {
        let HttpConnection { sender, driver, .. } = conn;
        drop(sender);
        let _ = driver.await;
    }
}

async fn handshake_h1<S>(io: S) -> Result<(Sender, tokio::task::JoinHandle<()>), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http/1.1 connection ended");
        }
    });
    Ok((Sender::H1(sender), driver))
}

async fn handshake_h2<S>(io: S) -> Result<(Sender, tokio::task::JoinHandle<()>), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http/2 connection ended");
        }
    });
    Ok((Sender::H2(sender), driver))
}

/// Why a one-call HTTP request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No connection could be checked out.
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// The exchange failed (the connection is closed, not reused).
    #[error("{target}: {source}")]
    Request {
        /// The upstream.
        target: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// `send_shared` on an HTTP/1.1 connection, which serves one request at a time.
    #[error("{target}: an HTTP/1.1 connection cannot be shared; use checkout()")]
    NotMultiplexed {
        /// The upstream.
        target: String,
    },
    /// The whole exchange (checkout, request, body) took longer than its timeout.
    #[error("{target}: no complete response within {timeout:?}")]
    Timeout {
        /// The upstream.
        target: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// One-call requests on an HTTP pool: check out, send, read the whole body, give the
/// connection back.
pub trait HttpPoolExt {
    /// Sends `req` and returns the response with its body read, all within `timeout`.
    /// A connection whose exchange failed or timed out is closed, not reused.
    fn request(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Response<Bytes>, HttpError>> + Send;
}

impl HttpPoolExt for PoolHandle<Http> {
    async fn request(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, HttpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let target = || self.name().to_string();
        let timed_out = || HttpError::Timeout {
            target: target(),
            timeout,
        };
        let mut conn = match tokio::time::timeout_at(deadline, self.checkout()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(timed_out()),
        };
        let exchange = async {
            let response = conn.send(req).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?;
            Ok::<_, hyper::Error>(Response::from_parts(parts, body.to_bytes()))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => Ok(response),
            // The guard is held out here so that a connection left mid-exchange is closed,
            // never lent again half-read.
            Ok(Err(source)) => {
                conn.discard();
                Err(HttpError::Request {
                    target: target(),
                    source,
                })
            }
            Err(_) => {
                conn.discard();
                Err(timed_out())
            }
        }
    }
}
