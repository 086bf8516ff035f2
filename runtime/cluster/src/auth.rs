//! Mutual authentication of every cluster connection with the job's secret.
//!
//! Each process of a job's cluster (JobManager, TaskManagers) may be given
//! the job's secret (`--auth-secret-file`). Every connection, control or
//! data, then opens with an HMAC-SHA256 challenge-response in which **both**
//! sides prove they hold the secret, before anything else is read:
//!
//! ```text
//!   connecting side                                  accepting side
//!   Hello { version, channel, nonce_c }  ────────>   version checked
//!             <────────  Challenge { nonce_s, proof_s = HMAC(k, "server" | channel | nonce_c | nonce_s) }
//!   proof_s checked
//!   Proof { proof_c = HMAC(k, "client" | channel | nonce_c | nonce_s) }  ──>  proof_c checked
//!             <────────  Verdict (accepted, or the reason it is not)
//! ```
//!
//! Fresh random nonces on both sides make a recorded exchange useless to
//! replay, and the role and channel in each MAC keep a proof from serving
//! another purpose. HMAC rather than mutual TLS: a per-job secret in a
//! Kubernetes Secret is all either side needs (no certificate authority, no
//! rotation of certificates), and the RustCrypto crates were already in the
//! dependency tree. What it does not give is confidentiality: the traffic
//! after the handshake is not encrypted (`docs/security.md` says what that
//! leaves to the platform).
//!
//! Without a secret the handshake still runs (it carries the version
//! check), and proves nothing; a side that has a secret refuses a peer that
//! cannot prove it, whichever side that peer is on. Every frame before the
//! verdict is at most [`MAX_HANDSHAKE_FRAME`] bytes and the whole exchange
//! must end within the caller's deadline.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::frame::{self, FrameError, Patience};
use crate::protocol::Version;

/// The most a peer may send in one frame before it is authenticated.
pub const MAX_HANDSHAKE_FRAME: usize = crate::frame::MAX_SMALL_MESSAGE;
/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

type Tag = [u8; 32];
type Nonce = [u8; 32];

/// A job's shared secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("the secret in {path} is {len} bytes; at least {MIN_SECRET_BYTES} are needed")]
    TooShort { path: String, len: usize },
}

impl Secret {
    /// The secret of `bytes` (surrounding whitespace, such as a file's last newline, is not part of it).
    pub fn new(bytes: &[u8], origin: &str) -> Result<Secret, SecretError> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { path: origin.to_string(), len: bytes.len() });
        }
        Ok(Secret(bytes.into()))
    }

    /// The secret in the file at `path` (as a Kubernetes Secret is mounted).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| SecretError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
        Secret::new(&bytes, &shown)
    }

    /// Whether `token` (say, a REST bearer token) is this secret, in constant time.
    pub fn matches(&self, token: &[u8]) -> bool {
        let (mut a, mut b) = (self.mac(), self.mac());
        a.update(&self.0);
        b.update(token);
        a.verify_slice(&b.finalize().into_bytes()).is_ok()
    }

    /// The token a REST client sends as `Authorization: Bearer <token>` (or
    /// in `X-Weir-Token`), and the one the REST server expects: derived from
    /// the secret, `hex(HMAC-SHA256(secret, "weir-rest/1"))`, never the secret
    /// itself, so that whoever sees a REST request (it is plain HTTP) learns
    /// nothing that lets them join the cluster. With a shell:
    /// `printf weir-rest/1 | openssl dgst -sha256 -hmac "$(cat secret-file)"`.
    pub fn rest_token(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"weir-rest/1");
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    fn proof(&self, role: &str, channel: Channel, client: &Nonce, server: &Nonce) -> Hmac<Sha256> {
        let mut mac = self.mac();
        for part in [b"weir-auth/1".as_slice(), role.as_bytes(), channel.label().as_bytes(), client, server] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    fn prove(&self, role: &str, channel: Channel, client: &Nonce, server: &Nonce) -> Tag {
        self.proof(role, channel, client, server).finalize().into_bytes().into()
    }

    fn verify(&self, role: &str, channel: Channel, client: &Nonce, server: &Nonce, tag: &Tag) -> bool {
        self.proof(role, channel, client, server).verify_slice(tag).is_ok()
    }
}

