//! xds-ext: Switchyard's extension config server.
//!
//! - [`config`]: Istio (and Switchyard) YAML in, per-workload filter
//!   configurations out; the offline verbs `validate`, `render`, `explain`.
//! - [`server`]: the ECDS gRPC server (state of the world and delta), per-proxy
//!   ACK/NACK tracking, directory watching, the admin HTTP endpoint, and the
//!   `serve` and `status` verbs.
//!
//! The two meet in [`workload`]: a [`workload::Workload`] (namespace + labels,
//! from the Envoy node) goes in, a [`workload::Rendered`] set of filter JSON
//! documents comes out.

pub mod config;
pub mod server;
pub mod workload;
