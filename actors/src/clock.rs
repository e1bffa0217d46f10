//! The clock of checkout and return: when a connection was lent, returned, opened or
//! retired, and when a caller started waiting.
//!
//! Every checkout and every return reads it, so it is read from the CPU's time-stamp
//! counter through `quanta` (about 10 ns on the benchmark machine, against 24 ns for
//! `clock_gettime`; `quanta` falls back to the OS's monotonic clock where the counter
//! is not reliable). That counter does not follow `tokio::time::pause`: the engine's own
//! tests, which pause tokio's clock, build with the `tokio-clock` feature, which reads
//! tokio's clock instead; so must any test that pauses tokio's clock and expects a
//! pool's validation, reaping or leak reports to follow it. (Checkout timeouts follow
//! tokio's timers either way.)
//!
//! The counter's rate is calibrated against the OS's clock at the first read (0.6 ms on
//! the benchmark machine, which then measured 3 s within 15 ppm of it: 0.5 ms over a 30 s
//! checkout timeout). Stamps are compared only with each other; a tokio timer that waits
//! for a stamp gets it through [`tokio_instant`].

#[cfg(not(feature = "tokio-clock"))]
pub(crate) use quanta::Instant;
#[cfg(feature = "tokio-clock")]
pub(crate) use tokio::time::Instant;

#[cfg(not(feature = "tokio-clock"))]
static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();

/// Reads the clock. The first read calibrates the counter; the supervisor makes it at
/// start, off the checkout path.
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(not(feature = "tokio-clock"))]
    return CLOCK.get_or_init(quanta::Clock::new).now();
    #[cfg(feature = "tokio-clock")]
    return Instant::now();
}

/// The moment of tokio's clock at which `at` comes, for a timer.
pub(crate) fn tokio_instant(at: Instant) -> tokio::time::Instant {
    #[cfg(not(feature = "tokio-clock"))]
    return tokio::time::Instant::now() + at.saturating_duration_since(now());
    #[cfg(feature = "tokio-clock")]
    return at;
}
