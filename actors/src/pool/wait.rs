//! A caller's wait in one of a pool's queues: its node, receiving what it is served, and
//! leaving early.
//!
//! A `Wait` is made, with its node pinned in the checkout future, before the checkout
//! takes the lock; `take` links the node only through it, so that whatever happens next
//! the `Wait`'s drop runs before the node goes. That drop is the cancel protocol: a node
//! still queued is unlinked under the pool lock and counted out; one served meanwhile
//! gives back what it got (`give_back`), so nothing is lost either way. Shared waiters
//! behind one that left may take room on connections in shared use at once
//! (`serve_shared_in_turn`).

use std::future::poll_fn;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bb8::ManageConnection;

use super::shared::{PoolShared, State};
use super::waiters::{Delivery, Front, Node, Waiters};
use crate::clock::Instant;
use crate::error::CheckoutError;

/// A caller's place in a queue of `M`'s pool, delivering `T`, around its pinned node.
pub(crate) struct Wait<'a, M: ManageConnection, T: Send + 'static> {
    shared: &'a Arc<PoolShared<M>>,
    node: Pin<&'a Node<T>>,
    /// The queue it joins.
    queue: fn(&mut State<M::Connection>) -> &mut Waiters<T>,
    /// Gives back what reached it after it left.
    give_back: fn(&Arc<PoolShared<M>>, T),
    /// `take` registered the waker of the poll now running: the first poll of
    /// `delivered` need not register it again.
    fresh: bool,
}

impl<'a, M: ManageConnection, T: Send + 'static> Wait<'a, M, T> {
    pub(crate) fn new(
        shared: &'a Arc<PoolShared<M>>,
        node: Pin<&'a Node<T>>,
        queue: fn(&mut State<M::Connection>) -> &mut Waiters<T>,
        give_back: fn(&Arc<PoolShared<M>>, T),
    ) -> Self {
        Wait {
            shared,
            node,
            queue,
            give_back,
            fresh: false,
        }
    }

    /// Queues the caller (lock held, by `take`) at place `seq`, to be woken through
    /// `waker`: the waker of the poll now running, which `delivered` then continues.
    pub(crate) fn join(
        &mut self,
        st: &mut State<M::Connection>,
        seq: u64,
        since: Instant,
        location: &'static Location<'static>,
        waker: &Waker,
    ) {
        let front = Front {
            seq,
            since,
            location,
        };
        // SAFETY: the node is pinned and `self` borrows it, so `self` is dropped before
        // it; `self`'s drop unlinks it under the lock if it is still queued. Only `take`
        // calls this, once per `Wait`.
        unsafe { (self.queue)(st).push(self.node, front, waker.clone()) };
        self.fresh = true;
    }

    /// Waits for the delivery. Bounded by the pool's sweeper, which fails the wait with
    /// `Timeout` once `checkout_timeout` has passed (one timer per pool, not per waiter).
    pub(crate) async fn delivered(&mut self) -> Delivery<T> {
        poll_fn(|cx| {
            if let Some(delivery) = self.node.try_take() {
                return Poll::Ready(delivery);
            }
            if std::mem::take(&mut self.fresh) {
                return Poll::Pending;
            }
            // Polled again before being served (by a `select!`, say): the waker may have
            // changed.
            let mut st = self.shared.state.lock();
            if (self.queue)(&mut st).rewake(self.node, cx.waker()) {
                return Poll::Pending;
            }
            drop(st);
            Poll::Ready(self.node.try_take().unwrap_or_else(|| {
                // Neither queued nor served: `join` was never called. Not reached.
                Err(CheckoutError::ShutDown {
                    pool: self.shared.name.clone(),
                })
            }))
        })
        .await
    }
}

impl<M: ManageConnection, T: Send + 'static> Drop for Wait<'_, M, T> {
    fn drop(&mut self) {
        if !self.node.in_play() {
            return; // never queued, or it took its delivery
        }
        let (delivered, serve_shared) = match self.node.try_take() {
            Some(delivery) => (Some(delivery), false),
            None => {
                let mut st = self.shared.state.lock();
                match (self.queue)(&mut st).leave(self.node) {
                    Some(delivery) => (Some(delivery), false),
                    None => (None, st.shared_waiters.live() > 0),
                }
            }
        };
        if let Some(Ok(given)) = delivered {
            (self.give_back)(self.shared, given);
        }
        if serve_shared {
            // Shared waiters behind this one may take room now.
            self.shared.serve_shared_in_turn();
        }
    }
}
