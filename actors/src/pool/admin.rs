//! Operator actions on one pool: pause, resume, resize, drain, give up.

use std::sync::Arc;

use bb8::ManageConnection;
use serde::Serialize;
use tokio::time::Instant;

use super::shared::PoolShared;
use super::stats::CloseReason;
use super::status::Admin;
use crate::config::ConfigError;
use crate::error::{CheckoutError, ControlError};
use crate::event::EventKind;

/// What a drain achieved by its deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Idle connections closed at once.
    pub closed_idle: usize,
    /// Connections still lent at the deadline; each closes when it comes back.
    pub still_lent: usize,
}

impl<M: ManageConnection> PoolShared<M> {
    fn refuse_if_final(&self, admin: Admin) -> Result<(), ControlError> {
        match admin {
            Admin::ShutDown => Err(ControlError::ShutDown),
            Admin::Failed { .. } => Err(ControlError::Failed {
                pool: self.name.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn pause(&self) -> Result<(), ControlError> {
        {
            let mut st = self.state.lock();
            self.refuse_if_final(st.admin)?;
            if st.admin == Admin::Paused {
                return Ok(());
            }
            st.admin = Admin::Paused;
            self.fail_waiters(
                &mut st,
                &CheckoutError::Paused {
                    pool: self.name.clone(),
                },
            );
        }
        self.emit(EventKind::Paused);
        Ok(())
    }

    pub(crate) fn resume(&self) -> Result<(), ControlError> {
        {
            let mut st = self.state.lock();
            self.refuse_if_final(st.admin)?;
            if st.admin == Admin::Running {
                return Ok(());
            }
            st.admin = Admin::Running;
        }
        self.emit(EventKind::Resumed);
        self.nudge();
        Ok(())
    }

    pub(crate) fn resize(&self, max_size: usize) -> Result<(), ControlError> {
        let invalid = |message: String| {
            Err(ControlError::InvalidConfig {
                pool: self.name.to_string(),
                source: ConfigError {
                    field: "max_size",
                    message,
                },
            })
        };
        if max_size == 0 {
            return invalid("must be at least 1".into());
        }
        if max_size < self.config.min_idle {
            return invalid(format!(
                "{max_size} is smaller than min_idle {}",
                self.config.min_idle
            ));
        }
        // Idle connections above the new size close here and now (not through the actor,
        // which may be restarting); lent ones close when they come back.
        let surplus = {
            let mut st = self.state.lock();
            self.refuse_if_final(st.admin)?;
            st.max_size = max_size;
            let n = st.open.saturating_sub(max_size).min(st.idle.len());
            let surplus: Vec<_> = st.idle.drain(..n).collect();
            st.open -= surplus.len();
            for _ in &surplus {
                st.stats.closed(CloseReason::Resized);
            }
            surplus
        };
        self.emit(EventKind::Resized { max_size });
        if !surplus.is_empty() {
            drop(surplus);
            self.after_close();
        }
        Ok(())
    }

    /// Stops lending, closes idle connections, waits until every lent, connecting and
    /// validating connection is back and closed or `deadline` passes, then leaves the pool
    /// in `end` (`Drained` or `ShutDown`).
    pub(crate) async fn drain(self: &Arc<Self>, deadline: Instant, end: Admin) -> DrainReport {
        let idle = {
            let mut st = self.state.lock();
            if matches!(st.admin, Admin::ShutDown | Admin::Failed { .. }) {
                return DrainReport::default();
            }
            st.admin = Admin::Draining;
            let pool = self.name.clone();
            self.fail_waiters(
                &mut st,
                &match end {
                    Admin::ShutDown => CheckoutError::ShutDown { pool },
                    _ => CheckoutError::Draining { pool },
                },
            );
            let idle = std::mem::take(&mut st.idle);
            st.open -= idle.len();
            for _ in &idle {
                st.stats.closed(CloseReason::Shutdown);
            }
            idle
        };
        let closed_idle = idle.len();
        drop(idle);
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let busy = {
                let st = self.state.lock();
                st.lent + st.connecting + st.validating
            };
            if busy == 0 || tokio::time::timeout_at(deadline, settled).await.is_err() {
                break;
            }
        }
        let still_lent = {
            let mut st = self.state.lock();
            st.admin = end;
            st.lent
        };
        self.emit(EventKind::Drained { still_lent });
        DrainReport {
            closed_idle,
            still_lent,
        }
    }

    /// Gives the pool up after too many restarts: fails waiters, closes idle connections.
    pub(crate) fn fail(&self, restarts: u32) {
        let idle = {
            let mut st = self.state.lock();
            st.admin = Admin::Failed { restarts };
            self.fail_waiters(
                &mut st,
                &CheckoutError::Failed {
                    pool: self.name.clone(),
                    restarts,
                },
            );
            let idle = std::mem::take(&mut st.idle);
            st.open -= idle.len();
            for _ in &idle {
                st.stats.closed(CloseReason::Shutdown);
            }
            idle
        };
        drop(idle);
        self.settled.notify_waiters();
        self.emit(EventKind::Failed { restarts });
    }
}
