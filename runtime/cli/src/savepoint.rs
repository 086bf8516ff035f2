//! `weir savepoint JOB`: a savepoint of a running job, through the REST API.
//!
//! With `--auth-secret-file`, the trigger carries the job's secret as
//! `Authorization: Bearer` ([`Secret::rest_token`](weir_cluster::auth::Secret::rest_token)),
//! which a JobManager with a secret requires of every request that changes
//! the job; following the trigger's status needs none.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use weir_api::rest::{ErrorBody, SavepointRequest, SavepointStatus, TriggerResponse, paths};

use crate::Failure;

#[derive(clap::Args)]
pub struct SavepointArgs {
    /// The job's name (its id in the REST API).
    job: String,
    /// The JobManager's REST address.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    url: String,
    /// Stop the job once the savepoint is taken (Flink's stop-with-savepoint).
    #[arg(long)]
    stop: bool,
    /// With --stop: first let every window and timer fire (end-of-time watermark).
    #[arg(long, requires = "stop")]
    drain: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = weir_api::parse_duration)]
    timeout: Duration,
    /// The job's secret (the file its JobManager was given): sent as the
    /// request's bearer token.
    #[arg(long, value_name = "PATH")]
    auth_secret_file: Option<PathBuf>,
}

/// One REST call: its typed answer, or the JobManager's reason for refusing it.
fn call<T: DeserializeOwned>(
    request: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    what: &str,
) -> Result<T, Failure> {
    let mut response = request.map_err(|e| Failure::Runtime(format!("{what}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let message = response.body_mut().read_json::<ErrorBody>().map_or("no reason given".into(), |b| b.error);
        return Err(Failure::Runtime(format!("{what}: {status}: {message}")));
    }
    response.body_mut().read_json().map_err(|e| Failure::Runtime(format!("{what}: {e}")))
}

pub fn savepoint(args: SavepointArgs) -> Result<(), Failure> {
    let secret = weir_launch::secret(args.auth_secret_file.as_deref())?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = args.url.trim_end_matches('/');
    let url = format!("{base}{}", paths::savepoints(&args.job));
    let request = SavepointRequest { dir: None, stop: args.stop, drain: args.drain };
    let mut post = agent.post(&url);
    if let Some(secret) = &secret {
        post = post.header("Authorization", format!("Bearer {}", secret.rest_token()));
    }
    let trigger: TriggerResponse = call(post.send_json(&request), &format!("POST {url}"))?;
    let deadline = Instant::now() + args.timeout;
    let url = format!("{base}{}", paths::savepoint(&args.job, &trigger.trigger_id));
    loop {
        match call(agent.get(&url).call(), &format!("GET {url}"))? {
            SavepointStatus::Completed { path } => {
                println!("{path}");
                return Ok(());
            }
            SavepointStatus::Failed { error, .. } => {
                return Err(Failure::Runtime(format!("savepoint failed: {error}")));
            }
            SavepointStatus::InProgress if Instant::now() > deadline => {
                let id = trigger.trigger_id;
                return Err(Failure::Runtime(format!("savepoint {id} still in progress after {:?}", args.timeout)));
            }
            SavepointStatus::InProgress => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
