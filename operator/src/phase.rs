//! The lifecycle of a StreamJob as the operator drives it: one enum, and one
//! checked transition function that every phase change goes through.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// The cluster is being created (or re-created) and the job submitted.
    Deploying,
    Running,
    /// A savepoint is being taken while the job runs (manual or periodic).
    Savepointing,
    /// In place while the job runs (the JobManager's rescale API: TaskManagers
    /// added first when their slots are too few, idle ones removed after);
    /// else a savepoint, then a redeploy at the new parallelism from it.
    Rescaling,
    /// Savepoint (or last checkpoint), then redeploy with the new spec.
    Upgrading,
    /// Stopped with a savepoint.
    Suspended,
    Failed,
    /// An operation failed after the old job stopped: the old spec is redeployed from its snapshot.
    RollingBack,
    /// Taking the final savepoint and removing the cluster.
    Deleting,
}

/// A phase change the lifecycle does not allow (a bug in a plan, not bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a StreamJob cannot go from {from:?} to {to:?}")]
pub struct InvalidTransition {
    pub from: Phase,
    pub to: Phase,
}

impl Phase {
    /// The one way to change phase.
    pub fn transition(self, to: Phase) -> Result<Phase, InvalidTransition> {
        use Phase::*;
        let allowed = self == to
            || to == Deleting && self != Deleting
            || matches!(
                (self, to),
                (Deploying, Running | Failed)
                    | (Running, Savepointing | Rescaling | Upgrading | Suspended | Failed | Deploying)
                    | (Savepointing, Running | Suspended | Failed)
                    | (Rescaling | Upgrading, Running | RollingBack | Failed)
                    | (RollingBack, Running | Failed)
                    | (Suspended | Failed, Deploying)
            );
        if allowed { Ok(to) } else { Err(InvalidTransition { from: self, to }) }
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;
    use super::*;

    const ALL: [Phase; 9] =
        [Deploying, Running, Savepointing, Rescaling, Upgrading, Suspended, Failed, RollingBack, Deleting];

    /// The whole table: rows are the phase a job is in, columns where it may go.
    #[test]
    fn transitions_as_a_table() {
        let table = [
            (Deploying, "Dep Run . . . . Fail . Del"),
            (Running, "Dep Run Sp Resc Upg Susp Fail . Del"),
            (Savepointing, ". Run Sp . . Susp Fail . Del"),
            (Rescaling, ". Run . Resc . . Fail Roll Del"),
            (Upgrading, ". Run . . Upg . Fail Roll Del"),
            (Suspended, "Dep . . . . Susp . . Del"),
            (Failed, "Dep . . . . . Fail . Del"),
            (RollingBack, ". Run . . . . Fail Roll Del"),
            (Deleting, ". . . . . . . . Del"),
        ];
        for (from, row) in table {
            let cells: Vec<&str> = row.split(' ').collect();
            assert_eq!(cells.len(), ALL.len(), "row {from:?}");
            for (to, cell) in ALL.iter().zip(cells) {
                assert_eq!(from.transition(*to).is_ok(), cell != ".", "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn a_refused_transition_names_both_phases() {
        let e = Suspended.transition(Rescaling).unwrap_err();
        assert_eq!(e.to_string(), "a StreamJob cannot go from Suspended to Rescaling");
    }
}
