//! The pool actor: decides when connections are opened, validated in the background,
//! reaped and reclaimed; tracks the backend's health. It never sits on the checkout path:
//! callers reach it only through `Nudge` when the pool could open a connection for them.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::shared::PoolShared;
use super::stats::CloseReason;
use super::status::{Admin, Health};
use crate::budget::Need;
use crate::clock::{self, Instant};
use crate::error::CheckoutError;
use crate::event::EventKind;
use crate::supervisor::actor::SupMsg;
use crate::ticker::tick;

/// First retry delay after a failed connect; doubles up to `BACKOFF_MAX`, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Shortest interval between two probes of a Down pool that press for budget (have
/// another pool give up a connection); the probes between take only free budget.
const PROBE_PRESSES_EVERY: Duration = Duration::from_secs(10);
/// Shortest interval between two `BudgetExhausted` events of one pool.
const BUDGET_EVENT_EVERY: Duration = Duration::from_secs(1);

/// Messages a pool actor handles. None carries a connection: connections move through
/// the pool's shared state.
#[derive(Debug)]
pub(crate) enum PoolMsg {
    /// Demand may have changed: open connections if waiters or `min_idle` need them.
    Nudge,
    /// A connect task finished.
    ConnectDone(Result<(), Arc<str>>),
    /// Housekeeping: reap, health-check, look for leaks.
    Tick,
    /// The supervisor's liveness probe.
    Heartbeat(u64),
    /// Close one idle connection above the reserve, for another pool's sake.
    Reclaim,
    /// Test kit: block the actor's mailbox for this long (a wedged actor).
    Stall(Duration),
    /// Test kit: panic in the handler (a crashed actor).
    Crash,
}

pub(crate) struct PoolArgs<M: ManageConnection> {
    pub(crate) shared: Arc<PoolShared<M>>,
    pub(crate) supervisor: Option<ActorRef<SupMsg>>,
    /// First start (connect at once and report Up/Down) rather than a restart.
    pub(crate) boot: bool,
}

pub(crate) struct PoolActor<M>(PhantomData<fn() -> M>);

impl<M> PoolActor<M> {
    pub(crate) fn new() -> Self {
        PoolActor(PhantomData)
    }
}

pub(crate) struct PoolState<M: ManageConnection> {
    shared: Arc<PoolShared<M>>,
    supervisor: Option<ActorRef<SupMsg>>,
    failures: u32,
    /// No connect before this (backoff after a failure).
    retry_at: Option<Instant>,
    last_health_check: Instant,
    last_budget_event: Option<Instant>,
    /// The boot probe found the budget spent: probe as soon as a permit can be had.
    unprobed: bool,
    /// When a probe of this Down pool last pressed for budget.
    probe_pressed: Option<Instant>,
    ticker: Option<JoinHandle<()>>,
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX);
    // Full jitter on the upper half: between base/2 and base.
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

