//! The state a pool shares between its actor, its handles and its lent connections.
//!
//! Checkout and return run here, in the caller's task, under one short lock and without
//! a mailbox round trip. The lock is never held across an `.await`, and no connection
//! (hence no budget permit) is ever dropped while it is held.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bb8::ManageConnection;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use ractor::ActorRef;
use tokio::sync::{oneshot, Notify};

use super::actor::PoolMsg;
use super::conn::{Closer, Conn};
use super::recorder::Recorder;
use super::sharing::{AnySlot, Given};
use super::stats::{CheckoutCounts, CloseReason, PoolSnapshot, Stats, LATENCY_BUCKETS};
use super::status::{Admin, Health, PoolStatus};
use super::waiters::{Delivery, Waiter, Waiters};
use crate::budget::{Budget, BudgetListener};
use crate::clock::{self, Instant};
use crate::config::{PoolConfig, SharePolicy, Validation};
use crate::error::CheckoutError;
use crate::event::{EventBus, EventKind};

pub(crate) struct Lease {
    pub(crate) since: Instant,
    pub(crate) location: &'static Location<'static>,
    pub(crate) reported: bool,
}

/// `repr(C)`: what every checkout and return writes (`idle`, `lent`, and under load
/// `waiters`) comes first, on the cache line of the lock word, so that two cores under
/// load pass as few lines back and forth as they can. The rest is only read on the hot
/// path, and a line only read stays in both cores' caches.
#[repr(C)]
pub(crate) struct State<C: Send + 'static> {
    /// Idle connections; the most recently returned is last (lent first).
    pub(crate) idle: Vec<Conn<C>>,
    pub(crate) lent: usize,
    /// The pool itself while `lent > 0`: what keeps it alive for the guards, which hold
    /// no reference count of their own (see `Pooled`). Taken when `lent` drops to zero
    /// and dropped by whoever took it once it no longer uses the pool.
    pub(crate) keep_alive: Option<KeepAlive>,
    /// Exclusive checkouts waiting, oldest first.
    pub(crate) waiters: Waiters<Conn<C>>,
    /// Shared checkouts waiting, oldest first: for a connection, in arrival order with
    /// `waiters`, or for a place on one in shared use (see `sharing`).
    pub(crate) shared_waiters: Waiters<Given<C>>,
    /// Callers that joined either queue so far: the next one's place is one more.
    pub(crate) arrivals: u64,
    /// Connections that exist: idle, lent and being validated.
    pub(crate) open: usize,
    pub(crate) connecting: usize,
    pub(crate) validating: usize,
    pub(crate) max_size: usize,
    /// Lent connections to close when they come back, their budget going to another
    /// pool's callers (the supervisor asked: `PoolState::reclaim`).
    pub(crate) owed: usize,
    pub(crate) admin: Admin,
    pub(crate) health: Health,
    pub(crate) down_since: Option<Instant>,
    pub(crate) last_error: Option<Arc<str>>,
    /// A `Nudge` is in the actor's mailbox; do not send another.
    pub(crate) nudged: bool,
    pub(crate) exhausted_reported: bool,
    /// Lent connections by id, kept only when `leak_threshold` is set.
    pub(crate) leases: Option<HashMap<u64, Lease>>,
    /// Connections in shared use (counted in `lent`, one each): `sharing::Slot<C>`s, kept
    /// type-erased so that the state stays `Send` for connections that are not `Sync`
    /// (only those that are can be shared).
    pub(crate) slots: Vec<AnySlot>,
    pub(crate) stats: Stats,
}

/// A strong reference to a pool, type-erased so that `State` need not name the manager.
pub(crate) type KeepAlive = Arc<dyn Send + Sync>;

/// What a checkout attempt found.
pub(crate) enum Take<C: Send + 'static> {
    Ready(Conn<C>),
    /// A place on a connection in shared use (shared checkouts only), with its lease id
    /// when leak detection is on.
    Share(AnySlot, Option<u64>),
    /// A place in the exclusive queue.
    Wait(Queued<Conn<C>>),
    /// A place in the shared queue (shared checkouts only).
    WaitShared(Queued<Given<C>>),
    Fail(CheckoutError),
}

