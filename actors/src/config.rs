//! Per-pool configuration and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a connection taken from the idle set is validated (`ManageConnection::is_valid`)
/// before it is lent.
///
/// A connection that was just returned and is handed straight to a waiter is never
/// validated: it was in use a moment ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Validate on every checkout from the idle set (bb8's and deadpool-redis's default).
    Always,
    /// Validate only connections that sat idle for longer than this (HikariCP's
    /// 500 ms rule). The default.
    IfIdleFor(#[serde(with = "crate::serde_duration")] Duration),
    /// Never validate on checkout; rely on `has_broken`, health checks and callers.
    Never,
}

impl Default for Validation {
    fn default() -> Self {
        Validation::IfIdleFor(Duration::from_millis(500))
    }
}

/// Which connection a shared checkout (`checkout_shared`) goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharePolicy {
    /// An idle connection goes into shared use before a connection in shared use takes
    /// another caller: callers spread over as many connections as the pool may open,
    /// so a slow request delays few others. Right for PostgreSQL, where a pipelined query
    /// waits behind the ones before it; the default of every pool but Redis and HTTP.
    #[default]
    Spread,
    /// The busiest connection in shared use with room (below `max_shares`) takes the
    /// caller; an idle connection goes into shared use only when none has room. Callers
    /// pack onto as few connections as `max_shares` allows, so each carries a deeper
    /// pipeline. Right for Redis and HTTP/2, whose requests are short and independent,
    /// and the default of their pools.
    Pack,
}

/// Configuration of one pool. Build it with the chained setters:
///
/// ```
/// use std::time::Duration;
/// use poolvisor_actors::PoolConfig;
/// let cfg = PoolConfig::default()
///     .max_size(20)
///     .min_idle(2)
///     .checkout_timeout(Duration::from_secs(2));
/// assert_eq!(cfg.max_size, 20);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Most connections this pool keeps open (idle + lent + being opened). At least 1.
    pub max_size: usize,
    /// Idle connections the pool keeps ready, within the global budget. Callers come
    /// first: beyond its `reserve`, a pool refills `min_idle` only while no other pool's
    /// callers wait for budget, and gives up idle connections to them.
    pub min_idle: usize,
    /// Longest a checkout waits for a connection.
    #[serde(with = "crate::serde_duration")]
    pub checkout_timeout: Duration,
    /// Longest one connect (or one validation) may take.
    #[serde(with = "crate::serde_duration")]
    pub connect_timeout: Duration,
    /// Idle connections above `min_idle` are closed after this long unused.
    #[serde(with = "crate::serde_duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Connections are closed after about this long, jittered by up to -10 % so that they
    /// do not all expire together.
    #[serde(with = "crate::serde_duration::option")]
    pub max_lifetime: Option<Duration>,
    /// When idle connections are validated on checkout.
    pub validation: Validation,
    /// How often idle connections are validated and the pool refilled to `min_idle`.
    #[serde(with = "crate::serde_duration::option")]
    pub health_check_interval: Option<Duration>,
    /// A connection held longer than this raises a `LeakSuspected` event.
    #[serde(with = "crate::serde_duration::option")]
    pub leak_threshold: Option<Duration>,
    /// Connections of the global budget guaranteed to this pool. The rest of the budget
    /// (the shared part) goes to the pools that need it, and busy pools split it evenly
    /// down to a difference of one: with a single shared connection left, a pool whose
    /// callers need it while another keeps it busy waits. A reserve is the guarantee.
    pub reserve: usize,
    /// Most callers that may wait at once; the next one fails at once with `Exhausted`.
    pub max_waiters: usize,
    /// Consecutive connect failures after which the pool is Down.
    pub down_after_failures: u32,
    /// Most callers one connection serves at once through `checkout_shared`.
    pub max_shares: usize,
    /// Which connection a shared checkout goes to. `None` (the default): the backend's
    /// choice. The `poolvisor` crate's Redis and HTTP pools (`.redis()`, `.http()`, and
    /// `kind = "redis"` / `"http"` in a config file) pack; every other pool spreads.
    pub share_policy: Option<SharePolicy>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 10,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            validation: Validation::default(),
            health_check_interval: Some(Duration::from_secs(30)),
            leak_threshold: None,
            reserve: 0,
            max_waiters: 10_000,
            down_after_failures: 3,
            max_shares: 16,
            share_policy: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.$name = value; self } )*
    };
}

