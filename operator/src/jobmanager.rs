//! The operator's side of the JobManager's REST API: one typed client trait,
//! [`JobManagerClient`], with the calls the controller makes (the job's
//! details, with rates over a window for the autoscaler, trigger a
//! savepoint, rescale in place, a savepoint's or rescale's status), answered with the
//! types of [`weir_api::rest`] that the JobManager serialises.
//!
//! ```text
//!   controller ──> dyn JobManagerClient ──> RestClient<T: Transport> ──> the JobManager's REST port
//!                     (tests: a fake)          paths, JSON, errors,        ServiceTransport: its Service (in the cluster)
//!                                              a timeout                   ProxyTransport: the API server's service proxy
//! ```
//!
//! [`RestClient`] is the one implementation over HTTP; how a request reaches
//! the JobManager is its [`Transport`], chosen by `--jobmanager-access`
//! ([`JobManagerAccess`], [`client`]). Requests that change a job carry its
//! secret as a bearer token, read from the job's Secret ([`Credentials`]). Tests of the controller use a fake
//! client instead (as the Flink operator's `TestingFlinkService` stands in
//! for its `FlinkService`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_api::rest::{
    ErrorBody, JobDetails, RescaleRequest, SavepointRequest, SavepointStatus, TriggerResponse, paths,
};

use crate::crd::StreamJob;
use crate::resources::{AUTH_KEY, Names, REST_PORT};

/// How the operator reaches JobManagers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobManagerAccess {
    /// Through the job's Service (the operator runs in the cluster).
    Service,
    /// Through the API server's service proxy (the operator runs outside).
    Proxy,
}

/// The error of a transport, whatever it is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a JobManager call has no answer.
#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: BoxError,
    },
    /// The JobManager answered with an error status and (usually) an [`ErrorBody`].
    #[error("{url}: {status}: {message}")]
    Refused { url: String, status: StatusCode, message: String },
    #[error("the secret of {job}: {reason}")]
    Credentials { job: String, reason: String },
    #[error("{url}: not an answer of the REST API ({source}): {body}")]
    Malformed {
        url: String,
        #[source]
        source: serde_json::Error,
        body: String,
    },
}

/// The JobManager REST calls the controller makes, typed.
pub trait JobManagerClient: Send + Sync {
    /// `GET /v1/jobs/{job}`.
    fn job<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<JobDetails, JobManagerError>>;

    /// `GET /v1/jobs/{job}?window=...`: the same answer, with rates over the
    /// last `window` (its `metrics_window_ms` says what they covered).
    fn job_over<'a>(
        &'a self,
        job: &'a StreamJob,
        window: Duration,
    ) -> BoxFuture<'a, Result<JobDetails, JobManagerError>>;

    /// `POST /v1/jobs/{job}/savepoints`.
    fn trigger_savepoint<'a>(
        &'a self,
        job: &'a StreamJob,
        request: SavepointRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>>;

    /// `POST /v1/jobs/{job}/rescale`: followed, as a savepoint is, by its trigger id.
    fn rescale<'a>(
        &'a self,
        job: &'a StreamJob,
        request: RescaleRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>>;

    /// `GET /v1/jobs/{job}/savepoints/{trigger_id}` (a savepoint's or a rescale's).
    fn savepoint_status<'a>(
        &'a self,
        job: &'a StreamJob,
        trigger_id: &'a str,
    ) -> BoxFuture<'a, Result<SavepointStatus, JobManagerError>>;
}

/// How a request reaches a job's JobManager.
pub trait Transport: Send + Sync + 'static {
    /// The URL of `path` (an API path, `/v1/...`) at the JobManager behind `service` in `namespace`.
    fn url(&self, namespace: &str, service: &str, path: &str) -> String;

    /// Sends `request` (to a URL from [`Transport::url`]); the answer's status and body, whatever the status.
    fn send(&self, request: Request<Vec<u8>>) -> BoxFuture<'_, Result<(StatusCode, Vec<u8>), BoxError>>;
}

/// Through the job's Service, from blocking threads (the operator runs in the cluster).
#[derive(Clone, Debug)]
pub struct ServiceTransport {
    agent: ureq::Agent,
}

impl Default for ServiceTransport {
    fn default() -> Self {
        ServiceTransport { agent: ureq::Agent::config_builder().http_status_as_error(false).build().into() }
    }
}

