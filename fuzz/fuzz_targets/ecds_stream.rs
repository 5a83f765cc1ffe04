//! The ECDS stream logic on arbitrary `DiscoveryRequest` bytes and sequences:
//! xds-ext's gRPC service (`EcdsServer`, the code `serve` puts on port
//! 15012) driven in process, without a socket. Each input is one stream,
//! state of the world or delta: requests built from the input (nonces of
//! responses received, or not; ACKs and NACKs; versions; subscriptions) or
//! raw protobuf bytes, config generations published between them, and the
//! proxy hanging up.
//!
//! Beyond "never panics", a model of what the proxy saw checks:
//! - every response is well formed (type URL, fresh increasing nonce, a
//!   served resource, a delta resource's version is its content hash);
//! - only subscribed resources are sent;
//! - a version the proxy NACKed is never sent again on the stream (xds-ext's
//!   promise, docs/xds-ext.md; go-control-plane re-sends it in a loop), until
//!   a delta proxy unsubscribes from it;
//! - a request xds-ext must refuse (wrong type URL, no node first, not
//!   protobuf, over the size limit) ends the stream with an error status.
//!
//! Everything runs on this thread with no runtime: the stream is a future
//! polled until it waits for the next request, so each step is exact.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arbitrary::Arbitrary;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{Node, TypedExtensionConfig};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures_util::FutureExt;
use http_body::Frame;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::codegen::Service;
use xds_ext::server::cache::{Cache, Generation, Render};
use xds_ext::server::ecds::{Ecds, Shared};
use xds_ext::server::grpc::EcdsServer;
use xds_ext::server::resources::{content_version, Modules, TYPED_EXTENSION_CONFIG};
use xds_ext::workload::{Rendered, Workload, RESOURCES};

/// The request size limit of this server (`serve --max-request-bytes`).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const SERVICE: &str = "/envoy.service.extension.v3.ExtensionConfigDiscoveryService";

/// Each resource's config depends on one bit of the published variant, so a
/// publish changes some resources and not others; `failing` makes every
/// render fail (the workload keeps its last good resources).
#[derive(Default)]
struct Renderer {
    variant: AtomicU8,
    failing: AtomicBool,
}

