//! Shared checkouts: one connection lent to several callers at once, for connections
//! that serve concurrent requests (Redis multiplexing, tokio-postgres pipelining,
//! HTTP/2 streams).
//!
//! A connection in shared use is a [`Slot`] in `State::slots`. The pool holds one `Arc`
//! to it and every [`Shared`] guard one more, so the number of callers on it is
//! `strong_count - 1`. Every clone and every drop of a slot's `Arc` happens under the
//! pool lock; the guard that leaves a slot with no caller takes it out of `slots` and
//! gives its connection back like an exclusive one (to the oldest waiter, or idle).
//!
//! A slot stops taking callers when a caller discards it or panics on it, and after
//! [`SLOT_TERM`] in shared use ([`SLOT_MAX_TERM`] when nothing else could serve the
//! callers waiting). It then drains and comes back, where `has_broken`, `max_lifetime`
//! and validation see it as for any returned connection: a broken connection is not
//! shared for more than a term, or a second under sustained overload.
//!
//! Shared checkouts that must wait join the pool's shared queue. A connection coming back
//! goes to them in arrival order with the exclusive queue (whichever front waiter came
//! first); a shared waiter that gets one puts it into shared use and hands the room left
//! on it to the shared waiters next in turn. A place that a caller leaves on a slot that
//! still takes callers passes straight to the oldest shared waiter when it is their turn
//! (no exclusive waiter came before it), and any room left on the slot to the shared
//! waiters after it; an exclusive waiter leaving the front (served, timed out or gone)
//! gives the shared waiters behind it room on slots (`serve_shared_in_turn`). So neither
//! kind of checkout starves the other.

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;

use super::conn::Conn;
use super::shared::{shared_turn, PoolShared, Queued, State};
use super::stats::CloseReason;
use super::wait::Wait;
use super::waiters::Waiter;
use crate::clock::{self, Instant};
use crate::config::SharePolicy;
use crate::error::CheckoutError;

/// How long a connection stays in shared use before it stops taking new callers and
/// comes back to the pool to be checked, if another place is to be had.
pub const SLOT_TERM: Duration = Duration::from_millis(250);

/// How long a connection takes new shared callers at most, even when nothing else could
/// serve them: under sustained overload it then drains and comes back to be checked, so
/// that a connection that broke while shared is replaced.
pub const SLOT_MAX_TERM: Duration = Duration::from_secs(1);

/// A [`Slot`] as the pool state lists it.
pub(crate) type AnySlot = Arc<dyn Any + Send + Sync>;

/// What a waiting shared checkout is given.
pub(crate) enum Given<C: Send + 'static> {
    /// A connection of its own (counted as lent), to put into shared use.
    Conn(Conn<C>),
    /// A place on a connection in shared use, with its lease id when leak detection is
    /// on.
    Place(AnySlot, Option<u64>),
}

/// A place on a slot picked for a shared waiter under the lock, with its lease: sent
/// once the lock is released.
type Offer<C> = (Waiter<Given<C>>, AnySlot, Option<u64>);

/// A connection in shared use.
pub(crate) struct Slot<C: Send + 'static> {
    conn: Conn<C>,
    /// When it stops taking callers if another place is to be had (`SLOT_TERM`, jittered).
    retire_at: Instant,
    /// When it stops taking callers even in overtime (`SLOT_MAX_TERM`, jittered alike).
    last_call: Instant,
    /// Why it takes no new callers, once it does not.
    retired: parking_lot::Mutex<Option<CloseReason>>,
    /// Set with `retired` (read without the mutex on the fast path).
    closed_to_new: AtomicBool,
}

impl<C: Send + 'static> Slot<C> {
    /// Takes callers: not retired, within its term (or past it, when `overtime`, up to
    /// its last call).
    fn open_to_new(&self, now: Instant, overtime: bool) -> bool {
        !self.closed_to_new.load(Ordering::Relaxed)
            && (now < self.retire_at || overtime && now < self.last_call)
    }

    fn retire(&self, reason: CloseReason) {
        let mut retired = self.retired.lock();
        retired.get_or_insert(reason);
        self.closed_to_new.store(true, Ordering::Relaxed);
    }
}

