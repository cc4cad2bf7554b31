//! The load tool's result: what was asked, what was measured, and two renderings of it (a
//! human summary and JSON with the same fields). Figures only; no I/O but the caller's print.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::tally::Counts;
use super::{Load, Mode, Options};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: Option<Mode>,
    pub conns: usize,
    pub messages: u64,
    /// Calls per second asked for; 0 = back to back.
    pub rate: f64,
    pub payload_bytes: usize,
    pub groups: usize,
    pub in_flight: usize,
    pub connect: Connect,
    pub calls: Calls,
    pub deliveries: Deliveries,
    pub latency_ms: Latency,
    pub server: Server,
    /// Connections the server closed during the run, by close code.
    pub closed_by_server: BTreeMap<u16, u64>,
    pub client_cpu_seconds: f64,
    /// The resume mode's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The chaos mode's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
}

/// What the chaos mode's check found.
#[derive(Debug, Default, Serialize)]
pub struct Chaos {
    /// Publications sent, and how many the service acknowledged (the rest were given up on
    /// after 15 s of retries).
    pub published: u64,
    pub acknowledged: u64,
    pub gave_up: u64,
    pub clients: u64,
    /// Times a client's connection ended and it came back (with `since`).
    pub reconnects: u64,
    /// Publications the clients received.
    pub received: u64,
    /// Times a client was told `recovered: false`.
    pub told_lost: u64,
    /// Silent gaps, repeats, unannounced epochs, wrong payloads, missing tails: must be 0.
    pub violations: u64,
    pub first_violations: Vec<String>,
}

/// What coming back all at once gave (resume mode).
#[derive(Debug, Default, Serialize)]
pub struct Resume {
    pub clients: u64,
    /// `connected` said `recovered: true`.
    pub recovered: u64,
    pub not_recovered: u64,
    /// From the first reconnect until every client had its `connected`.
    pub reconnect_seconds: f64,
    /// From the first reconnect until the last missed message arrived.
    pub drain_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Connect {
    pub opened: u64,
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Calls {
    pub made: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// How far behind schedule the sender fell at worst (paced runs).
    pub max_lag_ms: f64,
    /// Calls answered per second (made / seconds).
    pub per_second: f64,
    /// How long the calls took to be answered.
    pub latency_ms: Latency,
}

#[derive(Debug, Default, Serialize)]
pub struct Deliveries {
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    /// From the first call to the last delivery.
    pub seconds: f64,
    pub per_second: f64,
}

/// End-to-end latency: from just before the call to the frame's arrival at the client.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Server {
    /// The server processes measured (their figures are summed).
    pub pids: Vec<u32>,
    pub rss_kib_before: Option<u64>,
    /// With every connection open (idle), before any load.
    pub rss_kib_connected: Option<u64>,
    /// After the load was delivered.
    pub rss_kib_after: Option<u64>,
    pub kib_per_conn_idle: Option<f64>,
    pub kib_per_conn_after: Option<f64>,
    /// Server CPU time (user + system) spent accepting the connections, per connection.
    pub connect_cpu_us_per_conn: Option<f64>,
    /// Server CPU time (user + system) from the first call to the last delivery.
    pub cpu_seconds: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub cpu_seconds_per_million: Option<f64>,
}

impl Report {
    pub fn new(opts: &Options, groups: usize) -> Report {
        Report {
            mode: Some(opts.mode),
            conns: opts.conns,
            messages: if opts.mode == Mode::Idle {
                0
            } else {
                opts.messages
            },
            rate: opts.rate,
            payload_bytes: opts.payload_bytes,
            groups,
            in_flight: opts.in_flight,
            server: Server {
                pids: opts.server_pid.clone(),
                ..Server::default()
            },
            ..Report::default()
        }
    }

    pub fn connect(&mut self, opened: u64, took: Duration) {
        self.connect = Connect {
            opened,
            seconds: took.as_secs_f64(),
            per_second: opened as f64 / took.as_secs_f64().max(1e-9),
        };
    }

    pub fn load(&mut self, load: Load, counts: Counts, hist: &Histogram<u64>) {
        let seconds = if counts.last_ns > load.started_ns {
            (counts.last_ns - load.started_ns) as f64 / 1e9
        } else {
            0.0
        };
        let ms = |us: u64| us as f64 / 1e3;
        let latency = |hist: &Histogram<u64>| {
            if hist.is_empty() {
                return Latency::default();
            }
            Latency {
                p50: ms(hist.value_at_quantile(0.50)),
                p90: ms(hist.value_at_quantile(0.90)),
                p99: ms(hist.value_at_quantile(0.99)),
                p999: ms(hist.value_at_quantile(0.999)),
                max: ms(hist.max()),
                mean: hist.mean() / 1e3,
            }
        };
        let send = load.send_time.as_secs_f64();
        self.calls = Calls {
            made: load.calls,
            errors: load.errors,
            first_error: load.first_error,
            seconds: send,
            max_lag_ms: load.max_lag.as_secs_f64() * 1e3,
            per_second: if send > 0.0 {
                load.calls as f64 / send
            } else {
                0.0
            },
            latency_ms: load.call_us.as_ref().map(latency).unwrap_or_default(),
        };
        self.deliveries = Deliveries {
            expected: load.expected,
            received: counts.unique(),
            lost: counts.lost(load.expected),
            out_of_order: counts.out_of_order,
            duplicates: counts.duplicates,
            seconds,
            per_second: if seconds > 0.0 {
                counts.unique() as f64 / seconds
            } else {
                0.0
            },
        };
        self.latency_ms = latency(hist);
    }

