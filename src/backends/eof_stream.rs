//! A stream whose shutdown waits for the server to close its side.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a client socket so that `poll_shutdown` sends FIN and then reads (discarding)
/// until the server closes too. A driver that shuts its stream down on close (tokio-postgres
/// does, after `Terminate`) thereby finishes only once the server has let go of the
/// connection — a PostgreSQL backend leaves `pg_stat_activity` before its socket closes.
pub(crate) struct EofOnShutdown<S> {
    inner: S,
    fin_sent: bool,
}

impl<S> EofOnShutdown<S> {
    pub(crate) fn new(inner: S) -> Self {
        EofOnShutdown {
            inner,
            fin_sent: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EofOnShutdown<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EofOnShutdown<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.fin_sent {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.fin_sent = true;
        }
        let mut scratch = [0u8; 512];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_resolves_only_after_the_peer_closes() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut client = EofOnShutdown::new(client);
        let shutdown = tokio::spawn(async move { client.shutdown().await });
        // The peer sees our FIN, but we are not done until it closes too.
        let mut buf = [0u8; 8];
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        tokio::task::yield_now().await;
        assert!(!shutdown.is_finished());
        server.write_all(b"late bytes are discarded").await.unwrap();
        drop(server);
        shutdown.await.unwrap().unwrap();
    }
}
