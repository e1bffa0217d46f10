//! Opening and validating connections: the pool's slow work, in tasks of its own, off
//! the lock. Each ends by handing its connection over as a return would (to the oldest
//! waiter, else idle), or by closing it and recording why.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use bb8::ManageConnection;
use tracing::Instrument;

use super::conn::Conn;
use super::shared::PoolShared;
use crate::budget::Permit;
use crate::clock;
use crate::redact::redact;

impl<M: ManageConnection> PoolShared<M> {
    /// Opens one connection (a task the pool actor spawned) and runs the customizer on
    /// it, both within `connect_timeout`. The caller counted it in `connecting` and
    /// holds its permit. Returns the redacted error on failure.
    pub(crate) async fn connect_one(self: Arc<Self>, permit: Permit) -> Result<(), Arc<str>> {
        let timeout = self.config.connect_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let span = tracing::debug_span!("connect", pool = %self.name);
        let result = tokio::time::timeout_at(deadline, self.manager.connect())
            .instrument(span.clone())
            .await;
        let mut raw = match result {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => {
                drop(permit);
                return Err(self.connect_failed(redact(&format!("{e:?}"))));
            }
            Err(_) => {
                drop(permit);
                return Err(self.connect_failed(format!("connect timed out after {timeout:?}")));
            }
        };
        let setup = match &self.customizer {
            None => Ok(()),
            Some(customizer) => {
                // User code: a panic in it fails this connect, like an error, rather than
                // the task that counts it.
                let mut setup = customizer.on_acquire(&mut raw);
                let setup = std::future::poll_fn(|cx| {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| setup.as_mut().poll(cx))) {
                        Ok(poll) => poll.map(Some),
                        Err(_) => Poll::Ready(None),
                    }
                });
                match tokio::time::timeout_at(deadline, setup)
                    .instrument(span)
                    .await
                {
                    Ok(Some(Ok(()))) => Ok(()),
                    Ok(Some(Err(e))) => Err(redact(&format!("connection setup failed: {e:?}"))),
                    Ok(None) => Err("connection setup panicked".to_owned()),
                    Err(_) => Err(format!(
                        "connect and connection setup timed out after {timeout:?}"
                    )),
                }
            }
        };
        let now = clock::now();
        let conn = Conn::new(
            raw,
            self.next_id(),
            now,
            self.config.max_lifetime,
            permit,
            self.closer.clone(),
        );
        if let Err(cause) = setup {
            // Closed like any connection: its permit goes once the server let go.
            drop(conn);
            return Err(self.connect_failed(cause));
        }
        self.opened(conn, now);
        Ok(())
    }

    /// Validates a connection that was idle (a task of the pool's), then lends it to the
    /// oldest waiter or puts it back; closes it if it fails.
    pub(crate) fn spawn_validation(self: &Arc<Self>, mut conn: Conn<M::Connection>) {
        let shared = self.clone();
        tokio::spawn(async move {
            let timeout = shared.config.connect_timeout;
            let span = tracing::debug_span!("validate", pool = %shared.name, conn = conn.id);
            let ok = matches!(
                tokio::time::timeout(timeout, shared.manager.is_valid(conn.get_mut()))
                    .instrument(span)
                    .await,
                Ok(Ok(()))
            );
            shared.validated(conn, ok);
        });
    }
}
