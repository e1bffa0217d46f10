//! The FIFO queues of callers waiting for a connection.
//!
//! A pool keeps two: exclusive checkouts wait for a connection of their own
//! (`Waiters<Conn<C>>`), shared ones for a connection or a place on one in shared use
//! (`Waiters<Given<C>>`, see `sharing`). Both number their callers from one count of
//! arrivals, and a connection coming back goes to whichever front waiter came first, so
//! neither kind can starve the other.
//!
//! A waiter that gives up (timeout, cancelled future) closes its receiver under the pool
//! lock and is counted out at once; its entry stays in the queue until `pop` skips it or a
//! compaction removes it, so cancelling is O(1) and serving stays O(1) amortized however
//! many callers wait. Such entries are the queue's length beyond `live`, so that while
//! there are none `pop` does not read the waiters' channels (a cache miss on another
//! core's line, under the lock).
//!
//! Waits are bounded without a timer per waiter: every waiter of a pool has the same
//! `checkout_timeout` and the queue is FIFO, so the oldest waiter always has the earliest
//! deadline. One sweeper task per pool (`PoolShared::sweep`) sleeps until that deadline
//! and fails the expired waiters at the front. (A tokio timer per waiter cost more than
//! the whole rest of a contended checkout: see benches/HISTORY.md.)

use std::collections::VecDeque;
use std::panic::Location;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::clock::Instant;
use crate::error::CheckoutError;

/// What a waiter is sent: a connection (or, for a shared waiter, a place on one), or
/// why it gets none.
pub(crate) type Delivery<T> = Result<T, CheckoutError>;

pub(crate) struct Waiter<T: Send + 'static> {
    pub(crate) tx: oneshot::Sender<Delivery<T>>,
    pub(crate) since: Instant,
    pub(crate) location: &'static Location<'static>,
    /// Its place in arrival order, set by `push`.
    pub(crate) seq: u64,
}

impl<T: Send + 'static> Waiter<T> {
    pub(crate) fn new(
        tx: oneshot::Sender<Delivery<T>>,
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

/// `repr(C)`: `live`, which every checkout reads, first (see `State`).
#[repr(C)]
pub(crate) struct Waiters<T: Send + 'static> {
    live: usize,
    queue: VecDeque<Waiter<T>>,
    /// The `seq` of the last waiter `pop` returned: every waiter up to it has left the
    /// queue.
    served_through: u64,
}

impl<T: Send + 'static> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
            live: 0,
            served_through: 0,
        }
    }
}

impl<T: Send + 'static> Waiters<T> {
    /// Callers still waiting.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Queues a waiter at place `seq` (in arrival order, counted over every queue of
    /// the pool: larger than any place queued before), which `cancelled` needs.
    pub(crate) fn push(&mut self, mut waiter: Waiter<T>, seq: u64) {
        debug_assert!(self.queue.back().is_none_or(|w| w.seq < seq));
        waiter.seq = seq;
        self.queue.push_back(waiter);
        self.live += 1;
    }

    /// The oldest caller still waiting.
    pub(crate) fn pop(&mut self) -> Option<Waiter<T>> {
        self.skip_left();
        let w = self.queue.pop_front()?;
        self.live -= 1;
        self.served_through = w.seq;
        Some(w)
    }

    /// Drops the entries at the front whose caller left. Reads the channels only while
    /// some entry is known to have left: every entry is live or left, so those are the
    /// entries beyond `live`.
    fn skip_left(&mut self) {
        while self.queue.len() > self.live && self.queue.front().is_some_and(|w| w.tx.is_closed()) {
            self.queue.pop_front();
        }
        debug_assert!(
            self.queue.front().is_none_or(|w| !w.tx.is_closed()),
            "a caller left the queue without `cancelled`"
        );
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
    pub(crate) fn front(&mut self) -> Option<&Waiter<T>> {
        self.skip_left();
        self.queue.front()
    }

    pub(crate) fn oldest(&mut self) -> Option<Instant> {
        self.front().map(|w| w.since)
    }

    /// Fails the callers at the front that have waited `timeout` by `now`, with the error
    /// `err` makes of how long each waited. Returns how many, and the deadline of the
    /// oldest caller left (FIFO: every later one's is later).
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        err: impl Fn(Duration) -> CheckoutError,
    ) -> (u64, Option<Instant>) {
        let mut expired = 0;
        while let Some(since) = self.front().map(|w| w.since) {
            if since + timeout > now {
                return (expired, Some(since + timeout));
            }
            let waiter = self.pop().expect("front exists");
            expired += 1;
            let _ = waiter
                .tx
                .send(Err(err(now.saturating_duration_since(since))));
        }
        (expired, None)
    }

    /// Fails every waiting caller with `err`.
    pub(crate) fn fail_all(&mut self, err: &CheckoutError) {
        while let Some(w) = self.pop() {
            let _ = w.tx.send(Err(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's place and its end of the channel.
    type Place = (u64, oneshot::Receiver<Delivery<()>>);

    fn queue(n: usize) -> (Waiters<()>, Vec<Place>) {
        let mut waiters = Waiters::default();
        let rxs = (0..n as u64)
            .map(|i| {
                let (tx, rx) = oneshot::channel();
                let seq = 2 * i + 1; // places need not be consecutive
                waiters.push(
                    Waiter::new(tx, crate::clock::now(), Location::caller()),
                    seq,
                );
                (seq, rx)
            })
            .collect();
        (waiters, rxs)
    }

    /// What `Wait`'s drop does, lock aside.
    fn leave(waiters: &mut Waiters<()>, (seq, rx): &mut Place) {
        rx.close();
        waiters.cancelled(*seq);
    }

    #[test]
    fn pop_skips_callers_that_left_and_serves_the_rest_in_order() {
        let (mut waiters, mut rxs) = queue(5);
        leave(&mut waiters, &mut rxs[0]);
        leave(&mut waiters, &mut rxs[2]);
        assert_eq!(waiters.live(), 3);
        assert_eq!(waiters.front().map(|w| w.seq), Some(rxs[1].0));
        let served: Vec<u64> = std::iter::from_fn(|| waiters.pop())
            .map(|w| w.seq)
            .collect();
        assert_eq!(served, [rxs[1].0, rxs[3].0, rxs[4].0]);
        assert_eq!((waiters.live(), waiters.queue.len()), (0, 0));
    }

    #[test]
    fn a_caller_leaving_after_it_was_chosen_is_not_counted_twice() {
        let (mut waiters, mut rxs) = queue(2);
        let chosen = waiters.pop().expect("one waits");
        leave(&mut waiters, &mut rxs[0]); // its delivery fails and comes back instead
        assert_eq!((waiters.live(), waiters.queue.len()), (1, 1));
        drop(chosen);
        assert_eq!(waiters.pop().map(|w| w.seq), Some(rxs[1].0));
    }

    #[test]
    fn compaction_drops_the_callers_that_left() {
        let (mut waiters, mut rxs) = queue(200);
        for entry in rxs.iter_mut().take(150) {
            leave(&mut waiters, entry);
        }
        assert!(waiters.queue.len() < 200, "compacted");
        assert_eq!(waiters.live(), 50);
        assert_eq!(waiters.pop().map(|w| w.seq), Some(rxs[150].0));
        assert_eq!((waiters.live(), waiters.queue.len()), (49, 49));
    }
}
