//! The `ExtensionConfigDiscoveryService`: state of the world, delta and fetch.
//!
//! Each stream is the response stream tonic sends: polling it reads the
//! proxy's requests (the first carries the `Node`, which picks the
//! workload), answers ACKs and NACKs through a [`StreamState`], and yields a
//! response when the published config generation changes and the workload's
//! resources change with it. No task and no channel per stream: at 10 000
//! streams each costs memory, and a stream whose proxy stops reading stops
//! being polled (HTTP/2 flow control) instead of queueing responses.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use envoy_types::pb::google::protobuf::{value, Struct};
use futures_util::Stream;
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::cache::{Cache, Generation, Render, Snapshot};
use super::log;
use super::registry::{Metrics, ProxyIdentity, Registry};
use super::resources::{content_version, Built, TYPED_EXTENSION_CONFIG};
use super::spiffe::{Claim, IdentityCheck, SpiffeId};
use super::state::{Answer, StreamState};
use crate::workload::{Workload, RESOURCES};

/// Everything the streams, the watcher and the admin endpoint share.
pub struct Shared<R> {
    pub cache: Cache<R>,
    pub generation: watch::Receiver<Generation>,
    pub registry: Registry,
    pub metrics: Metrics,
    /// Becomes true when the server shuts down: streams end.
    pub shutdown: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    /// With mTLS: each stream's node must be its certificate's (spiffe.rs).
    identity: Option<IdentityCheck>,
}

impl<R: Render> Shared<R> {
    pub fn new(
        cache: Cache<R>,
        generation: watch::Receiver<Generation>,
        shutdown: watch::Receiver<bool>,
        max_streams: usize,
    ) -> Self {
        Shared {
            cache,
            generation,
            registry: Registry::default(),
            metrics: Metrics::default(),
            shutdown,
            streams: Arc::new(Semaphore::new(max_streams)),
            identity: None,
        }
    }

    /// Binds every stream's node to the SPIFFE ID of its client certificate.
    pub fn with_identity_check(mut self, check: Option<IdentityCheck>) -> Self {
        self.identity = check;
        self
    }
}

/// The TLS client's certificate chain, leaf first (none without mTLS).
type PeerCerts = Option<Arc<Vec<CertificateDer<'static>>>>;

pub struct Ecds<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Ecds<R> {
    pub fn new(shared: Arc<Shared<R>>) -> Self {
        Ecds { shared }
    }
}

type ResponseStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<R: Render> ExtensionConfigDiscoveryService for Ecds<R> {
    type StreamExtensionConfigsStream = ResponseStream<DiscoveryResponse>;
    type DeltaExtensionConfigsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        let permit = self.permit()?;
        let peer = request.peer_certs();
        Ok(Response::new(responses::<R, Sotw>(self.shared.clone(), request.into_inner(), peer, permit)))
    }

    async fn delta_extension_configs(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        let permit = self.permit()?;
        let peer = request.peer_certs();
        Ok(Response::new(responses::<R, Delta>(self.shared.clone(), request.into_inner(), peer, permit)))
    }

    async fn fetch_extension_configs(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let peer = request.peer_certs();
        let request = request.into_inner();
        check_type(&request.type_url)?;
        let node = request.node.as_ref().ok_or_else(|| Status::invalid_argument("fetch without a node"))?;
        let identity = identity(node);
        authorize(&self.shared, node, &identity, peer.as_deref().map(Vec::as_slice))?;
        let generation = self.shared.generation.borrow().id;
        let snapshot = self.shared.cache.get(&identity.workload, generation);
        let names = requested_names(request.resource_names);
        let resources: Vec<Arc<Built>> = names.iter().filter_map(|n| snapshot.resources.get(n).cloned()).collect();
        if resources.is_empty() {
            return Err(Status::not_found(format!("no resources for {names:?}")));
        }
        Ok(Response::new(sotw_response(&resources, String::new())))
    }
}