impl Transport for ServiceTransport {
    fn url(&self, namespace: &str, service: &str, path: &str) -> String {
        format!("http://{service}.{namespace}.svc:{REST_PORT}{path}")
    }

    fn send(&self, request: Request<Vec<u8>>) -> BoxFuture<'_, Result<(StatusCode, Vec<u8>), BoxError>> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || {
                let response =
                    if request.body().is_empty() { agent.run(request.map(|_| ())) } else { agent.run(request) };
                let mut response = response?;
                let body = response.body_mut().read_to_vec()?;
                Ok::<_, ureq::Error>((response.status(), body))
            });
            Ok(answer.await??)
        })
    }
}

/// Through the API server's service proxy (the operator runs outside the cluster).
#[derive(Clone)]
pub struct ProxyTransport {
    client: kube::Client,
}

impl ProxyTransport {
    pub fn new(client: kube::Client) -> Self {
        ProxyTransport { client }
    }
}

impl Transport for ProxyTransport {
    fn url(&self, namespace: &str, service: &str, path: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/services/{service}:rest/proxy{path}")
    }

    fn send(&self, request: Request<Vec<u8>>) -> BoxFuture<'_, Result<(StatusCode, Vec<u8>), BoxError>> {
        Box::pin(async move {
            let response = self.client.send(request.map(kube::client::Body::from)).await?;
            let status = response.status();
            let body = response.into_body().collect_bytes().await?;
            Ok((status, body.to_vec()))
        })
    }
}

/// Where a job's REST bearer token comes from.
pub trait Credentials: Send + Sync {
    /// The bearer token for `job`'s JobManager; `None` for a job without a secret.
    fn bearer<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<Option<String>, JobManagerError>>;
}

/// Reads each job's Secret (the controller makes it) through the API server,
/// once per job (by uid: a job deleted and made again has a new Secret).
pub struct SecretCredentials {
    kube: kube::Client,
    tokens: Mutex<HashMap<String, String>>,
}

impl SecretCredentials {
    pub fn new(kube: kube::Client) -> Self {
        SecretCredentials { kube, tokens: Mutex::default() }
    }

    async fn read(&self, job: &StreamJob) -> Result<Option<String>, JobManagerError> {
        let name = Names(&job.name_any()).auth();
        let fail = |reason: String| JobManagerError::Credentials { job: job.name_any(), reason };
        let namespace = job.namespace().unwrap_or_else(|| "default".into());
        let api: Api<Secret> = Api::namespaced(self.kube.clone(), &namespace);
        // A job deployed before jobs had secrets has none, and needs none.
        let Some(secret) = api.get_opt(&name).await.map_err(|e| fail(e.to_string()))? else { return Ok(None) };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(AUTH_KEY))
            .ok_or_else(|| fail(format!("{name} has no key {AUTH_KEY}")))?;
        let secret = weir_cluster::auth::Secret::new(&bytes.0, &name).map_err(|e| fail(e.to_string()))?;
        Ok(Some(secret.rest_token()))
    }
}

impl Credentials for SecretCredentials {
    fn bearer<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<Option<String>, JobManagerError>> {
        Box::pin(async move {
            let uid = job.uid().unwrap_or_else(|| job.name_any());
            if let Some(token) = self.tokens.lock().expect("tokens poisoned").get(&uid) {
                return Ok(Some(token.clone()));
            }
            let token = self.read(job).await?;
            if let Some(t) = &token {
                self.tokens.lock().expect("tokens poisoned").insert(uid, t.clone());
            }
            Ok(token)
        })
    }
}

/// The JobManager's REST API over a [`Transport`].
pub struct RestClient<T> {
    transport: T,
    /// A JobManager that does not answer within this long must not hold up the reconciliation.
    timeout: Duration,
    /// The jobs' bearer tokens, for requests that change a job.
    credentials: Option<Arc<dyn Credentials>>,
}

impl<T: Transport> RestClient<T> {
    pub fn new(transport: T) -> Self {
        RestClient { transport, timeout: Duration::from_secs(10), credentials: None }
    }