/// A connection lent to this caller and possibly to others at the same time, from
/// [`PoolHandle::checkout_shared`](crate::PoolHandle::checkout_shared). Derefs to
/// `&M::Connection` (never `&mut`).
///
/// Dropping it leaves the connection; the last caller to leave gives it back to the
/// pool. `discard` (or a panic while holding it) stops further sharing and closes the
/// connection once every caller has left. A connection also stops taking new callers
/// after [`SLOT_TERM`] (or [`SLOT_MAX_TERM`], when nothing else could serve them), and
/// comes back to be checked once its callers have left.
pub struct Shared<M: ManageConnection>
where
    M::Connection: Sync,
{
    slot: Option<Arc<Slot<M::Connection>>>,
    shared: Arc<PoolShared<M>>,
    /// This caller's lease (leak detection on).
    lease: Option<u64>,
    /// When this caller got its place (for the hold-time histogram).
    since: Instant,
}

impl<M: ManageConnection> Shared<M>
where
    M::Connection: Sync,
{
    /// Stops lending this connection; it closes once every caller on it has left.
    pub fn discard(self) {
        if let Some(slot) = &self.slot {
            slot.retire(CloseReason::Discarded);
        }
    }

    /// The name of the pool it came from.
    pub fn pool(&self) -> &str {
        &self.shared.name
    }

    /// The pool's id for this connection (unique within the pool).
    pub fn id(&self) -> u64 {
        self.slot().conn.id
    }

    fn slot(&self) -> &Slot<M::Connection> {
        self.slot.as_ref().expect("slot present until drop")
    }
}

impl<M: ManageConnection> Deref for Shared<M>
where
    M::Connection: Sync,
{
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        self.slot().conn.get()
    }
}

impl<M: ManageConnection> Shared<M>
where
    M::Connection: Sync,
{
    /// A place on `slot`, which the pool gave under the lock.
    pub(crate) fn join(slot: AnySlot, shared: Arc<PoolShared<M>>, lease: Option<u64>) -> Shared<M> {
        Shared {
            slot: Some(downcast(slot)),
            shared,
            lease,
            since: clock::now(),
        }
    }
}

fn downcast<C: Send + Sync + 'static>(slot: AnySlot) -> Arc<Slot<C>> {
    match slot.downcast::<Slot<C>>() {
        Ok(slot) => slot,
        Err(_) => unreachable!("a pool's slots hold its own connection type"),
    }
}

impl<M: ManageConnection> Drop for Shared<M>
where
    M::Connection: Sync,
{
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if std::thread::panicking() {
            slot.retire(CloseReason::Panicked);
        }
        self.shared
            .recorder
            .hold(clock::now().saturating_duration_since(self.since));
        self.shared.leave_slot(slot, self.lease);
    }
}

impl<M: ManageConnection> fmt::Debug for Shared<M>
where
    M::Connection: Sync,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("pool", &self.shared.name)
            .field("id", &self.slot.as_ref().map(|s| s.conn.id))
            .finish()
    }
}

impl<M: ManageConnection> PoolShared<M> {
    /// A new place on a connection in shared use that takes callers and has room (lock
    /// held): the least used one, or with `SharePolicy::Pack` the busiest. Past their
    /// term, slots still take callers when nothing else could serve them now (no idle
    /// connection, no room to open one), until `SLOT_MAX_TERM`.
    pub(crate) fn pick_slot(
        &self,
        st: &State<M::Connection>,
        now: Instant,
        policy: SharePolicy,
    ) -> Option<AnySlot> {
        let limit = self.config.max_shares + 1; // the pool's own reference
        let pick = |overtime: bool| {
            let open = st.slots.iter().filter(|s| {
                Arc::strong_count(s) < limit
                    && s.downcast_ref::<Slot<M::Connection>>()
                        .is_some_and(|s| s.open_to_new(now, overtime))
            });
            match policy {
                SharePolicy::Spread => open.min_by_key(|s| Arc::strong_count(s)),
                SharePolicy::Pack => open.max_by_key(|s| Arc::strong_count(s)),
            }
            .cloned()
        };
        pick(false).or_else(|| overtime(st).then(|| pick(true)).flatten())
    }
}

