//! A caller's wait in one of a pool's queues: receiving what it is sent, and the cancel
//! protocol when it leaves early.
//!
//! A waiter that leaves (timeout, cancelled future) closes its receiver under the pool
//! lock, then takes whatever was delivered meanwhile and gives it back; if nothing was,
//! it is counted out of its queue. If it was picked but the send had not reached it yet,
//! the send fails and the sender gives the delivery back instead (see
//! `PoolShared::complete`), so nothing is lost either way. Shared waiters behind one
//! that left may take room on connections in shared use at once (`serve_shared_in_turn`).

use std::sync::Arc;

use bb8::ManageConnection;
use tokio::sync::oneshot;

use super::shared::{PoolShared, Queued, State};
use super::waiters::{Delivery, Waiters};
use crate::clock::Instant;
use crate::error::CheckoutError;

/// A place in a queue of `M`'s pool, delivering `T`. Dropping it before the delivery
/// arrived runs the cancel protocol.
pub(crate) struct Wait<'a, M: ManageConnection, T: Send + 'static> {
    shared: &'a Arc<PoolShared<M>>,
    rx: Option<oneshot::Receiver<Delivery<T>>>,
    /// Its place in arrival order.
    seq: u64,
    /// The queue it is in.
    queue: fn(&mut State<M::Connection>) -> &mut Waiters<T>,
    /// Gives back what reached it after it left.
    give_back: fn(&Arc<PoolShared<M>>, T),
}

impl<'a, M: ManageConnection, T: Send + 'static> Wait<'a, M, T> {
    /// Takes over a place `take` queued. Returns when it joined, too.
    pub(crate) fn new(
        shared: &'a Arc<PoolShared<M>>,
        queued: Queued<T>,
        queue: fn(&mut State<M::Connection>) -> &mut Waiters<T>,
        give_back: fn(&Arc<PoolShared<M>>, T),
    ) -> (Self, Instant) {
        let Queued { rx, seq, since } = queued;
        let wait = Wait {
            shared,
            rx: Some(rx),
            seq,
            queue,
            give_back,
        };
        (wait, since)
    }

    /// Waits for the delivery. Bounded by the pool's sweeper, which fails the wait with
    /// `Timeout` once `checkout_timeout` has passed (one timer per pool, not per waiter).
    pub(crate) async fn delivered(mut self) -> Delivery<T> {
        let rx = self.rx.as_mut().expect("received only once");
        let delivery = match rx.await {
            Ok(delivery) => delivery,
            // The sender is only ever dropped after sending; treat it as shutdown.
            Err(_) => Err(CheckoutError::ShutDown {
                pool: self.shared.name.clone(),
            }),
        };
        self.rx = None;
        delivery
    }
}

impl<M: ManageConnection, T: Send + 'static> Drop for Wait<'_, M, T> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let (delivered, serve_shared) = {
            let mut st = self.shared.state.lock();
            rx.close();
            match rx.try_recv() {
                Ok(delivery) => (Some(delivery), false),
                Err(_) => {
                    (self.queue)(&mut st).cancelled(self.seq);
                    (None, st.shared_waiters.live() > 0)
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
