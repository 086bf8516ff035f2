//! Leader election among JobManagers that share a machine or a file system:
//! an exclusive lock on a file. The leader holds the lock for as long as its
//! process lives; the kernel releases it when the process dies, however it
//! dies, and a standby blocked on the lock takes over at once.
//!
//! In Kubernetes the JobManagers elect a leader with a Lease instead (the
//! `weir` binary's `--leader-lease`): [`decide`] is that election's rule, as
//! client-go's leader election has it, kept pure here so that it is tested
//! without an API server.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Held leadership: dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct Leadership {
    _file: File,
}

/// Blocks until this process holds the lock at `path`, then records `who`
/// (for people looking at the file) and returns.
pub fn acquire(path: &Path, who: &str) -> std::io::Result<Leadership> {
    let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
    if file.try_lock().is_err() {
        tracing::info!("standing by: another JobManager holds {}", path.display());
        file.lock()?;
    }
    file.set_len(0)?;
    writeln!(file, "{who}")?;
    file.flush()?;
    Ok(Leadership { _file: file })
}

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

#[cfg(test)]
mod tests {
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

    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_standby_leads_once_the_leader_lets_go() {
        let dir = std::env::temp_dir().join(format!("weir-leader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("leader.lock");
        let first = acquire(&lock, "first").unwrap();
        let (tx, rx) = mpsc::channel();
        let path = lock.clone();
        let standby = std::thread::spawn(move || {
            let held = acquire(&path, "second").unwrap();
            tx.send(()).unwrap();
            held
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the standby must wait");
        drop(first);
        rx.recv_timeout(Duration::from_secs(5)).expect("the standby takes over");
        drop(standby.join().unwrap());
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "second\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