/// A caller's place in a queue.
pub(crate) struct Queued<T: Send + 'static> {
    pub(crate) rx: oneshot::Receiver<Delivery<T>>,
    /// Its place in arrival order (for the cancel protocol, `wait`).
    pub(crate) seq: u64,
    /// When it joined.
    pub(crate) since: Instant,
}

/// Where `hand_over` sent a connection; `complete` finishes it outside the lock.
#[must_use]
pub(crate) enum Handed<C: Send + 'static> {
    /// Into the idle set.
    Kept,
    /// To the oldest waiter, already counted as lent to it: still to be sent, so that
    /// the wake is not paid under the lock. (The waiter records its checkout when it
    /// gets the connection.)
    Deliver(Waiter<Conn<C>>, Conn<C>),
    /// As `Deliver`, to a shared checkout, which puts it into shared use.
    DeliverShared(Waiter<Given<C>>, Conn<C>),
    /// Off the count (the pool no longer lends, or it shrank): to be dropped.
    Close(Conn<C>),
}

/// An idle connection moved out of the idle set on the way.
enum Stale<C: Send + 'static> {
    Closed(Conn<C>),
    Validate(Conn<C>),
}

pub(crate) struct PoolShared<M: ManageConnection> {
    pub(crate) name: Arc<str>,
    pub(crate) backend: Arc<str>,
    /// This pool's slot in the budget and in the supervisor.
    pub(crate) index: usize,
    pub(crate) manager: Arc<M>,
    pub(crate) config: PoolConfig,
    /// Set for managers that can tell when the server let go of a closed connection.
    pub(super) closer: Option<Closer<M::Connection>>,
    /// Run on every new connection before it is lent (`SupervisorBuilder::customize`).
    pub(super) customizer: Option<Customizer<M>>,
    /// On cache lines of its own: both cores write it under load, while the fields
    /// around it are only read.
    pub(crate) state: CachePadded<Mutex<State<M::Connection>>>,
    /// The live pool actor, replaced on restart; handles never hold it.
    pub(crate) actor: Mutex<Option<ActorRef<PoolMsg>>>,
    pub(crate) events: EventBus,
    pub(crate) budget: Arc<Budget>,
    /// Woken whenever a connection closes or comes back while the pool is not running.
    pub(crate) settled: Notify,
    /// Wakes the sweeper when the waiter queue stops being empty (and when the pool goes).
    sweeper: Arc<Notify>,
    /// Checkouts, wait and hold times, recorded outside the lock.
    pub(crate) recorder: Recorder,
    /// Whether the last exclusive checkout had to queue: a guess, read without the lock,
    /// that the next one will too, so that it makes its channel before taking the lock.
    /// Written only when the guess turns out wrong.
    queueing: AtomicBool,
    next_id: AtomicU64,
    /// How a place on a connection in shared use is left (`leave_slot`), for code that
    /// does not require `Sync` connections: set by the first `share`, before any place
    /// exists.
    pub(crate) leave_place: OnceLock<LeavePlace<M>>,
    /// Itself, for `keep_alive`.
    this: Weak<Self>,
}

/// `PoolShared::leave_slot` for a type-erased slot.
pub(crate) type LeavePlace<M> = fn(&PoolShared<M>, AnySlot, Option<u64>);

/// What the builder knows of a pool before it starts.
pub(crate) struct PoolSpec<M: ManageConnection> {
    pub(crate) name: Arc<str>,
    pub(crate) backend: Arc<str>,
    /// Its slot in the budget and in the supervisor.
    pub(crate) index: usize,
    pub(crate) manager: Arc<M>,
    pub(crate) config: PoolConfig,
    pub(crate) closer: Option<Closer<M::Connection>>,
    pub(crate) customizer: Option<Customizer<M>>,
}

/// bb8's connection customizer, for `M`'s connections.
pub(crate) type Customizer<M> = Arc<
    dyn bb8::CustomizeConnection<
        <M as ManageConnection>::Connection,
        <M as ManageConnection>::Error,
    >,
>;

