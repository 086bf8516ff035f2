//! The data plane: channels between subtasks in different TaskManagers, over
//! TCP, with credit-based flow control.
//!
//! Every channel that crosses processes is one TCP connection from the
//! producer's TaskManager to the consumer's [`DataServer`]. The producer
//! opens it with a [`DataHello`] naming the attempt and the channel; the
//! consumer answers with the number of frames it has room for (its credits).
//! The producer sends a frame (one encoded event: a batch of records, a
//! watermark, a barrier...) only while it holds a credit; the consumer grants
//! a new one each time a frame has been put on the consuming task's input
//! queue. A slow consumer thus stops its remote producers after a few frames,
//! whose blocked writers count the wait as backpressure, and memory stays
//! bounded on both sides.
//!
//! A connection that ends before its end-of-stream frame, or that carries a
//! frame that does not decode, fails the attempt (reported on the failure
//! channel); a hostile or confused peer gets a refusal or a closed
//! connection, never a crash. Every connection first proves the job's secret
//! both ways ([`crate::auth`]); at most [`MAX_CONNECTIONS`] are served at
//! once, of which at most [`MAX_WAITING`] wait for their consumer to be
//! deployed.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use weir_core::exchange::remote::{ChannelKey, Delivered, InboundChannel, Network, Outbound, OutboundChannel};

use crate::auth::{self, Channel, MAX_HANDSHAKE_FRAME, Secret};
use crate::frame::{self, FrameError, MAX_DATA_FRAME, Patience, READ_TICK};
use crate::gate::{Gate, Pass, worth_logging};
use crate::protocol::{DataHello, DataWelcome, Version};

/// Frames a producer may send before the consumer grants more.
pub const INITIAL_CREDITS: u32 = 4;
/// How long a connection waits for its consumer to be deployed.
const REGISTRATION_WAIT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most data connections a TaskManager serves at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// The most connections waiting for their consumer to be deployed.
pub const MAX_WAITING: usize = 1024;

/// A failure of a channel: the attempt it belongs to, and what happened.
pub type ChannelFailure = (u64, String);

struct Registry {
    inbound: Mutex<HashMap<(u64, ChannelKey), Box<dyn InboundChannel>>>,
    registered: Condvar,
    /// Open connections per attempt, shut down when the attempt is cancelled.
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    cancelled: Mutex<Vec<u64>>,
    /// Connections waiting in [`Registry::take`].
    waiting: Gate,
    secret: Option<Secret>,
}

impl Registry {
    fn track(&self, attempt: u64, stream: &TcpStream) {
        if let Ok(s) = stream.try_clone() {
            self.sockets.lock().expect("sockets poisoned").entry(attempt).or_default().push(s);
        }
    }

    fn is_cancelled(&self, attempt: u64) -> bool {
        self.cancelled.lock().expect("cancelled poisoned").contains(&attempt)
    }

    /// The inbound channel for `key`, once its consumer is deployed, or why not.
    fn take(&self, attempt: u64, key: ChannelKey) -> Result<Box<dyn InboundChannel>, String> {
        let mut inbound = self.inbound.lock().expect("registry poisoned");
        if let Some(sink) = inbound.remove(&(attempt, key)) {
            return Ok(sink);
        }
        let Ok(_waiting) = self.waiting.enter() else {
            return Err(format!("{MAX_WAITING} connections wait for their channels already"));
        };
        let deadline = Instant::now() + REGISTRATION_WAIT;
        loop {
            if let Some(sink) = inbound.remove(&(attempt, key)) {
                return Ok(sink);
            }
            let now = Instant::now();
            if now >= deadline || self.is_cancelled(attempt) {
                return Err("no such channel here".into());
            }
            inbound = self.registered.wait_timeout(inbound, deadline - now).expect("registry poisoned").0;
        }
    }
}

/// Accepts the data connections of one TaskManager.
pub struct DataServer {
    addr: SocketAddr,
    registry: Arc<Registry>,
    failures: Sender<ChannelFailure>,
}