    /// Derives the per-connection and per-delivery figures.
    pub fn finish(&mut self) {
        let conns = self.conns.max(1) as f64;
        let s = &mut self.server;
        if let (Some(before), Some(idle)) = (s.rss_kib_before, s.rss_kib_connected) {
            s.kib_per_conn_idle = Some((idle as f64 - before as f64) / conns);
        }
        if let (Some(before), Some(after)) = (s.rss_kib_before, s.rss_kib_after) {
            s.kib_per_conn_after = Some((after as f64 - before as f64) / conns);
        }
        if let Some(cpu) = s.cpu_seconds {
            let n = self.deliveries.received.max(1) as f64;
            s.cpu_us_per_delivery = Some(cpu * 1e6 / n);
            s.cpu_seconds_per_million = Some(cpu * 1e6 / n);
        }
    }

    pub fn json(&self) -> String {
        // Plain numbers, strings and maps with integer keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn human(&self) -> String {
        let mode = self.mode.map(|m| format!("{m:?}").to_lowercase());
        let mut out = format!(
            "bench {}: {} connections",
            mode.as_deref().unwrap_or("?"),
            self.conns
        );
        if self.mode != Some(Mode::Idle) {
            let pace = if self.rate > 0.0 {
                format!("{} calls/s", self.rate)
            } else {
                "back to back".to_owned()
            };
            out.push_str(&format!(
                ", {} calls ({pace}, {} in flight), {}-byte payloads",
                self.messages, self.in_flight, self.payload_bytes
            ));
        }
        let c = &self.connect;
        out.push_str(&format!(
            "\n  connect     {} in {:.2} s = {:.0}/s",
            c.opened, c.seconds, c.per_second
        ));
        if let Some(us) = self.server.connect_cpu_us_per_conn {
            out.push_str(&format!(" (server CPU {us:.1} us per connection)"));
        }
        if !matches!(self.mode, Some(Mode::Idle) | Some(Mode::Chaos)) {
            let k = &self.calls;
            out.push_str(&format!(
                "\n  calls       {} in {:.2} s = {:.0}/s, {} errors; answered in p50 {:.3} p99 {:.3} ms",
                k.made, k.seconds, k.per_second, k.errors, k.latency_ms.p50, k.latency_ms.p99
            ));
            if let Some(e) = &k.first_error {
                out.push_str(&format!(" (first: {e})"));
            }
            if self.rate > 0.0 {
                out.push_str(&format!(
                    ", worst lag behind schedule {:.1} ms",
                    k.max_lag_ms
                ));
            }
            let d = &self.deliveries;
            out.push_str(&format!(
                "\n  deliveries  {} of {} in {:.2} s = {:.0}/s; lost {}, out of order {}, duplicates {}",
                d.received, d.expected, d.seconds, d.per_second, d.lost, d.out_of_order, d.duplicates
            ));
            let l = &self.latency_ms;
            out.push_str(&format!(
                "\n  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
        let s = &self.server;
        if let Some(before) = s.rss_kib_before {
            out.push_str(&format!("\n  server RSS  {before} KiB before"));
            if let (Some(v), Some(per)) = (s.rss_kib_connected, s.kib_per_conn_idle) {
                out.push_str(&format!(", {v} KiB connected ({per:.2} KiB/conn)"));
            }
            if let (Some(v), Some(per)) = (s.rss_kib_after, s.kib_per_conn_after) {
                out.push_str(&format!(", {v} KiB after the load ({per:.2} KiB/conn)"));
            }
        }
        if let (Some(cpu), Some(per)) = (s.cpu_seconds, s.cpu_us_per_delivery) {
            out.push_str(&format!(
                "\n  server CPU  {cpu:.2} s = {per:.3} us per delivery ({:.2} s per million)",
                s.cpu_seconds_per_million.unwrap_or_default()
            ));
        }
        if let Some(r) = &self.resume {
            out.push_str(&format!(
                "\n  resume      {} clients back: {} recovered, {} not; all connected in {:.2} s, every missed message in {:.2} s",
                r.clients, r.recovered, r.not_recovered, r.reconnect_seconds, r.drain_seconds
            ));
        }
        if let Some(c) = &self.chaos {
            out.push_str(&format!(
                "\n  chaos       {} published, {} acknowledged, {} given up; {} clients reconnected {} times, received {}, told recovered:false {} times\n  violations  {}",
                c.published, c.acknowledged, c.gave_up, c.clients, c.reconnects, c.received, c.told_lost, c.violations
            ));
            for v in &c.first_violations {
                out.push_str(&format!("\n    {v}"));
            }
        }
        if !self.closed_by_server.is_empty() {
            out.push_str(&format!(
                "\n  closed by the server during the run (code: count): {:?}",
                self.closed_by_server
            ));
        }
        out.push_str(&format!(
            "\n  client CPU  {:.2} s\n",
            self.client_cpu_seconds
        ));
        out
    }
}
