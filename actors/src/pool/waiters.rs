//! The FIFO queues of callers waiting for a connection.
//!
//! A pool keeps two: exclusive checkouts wait for a connection of their own
//! (`Waiters<Conn<C>>`), shared ones for a connection or a place on one in shared use
//! (`Waiters<Given<C>>`, see `sharing`). Both number their callers from one count of
//! arrivals, and a connection coming back goes to whichever front waiter came first, so
//! neither kind can starve the other.
//!
//! A queue is an intrusive list: each waiter's entry is a [`Node`] inside its own
//! checkout future, pinned there, and linked in and out under the pool lock. Joining
//! allocates nothing, and a caller that gives up (timeout, cancelled future) is unlinked
//! at once, so serving and leaving are O(1) however many callers wait. Serving a
//! waiter unlinks its node and writes what it gets into it in one step under the lock,
//! and touches the node no more after that: the waiter reads its delivery without the
//! lock once the node's state says it is there. So nothing is ever sent to a caller that
//! left, and a delivery cannot fail.
//!
//! Waits are bounded without a timer per waiter: every waiter of a pool has the same
//! `checkout_timeout` and the queue is FIFO, so the oldest waiter always has the earliest
//! deadline. One sweeper task per pool (`PoolShared::sweep`) sleeps until that deadline
//! and fails the expired waiters at the front. (A tokio timer per waiter cost more than
//! the whole rest of a contended checkout: see benches/HISTORY.md.)

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::marker::PhantomPinned;
use std::panic::Location;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Waker;
use std::time::Duration;

use crate::clock::Instant;
use crate::error::CheckoutError;

/// What a waiter is sent: a connection (or, for a shared waiter, a place on one), or
/// why it gets none.
pub(crate) type Delivery<T> = Result<T, CheckoutError>;

/// Not in a queue, and nothing delivered: new, or it left.
const OUT: u8 = 0;
/// In a queue.
const LINKED: u8 = 1;
/// Served: out of the queue, its delivery written. The pool no longer touches it.
const DELIVERED: u8 = 2;
/// Its delivery taken by the waiter.
const TAKEN: u8 = 3;

/// A waiter's side of its place in a queue, kept in the waiter's checkout future.
///
/// `pos` is read and written only under the pool lock; `delivery` is written under it,
/// and read by the waiter once `state` is `DELIVERED`: the server's last touch of the
/// node is the release store of that state, and from then on only the waiter uses it.
pub(crate) struct Node<T> {
    state: AtomicU8,
    /// Its place in the queue, counted over every entry the queue ever held.
    pos: UnsafeCell<u64>,
    delivery: UnsafeCell<Option<Delivery<T>>>,
    _pinned: PhantomPinned,
}

/// What the pool reads of a waiter while it queues.
#[derive(Clone, Copy)]
pub(crate) struct Front {
    /// Its place in arrival order, over every queue of the pool.
    pub(crate) seq: u64,
    /// When it joined.
    pub(crate) since: Instant,
    /// Where it checks out from, for leak reports.
    pub(crate) location: &'static Location<'static>,
}

/// The queue's side of a place: what serving needs, kept in the queue's own buffer so
/// that the lock holder reads a waiter's node only to deliver to it.
struct Entry<T> {
    node: NonNull<Node<T>>,
    front: Front,
    waker: Waker,
}

// SAFETY: a node is shared between its waiter and the pool lock's holders by the
// protocol above; what it holds (`T`) is `Send`.
unsafe impl<T: Send> Send for Node<T> {}
// SAFETY: as for `Send`: every access but `state`'s atomics is under the pool lock or
// belongs to the waiter alone.
unsafe impl<T: Send> Sync for Node<T> {}

impl<T> Node<T> {
    pub(crate) fn new() -> Self {
        Node {
            state: AtomicU8::new(OUT),
            pos: UnsafeCell::new(0),
            delivery: UnsafeCell::new(None),
            _pinned: PhantomPinned,
        }
    }

    /// Whether it was ever queued and has not yet left or taken its delivery (no lock
    /// needed: only the waiter queues it, and only the waiter moves it out of
    /// `DELIVERED`).
    pub(crate) fn in_play(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), LINKED | DELIVERED)
    }

    /// Its delivery, if it was served (by the waiter; no lock needed).
    pub(crate) fn try_take(&self) -> Option<Delivery<T>> {
        if self.state.load(Ordering::Acquire) != DELIVERED {
            return None;
        }
        // SAFETY: `DELIVERED` was stored (release) after the delivery was written, and
        // the pool touches the node no more; only the waiter calls this.
        let delivery = unsafe { (*self.delivery.get()).take() };
        self.state.store(TAKEN, Ordering::Relaxed);
        delivery
    }
}