impl DataServer {
    /// Listens on `bind`; channel failures go to `failures`. With a
    /// `secret`, every peer must prove it (and this server proves it to them).
    pub fn start(
        bind: SocketAddr,
        failures: Sender<ChannelFailure>,
        secret: Option<Secret>,
    ) -> std::io::Result<DataServer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let registry = Arc::new(Registry {
            inbound: Mutex::default(),
            registered: Condvar::new(),
            sockets: Mutex::default(),
            cancelled: Mutex::default(),
            waiting: Gate::new(MAX_WAITING),
            secret,
        });
        let (reg, fail) = (registry.clone(), failures.clone());
        let gate = Gate::new(MAX_CONNECTIONS);
        std::thread::Builder::new().name("data-accept".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                let pass = match gate.enter() {
                    Ok(pass) => pass,
                    Err(n) if worth_logging(n) => {
                        tracing::warn!("{n} data connections refused: {MAX_CONNECTIONS} are open already");
                        continue;
                    }
                    Err(_) => continue,
                };
                let (reg, fail) = (reg.clone(), fail.clone());
                let _ =
                    std::thread::Builder::new().name("data-in".into()).spawn(move || serve(stream, &reg, &fail, pass));
            }
        })?;
        Ok(DataServer { addr, registry, failures })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The network of one attempt: `peers` says where each `(chain, subtask)`
    /// runs, `edge_chains` the consumer chain of each edge of the graph.
    pub fn network(
        &self,
        job: &str,
        attempt: u64,
        peers: HashMap<(usize, usize), String>,
        edge_chains: Vec<usize>,
    ) -> Arc<dyn Network> {
        self.registry.cancelled.lock().expect("cancelled poisoned").retain(|&a| a != attempt);
        Arc::new(TcpNetwork {
            job: job.to_string(),
            attempt,
            peers,
            edge_chains,
            registry: self.registry.clone(),
            failures: self.failures.clone(),
        })
    }

    /// Ends every channel of `attempt`: registrations are dropped and connections shut down.
    pub fn cancel(&self, attempt: u64) {
        self.registry.cancelled.lock().expect("cancelled poisoned").push(attempt);
        self.registry.inbound.lock().expect("registry poisoned").retain(|(a, _), _| *a != attempt);
        self.registry.registered.notify_all();
        for s in self.registry.sockets.lock().expect("sockets poisoned").remove(&attempt).unwrap_or_default() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Authenticates an inbound connection and reads which channel it is for.
fn handshake(stream: &mut TcpStream, registry: &Registry) -> Result<DataHello, String> {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TICK));
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    auth::accept(stream, registry.secret.as_ref(), Channel::Data, deadline).map_err(|e| e.to_string())?;
    frame::recv_within(stream, &mut Vec::new(), MAX_HANDSHAKE_FRAME, Patience::Until(deadline))
        .map_err(|e| e.to_string())
}

/// One inbound connection: handshake, then frames in and credits out.
fn serve(mut stream: TcpStream, registry: &Registry, failures: &Sender<ChannelFailure>, _pass: Pass) {
    let hello = match handshake(&mut stream, registry) {
        Ok(hello) => hello,
        Err(e) => {
            tracing::warn!("data connection from {:?} refused: {e}", stream.peer_addr().ok());
            return;
        }
    };
    let refuse = |mut stream: TcpStream, reason: String| {
        tracing::warn!("data connection for {} refused: {reason}", hello.key);
        let _ = frame::send(&mut stream, &DataWelcome::Refused { reason });
    };
    if let Some(why) = hello.version.incompatibility() {
        return refuse(stream, why);
    }
    let (attempt, key) = (hello.attempt, hello.key);
    let mut sink = match registry.take(attempt, key) {
        Ok(sink) => sink,
        Err(why) => return refuse(stream, format!("channel {key} in attempt {attempt} of job {}: {why}", hello.job)),
    };
    registry.track(attempt, &stream);
    if frame::send(&mut stream, &DataWelcome::Open { credits: INITIAL_CREDITS }).is_err() {
        return;
    }
    let mut buf = Vec::new();
    let fail = |reason: String| {
        if !registry.is_cancelled(attempt) {
            let _ = failures.send((attempt, format!("channel {key}: {reason}")));
        }
    };
    loop {
        match frame::read_frame(&mut stream, &mut buf, MAX_DATA_FRAME) {
            Ok(()) => match sink.deliver(&buf) {
                Ok(Delivered::More) => {
                    if stream.write_all(&1u32.to_le_bytes()).is_err() {
                        return fail("the producer went away".into());
                    }
                }
                Ok(Delivered::End) => return,
                Err(e) => return fail(e),
            },
            Err(FrameError::Closed) => return fail("the connection closed before the end of the stream".into()),
            Err(e) => return fail(e.to_string()),
        }
    }
}

