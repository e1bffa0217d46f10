//! The supervisor's and the metrics actor's view of a pool, whatever its manager type.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bb8::ManageConnection;
use ractor::{Actor, ActorRef, SpawnErr};
use tokio::time::Instant;

use super::actor::{PoolActor, PoolArgs, PoolMsg};
use super::admin::DrainReport;
use super::shared::PoolShared;
use super::stats::PoolSnapshot;
use super::status::{Admin, PoolStatus};
use crate::error::ControlError;
use crate::event::EventKind;
use crate::supervisor::actor::SupMsg;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait PoolControl: Send + Sync + 'static {
    fn name(&self) -> &Arc<str>;
    fn manager_type(&self) -> &'static str;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Spawns a pool actor linked to the supervisor; `boot` for the first start.
    fn spawn(
        self: Arc<Self>,
        supervisor: ActorRef<SupMsg>,
        boot: bool,
    ) -> BoxFuture<'static, Result<ActorRef<PoolMsg>, SpawnErr>>;
    fn status(&self) -> PoolStatus;
    /// The live pool actor, if one runs.
    fn actor(&self) -> Option<ActorRef<PoolMsg>>;
    fn snapshot(&self) -> PoolSnapshot;
    fn idle(&self) -> usize;
    fn pause(&self) -> Result<(), ControlError>;
    fn resume(&self) -> Result<(), ControlError>;
    fn resize(&self, max_size: usize) -> Result<(), ControlError>;
    fn drain(self: Arc<Self>, deadline: Instant, shutdown: bool)
        -> BoxFuture<'static, DrainReport>;
    fn fail(&self, restarts: u32);
    fn emit(&self, kind: EventKind);
}

impl<M: ManageConnection> PoolControl for PoolShared<M> {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn manager_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn spawn(
        self: Arc<Self>,
        supervisor: ActorRef<SupMsg>,
        boot: bool,
    ) -> BoxFuture<'static, Result<ActorRef<PoolMsg>, SpawnErr>> {
        Box::pin(async move {
            let cell = supervisor.get_cell();
            let args = PoolArgs {
                shared: self,
                supervisor: Some(supervisor),
                boot,
            };
            let (actor, _join) =
                PoolActor::<M>::spawn_linked(None, PoolActor::new(), args, cell).await?;
            Ok(actor)
        })
    }

    fn status(&self) -> PoolStatus {
        PoolShared::status(self)
    }

    fn actor(&self) -> Option<ActorRef<PoolMsg>> {
        self.actor.lock().clone()
    }

    fn snapshot(&self) -> PoolSnapshot {
        PoolShared::snapshot(self)
    }

    fn idle(&self) -> usize {
        self.state.lock().idle.len()
    }

    fn pause(&self) -> Result<(), ControlError> {
        PoolShared::pause(self)
    }

    fn resume(&self) -> Result<(), ControlError> {
        PoolShared::resume(self)
    }

    fn resize(&self, max_size: usize) -> Result<(), ControlError> {
        PoolShared::resize(self, max_size)
    }

    fn drain(
        self: Arc<Self>,
        deadline: Instant,
        shutdown: bool,
    ) -> BoxFuture<'static, DrainReport> {
        let end = if shutdown {
            Admin::ShutDown
        } else {
            Admin::Drained
        };
        Box::pin(async move { PoolShared::drain(&self, deadline, end).await })
    }

    fn fail(&self, restarts: u32) {
        PoolShared::fail(self, restarts)
    }

    fn emit(&self, kind: EventKind) {
        PoolShared::emit(self, kind)
    }
}