impl<M: ManageConnection> PoolShared<M> {
    pub(crate) fn new(spec: PoolSpec<M>, events: EventBus, budget: Arc<Budget>) -> Arc<Self> {
        let PoolSpec {
            name,
            backend,
            index,
            manager,
            config,
            closer,
            customizer,
        } = spec;
        let state = State {
            idle: Vec::with_capacity(config.max_size),
            waiters: Waiters::default(),
            shared_waiters: Waiters::default(),
            arrivals: 0,
            open: 0,
            connecting: 0,
            validating: 0,
            lent: 0,
            keep_alive: None,
            max_size: config.max_size,
            owed: 0,
            admin: Admin::Running,
            health: Health::Up,
            down_since: None,
            last_error: None,
            nudged: false,
            exhausted_reported: false,
            leases: config.leak_threshold.map(|_| HashMap::new()),
            slots: Vec::new(),
            stats: Stats::default(),
        };
        let shared = Arc::new_cyclic(|this| PoolShared {
            name,
            backend,
            index,
            manager,
            config,
            closer,
            customizer,
            state: CachePadded::new(Mutex::new(state)),
            actor: Mutex::new(None),
            events,
            budget,
            settled: Notify::new(),
            sweeper: Arc::new(Notify::new()),
            recorder: Recorder::default(),
            queueing: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            leave_place: OnceLock::new(),
            this: this.clone(),
        });
        let listener: Arc<dyn BudgetListener> = shared.clone();
        shared.budget.set_listener(index, Arc::downgrade(&listener));
        tokio::spawn(Self::sweep(Arc::downgrade(&shared), shared.sweeper.clone()));
        shared
    }

    /// Fails waiters whose `checkout_timeout` has passed, oldest first, and returns the
    /// deadline of the oldest one left.
    fn expire_waiters(&self, now: Instant) -> Option<Instant> {
        let timeout = self.config.checkout_timeout;
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let last_error = st.last_error.clone();
        let err = |waited| CheckoutError::Timeout {
            pool: self.name.clone(),
            waited,
            last_error: last_error.clone(),
        };
        let (exclusive, next) = st.waiters.expire(now, timeout, err);
        let (shared, next_shared) = st.shared_waiters.expire(now, timeout, err);
        st.stats.timeouts += exclusive + shared;
        // Shared waiters behind exclusive ones that timed out may take room now.
        let serve_shared = exclusive > 0 && st.shared_waiters.live() > 0;
        drop(guard);
        if serve_shared {
            self.serve_shared_in_turn();
        }
        next.into_iter().chain(next_shared).min()
    }

    /// The pool's one timer: bounds every wait (see `waiters`). Holds the pool only
    /// weakly; ends when the pool is dropped.
    ///
    /// A deadline it slept until counts as reached, whatever the clock says: so that
    /// tokio's timer, not the pool's clock, decides, and a test that pauses tokio's clock
    /// sees its checkouts time out in tokio's time even without `tokio-clock`.
    async fn sweep(pool: Weak<Self>, wake: Arc<Notify>) {
        let mut reached = None;
        loop {
            let now = clock::now();
            let next = match pool.upgrade() {
                Some(shared) => shared.expire_waiters(reached.map_or(now, |at| now.max(at))),
                None => return,
            };
            reached = next;
            match next {
                // Later waiters have later deadlines: nothing can expire before `at`.
                Some(at) => tokio::time::sleep_until(clock::tokio_instant(at)).await,
                None => wake.notified().await,
            }
        }
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        self.events.emit(&self.name, &self.backend, kind);
    }

    /// The error a checkout gets when the pool does not lend at all now.
    pub(crate) fn refusal(&self, admin: Admin) -> Option<CheckoutError> {
        if admin == Admin::Running {
            return None;
        }
        let pool = self.name.clone();
        match admin {
            Admin::Running => None,
            Admin::Paused => Some(CheckoutError::Paused { pool }),
            Admin::Draining | Admin::Drained => Some(CheckoutError::Draining { pool }),
            Admin::ShutDown => Some(CheckoutError::ShutDown { pool }),
            Admin::Failed { restarts } => Some(CheckoutError::Failed { pool, restarts }),
        }
    }

    /// Fails every waiter with `err` (lock held).
    pub(crate) fn fail_waiters(&self, st: &mut State<M::Connection>, err: &CheckoutError) {
        st.waiters.fail_all(err);
        st.shared_waiters.fail_all(err);
    }

    pub(crate) fn unavailable(&self, st: &State<M::Connection>) -> CheckoutError {
        CheckoutError::Unavailable {
            pool: self.name.clone(),
            cause: st
                .last_error
                .clone()
                .unwrap_or_else(|| "backend unreachable".into()),
        }
    }

