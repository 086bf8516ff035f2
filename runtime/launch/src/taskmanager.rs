//! A TaskManager process: from its flags to serving JobManagers until told to stop.

use std::sync::Arc;

use weir_api::launch::TaskManagerOptions;
use weir_cluster::JobBuilder;
use weir_cluster::taskmanager::{TaskManagerConfig, TaskManagerError};

use crate::LaunchError;
use crate::jobmanager::socket;

/// The TaskManager's settings from its flags.
pub fn config(options: &TaskManagerOptions) -> Result<TaskManagerConfig, LaunchError> {
    if options.slots == 0 {
        return Err(LaunchError::bad("--slots: must be at least 1"));
    }
    if options.jobmanager.iter().all(|a| a.trim().is_empty()) {
        return Err(LaunchError::bad("--jobmanager: expected host:port[,host:port]"));
    }
    Ok(TaskManagerConfig {
        jobmanagers: options.jobmanager.clone(),
        slots: options.slots,
        data_bind: socket(&options.bind, options.data_port, "--bind")?,
        advertise_host: options.advertise_host.clone(),
        connect_timeout: options.connect_timeout,
        id: options.id.clone().unwrap_or_else(crate::identity),
        secret: crate::secret(options.auth_secret_file.as_deref())?,
    })
}

/// Runs a TaskManager as the process's one job: as [`run`], leaving at once
/// on SIGTERM or Ctrl-C (a container's PID 1 would ignore them otherwise).
pub fn run_process(options: &TaskManagerOptions, builder: Arc<dyn JobBuilder>) -> Result<(), LaunchError> {
    crate::exit_on_signal(format!("TaskManager {}", options.id.clone().unwrap_or_else(crate::identity)));
    run(options, builder)
}

/// Runs a TaskManager as `options` say, building jobs with `builder` (on a
/// thread of a process that handles its signals itself, such as `weir run`).
pub fn run(options: &TaskManagerOptions, builder: Arc<dyn JobBuilder>) -> Result<(), LaunchError> {
    weir_cluster::taskmanager::run(config(options)?, builder).map_err(|e| match e {
        TaskManagerError::DataServer { .. } => LaunchError::bad(e),
        e => LaunchError::Runtime(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_taskmanager_config() {
        let mut options = TaskManagerOptions::new(vec!["127.0.0.1:6123".into()]);
        options.slots = 3;
        options.id = Some("tm-1".into());
        let c = config(&options).unwrap();
        assert_eq!((c.slots, c.id.as_str(), c.data_bind.port()), (3, "tm-1", 0));
        options.slots = 0;
        assert_eq!(config(&options).unwrap_err(), LaunchError::BadInput("--slots: must be at least 1".into()));
    }
}