    pub fn with_credentials(mut self, credentials: Arc<dyn Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One call: `path` on `job`'s JobManager, with `body` as JSON; its typed answer.
    async fn call<A: DeserializeOwned>(
        &self,
        job: &StreamJob,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<A, JobManagerError> {
        let namespace = job.namespace().unwrap_or_else(|| "default".into());
        let url = self.transport.url(&namespace, &Names(&job.name_any()).jobmanager(), path);
        let body = body.map(|b| serde_json::to_vec(b).expect("requests serialize")).unwrap_or_default();
        let bearer = match (&self.credentials, method == Method::GET) {
            (Some(c), false) => c.bearer(job).await?,
            _ => None,
        };
        let mut request =
            Request::builder().method(method).uri(&url).header(http::header::CONTENT_TYPE, "application/json");
        // Its own header, not `Authorization`: through the API server's
        // service proxy, that one authenticates the operator to the API server.
        if let Some(token) = bearer {
            request = request.header(weir_api::rest::TOKEN_HEADER, token);
        }
        let request =
            request.body(body).map_err(|e| JobManagerError::Unreachable { url: url.clone(), source: e.into() })?;
        let (status, body) = tokio::time::timeout(self.timeout, self.transport.send(request))
            .await
            .map_err(|_| JobManagerError::Timeout { url: url.clone(), after: self.timeout })?
            .map_err(|source| JobManagerError::Unreachable { url: url.clone(), source })?;
        let text = || String::from_utf8_lossy(&body).chars().take(1000).collect::<String>();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(|_| text(), |b| b.error);
            return Err(JobManagerError::Refused { url, status, message });
        }
        serde_json::from_slice(&body).map_err(|source| JobManagerError::Malformed { url, source, body: text() })
    }
}

/// No request body.
const NO_BODY: Option<&()> = None;

impl<T: Transport> JobManagerClient for RestClient<T> {
    fn job<'a>(&'a self, job: &'a StreamJob) -> BoxFuture<'a, Result<JobDetails, JobManagerError>> {
        Box::pin(async move { self.call(job, Method::GET, &paths::job(&job.name_any()), NO_BODY).await })
    }

    fn job_over<'a>(
        &'a self,
        job: &'a StreamJob,
        window: Duration,
    ) -> BoxFuture<'a, Result<JobDetails, JobManagerError>> {
        let path = paths::job_over(&job.name_any(), window);
        Box::pin(async move { self.call(job, Method::GET, &path, NO_BODY).await })
    }

    fn trigger_savepoint<'a>(
        &'a self,
        job: &'a StreamJob,
        request: SavepointRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>> {
        Box::pin(async move { self.call(job, Method::POST, &paths::savepoints(&job.name_any()), Some(&request)).await })
    }

    fn rescale<'a>(
        &'a self,
        job: &'a StreamJob,
        request: RescaleRequest,
    ) -> BoxFuture<'a, Result<TriggerResponse, JobManagerError>> {
        Box::pin(async move { self.call(job, Method::POST, &paths::rescale(&job.name_any()), Some(&request)).await })
    }

    fn savepoint_status<'a>(
        &'a self,
        job: &'a StreamJob,
        trigger_id: &'a str,
    ) -> BoxFuture<'a, Result<SavepointStatus, JobManagerError>> {
        let path = paths::savepoint(&job.name_any(), trigger_id);
        Box::pin(async move { self.call(job, Method::GET, &path, NO_BODY).await })
    }
}