    fn needs_validation(&self, conn: &Conn<M::Connection>, now: Instant) -> bool {
        match self.config.validation {
            Validation::Always => true,
            Validation::Never => false,
            Validation::IfIdleFor(d) => conn.idle_since.checked_add(d).is_some_and(|t| now > t),
        }
    }

    /// Bookkeeping for a connection about to be lent (lock held).
    /// (The checkout itself is recorded outside the lock, in `recorder`.)
    fn lend(
        &self,
        st: &mut State<M::Connection>,
        conn: &mut Conn<M::Connection>,
        now: Instant,
        location: &'static Location<'static>,
    ) {
        if st.keep_alive.is_none() {
            // Whoever lends holds the pool (an `Arc`, or a guard while `lent > 0`), so
            // it is alive.
            st.keep_alive = self.this.upgrade().map(|pool| pool as KeepAlive);
            debug_assert!(st.keep_alive.is_some(), "lending from a pool being dropped");
        }
        st.lent += 1;
        if st.lent > st.stats.peak_lent {
            st.stats.peak_lent = st.lent;
        }
        conn.lent_at = now;
        conn.location = location;
        if let Some(leases) = st.leases.as_mut() {
            leases.insert(
                conn.id,
                Lease {
                    since: now,
                    location,
                    reported: false,
                },
            );
        }
    }

    /// The fast path of a checkout: an idle connection if one is ready and nobody waits
    /// before us; else a place in the queue; else an error.
    ///
    /// A shared checkout (`share`) that finds no idle connection takes a place on a
    /// connection in shared use with room, if there is one and nobody waits; with
    /// `SharePolicy::Pack` it tries such a place before the idle connections. Else it
    /// joins the shared queue.
    pub(crate) fn take(
        self: &Arc<Self>,
        location: &'static Location<'static>,
        share: bool,
    ) -> Take<M::Connection> {
        let now = clock::now();
        let mut stale = Vec::new();
        let mut nudge = false;
        let mut exhausted_event = None;
        let mut wake_sweeper = false;
        // Allocating under the lock would lengthen every queued checkout's hold on it.
        let queueing = !share && self.queueing.load(Ordering::Relaxed);
        let channel = queueing.then(oneshot::channel);
        let mut st = self.state.lock();
        if let Some(err) = self.refusal(st.admin) {
            st.stats.refused += 1;
            return Take::Fail(err);
        }
        let mut found = None;
        // Strict FIFO: while anyone waits, newcomers queue behind them.
        let nobody_waits = st.waiters.live() == 0 && st.shared_waiters.live() == 0;
        // Packing shared checkouts try a connection in shared use before an idle one.
        let policy = self.config.share_policy.unwrap_or_default();
        let mut slot = match policy {
            SharePolicy::Pack if share && nobody_waits => {
                self.pick_slot(&st, now, SharePolicy::Pack)
            }
            _ => None,
        };
        if slot.is_none() && nobody_waits {
            while let Some(mut conn) = st.idle.pop() {
                // `has_broken` is synchronous and cheap by contract: a connection whose
                // driver already saw it close is replaced before anyone gets it.
                let close = if conn.expired(now) {
                    Some(CloseReason::Lifetime)
                } else if self.manager.has_broken(conn.get_mut()) {
                    Some(CloseReason::Broken)
                } else {
                    None
                };
                if let Some(reason) = close {
                    st.open -= 1;
                    st.stats.closed(reason);
                    stale.push(Stale::Closed(conn));
                } else if self.needs_validation(&conn, now) {
                    // One validation for this caller; the rest stay idle and are fed to
                    // waiters one each (`feed_validations`).
                    st.validating += 1;
                    stale.push(Stale::Validate(conn));
                    break;
                } else {
                    self.lend(&mut st, &mut conn, now, location);
                    found = Some(conn);
                    break;
                }
            }
        }
        if slot.is_none() && found.is_none() && share && nobody_waits {
            slot = self.pick_slot(&st, now, policy);
        }
        let outcome = match found {
            Some(conn) => Take::Ready(conn),
            None if slot.is_some() => {
                let lease = self.open_lease(&mut st, now, location);
                Take::Share(slot.expect("checked"), lease)
            }
            None if st.health == Health::Down && st.validating == 0 => {
                st.stats.unavailable += 1;
                Take::Fail(self.unavailable(&st))
            }
            None if st.waiters.live() + st.shared_waiters.live() >= self.config.max_waiters => {
                st.stats.exhausted += 1;
                let waiters = st.waiters.live() + st.shared_waiters.live();
                if !st.exhausted_reported {
                    st.exhausted_reported = true;
                    exhausted_event = Some(waiters);
                }
                Take::Fail(CheckoutError::Exhausted {
                    pool: self.name.clone(),
                    waiters,
                })
            }
            None => {
                wake_sweeper = nobody_waits;
                st.arrivals += 1;
                let seq = st.arrivals;
                let outcome = if share {
                    let (tx, rx) = oneshot::channel();
                    st.shared_waiters.push(Waiter::new(tx, now, location), seq);
                    Take::WaitShared(Queued {
                        rx,
                        seq,
                        since: now,
                    })
                } else {
                    let (tx, rx) = channel.unwrap_or_else(oneshot::channel);
                    st.waiters.push(Waiter::new(tx, now, location), seq);
                    Take::Wait(Queued {
                        rx,
                        seq,
                        since: now,
                    })
                };
                self.feed_validations(&mut st, now, &mut stale);
                // The actor only needs to hear of it if it could open a connection.
                if !st.nudged && st.open + st.connecting < st.max_size {
                    st.nudged = true;
                    nudge = true;
                }
                outcome
            }
        };
        drop(st);
        if !share && queueing != matches!(outcome, Take::Wait(_)) {
            self.queueing.store(!queueing, Ordering::Relaxed);
        }
        if matches!(outcome, Take::Ready(_) | Take::Share(..)) {
            self.recorder.checkout(Duration::ZERO);
        }
        if wake_sweeper {
            self.sweeper.notify_one();
        }
        if let Some(waiters) = exhausted_event {
            self.emit(EventKind::Exhausted { waiters });
        }
        if !stale.is_empty() {
            self.dispose(stale);
        }
        if nudge {
            self.nudge();
        }
        outcome
    }