struct TcpNetwork {
    job: String,
    attempt: u64,
    peers: HashMap<(usize, usize), String>,
    edge_chains: Vec<usize>,
    registry: Arc<Registry>,
    failures: Sender<ChannelFailure>,
}

impl Network for TcpNetwork {
    fn open_output(&self, key: ChannelKey, events: Box<dyn OutboundChannel>) -> Result<(), String> {
        let chain = *self.edge_chains.get(key.edge as usize).ok_or("no such edge")?;
        let addr = self.peers.get(&(chain, key.consumer as usize)).ok_or("no TaskManager runs the consumer")?.clone();
        let hello = DataHello { version: Version::ours(), job: self.job.clone(), attempt: self.attempt, key };
        let (registry, failures, attempt) = (self.registry.clone(), self.failures.clone(), self.attempt);
        std::thread::Builder::new()
            .name("data-out".into())
            .spawn(move || {
                if let Err(e) = send_channel(&addr, hello, events, &registry)
                    && !registry.is_cancelled(attempt)
                {
                    let _ = failures.send((attempt, format!("channel {key} to {addr}: {e}")));
                }
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn register_input(&self, key: ChannelKey, sink: Box<dyn InboundChannel>) -> Result<(), String> {
        self.registry.inbound.lock().expect("registry poisoned").insert((self.attempt, key), sink);
        self.registry.registered.notify_all();
        Ok(())
    }
}

/// Credits granted by the consumer and not used yet; `None` once the connection is gone.
type Credits = Arc<(Mutex<Option<u32>>, Condvar)>;

/// The producing side of one channel: connect, then send frames as credits allow.
fn send_channel(
    addr: &str,
    hello: DataHello,
    mut events: Box<dyn OutboundChannel>,
    registry: &Registry,
) -> Result<(), String> {
    let attempt = hello.attempt;
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    registry.track(attempt, &stream);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TICK));
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    auth::connect(&mut stream, registry.secret.as_ref(), Channel::Data, deadline).map_err(|e| e.to_string())?;
    frame::send(&mut stream, &hello).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let wait = Patience::Until(deadline + REGISTRATION_WAIT);
    let initial = match frame::recv_within::<DataWelcome>(&mut stream, &mut buf, MAX_HANDSHAKE_FRAME, wait)
        .map_err(|e| e.to_string())?
    {
        DataWelcome::Open { credits } => credits,
        DataWelcome::Refused { reason } => return Err(format!("refused: {reason}")),
    };
    let _ = stream.set_read_timeout(None);
    let credits: Credits = Arc::new((Mutex::new(Some(initial)), Condvar::new()));
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let granted = credits.clone();
    std::thread::Builder::new()
        .name("data-credit".into())
        .spawn(move || {
            let mut grant = [0u8; 4];
            while reader.read_exact(&mut grant).is_ok() {
                let (lock, cv) = &*granted;
                let mut c = lock.lock().expect("credits poisoned");
                *c = c.map(|n| n.saturating_add(u32::from_le_bytes(grant)));
                cv.notify_all();
            }
            let (lock, cv) = &*granted;
            *lock.lock().expect("credits poisoned") = None;
            cv.notify_all();
        })
        .map_err(|e| e.to_string())?;
    let mut out = BufWriter::with_capacity(64 << 10, stream);
    loop {
        // Wait for a credit.
        {
            let (lock, cv) = &*credits;
            let mut c = lock.lock().expect("credits poisoned");
            loop {
                match *c {
                    None => return Err("the consumer closed the connection".into()),
                    Some(0) if registry.is_cancelled(attempt) => return Ok(()),
                    Some(0) => c = cv.wait_timeout(c, Duration::from_millis(200)).expect("credits poisoned").0,
                    Some(_) => break,
                }
            }
        }
        let frame = loop {
            match events.next(Duration::from_millis(200)) {
                Outbound::Frame(f) => break Some(f),
                Outbound::Closed => break None,
                Outbound::Empty if registry.is_cancelled(attempt) => return Ok(()),
                Outbound::Empty => {}
            }
        };
        let Some(frame) = frame else {
            // End of stream sent (or the producer is gone: the consumer sees the connection close early).
            let _ = out.flush();
            return Ok(());
        };
        frame::write_frame(&mut out, &frame).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
        let (lock, _) = &*credits;
        let mut c = lock.lock().expect("credits poisoned");
        *c = c.map(|n| n - 1);
    }
}
