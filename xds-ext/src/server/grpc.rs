//! The ECDS service on the wire: Envoy's `ExtensionConfigDiscoveryService`
//! methods routed to an [`ExtensionConfigDiscoveryService`] (our [`Ecds`]),
//! as the server envoy-types generates does, but framing the two streaming
//! methods' messages itself.
//!
//! Why not the generated server: a proxy keeps one ECDS stream per filter
//! open for its lifetime, so what each stream holds is multiplied by every
//! filter of every proxy. tonic's codec gives each stream a read and a write
//! buffer of 8 KiB up front, and its write buffer keeps the capacity of the
//! largest response the stream ever sent, a copy of that proxy's config: at
//! 10 000 streams those buffers were most of xds-ext's memory. Here requests
//! are read by tonic into a buffer that starts at `INITIAL_BUFFER` (512 bytes), and
//! each response is encoded into a buffer of its exact size that HTTP/2
//! frees once written.
//!
//! [`Ecds`]: super::ecds::Ecds

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, SERVICE_NAME,
};
use futures_util::Stream;
use http_body::Frame;
use prost::Message;
use tonic::codec::BufferSettings;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Where each stream's read buffer starts; it grows to the largest request.
const INITIAL_BUFFER: usize = 512;
/// tonic's default (how much a decoder reads before yielding).
const YIELD_THRESHOLD: usize = 32 * 1024;
/// A gRPC message's prefix: the compression flag and the length.
const MESSAGE_PREFIX: usize = 5;

/// The gRPC service, for `tonic::transport::Server::add_service`.
pub struct EcdsServer<T> {
    inner: Arc<T>,
    max_request_bytes: usize,
}

impl<T> EcdsServer<T> {
    /// Serves `inner`, refusing requests larger than `max_request_bytes`.
    pub fn new(inner: T, max_request_bytes: usize) -> Self {
        EcdsServer { inner: Arc::new(inner), max_request_bytes }
    }
}

impl<T> Clone for EcdsServer<T> {
    fn clone(&self) -> Self {
        EcdsServer { inner: self.inner.clone(), max_request_bytes: self.max_request_bytes }
    }
}

impl<T> NamedService for EcdsServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<T, B> Service<http::Request<B>> for EcdsServer<T>
where
    T: ExtensionConfigDiscoveryService,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let limit = Some(self.max_request_bytes);
        let method = request.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(SERVICE_NAME));
        match method {
            Some("/StreamExtensionConfigs") => Box::pin(async move {
                let requests = inbound::<DiscoveryRequest, B>(request, limit);
                Ok(streaming(inner.stream_extension_configs(requests).await))
            }),
            Some("/DeltaExtensionConfigs") => Box::pin(async move {
                let requests = inbound::<DeltaDiscoveryRequest, B>(request, limit);
                Ok(streaming(inner.delta_extension_configs(requests).await))
            }),
            Some("/FetchExtensionConfigs") => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default()).apply_max_message_size_config(limit, None);
                Ok(grpc.unary(Fetch(inner), request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("xds-ext serves only ECDS").into_http()) }),
        }
    }
}

/// The proxy's requests, decoded by tonic. Compressed requests are refused
/// by the decoder (Envoy does not compress xDS). The request keeps the
/// connection's extensions: the TLS peer certificates the identity check reads.
fn inbound<M, B>(request: http::Request<B>, limit: Option<usize>) -> Request<Streaming<M>>
where
    M: Message + Default + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let decoder = ProstDecoder::<M>::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD));
    Request::from_http(request.map(|body| Streaming::new_request(decoder, body, None, limit)))
}

/// The HTTP response of a streaming method: the refusal as a trailers-only
/// response, or the messages framed as they come, then the status.
fn streaming<S, M>(result: Result<Response<S>, Status>) -> http::Response<tonic::body::Body>
where
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    M: Message + 'static,
{
    match result {
        Err(status) => status.into_http(),
        Ok(response) => {
            let body = Framed { messages: Box::pin(response.into_inner()), ended: false };
            let mut http = http::Response::new(tonic::body::Body::new(body));
            http.headers_mut().insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
            http
        }
    }
}

/// A stream of messages as a gRPC response body.
struct Framed<S> {
    messages: Pin<Box<S>>,
    ended: bool,
}

impl<S, M> Body for Framed<S>
where
    S: Stream<Item = Result<M, Status>>,
    M: Message,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(self.messages.as_mut().poll_next(cx)) {
            Some(Ok(message)) => match frame(&message) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// One message with its gRPC prefix, in a buffer of exactly its size.
fn frame<M: Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let prefix_len = u32::try_from(len).map_err(|_| Status::internal(format!("response of {len} bytes")))?;
    let mut buf = BytesMut::with_capacity(MESSAGE_PREFIX + len);
    buf.put_u8(0); // not compressed
    buf.put_u32(prefix_len);
    message.encode(&mut buf).map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(buf.freeze())
}

struct Fetch<T>(Arc<T>);

impl<T: ExtensionConfigDiscoveryService> UnaryService<DiscoveryRequest> for Fetch<T> {
    type Response = DiscoveryResponse;
    type Future = BoxFuture<Response<DiscoveryResponse>, Status>;

    fn call(&mut self, request: Request<DiscoveryRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.fetch_extension_configs(request).await })
    }
}