    /// Idle connections can sit beside waiters only when they need validation (a checkout
    /// validates one, not all). Starts validations until there is one per waiter, closing
    /// any found broken or expired on the way.
    fn feed_validations(
        &self,
        st: &mut State<M::Connection>,
        now: Instant,
        stale: &mut Vec<Stale<M::Connection>>,
    ) {
        while st.validating < st.waiters.live() + st.shared_waiters.live() {
            let Some(mut conn) = st.idle.pop() else { break };
            if conn.expired(now) || self.manager.has_broken(conn.get_mut()) {
                st.open -= 1;
                st.stats.closed(CloseReason::Broken);
                stale.push(Stale::Closed(conn));
            } else {
                st.validating += 1;
                stale.push(Stale::Validate(conn));
            }
        }
    }

    fn dispose(self: &Arc<Self>, stale: Vec<Stale<M::Connection>>) {
        let mut any_closed = false;
        for s in stale {
            match s {
                Stale::Closed(conn) => {
                    drop(conn);
                    any_closed = true;
                }
                Stale::Validate(conn) => self.spawn_validation(conn),
            }
        }
        if any_closed {
            self.after_close();
        }
    }

    /// Gives a connection to the oldest waiter, or to the idle set, or takes it off the
    /// count if the pool no longer lends (lock held). The caller passes the result to
    /// `complete` once the lock is released.
    fn hand_over(
        &self,
        st: &mut State<M::Connection>,
        mut conn: Conn<M::Connection>,
        now: Instant,
    ) -> Handed<M::Connection> {
        match st.admin {
            Admin::Running | Admin::Paused => {}
            Admin::Draining | Admin::Drained | Admin::ShutDown | Admin::Failed { .. } => {
                st.open -= 1;
                st.stats.closed(CloseReason::Shutdown);
                return Handed::Close(conn);
            }
        }
        if st.open > st.max_size || st.owed > 0 {
            return shrink(st, conn);
        }
        // (`live` first: the common return finds nobody waiting.)
        if st.shared_waiters.live() > 0 && shared_turn(st) {
            if let Some(waiter) = st.shared_waiters.pop() {
                self.lend(st, &mut conn, now, waiter.location);
                return Handed::DeliverShared(waiter, conn);
            }
        }
        if st.waiters.live() > 0 {
            if let Some(waiter) = st.waiters.pop() {
                self.lend(st, &mut conn, now, waiter.location);
                return Handed::Deliver(waiter, conn);
            }
        }
        st.idle.push(conn);
        Handed::Kept
    }

