//! The operator's own endpoints: `/healthz` (alive), `/readyz` (leading and
//! watching, or standing by for the Lease), and `/metrics` in Prometheus
//! text (whether this replica leads, reconciles by outcome, their
//! total duration, the StreamJobs by phase, and per StreamJob the
//! autoscaler's evaluations, its decisions by reason and the rescales it
//! started, to alert on: a job whose decisions stay `budget-spent` or
//! `bounded-by-max`, or that rescales more than it should).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

/// What the controller counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles_ok: AtomicU64,
    pub reconciles_failed: AtomicU64,
    reconcile_us: AtomicU64,
    /// Set once this replica leads and its controller runs.
    pub ready: AtomicBool,
    /// Set while this replica stands by for the Lease. A standby is ready
    /// too: readiness gates rollouts, and a Deployment whose new pods could
    /// only be ready once they lead would never replace its leader.
    pub standing_by: AtomicBool,
    /// The phase of every StreamJob (namespace/name) as last reconciled.
    phases: Mutex<BTreeMap<String, String>>,
    /// Per StreamJob (namespace/name), what its autoscaler did.
    autoscalers: Mutex<BTreeMap<String, AutoscalerCounts>>,
}

/// The counters of one StreamJob's autoscaler.
#[derive(Debug, Default)]
struct AutoscalerCounts {
    /// Evaluations by the decision's reason (`Reason::code`).
    decisions: BTreeMap<String, u64>,
    rescales: u64,
}