/// One queue, oldest first: a ring buffer of entries, `None` where a caller left.
///
/// `repr(C)`: `live`, which every checkout reads, first (see `State`).
#[repr(C)]
pub(crate) struct Waiters<T> {
    live: usize,
    /// Never starts with `None`.
    queue: VecDeque<Option<Entry<T>>>,
    /// The place (`Node::pos`) of `queue[0]`.
    base: u64,
}

// SAFETY: the nodes it points to are `Send + Sync` for `T: Send`, and it is only used
// under the pool lock.
unsafe impl<T: Send> Send for Waiters<T> {}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            live: 0,
            queue: VecDeque::new(),
            base: 0,
        }
    }
}

impl<T> Waiters<T> {
    /// Callers waiting.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Queues `node` (its caller joining at `front.seq` in arrival order over every
    /// queue of the pool: larger than any place queued before), to be woken through
    /// `waker`.
    ///
    /// # Safety
    ///
    /// `node` is not in any queue, and stays where it is until `leave` (under the same
    /// lock) has been called on this queue for it, or it has been served.
    pub(crate) unsafe fn push(&mut self, node: Pin<&Node<T>>, front: Front, waker: Waker) {
        debug_assert_eq!(node.state.load(Ordering::Relaxed), OUT);
        debug_assert!(self.front().is_none_or(|f| f.seq < front.seq));
        // SAFETY: not queued, so nobody else reads `pos`; we hold the lock.
        unsafe { *node.pos.get() = self.base + self.queue.len() as u64 };
        self.queue.push_back(Some(Entry {
            node: NonNull::from(node.get_ref()),
            front,
            waker,
        }));
        self.live += 1;
        node.state.store(LINKED, Ordering::Relaxed);
    }

    /// The oldest caller waiting.
    pub(crate) fn front(&self) -> Option<Front> {
        self.queue
            .front()
            .map(|e| e.as_ref().expect("the front is live").front)
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.front().map(|f| f.since)
    }

    /// Serves the oldest caller with `delivery`: takes it out of the queue and writes the
    /// delivery into its node. Returns the waker to wake once the lock is released, or
    /// gives the delivery back if nobody waits.
    pub(crate) fn serve(&mut self, delivery: Delivery<T>) -> Result<Waker, Delivery<T>> {
        let Some(entry) = self.queue.pop_front() else {
            return Err(delivery);
        };
        let Entry { node, waker, .. } = entry.expect("the front is live");
        self.base += 1;
        self.live -= 1;
        self.skip_left();
        // SAFETY: a queued node is alive (see `push`); we hold the lock. The release
        // store is the last touch: after it the waiter may take the delivery and free the
        // node.
        unsafe {
            let node = node.as_ref();
            *node.delivery.get() = Some(delivery);
            node.state.store(DELIVERED, Ordering::Release);
        }
        Ok(waker)
    }

    /// The caller of `node` leaves (lock held): if it is still queued it is taken out
    /// and counted out (returns `None`); if it was served meanwhile, its delivery is
    /// returned for it to give back.
    pub(crate) fn leave(&mut self, node: Pin<&Node<T>>) -> Option<Delivery<T>> {
        if node.state.load(Ordering::Acquire) != LINKED {
            return node.try_take();
        }
        let at = self.index(&node);
        self.queue[at] = None;
        self.live -= 1;
        node.state.store(OUT, Ordering::Relaxed);
        self.skip_left();
        if self.queue.len() > 2 * self.live + 64 {
            self.compact();
        }
        None
    }

    /// Replaces the waker of `node` if it is still queued and `waker` would not wake the
    /// same task (lock held). Returns whether it is still queued.
    pub(crate) fn rewake(&mut self, node: Pin<&Node<T>>, waker: &Waker) -> bool {
        if node.state.load(Ordering::Acquire) != LINKED {
            return false;
        }
        let at = self.index(&node);
        let entry = self.queue[at]
            .as_mut()
            .expect("a queued node has its entry");
        if !entry.waker.will_wake(waker) {
            entry.waker = waker.clone();
        }
        true
    }

    /// Where the queued `node` is in `queue` (lock held).
    fn index(&self, node: &Node<T>) -> usize {
        // SAFETY: `pos` is only used under the lock, which we hold.
        let pos = unsafe { *node.pos.get() };
        let at = (pos - self.base) as usize;
        debug_assert!(self.queue[at]
            .as_ref()
            .is_some_and(|e| std::ptr::eq(e.node.as_ptr(), node)));
        at
    }

    /// Drops the places at the front whose callers left.
    fn skip_left(&mut self) {
        while matches!(self.queue.front(), Some(None)) {
            self.queue.pop_front();
            self.base += 1;
        }
    }

