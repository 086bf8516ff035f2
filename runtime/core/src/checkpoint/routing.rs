//! Which tasks a checkpoint coordinator's [`Command`] is for.
//!
//! One piece of code for every place a coordinator runs: the local executor
//! hands each command to a task's control channel, the JobManager sends it to
//! the TaskManager that runs the task. Only the delivery differs.
//!
//! * [`Command::Trigger`] (a checkpoint or a savepoint), [`Command::EndOfInput`]
//!   and [`Command::Resume`] go to every source task: barriers start there;
//! * [`Command::Complete`] goes to every task (transactional sinks commit);
//! * [`Command::Fail`] goes to no task: it fails the job, and what follows it is dropped.

use super::coordinator::Command;
use crate::graph::ChainLayout;

/// The tasks of a job, as the coordinator's commands address them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRouter {
    tasks: Vec<usize>,
    sources: Vec<usize>,
}

impl CommandRouter {
    /// The router of a job laid out as `layout` ([`crate::graph::JobGraph::layout`]).
    pub fn new(layout: &[ChainLayout]) -> Self {
        let tasks_of = |c: &ChainLayout| c.first_task..c.first_task + c.parallelism;
        CommandRouter {
            tasks: layout.iter().flat_map(tasks_of).collect(),
            sources: layout.iter().filter(|c| c.is_source).flat_map(tasks_of).collect(),
        }
    }

    /// The task numbers of the source tasks.
    pub fn sources(&self) -> &[usize] {
        &self.sources
    }

    /// The tasks `command` is for (none for [`Command::Fail`]).
    pub fn recipients(&self, command: &Command) -> &[usize] {
        match command {
            Command::Trigger { .. } | Command::EndOfInput | Command::Resume { .. } => &self.sources,
            Command::Complete { .. } => &self.tasks,
            Command::Fail(_) => &[],
        }
    }

    /// Hands every command, in order, to each of its tasks (`send(task, command)`).
    /// A [`Command::Fail`] is sent to none: its reason is the error, and the
    /// commands after it are dropped.
    pub fn route(&self, commands: Vec<Command>, mut send: impl FnMut(usize, &Command)) -> Result<(), String> {
        for command in commands {
            if let Command::Fail(reason) = command {
                return Err(reason);
            }
            for &task in self.recipients(&command) {
                send(task, &command);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Barrier;

    fn chain(parallelism: usize, is_source: bool, first_task: usize) -> ChainLayout {
        ChainLayout { vertices: vec![], uids: vec![], parallelism, is_source, first_task, inputs: vec![] }
    }

    /// Two sources (2 and 1 subtasks) feeding a chain of 3.
    fn router() -> CommandRouter {
        CommandRouter::new(&[chain(2, true, 0), chain(1, true, 2), chain(3, false, 3)])
    }

    fn routed(commands: Vec<Command>) -> (Vec<(usize, Command)>, Result<(), String>) {
        let mut sent = Vec::new();
        let result = router().route(commands, |task, c| sent.push((task, c.clone())));
        (sent, result)
    }

    #[test]
    fn triggers_and_end_of_input_go_to_the_sources_completions_to_every_task() {
        let barrier = Barrier { checkpoint_id: 4, triggered_at: 0, is_savepoint: true };
        let trigger = Command::Trigger { barrier, drain: true, stop: true };
        let (sent, result) = routed(vec![trigger.clone()]);
        assert_eq!((sent, result), (vec![(0, trigger.clone()), (1, trigger.clone()), (2, trigger)], Ok(())));
        let complete = Command::Complete { checkpoint_id: 4 };
        let (sent, _) = routed(vec![complete.clone(), Command::EndOfInput]);
        let tasks: Vec<usize> = sent.iter().filter(|(_, c)| *c == complete).map(|(t, _)| *t).collect();
        assert_eq!(tasks, [0, 1, 2, 3, 4, 5]);
        let ends: Vec<usize> = sent.iter().filter(|(_, c)| *c == Command::EndOfInput).map(|(t, _)| *t).collect();
        assert_eq!(ends, [0, 1, 2]);
        assert_eq!(router().sources(), [0, 1, 2]);
    }

    #[test]
    fn a_failure_goes_to_no_task_and_ends_the_routing() {
        let (sent, result) = routed(vec![Command::Fail("too many failures".into()), Command::EndOfInput]);
        assert_eq!((sent, result), (vec![], Err("too many failures".to_string())));
        assert!(router().recipients(&Command::Fail(String::new())).is_empty());
    }
}