/// The client `--jobmanager-access` asks for.
pub fn client(access: JobManagerAccess, kube: kube::Client) -> Arc<dyn JobManagerClient> {
    match access {
        JobManagerAccess::Service => Arc::new(
            RestClient::new(ServiceTransport::default()).with_credentials(Arc::new(SecretCredentials::new(kube))),
        ),
        JobManagerAccess::Proxy => Arc::new(
            RestClient::new(ProxyTransport::new(kube.clone())).with_credentials(Arc::new(SecretCredentials::new(kube))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ApiServerVerifier;
    use http::Response;
    use kube::client::Body;

    fn details() -> JobDetails {
        serde_json::from_value(serde_json::json!({
            "id": "orders", "name": "orders", "state": "running", "parallelism": 2, "max_parallelism": 128,
            "start_time": 0, "checkpoints": { "latest": null }, "deployment": "1-20261121120000",
        }))
        .unwrap()
    }

    /// Answers each request the proxy client sends, after checking its method, path (with its query) and body.
    async fn answer(
        verifier: &mut ApiServerVerifier,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        status: StatusCode,
        answer: Vec<u8>,
    ) {
        let (request, send) = verifier.next().await.expect("a request");
        let sent = request.uri().path_and_query().map(|p| p.as_str().to_string());
        assert_eq!((request.method(), sent.as_deref()), (&method, Some(path)));
        let sent = request.into_body().collect_bytes().await.unwrap();
        match body {
            Some(expected) => assert_eq!(serde_json::from_slice::<serde_json::Value>(&sent).unwrap(), expected),
            None => assert!(sent.is_empty(), "a GET sends no body"),
        }
        send.send_response(Response::builder().status(status).body(Body::from(answer)).unwrap());
    }

    #[tokio::test]
    async fn requests_that_change_the_job_carry_its_secret_read_once_from_its_secret() {
        let (kube, mut verifier) = ApiServerVerifier::pair();
        let client =
            RestClient::new(ProxyTransport::new(kube.clone())).with_credentials(Arc::new(SecretCredentials::new(kube)));
        let job = StreamJob::test();
        let trigger = serde_json::to_vec(&TriggerResponse { trigger_id: "rescale-1".into() }).unwrap();
        for first in [true, false] {
            let (got, ()) = tokio::join!(client.rescale(&job, RescaleRequest::to(3)), async {
                if first {
                    let (request, send) = verifier.next().await.expect("the Secret's read");
                    assert_eq!(request.uri().path(), "/api/v1/namespaces/weir/secrets/orders-auth");
                    let secret = serde_json::json!({
                        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "orders-auth" },
                        // base64 of "0123456789abcdef0123\n"
                        "data": { "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjMK" }
                    });
                    send.send_response(Response::builder().body(Body::from(secret.to_string().into_bytes())).unwrap());
                }
                let (request, send) = verifier.next().await.expect("the rescale");
                let token = weir_cluster::auth::Secret::new(b"0123456789abcdef0123", "t").unwrap().rest_token();
                assert_eq!(request.headers()[weir_api::rest::TOKEN_HEADER], token.as_str());
                let answer = Response::builder().status(StatusCode::ACCEPTED).body(Body::from(trigger.clone()));
                send.send_response(answer.unwrap());
            });
            assert_eq!(got.unwrap().trigger_id, "rescale-1");
        }
        let (got, ()) = tokio::join!(client.job(&job), async {
            let (request, send) = verifier.next().await.expect("a GET");
            assert!(request.headers().get(weir_api::rest::TOKEN_HEADER).is_none(), "reads carry no secret");
            send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&details()).unwrap())).unwrap());
        });
        assert!(got.is_ok());
    }

    #[tokio::test]
    async fn the_proxy_client_reads_typed_answers_and_the_jobmanagers_refusals() {
        let (kube, mut verifier) = ApiServerVerifier::pair();
        let client = RestClient::new(ProxyTransport::new(kube));
        let job = StreamJob::test();
        let proxy = "/api/v1/namespaces/weir/services/orders-jobmanager:rest/proxy/v1/jobs/orders";
        let ok = StatusCode::OK;

        let (got, ()) = tokio::join!(client.job(&job), async {
            answer(&mut verifier, Method::GET, proxy, None, ok, serde_json::to_vec(&details()).unwrap()).await
        });
        assert_eq!(got.unwrap(), details());

        let (got, ()) = tokio::join!(client.job_over(&job, Duration::from_secs(15)), async {
            let over = serde_json::to_vec(&details()).unwrap();
            answer(&mut verifier, Method::GET, &format!("{proxy}?window=15s"), None, ok, over).await
        });
        assert_eq!(got.unwrap(), details());

        let stop = SavepointRequest { stop: true, ..Default::default() };
        let trigger = serde_json::to_vec(&TriggerResponse { trigger_id: "sp-trigger-1".into() }).unwrap();
        let (got, ()) = tokio::join!(client.trigger_savepoint(&job, stop), async {
            let body = Some(serde_json::json!({ "stop": true, "drain": false }));
            answer(&mut verifier, Method::POST, &format!("{proxy}/savepoints"), body, StatusCode::ACCEPTED, trigger)
                .await
        });
        assert_eq!(got.unwrap().trigger_id, "sp-trigger-1");

        let done = serde_json::to_vec(&SavepointStatus::Completed { path: "s3://weir/sp-1".into() }).unwrap();
        let (got, ()) = tokio::join!(client.savepoint_status(&job, "sp-trigger-1"), async {
            answer(&mut verifier, Method::GET, &format!("{proxy}/savepoints/sp-trigger-1"), None, ok, done).await
        });
        assert_eq!(got.unwrap(), SavepointStatus::Completed { path: "s3://weir/sp-1".into() });

        let per_vertex = RescaleRequest {
            parallelism: Some(6),
            vertices: [("2-window".to_string(), 6)].into(),
            ..Default::default()
        };
        let trigger = serde_json::to_vec(&TriggerResponse { trigger_id: "rescale-trigger-1".into() }).unwrap();
        let (got, ()) = tokio::join!(client.rescale(&job, per_vertex), async {
            let body = Some(serde_json::json!({ "parallelism": 6, "vertices": { "2-window": 6 } }));
            answer(&mut verifier, Method::POST, &format!("{proxy}/rescale"), body, StatusCode::ACCEPTED, trigger).await
        });
        assert_eq!(got.unwrap().trigger_id, "rescale-trigger-1");

        let refusal = serde_json::to_vec(&ErrorBody { error: "the job is not running".into() }).unwrap();
        let (got, ()) = tokio::join!(client.trigger_savepoint(&job, SavepointRequest::default()), async {
            let body = Some(serde_json::json!({ "stop": false, "drain": false }));
            answer(&mut verifier, Method::POST, &format!("{proxy}/savepoints"), body, StatusCode::CONFLICT, refusal)
                .await
        });
        let e = got.unwrap_err();
        assert!(
            matches!(&e, JobManagerError::Refused { status: StatusCode::CONFLICT, message, .. } if message == "the job is not running"),
            "{e}"
        );

        let (got, ()) = tokio::join!(client.job(&job), async {
            answer(&mut verifier, Method::GET, proxy, None, ok, br#"{"state":"sleeping"}"#.to_vec()).await
        });
        assert!(matches!(got, Err(JobManagerError::Malformed { .. })), "{got:?}");
    }

    #[tokio::test]
    async fn a_jobmanager_that_does_not_answer_times_out() {
        let (kube, _verifier) = ApiServerVerifier::pair();
        let client = RestClient::new(ProxyTransport::new(kube)).with_timeout(Duration::from_millis(50));
        let e = client.job(&StreamJob::test()).await.unwrap_err();
        assert!(matches!(e, JobManagerError::Timeout { .. }), "{e}");
        assert!(e.to_string().ends_with("no answer within 50ms"), "{e}");
    }

    #[test]
    fn the_service_transport_addresses_the_jobs_service() {
        let url = ServiceTransport::default().url("weir", "orders-jobmanager", &paths::job("orders"));
        assert_eq!(url, format!("http://orders-jobmanager.weir.svc:{REST_PORT}/v1/jobs/orders"));
        let window = paths::job_over("orders", Duration::from_secs(15));
        let url = ServiceTransport::default().url("weir", "orders-jobmanager", &window);
        assert_eq!(url, format!("http://orders-jobmanager.weir.svc:{REST_PORT}/v1/jobs/orders?window=15s"));
    }

    /// The service transport, its URL pointed at a local listener instead of
    /// the Service's DNS name: the requests go over HTTP as they are.
    struct Local(ServiceTransport, std::net::SocketAddr);

    impl Transport for Local {
        fn url(&self, _namespace: &str, _service: &str, path: &str) -> String {
            format!("http://{}{path}", self.1)
        }

        fn send(&self, request: Request<Vec<u8>>) -> BoxFuture<'_, Result<(StatusCode, Vec<u8>), BoxError>> {
            self.0.send(request)
        }
    }

    #[tokio::test]
    async fn the_service_transport_sends_the_window_over_http() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                lines.push(line.trim_end().to_string());
                // The rest of the head, then the answer.
                let mut header = String::new();
                while reader.read_line(&mut header).unwrap() > 2 {
                    header.clear();
                }
                let body = serde_json::to_vec(&details()).unwrap();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let mut stream = stream;
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
            lines
        });
        let client = RestClient::new(Local(ServiceTransport::default(), addr));
        let job = StreamJob::test();
        assert_eq!(client.job(&job).await.unwrap(), details());
        assert_eq!(client.job_over(&job, Duration::from_secs(60)).await.unwrap(), details());
        let lines = server.join().unwrap();
        assert_eq!(lines, ["GET /v1/jobs/orders HTTP/1.1", "GET /v1/jobs/orders?window=1m HTTP/1.1"]);
    }
}
