//! A TaskManager whose job takes long to build (a sink that connects slowly,
//! say) keeps heartbeating meanwhile: the JobManager does not take it for
//! lost, and the job runs without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir_cluster::jobmanager::{JobManager, JobManagerConfig};
use weir_cluster::restart::RestartStrategy;
use weir_cluster::state::JobState;
use weir_cluster::taskmanager::{self, TaskManagerConfig};
use weir_cluster::{BuiltJob, JobBuilder, JobSpec};
use weir_core::checkpoint::metadata::RestoredSnapshot;
use weir_core::element::Record;
use weir_core::error::TaskResult;
use weir_core::graph::JobGraph;
use weir_core::source::{Source, SourcePoll};

/// A source with nothing to read.
struct Empty;

impl Source<u64> for Empty {
    fn poll(&mut self, _out: &mut Vec<Record<u64>>) -> TaskResult<SourcePoll> {
        Ok(SourcePoll::Finished)
    }
}

/// One source whose construction takes `delay` on a TaskManager (the
/// JobManager, which only plans, never constructs it).
struct SlowToStart {
    delay: Duration,
    constructed: Arc<AtomicUsize>,
}

impl JobBuilder for SlowToStart {
    fn build(&self, spec: &JobSpec) -> Result<BuiltJob, String> {
        let mut graph = JobGraph::new(spec.name.clone());
        let (delay, constructed) = (self.delay, self.constructed.clone());
        graph.add_source::<u64>("slow", spec.parallelism, move |_| -> Box<dyn Source<u64>> {
            std::thread::sleep(delay);
            constructed.fetch_add(1, Ordering::SeqCst);
            Box::new(Empty)
        });
        Ok(BuiltJob { graph, checkpointing: None })
    }

    fn restore(&self, _spec: &JobSpec, _uri: &str) -> Result<RestoredSnapshot, String> {
        Err("nothing to restore".into())
    }
}

#[test]
fn a_taskmanager_slow_to_build_its_job_keeps_heartbeating() {
    let constructed = Arc::new(AtomicUsize::new(0));
    let builder = Arc::new(SlowToStart { delay: Duration::from_secs(4), constructed: constructed.clone() });
    let mut config = JobManagerConfig::new(JobSpec::new("slow", Vec::new(), 1), "127.0.0.1:0".parse().unwrap());
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_timeout = Duration::from_millis(1500);
    // A TaskManager taken for lost would fail the job at once.
    config.restart = RestartStrategy::None;
    let jm = JobManager::start(config, builder.clone()).unwrap();
    let tm = TaskManagerConfig {
        jobmanagers: vec![jm.rpc_addr().to_string()],
        slots: 1,
        data_bind: "127.0.0.1:0".parse().unwrap(),
        advertise_host: None,
        connect_timeout: Duration::from_secs(10),
        id: "slow-tm".into(),
        secret: None,
    };
    std::thread::spawn(move || taskmanager::run(tm, builder));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !jm.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let view = jm.view();
    assert_eq!((view.state, view.restarts), (JobState::Finished, 0), "{:?}", view.failure);
    assert_eq!(constructed.load(Ordering::SeqCst), 1, "built once, on the TaskManager");
}
