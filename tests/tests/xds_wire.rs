//! xds-ext on the wire, with no Envoy in between: what a misbehaving xDS
//! client gets. A stream without a node, a request for another type, one over
//! the size limit, bytes that are not protobuf, streams over the limit: each
//! is answered with a gRPC status that names the problem, and the server goes
//! on serving the next client. SIGTERM ends open streams and the process.

use std::time::Duration;

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use switchyard_tests::xds_ext::{bookinfo, XdsExt};

const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const ROUTING: &str = "switchyard.routing";
const STREAM_PATH: &str = "/envoy.service.extension.v3.ExtensionConfigDiscoveryService/StreamExtensionConfigs";

/// xds-ext with bookinfo's reviews routing, started with `extra` flags.
/// No module is needed: `local` code paths are only written into configs.
async fn xds_ext(extra: &[&str]) -> (XdsExt, tempfile::TempDir) {
    let config = XdsExt::config_dir(&[("reviews.yaml", &bookinfo("virtual-service-reviews-test-v2.yaml"))]);
    let modules = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let xds = XdsExt::start_with_args(config.path(), "127.0.0.1:0", modules.path(), extra).await;
    (xds, config)
}

async fn channel(xds: &XdsExt) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{}", xds.grpc_port))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to xds-ext: {e}"))
}

/// A node as an Istio sidecar of productpage sends it.
fn node(id: &str) -> Node {
    let text = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let labels = Struct { fields: [("app".to_owned(), text("productpage"))].into() };
    let metadata = Struct {
        fields: [
            ("NAMESPACE".to_owned(), text("default")),
            ("LABELS".to_owned(), Value { kind: Some(Kind::StructValue(labels)) }),
        ]
        .into(),
    };
    Node { id: id.to_owned(), cluster: "productpage".to_owned(), metadata: Some(metadata), ..Default::default() }
}