impl<M: ManageConnection> PoolShared<M> {
    /// Gives the shared waiters whose turn has come places on connections in shared use
    /// with room, as `take` would place newcomers (`pick_slot`): after an exclusive
    /// waiter ahead of them was served, timed out or left. Out of line: called only
    /// while shared checkouts wait.
    #[cold]
    #[inline(never)]
    pub(crate) fn serve_shared_in_turn(&self) {
        let now = clock::now();
        let mut offers = Vec::new();
        {
            let mut st = self.state.lock();
            let policy = self.config.share_policy.unwrap_or_default();
            while st.shared_waiters.live() > 0 && shared_turn(&mut st) {
                let Some(place) = self.pick_slot(&st, now, policy) else {
                    break;
                };
                let waiter = st.shared_waiters.pop().expect("a shared checkout waits");
                let lease = self.open_lease(&mut st, now, waiter.location);
                offers.push((waiter, place, lease));
            }
        }
        self.send_places(offers);
    }

    /// Sends places picked under the lock (lock released); a waiter that left meanwhile
    /// gives its place back.
    fn send_places(&self, offers: Vec<Offer<M::Connection>>) {
        for (waiter, place, lease) in offers {
            if let Err(Ok(Given::Place(back, lease))) =
                waiter.tx.send(Ok(Given::Place(place, lease)))
            {
                let leave = self
                    .leave_place
                    .get()
                    .expect("set by share, before any place");
                leave(self, back, lease);
            }
        }
    }
}

/// Whether slots past their term may take callers (lock held): nothing else could serve
/// them now (no idle connection, no room to open one), and no exclusive checkout waits
/// for one of the connections to come back.
fn overtime<C: Send + 'static>(st: &State<C>) -> bool {
    st.waiters.live() == 0 && st.idle.is_empty() && st.open + st.connecting >= st.max_size
}