    /// Finishes a `hand_over` after the lock is released.
    ///
    /// A waiter chosen under the lock may give up before the send reaches it: its cancel
    /// (`Wait`'s drop) then finds nothing and leaves the count to us, and the send fails
    /// and gives the connection back. Its lend is undone and the connection goes to the
    /// next waiter, so it is never lost.
    ///
    /// Returns what it took to keep the pool alive (see `hold_pool`) if that undoing needed
    /// it: the caller drops it once it no longer uses the pool.
    ///
    /// A connection on its way to a waiter is still counted in `lent`, so the pool
    /// outlives a failed send.
    #[must_use]
    pub(crate) fn complete(&self, mut handed: Handed<M::Connection>) -> Option<KeepAlive> {
        let mut held = None;
        loop {
            match handed {
                Handed::Kept => return held,
                Handed::Close(conn) => {
                    drop(conn);
                    self.after_close();
                    return held;
                }
                Handed::Deliver(waiter, conn) => {
                    let back = match waiter.tx.send(Ok(conn)) {
                        Ok(()) => return held,
                        Err(Ok(back)) => back,
                        Err(Err(_)) => unreachable!("we sent Ok"),
                    };
                    handed = self.undo_delivery(back, &mut held);
                }
                Handed::DeliverShared(waiter, conn) => {
                    let back = match waiter.tx.send(Ok(Given::Conn(conn))) {
                        Ok(()) => return held,
                        Err(Ok(Given::Conn(back))) => back,
                        Err(_) => unreachable!("we sent a connection"),
                    };
                    handed = self.undo_delivery(back, &mut held);
                }
            }
        }
    }

    /// A connection sent to a waiter that had left came back: its lend is undone and it
    /// is handed over again.
    fn undo_delivery(
        &self,
        back: Conn<M::Connection>,
        held: &mut Option<KeepAlive>,
    ) -> Handed<M::Connection> {
        let now = clock::now();
        let mut st = self.state.lock();
        st.lent -= 1;
        if let Some(leases) = st.leases.as_mut() {
            leases.remove(&back.id);
        }
        let handed = self.hand_over(&mut st, back, now);
        // Only a pass that ends the loop (idle or closed) can need a hold.
        debug_assert!(held.is_none());
        *held = hold_pool(&mut st, matches!(handed, Handed::Close(_)));
        handed
    }

    /// A caller gives a connection back (from `Pooled`'s drop). `close` is set when the
    /// caller already knows it must not be reused.
    ///
    /// Returns what kept the pool alive for the return (see `hold_pool`); a `Pooled`
    /// drops it only after this call, since it may be the pool's last reference and
    /// `&self` must not outlive the pool.
    #[must_use]
    pub(crate) fn put_back(
        &self,
        conn: Conn<M::Connection>,
        close: Option<CloseReason>,
    ) -> Option<KeepAlive> {
        self.give_back(conn, close, true)
    }

    /// A connection delivered to a waiter that had left: back, without a hold to record.
    /// (The waiter's handle holds the pool.)
    pub(crate) fn put_back_unused(&self, conn: Conn<M::Connection>) {
        drop(self.give_back(conn, None, false));
    }

    /// A connection back from shared use; its callers recorded their holds themselves.
    /// (Its `Shared` guard holds the pool.)
    pub(crate) fn put_back_shared(&self, conn: Conn<M::Connection>, close: Option<CloseReason>) {
        drop(self.give_back(conn, close, false));
    }

