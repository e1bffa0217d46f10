//! CPU time spent per operation, from Linux's own accounting (`/proc/self/stat` for the
//! bench process, `/proc/stat` for the machine), read at both ends of the measured window.
//!
//! Where client and server share the two cores and keep them busy, ops/s is about the
//! cores' time over the CPU per operation, so a ratio of CPU per operation is a second
//! reading of a ratio of ops/s, and the idle share says how far a run was from keeping
//! the cores busy. The steal share says how much of the window the hypervisor took the
//! vCPUs away: the kernel counts a stolen tick as steal, not as the process's, yet on the
//! fourteenth session's machine the CPU per operation still rose with steal (9 to 31 µs
//! per Redis `PING`), so neither reading is free of it.

/// Clock ticks (`USER_HZ`, 100 per second on Linux) at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The bench process's user + system time, every thread.
    process: u64,
    /// The machine's busy time (user, nice, system, irq, softirq), without steal.
    busy: u64,
    idle: u64,
    steal: u64,
}

/// The CPU a measured window used.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// The bench process's CPU per operation (the client: tasks, pool, driver).
    pub process_us_per_op: f64,
    /// The whole machine's busy CPU per operation (client, server, everything else).
    pub busy_us_per_op: f64,
    /// Shares of the machine's time over the window that was idle and stolen.
    pub idle: f64,
    pub steal: f64,
}

const TICK_US: f64 = 10_000.0;

impl Sample {
    /// Now; `None` where `/proc` cannot be read (not Linux).
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command, which is in parentheses and may hold spaces: state is
        // field 3, utime 14 and stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal …
        let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
        Some(Sample {
            process,
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        })
    }

    /// What was used from `self` to `end` over `ops` operations.
    pub fn until(self, end: Sample, ops: f64) -> Option<CpuUse> {
        let total =
            (end.busy + end.idle + end.steal).checked_sub(self.busy + self.idle + self.steal)?;
        if ops <= 0.0 || total == 0 {
            return None;
        }
        let per_op = |ticks: u64| ticks as f64 * TICK_US / ops;
        Some(CpuUse {
            process_us_per_op: per_op(end.process.saturating_sub(self.process)),
            busy_us_per_op: per_op(end.busy.saturating_sub(self.busy)),
            idle: end.idle.saturating_sub(self.idle) as f64 / total as f64,
            steal: end.steal.saturating_sub(self.steal) as f64 / total as f64,
        })
    }
}
