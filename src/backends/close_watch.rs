//! A stream that raises a flag once its connection is gone.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a client socket and sets `gone` when a read sees the server's EOF, when a read or
/// write fails, and when the stream is dropped (its driver ended). A driver that keeps a
/// read pending while idle (redis-rs's multiplexed driver does) thereby tells the pool
/// that the server closed a connection nobody is using, without a round trip.
pub(crate) struct CloseWatch<S> {
    inner: S,
    gone: Arc<AtomicBool>,
}

impl<S> CloseWatch<S> {
    pub(crate) fn new(inner: S, gone: Arc<AtomicBool>) -> Self {
        CloseWatch { inner, gone }
    }

    fn note<T>(&self, result: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(_)) = result {
            self.gone.store(true, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for CloseWatch<S> {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CloseWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(&result);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            this.gone.store(true, Ordering::Relaxed); // EOF: the server closed its side
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CloseWatch<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(&result);
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.gone.store(true, Ordering::Relaxed); // a closing stream is not lent again
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn eof_and_drop_raise_the_flag_data_does_not() {
        let (client, mut server) = tokio::io::duplex(64);
        let gone = Arc::new(AtomicBool::new(false));
        let mut watched = CloseWatch::new(client, gone.clone());
        server.write_all(b"+PONG\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        watched.read_exact(&mut buf).await.unwrap();
        watched.write_all(b"PING\r\n").await.unwrap();
        assert!(!gone.load(Ordering::Relaxed), "data is not a close");
        drop(server);
        assert_eq!(watched.read(&mut buf).await.unwrap(), 0);
        assert!(gone.load(Ordering::Relaxed), "EOF is a close");

        let (client, _server) = tokio::io::duplex(64);
        let gone = Arc::new(AtomicBool::new(false));
        drop(CloseWatch::new(client, gone.clone()));
        assert!(gone.load(Ordering::Relaxed), "a dropped stream is gone");
    }
}
