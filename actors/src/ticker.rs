//! A periodic message to an actor.

use std::time::Duration;

use ractor::{ActorRef, Message};
use tokio::task::JoinHandle;

/// Casts `msg()` to `actor` every `period` (the first after one period), until the actor
/// is gone. Abort the handle to stop earlier.
pub(crate) fn tick<M: Message>(
    actor: ActorRef<M>,
    period: Duration,
    msg: fn() -> M,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            if actor.cast(msg()).is_err() {
                break;
            }
        }
    })
}
