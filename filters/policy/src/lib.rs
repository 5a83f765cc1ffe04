//! Switchyard's policy library: the configuration of every filter (serde
//! types, validation) and the compiled matchers that decide per request.
//!
//! Pure Rust, no proxy-wasm: the filters (wasm32) and `xds-ext` (native)
//! share it, so a config `xds-ext` accepts is exactly one the filters
//! accept. Everything costly (regexes, cluster names, header values) is
//! computed in `from_json` / `from_config`; `decide` only reads.
//! Nothing here panics on any input.
//!
//! See `docs/policy.md` for the JSON reference and matching semantics.

pub mod chain;
mod cluster_name;
pub mod compare;
mod duration;
pub mod egress;
mod error;
pub mod fault;
mod header_ops;
mod http_match;
mod json;
pub mod mirror;
mod redirect;
mod request;
mod retry;
mod rewrite;
mod route_table;
pub mod routing;
mod string_match;
mod virtual_host;
mod weighted;

pub use cluster_name::{Destination, DEFAULT_CLUSTER_NAME_TEMPLATE};
pub use duration::parse_duration;
pub use error::ConfigError;
pub use fault::grpc_status_from_name;
pub use header_ops::{HeaderMutations, HeaderOps, HeaderOpsConfig, HeadersConfig};
pub use http_match::HttpMatchRequest;
pub use json::{KeyedList, CONFIG_VERSION, MAX_CONFIG_BYTES};
pub use mirror::shadow_authority;
pub use request::{HeaderSource, Request, StaticHeaders};
pub use retry::{RetriesConfig, RetryHeaders};
pub use route_table::MIN_INDEXED_RUN;
pub use string_match::StringMatch;
pub use virtual_host::{RuleId, VirtualHostConfig};
pub use weighted::{mix64, pick_weighted, sticky_hash, Percentage};