impl Metrics {
    pub fn reconciled(&self, ok: bool, took: Duration) {
        let counter = if ok { &self.reconciles_ok } else { &self.reconciles_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.reconcile_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a job's phase; `None` when the job is gone (its autoscaler's counters go too).
    pub fn phase(&self, job: String, phase: Option<String>) {
        let mut phases = self.phases.lock().expect("phases poisoned");
        match phase {
            Some(p) => phases.insert(job, p),
            None => {
                self.autoscalers.lock().expect("autoscalers poisoned").remove(&job);
                phases.remove(&job)
            }
        };
    }

    /// Counts an evaluation of `job`'s autoscaler, and its decision by `reason`.
    pub fn autoscaler_evaluated(&self, job: &str, reason: &str) {
        let mut all = self.autoscalers.lock().expect("autoscalers poisoned");
        *all.entry(job.to_string()).or_default().decisions.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a rescale `job`'s autoscaler started.
    pub fn autoscaler_rescaled(&self, job: &str) {
        self.autoscalers.lock().expect("autoscalers poisoned").entry(job.to_string()).or_default().rescales += 1;
    }

    /// The autoscalers' counters, with `namespace` and `job` labels.
    fn render_autoscalers(&self, out: &mut String) {
        let all = self.autoscalers.lock().expect("autoscalers poisoned");
        let labels = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            format!("namespace=\"{namespace}\",job=\"{name}\"")
        };
        out.push_str("# HELP weir_operator_autoscaler_evaluations_total Autoscaler evaluations of a StreamJob.\n");
        out.push_str("# TYPE weir_operator_autoscaler_evaluations_total counter\n");
        for (job, c) in all.iter() {
            let n: u64 = c.decisions.values().sum();
            out.push_str(&format!("weir_operator_autoscaler_evaluations_total{{{}}} {n}\n", labels(job)));
        }
        out.push_str(
            "# HELP weir_operator_autoscaler_decisions_total Autoscaler decisions of a StreamJob by reason.\n",
        );
        out.push_str("# TYPE weir_operator_autoscaler_decisions_total counter\n");
        for (job, c) in all.iter() {
            for (reason, n) in &c.decisions {
                let l = labels(job);
                out.push_str(&format!("weir_operator_autoscaler_decisions_total{{{l},reason=\"{reason}\"}} {n}\n"));
            }
        }
        out.push_str(
            "# HELP weir_operator_autoscaler_rescales_total Rescales of a StreamJob its autoscaler started.\n",
        );
        out.push_str("# TYPE weir_operator_autoscaler_rescales_total counter\n");
        for (job, c) in all.iter() {
            out.push_str(&format!("weir_operator_autoscaler_rescales_total{{{}}} {}\n", labels(job), c.rescales));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let ok = self.reconciles_ok.load(Ordering::Relaxed);
        let failed = self.reconciles_failed.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP weir_operator_leading Whether this replica leads (1) or stands by (0).\n");
        out.push_str("# TYPE weir_operator_leading gauge\n");
        out.push_str(&format!("weir_operator_leading {}\n", u8::from(self.ready.load(Ordering::Relaxed))));
        out.push_str("# HELP weir_operator_reconciles_total Reconciles of StreamJobs by outcome.\n");
        out.push_str("# TYPE weir_operator_reconciles_total counter\n");
        out.push_str(&format!("weir_operator_reconciles_total{{result=\"ok\"}} {ok}\n"));
        out.push_str(&format!("weir_operator_reconciles_total{{result=\"error\"}} {failed}\n"));
        out.push_str("# HELP weir_operator_reconcile_seconds_total Time spent reconciling.\n");
        out.push_str("# TYPE weir_operator_reconcile_seconds_total counter\n");
        let secs = self.reconcile_us.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str(&format!("weir_operator_reconcile_seconds_total {secs}\n"));
        out.push_str("# HELP weir_operator_streamjobs StreamJobs by phase.\n");
        out.push_str("# TYPE weir_operator_streamjobs gauge\n");
        let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
        for p in self.phases.lock().expect("phases poisoned").values() {
            *by_phase.entry(p.clone()).or_default() += 1;
        }
        for (phase, n) in by_phase {
            out.push_str(&format!("weir_operator_streamjobs{{phase=\"{phase}\"}} {n}\n"));
        }
        self.render_autoscalers(&mut out);
        out
    }
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok: leading")
                } else if m.standing_by.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok: standing by")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not watching yet")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
            }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_reconciles_and_jobs_by_phase() {
        let m = Metrics::default();
        m.reconciled(true, Duration::from_millis(3));
        m.reconciled(false, Duration::from_millis(1));
        m.phase("default/a".into(), Some("Running".into()));
        m.phase("default/b".into(), Some("Running".into()));
        m.phase("default/c".into(), Some("Deploying".into()));
        m.phase("default/c".into(), None);
        let text = m.render();
        assert!(text.contains("weir_operator_reconciles_total{result=\"ok\"} 1\n"), "{text}");
        assert!(text.contains("weir_operator_reconciles_total{result=\"error\"} 1\n"), "{text}");
        assert!(text.contains("weir_operator_reconcile_seconds_total 0.004\n"), "{text}");
        assert!(text.contains("weir_operator_streamjobs{phase=\"Running\"} 2\n"), "{text}");
        assert!(!text.contains("Deploying"), "{text}");
    }

    #[test]
    fn autoscaler_counters_carry_the_job_and_go_with_it() {
        let m = Metrics::default();
        m.autoscaler_evaluated("weir/orders", "within-band");
        m.autoscaler_evaluated("weir/orders", "within-band");
        m.autoscaler_evaluated("weir/orders", "scale-up");
        m.autoscaler_rescaled("weir/orders");
        m.autoscaler_evaluated("prod/clicks", "budget-spent");
        let text = m.render();
        for line in [
            "weir_operator_autoscaler_evaluations_total{namespace=\"weir\",job=\"orders\"} 3\n",
            "weir_operator_autoscaler_decisions_total{namespace=\"weir\",job=\"orders\",reason=\"within-band\"} 2\n",
            "weir_operator_autoscaler_decisions_total{namespace=\"prod\",job=\"clicks\",reason=\"budget-spent\"} 1\n",
            "weir_operator_autoscaler_rescales_total{namespace=\"weir\",job=\"orders\"} 1\n",
            "weir_operator_autoscaler_rescales_total{namespace=\"prod\",job=\"clicks\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.phase("weir/orders".into(), Some("Running".into()));
        m.phase("weir/orders".into(), None);
        assert!(!m.render().contains("job=\"orders\""), "a deleted job's counters go");
    }
}
