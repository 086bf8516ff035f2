//! Requests that change a job, over real HTTP: with the job's secret they
//! need its bearer token, none changes anything without a JSON content type,
//! savepoint triggers in progress are capped, and a rescale no job can run
//! at is refused before it reaches the JobManager. Read-only endpoints stay
//! open throughout.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_api::rest::{
    ErrorBody, JobState, MAX_METRICS_WINDOW, RescaleRequest, SavepointRequest, SavepointStatus, TriggerResponse, paths,
};
use weir_cluster::auth::Secret;
use weir_rest::{JobReport, MAX_REQUEST_BODY, MAX_TRIGGERS_IN_PROGRESS, Pending, RestJob, RestServer};

const SECRET: &str = "0123456789abcdef-rest-secret";

/// A job that records what it was asked to do. Its savepoints and rescales
/// stay in progress until [`Job::finish_one`] (or complete at once, `instant`).
#[derive(Default)]
struct Job {
    instant: bool,
    asked: Mutex<Vec<String>>,
    waiting: Mutex<Vec<Sender<Result<String, String>>>>,
}

impl Job {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    fn pending(&self, what: String) -> Pending {
        self.asked.lock().unwrap().push(what.clone());
        let (tx, rx): (_, Receiver<Result<String, String>>) = channel();
        if self.instant {
            tx.send(Ok(format!("file:///cp/j/savepoints/{what}"))).unwrap();
        } else {
            self.waiting.lock().unwrap().push(tx);
        }
        Box::new(move || rx.recv().unwrap_or_else(|_| Err("the test ended".into())).map_err(Into::into))
    }

    /// Completes the oldest savepoint in progress.
    fn finish_one(&self) {
        let tx = self.waiting.lock().unwrap().remove(0);
        tx.send(Ok("file:///cp/j/savepoints/sp-1".into())).unwrap();
    }
}

impl RestJob for Job {
    fn name(&self) -> &str {
        "j"
    }
    fn status(&self) -> Option<JobReport> {
        Some(JobReport {
            state: JobState::Running,
            parallelism: 2,
            max_parallelism: 128,
            start_time: 1_700_000_000_000,
            chains: vec![],
            checkpoints: vec![],
            taskmanagers: vec![],
            restarts: 0,
            failure: None,
            restored_from: None,
            deployment: None,
            gauges: Vec::new(),
        })
    }
    fn savepoint(&self, stop: bool, _drain: bool) -> Result<Pending, String> {
        Ok(self.pending(format!("savepoint stop={stop}")))
    }
    fn rescale(&self, request: RescaleRequest) -> Result<Pending, String> {
        Ok(self.pending(format!("rescale {:?}", request.parallelism)))
    }
}

/// The REST token of [`SECRET`].
fn token() -> String {
    Secret::new(SECRET.as_bytes(), "test").unwrap().rest_token()
}

fn serve(job: &Arc<Job>, secret: Option<&str>) -> RestServer {
    let secret = secret.map(|s| Secret::new(s.as_bytes(), "test").unwrap());
    RestServer::start("127.0.0.1:0".parse().unwrap(), job.clone(), secret).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// An answer: its status, `WWW-Authenticate` header and body.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

impl Answer {
    fn of(mut r: ureq::http::Response<ureq::Body>) -> Answer {
        let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        Answer { status: r.status().as_u16(), challenge, body: r.body_mut().read_to_string().unwrap() }
    }

    fn error(&self) -> String {
        serde_json::from_str::<ErrorBody>(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body)).error
    }

    fn trigger(&self) -> String {
        assert_eq!(self.status, 202, "{}", self.body);
        serde_json::from_str::<TriggerResponse>(&self.body).unwrap().trigger_id
    }
}

/// A JSON POST, with `Authorization: Bearer <token>` when a token is given.
fn post(server: &RestServer, path: &str, token: Option<&str>, body: &impl serde::Serialize) -> Answer {
    let mut request = agent().post(format!("http://{}{path}", server.addr));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    Answer::of(request.send_json(body).unwrap())
}

fn get(server: &RestServer, path: &str) -> Answer {
    Answer::of(agent().get(format!("http://{}{path}", server.addr)).call().unwrap())
}

