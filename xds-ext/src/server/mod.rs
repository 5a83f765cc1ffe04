//! The ECDS server: per-workload resources pushed to Envoy over
//! `ExtensionConfigDiscoveryService`, with per-proxy ACK/NACK tracking, a
//! watched config directory, and an admin HTTP endpoint.
//!
//! - [`resources`]: filter JSON → `TypedExtensionConfig` (Wasm filter), content-versioned;
//! - [`state`]: one stream's sent/acked/NACKed bookkeeping (never re-sends a NACKed version);
//! - [`cache`]: renders per distinct workload and config generation, behind the [`cache::Render`] trait;
//! - [`ecds`]: the ECDS streams (state of the world, delta, fetch);
//! - [`grpc`]: that service on the wire, with small per-stream buffers;
//! - [`tls`]: optional TLS and mTLS on that port, its files checked at start;
//! - [`spiffe`]: with mTLS, each stream's node bound to its certificate's SPIFFE ID;
//! - [`watch`]: watches (inotify, stat scans) and debounces the config directory, publishes generations;
//! - [`small_map`]: the per-stream map of resources, small at 10 000 streams;
//! - [`registry`]: connected proxies and metrics; [`admin`]: their HTTP views;
//! - [`memory`]: glibc's malloc, told to give freed memory back;
//! - [`live`]: the config side ([`crate::config::ConfigStore`]) behind those traits;
//! - [`cli`]: `serve` and `status`.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod ecds;
pub mod grpc;
pub mod live;
pub mod memory;
pub mod registry;
pub mod resources;
pub mod small_map;
pub mod spiffe;
pub mod state;
pub mod tls;
pub mod watch;

/// One log line on stderr.
pub(crate) fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("xds-ext: {args}");
}