    #[must_use]
    fn give_back(
        &self,
        mut conn: Conn<M::Connection>,
        close: Option<CloseReason>,
        hold: bool,
    ) -> Option<KeepAlive> {
        let now = clock::now();
        if hold {
            self.recorder
                .hold(now.saturating_duration_since(conn.lent_at));
        }
        let mut st = self.state.lock();
        st.lent -= 1;
        if let Some(leases) = st.leases.as_mut() {
            leases.remove(&conn.id);
        }
        let close = close.or_else(|| conn.expired(now).then_some(CloseReason::Lifetime));
        let handed = match close {
            Some(reason) => {
                st.open -= 1;
                st.stats.closed(reason);
                Handed::Close(conn)
            }
            None => {
                conn.idle_since = now;
                self.hand_over(&mut st, conn, now)
            }
        };
        // An exclusive waiter got it: shared ones behind it may now take room on
        // connections in shared use.
        let serve_shared = st.shared_waiters.live() > 0 && matches!(handed, Handed::Deliver(..));
        let running = st.admin == Admin::Running;
        let closing = matches!(handed, Handed::Close(_));
        let held = hold_pool(&mut st, closing || !running);
        drop(st);
        let also_held = self.complete(handed);
        if serve_shared {
            self.serve_shared_in_turn();
        }
        if !closing && !running {
            self.settled.notify_waiters();
        }
        held.or(also_held)
    }

    /// Closes a connection that is not counted as lent or idle (validation failure,
    /// reclaim, reaping): takes it off the count and drops it.
    pub(crate) fn close(&self, conn: Conn<M::Connection>, reason: CloseReason) {
        {
            let mut st = self.state.lock();
            st.open -= 1;
            st.stats.closed(reason);
        }
        drop(conn);
        self.after_close();
    }

    /// After a connection was taken off the count (its permit comes back when its close
    /// completes): wake drains, and let the
    /// actor replace it if someone needs one.
    pub(crate) fn after_close(&self) {
        let nudge = {
            let mut st = self.state.lock();
            let wanted = st.waiters.live() + st.shared_waiters.live() > 0
                || st.open + st.connecting < self.config.min_idle;
            let nudge = wanted && !st.nudged && st.admin == Admin::Running;
            if nudge {
                st.nudged = true;
            }
            nudge
        };
        self.settled.notify_waiters();
        if nudge {
            self.nudge();
        }
    }

    /// Asks the live pool actor to look at demand. Lost if no actor is alive; the next
    /// actor looks at demand when it starts.
    pub(crate) fn nudge(&self) {
        let actor = self.actor.lock().clone();
        let sent = actor.is_some_and(|a| a.cast(PoolMsg::Nudge).is_ok());
        if !sent {
            self.state.lock().nudged = false;
        }
    }

