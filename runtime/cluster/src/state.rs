//! The lifecycle of a job on the JobManager: the states are the REST API's
//! ([`JobState`], defined in `weir_api::rest` and re-exported here), the
//! events and the one checked transition function are the JobManager's:
//! `state.transition(event)` goes through [`JobEvent`]'s table below.

pub use weir_api::rest::JobState;
use weir_api::rest::JobTransition;

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

/// The state after `event`, or why the event cannot happen now: the one table
/// of legal transitions (also reached as `state.transition(event)`).
pub fn transition(state: JobState, event: JobEvent) -> Result<JobState, InvalidTransition> {
    use JobEvent as E;
    use JobState as S;
    let next = match (state, event) {
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

impl JobTransition for JobEvent {
    type Error = InvalidTransition;

    fn apply(self, from: JobState) -> Result<JobState, InvalidTransition> {
        transition(from, self)
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
                assert_eq!(transition(s, e).ok(), expected, "{s} + {e:?}");
                assert_eq!(s.transition(e), transition(s, e), "the method is the function");
            }
        }
        // Terminal states take nothing.
        for s in [S::Failed, S::Cancelled, S::Finished] {
            assert!(s.is_terminal());
            assert!(events.iter().all(|&e| transition(s, e).is_err()));
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
