//! What the load tool reads about processes: a server's RSS and CPU time from `/proc/<pid>`,
//! its own CPU time, and raising its own open-file limit. Linux only; reads never panic.

use std::time::Duration;

/// A process's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
/// The summed resident memory of several processes (a cluster's nodes).
pub fn rss_kib_sum(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// The summed CPU time of several processes.
pub fn cpu_time_sum(pids: &[u32]) -> Result<Duration, String> {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status (is --server-pid right?): {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS line"))
}

/// A process's user + system CPU time (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat (is --server-pid right?): {e}"))?;
    // The command name (field 2) may hold spaces; the fields after it are counted from ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("/proc/{pid}/stat is not in the expected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("/proc/{pid}/stat is not in the expected format"));
    };
    Ok(ticks_to_duration(user + system))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// This process's own user + system CPU time.
pub fn own_cpu_time() -> Duration {
    cpu_time(std::process::id()).unwrap_or_default()
}

/// Raises this process's soft open-file limit to its hard limit; returns the new soft limit.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to / read from a valid rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_time(me).is_ok());
        assert!(raise_open_files() >= 64);
    }

    #[test]
    fn a_missing_process_is_a_clear_error() {
        let e = rss_kib(u32::MAX).unwrap_err();
        assert!(e.contains("--server-pid"), "{e}");
    }
}
