//! An echo upstream: answers every request with a JSON description of it.
//!
//! Serves HTTP/1.1 and h2c (prior knowledge) on the same port. Response body:
//! `{"service","version","method","path","query","authority","protocol",
//! "headers":{lowercase name: value},"body"}`, response headers
//! `x-echo-service` / `x-echo-version`.
//!
//! Query knobs: `delay_ms=N` (sleep before answering), `status=N` (answer
//! with that status), `fail_times=N&fail_key=K` (the first N requests carrying
//! key K answer 503, later ones answer normally). [`EchoOptions::status`] and
//! [`EchoOptions::body`] make a server answer one status or one fixed body
//! to everything (a v2 that fails, two versions that answer alike).
//!
//! Calls ([`EchoOptions::calls`]): before answering, the server GETs each
//! URL in order, as bookinfo's productpage calls details and reviews,
//! forwarding the user and trace headers it received ([`FORWARDED_HEADERS`]),
//! optionally through a proxy address (the pod's sidecar, [`EchoOptions::via`]),
//! and reports each answer in the body's `calls` (status, service, version,
//! and what that service called in turn). A failed call is reported, never
//! fatal: the server still answers.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JSON body the echo server answers with (deserialize it in tests).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EchoResponse {
    pub service: String,
    pub version: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// `:authority` (HTTP/2) or `Host` (HTTP/1.1).
    pub authority: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    /// Lowercase header name → value (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// What this server called before answering, in order (absent when it
    /// calls nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallReport>,
}

/// One call an echo server made before answering, as its caller reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallReport {
    pub url: String,
    /// The response status; 0 when no response came (refused, timed out).
    pub status: u16,
    /// `x-echo-service` / `x-echo-version` of the echo server that answered;
    /// empty when something else did (Envoy's `upstream request timeout`).
    pub service: String,
    pub version: String,
    /// How long the call took, in milliseconds.
    pub duration_ms: u64,
    /// What the callee called in turn (from its echo body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallReport>,
    /// Why no response came, or the start of a body that is not an echo's
    /// (e.g. `fault filter abort`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The request headers an echo server passes on to the services it calls,
/// as bookinfo's services do: the user and the trace context.
pub const FORWARDED_HEADERS: &[&str] = &[
    "end-user",
    "user-agent",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
];

/// How long one call may take before it is reported as failed (longer than
/// any delay the bookinfo tasks inject).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a body that is not an echo's a report keeps.
const REPORTED_BODY_BYTES: usize = 200;

/// Who an echo server is and whom it calls before answering.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    pub service: String,
    pub version: String,
    /// URLs to GET, in order, before answering each request
    /// (`http://reviews:9080/reviews/0`).
    pub calls: Vec<String>,
    /// Send the calls to this address (`127.0.0.1:15001`, the sidecar's
    /// outbound listener) with each URL's authority as `Host`, the way a
    /// pod's iptables hand its traffic to Envoy. `None`: to the URL's host.
    pub via: Option<String>,
    /// Answer with this status (a `status=N` query still wins).
    pub status: Option<u16>,
    /// Answer with this body instead of the JSON echo.
    pub body: Option<String>,
}

/// One request as the echo server received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?` (empty if none).
    pub query: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    /// Lowercase names, in arrival order; includes `:authority` (from the
    /// HTTP/2 pseudo-header or the `Host` header).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive), e.g. `":authority"`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
    /// `:authority` / `Host`.
    pub fn authority(&self) -> Option<&str> {
        self.header(":authority")
    }
    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct State {
    service: String,
    version: String,
    calls: Vec<String>,
    via: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    client: reqwest::Client,
    received: Mutex<Vec<ReceivedRequest>>,
    failures: Mutex<HashMap<String, u64>>,
}

