//! `weir savepoint JOB`: a savepoint of a running job, through the REST API.

use std::time::{Duration, Instant};

use serde_json::Value;

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
}

fn call(request: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Result<Value, Failure> {
    let mut response = request.map_err(|e| Failure::Runtime(format!("{what}: {e}")))?;
    let status = response.status();
    let body: Value = response.body_mut().read_json().map_err(|e| Failure::Runtime(format!("{what}: {e}")))?;
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no reason given").to_string();
        return Err(Failure::Runtime(format!("{what}: {status}: {message}")));
    }
    Ok(body)
}

pub fn savepoint(args: SavepointArgs) -> Result<(), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = format!("{}/v1/jobs/{}", args.url.trim_end_matches('/'), args.job);
    let body = serde_json::json!({ "stop": args.stop, "drain": args.drain });
    let trigger = call(agent.post(format!("{base}/savepoints")).send_json(&body), &format!("POST {base}/savepoints"))?;
    let id = trigger["trigger_id"].as_str().ok_or_else(|| Failure::Runtime("no trigger_id in the answer".into()))?;
    let deadline = Instant::now() + args.timeout;
    loop {
        let url = format!("{base}/savepoints/{id}");
        let status = call(agent.get(&url).call(), &format!("GET {url}"))?;
        match status["status"].as_str() {
            Some("completed") => {
                println!("{}", status["path"].as_str().unwrap_or_default());
                return Ok(());
            }
            Some("failed") => return Err(Failure::Runtime(format!("savepoint failed: {}", status["error"]))),
            _ if Instant::now() > deadline => {
                return Err(Failure::Runtime(format!("savepoint {id} still in progress after {:?}", args.timeout)));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
