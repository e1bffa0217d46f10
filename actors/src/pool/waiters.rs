//! The FIFO queue of callers waiting for a connection.
//!
//! A waiter that gives up (timeout, cancelled future) closes its receiver under the pool
//! lock and is counted out at once; its entry stays in the queue until `pop` skips it or a
//! compaction removes it, so cancelling is O(1) and serving stays O(1) amortized however
//! many callers wait.
//!
//! Waits are bounded without a timer per waiter: every waiter of a pool has the same
//! `checkout_timeout` and the queue is FIFO, so the oldest waiter always has the earliest
//! deadline. One sweeper task per pool (`PoolShared::sweep`) sleeps until that deadline
//! and fails the expired waiters at the front. (A tokio timer per waiter cost more than
//! the whole rest of a contended checkout: see BENCHMARKS.md.)

use std::collections::VecDeque;
use std::panic::Location;

use tokio::sync::oneshot;

use super::conn::Conn;
use crate::clock::Instant;
use crate::error::CheckoutError;

pub(crate) type Delivery<C> = Result<Conn<C>, CheckoutError>;

pub(crate) struct Waiter<C: Send + 'static> {
    pub(crate) tx: oneshot::Sender<Delivery<C>>,
    pub(crate) since: Instant,
    pub(crate) location: &'static Location<'static>,
    /// Its place in arrival order, set by `push`.
    seq: u64,
}

impl<C: Send + 'static> Waiter<C> {
    pub(crate) fn new(
        tx: oneshot::Sender<Delivery<C>>,
        since: Instant,
        location: &'static Location<'static>,
    ) -> Self {
        Waiter {
            tx,
            since,
            location,
            seq: 0,
        }
    }
}

pub(crate) struct Waiters<C: Send + 'static> {
    queue: VecDeque<Waiter<C>>,
    live: usize,
    pushed: u64,
    /// The `seq` of the last waiter `pop` returned: every waiter up to it has left the
    /// queue.
    served_through: u64,
}

impl<C: Send + 'static> Default for Waiters<C> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
            live: 0,
            pushed: 0,
            served_through: 0,
        }
    }
}

impl<C: Send + 'static> Waiters<C> {
    /// Callers still waiting.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Queues a waiter; returns its place, which `cancelled` needs.
    pub(crate) fn push(&mut self, mut waiter: Waiter<C>) -> u64 {
        self.pushed += 1;
        waiter.seq = self.pushed;
        self.queue.push_back(waiter);
        self.live += 1;
        self.pushed
    }

    /// The oldest caller still waiting.
    pub(crate) fn pop(&mut self) -> Option<Waiter<C>> {
        while let Some(w) = self.queue.pop_front() {
            if w.tx.is_closed() {
                continue;
            }
            self.live -= 1;
            self.served_through = w.seq;
            return Some(w);
        }
        None
    }

    /// The waiter at place `seq` closed its receiver (under the pool lock) and found
    /// nothing delivered. If `pop` already chose it, the delivery is on its way outside
    /// the lock and will come back to the pool when it fails; else it is counted out.
    pub(crate) fn cancelled(&mut self, seq: u64) {
        if seq <= self.served_through {
            return;
        }
        self.live -= 1;
        if self.queue.len() > 2 * self.live + 64 {
            self.queue.retain(|w| !w.tx.is_closed());
        }
    }

    /// The oldest caller still waiting, left in place (cancelled entries before it are
    /// dropped).
    pub(crate) fn front(&mut self) -> Option<&Waiter<C>> {
        while self.queue.front().is_some_and(|w| w.tx.is_closed()) {
            self.queue.pop_front();
        }
        self.queue.front()
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.queue
            .iter()
            .find(|w| !w.tx.is_closed())
            .map(|w| w.since)
    }

    /// Fails every waiting caller with `err`.
    pub(crate) fn fail_all(&mut self, err: &CheckoutError) {
        while let Some(w) = self.pop() {
            let _ = w.tx.send(Err(err.clone()));
        }
    }
}
