//! The server's counters and latency histograms, rendered in the Prometheus text format.

use crate::outcome::Outcome;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in microseconds: 25 µs to 60 s.
pub(crate) const BUCKETS_US: [u64; 20] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram (counts per bucket, not cumulative; cumulated when rendered).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    over: AtomicU64,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, us: u64) {
        match BUCKETS_US.iter().position(|&le| us <= le) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (le, bucket) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *le as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Phases of a run with a latency histogram each.
pub(crate) const PHASES: [&str; 4] = ["queue", "fork", "run", "total"];

/// Everything `/metrics` reports that the server counts itself.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Finished runs by (tool, status); `status` includes the run errors (`busy`,
    /// `unavailable`, `invalid`).
    tasks: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Per phase, in the order of [`PHASES`].
    latency: [Histogram; 4],
    /// HTTP responses by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Requests refused by admission (`saturated`) or by a key's quota (`quota`).
    refused_saturated: AtomicU64,
    refused_quota: AtomicU64,
}

/// What [`Metrics::render`] needs that lives elsewhere: gauges read at render time.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub in_flight: usize,
    pub queued: usize,
    pub tools: usize,
    /// Per template (tools by id, interpreters by language).
    pub templates: Vec<TemplateGauges>,
}

/// One template's figures for [`Gauges`].
#[derive(Debug, Default)]
pub(crate) struct TemplateGauges {
    pub label: String,
    /// Zygotes started again after the previous one died.
    pub restarts: u64,
    /// Pool sandboxes waiting for a run now.
    pub pool_ready: usize,
    /// Pool sandboxes its zygote keeps ready.
    pub pool_size: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// A run of `tool` that finished with `outcome`, after `queue_us` waiting for admission.
    pub fn finished(&self, tool: &str, outcome: &Outcome, queue_us: u64) {
        self.count(tool, outcome.status.as_str());
        let t = &outcome.timings_us;
        for (h, us) in self.latency.iter().zip([queue_us, t.fork, t.run, t.total]) {
            h.observe(us);
        }
    }

    /// A run of `tool` that could not start: `what` says why (`busy`, `unavailable`, …).
    pub fn failed(&self, tool: &str, what: &'static str) {
        self.count(tool, what);
    }

    fn count(&self, tool: &str, status: &'static str) {
        *lock(&self.tasks).entry((tool.to_string(), status)).or_default() += 1;
    }

    pub fn response(&self, code: u16) {
        *lock(&self.responses).entry(code).or_default() += 1;
    }

    pub fn refused(&self, by_quota: bool) {
        let c = if by_quota { &self.refused_quota } else { &self.refused_saturated };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets the task counts of a deleted tool (its label would otherwise stay forever).
    pub fn forget(&self, tool: &str) {
        lock(&self.tasks).retain(|(t, _), _| t != tool);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP zeroboot_tasks_total Runs finished, by template and status (the outcome's status, or why the run could not start).\n");
        out.push_str("# TYPE zeroboot_tasks_total counter\n");
        for ((tool, status), n) in lock(&self.tasks).iter() {
            let _ = writeln!(
                out,
                "zeroboot_tasks_total{{tool=\"{}\",status=\"{status}\"}} {n}",
                label(tool)
            );
        }
        out.push_str("# HELP zeroboot_task_duration_seconds Latency of runs by phase: queue (waiting for admission), fork, run (the guest) and total (hand-over to outcome).\n");
        out.push_str("# TYPE zeroboot_task_duration_seconds histogram\n");
        for (phase, h) in PHASES.iter().zip(&self.latency) {
            h.render(&mut out, "zeroboot_task_duration_seconds", &format!("phase=\"{phase}\""));
        }
        out.push_str("# HELP zeroboot_in_flight Runs holding a slot now.\n");
        out.push_str("# TYPE zeroboot_in_flight gauge\n");
        let _ = writeln!(out, "zeroboot_in_flight {}", g.in_flight);
        out.push_str("# HELP zeroboot_queue_depth Runs admitted and waiting for a slot now.\n");
        out.push_str("# TYPE zeroboot_queue_depth gauge\n");
        let _ = writeln!(out, "zeroboot_queue_depth {}", g.queued);
        out.push_str("# HELP zeroboot_tools Tools loaded.\n");
        out.push_str("# TYPE zeroboot_tools gauge\n");
        let _ = writeln!(out, "zeroboot_tools {}", g.tools);
        type Figure = fn(&TemplateGauges) -> u64;
        let per_template: [(&str, &str, &str, Figure); 3] = [
            (
                "zeroboot_zygote_restarts_total",
                "counter",
                "Zygotes started again after the previous one died.",
                |t| t.restarts,
            ),
            (
                "zeroboot_pool_ready",
                "gauge",
                "Sandboxes forked and confined ahead of a run, waiting for one now.",
                |t| t.pool_ready as u64,
            ),
            ("zeroboot_pool_size", "gauge", "Sandboxes each zygote keeps ready (--pool).", |t| {
                t.pool_size as u64
            }),
        ];
        for (name, kind, help, figure) in per_template {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for t in &g.templates {
                let _ = writeln!(out, "{name}{{tool=\"{}\"}} {}", label(&t.label), figure(t));
            }
        }
        out.push_str("# HELP zeroboot_requests_refused_total Requests refused with 429: the server's admission was full (saturated) or the key's quota was (quota).\n");
        out.push_str("# TYPE zeroboot_requests_refused_total counter\n");
        let _ = writeln!(
            out,
            "zeroboot_requests_refused_total{{reason=\"saturated\"}} {}",
            self.refused_saturated.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "zeroboot_requests_refused_total{{reason=\"quota\"}} {}",
            self.refused_quota.load(Ordering::Relaxed)
        );
        out.push_str("# HELP zeroboot_http_responses_total HTTP responses by status code.\n");
        out.push_str("# TYPE zeroboot_http_responses_total counter\n");
        for (code, n) in lock(&self.responses).iter() {
            let _ = writeln!(out, "zeroboot_http_responses_total{{code=\"{code}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let h = Histogram::default();
        for us in [10, 30, 30, 70_000_000] {
            h.observe(us);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "phase=\"run\"");
        assert!(out.contains("x_bucket{phase=\"run\",le=\"0.000025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{phase=\"run\",le=\"0.00005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{phase=\"run\",le=\"60\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{phase=\"run\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{phase=\"run\"} 4\n"), "{out}");
    }

    #[test]
    fn each_template_has_its_restarts_and_pool_figures() {
        let t = |label: &str, restarts, pool_ready, pool_size| TemplateGauges {
            label: label.into(),
            restarts,
            pool_ready,
            pool_size,
        };
        let g = Gauges {
            templates: vec![t("abc", 1, 0, 2), t("python", 0, 3, 3)],
            ..Gauges::default()
        };
        let out = Metrics::default().render(&g);
        for want in [
            "# TYPE zeroboot_zygote_restarts_total counter\n",
            "zeroboot_zygote_restarts_total{tool=\"abc\"} 1\n",
            "# TYPE zeroboot_pool_ready gauge\n",
            "zeroboot_pool_ready{tool=\"abc\"} 0\n",
            "zeroboot_pool_ready{tool=\"python\"} 3\n",
            "zeroboot_pool_size{tool=\"abc\"} 2\n",
            "zeroboot_pool_size{tool=\"python\"} 3\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