fn request(node: Option<Node>, resources: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: TYPE_URL.to_owned(),
        resource_names: resources.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

/// An open state-of-the-world stream: requests out, responses in.
struct Stream {
    /// Kept open: a proxy that closes its side ends the stream.
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

/// Opens a stream whose first request is `first`; a refusal before any
/// response (e.g. the stream limit) is the status.
async fn open(channel: Channel, first: DiscoveryRequest) -> Result<Stream, Status> {
    let (requests, rx) = mpsc::channel(4);
    requests.send(first).await.unwrap_or_else(|e| panic!("{e}"));
    let mut client = ExtensionConfigDiscoveryServiceClient::new(channel);
    let responses = client.stream_extension_configs(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Stream { requests, responses })
}

impl Stream {
    /// The next response, or the status the stream ended with (`OK` when
    /// it ended cleanly); within 5 s.
    async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(Duration::from_secs(5), self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(Status::ok("stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no answer from xds-ext within 5 s"),
        }
    }
}

/// The first answer of a stream opened with `first`.
async fn answer(xds: &XdsExt, first: DiscoveryRequest) -> Result<DiscoveryResponse, Status> {
    open(channel(xds).await, first).await?.next().await
}

/// A well-behaved proxy still gets its config: the server survived.
async fn assert_still_serving(xds: &XdsExt) {
    let response = answer(xds, request(Some(node("healthy")), &[ROUTING]))
        .await
        .unwrap_or_else(|s| panic!("a good client was refused: {s:?}\n{}", xds.log()));
    assert_eq!(response.resources.len(), 1, "{response:?}");
}

fn refused(result: Result<DiscoveryResponse, Status>) -> Status {
    match result {
        Ok(response) => panic!("answered instead of refused: {response:?}"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_stream_without_a_node_is_refused_with_invalid_argument() {
    let (xds, _config) = xds_ext(&[]).await;
    let status = refused(answer(&xds, request(None, &[ROUTING])).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must carry the node"), "{status:?}");
    assert_still_serving(&xds).await;
}

#[tokio::test]
async fn a_request_for_another_type_is_refused_naming_the_type() {
    let (xds, _config) = xds_ext(&[]).await;
    let mut clusters = request(Some(node("confused")), &[]);
    clusters.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned();
    let status = refused(answer(&xds, clusters).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("envoy.config.cluster.v3.Cluster"), "{status:?}");
    assert_still_serving(&xds).await;
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused_and_says_so() {
    let (xds, _config) = xds_ext(&["--max-request-bytes", "2048"]).await;
    let mut big = node("big");
    if let Some(metadata) = big.metadata.as_mut() {
        let padding = Value { kind: Some(Kind::StringValue("x".repeat(4096))) };
        metadata.fields.insert("PADDING".to_owned(), padding);
    }
    let status = refused(answer(&xds, request(Some(big), &[ROUTING])).await);
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("2048"), "the limit is named: {status:?}");
    assert_still_serving(&xds).await;
}

#[tokio::test]
async fn bytes_that_are_not_a_discovery_request_end_that_stream_with_an_error() {
    let (xds, _config) = xds_ext(&[]).await;
    let mut grpc = tonic::client::Grpc::new(channel(&xds).await);
    grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
    let garbage = tokio_stream::once(vec![0xff, 0xff, 0xff, 0xff]);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(STREAM_PATH);
    let status = match grpc.streaming(tonic::Request::new(garbage), path, RawCodec).await {
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected an error status, got {other:?}"),
            }
        }
    };
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    assert!(status.message().contains("could not read the request"), "{status:?}");
    assert_still_serving(&xds).await;
}

#[tokio::test]
async fn an_unknown_resource_name_gets_nothing_for_it_and_the_known_one_is_served() {
    let (xds, _config) = xds_ext(&[]).await;
    let response = answer(&xds, request(Some(node("curious")), &[ROUTING, "switchyard.nope"]))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(response.resources.len(), 1, "{response:?}");
}

#[tokio::test]
async fn status_shows_a_synced_stream_as_a_table_json_and_yaml() {
    let (xds, _config) = xds_ext(&[]).await;
    let mut stream =
        open(channel(&xds).await, request(Some(node("pp-1")), &[ROUTING])).await.unwrap_or_else(|s| panic!("{s:?}"));
    let response = stream.next().await.unwrap_or_else(|s| panic!("{s:?}"));
    let mut ack = request(None, &[ROUTING]);
    ack.version_info = response.version_info.clone();
    ack.response_nonce = response.nonce.clone();
    stream.requests.send(ack).await.unwrap_or_else(|e| panic!("{e}"));
    xds.wait_status("pp-1", ROUTING, "SYNCED").await;

    let table = xds.status_cli();
    let row = table.lines().find(|l| l.starts_with("pp-1 ")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["pp-1", "default", "app=productpage", "SYNCED", "-", "-", "-", "-", "-"]
    );
    let json: serde_json::Value =
        serde_json::from_str(&xds.status_cli_with(&["-o", "json"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["proxies"][0]["resources"][ROUTING]["acked"], response.version_info.as_str());
    let yaml = xds.status_cli_with(&["-o", "yaml"]);
    assert!(yaml.contains("node_id: pp-1") && yaml.contains("status: SYNCED"), "{yaml}");
}

#[tokio::test]
async fn streams_over_the_limit_get_resource_exhausted_until_one_closes() {
    let (xds, _config) = xds_ext(&["--max-streams", "2"]).await;
    let ch = channel(&xds).await;
    let mut first = open(ch.clone(), request(Some(node("one")), &[ROUTING])).await.unwrap_or_else(|s| panic!("{s:?}"));
    let mut second = open(ch.clone(), request(Some(node("two")), &[ROUTING])).await.unwrap_or_else(|s| panic!("{s:?}"));
    first.next().await.unwrap_or_else(|s| panic!("{s:?}"));
    second.next().await.unwrap_or_else(|s| panic!("{s:?}"));

    let status = refused(answer(&xds, request(Some(node("three")), &[ROUTING])).await);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too many streams"), "{status:?}");
    assert_eq!(xds.metric("xds_ext_streams_refused_total").await, 1.0);

    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match answer(&xds, request(Some(node("three")), &[ROUTING])).await {
            Ok(response) => {
                assert_eq!(response.resources.len(), 1);
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "the closed stream's place never came free");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_open_streams_and_exits_within_five_seconds() {
    let (mut xds, _config) = xds_ext(&[]).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let ch = channel(&xds).await;
        let mut stream =
            open(ch, request(Some(node(&format!("proxy-{i}"))), &[ROUTING])).await.unwrap_or_else(|s| panic!("{s:?}"));
        stream.next().await.unwrap_or_else(|s| panic!("{s:?}"));
        streams.push(stream);
    }
    let log_before = xds.log();
    let exited = tokio::task::block_in_place(|| xds.terminate(Duration::from_secs(5)));
    let status = exited.unwrap_or_else(|| panic!("xds-ext still running 5 s after SIGTERM:\n{log_before}"));
    assert!(status.success(), "xds-ext exited with {status}:\n{}", xds.log());
    for stream in &mut streams {
        let end = stream.next().await;
        assert!(end.is_err(), "a stream answered after shutdown: {end:?}");
    }
    let log = xds.log();
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");
}

/// Sends and receives raw bytes, to put what no protobuf encoder would
/// write on the wire.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = buf.chunk().to_vec();
        buf.advance(bytes.len());
        Ok(Some(bytes))
    }
}
