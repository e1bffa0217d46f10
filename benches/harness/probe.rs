//! How far apart the machine's two CPUs are right now: the round trip of one cache line
//! between two threads pinned to them.
//!
//! On the 2-vCPU machines these benches run on, it is either ~30–90 ns (the vCPUs share a
//! core's caches) or ~300–470 ns (they do not), and it can change within seconds, as the
//! hypervisor moves the vCPUs. Contended checkouts pass the pool's cache lines between
//! the two workers, so every pool runs ~3× slower in the slow phase. The harness probes
//! before and after each measurement, so that a ratio can be read between measurements
//! taken in the same phase.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 20_000;
/// A side that waits this long for the other (descheduled, say) gives up, and so does
/// the other: the probe then says nothing.
const PATIENCE: Duration = Duration::from_millis(200);
const GAVE_UP: u64 = u64::MAX;

/// The mean round trip in ns between the first two CPUs this process may run on, or
/// `None` if it may run on fewer than two, cannot pin threads, or a round trip took
/// longer than `PATIENCE`.
pub fn round_trip_ns() -> Option<f64> {
    let (a, b) = two_cpus()?;
    let line = Arc::new(AtomicU64::new(0));
    // Both threads pin themselves, then meet; if either could not pin, both return.
    let met = Arc::new(Barrier::new(2));
    let unpinned = Arc::new(AtomicBool::new(false));
    let side = |cpu: usize, ping: bool| {
        let (line, met, unpinned) = (line.clone(), met.clone(), unpinned.clone());
        std::thread::spawn(move || {
            if !pin(cpu) {
                unpinned.store(true, Ordering::SeqCst);
            }
            met.wait();
            if unpinned.load(Ordering::SeqCst) {
                return None;
            }
            let started = Instant::now();
            for i in 0..ROUNDS {
                // Ping writes 2i + 1 and waits for echo's answer, 2i + 2.
                let (write, wait) = if ping {
                    (2 * i + 1, 2 * i + 2)
                } else {
                    (2 * i + 2, 2 * i + 1)
                };
                if ping {
                    line.store(write, Ordering::Release);
                }
                let waiting = Instant::now();
                let mut spins = 0u32;
                loop {
                    match line.load(Ordering::Acquire) {
                        v if v == wait => break,
                        GAVE_UP => return None,
                        _ => std::hint::spin_loop(),
                    }
                    spins = spins.wrapping_add(1);
                    if spins % 1024 == 0 && waiting.elapsed() > PATIENCE {
                        line.store(GAVE_UP, Ordering::Release);
                        return None;
                    }
                }
                if !ping {
                    line.store(write, Ordering::Release);
                }
            }
            Some(started.elapsed().as_nanos() as f64 / ROUNDS as f64)
        })
    };
    let ping = side(a, true);
    let echo = side(b, false);
    echo.join().ok()??;
    ping.join().ok()?
}

/// The first two CPUs in this process's affinity mask.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: `cpu_set_t` is plain data; `sched_getaffinity` writes at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    // SAFETY: `CPU_ISSET` reads the set within `CPU_SETSIZE`.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> bool {
    // SAFETY: as in `two_cpus`; the set names one CPU this process may run on.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
