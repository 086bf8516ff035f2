//! # weir-lease: leader election with a Kubernetes Lease
//!
//! Among JobManager replicas (`weir jobmanager --leader-lease NAME`) and
//! among operator replicas: one Lease (coordination.k8s.io/v1), and the rule
//! of [`decide`], as client-go's leader election has it (kept pure, so that
//! it is tested without an API server).
//!
//! A candidate tries every retry period until it holds the Lease, then renews
//! it in the background every third of its duration. A leader that cannot
//! renew before the Lease would expire has lost it, and its process exits
//! (code 1): another replica takes over, and this one comes back, as a
//! standby, when Kubernetes restarts it. A leader that is leaving (SIGTERM)
//! gives the Lease up ([`Leader::release`]), so a standby takes over at its
//! next try rather than after the Lease's duration. The API server is found as
//! kubectl finds it: in a pod, the service account; elsewhere, `KUBECONFIG`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// A Lease's record of its holder, as the election reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// When the holder last renewed it (epoch milliseconds).
    pub renewed_at_ms: Option<i64>,
    /// How long a renewal holds.
    pub duration_ms: i64,
    pub transitions: i32,
}

/// What a candidate does about a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Create it, holding it.
    Create,
    /// Take it over (it is free or expired); `transitions` is the new count.
    Take { transitions: i32 },
    /// It is ours: renew it.
    Renew,
    /// Another candidate holds it: wait.
    Wait,
}

/// The election's rule: a Lease is taken when nobody holds it, or when its
/// holder has not renewed it within its duration.
pub fn decide(current: Option<&LeaseRecord>, me: &str, now_ms: i64) -> LeaseDecision {
    let Some(lease) = current else { return LeaseDecision::Create };
    match lease.holder.as_deref() {
        Some(h) if h == me => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Take { transitions: lease.transitions + 1 },
        Some(_) => {
            let expired = lease.renewed_at_ms.is_none_or(|r| r + lease.duration_ms < now_ms);
            if expired { LeaseDecision::Take { transitions: lease.transitions + 1 } } else { LeaseDecision::Wait }
        }
    }
}

/// A Lease election of one candidate.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    runtime: tokio::runtime::Runtime,
}

fn record(lease: &Lease, default_ms: i64) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        renewed_at_ms: spec.renew_time.map(|t| t.0.as_millisecond()),
        duration_ms: spec.lease_duration_seconds.map_or(default_ms, |s| i64::from(s) * 1000),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