impl PoolConfig {
    setters! {
        /// Sets `max_size`.
        max_size: usize,
        /// Sets `min_idle`.
        min_idle: usize,
        /// Sets `checkout_timeout`.
        checkout_timeout: Duration,
        /// Sets `connect_timeout`.
        connect_timeout: Duration,
        /// Sets `idle_timeout` (`None`: never).
        idle_timeout: Option<Duration>,
        /// Sets `max_lifetime` (`None`: unlimited).
        max_lifetime: Option<Duration>,
        /// Sets the validation policy.
        validation: Validation,
        /// Sets `health_check_interval` (`None`: no periodic checks).
        health_check_interval: Option<Duration>,
        /// Sets `leak_threshold` (`None`: no leak detection).
        leak_threshold: Option<Duration>,
        /// Sets `reserve`.
        reserve: usize,
        /// Sets `max_waiters`.
        max_waiters: usize,
        /// Sets `down_after_failures`.
        down_after_failures: u32,
        /// Sets `max_shares`.
        max_shares: usize,
    }

    /// Sets `share_policy` (over the backend's choice).
    pub fn share_policy(mut self, value: SharePolicy) -> Self {
        self.share_policy = Some(value);
        self
    }

    /// Checks the values on their own; the supervisor checks them against each other pool.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, message: String| Err(ConfigError { field, message });
        let nonzero = |field, d: Duration| {
            if d.is_zero() {
                err(field, "must be greater than zero".into())
            } else {
                Ok(())
            }
        };
        if self.max_size == 0 {
            return err("max_size", "must be at least 1".into());
        }
        if self.min_idle > self.max_size {
            return err(
                "min_idle",
                format!(
                    "{} is larger than max_size {}",
                    self.min_idle, self.max_size
                ),
            );
        }
        if self.reserve > self.max_size {
            return err(
                "reserve",
                format!("{} is larger than max_size {}", self.reserve, self.max_size),
            );
        }
        if self.max_waiters == 0 {
            return err("max_waiters", "must be at least 1".into());
        }
        if self.max_shares == 0 {
            return err("max_shares", "must be at least 1".into());
        }
        if self.down_after_failures == 0 {
            return err("down_after_failures", "must be at least 1".into());
        }
        nonzero("checkout_timeout", self.checkout_timeout)?;
        nonzero("connect_timeout", self.connect_timeout)?;
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("health_check_interval", self.health_check_interval),
            ("leak_threshold", self.leak_threshold),
        ] {
            if let Some(d) = value {
                nonzero(field, d)?;
            }
        }
        if let Validation::IfIdleFor(d) = self.validation {
            nonzero("validation", d)?;
        }
        Ok(())
    }
}

/// A configuration value that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let cfg = PoolConfig::default();
        cfg.validate().unwrap();
        assert!(cfg.checkout_timeout < Duration::from_secs(60));
    }

    #[test]
    fn rejects_out_of_range_values_naming_the_field() {
        let cases = [
            (PoolConfig::default().max_size(0), "max_size"),
            (PoolConfig::default().max_size(2).min_idle(3), "min_idle"),
            (PoolConfig::default().max_size(2).reserve(3), "reserve"),
            (PoolConfig::default().max_waiters(0), "max_waiters"),
            (PoolConfig::default().max_shares(0), "max_shares"),
            (
                PoolConfig::default().checkout_timeout(Duration::ZERO),
                "checkout_timeout",
            ),
            (
                PoolConfig::default().idle_timeout(Some(Duration::ZERO)),
                "idle_timeout",
            ),
            (
                PoolConfig::default().validation(Validation::IfIdleFor(Duration::ZERO)),
                "validation",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate().unwrap_err().field, field);
        }
    }
}
