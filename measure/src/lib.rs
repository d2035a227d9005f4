//! What Ferry's benchmarks measure about themselves, in one place: CPU time (this thread, this
//! process), the peak resident set and the machine's load. Linux only (`getrusage`,
//! `clock_gettime`, `/proc`), like the machines the figures come from.
//!
//! CPU time rather than wall time because the benchmark machine is shared; the load average is
//! printed beside every figure for the same reason.
//!
//! [`synthetic`] holds the realistic items the benches replicate, so that their figures are
//! comparable.

pub mod synthetic;

use std::time::Duration;

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU time of this process, all threads: (user, system).
pub fn process_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let d = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (d(u.ru_utime), d(u.ru_stime))
}

/// The peak resident set of this process since its `exec` (`VmHWM`), in KiB. Not `ru_maxrss`:
/// Linux carries the parent's high-water mark over `fork` + `exec`, so a child measuring
/// itself would report its parent's peak. `None` off Linux or if `/proc` cannot be read.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The machine's 1-minute load average (`/proc/loadavg`); NaN if it cannot be read.
pub fn load_1min() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_rss_is_read() {
        let (t0, (u0, s0)) = (thread_cpu(), process_cpu());
        // Enough work to move both clocks past their resolution.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > t0);
        let (u1, s1) = process_cpu();
        assert!(u1 + s1 > u0 + s0);
        let before = peak_rss_kib().expect("VmHWM on Linux");
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_rss_kib().expect("VmHWM on Linux");
        assert!(after >= before + 60 * 1024, "{before} → {after} KiB");
        assert!(load_1min() >= 0.0);
    }
}
