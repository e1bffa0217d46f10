//! The supervisor actor: starts the pool actors and the metrics actor, restarts pools
//! that crash or wedge, gives up on a pool that restarts too often, and answers budget
//! pressure by asking pools with idle connections above their reserve to close one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::event::EventBus;
use crate::event::EventKind;
use crate::metrics::{MetricsActor, MetricsArgs, MetricsMsg};
use crate::pool::actor::PoolMsg;
use crate::pool::control::PoolControl;
use crate::ticker::tick;

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Supervisor tuning, set on the builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) max_restarts: u32,
    pub(crate) restart_window: Duration,
}

#[derive(Debug)]
pub(crate) enum SupMsg {
    Pong {
        pool: usize,
        seq: u64,
    },
    HeartbeatTick,
    Respawn {
        pool: usize,
        attempt: u32,
        reason: String,
    },
    BudgetPressure {
        pool: usize,
    },
    /// Stop restarting anything; the handle drains and stops the pools.
    BeginShutdown(RpcReplyPort<Vec<ActorRef<PoolMsg>>>),
}

pub(crate) struct SupArgs {
    pub(crate) pools: Vec<Arc<dyn PoolControl>>,
    pub(crate) settings: Settings,
    pub(crate) budget: Arc<Budget>,
    pub(crate) events: EventBus,
    pub(crate) metrics: Arc<Mutex<Option<ActorRef<MetricsMsg>>>>,
}

struct Slot {
    control: Arc<dyn PoolControl>,
    actor: Option<ActorRef<PoolMsg>>,
    restarts: VecDeque<Instant>,
    /// Heartbeat sent and not yet answered.
    ping: Option<(u64, Instant)>,
    seq: u64,
    /// Why we killed it, if we did.
    kill_reason: Option<String>,
}

pub(crate) struct SupState {
    slots: Vec<Slot>,
    settings: Settings,
    budget: Arc<Budget>,
    events: EventBus,
    metrics: Arc<Mutex<Option<ActorRef<MetricsMsg>>>>,
    metrics_id: Option<ActorId>,
    shutting_down: bool,
    ticker: Option<JoinHandle<()>>,
}

pub(crate) struct SupervisorActor;

impl Actor for SupervisorActor {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = SupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupMsg>,
        args: SupArgs,
    ) -> Result<SupState, ActorProcessingErr> {
        let me = myself.clone();
        args.budget.set_pressure_hook(Box::new(move |pool| {
            let _ = me.cast(SupMsg::BudgetPressure { pool });
        }));
        let slots = args
            .pools
            .iter()
            .map(|control| Slot {
                control: control.clone(),
                actor: None,
                restarts: VecDeque::new(),
                ping: None,
                seq: 0,
                kill_reason: None,
            })
            .collect();
        let mut state = SupState {
            slots,
            settings: args.settings,
            budget: args.budget,
            events: args.events,
            metrics: args.metrics,
            metrics_id: None,
            shutting_down: false,
            ticker: None,
        };
        state.spawn_metrics(&myself).await?;
        // Start every pool at once; each boot is bounded by its connect_timeout.
        let mut boots = tokio::task::JoinSet::new();
        for (i, control) in args.pools.iter().enumerate() {
            let fut = control.clone().spawn(myself.clone(), true);
            boots.spawn(async move { (i, fut.await) });
        }
        while let Some(done) = boots.join_next().await {
            let (i, spawned) = done?;
            let actor = spawned.map_err(|e| format!("pool `{}`: {e}", args.pools[i].name()))?;
            state.slots[i].actor = Some(actor);
        }
        let every = state.settings.heartbeat_interval;
        state.ticker = Some(tick(myself.clone(), every, || SupMsg::HeartbeatTick));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupMsg>,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        msg: SupMsg,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::Pong { pool, seq } => {
                if let Some(slot) = state.slots.get_mut(pool) {
                    if slot.ping.is_some_and(|(s, _)| s == seq) {
                        slot.ping = None;
                    }
                }
            }
            SupMsg::HeartbeatTick => state.heartbeat(),
            SupMsg::Respawn {
                pool,
                attempt,
                reason,
            } => state.respawn(&myself, pool, attempt, reason).await,
            SupMsg::BudgetPressure { pool } => state.relieve(pool),
            SupMsg::BeginShutdown(reply) => {
                state.shutting_down = true;
                if let Some(t) = state.ticker.take() {
                    t.abort();
                }
                let actors = state.slots.iter().filter_map(|s| s.actor.clone()).collect();
                let _ = reply.send(actors);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        event: SupervisionEvent,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), format!("panicked: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                reason.unwrap_or_else(|| "stopped".to_string()),
            ),
            _ => return Ok(()),
        };
        if state.metrics_id == Some(id) {
            if !state.shutting_down {
                tracing::warn!(%reason, "metrics actor ended; starting a new one");
                state.spawn_metrics(&myself).await?;
            }
            return Ok(());
        }
        if let Some(pool) = state
            .slots
            .iter()
            .position(|s| s.actor.as_ref().is_some_and(|a| a.get_id() == id))
        {
            state.pool_ended(&myself, pool, reason);
        }
        Ok(())
    }
}