impl<R> Ecds<R> {
    fn permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.shared.streams.clone().try_acquire_owned().map_err(|_| {
            self.shared.metrics.streams_refused.fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted("xds-ext: too many streams")
        })
    }
}

/// One stream's proxy, once its first request named it.
struct Session<R: Render> {
    shared: Arc<Shared<R>>,
    id: u64,
    identity: Arc<ProxyIdentity>,
    state: StreamState,
    snapshot: Snapshot,
}

impl<R: Render> Session<R> {
    fn open(
        shared: Arc<Shared<R>>,
        node: Option<&Node>,
        protocol: &'static str,
        peer: Option<&[CertificateDer<'static>]>,
    ) -> Result<Self, Status> {
        let node = node.ok_or_else(|| Status::invalid_argument("the first request of a stream must carry the node"))?;
        let claimed = identity(node);
        let verified = authorize(&shared, node, &claimed, peer)?;
        let (id, identity) = shared.registry.connect(claimed, protocol);
        match verified {
            Some(spiffe) => log(format_args!("proxy connected ({protocol}): {} as {spiffe}", describe(&identity))),
            None => log(format_args!("proxy connected ({protocol}): {}", describe(&identity))),
        }
        let generation = shared.generation.borrow().id;
        let snapshot = shared.cache.get(&identity.workload, generation);
        let mut state = StreamState::new();
        for (resource, nack) in shared.registry.rejections(&identity.node_id) {
            state.rejected_before(&resource, nack);
        }
        Ok(Session { shared, id, identity, state, snapshot })
    }

    /// Re-reads the workload's resources at `generation`.
    fn refresh(&mut self, generation: u64) {
        self.snapshot = self.shared.cache.get(&self.identity.workload, generation);
    }

    fn resources(&self) -> &BTreeMap<String, Arc<Built>> {
        &self.snapshot.resources
    }

    /// Applies the proxy's answer to response `nonce`.
    fn answer(&mut self, nonce: &str, error: Option<&str>) {
        match self.state.answer(nonce, error) {
            Answer::Acked(_) => {
                self.shared.metrics.acks.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Nacked(names) => {
                self.shared.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                for name in &names {
                    if let Some(nack) = self.state.view(name, None).nack {
                        self.shared.registry.remember_rejection(&self.identity.node_id, name, nack);
                    }
                }
                log(format_args!(
                    "NACK from {} for {}: {}",
                    describe(&self.identity),
                    names.join(", "),
                    error.unwrap_or_default()
                ));
            }
            Answer::UnknownNonce => {}
        }
    }

    /// Publishes this stream's state to the registry.
    fn publish(&self) {
        let views = self
            .state
            .subscribed()
            .map(|name| {
                let desired = self.resources().get(name).map(|b| b.version.as_str());
                (name.to_owned(), self.state.view(name, desired))
            })
            .collect();
        self.shared.registry.update(self.id, self.snapshot.error.clone(), views);
    }

    fn sent(&self, resources: usize, generation_at: Option<Instant>) {
        let metrics = &self.shared.metrics;
        metrics.pushes.fetch_add(1, Ordering::Relaxed);
        metrics.resources_sent.fetch_add(resources as u64, Ordering::Relaxed);
        if let Some(at) = generation_at {
            metrics.observe_push(at.elapsed());
        }
    }
}

impl<R: Render> Drop for Session<R> {
    fn drop(&mut self) {
        if let Some((workload, last)) = self.shared.registry.disconnect(self.id) {
            if last {
                self.shared.cache.forget(&workload);
            }
        }
        log(format_args!("proxy disconnected: {}", describe(&self.identity)));
    }
}

/// What woke a stream.
enum Event<T> {
    Request(T),
    Generation(Generation),
    /// The proxy's side could not be read: not protobuf, over the size
    /// limit, or the connection failed.
    Unreadable(Status),
    End,
}

async fn next_event<T, R: Render>(
    inbound: &mut Streaming<T>,
    generation: &mut watch::Receiver<Generation>,
    shutdown: &mut watch::Receiver<bool>,
    session: &Option<Session<R>>,
) -> Event<T> {
    tokio::select! {
        message = inbound.message() => match message {
            Ok(Some(request)) => Event::Request(request),
            Ok(None) => Event::End,
            Err(status) => {
                let who = session.as_ref().map_or_else(|| "a proxy not named yet".to_owned(), |s| describe(&s.identity));
                log(format_args!("stream of {who} failed: {}", status.message()));
                Event::Unreadable(Status::new(
                    status.code(),
                    format!("xds-ext could not read the request: {}", status.message()),
                ))
            }
        },
        changed = generation.changed(), if session.is_some() => match changed {
            Ok(()) => Event::Generation(*generation.borrow_and_update()),
            Err(_) => Event::End,
        },
        _ = shutdown.wait_for(|stop| *stop) => Event::End,
    }
}

/// What differs between the state-of-the-world and the delta protocol; the
/// stream loop ([`StreamLoop`]) is the same for both.
trait Protocol: Send + Sync + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// Names the protocol in logs and the per-proxy view.
    const KIND: &'static str;
    fn type_url(request: &Self::Request) -> &str;
    fn node(request: &Self::Request) -> Option<&Node>;
    /// Applies a request; false if it was stale and ignored.
    fn apply<R: Render>(s: &mut Session<R>, request: Self::Request) -> bool;
    /// The resources to send now, each send's response built from them.
    fn pending<R: Render>(s: &mut Session<R>) -> Vec<Arc<Built>>;
    fn response(resources: &[Arc<Built>], nonce: String) -> Self::Response;
}

struct Sotw;

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const KIND: &'static str = "sotw";
    fn type_url(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }
    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn apply<R: Render>(s: &mut Session<R>, request: DiscoveryRequest) -> bool {
        sotw_request(s, request)
    }
    /// Any change means the full state goes out again.
    fn pending<R: Render>(s: &mut Session<R>) -> Vec<Arc<Built>> {
        if s.state.changed(s.resources()).is_empty() {
            Vec::new()
        } else {
            s.state.full_state(s.resources())
        }
    }
    fn response(resources: &[Arc<Built>], nonce: String) -> DiscoveryResponse {
        sotw_response(resources, nonce)
    }
}