impl<M: ManageConnection> PoolShared<M>
where
    M::Connection: Sync,
{
    /// Puts a connection just lent to a shared checkout into shared use, and hands the
    /// room left on it to the shared waiters whose turn it is.
    pub(crate) fn share(self: &Arc<Self>, conn: Conn<M::Connection>) -> Shared<M> {
        self.leave_place
            .get_or_init(|| |pool, slot, lease| pool.leave_slot(downcast(slot), lease));
        let now = clock::now();
        // Jittered down by up to half, so that slots opened together do not retire
        // together.
        let jitter = 1.0 - fastrand::f64() * 0.5;
        let slot = Arc::new(Slot {
            conn,
            retire_at: now + SLOT_TERM.mul_f64(jitter),
            last_call: now + SLOT_MAX_TERM.mul_f64(jitter),
            retired: parking_lot::Mutex::new(None),
            closed_to_new: AtomicBool::new(false),
        });
        let mut offers = Vec::new();
        let lease = {
            let mut st = self.state.lock();
            // Leases are per caller: the connection's own becomes this first caller's.
            let first = st.leases.as_mut().and_then(|l| l.remove(&slot.conn.id));
            st.slots.push(slot.clone() as AnySlot);
            let lease = first.and_then(|l| self.open_lease(&mut st, l.since, l.location));
            self.offer_room(&mut st, &slot, now, &mut offers);
            lease
        };
        self.send_places(offers);
        Shared {
            since: slot.conn.lent_at,
            slot: Some(slot),
            shared: self.clone(),
            lease,
        }
    }

    /// Hands the room left on `slot` to the shared waiters whose turn it is, one new
    /// place each, into `offers` (lock held; every clone of a slot happens under it).
    fn offer_room(
        &self,
        st: &mut State<M::Connection>,
        slot: &Arc<Slot<M::Connection>>,
        now: Instant,
        offers: &mut Vec<Offer<M::Connection>>,
    ) {
        let limit = self.config.max_shares + 1; // the pool's own reference
        while st.shared_waiters.live() > 0 && Arc::strong_count(slot) < limit && shared_turn(st) {
            let waiter = st.shared_waiters.pop().expect("a shared checkout waits");
            let lease = self.open_lease(st, now, waiter.location);
            offers.push((waiter, slot.clone() as AnySlot, lease));
        }
    }

    /// A caller leaves `slot` (with its lease, if any). If the slot still takes callers
    /// and the oldest shared waiter's turn has come, the place passes to it, and any
    /// room left on the slot to the shared waiters next in turn (callers that queued
    /// behind an exclusive one find it there once that one is served); else the caller
    /// that leaves the slot with nobody on it gives the connection back.
    pub(crate) fn leave_slot(&self, mut slot: Arc<Slot<M::Connection>>, mut lease: Option<u64>) {
        loop {
            let now = clock::now();
            let ptr = Arc::as_ptr(&slot);
            let mut room = Vec::new();
            let (offer, last) = {
                let mut st = self.state.lock();
                if let (Some(id), Some(leases)) = (lease, st.leases.as_mut()) {
                    leases.remove(&id);
                }
                if st.shared_waiters.live() > 0
                    && slot.open_to_new(now, overtime(&st))
                    && shared_turn(&mut st)
                {
                    let waiter = st.shared_waiters.pop().expect("a shared checkout waits");
                    let lease = self.open_lease(&mut st, now, waiter.location);
                    self.offer_room(&mut st, &slot, now, &mut room);
                    (Some((waiter, lease, slot)), None)
                } else {
                    drop(slot);
                    let at = st
                        .slots
                        .iter()
                        .position(|s| std::ptr::addr_eq(Arc::as_ptr(s), ptr))
                        .expect("a shared slot stays listed while a caller holds it");
                    let last =
                        (Arc::strong_count(&st.slots[at]) == 1).then(|| st.slots.swap_remove(at));
                    (None, last)
                }
            };
            self.send_places(room);
            if let Some((waiter, new_lease, place)) = offer {
                // The place moves to the waiter as it is: no count changes hands.
                match waiter
                    .tx
                    .send(Ok(Given::Place(place as AnySlot, new_lease)))
                {
                    Ok(()) => return,
                    // That waiter left meanwhile: the place is ours to leave again.
                    Err(Ok(Given::Place(back, back_lease))) => {
                        slot = downcast(back);
                        lease = back_lease;
                        continue;
                    }
                    Err(_) => unreachable!("we sent a place"),
                }
            }
            let Some(last) = last else { return };
            let Ok(Slot {
                mut conn, retired, ..
            }) = Arc::try_unwrap(downcast::<M::Connection>(last))
            else {
                unreachable!("no caller is left on the slot and every clone happens under the lock")
            };
            let close = retired.into_inner().or_else(|| {
                self.manager
                    .has_broken(conn.get_mut())
                    .then_some(CloseReason::Broken)
            });
            self.put_back_shared(conn, close);
            return;
        }
    }

    /// Waits in the shared queue for a connection or a place on one. Bounded by the
    /// pool's sweeper (`checkout_timeout`), as an exclusive wait.
    pub(crate) async fn wait_shared(
        self: &Arc<Self>,
        queued: Queued<Given<M::Connection>>,
    ) -> Result<Shared<M>, CheckoutError> {
        let (wait, since) = Wait::new(
            self,
            queued,
            |st| &mut st.shared_waiters,
            |shared, given| match given {
                Given::Conn(conn) => shared.put_back_unused(conn),
                Given::Place(slot, lease) => shared.leave_slot(downcast(slot), lease),
            },
        );
        let delivery = wait.delivered().await;
        // Recorded here: a caller that left before it was served did not check out.
        Ok(match delivery? {
            Given::Conn(conn) => {
                let waited = conn.lent_at.saturating_duration_since(since);
                self.recorder.checkout(waited);
                self.share(conn)
            }
            Given::Place(slot, lease) => {
                let shared = Shared::join(slot, self.clone(), lease);
                self.recorder
                    .checkout(shared.since.saturating_duration_since(since));
                shared
            }
        })
    }
}
