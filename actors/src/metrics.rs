//! The metrics actor: composes snapshots of every pool and of the budget, and counts
//! health events.
//!
//! The checkout path sends it nothing. Pools count under the lock they already hold for
//! checkout and return (plain integers and histograms, no atomics, no messages); this
//! actor reads those counters when asked for a snapshot. Health events, which are rare,
//! reach it through its own subscription to the event bus.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::budget::{Budget, BudgetSnapshot};
use crate::event::{EventBus, EventError, HealthEvent};
use crate::pool::control::PoolControl;
use crate::pool::stats::PoolSnapshot;

/// Every pool and the budget at one moment. Serializes to JSON for the admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Time since the metrics actor started.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub uptime: Duration,
    /// The global budget.
    pub budget: BudgetSnapshot,
    /// Each pool, in the order they were added to the builder.
    pub pools: Vec<PoolSnapshot>,
    /// Health events seen, by pool and kind.
    pub events: Vec<EventCount>,
    /// Events the metrics actor itself missed because it fell behind (should stay 0).
    pub events_missed: u64,
}

impl MetricsSnapshot {
    /// The snapshot of one pool.
    pub fn pool(&self, name: &str) -> Option<&PoolSnapshot> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// How many events of `kind` (e.g. `"down"`) `pool` emitted.
    pub fn event_count(&self, pool: &str, kind: &str) -> u64 {
        self.events
            .iter()
            .find(|e| e.pool == pool && e.kind == kind)
            .map_or(0, |e| e.count)
    }
}

/// How often one pool emitted one kind of event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventCount {
    /// The pool.
    pub pool: String,
    /// The event kind, as in its JSON `type`.
    pub kind: String,
    /// How many.
    pub count: u64,
}

pub(crate) enum MetricsMsg {
    Snapshot(RpcReplyPort<MetricsSnapshot>),
    Event(Result<HealthEvent, EventError>),
}

pub(crate) struct MetricsArgs {
    pub(crate) pools: Vec<Arc<dyn PoolControl>>,
    pub(crate) budget: Arc<Budget>,
    pub(crate) events: EventBus,
}

pub(crate) struct MetricsState {
    pools: Vec<Arc<dyn PoolControl>>,
    budget: Arc<Budget>,
    started: Instant,
    counts: BTreeMap<(String, &'static str), u64>,
    missed: u64,
    forwarder: JoinHandle<()>,
}

pub(crate) struct MetricsActor;

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MetricsMsg>,
        args: MetricsArgs,
    ) -> Result<MetricsState, ActorProcessingErr> {
        let mut stream = args.events.subscribe();
        let forwarder = tokio::spawn(async move {
            loop {
                let next = stream.recv().await;
                let closed = next == Err(EventError::Closed);
                if closed || myself.cast(MetricsMsg::Event(next)).is_err() {
                    break;
                }
            }
        });
        Ok(MetricsState {
            pools: args.pools,
            budget: args.budget,
            started: Instant::now(),
            counts: BTreeMap::new(),
            missed: 0,
            forwarder,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MetricsMsg>,
        state: &mut MetricsState,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MetricsMsg>,
        msg: MetricsMsg,
        state: &mut MetricsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetricsMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            MetricsMsg::Event(Ok(event)) => {
                *state
                    .counts
                    .entry((event.pool.to_string(), event.kind.name()))
                    .or_default() += 1;
            }
            MetricsMsg::Event(Err(EventError::Missed { missed })) => state.missed += missed,
            MetricsMsg::Event(Err(EventError::Closed)) => {}
        }
        Ok(())
    }
}

impl MetricsState {
    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            uptime: self.started.elapsed(),
            budget: self.budget.snapshot(),
            pools: self.pools.iter().map(|p| p.snapshot()).collect(),
            events: self
                .counts
                .iter()
                .map(|((pool, kind), &count)| EventCount {
                    pool: pool.clone(),
                    kind: (*kind).to_string(),
                    count,
                })
                .collect(),
            events_missed: self.missed,
        }
    }
}