struct Delta;

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const KIND: &'static str = "delta";
    fn type_url(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }
    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn apply<R: Render>(s: &mut Session<R>, request: DeltaDiscoveryRequest) -> bool {
        delta_request(s, request);
        true
    }
    /// Only what changed goes out.
    fn pending<R: Render>(s: &mut Session<R>) -> Vec<Arc<Built>> {
        s.state.changed(s.resources())
    }
    fn response(resources: &[Arc<Built>], nonce: String) -> DeltaDiscoveryResponse {
        delta_response(resources, nonce)
    }
}

/// One stream: the proxy's requests in, the responses for it out.
struct StreamLoop<R: Render, P: Protocol> {
    shared: Arc<Shared<R>>,
    inbound: Streaming<P::Request>,
    generation: watch::Receiver<Generation>,
    shutdown: watch::Receiver<bool>,
    session: Option<Session<R>>,
    /// Set once the stream answered with an error: it ends after that.
    ended: bool,
    /// The client certificate chain the first request is checked against.
    peer: PeerCerts,
    _permit: OwnedSemaphorePermit,
}

fn responses<R: Render, P: Protocol>(
    shared: Arc<Shared<R>>,
    inbound: Streaming<P::Request>,
    peer: PeerCerts,
    permit: OwnedSemaphorePermit,
) -> ResponseStream<P::Response> {
    let stream = StreamLoop::<R, P> {
        generation: shared.generation.clone(),
        shutdown: shared.shutdown.clone(),
        shared,
        inbound,
        session: None,
        ended: false,
        peer,
        _permit: permit,
    };
    Box::pin(futures_util::stream::unfold(stream, |mut stream| async move {
        let response = stream.next_response().await?;
        Some((response, stream))
    }))
}