impl Election {
    /// Connects to the API server; the Lease is in `POD_NAMESPACE`, else the client's default namespace.
    pub fn new(name: &str, identity: String, duration: Duration) -> Result<Election, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let client = runtime
            .block_on(kube::Client::try_default())
            .map_err(|e| format!("cannot reach the Kubernetes API server: {e}"))?;
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_string());
        Ok(Election { api: Api::namespaced(client, &namespace), name: name.to_string(), identity, duration, runtime })
    }

    /// One round: whether this candidate holds the Lease afterwards.
    fn round(&self) -> Result<bool, String> {
        self.runtime.block_on(async {
            let now = Timestamp::now();
            let current = self.api.get_opt(&self.name).await.map_err(|e| e.to_string())?;
            let duration_ms = self.duration.as_millis() as i64;
            let decision =
                decide(current.as_ref().map(|l| record(l, duration_ms)).as_ref(), &self.identity, now.as_millisecond());
            let mut spec = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
            match decision {
                LeaseDecision::Wait => return Ok(false),
                LeaseDecision::Create | LeaseDecision::Take { .. } => {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    if let LeaseDecision::Take { transitions } = decision {
                        spec.lease_transitions = Some(transitions);
                    }
                }
                LeaseDecision::Renew => {}
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration.as_secs().max(1) as i32);
            let result = match current {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                        spec: Some(LeaseSpec { lease_transitions: Some(0), ..spec }),
                    };
                    self.api.create(&PostParams::default(), &lease).await
                }
                // Replace carries the resourceVersion read: a concurrent change makes it a conflict.
                Some(mut lease) => {
                    lease.spec = Some(spec);
                    self.api.replace(&self.name, &PostParams::default(), &lease).await
                }
            };
            match result {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// Gives the Lease up if this candidate holds it (client-go's
    /// ReleaseOnCancel): its holder is cleared, so a standby takes it at its
    /// next try instead of after the Lease's duration.
    fn release(&self) -> Result<(), String> {
        self.runtime.block_on(async {
            let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| e.to_string())? else { return Ok(()) };
            let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(&self.identity))
            else {
                return Ok(());
            };
            spec.holder_identity = None;
            // A conflict means it changed hands meanwhile: nothing of ours to give up.
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// Blocks until this candidate leads, then keeps renewing in the
    /// background; if a renewal cannot be made before the Lease expires, the
    /// process exits. The [`Leader`] gives the Lease up on the way out.
    pub fn lead(self) -> Result<Leader, String> {
        let retry = (self.duration / 5).max(Duration::from_millis(200));
        let mut said = false;
        loop {
            match self.round() {
                Ok(true) => break,
                Ok(false) if !said => {
                    eprintln!("leader election: standing by: another candidate holds the Lease {}", self.name);
                    said = true;
                }
                Ok(false) => {}
                Err(e) => eprintln!("leader election: Lease {}: {e}", self.name),
            }
            std::thread::sleep(retry);
        }
        eprintln!("leader election: leading (holding the Lease {} as {})", self.name, self.identity);
        let (requests, released) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
        std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                let mut renewed = std::time::Instant::now();
                let mut releasable = true;
                loop {
                    if releasable {
                        match released.recv_timeout(self.duration / 3) {
                            Ok(done) => {
                                if let Err(e) = self.release() {
                                    eprintln!("leader election: giving up the Lease {}: {e}", self.name);
                                }
                                let _ = done.send(());
                                return;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            // The Leader was dropped: lead on, without giving up at the end.
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => releasable = false,
                        }
                    } else {
                        std::thread::sleep(self.duration / 3);
                    }
                    match self.round() {
                        Ok(true) => renewed = std::time::Instant::now(),
                        Ok(false) => {
                            eprintln!("leader election: another candidate took the Lease {}; stopping", self.name);
                            std::process::exit(1);
                        }
                        // Give up a third of the duration early: another candidate may take it once it expires.
                        Err(e) if renewed.elapsed() < self.duration * 2 / 3 => {
                            eprintln!("leader election: renewing the Lease: {e}")
                        }
                        Err(e) => {
                            eprintln!("leader election: lost the Lease {} (cannot renew it: {e}); stopping", self.name);
                            std::process::exit(1);
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Leader { requests })
    }
}

/// The candidate that leads: its Lease is renewed in the background until
/// [`Leader::release`] (or the process's end).
pub struct Leader {
    requests: std::sync::mpsc::Sender<std::sync::mpsc::Sender<()>>,
}

impl Leader {
    /// Stops renewing and gives the Lease up, waiting at most `timeout` for
    /// the API server: for a process that is leaving (SIGTERM), so that a
    /// standby need not wait out the Lease's duration.
    pub fn release(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.requests.send(done).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_or_expired_and_renewed_by_its_holder() {
        let lease = |holder: Option<&str>, renewed: Option<i64>| LeaseRecord {
            holder: holder.map(str::to_string),
            renewed_at_ms: renewed,
            duration_ms: 15_000,
            transitions: 2,
        };
        assert_eq!(decide(None, "a", 0), LeaseDecision::Create);
        assert_eq!(decide(Some(&lease(Some("a"), Some(0))), "a", 100_000), LeaseDecision::Renew);
        assert_eq!(decide(Some(&lease(Some("b"), Some(90_000))), "a", 100_000), LeaseDecision::Wait);
        assert_eq!(decide(Some(&lease(Some("b"), Some(85_000))), "a", 100_000), LeaseDecision::Wait);
        assert_eq!(decide(Some(&lease(Some("b"), Some(84_999))), "a", 100_000), LeaseDecision::Take { transitions: 3 });
        assert_eq!(decide(Some(&lease(Some("b"), None)), "a", 100_000), LeaseDecision::Take { transitions: 3 });
        assert_eq!(decide(Some(&lease(None, Some(99_000))), "a", 100_000), LeaseDecision::Take { transitions: 3 });
    }
}
