//! A manager whose connections cost nothing, for bb8, deadpool and poolvisor alike.

use std::convert::Infallible;

use super::Op;

/// A manager whose connect and validation do nothing: the pool's own cost.
#[derive(Clone, Copy)]
pub struct Noop;

impl bb8::ManageConnection for Noop {
    type Connection = ();
    type Error = Infallible;
    async fn connect(&self) -> Result<(), Infallible> {
        Ok(())
    }
    async fn is_valid(&self, _: &mut ()) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _: &mut ()) -> bool {
        false
    }
}

impl deadpool::managed::Manager for Noop {
    type Type = ();
    type Error = Infallible;
    async fn create(&self) -> Result<(), Infallible> {
        Ok(())
    }
    async fn recycle(
        &self,
        _: &mut (),
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// A deadpool checkout and drop.
#[derive(Clone)]
pub struct Deadpool(pub deadpool::managed::Pool<Noop>);

impl Op for Deadpool {
    async fn run(&self) {
        drop(self.0.get().await.expect("deadpool checkout"));
    }
}