fn status_of(server: &RestServer, trigger: &str) -> SavepointStatus {
    let answer = get(server, &paths::savepoint("j", trigger));
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

fn until_done(server: &RestServer, trigger: &str) -> SavepointStatus {
    for _ in 0..500 {
        match status_of(server, trigger) {
            SavepointStatus::InProgress => std::thread::sleep(Duration::from_millis(10)),
            done => return done,
        }
    }
    panic!("{trigger} never finished");
}

fn stop() -> SavepointRequest {
    SavepointRequest { stop: true, ..Default::default() }
}

#[test]
fn with_a_secret_only_the_bearer_token_changes_the_job_and_reads_stay_open() {
    let job = Arc::new(Job { instant: true, ..Default::default() });
    let server = serve(&job, Some(SECRET));
    let (savepoints, rescale) = (paths::savepoints("j"), paths::rescale("j"));

    for path in [&savepoints, &rescale] {
        let missing = post(&server, path, None, &RescaleRequest::to(2));
        assert_eq!((missing.status, missing.challenge.as_deref()), (401, Some("Bearer")), "{path}");
        assert!(missing.error().contains("needs `Authorization: Bearer <token>`"), "{}", missing.error());
        let wrong = post(&server, path, Some("0123456789abcdef-guess"), &RescaleRequest::to(2));
        assert_eq!((wrong.status, wrong.error().as_str()), (401, "the bearer token is not the job's secret"));
        assert!(!wrong.body.contains("guess"), "the token is never echoed: {}", wrong.body);
        let basic = agent()
            .post(format!("http://{}{path}", server.addr))
            .header("Authorization", format!("Basic {SECRET}"))
            .send_json(RescaleRequest::to(2))
            .unwrap();
        let basic = Answer::of(basic);
        assert_eq!((basic.status, basic.error().as_str()), (401, "the `Authorization` header is not `Bearer <token>`"));
        assert!(!basic.body.contains(SECRET), "{}", basic.body);
        let prefix = post(&server, path, Some(&token()[..63]), &RescaleRequest::to(2));
        let raw = post(&server, path, Some(SECRET), &RescaleRequest::to(2));
        assert_eq!(raw.status, 401, "the secret itself is not the token");
        assert_eq!(prefix.status, 401, "a prefix of the secret is not the secret");
    }
    assert!(job.asked().is_empty(), "nothing reached the job: {:?}", job.asked());

    let savepoint = post(&server, &savepoints, Some(&token()), &stop()).trigger();
    let rescaled = post(&server, &rescale, Some(&token()), &RescaleRequest::to(3)).trigger();
    assert_eq!(job.asked(), ["savepoint stop=true", "rescale Some(3)"]);
    // The scheme is case-insensitive (RFC 7235).
    let lower = agent()
        .post(format!("http://{}{savepoints}", server.addr))
        .header("Authorization", format!("bearer {}", token()))
        .send_json(stop())
        .unwrap();
    assert_eq!(lower.status().as_u16(), 202);
    // Or the token alone in its own header, which passes Kubernetes' service proxy.
    for (token, status) in [(token(), 202), ("0123456789abcdef-guess".to_string(), 401)] {
        let header = agent()
            .post(format!("http://{}{savepoints}", server.addr))
            .header(weir_api::rest::TOKEN_HEADER, token)
            .send_json(stop())
            .unwrap();
        assert_eq!(header.status().as_u16(), status);
    }

    // Everything that only reads needs no token.
    assert!(matches!(until_done(&server, &savepoint), SavepointStatus::Completed { .. }));
    assert!(matches!(until_done(&server, &rescaled), SavepointStatus::Completed { .. }));
    for path in [
        paths::JOBS.to_string(),
        paths::job("j"),
        paths::job_over("j", MAX_METRICS_WINDOW),
        paths::checkpoints("j"),
        paths::HEALTH.to_string(),
        "/metrics".to_string(),
        "/".to_string(),
    ] {
        let answer = get(&server, &path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    }
}

#[test]
fn a_binary_secret_works_through_its_derived_token() {
    let bytes: Vec<u8> = (0u8..32).collect();
    let secret = Secret::new(&bytes, "test").unwrap();
    let token = secret.rest_token();
    let job = Arc::new(Job { instant: true, ..Default::default() });
    let server = RestServer::start("127.0.0.1:0".parse().unwrap(), job.clone(), Some(secret)).unwrap();
    assert_eq!(post(&server, &paths::savepoints("j"), Some(&token.to_uppercase()), &stop()).status, 401);
    post(&server, &paths::savepoints("j"), Some(&token), &stop()).trigger();
    assert_eq!(job.asked().len(), 1);
}

#[test]
fn nothing_changes_without_a_json_content_type() {
    let job = Arc::new(Job { instant: true, ..Default::default() });
    let rest_token = token();
    for (server, token) in [(serve(&job, None), None), (serve(&job, Some(SECRET)), Some(rest_token.as_str()))] {
        for (path, json) in
            [(paths::savepoints("j"), r#"{"stop": false}"#), (paths::rescale("j"), r#"{"parallelism": 2}"#)]
        {
            let request = || {
                let r = agent().post(format!("http://{}{path}", server.addr));
                match token {
                    Some(t) => r.header("Authorization", format!("Bearer {t}")),
                    None => r,
                }
            };
            let refused = [
                ("none", Answer::of(request().send(json).unwrap())),
                ("none, no body", Answer::of(request().send_empty().unwrap())),
                ("text/plain", Answer::of(request().content_type("text/plain").send(json).unwrap())),
                ("a form", Answer::of(request().send_form([("parallelism", "2")]).unwrap())),
                (
                    "multipart",
                    Answer::of(request().content_type("multipart/form-data; boundary=x").send("--x--").unwrap()),
                ),
                ("application/jsonp", Answer::of(request().content_type("application/jsonp").send(json).unwrap())),
            ];
            for (given, answer) in refused {
                assert_eq!(answer.status, 415, "{path} with content type {given}: {}", answer.body);
                assert!(answer.error().contains("must have `Content-Type: application/json`"), "{}", answer.body);
            }
            let charset = request().content_type("application/json; charset=utf-8").send(json).unwrap();
            assert_eq!(charset.status().as_u16(), 202, "{path}");
        }
        assert_eq!(job.asked(), ["savepoint stop=false", "rescale Some(2)"], "only the JSON requests");
        job.asked.lock().unwrap().clear();
    }
}

#[test]
fn a_body_that_is_not_the_request_is_refused_with_a_typed_error() {
    let job = Arc::new(Job { instant: true, ..Default::default() });
    let server = serve(&job, None);
    let typo = post(&server, &paths::savepoints("j"), None, &serde_json::json!({ "stpo": true }));
    assert_eq!(typo.status, 422);
    assert!(typo.error().contains("unknown field `stpo`"), "{}", typo.error());
    let garbage = agent()
        .post(format!("http://{}{}", server.addr, paths::rescale("j")))
        .content_type("application/json")
        .send("{parallelism")
        .unwrap();
    let garbage = Answer::of(garbage);
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    garbage.error();
    // A body beyond the limit is not read.
    let huge = format!(r#"{{"stop": false, "pad": "{}"}}"#, "x".repeat(MAX_REQUEST_BODY));
    let huge = agent()
        .post(format!("http://{}{}", server.addr, paths::savepoints("j")))
        .content_type("application/json")
        .send(&huge)
        .unwrap();
    let huge = Answer::of(huge);
    assert_eq!(huge.status, 413, "{}", huge.body);
    huge.error();
    // An empty JSON savepoint request is `{}`.
    let empty = agent()
        .post(format!("http://{}{}", server.addr, paths::savepoints("j")))
        .content_type("application/json")
        .send_empty()
        .unwrap();
    assert_eq!(empty.status().as_u16(), 202);
    assert_eq!(job.asked(), ["savepoint stop=false"]);
}

#[test]
fn savepoint_triggers_in_progress_are_capped() {
    let job = Arc::new(Job::default());
    let server = serve(&job, None);
    let triggers: Vec<String> = (0..MAX_TRIGGERS_IN_PROGRESS)
        .map(|_| post(&server, &paths::savepoints("j"), None, &SavepointRequest::default()).trigger())
        .collect();
    for (path, body) in [
        (paths::savepoints("j"), serde_json::json!({})),
        (paths::rescale("j"), serde_json::json!({ "parallelism": 2 })),
    ] {
        let refused = post(&server, &path, None, &body);
        assert_eq!(refused.status, 429, "{path}: {}", refused.body);
        assert!(
            refused.error().contains("4 savepoint or rescale triggers are in progress already"),
            "{}",
            refused.body
        );
    }
    assert_eq!(job.asked().len(), MAX_TRIGGERS_IN_PROGRESS, "the refused ones never reached the job");
    assert!(triggers.iter().all(|t| status_of(&server, t) == SavepointStatus::InProgress));

    job.finish_one();
    assert!(matches!(until_done(&server, &triggers[0]), SavepointStatus::Completed { .. }));
    post(&server, &paths::savepoints("j"), None, &SavepointRequest::default()).trigger();
    assert_eq!(post(&server, &paths::savepoints("j"), None, &SavepointRequest::default()).status, 429);
}

#[test]
fn a_rescale_no_job_can_run_is_refused_before_it_reaches_the_jobmanager() {
    let job = Arc::new(Job { instant: true, ..Default::default() });
    let server = serve(&job, None);
    for (request, why) in [
        (serde_json::json!({ "parallelism": 0 }), "parallelism: must be at least 1"),
        (
            serde_json::json!({ "parallelism": 129 }),
            "parallelism: 129 is above the max parallelism 128 (the job's key groups)",
        ),
        (serde_json::json!({ "vertices": { "window": 0 } }), "vertices.window: must be at least 1"),
        (serde_json::json!({ "vertices": { "window": 4_000_000_000u32 } }), "above the max parallelism 128"),
        (serde_json::json!({}), "nothing to rescale to"),
    ] {
        let refused = post(&server, &paths::rescale("j"), None, &request);
        assert_eq!(refused.status, 400, "{request}: {}", refused.body);
        assert!(refused.error().contains(why), "{request}: {}", refused.error());
    }
    assert!(job.asked().is_empty(), "{:?}", job.asked());
    post(&server, &paths::rescale("j"), None, &RescaleRequest::to(128)).trigger();
    assert_eq!(job.asked(), ["rescale Some(128)"]);
}
