//! Leader election among JobManagers that share a machine or a file system:
//! an exclusive lock on a file. The leader holds the lock for as long as its
//! process lives; the kernel releases it when the process dies, however it
//! dies, and a standby blocked on the lock takes over at once.
//!
//! In Kubernetes the JobManagers elect a leader with a Lease instead (the
//! `weir-lease` crate, the `weir` binary's `--leader-lease`).

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

#[cfg(test)]
mod tests {
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
