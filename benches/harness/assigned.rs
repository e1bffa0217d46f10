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

/// Connections behind one FIFO for every task, with no pool around them: a fair
/// semaphore (tokio's: it serves its waiters in order, handing a released permit to the
/// oldest, and does not allocate to wait) over a stack of connections. The least a pool
/// that hands any returned connection to its oldest waiter must do.
pub struct Fifo<C> {
    permits: tokio::sync::Semaphore,
    stack: std::sync::Mutex<Vec<C>>,
}

/// `Fifo` over these connections, shared by every task.
pub fn fifo<C>(conns: Vec<C>) -> Arc<Fifo<C>> {
    Arc::new(Fifo {
        permits: tokio::sync::Semaphore::new(conns.len()),
        stack: std::sync::Mutex::new(conns),
    })
}

impl<C> Fifo<C> {
    /// A connection of its own, after waiting in line for one; back on drop.
    pub async fn get(&self) -> FifoGuard<'_, C> {
        let permit = self.permits.acquire().await.expect("never closed");
        let conn = self.stack.lock().unwrap().pop();
        FifoGuard {
            conn,
            fifo: self,
            _permit: permit,
        }
    }
}

/// A connection from a `Fifo`: pushed back, then its permit released (waking the oldest
/// waiter), on drop.
pub struct FifoGuard<'a, C> {
    conn: Option<C>,
    fifo: &'a Fifo<C>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl<C> FifoGuard<'_, C> {
    pub fn conn(&mut self) -> &mut C {
        self.conn.as_mut().expect("one per permit")
    }
}

impl<C> Drop for FifoGuard<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.fifo.stack.lock().unwrap().push(conn);
        }
    }
}
