//! What state a pool is in, as operators and callers see it.

use serde::Serialize;

/// Operator-controlled state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admin {
    Running,
    Paused,
    Draining,
    Drained,
    ShutDown,
    Failed { restarts: u32 },
}

/// Backend health, as connect attempts tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Up,
    Degraded,
    Down,
}

/// A pool's state in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStatus {
    /// Lending; connects succeed.
    Up,
    /// Lending, but recent connects failed.
    Degraded,
    /// Connects keep failing; checkouts that need a new connection fail at once.
    Down,
    /// Paused by an operator: checkouts fail with `Paused`.
    Paused,
    /// Being drained, or drained and not resumed.
    Draining,
    /// Shut down for good.
    ShutDown,
    /// Given up after too many restarts.
    Failed,
}

impl PoolStatus {
    pub(crate) fn of(admin: Admin, health: Health) -> Self {
        match admin {
            Admin::Paused => PoolStatus::Paused,
            Admin::Draining | Admin::Drained => PoolStatus::Draining,
            Admin::ShutDown => PoolStatus::ShutDown,
            Admin::Failed { .. } => PoolStatus::Failed,
            Admin::Running => match health {
                Health::Up => PoolStatus::Up,
                Health::Degraded => PoolStatus::Degraded,
                Health::Down => PoolStatus::Down,
            },
        }
    }

    /// Lower-case name, as in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Up => "up",
            PoolStatus::Degraded => "degraded",
            PoolStatus::Down => "down",
            PoolStatus::Paused => "paused",
            PoolStatus::Draining => "draining",
            PoolStatus::ShutDown => "shut_down",
            PoolStatus::Failed => "failed",
        }
    }
}
