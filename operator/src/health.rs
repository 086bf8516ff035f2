//! The operator's own endpoints: `/healthz` (alive), `/readyz` (leading and
//! watching), and `/metrics` in Prometheus text (reconciles by outcome, their
//! total duration, and the StreamJobs by phase).

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
    /// The phase of every StreamJob (namespace/name) as last reconciled.
    phases: Mutex<BTreeMap<String, String>>,
}

impl Metrics {
    pub fn reconciled(&self, ok: bool, took: Duration) {
        let counter = if ok { &self.reconciles_ok } else { &self.reconciles_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.reconcile_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a job's phase; `None` when the job is gone.
    pub fn phase(&self, job: String, phase: Option<String>) {
        let mut phases = self.phases.lock().expect("phases poisoned");
        match phase {
            Some(p) => phases.insert(job, p),
            None => phases.remove(&job),
        };
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let ok = self.reconciles_ok.load(Ordering::Relaxed);
        let failed = self.reconciles_failed.load(Ordering::Relaxed);
        let mut out = String::new();
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
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not leading yet")
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
}