fn restart_backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    RESTART_BACKOFF_MIN
        .saturating_mul(1 << exp)
        .min(RESTART_BACKOFF_MAX)
}

impl SupState {
    async fn spawn_metrics(&mut self, myself: &ActorRef<SupMsg>) -> Result<(), ActorProcessingErr> {
        let args = MetricsArgs {
            pools: self.slots.iter().map(|s| s.control.clone()).collect(),
            budget: self.budget.clone(),
            events: self.events.clone(),
        };
        let (actor, _) =
            MetricsActor::spawn_linked(None, MetricsActor, args, myself.get_cell()).await?;
        self.metrics_id = Some(actor.get_id());
        *self.metrics.lock() = Some(actor);
        Ok(())
    }

    fn pool_ended(&mut self, myself: &ActorRef<SupMsg>, pool: usize, reason: String) {
        let slot = &mut self.slots[pool];
        slot.actor = None;
        slot.ping = None;
        if self.shutting_down {
            return;
        }
        let reason = slot.kill_reason.take().unwrap_or(reason);
        let now = Instant::now();
        let window = self.settings.restart_window;
        while slot
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            slot.restarts.pop_front();
        }
        slot.restarts.push_back(now);
        let attempt = slot.restarts.len() as u32;
        tracing::warn!(pool = %slot.control.name(), %reason, attempt, "pool actor ended");
        if attempt > self.settings.max_restarts {
            slot.control.fail(attempt - 1);
            return;
        }
        let me = myself.clone();
        let delay = restart_backoff(attempt);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(SupMsg::Respawn {
                pool,
                attempt,
                reason,
            });
        });
    }

    async fn respawn(
        &mut self,
        myself: &ActorRef<SupMsg>,
        pool: usize,
        attempt: u32,
        reason: String,
    ) {
        if self.shutting_down || self.slots[pool].actor.is_some() {
            return;
        }
        let control = self.slots[pool].control.clone();
        match control.clone().spawn(myself.clone(), false).await {
            Ok(actor) => {
                self.slots[pool].actor = Some(actor);
                control.emit(EventKind::Restarted { attempt, reason });
            }
            Err(e) => self.pool_ended(myself, pool, format!("restart failed: {e}")),
        }
    }

    fn heartbeat(&mut self) {
        let now = Instant::now();
        let timeout = self.settings.heartbeat_timeout;
        for slot in &mut self.slots {
            let Some(actor) = &slot.actor else { continue };
            match slot.ping {
                Some((_, sent)) if now.saturating_duration_since(sent) > timeout => {
                    let reason = format!("wedged: no heartbeat answer within {timeout:?}");
                    tracing::warn!(pool = %slot.control.name(), %reason, "killing pool actor");
                    slot.kill_reason = Some(reason);
                    slot.ping = None;
                    actor.kill();
                }
                Some(_) => {}
                None => {
                    slot.seq += 1;
                    if actor.cast(PoolMsg::Heartbeat(slot.seq)).is_ok() {
                        slot.ping = Some((slot.seq, now));
                    }
                }
            }
        }
    }

    /// A pool was refused budget for its callers: ask the pool with the most idle
    /// connections above its reserve to close one; with none idle anywhere, the pool
    /// holding the most of the shared part, if it holds at least two more of it than the
    /// one refused, to close the next one it gets back. (Busy connections move only from
    /// a larger share to a smaller one and never reverse the order, and the budget gives
    /// a freed permit to the smaller share first, so busy pools settle at about even
    /// shares instead of passing connections back and forth.)
    fn relieve(&mut self, wanting: usize) {
        let shares = self.budget.shares();
        let others = || (0..shares.len()).filter(|&i| i != wanting && shares[i] > 0);
        let idle = others()
            .map(|i| (i, self.slots[i].control.idle()))
            .filter(|(_, idle)| *idle > 0)
            .max_by_key(|(_, idle)| *idle);
        let busy = || {
            let floor = shares[wanting] + 1;
            others()
                .map(|i| (i, shares[i]))
                .filter(|(_, n)| *n > floor)
                .max_by_key(|(_, n)| *n)
        };
        if let Some((victim, _)) = idle.or_else(busy) {
            if let Some(actor) = &self.slots[victim].actor {
                let _ = actor.cast(PoolMsg::Reclaim);
            }
        }
    }
}