    /// Records a lease for one caller on a shared connection (lock held), when leak
    /// detection is on: its id, distinct from every connection's.
    pub(crate) fn open_lease(
        &self,
        st: &mut State<M::Connection>,
        since: Instant,
        location: &'static Location<'static>,
    ) -> Option<u64> {
        let leases = st.leases.as_mut()?;
        let id = self.next_id();
        leases.insert(
            id,
            Lease {
                since,
                location,
                reported: false,
            },
        );
        Some(id)
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new connection is ready (its connect task counted it in `connecting`): to the
    /// oldest waiter, else idle.
    pub(super) fn opened(self: &Arc<Self>, conn: Conn<M::Connection>, now: Instant) {
        let handed = {
            let mut st = self.state.lock();
            st.connecting -= 1;
            st.open += 1;
            st.stats.connects_ok += 1;
            self.hand_over(&mut st, conn, now)
        };
        // `self` is an `Arc`: what `complete` holds is never the last reference.
        drop(self.complete(handed));
    }

    /// A connect failed (its permit already released, or on its way with the connection
    /// being closed): counted, and remembered as the pool's last error.
    pub(super) fn connect_failed(&self, cause: String) -> Arc<str> {
        tracing::warn!(pool = %self.name, %cause, "connect failed");
        let cause: Arc<str> = cause.into();
        {
            let mut st = self.state.lock();
            st.connecting -= 1;
            st.stats.connects_failed += 1;
            st.last_error = Some(cause.clone());
        }
        self.settled.notify_waiters();
        cause
    }

    /// An idle connection's validation ended: if it passed (and the connection has not
    /// expired meanwhile), lent to the oldest waiter or put back; else closed, and the
    /// waiter it was meant for gets the next idle connection.
    pub(super) fn validated(self: &Arc<Self>, mut conn: Conn<M::Connection>, ok: bool) {
        let now = clock::now();
        let mut next = Vec::new();
        let handed = {
            let mut st = self.state.lock();
            st.validating -= 1;
            if ok && !conn.expired(now) {
                conn.idle_since = now;
                self.hand_over(&mut st, conn, now)
            } else {
                st.open -= 1;
                st.stats.validations_failed += 1;
                st.stats.closed(CloseReason::Validation);
                // Its waiter still waits: try the next idle connection for it.
                self.feed_validations(&mut st, now, &mut next);
                Handed::Close(conn)
            }
        };
        drop(self.complete(handed));
        if !next.is_empty() {
            self.dispose(next);
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let st = self.state.lock();
        PoolStatus::of(st.admin, st.health)
    }

    pub(crate) fn snapshot(&self) -> PoolSnapshot {
        let now = clock::now();
        let tally = self.recorder.total();
        let mut st = self.state.lock();
        PoolSnapshot {
            name: self.name.to_string(),
            backend: self.backend.to_string(),
            status: PoolStatus::of(st.admin, st.health),
            max_size: st.max_size,
            min_idle: self.config.min_idle,
            reserve: self.config.reserve,
            open: st.open,
            idle: st.idle.len(),
            in_use: st.lent,
            sharing: st.slots.iter().map(|s| Arc::strong_count(s) - 1).sum(),
            connecting: st.connecting,
            validating: st.validating,
            peak_in_use: st.stats.peak_lent,
            waiters: st.waiters.live() + st.shared_waiters.live(),
            oldest_waiter: st
                .waiters
                .oldest()
                .into_iter()
                .chain(st.shared_waiters.oldest())
                .min()
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default(),
            checkouts: CheckoutCounts {
                ok: tally.checkouts,
                timeout: st.stats.timeouts,
                exhausted: st.stats.exhausted,
                unavailable: st.stats.unavailable,
                refused: st.stats.refused,
            },
            connects_ok: st.stats.connects_ok,
            connects_failed: st.stats.connects_failed,
            closes: CloseReason::ALL
                .iter()
                .map(|&r| (r, st.stats.closes[r as usize]))
                .collect(),
            wait: tally.wait.summary(),
            hold: tally.hold.summary(),
            last_error: st.last_error.as_deref().map(str::to_owned),
            wait_buckets: tally.wait.buckets(&LATENCY_BUCKETS),
        }
    }
}

/// A connection comes back to a pool above its `max_size` (resized) or owing a
/// connection's budget to another pool (`owed`): it is closed (lock held).
#[cold]
#[inline(never)]
fn shrink<C: Send + 'static>(st: &mut State<C>, conn: Conn<C>) -> Handed<C> {
    let reason = if st.open > st.max_size {
        CloseReason::Resized
    } else {
        st.owed -= 1;
        CloseReason::Reclaimed
    };
    st.open -= 1;
    st.stats.closed(reason);
    Handed::Close(conn)
}

/// Whether the oldest shared waiter came before the oldest exclusive one (lock held;
/// some shared checkout waits): then a connection coming back is theirs.
pub(crate) fn shared_turn<C: Send + 'static>(st: &mut State<C>) -> bool {
    let shared = st.shared_waiters.front().map(|w| w.seq);
    match st.waiters.front().map(|w| w.seq) {
        Some(exclusive) => shared.is_some_and(|s| s < exclusive),
        None => true,
    }
}

/// At the end of a return's critical section (lock held), which just took a connection
/// off `lent`: what keeps the pool alive for the rest of that return, since its
/// connection no longer does. Once nothing is lent, the pool's `keep_alive` itself;
/// else, if the return will touch the pool again (`again`: to close the connection or
/// wake a drain), a clone of it, since other guards may take `lent` to zero and free
/// the pool meanwhile; else nothing (the common return, which does not touch the pool
/// after the lock, pays no reference count).
fn hold_pool<C: Send + 'static>(st: &mut State<C>, again: bool) -> Option<KeepAlive> {
    if st.lent == 0 {
        st.keep_alive.take()
    } else if again {
        st.keep_alive.clone()
    } else {
        None
    }
}

impl<M: ManageConnection> Drop for PoolShared<M> {
    fn drop(&mut self) {
        // Let the sweeper see that the pool is gone.
        self.sweeper.notify_one();
    }
}

impl<M: ManageConnection> BudgetListener for PoolShared<M> {
    fn budget_freed(&self) {
        let actor = self.actor.lock().clone();
        if let Some(actor) = actor {
            let _ = actor.cast(PoolMsg::Nudge);
        }
    }
}
