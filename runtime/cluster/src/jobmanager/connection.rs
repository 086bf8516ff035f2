//! The JobManager's side of the control connections: it accepts
//! TaskManagers, authenticates them ([`crate::auth`]: a peer without the
//! job's secret, or of another version, is refused with a sentence saying
//! so), checks their registration, and reads each connection on a thread of
//! its own, which only decodes and forwards, as [`Event`]s, to the event
//! loop. The loop answers through [`TcpLinks`].
//!
//! At most [`MAX_CONNECTIONS`] are served at once; before a peer is
//! authenticated and registered it may send at most 64 KiB and must be done
//! within [`HANDSHAKE_TIMEOUT`]; a registered one that stops reading for
//! [`WRITE_TIMEOUT`] is dropped rather than blocking the event loop.

use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::event_loop::{Event, TaskManagerLinks};
use crate::auth::{self, Channel, MAX_HANDSHAKE_FRAME, Secret};
use crate::frame::{self, Patience, READ_TICK};
use crate::gate::{Gate, Pass, worth_logging};
use crate::protocol::{ToJobManager, ToTaskManager};

/// The most control connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 1024;
/// How long a TaskManager has to authenticate and register.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a message to a TaskManager may wait for it to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The writing halves of the registered TaskManagers' connections, by connection number.
#[derive(Clone, Default)]
pub(super) struct TcpLinks {
    writers: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl TcpLinks {
    fn attach(&self, conn: u64, writer: TcpStream) {
        self.writers.lock().expect("links poisoned").insert(conn, writer);
    }

    fn detach(&self, conn: u64) {
        self.writers.lock().expect("links poisoned").remove(&conn);
    }
}

impl TaskManagerLinks for TcpLinks {
    fn send(&mut self, conn: u64, message: &ToTaskManager) {
        let mut writers = self.writers.lock().expect("links poisoned");
        let Some(writer) = writers.get_mut(&conn) else { return };
        if let Err(e) = frame::send(writer, message) {
            // The reader sees the connection end too; failing over once is enough.
            let _ = writer.shutdown(Shutdown::Both);
            tracing::warn!("cannot reach TaskManager (connection {conn}): {e}");
        }
    }

    fn close(&mut self, conn: u64) {
        if let Some(writer) = self.writers.lock().expect("links poisoned").remove(&conn) {
            let _ = writer.shutdown(Shutdown::Both);
        }
    }
}

/// How connections are served.
#[derive(Clone)]
pub(super) struct Acceptor {
    pub events: Sender<Event>,
    pub links: TcpLinks,
    pub heartbeat_ms: u64,
    /// Once the job is over, tell TaskManagers to shut down (see `release_taskmanagers`).
    pub release: bool,
    pub secret: Option<Secret>,
    pub gate: Gate,
}

impl Acceptor {
    /// Accepts TaskManagers: each connection's first message must be a compatible registration.
    pub fn run(self, listener: TcpListener) {
        for (conn, stream) in (1u64..).zip(listener.incoming()) {
            let Ok(stream) = stream else { continue };
            let pass = match self.gate.enter() {
                Ok(pass) => pass,
                Err(refused) => {
                    if worth_logging(refused) {
                        tracing::warn!("{refused} connections refused: {MAX_CONNECTIONS} are open already");
                    }
                    continue;
                }
            };
            let acceptor = self.clone();
            let _ =
                std::thread::Builder::new().name("jm-conn".into()).spawn(move || acceptor.serve(conn, stream, pass));
        }
    }

    fn serve(self, conn: u64, mut stream: TcpStream, _pass: Pass) {
        let Some((id, slots, data_addr)) = register(&mut stream, self.secret.as_ref(), self.heartbeat_ms) else {
            return;
        };
        let Ok(writer) = stream.try_clone() else { return };
        self.links.attach(conn, writer);
        if self.events.send(Event::Registered { conn, id, slots, data_addr }).is_err() {
            // The job is over (a lingering JobManager).
            self.links.detach(conn);
            return job_over(stream, self.release);
        }
        let mut buf = Vec::new();
        loop {
            match frame::recv::<ToJobManager>(&mut stream, &mut buf) {
                Ok(message) => {
                    if self.events.send(Event::Message { conn, message }).is_err() {
                        self.links.detach(conn);
                        return job_over(stream, self.release);
                    }
                }
                Err(e) => {
                    let why = match e {
                        frame::FrameError::Closed => "connection closed".to_string(),
                        e => e.to_string(),
                    };
                    let _ = stream.shutdown(Shutdown::Both);
                    self.links.detach(conn);
                    let _ = self.events.send(Event::Disconnected { conn, why });
                    return;
                }
            }
        }
    }
}

/// Authenticates the peer, reads its registration and welcomes the
/// TaskManager: its id, slots and data address.
fn register(stream: &mut TcpStream, secret: Option<&Secret>, heartbeat_ms: u64) -> Option<(String, usize, String)> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TICK));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    if let Err(e) = auth::accept(stream, secret, Channel::Control, deadline) {
        tracing::warn!("connection from {peer} refused: {e}");
        return None;
    }
    let mut buf = Vec::new();
    let (id, slots, data_addr) =
        match frame::recv_within(stream, &mut buf, MAX_HANDSHAKE_FRAME, Patience::Until(deadline)) {
            Ok(ToJobManager::Register { version, id, slots, data_addr }) => {
                if let Some(why) = version.incompatibility() {
                    tracing::warn!("TaskManager {id} at {peer} refused: {why}");
                    let _ = frame::send(stream, &ToTaskManager::Refused { reason: why });
                    return None;
                }
                (id, slots, data_addr)
            }
            Ok(other) => {
                tracing::warn!("connection from {peer} closed: it must register first, but sent {other:?}");
                return None;
            }
            Err(e) => {
                tracing::warn!("connection from {peer} closed: {e}");
                return None;
            }
        };
    frame::send(stream, &ToTaskManager::Welcome { heartbeat_interval_ms: heartbeat_ms }).ok()?;
    Some((id, slots, data_addr))
}

/// The job is over: a TaskManager is told to shut down, or (not `release`)
/// kept connected and idle until it or this process goes.
fn job_over(mut stream: TcpStream, release: bool) {
    if release {
        let _ = frame::send(&mut stream, &ToTaskManager::Shutdown);
        return;
    }
    let mut buf = Vec::new();
    while frame::recv::<ToJobManager>(&mut stream, &mut buf).is_ok() {}
}