fn tick_period(shared: &PoolShared<impl ManageConnection>) -> Duration {
    let c = &shared.config;
    [c.idle_timeout, c.health_check_interval, c.leak_threshold]
        .into_iter()
        .flatten()
        .map(|d| d / 4)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

impl<M: ManageConnection> Actor for PoolActor<M> {
    type Msg = PoolMsg;
    type State = PoolState<M>;
    type Arguments = PoolArgs<M>;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs<M>,
    ) -> Result<PoolState<M>, ActorProcessingErr> {
        let shared = args.shared;
        *shared.actor.lock() = Some(myself.clone());
        shared.state.lock().nudged = false;
        let mut state = PoolState {
            shared: shared.clone(),
            supervisor: args.supervisor,
            failures: 0,
            retry_at: None,
            last_health_check: clock::now(),
            last_budget_event: None,
            unprobed: false,
            probe_pressed: None,
            ticker: None,
        };
        if args.boot {
            shared.emit(EventKind::Started);
            state.boot().await;
        } else {
            // A restarted actor does not trust what its predecessor left idle.
            state.validate_idle();
        }
        state.ticker = Some(tick(myself.clone(), tick_period(&shared), || PoolMsg::Tick));
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<PoolMsg>,
        state: &mut PoolState<M>,
    ) -> Result<(), ActorProcessingErr> {
        state.reconcile(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<PoolMsg>,
        state: &mut PoolState<M>,
    ) -> Result<(), ActorProcessingErr> {
        state.stopped(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState<M>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Nudge => {}
            PoolMsg::ConnectDone(result) => state.connect_done(&myself, result),
            PoolMsg::Tick => state.tick(),
            PoolMsg::Heartbeat(seq) => {
                if let Some(sup) = &state.supervisor {
                    let _ = sup.cast(SupMsg::Pong {
                        pool: state.shared.index,
                        seq,
                    });
                }
                return Ok(());
            }
            PoolMsg::Reclaim => state.reclaim(),
            PoolMsg::Stall(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            PoolMsg::Crash => panic!("pool `{}`: crash requested", state.shared.name),
        }
        state.reconcile(&myself);
        Ok(())
    }
}

impl<M: ManageConnection> PoolState<M> {
    /// First connects at boot: `min_idle` of them (one probe if `min_idle` is 0), each
    /// bounded by `connect_timeout`, concurrently. The pool starts Up if any succeeds, or
    /// if the budget had no permit for the probe: then it probes as soon as it gets one
    /// (`unprobed`; the probe presses like callers do).
    async fn boot(&mut self) {
        let shared = &self.shared;
        let wanted = shared.config.min_idle.max(1).min(shared.config.max_size);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..wanted {
            // The first is the probe that tells Up from Down; the rest are standby.
            let need = if i == 0 { Need::Demand } else { Need::Standby };
            let Some(permit) = shared.budget.try_acquire(shared.index, need) else {
                self.unprobed = i == 0;
                break;
            };
            shared.state.lock().connecting += 1;
            tasks.spawn(shared.clone().connect_one(permit));
        }
        let mut any_ok = tasks.is_empty();
        let mut last_err = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => any_ok = true,
                Ok(Err(cause)) => last_err = Some(cause),
                Err(join_err) => last_err = Some(format!("connect task failed: {join_err}").into()),
            }
        }
        if any_ok {
            shared.emit(EventKind::Up);
        } else {
            let cause = last_err.unwrap_or_else(|| "no connection".into());
            self.failures = shared.config.down_after_failures;
            self.retry_at = Some(clock::now() + backoff(self.failures));
            self.go_down(cause);
        }
    }

    fn go_down(&mut self, cause: Arc<str>) {
        let shared = &self.shared;
        {
            let mut st = shared.state.lock();
            if st.health == Health::Down {
                return;
            }
            st.health = Health::Down;
            st.down_since = Some(clock::now());
            let err = CheckoutError::Unavailable {
                pool: shared.name.clone(),
                cause: cause.clone(),
            };
            shared.fail_waiters(&mut st, &err);
        }
        shared.emit(EventKind::Down {
            cause: cause.to_string(),
        });
    }

    fn connect_done(&mut self, myself: &ActorRef<PoolMsg>, result: Result<(), Arc<str>>) {
        let shared = self.shared.clone();
        self.unprobed = false;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                let previous = {
                    let mut st = shared.state.lock();
                    let previous = (st.health, st.down_since.take());
                    st.health = Health::Up;
                    previous
                };
                match previous {
                    (Health::Down, since) => shared.emit(EventKind::Recovered {
                        down_for: since.map(|t| t.elapsed()).unwrap_or_default(),
                    }),
                    (Health::Degraded, _) => shared.emit(EventKind::Up),
                    (Health::Up, _) => {}
                }
            }
            Err(cause) => {
                self.failures += 1;
                let delay = backoff(self.failures);
                self.retry_at = Some(clock::now() + delay);
                let me = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = me.cast(PoolMsg::Nudge);
                });
                if self.failures >= shared.config.down_after_failures {
                    self.go_down(cause);
                } else {
                    let was_up = {
                        let mut st = shared.state.lock();
                        let was_up = st.health == Health::Up;
                        if was_up {
                            st.health = Health::Degraded;
                        }
                        was_up
                    };
                    if was_up {
                        shared.emit(EventKind::Degraded {
                            reason: cause.to_string(),
                        });
                    }
                }
            }
        }
    }

    /// Opens as many connections as waiters and `min_idle` need, within `max_size` and
    /// the global budget; the waiters' (demand) first, then `min_idle`'s (standby). While
    /// Down, one probe at a time, paced by the backoff.
    fn reconcile(&mut self, myself: &ActorRef<PoolMsg>) {
        let shared = self.shared.clone();
        let now = clock::now();
        let (demand, wanted) = {
            let mut st = shared.state.lock();
            st.nudged = false;
            if st.admin != Admin::Running || self.retry_at.is_some_and(|t| now < t) {
                (0, 0)
            } else {
                let room = st.max_size.saturating_sub(st.open + st.connecting);
                let (demand, wanted) = if st.health == Health::Down {
                    let probe = usize::from(st.connecting == 0);
                    // Each pressing probe costs another pool a connection while the
                    // budget is spent: not every backoff step, which is a second at most.
                    let press = self
                        .probe_pressed
                        .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_PRESSES_EVERY);
                    if probe == 1 && press {
                        self.probe_pressed = Some(now);
                    }
                    (probe * usize::from(press), probe)
                } else {
                    let have = st.idle.len() + st.connecting + st.validating;
                    let shared_demand = st.shared_waiters.live().div_ceil(shared.config.max_shares);
                    let callers = st.waiters.live() + shared_demand;
                    let probe = usize::from(self.unprobed && st.open + st.connecting == 0);
                    (
                        callers.saturating_sub(have).max(probe),
                        (callers + shared.config.min_idle)
                            .saturating_sub(have)
                            .max(probe),
                    )
                };
                (demand.min(room), wanted.min(room))
            }
        };
        let mut permits = Vec::with_capacity(wanted);
        for i in 0..wanted {
            let need = if i < demand {
                Need::Demand
            } else {
                Need::Standby
            };
            match shared.budget.try_acquire(shared.index, need) {
                Some(p) => permits.push(p),
                None => {
                    self.budget_exhausted(now);
                    break;
                }
            }
        }
        if permits.len() >= demand {
            shared.budget.settle(shared.index);
        }
        if permits.is_empty() {
            return;
        }
        shared.state.lock().connecting += permits.len();
        for permit in permits {
            let shared = shared.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let result = shared.clone().connect_one(permit).await;
                // The actor that spawned us may have been replaced: tell the live one.
                let live = shared.actor.lock().clone().unwrap_or(me);
                let _ = live.cast(PoolMsg::ConnectDone(result));
            });
        }
    }

    fn budget_exhausted(&mut self, now: Instant) {
        if self
            .last_budget_event
            .is_some_and(|t| now.saturating_duration_since(t) < BUDGET_EVENT_EVERY)
        {
            return;
        }
        self.last_budget_event = Some(now);
        self.shared.emit(EventKind::BudgetExhausted {
            max_connections: self.shared.budget.max(),
        });
    }

    /// Reaps idle and expired connections, runs the periodic health check and reports
    /// connections held past `leak_threshold`.
    fn tick(&mut self) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let now = clock::now();
        let mut doomed = Vec::new();
        let mut leaks = Vec::new();
        let anyone_presses = shared.budget.anyone_presses();
        {
            let mut st = shared.state.lock();
            if !anyone_presses {
                // Whoever the owed connections were for needs them no more.
                st.owed = 0;
            }
            // Oldest idle first (the front of the stack).
            let mut i = 0;
            while i < st.idle.len() {
                let c = &st.idle[i];
                let idle_for = now.saturating_duration_since(c.idle_since);
                let reason = if c.expired(now) {
                    Some(CloseReason::Lifetime)
                } else if cfg.idle_timeout.is_some_and(|t| idle_for >= t)
                    && st.idle.len() > cfg.min_idle
                {
                    Some(CloseReason::Idle)
                } else {
                    None
                };
                match reason {
                    Some(reason) => {
                        let conn = st.idle.remove(i);
                        st.open -= 1;
                        st.stats.closed(reason);
                        doomed.push(conn);
                    }
                    None => i += 1,
                }
            }
            if st.waiters.live() + st.shared_waiters.live() == 0 {
                st.exhausted_reported = false;
            }
            if let (Some(threshold), Some(leases)) = (cfg.leak_threshold, st.leases.as_mut()) {
                for lease in leases.values_mut() {
                    let held = now.saturating_duration_since(lease.since);
                    if !lease.reported && held >= threshold {
                        lease.reported = true;
                        leaks.push((held, lease.location.to_string()));
                    }
                }
            }
        }
        let closed_any = !doomed.is_empty();
        drop(doomed);
        if closed_any {
            shared.after_close();
        }
        for (held_for, location) in leaks {
            tracing::warn!(pool = %shared.name, ?held_for, %location, "connection leak suspected");
            shared.emit(EventKind::LeakSuspected { held_for, location });
        }
        if let Some(every) = cfg.health_check_interval {
            if now.saturating_duration_since(self.last_health_check) >= every {
                self.last_health_check = now;
                self.validate_idle();
            }
        }
    }

    /// Moves every idle connection to background validation.
    fn validate_idle(&mut self) {
        let idle = {
            let mut st = self.shared.state.lock();
            let idle = std::mem::take(&mut st.idle);
            st.validating += idle.len();
            idle
        };
        for conn in idle {
            self.shared.spawn_validation(conn);
        }
    }

    /// The supervisor asks for a connection's budget for another pool's callers: close
    /// the least recently used idle connection, or, with none idle, the next one lent
    /// that comes back. Never below `reserve`.
    fn reclaim(&mut self) {
        let shared = &self.shared;
        let (used, reserve) = shared.budget.used_by(shared.index);
        let conn = {
            let mut st = shared.state.lock();
            if used <= reserve + st.owed {
                return;
            }
            if st.idle.is_empty() {
                if st.owed < st.lent {
                    st.owed += 1;
                    drop(st);
                    shared.emit(EventKind::ConnectionReclaimed);
                }
                return;
            }
            st.idle.remove(0)
        };
        shared.close(conn, CloseReason::Reclaimed);
        shared.emit(EventKind::ConnectionReclaimed);
    }

    fn stopped(&mut self, myself: &ActorRef<PoolMsg>) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        let mut slot = self.shared.actor.lock();
        if slot.as_ref().is_some_and(|a| a.get_id() == myself.get_id()) {
            *slot = None;
        }
    }
}

impl<M: ManageConnection> Drop for PoolState<M> {
    fn drop(&mut self) {
        // Also on a crash or kill, where post_stop does not run.
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        // A stopped pool presses no more; a restarted one presses again if it must.
        self.shared.budget.settle(self.shared.index);
    }
}
