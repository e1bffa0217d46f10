//! Health events and the bus that delivers them to every subscriber, in order.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

/// Something that happened to a pool, as every subscriber sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthEvent {
    /// Position in the supervisor's event order, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The pool it concerns (`"*"` for the supervisor as a whole).
    pub pool: Arc<str>,
    /// The pool's backend kind (`postgres`, `redis`, `http`, `custom`, ...).
    pub backend: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with the details of each case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The pool actor started (at boot).
    Started,
    /// The pool can open connections.
    Up,
    /// Connects fail, but not yet often enough to call the pool Down.
    Degraded {
        /// Why (password removed).
        reason: String,
    },
    /// Connects keep failing; checkouts fail at once with `Unavailable`.
    Down {
        /// The last connect error (password removed).
        cause: String,
    },
    /// A probe connection succeeded after the pool was Down.
    Recovered {
        /// How long the pool was Down.
        #[serde(serialize_with = "crate::serde_duration::millis")]
        down_for: Duration,
    },
    /// The pool actor crashed or wedged and was started again.
    Restarted {
        /// Restarts within the current window, from 1.
        attempt: u32,
        /// Why the previous actor ended.
        reason: String,
    },
    /// The pool crashed more often than the restart limit; it is given up.
    Failed {
        /// Restarts within the window.
        restarts: u32,
    },
    /// A checkout was turned away because `max_waiters` callers were waiting.
    Exhausted {
        /// Callers waiting.
        waiters: usize,
    },
    /// A connection has been held longer than `leak_threshold`.
    LeakSuspected {
        /// How long it has been held.
        #[serde(serialize_with = "crate::serde_duration::millis")]
        held_for: Duration,
        /// `file:line` of the checkout.
        location: String,
    },
    /// The pool wanted a connection but the global budget was spent.
    BudgetExhausted {
        /// The global budget.
        max_connections: usize,
    },
    /// The pool gave a connection's budget to another pool's callers: it closed an idle
    /// one, or will close the next one returned.
    ConnectionReclaimed,
    /// An operator paused the pool.
    Paused,
    /// An operator resumed the pool.
    Resumed,
    /// The pool's `max_size` was changed.
    Resized {
        /// The new `max_size`.
        max_size: usize,
    },
    /// A drain finished.
    Drained {
        /// Connections still lent when the deadline passed (they close on return).
        still_lent: usize,
    },
    /// The pool stopped for good (shutdown).
    Stopped,
}

impl EventKind {
    /// The kind's name, as in its JSON `type` (`"down"`, `"leak_suspected"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Up => "up",
            EventKind::Degraded { .. } => "degraded",
            EventKind::Down { .. } => "down",
            EventKind::Recovered { .. } => "recovered",
            EventKind::Restarted { .. } => "restarted",
            EventKind::Failed { .. } => "failed",
            EventKind::Exhausted { .. } => "exhausted",
            EventKind::LeakSuspected { .. } => "leak_suspected",
            EventKind::BudgetExhausted { .. } => "budget_exhausted",
            EventKind::ConnectionReclaimed => "connection_reclaimed",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Resized { .. } => "resized",
            EventKind::Drained { .. } => "drained",
            EventKind::Stopped => "stopped",
        }
    }
}

/// What a subscriber gets instead of an event when it fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The subscriber fell behind and this many events were dropped for it; the next
    /// `recv` continues with the oldest event still held.
    #[error("missed {missed} events")]
    Missed {
        /// How many.
        missed: u64,
    },
    /// The supervisor is gone and every event has been read.
    #[error("the event stream is closed")]
    Closed,
}

/// A subscription to every health event, in order.
///
/// ```no_run
/// # async fn f(sup: poolvisor_actors::Supervisor) {
/// let mut events = sup.subscribe();
/// while let Ok(event) = events.recv().await {
///     println!("{} {:?}", event.pool, event.kind);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<HealthEvent>,
}

impl EventStream {
    /// The next event; `Err(Missed)` once if this subscriber fell behind.
    pub async fn recv(&mut self) -> Result<HealthEvent, EventError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => EventError::Missed { missed },
            broadcast::error::RecvError::Closed => EventError::Closed,
        })
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Result<HealthEvent, EventError>> {
        match self.rx.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(Err(EventError::Missed { missed }))
            }
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(EventError::Closed)),
        }
    }
}

/// The sending side: numbers events and sends them under one lock, so that every
/// subscriber sees the same order with no gap in `seq`.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    /// The sequence number of the last event, and the sender (`None` once closed).
    inner: Arc<Mutex<(u64, Option<broadcast::Sender<HealthEvent>>)>>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus {
            inner: Arc::new(Mutex::new((0, Some(tx)))),
        }
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let rx = match &self.inner.lock().1 {
            Some(tx) => tx.subscribe(),
            // Closed: a stream that reports `Closed` at once.
            None => broadcast::channel(1).1,
        };
        EventStream { rx }
    }

    /// No more events: subscribers read what is left, then get `Closed`.
    pub(crate) fn close(&self) {
        self.inner.lock().1 = None;
    }

    pub(crate) fn emit(&self, pool: &Arc<str>, backend: &Arc<str>, kind: EventKind) {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        tracing::info!(pool = %pool, backend = %backend, event = ?kind, "pool event");
        let mut guard = self.inner.lock();
        if guard.1.is_none() {
            return;
        }
        guard.0 += 1;
        let event = HealthEvent {
            seq: guard.0,
            at_unix_ms,
            pool: pool.clone(),
            backend: backend.clone(),
            kind,
        };
        // No subscriber is not an error.
        if let Some(tx) = &guard.1 {
            let _ = tx.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lagging_subscriber_is_told_how_many_it_missed() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        let name: Arc<str> = "p".into();
        for _ in 0..10 {
            bus.emit(&name, &name, EventKind::Up);
        }
        assert_eq!(slow.recv().await, Err(EventError::Missed { missed: 6 }));
        let seqs: Vec<u64> = (0..4)
            .map(|_| slow.try_recv().unwrap().unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![7, 8, 9, 10]);
        assert!(slow.try_recv().is_none());
    }
}
