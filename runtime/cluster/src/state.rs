//! The lifecycle of a job on the JobManager: one enum, one checked transition
//! function. The names are DESIGN.md's job states, as the REST API reports them.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Not deployed yet (waiting for slots).
    Created,
    Running,
    /// Failed over, or rescaling: waiting for the restart delay and for slots.
    Restarting,
    /// Failed and out of restarts.
    Failed,
    /// Being torn down on request.
    Cancelling,
    Cancelled,
    /// Every task ended: the input was exhausted, or a stop-with-savepoint.
    Finished,
}

/// What happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEvent {
    Deployed,
    /// A task, a TaskManager or checkpointing failed, and the restart strategy allows a restart.
    FailedOver,
    /// A failure the restart strategy does not allow, or a job that cannot be built.
    GaveUp,
    /// A savepoint was taken and the job restarts from it (rescale).
    Redeploy,
    AllTasksEnded,
    CancelRequested,
    Cancelled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {state} job cannot take {event:?}")]
pub struct InvalidTransition {
    pub state: JobState,
    pub event: JobEvent,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        let name = s.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown");
        f.write_str(name)
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Failed | JobState::Cancelled | JobState::Finished)
    }

    /// The state after `event`, or why the event cannot happen now.
    pub fn transition(self, event: JobEvent) -> Result<JobState, InvalidTransition> {
        use JobEvent as E;
        use JobState as S;
        let next = match (self, event) {
            (S::Created | S::Restarting, E::Deployed) => S::Running,
            (S::Created | S::Running | S::Restarting, E::FailedOver) => S::Restarting,
            (S::Created | S::Running | S::Restarting | S::Cancelling, E::GaveUp) => S::Failed,
            (S::Running, E::Redeploy) => S::Restarting,
            (S::Running, E::AllTasksEnded) => S::Finished,
            (S::Created | S::Running | S::Restarting, E::CancelRequested) => S::Cancelling,
            (S::Cancelling, E::Cancelled | E::AllTasksEnded) => S::Cancelled,
            (state, event) => return Err(InvalidTransition { state, event }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobState as S;

    #[test]
    fn every_transition_is_as_in_the_table() {
        let states = [S::Created, S::Running, S::Restarting, S::Failed, S::Cancelling, S::Cancelled, S::Finished];
        let events =
            [E::Deployed, E::FailedOver, E::GaveUp, E::Redeploy, E::AllTasksEnded, E::CancelRequested, E::Cancelled];
        let allowed = [
            (S::Created, E::Deployed, S::Running),
            (S::Restarting, E::Deployed, S::Running),
            (S::Created, E::FailedOver, S::Restarting),
            (S::Running, E::FailedOver, S::Restarting),
            (S::Restarting, E::FailedOver, S::Restarting),
            (S::Created, E::GaveUp, S::Failed),
            (S::Running, E::GaveUp, S::Failed),
            (S::Restarting, E::GaveUp, S::Failed),
            (S::Cancelling, E::GaveUp, S::Failed),
            (S::Running, E::Redeploy, S::Restarting),
            (S::Running, E::AllTasksEnded, S::Finished),
            (S::Created, E::CancelRequested, S::Cancelling),
            (S::Running, E::CancelRequested, S::Cancelling),
            (S::Restarting, E::CancelRequested, S::Cancelling),
            (S::Cancelling, E::Cancelled, S::Cancelled),
            (S::Cancelling, E::AllTasksEnded, S::Cancelled),
        ];
        for s in states {
            for e in events {
                let expected = allowed.iter().find(|(a, b, _)| *a == s && *b == e).map(|(_, _, n)| *n);
                assert_eq!(s.transition(e).ok(), expected, "{s} + {e:?}");
            }
        }
        // Terminal states take nothing.
        for s in [S::Failed, S::Cancelled, S::Finished] {
            assert!(s.is_terminal());
            assert!(events.iter().all(|&e| s.transition(e).is_err()));
        }
    }

    #[test]
    fn states_show_as_the_rest_api_names_them() {
        assert_eq!(S::Restarting.to_string(), "restarting");
        assert_eq!(
            S::Created.transition(E::AllTasksEnded).unwrap_err().to_string(),
            "a created job cannot take AllTasksEnded"
        );
    }
}
