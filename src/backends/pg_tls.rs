//! TLS for tokio-postgres through rustls: the `TlsConnect` that `Postgres` hands
//! `connect_raw` when the URL says `sslmode=require`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// One handshake, as the server named `name` (its certificate must match).
pub(crate) struct RustlsConnect {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// The encrypted stream. It offers SCRAM channel binding (`SCRAM-SHA-256-PLUS`, which
/// tokio-postgres uses whenever the server offers it, and `channel_binding=require`
/// insists on): the server's certificate hash, `tls-server-end-point` (RFC 5929).
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| end_point_hash(cert))
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// `tls-server-end-point` of a certificate (DER): its hash by the hash function of its
/// signature algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929, section 4.1), as the
/// server computes it. `None` for algorithms with no such hash here (Ed25519, RSA-PSS,
/// SHA-224): the client then uses plain SCRAM-SHA-256, as it would without TLS binding.
fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{digest, SHA256, SHA384, SHA512};
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    let oid = signature_algorithm(cert)?;
    let algorithm = if let Some(rsa) = oid.strip_prefix(RSA) {
        match rsa {
            [0x04 | 0x05 | 0x0b] => &SHA256, // with MD5, SHA-1, SHA-256
            [0x0c] => &SHA384,
            [0x0d] => &SHA512,
            _ => return None,
        }
    } else if let Some(ecdsa) = oid.strip_prefix(ECDSA) {
        match ecdsa {
            [0x01] | [0x03, 0x02] => &SHA256, // with SHA-1, SHA-256
            [0x03, 0x03] => &SHA384,
            [0x03, 0x04] => &SHA512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(digest(algorithm, cert).as_ref().to_vec())
}

/// The OID of a certificate's `signatureAlgorithm`: `Certificate ::= SEQUENCE {
/// tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signatureValue }`,
/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, ... }`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, cert, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_element(rest)? else {
        return None;
    };
    match der_element(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

/// Splits the first DER element off `der`: its tag, its contents and what follows.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes.iter().fold(0, |len, &b| len << 8 | usize::from(b)),
            rest,
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest::{digest, SHA256, SHA384};

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            end_point_hash(&p256),
            Some(digest(&SHA256, &p256).as_ref().to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            end_point_hash(&p384),
            Some(digest(&SHA384, &p384).as_ref().to_vec())
        );
        assert_eq!(end_point_hash(&cert(&rcgen::PKCS_ED25519)), None);
    }

    #[test]
    fn a_malformed_certificate_has_no_hash() {
        let good = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        for cut in [0, 1, 2, 10, good.len() / 2, good.len() - 1] {
            assert_eq!(end_point_hash(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(end_point_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