/// A running echo server. Dropping it stops accepting and lets in-flight
/// requests finish (up to 2 s) in the background; [`EchoServer::shutdown`]
/// does the same and waits for it.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts on `127.0.0.1:0` in the current tokio runtime. Panics if it
    /// cannot bind (use [`EchoServer::bind`] to handle that).
    pub async fn start(service: &str, version: &str) -> EchoServer {
        match Self::bind("127.0.0.1:0", service, version).await {
            Ok(s) => s,
            Err(e) => panic!("echo server {service}/{version}: binding 127.0.0.1:0: {e}"),
        }
    }

    /// Starts on `addr` in the current tokio runtime.
    pub async fn bind(addr: impl ToSocketAddrs, service: &str, version: &str) -> std::io::Result<EchoServer> {
        let options = EchoOptions { service: service.into(), version: version.into(), ..Default::default() };
        Self::bind_with(addr, options).await
    }

    /// Starts on `addr` as `options` say (who it is, whom it calls).
    pub async fn bind_with(addr: impl ToSocketAddrs, options: EchoOptions) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let client =
            reqwest::Client::builder().no_proxy().timeout(CALL_TIMEOUT).build().map_err(std::io::Error::other)?;
        let state = Arc::new(State {
            service: options.service,
            version: options.version,
            calls: options.calls,
            via: options.via,
            status: options.status,
            body: options.body,
            client,
            received: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), stop_rx));
        Ok(EchoServer { addr, state, stop: Some(stop_tx), task: Some(task) })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (direct, bypassing Envoy).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests arrived so far.
    pub fn requests(&self) -> usize {
        lock(&self.state.received).len()
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.received).clone()
    }

    /// Forgets received requests and `fail_times` counters.
    pub fn reset(&self) {
        lock(&self.state.received).clear();
        lock(&self.state.failures).clear();
    }

    /// Polls until at least `n` requests arrived; returns them. Panics after
    /// `timeout` (e.g. a mirror that never came).
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= deadline {
                panic!(
                    "echo {}/{}: {} request(s) within {timeout:?}, wanted {n}: {got:#?}",
                    self.state.service,
                    self.state.version,
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting and waits (up to 2 s) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Generous limits: tests send oversized requests at the proxy, and the
    // upstream should not be the one to refuse them.
    builder.http1().max_headers(512).max_buf_size(4 * 1024 * 1024);
    builder.http2().max_header_list_size(4 * 1024 * 1024);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // e.g. EMFILE: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| handle(st.clone(), req)))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

fn query_params(query: &str) -> HashMap<&str, &str> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let protocol = format!("{:?}", parts.version);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| parts.headers.get("host").and_then(|h| h.to_str().ok()).map(String::from))
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();

    let mut header_list = vec![(":authority".to_string(), authority.clone())];
    let mut header_map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        header_list.push((name.as_str().to_string(), v.clone()));
        header_map
            .entry(name.as_str().to_string())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    lock(&state.received).push(ReceivedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        protocol: protocol.clone(),
        headers: header_list,
        body: body.to_vec(),
        at: Instant::now(),
    });

    let mut calls = Vec::with_capacity(state.calls.len());
    for url in &state.calls {
        calls.push(call(&state, url, &parts.headers).await);
    }

    let params = query_params(&query);
    if let Some(ms) = params.get("delay_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status = params
        .get("status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| !s.is_informational())
        .or_else(|| state.status.and_then(|s| StatusCode::from_u16(s).ok()))
        .unwrap_or(StatusCode::OK);
    if let Some(times) = params.get("fail_times").and_then(|v| v.parse::<u64>().ok()) {
        let key = params.get("fail_key").copied().unwrap_or(path.as_str()).to_string();
        let mut failures = lock(&state.failures);
        let seen = failures.entry(key).or_insert(0);
        if *seen < times {
            *seen += 1;
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }

    let echo = EchoResponse {
        service: state.service.clone(),
        version: state.version.clone(),
        method: parts.method.to_string(),
        path,
        query,
        authority,
        protocol,
        headers: header_map,
        body: String::from_utf8_lossy(&body).into_owned(),
        calls,
    };
    let json = match &state.body {
        Some(body) => body.clone().into_bytes(),
        None => serde_json::to_vec(&echo).unwrap_or_default(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(json)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&state.service) {
        h.insert("x-echo-service", v);
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&state.version) {
        h.insert("x-echo-version", v);
    }
    Ok(resp)
}

/// GETs `url` (through `state.via` if set) with the forwarded headers of the
/// request being answered, and reports what came back.
async fn call(state: &State, url: &str, received: &hyper::HeaderMap) -> CallReport {
    let started = Instant::now();
    let mut report = CallReport {
        url: url.to_owned(),
        status: 0,
        service: String::new(),
        version: String::new(),
        duration_ms: 0,
        calls: Vec::new(),
        error: String::new(),
    };
    let mut request = match (&state.via, reqwest::Url::parse(url)) {
        (_, Err(e)) => {
            report.error = format!("bad URL: {e}");
            return report;
        }
        (None, Ok(target)) => state.client.get(target),
        (Some(via), Ok(target)) => {
            let authority = match (target.host_str(), target.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                (None, _) => String::new(),
            };
            let query = target.query().map(|q| format!("?{q}")).unwrap_or_default();
            state.client.get(format!("http://{via}{}{query}", target.path())).header("host", authority)
        }
    };
    for name in FORWARDED_HEADERS {
        for value in received.get_all(*name) {
            request = request.header(*name, value);
        }
    }
    match request.send().await {
        Err(e) => report.error = error_chain(&e),
        Ok(response) => {
            report.status = response.status().as_u16();
            let header =
                |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            report.service = header("x-echo-service");
            report.version = header("x-echo-version");
            match response.bytes().await {
                Err(e) => report.error = error_chain(&e),
                Ok(body) => match serde_json::from_slice::<EchoResponse>(&body) {
                    Ok(echo) => report.calls = echo.calls,
                    Err(_) => {
                        let end = body.len().min(REPORTED_BODY_BYTES);
                        report.error = String::from_utf8_lossy(&body[..end]).into_owned();
                    }
                },
            }
        }
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// `e` and its sources, `: `-joined (reqwest's own message says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
