//! Connections handed to tasks without a pool: the references a pool is measured against.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A set of connections (or anything) dealt out round robin: each clone — the harness
/// makes one per task — takes the next item. With as many tasks as items each task has
/// its own ("raw (1 conn/task)"); with more tasks, several tasks share an item.
pub struct Assigned<T> {
    all: Arc<Vec<T>>,
    next: Arc<AtomicUsize>,
    index: usize,
}

impl<T> Assigned<T> {
    pub fn new(all: Vec<T>) -> Self {
        Assigned {
            all: Arc::new(all),
            next: Arc::new(AtomicUsize::new(0)),
            index: 0,
        }
    }

    /// This clone's item.
    pub fn mine(&self) -> &T {
        &self.all[self.index]
    }
}

impl<T> Clone for Assigned<T> {
    fn clone(&self) -> Self {
        Assigned {
            all: self.all.clone(),
            next: self.next.clone(),
            index: self.next.fetch_add(1, Ordering::Relaxed) % self.all.len(),
        }
    }
}

/// Connections that tasks take turns on, task `i` on connection `i mod n`, each behind
/// a tokio `Mutex` (which serves its waiters in order, and does not allocate to wait):
/// what handing a connection from task to task costs with no pool around it.
pub type Turns<C> = Assigned<tokio::sync::Mutex<C>>;

/// `Turns` over these connections.
pub fn turns<C>(conns: Vec<C>) -> Turns<C> {
    Assigned::new(conns.into_iter().map(tokio::sync::Mutex::new).collect())
}