/// What a connection is for; part of every proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// A TaskManager to its JobManager.
    Control,
    /// A producing subtask's TaskManager to a consuming one's.
    Data,
}

impl Channel {
    fn label(self) -> &'static str {
        match self {
            Channel::Control => "control",
            Channel::Data => "data",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    version: Version,
    channel: Channel,
    nonce: Nonce,
}

#[derive(Debug, Serialize, Deserialize)]
enum Challenge {
    Continue { nonce: Nonce, proof: Option<Tag> },
    Refused { reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    proof: Option<Tag>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Accepted,
    Refused { reason: String },
}

/// Why a handshake did not authenticate the peer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer refused us (a wrong or missing secret, another version); its reason.
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    /// We refused the peer; the reason was sent to it too.
    #[error("{0}")]
    Refused(String),
    #[error("handshake failed: {0}")]
    Frame(#[from] FrameError),
    #[error("no randomness for a nonce: {0}")]
    Random(String),
}

fn nonce() -> Result<Nonce, AuthError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(n)
}

fn recv<M: serde::de::DeserializeOwned>(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<M, AuthError> {
    Ok(frame::recv_within(stream, buf, MAX_HANDSHAKE_FRAME, Patience::Until(deadline))?)
}

fn send<M: Serialize>(stream: &mut impl Write, message: &M) -> Result<(), AuthError> {
    frame::send(stream, message).map_err(|e| AuthError::Frame(e.into()))
}

/// The connecting side: proves `secret` (if any) and checks the peer proves it too.
pub fn connect<S: Read + Write>(
    stream: &mut S,
    secret: Option<&Secret>,
    channel: Channel,
    deadline: Instant,
) -> Result<(), AuthError> {
    let mut buf = Vec::new();
    let ours = nonce()?;
    send(stream, &Hello { version: Version::ours(), channel, nonce: ours })?;
    let (theirs, server_proof) = match recv::<Challenge>(stream, &mut buf, deadline)? {
        Challenge::Continue { nonce, proof } => (nonce, proof),
        Challenge::Refused { reason } => return Err(AuthError::RefusedByPeer(reason)),
    };
    let proof = match (secret, server_proof) {
        (Some(s), Some(tag)) if s.verify("server", channel, &ours, &theirs, &tag) => {
            Some(s.prove("client", channel, &ours, &theirs))
        }
        (Some(_), Some(_)) => return Err(AuthError::Refused("the peer's proof of the job's secret is wrong".into())),
        (Some(_), None) => return Err(AuthError::Refused("the peer has no job secret to prove".into())),
        // The peer wants a proof we cannot give: say so, and hear its reason.
        (None, _) => None,
    };
    send(stream, &Proof { proof })?;
    match recv::<Verdict>(stream, &mut buf, deadline)? {
        Verdict::Accepted => Ok(()),
        Verdict::Refused { reason } => Err(AuthError::RefusedByPeer(reason)),
    }
}

/// The accepting side: checks the peer's version and proof of `secret` (if
/// any), proving it in turn. A refused peer is told why.
pub fn accept<S: Read + Write>(
    stream: &mut S,
    secret: Option<&Secret>,
    channel: Channel,
    deadline: Instant,
) -> Result<(), AuthError> {
    let mut buf = Vec::new();
    let hello = recv::<Hello>(stream, &mut buf, deadline)?;
    let refuse = |stream: &mut S, reason: String| {
        let _ = send(stream, &Challenge::Refused { reason: reason.clone() });
        AuthError::Refused(reason)
    };
    if let Some(why) = hello.version.incompatibility() {
        return Err(refuse(stream, why));
    }
    if hello.channel != channel {
        return Err(refuse(
            stream,
            format!("this port takes {} connections, not {}", channel.label(), hello.channel.label()),
        ));
    }
    let ours = nonce()?;
    let proof = secret.map(|s| s.prove("server", channel, &hello.nonce, &ours));
    send(stream, &Challenge::Continue { nonce: ours, proof })?;
    let Proof { proof } = recv::<Proof>(stream, &mut buf, deadline)?;
    let refusal = match (secret, proof) {
        (None, _) => None,
        (Some(s), Some(tag)) if s.verify("client", channel, &hello.nonce, &ours, &tag) => None,
        (Some(_), Some(_)) => Some("wrong job secret"),
        (Some(_), None) => Some("this cluster requires the job's secret (--auth-secret-file)"),
    };
    match refusal {
        None => send(stream, &Verdict::Accepted),
        Some(reason) => {
            let _ = send(stream, &Verdict::Refused { reason: reason.to_string() });
            Err(AuthError::Refused(reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes(), "test").unwrap()
    }

    /// Runs a handshake over a real socket: the connecting and accepting sides' outcomes.
    fn handshake(client: Option<Secret>, server: Option<Secret>) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            accept(&mut s, server.as_ref(), Channel::Control, Instant::now() + Duration::from_secs(5))
        });
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let c = connect(&mut s, client.as_ref(), Channel::Control, Instant::now() + Duration::from_secs(5));
        drop(s);
        (c, server.join().unwrap())
    }

    #[test]
    fn both_sides_with_the_secret_are_accepted() {
        let (c, s) = handshake(Some(secret("0123456789abcdef-job")), Some(secret("0123456789abcdef-job")));
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (c, s) = handshake(None, None);
        assert!(c.is_ok() && s.is_ok(), "no secret anywhere: nothing to prove");
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused_either_way_round() {
        let (c, s) = handshake(Some(secret("attacker-guess-0000")), Some(secret("0123456789abcdef-job")));
        assert!(matches!(&c, Err(AuthError::Refused(m)) if m.contains("proof")), "{c:?}");
        assert!(s.is_err());
        let (c, s) = handshake(None, Some(secret("0123456789abcdef-job")));
        assert!(matches!(&c, Err(AuthError::RefusedByPeer(m)) if m.contains("--auth-secret-file")), "{c:?}");
        assert!(matches!(&s, Err(AuthError::Refused(_))), "{s:?}");
        // A server without the secret cannot impersonate the JobManager.
        let (c, _) = handshake(Some(secret("0123456789abcdef-job")), None);
        assert!(matches!(&c, Err(AuthError::Refused(m)) if m.contains("no job secret")), "{c:?}");
    }

    #[test]
    fn secrets_are_trimmed_checked_for_length_and_compared_in_full() {
        assert_eq!(secret("0123456789abcdef\n"), secret("0123456789abcdef"));
        assert!(matches!(Secret::new(b"short\n", "f"), Err(SecretError::TooShort { len: 5, .. })));
        let s = secret("0123456789abcdef");
        assert!(s.matches(b"0123456789abcdef") && !s.matches(b"0123456789abcde") && !s.matches(b""));
        assert!(!format!("{s:?}").contains("0123"), "Debug never shows the secret");
        let token = s.rest_token();
        assert!(token.len() == 64 && !token.contains("0123456789abcdef"), "derived, not the secret: {token}");
        assert_eq!(token, secret("0123456789abcdef\n").rest_token());
        assert_ne!(token, secret("0123456789abcdeg").rest_token());
    }

    #[test]
    fn garbage_and_silence_end_the_handshake_without_a_panic() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut garbage = std::io::Cursor::new(vec![0xffu8; 16]);
        assert!(accept(&mut garbage, None, Channel::Data, deadline).is_err());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _silent = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        assert!(matches!(
            accept(&mut s, None, Channel::Data, deadline),
            Err(AuthError::Frame(FrameError::TimedOut(_)))
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