    /// Drops the places of callers that left, once they outnumber the live ones, and
    /// tells every live node its new place. Amortized O(1) per leave.
    #[cold]
    fn compact(&mut self) {
        self.queue.retain(Option::is_some);
        for (i, entry) in self.queue.iter().enumerate() {
            let node = entry.as_ref().expect("retained").node;
            // SAFETY: a queued node is alive; `pos` is only used under the lock.
            unsafe { *node.as_ref().pos.get() = self.base + i as u64 };
        }
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
        while let Some(since) = self.oldest() {
            if since + timeout > now {
                return (expired, Some(since + timeout));
            }
            let waited = now.saturating_duration_since(since);
            if let Ok(waker) = self.serve(Err(err(waited))) {
                waker.wake();
            }
            expired += 1;
        }
        (expired, None)
    }

    /// Fails every waiting caller with `err`.
    pub(crate) fn fail_all(&mut self, err: &CheckoutError) {
        while let Ok(waker) = self.serve(Err(err.clone())) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn front(seq: u64) -> Front {
        Front {
            seq,
            since: crate::clock::now(),
            location: Location::caller(),
        }
    }

    #[test]
    fn serves_in_order_and_skips_callers_that_left() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut queue = Waiters::<u64>::default();
        let nodes = [
            pin!(Node::new()),
            pin!(Node::new()),
            pin!(Node::new()),
            pin!(Node::new()),
        ];
        let nodes: Vec<Pin<&Node<u64>>> = nodes.iter().map(|n| n.as_ref()).collect();
        for (i, node) in nodes.iter().enumerate() {
            // SAFETY: every node outlives the queue's use of it (it leaves or is served).
            unsafe { queue.push(*node, front(2 * i as u64 + 1), Waker::from(count.clone())) };
        }
        assert!(queue.leave(nodes[0]).is_none(), "not served: counted out");
        assert!(queue.leave(nodes[2]).is_none());
        assert_eq!(queue.live(), 2);
        assert_eq!(queue.front().map(|f| f.seq), Some(3));
        for value in [10, 20] {
            queue.serve(Ok(value)).expect("someone waits").wake();
        }
        assert!(queue.serve(Ok(30)).is_err(), "nobody left");
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        let got: Vec<_> = nodes.iter().map(|n| n.try_take().map(|d| d.ok())).collect();
        assert_eq!(got, [None, Some(Some(10)), None, Some(Some(20))]);
        assert!(nodes.iter().all(|n| !n.in_play()));
    }

    #[test]
    fn a_caller_leaving_after_it_was_served_gets_its_delivery_back() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut queue = Waiters::<u64>::default();
        let (a, b) = (pin!(Node::new()), pin!(Node::new()));
        // SAFETY: both outlive the queue's use of them.
        unsafe {
            queue.push(a.as_ref(), front(1), Waker::from(count.clone()));
            queue.push(b.as_ref(), front(2), Waker::from(count.clone()));
        }
        drop(queue.serve(Ok(7)));
        assert_eq!(queue.leave(a.as_ref()).map(|d| d.ok()), Some(Some(7)));
        assert_eq!((queue.live(), queue.front().map(|f| f.seq)), (1, Some(2)));
        assert!(queue.leave(b.as_ref()).is_none());
        assert!(queue.front().is_none() && queue.queue.is_empty());
    }

    #[test]
    fn expire_fails_only_the_callers_past_their_deadline() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut queue = Waiters::<u64>::default();
        let (a, b) = (pin!(Node::new()), pin!(Node::new()));
        let start = crate::clock::now();
        let at = |seq, since| Front {
            seq,
            since,
            location: Location::caller(),
        };
        // SAFETY: both outlive the queue's use of them.
        unsafe {
            queue.push(a.as_ref(), at(1, start), Waker::from(count.clone()));
            queue.push(
                b.as_ref(),
                at(2, start + Duration::from_secs(1)),
                Waker::from(count.clone()),
            );
        }
        let timeout = Duration::from_secs(2);
        let (expired, next) =
            queue.expire(start + timeout, timeout, |waited| CheckoutError::Timeout {
                pool: "p".into(),
                waited,
                last_error: None,
            });
        assert_eq!((expired, next), (1, Some(start + Duration::from_secs(3))));
        assert!(matches!(
            a.try_take(),
            Some(Err(CheckoutError::Timeout { .. }))
        ));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        queue.fail_all(&CheckoutError::ShutDown { pool: "p".into() });
        assert!(matches!(
            b.try_take(),
            Some(Err(CheckoutError::ShutDown { .. }))
        ));
        assert_eq!((queue.live(), count.0.load(Ordering::Relaxed)), (0, 2));
    }
}
