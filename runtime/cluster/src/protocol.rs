//! The messages between JobManager and TaskManagers, and the data plane's handshake.
//!
//! Every connection starts with a handshake that carries a magic number, the
//! protocol version and the Weir version; a peer of another version is
//! refused with a sentence that names both versions, and the connection is
//! closed. Messages are bincode in length-prefixed frames ([`crate::frame`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_core::checkpoint::coordinator::{Command, TaskReport};
use weir_core::exchange::remote::ChannelKey;
use weir_core::metrics::{Gauge, MetricsSnapshot};

pub const MAGIC: [u8; 4] = *b"WEIR";
pub const PROTOCOL_VERSION: u32 = 1;
pub const WEIR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who is speaking, and in which version: the first field of every handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub magic: [u8; 4],
    pub protocol: u32,
    pub weir: String,
}

impl Version {
    pub fn ours() -> Self {
        Version { magic: MAGIC, protocol: PROTOCOL_VERSION, weir: WEIR_VERSION.to_string() }
    }

    /// Why a peer of this version cannot talk to us, if it cannot.
    pub fn incompatibility(&self) -> Option<String> {
        if self.magic != MAGIC {
            return Some("not a Weir peer (wrong magic number)".into());
        }
        let ours = Version::ours();
        (self.protocol != ours.protocol || self.weir != ours.weir).then(|| {
            format!(
                "version mismatch: the peer is Weir {} (protocol {}), this process is Weir {} (protocol {})",
                self.weir, self.protocol, ours.weir, ours.protocol
            )
        })
    }
}

/// What the job is, in terms every process can build its graph from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// What the job builder builds the graph from (for pipelines, the file
    /// and its overrides); opaque to the cluster.
    pub definition: Vec<u8>,
    /// The parallelism to build at: every vertex's, save those the job's
    /// definition or `vertex_parallelism` sizes (a rescale changes it).
    pub parallelism: usize,
    /// Vertices (by uid) at their own parallelism, over the definition's.
    #[serde(default)]
    pub vertex_parallelism: BTreeMap<String, usize>,
}

impl JobSpec {
    /// A job of `name` built from `definition` at `parallelism`.
    pub fn new(name: impl Into<String>, definition: Vec<u8>, parallelism: usize) -> JobSpec {
        JobSpec { name: name.into(), definition, parallelism, vertex_parallelism: BTreeMap::new() }
    }
}

/// One attempt at running the job: what a TaskManager runs of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    pub attempt: u64,
    pub spec: JobSpec,
    /// The snapshot (URI of its directory) every subtask restores from.
    pub restore: Option<String>,
    /// The `(chain, subtask)` pairs this TaskManager runs.
    pub local: Vec<(usize, usize)>,
    /// The data address of the TaskManager of every `(chain, subtask)`.
    pub peers: Vec<((usize, usize), String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToJobManager {
    /// The first message of a TaskManager.
    Register { version: Version, id: String, slots: usize, data_addr: String },
    /// Every heartbeat interval: the metrics of every subtask it runs, as
    /// `(chain, subtask, metrics)`, and the gauges of the job's own that those
    /// which set any hold, as `(chain, subtask, gauges)`.
    Heartbeat {
        attempt: Option<u64>,
        metrics: Vec<(usize, usize, MetricsSnapshot)>,
        gauges: Vec<(usize, usize, Vec<Gauge>)>,
    },
    /// A task's checkpoint report, for the coordinator.
    Report { attempt: u64, report: TaskReport },
    /// A task (or a channel) failed; the attempt cannot go on.
    Failed { attempt: u64, reason: String },
    /// Every task of the attempt on this TaskManager ended.
    Finished { attempt: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToTaskManager {
    Welcome {
        heartbeat_interval_ms: u64,
    },
    /// The registration is refused; the sentence says why.
    Refused {
        reason: String,
    },
    Deploy(Box<Deployment>),
    Cancel {
        attempt: u64,
    },
    /// End the attempt's sources: its tasks drain and finish.
    StopSources {
        attempt: u64,
    },
    /// A checkpoint coordinator's command to one task.
    Command {
        attempt: u64,
        task: usize,
        command: Command,
    },
    /// The job is over: end the process.
    Shutdown,
}

/// The first message of a data connection, from the producing side.
#[derive(Debug, Serialize, Deserialize)]
pub struct DataHello {
    pub version: Version,
    pub job: String,
    pub attempt: u64,
    pub key: ChannelKey,
}

/// The answer of the consuming side.
#[derive(Debug, Serialize, Deserialize)]
pub enum DataWelcome {
    /// The channel is open; the producer may send this many frames before it waits for credit.
    Open {
        credits: u32,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_of_another_version_are_refused_by_name() {
        assert_eq!(Version::ours().incompatibility(), None);
        let old = Version { weir: "0.0.1".into(), ..Version::ours() };
        let why = old.incompatibility().unwrap();
        assert!(why.contains("peer is Weir 0.0.1") && why.contains(WEIR_VERSION), "{why}");
        let stranger = Version { magic: *b"HTTP", ..Version::ours() };
        assert!(stranger.incompatibility().unwrap().contains("magic"));
    }
}
