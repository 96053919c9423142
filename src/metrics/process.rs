//! The conventional `process_*` metrics (as Prometheus' client libraries name them), read from
//! `/proc/self` at scrape time. Linux only: where `/proc` cannot be read, a metric is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `USER_HZ`, the unit of the times in `/proc/<pid>/stat`: 100 on Linux's architectures.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's state; `None` where it could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self` now.
pub fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
    let status = read("/proc/self/status");
    let boot_time = read("/proc/stat").and_then(|s| parse_boot_time(&s));
    Sample {
        cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / TICKS_PER_SECOND),
        resident_memory_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmRSS")),
        virtual_memory_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmSize")),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        max_fds: read("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
        start_time_seconds: stat
            .zip(boot_time)
            .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / TICKS_PER_SECOND),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// utime + stime.
    cpu_ticks: u64,
    /// Start time after boot.
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0; utime (14) is 11, stime (15) 12, starttime (22) 19.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(11)?.checked_add(field(12)?)?,
        start_ticks: field(19)?,
    })
}

/// A `kB` line of `/proc/<pid>/status`, in bytes.
fn status_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb = value
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        kb.checked_mul(1024)
    })
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix("Max open files")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Registers nothing itself: encodes a fresh [`sample`] on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

fn put(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = sample();
        if let Some(v) = s.cpu_seconds {
            put(
                &mut encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                &ConstCounter::new(v),
            )?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                put(&mut encoder, name, help, &ConstGauge::new(v))?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            put(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                &ConstGauge::new(v),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 12345 1000 10 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        let status = "Name:\tx\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(status_bytes(status, "VmSize"), Some(20480 * 1024));
        assert_eq!(status_bytes(status, "VmSwap"), None);
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = sample();
        let now = chrono::Utc::now().timestamp() as f64;
        let start = s.start_time_seconds.expect("start time");
        assert!(
            start > now - 86_400.0 * 365.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        assert!(s.resident_memory_bytes.expect("rss") > 1024 * 1024);
        assert!(s.virtual_memory_bytes.expect("vsz") >= s.resident_memory_bytes.expect("rss"));
        let open = s.open_fds.expect("open fds");
        assert!(open >= 3, "{open}");
        assert!(s.max_fds.is_none_or(|m| m >= open));
        assert!(s.cpu_seconds.expect("cpu") >= 0.0);
    }
}
