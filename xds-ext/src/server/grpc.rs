//! The ECDS service on the wire: Envoy's `ExtensionConfigDiscoveryService`
//! methods routed to an [`ExtensionConfigDiscoveryService`] (our [`Ecds`]),
//! as the server envoy-types generates does, but with a codec whose buffers
//! start small.
//!
//! Why not the generated server: it hard-wires tonic's default codec, which
//! allocates 8 KiB for reading and 8 KiB for writing on every stream before
//! the first byte. An ECDS stream carries a request of a few hundred bytes
//! and a response of a few KiB now and then, and a proxy keeps one stream
//! per filter open for its lifetime: at 10 000 streams those idle buffers
//! alone were 160 MiB. Buffers here start at [`INITIAL_BUFFER`] and grow to
//! the largest message the stream has carried.
//!
//! [`Ecds`]: super::ecds::Ecds

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, SERVICE_NAME,
};
use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where each stream's read and write buffers start.
const INITIAL_BUFFER: usize = 512;
/// tonic's default: responses are handed to HTTP/2 once this much is encoded.
const YIELD_THRESHOLD: usize = 32 * 1024;

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
                let mut grpc = Grpc::new(SmallBuffers::default()).apply_max_message_size_config(limit, None);
                Ok(grpc.streaming(Sotw(inner), request).await)
            }),
            Some("/DeltaExtensionConfigs") => Box::pin(async move {
                let mut grpc = Grpc::new(SmallBuffers::default()).apply_max_message_size_config(limit, None);
                Ok(grpc.streaming(Delta(inner), request).await)
            }),
            Some("/FetchExtensionConfigs") => Box::pin(async move {
                let mut grpc = Grpc::new(SmallBuffers::default()).apply_max_message_size_config(limit, None);
                Ok(grpc.unary(Fetch(inner), request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("xds-ext serves only ECDS").into_http()) }),
        }
    }
}

struct Sotw<T>(Arc<T>);

impl<T: ExtensionConfigDiscoveryService> StreamingService<DiscoveryRequest> for Sotw<T> {
    type Response = DiscoveryResponse;
    type ResponseStream = T::StreamExtensionConfigsStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.stream_extension_configs(request).await })
    }
}

struct Delta<T>(Arc<T>);

impl<T: ExtensionConfigDiscoveryService> StreamingService<DeltaDiscoveryRequest> for Delta<T> {
    type Response = DeltaDiscoveryResponse;
    type ResponseStream = T::DeltaExtensionConfigsStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.delta_extension_configs(request).await })
    }
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

/// tonic's prost codec with [`INITIAL_BUFFER`]-sized buffers.
struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        ProstEncoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }
}