impl<R: Render, P: Protocol> StreamLoop<R, P> {
    /// Waits for the next response to send; `None` ends the stream.
    async fn next_response(&mut self) -> Option<Result<P::Response, Status>> {
        if self.ended {
            return None;
        }
        loop {
            let mut generation_at = None;
            match next_event(&mut self.inbound, &mut self.generation, &mut self.shutdown, &self.session).await {
                Event::End => return None,
                // Answered in case the proxy still listens (a bad message);
                // nobody reads it if the connection is gone.
                Event::Unreadable(status) => return self.fail(status),
                Event::Generation(g) => {
                    if let Some(s) = self.session.as_mut() {
                        s.refresh(g.id);
                    }
                    generation_at = Some(g.at);
                }
                Event::Request(request) => {
                    if let Err(status) = check_type(P::type_url(&request)) {
                        return self.fail(status);
                    }
                    let s = match self.session.as_mut() {
                        Some(s) => s,
                        None => {
                            self.generation.borrow_and_update();
                            let peer = self.peer.as_deref().map(Vec::as_slice);
                            match Session::open(self.shared.clone(), P::node(&request), P::KIND, peer) {
                                Ok(s) => self.session.insert(s),
                                Err(status) => return self.fail(status),
                            }
                        }
                    };
                    if !P::apply(s, request) {
                        continue;
                    }
                }
            }
            let Some(s) = self.session.as_mut() else { continue };
            let pending = P::pending(s);
            let response = (!pending.is_empty()).then(|| {
                let nonce = s.state.record_sent(pending.clone());
                s.sent(pending.len(), generation_at);
                P::response(&pending, nonce)
            });
            s.publish();
            if let Some(response) = response {
                return Some(Ok(response));
            }
        }
    }

    /// Answers `status` and ends the stream.
    fn fail(&mut self, status: Status) -> Option<Result<P::Response, Status>> {
        self.ended = true;
        Some(Err(status))
    }
}

/// Applies a state-of-the-world request; false if it was stale and ignored.
fn sotw_request<R: Render>(s: &mut Session<R>, request: DiscoveryRequest) -> bool {
    let nonce = request.response_nonce;
    if !nonce.is_empty() {
        // A request answering an older response is stale: the proxy will
        // answer the latest one too (xDS protocol, "ACK and NACK semantics").
        if s.state.latest_nonce() != Some(nonce.as_str()) {
            return false;
        }
        s.answer(&nonce, request.error_detail.as_ref().map(|e| e.message.as_str()));
    }
    s.state.set_subscription(requested_names(request.resource_names));
    if nonce.is_empty() && !request.version_info.is_empty() {
        // A proxy reconnecting with the config xds-ext would send anyway.
        let full = s.state.full_state(s.resources());
        if !full.is_empty() && sotw_version(&full) == request.version_info {
            for built in &full {
                s.state.proxy_has(built);
            }
        }
    }
    true
}

fn delta_request<R: Render>(s: &mut Session<R>, request: DeltaDiscoveryRequest) {
    let first = s.state.subscribed().next().is_none() && request.response_nonce.is_empty();
    if !request.response_nonce.is_empty() {
        s.answer(&request.response_nonce, request.error_detail.as_ref().map(|e| e.message.as_str()));
    }
    let subscribe = if first && request.resource_names_subscribe.is_empty() {
        requested_names(Vec::new())
    } else {
        request.resource_names_subscribe
    };
    s.state.change_subscription(&subscribe, &request.resource_names_unsubscribe);
    for (name, version) in &request.initial_resource_versions {
        if let Some(built) = s.resources().get(name).filter(|b| &b.version == version).cloned() {
            s.state.proxy_has(&built);
        }
    }
}

/// The requested names; none means all of them (a wildcard subscription).
fn requested_names(names: Vec<String>) -> Vec<String> {
    if names.is_empty() {
        RESOURCES.iter().map(|r| r.to_string()).collect()
    } else {
        names
    }
}

