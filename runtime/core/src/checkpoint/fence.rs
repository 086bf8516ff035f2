//! Fencing: two JobManagers of one job (a leader that lost its lease and does
//! not know it yet, and the one that took over) never both complete
//! checkpoints in one directory.
//!
//! A JobManager that leads a job takes an *epoch*, its fencing token: the
//! wall-clock milliseconds at which it began to lead. A new leader takes over
//! only once the old one's lease expired, so its epoch is the larger while
//! the nodes' clocks agree to within the lease's duration (seconds; NTP keeps
//! them within milliseconds). Before it deploys anything, the leader claims
//! its epoch in storage ([`claim`], `{job}/_epoch`), and only upwards. Before
//! it completes a checkpoint, a JobManager reads the claim ([`check`]): one
//! that finds a larger epoch than its own is *fenced*; it completes nothing
//! more. Every `_metadata` and the `latest` pointer carry the epoch of the
//! JobManager that wrote them, and `latest` never moves back to a lower
//! (epoch, checkpoint id) ([`may_move`]).
//!
//! The claim and the check are each a read, then a write or a decision: two
//! leaders claiming in the same instant could both pass. Leader election
//! rules that out; what fencing adds is that a leader that *was* deposed
//! cannot overwrite its successor's checkpoints, however late it wakes up.

use super::metadata::LatestPointer;
use super::storage::{CheckpointStorage, StorageError};

/// Where a job's claimed epoch is kept, under its directory.
pub const EPOCH_FILE: &str = "_epoch";

/// Why a JobManager may not complete checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(
        "fenced: a JobManager of a newer epoch ({claimed}, this one's is {ours}) leads job {job} in {uri}; \
         this one completes no more checkpoints"
    )]
    Fenced { job: String, ours: u64, claimed: u64, uri: String },
    #[error("cannot read or write the fencing epoch {uri}: {source}")]
    Storage {
        uri: String,
        #[source]
        source: StorageError,
    },
    #[error("the fencing epoch {uri} is corrupt: {reason}")]
    Corrupt { uri: String, reason: String },
}

fn path(job: &str) -> String {
    format!("{job}/{EPOCH_FILE}")
}

/// The epoch claimed for `job`, if any.
pub fn claimed(storage: &dyn CheckpointStorage, job: &str) -> Result<Option<u64>, FenceError> {
    let path = path(job);
    let uri = storage.uri(&path);
    match storage.get(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let epoch = text.trim().parse::<u64>().map_err(|e| FenceError::Corrupt { uri, reason: e.to_string() })?;
            Ok(Some(epoch))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(source) => Err(FenceError::Storage { uri, source }),
    }
}

/// Whether a JobManager of `epoch` may complete checkpoints of `job`: no
/// larger epoch is claimed.
pub fn check(storage: &dyn CheckpointStorage, job: &str, epoch: u64) -> Result<(), FenceError> {
    match claimed(storage, job)? {
        Some(claimed) if claimed > epoch => {
            Err(FenceError::Fenced { job: job.to_string(), ours: epoch, claimed, uri: storage.uri(&path(job)) })
        }
        _ => Ok(()),
    }
}

/// Claims `epoch` for `job`, before the JobManager deploys it: refused when
/// a larger one is claimed already (this JobManager was deposed before it began).
pub fn claim(storage: &dyn CheckpointStorage, job: &str, epoch: u64) -> Result<(), FenceError> {
    check(storage, job, epoch)?;
    let path = path(job);
    storage
        .put(&path, epoch.to_string().as_bytes())
        .map_err(|source| FenceError::Storage { uri: storage.uri(&path), source })
}

/// The epoch a JobManager that was just elected leader takes: the clock's
/// `now`, or one above the claimed epoch if the clock is behind it (another
/// node's clock ran ahead): election already made this one the leader, and
/// a skewed clock must not keep it from starting.
pub fn next_epoch(storage: &dyn CheckpointStorage, job: &str, now: u64) -> Result<u64, FenceError> {
    Ok(claimed(storage, job)?.map_or(now, |c| now.max(c + 1)))
}

/// Whether `latest` may move from `current` to checkpoint `id` of a
/// JobManager of `epoch`: never back to a lower (epoch, id). A pointer
/// without an epoch (older versions) counts as epoch 0.
pub fn may_move(current: Option<&LatestPointer>, epoch: Option<u64>, id: u64) -> bool {
    current.is_none_or(|c| (epoch.unwrap_or(0), id) >= (c.epoch.unwrap_or(0), c.checkpoint_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::metadata::SnapshotKind;
    use crate::checkpoint::storage::LocalStorage;

    #[test]
    fn a_claim_goes_only_upwards_and_fences_every_older_epoch() {
        let dir = std::env::temp_dir().join(format!("weir-fence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = LocalStorage::new(&dir);
        assert_eq!(claimed(&s, "j").unwrap(), None);
        check(&s, "j", 5).expect("nothing claimed: anyone may complete");
        claim(&s, "j", 10).unwrap();
        claim(&s, "j", 10).expect("claiming one's own epoch again is fine");
        assert!(matches!(check(&s, "j", 9), Err(FenceError::Fenced { ours: 9, claimed: 10, .. })));
        assert!(matches!(claim(&s, "j", 7), Err(FenceError::Fenced { .. })), "a deposed leader cannot claim");
        assert_eq!(next_epoch(&s, "j", 5).unwrap(), 11, "a clock behind the claim still moves it up");
        assert_eq!(next_epoch(&s, "j", 50).unwrap(), 50);
        claim(&s, "j", 11).unwrap();
        let e = check(&s, "j", 10).unwrap_err().to_string();
        assert!(e.contains("fenced") && e.contains("11") && e.contains("_epoch"), "{e}");
        s.put("j/_epoch", b"not a number").unwrap();
        assert!(matches!(check(&s, "j", 10), Err(FenceError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn latest_never_moves_back_to_a_lower_epoch_and_id() {
        let at = |epoch, id| LatestPointer {
            path: format!("chk-{id}"),
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            epoch,
        };
        assert!(may_move(None, Some(1), 1));
        assert!(may_move(Some(&at(Some(1), 5)), Some(1), 6));
        assert!(!may_move(Some(&at(Some(1), 5)), Some(1), 4), "an older checkpoint of the same leader");
        assert!(!may_move(Some(&at(Some(2), 5)), Some(1), 9), "a deposed leader's newer id");
        assert!(may_move(Some(&at(Some(1), 9)), Some(2), 3), "a new leader's checkpoint, whatever its id");
        assert!(may_move(Some(&at(None, 9)), Some(2), 10), "pointers of older versions count as epoch 0");
    }
}
