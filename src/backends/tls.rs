//! The rustls client setup the backends share (ring, the system's roots by default).

use std::sync::Arc;

use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::error::BackendError;

/// A connector that trusts `roots` (the system's when `None`) and offers `alpn`.
pub(crate) fn connector(
    roots: Option<&Arc<RootCertStore>>,
    alpn: Vec<Vec<u8>>,
    target: &Arc<str>,
) -> Result<TlsConnector, BackendError> {
    let roots = match roots {
        Some(r) => r.clone(),
        None => Arc::new(system_roots()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::server(target, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A backend's `root_certificates`: `tls` trusts exactly `roots` from now on. A backend
/// not set up for TLS (`tls` is `None`) is an error: `needs` says what would set it up.
pub(crate) fn trust_only(
    tls: &mut Option<TlsConnector>,
    roots: RootCertStore,
    target: &Arc<str>,
    needs: &str,
) -> Result<(), BackendError> {
    if tls.is_none() {
        return Err(BackendError::server(
            target,
            format!("root certificates need {needs}"),
        ));
    }
    *tls = Some(connector(Some(&Arc::new(roots)), Vec::new(), target)?);
    Ok(())
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}