fn check_type(type_url: &str) -> Result<(), Status> {
    if type_url.is_empty() || type_url == TYPED_EXTENSION_CONFIG {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("xds-ext serves only {TYPED_EXTENSION_CONFIG}, not {type_url}")))
    }
}

/// A state-of-the-world response's `version_info`: the resource's version
/// when it holds one (the usual ECDS stream), else a hash of all of them.
fn sotw_version(resources: &[Arc<Built>]) -> String {
    match resources {
        [one] => one.version.clone(),
        many => {
            let joined: String = many.iter().map(|b| format!("{}={}\n", b.name, b.version)).collect();
            content_version(joined.as_bytes())
        }
    }
}

fn control_plane() -> Option<ControlPlane> {
    Some(ControlPlane { identifier: format!("xds-ext/{}", env!("CARGO_PKG_VERSION")) })
}

fn sotw_response(resources: &[Arc<Built>], nonce: String) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: sotw_version(resources),
        resources: resources.iter().map(|b| b.resource.clone()).collect(),
        type_url: TYPED_EXTENSION_CONFIG.to_owned(),
        nonce,
        control_plane: control_plane(),
        ..Default::default()
    }
}

fn delta_response(resources: &[Arc<Built>], nonce: String) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: sotw_version(resources),
        resources: resources
            .iter()
            .map(|b| Resource {
                name: b.name.clone(),
                version: b.version.clone(),
                resource: Some(b.resource.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: TYPED_EXTENSION_CONFIG.to_owned(),
        nonce,
        control_plane: control_plane(),
        ..Default::default()
    }
}

/// With the identity check on, the node's namespace and service account
/// must be its client certificate's SPIFFE ID; the stream (or fetch) ends
/// with PERMISSION_DENIED otherwise, before the proxy is registered.
fn authorize<R>(
    shared: &Shared<R>,
    node: &Node,
    claimed: &ProxyIdentity,
    peer: Option<&[CertificateDer<'static>]>,
) -> Result<Option<SpiffeId>, Status> {
    let Some(check) = &shared.identity else { return Ok(None) };
    let claim = Claim {
        node_id: &claimed.node_id,
        namespace: &claimed.workload.namespace,
        service_account: metadata_text(node, "SERVICE_ACCOUNT"),
    };
    check.authorize(peer, claim).map(Some).map_err(|reason| {
        shared.metrics.streams_denied.fetch_add(1, Ordering::Relaxed);
        log(format_args!("PERMISSION_DENIED: {reason}"));
        Status::permission_denied(format!("xds-ext: {reason}"))
    })
}

/// A string value of the node's metadata.
fn metadata_text<'n>(node: &'n Node, key: &str) -> Option<&'n str> {
    match node.metadata.as_ref().and_then(|m| m.fields.get(key)).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// A proxy's identity from its `Node`: Istio's `NAMESPACE` (default
/// `default`), `LABELS` (string values) and `WORKLOAD_NAME` metadata.
pub fn identity(node: &Node) -> ProxyIdentity {
    let metadata = node.metadata.as_ref();
    let text = |key: &str| metadata_text(node, key).map(str::to_owned);
    let labels = match metadata.and_then(|m| m.fields.get("LABELS")).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StructValue(Struct { fields })) => fields
            .iter()
            .filter_map(|(k, v)| match &v.kind {
                Some(value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    ProxyIdentity {
        node_id: node.id.clone(),
        cluster: node.cluster.clone(),
        workload_name: text("WORKLOAD_NAME").unwrap_or_default(),
        workload: Arc::new(Workload {
            namespace: text("NAMESPACE").filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_owned()),
            labels,
        }),
    }
}

/// `node-id (namespace/labels)` for log lines.
pub fn describe(identity: &ProxyIdentity) -> String {
    let Workload { namespace, labels } = &*identity.workload;
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} ({namespace} {})", identity.node_id, labels.join(","))
}