impl Render for Renderer {
    fn render(&self, workload: &Workload) -> Result<Rendered, String> {
        if self.failing.load(Ordering::Relaxed) {
            return Err("policy.yaml:1: VirtualService default/reviews: spec.http: bad".into());
        }
        let variant = self.variant.load(Ordering::Relaxed);
        let resources = RESOURCES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bit = (variant >> (i % 8)) & 1;
                (name.to_string(), format!(r#"{{"version":1,"ns":{:?},"v":{bit}}}"#, workload.namespace))
            })
            .collect();
        Ok(Rendered { resources })
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    delta: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Request(Box<Req>),
    /// One gRPC message with these bytes as its protobuf.
    Raw(Vec<u8>),
    /// Bytes straight into the request body, framing included.
    Garbage(Vec<u8>),
    /// A new config generation with this variant.
    Publish(u8),
    /// Renders fail from now on (until the next publish).
    RenderFails,
    /// The proxy ends its side of the stream.
    Close,
}

#[derive(Arbitrary, Debug)]
struct Req {
    node: Option<NodeSpec>,
    type_url: TypeUrl,
    nonce: Pick,
    version: Pick,
    names: Vec<Name>,
    unsubscribe: Vec<Name>,
    initial: Vec<(Name, Pick)>,
    error: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct NodeSpec {
    id: String,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
enum TypeUrl {
    Ecds,
    Empty,
    Other(String),
}

/// A nonce or version: none, one the proxy received (counting back from
/// the latest), or anything.
#[derive(Arbitrary, Debug)]
enum Pick {
    Empty,
    Received(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Served(u8),
    Other(String),
}

impl Name {
    fn resolve(&self) -> String {
        match self {
            Name::Served(i) => RESOURCES[usize::from(*i) % RESOURCES.len()].to_owned(),
            Name::Other(s) => s.clone(),
        }
    }
}

/// The request body: messages pushed by the test as they come.
struct Inbound(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Inbound {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }
}

/// One response as the proxy saw it.
struct Received {
    nonce: String,
    version_info: String,
    resources: Vec<(String, String)>,
}

/// What the proxy knows, and what xds-ext must therefore do.
struct Model {
    delta: bool,
    received: Vec<Received>,
    latest_answered: bool,
    /// Names whose state xds-ext dropped since the latest response (delta
    /// unsubscribe): a NACK of that response no longer concerns them.
    dropped_since_latest: BTreeSet<String>,
    session: bool,
    subscribed: BTreeSet<String>,
    /// Versions the proxy acknowledged or said it has, per resource: a NACK
    /// of one of them is not a rejection (xds-ext's fallback rule).
    acked: BTreeMap<String, BTreeSet<String>>,
    banned: BTreeSet<(String, String)>,
    /// A request must end the stream with an error status.
    must_fail: bool,
    /// False after bytes the model cannot follow: only crashes count then.
    exact: bool,
}

impl Model {
    fn new(delta: bool) -> Self {
        Model {
            delta,
            received: Vec::new(),
            latest_answered: false,
            dropped_since_latest: BTreeSet::new(),
            session: false,
            subscribed: BTreeSet::new(),
            acked: BTreeMap::new(),
            banned: BTreeSet::new(),
            must_fail: false,
            exact: true,
        }
    }

    fn pick(&self, pick: &Pick, field: impl Fn(&Received) -> &str) -> String {
        match pick {
            Pick::Empty => String::new(),
            Pick::Received(back) => {
                let n = self.received.len();
                n.checked_sub(1 + usize::from(*back) % n.max(1))
                    .and_then(|i| self.received.get(i))
                    .map(|r| field(r).to_owned())
                    .unwrap_or_default()
            }
            Pick::Other(s) => s.clone(),
        }
    }

    fn latest_nonce(&self) -> Option<&str> {
        self.received.last().map(|r| r.nonce.as_str())
    }

    /// Whether the request opens the session or must end the stream; false
    /// if the stream ends here.
    fn opens(&mut self, type_url: &str, has_node: bool) -> bool {
        if !type_url.is_empty() && type_url != TYPED_EXTENSION_CONFIG {
            self.must_fail = true;
            return false;
        }
        if !self.session && !has_node {
            self.must_fail = true;
            return false;
        }
        self.session = true;
        true
    }

    /// The proxy answered response `nonce`.
    fn answer(&mut self, nonce: &str, error: bool) {
        let latest = self.latest_nonce() == Some(nonce);
        if let Some(answered) = self.received.iter().find(|r| r.nonce == nonce) {
            if !error {
                for (name, version) in &answered.resources {
                    self.acked.entry(name.clone()).or_default().insert(version.clone());
                }
            } else if latest && !self.latest_answered {
                for (name, version) in &answered.resources {
                    let acked = self.acked.get(name).is_some_and(|v| v.contains(version));
                    if !acked && !self.dropped_since_latest.contains(name) {
                        self.banned.insert((name.clone(), version.clone()));
                    }
                }
            }
        }
        if latest {
            self.latest_answered = true;
        }
    }

    fn sotw(&mut self, request: &DiscoveryRequest) -> bool {
        if !self.opens(&request.type_url, request.node.is_some()) {
            return false;
        }
        let nonce = &request.response_nonce;
        if !nonce.is_empty() {
            if self.latest_nonce() != Some(nonce.as_str()) {
                return true; // stale: ignored
            }
            self.answer(nonce, request.error_detail.is_some());
        }
        self.subscribed = requested(&request.resource_names);
        if nonce.is_empty() && !request.version_info.is_empty() {
            let claimed: Vec<(String, String)> = self
                .received
                .iter()
                .filter(|r| r.version_info == request.version_info)
                .flat_map(|r| r.resources.iter().cloned())
                .collect();
            for (name, version) in claimed {
                self.acked.entry(name).or_default().insert(version);
            }
        }
        true
    }

    fn delta(&mut self, request: &DeltaDiscoveryRequest) -> bool {
        if !self.opens(&request.type_url, request.node.is_some()) {
            return false;
        }
        let first = self.subscribed.is_empty() && request.response_nonce.is_empty();
        if !request.response_nonce.is_empty() {
            self.answer(&request.response_nonce, request.error_detail.is_some());
        }
        for name in &request.resource_names_unsubscribe {
            self.subscribed.remove(name);
            // xds-ext forgets the resource: re-subscribing starts afresh.
            self.banned.retain(|(n, _)| n != name);
            self.dropped_since_latest.insert(name.clone());
        }
        if first && request.resource_names_subscribe.is_empty() {
            self.subscribed.extend(RESOURCES.iter().map(|r| r.to_string()));
        } else {
            self.subscribed.extend(request.resource_names_subscribe.iter().cloned());
        }
        for (name, version) in &request.initial_resource_versions {
            self.acked.entry(name.clone()).or_default().insert(version.clone());
        }
        true
    }

    fn response(&mut self, response: Received) {
        assert!(!response.nonce.is_empty(), "a response without a nonce");
        if let Some(previous) = self.received.last() {
            let (a, b) = (previous.nonce.parse::<u64>().ok(), response.nonce.parse::<u64>().ok());
            assert!(a < b, "nonce {} after {}", response.nonce, previous.nonce);
        }
        for (name, version) in &response.resources {
            assert!(RESOURCES.contains(&name.as_str()), "a resource xds-ext does not serve: {name}");
            if self.exact {
                assert!(self.subscribed.contains(name), "{name} sent but not subscribed: {:?}", self.subscribed);
                assert!(
                    !self.banned.contains(&(name.clone(), version.clone())),
                    "{name} version {version} sent again after the proxy NACKed it"
                );
            }
        }
        self.received.push(response);
        self.latest_answered = false;
        self.dropped_since_latest.clear();
    }
}

fn requested(names: &[String]) -> BTreeSet<String> {
    if names.is_empty() {
        RESOURCES.iter().map(|r| r.to_string()).collect()
    } else {
        names.iter().cloned().collect()
    }
}

fn node(spec: &NodeSpec) -> Node {
    let text = |s: &str| Value { kind: Some(value::Kind::StringValue(s.to_owned())) };
    let mut fields = BTreeMap::new();
    if let Some(namespace) = &spec.namespace {
        fields.insert("NAMESPACE".to_owned(), text(namespace));
    }
    let labels = spec.labels.iter().map(|(k, v)| (k.clone(), text(v))).collect();
    fields.insert("LABELS".to_owned(), Value { kind: Some(value::Kind::StructValue(Struct { fields: labels })) });
    Node { id: spec.id.clone(), metadata: Some(Struct { fields: fields.into_iter().collect() }), ..Default::default() }
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

/// A response message as the proxy sees it: nonce, version and (name, version) per resource.
fn decode_response(delta: bool, mut message: &[u8]) -> Received {
    if delta {
        let response = match DeltaDiscoveryResponse::decode(&mut message) {
            Ok(r) => r,
            Err(e) => panic!("xds-ext sent a response that is not a DeltaDiscoveryResponse: {e}"),
        };
        assert_eq!(response.type_url, TYPED_EXTENSION_CONFIG);
        let resources = response
            .resources
            .iter()
            .map(|r| {
                let any = r.resource.as_ref().map(|a| a.value.as_slice()).unwrap_or_default();
                assert_eq!(r.version, content_version(any), "{}: the version is not the content's", r.name);
                (r.name.clone(), r.version.clone())
            })
            .collect();
        Received { nonce: response.nonce, version_info: response.system_version_info, resources }
    } else {
        let response = match DiscoveryResponse::decode(&mut message) {
            Ok(r) => r,
            Err(e) => panic!("xds-ext sent a response that is not a DiscoveryResponse: {e}"),
        };
        assert_eq!(response.type_url, TYPED_EXTENSION_CONFIG);
        let resources = response
            .resources
            .iter()
            .map(|any| {
                assert_eq!(any.type_url, TYPED_EXTENSION_CONFIG);
                let name = match TypedExtensionConfig::decode(any.value.as_slice()) {
                    Ok(config) => config.name,
                    Err(e) => panic!("a resource that is not a TypedExtensionConfig: {e}"),
                };
                (name, content_version(&any.value))
            })
            .collect();
        Received { nonce: response.nonce, version_info: response.version_info, resources }
    }
}

/// How the stream stands after reading every response it had ready.
#[derive(PartialEq)]
enum Stream {
    Open,
    Ended { ok: bool },
}

/// Reads every frame ready now (each response, and the final status).
fn drain(body: &mut tonic::body::Body, model: &mut Model) -> Stream {
    loop {
        match body.frame().now_or_never() {
            None => return Stream::Open,
            Some(None) => return Stream::Ended { ok: true },
            Some(Some(Err(status))) => return Stream::Ended { ok: status.code() == tonic::Code::Ok },
            Some(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let ok = trailers.get("grpc-status").is_some_and(|s| s == "0");
                    return Stream::Ended { ok };
                }
                if let Ok(mut data) = frame.into_data() {
                    // One message per frame: xds-ext frames each response itself.
                    assert!(data.len() >= 5, "a frame shorter than its gRPC prefix");
                    assert_eq!(data.get_u8(), 0, "a compressed response");
                    let len = data.get_u32() as usize;
                    assert_eq!(len, data.len(), "a frame that is not exactly one message");
                    let received = decode_response(model.delta, &data);
                    model.response(received);
                }
            }
        }
    }
}

fn build_request(model: &Model, req: &Req) -> Vec<u8> {
    let type_url = match &req.type_url {
        TypeUrl::Ecds => TYPED_EXTENSION_CONFIG.to_owned(),
        TypeUrl::Empty => String::new(),
        TypeUrl::Other(s) => s.clone(),
    };
    let nonce = model.pick(&req.nonce, |r| &r.nonce);
    let error_detail = req.error.as_ref().map(|m| RpcStatus { code: 13, message: m.clone(), details: vec![] });
    let node = req.node.as_ref().map(node);
    let names: Vec<String> = req.names.iter().map(Name::resolve).collect();
    if model.delta {
        DeltaDiscoveryRequest {
            node,
            type_url,
            resource_names_subscribe: names,
            resource_names_unsubscribe: req.unsubscribe.iter().map(Name::resolve).collect(),
            initial_resource_versions: req
                .initial
                .iter()
                .map(|(name, version)| {
                    let version = model.pick(version, |r| r.resources.first().map_or("", |(_, v)| v.as_str()));
                    (name.resolve(), version)
                })
                .collect(),
            response_nonce: nonce,
            error_detail,
            ..Default::default()
        }
        .encode_to_vec()
    } else {
        DiscoveryRequest {
            version_info: model.pick(&req.version, |r| &r.version_info),
            node,
            resource_names: names,
            type_url,
            response_nonce: nonce,
            error_detail,
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// Applies a request's bytes to the model; false if it ends the stream.
fn expect(model: &mut Model, message: &[u8]) -> bool {
    if message.len() > MAX_REQUEST_BYTES {
        model.must_fail = true;
        return false;
    }
    if model.delta {
        match DeltaDiscoveryRequest::decode(message) {
            Ok(request) => model.delta(&request),
            Err(_) => {
                model.must_fail = true;
                false
            }
        }
    } else {
        match DiscoveryRequest::decode(message) {
            Ok(request) => model.sotw(&request),
            Err(_) => {
                model.must_fail = true;
                false
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let (publish, generation) = watch::channel(Generation::first());
    let (_stop, stopped) = watch::channel(false);
    let cache = Cache::new(Renderer::default(), Modules::local(Path::new("/m")));
    let shared = Arc::new(Shared::new(cache, generation, stopped, 16));
    let renderer = shared.cache.renderer();
    let mut service = EcdsServer::new(Ecds::new(shared.clone()), MAX_REQUEST_BYTES);

    let (send, inbound) = mpsc::unbounded_channel();
    let method = if input.delta { "DeltaExtensionConfigs" } else { "StreamExtensionConfigs" };
    let request = match http::Request::builder()
        .method("POST")
        .uri(format!("http://xds-ext{SERVICE}/{method}"))
        .header("content-type", "application/grpc")
        .body(Inbound(inbound))
    {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let response = match service.call(request).now_or_never() {
        Some(Ok(response)) => response,
        Some(Err(never)) => match never {},
        None => panic!("the stream did not start at once"),
    };
    let mut body = response.into_body();
    let mut model = Model::new(input.delta);
    let mut generation_id = 0;

    for step in &input.steps {
        let accepted = match step {
            Step::Request(req) => {
                let message = build_request(&model, req);
                let _ = send.send(grpc_frame(&message));
                expect(&mut model, &message)
            }
            Step::Raw(bytes) => {
                let _ = send.send(grpc_frame(bytes));
                expect(&mut model, bytes)
            }
            Step::Garbage(bytes) => {
                let _ = send.send(Bytes::copy_from_slice(bytes));
                model.exact = false;
                true
            }
            Step::Publish(variant) => {
                renderer.variant.store(*variant, Ordering::Relaxed);
                renderer.failing.store(false, Ordering::Relaxed);
                generation_id += 1;
                let _ = publish.send(Generation { id: generation_id, at: Instant::now() });
                true
            }
            Step::RenderFails => {
                renderer.failing.store(true, Ordering::Relaxed);
                generation_id += 1;
                let _ = publish.send(Generation { id: generation_id, at: Instant::now() });
                true
            }
            Step::Close => {
                break;
            }
        };
        let stream = drain(&mut body, &mut model);
        if model.exact {
            if accepted {
                assert!(stream == Stream::Open, "xds-ext ended the stream after a request it should take");
            } else {
                assert!(
                    model.must_fail && stream == Stream::Ended { ok: false },
                    "a request xds-ext must refuse left the stream open or ended it OK"
                );
            }
        }
        if stream != Stream::Open {
            return;
        }
    }
    drop(send);
    let _ = drain(&mut body, &mut model);
});
