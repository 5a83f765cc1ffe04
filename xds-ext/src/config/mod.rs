//! Istio (and Switchyard) YAML in, per-workload filter configurations out.
//!
//! - [`ConfigStore`]: the documents in force (loaded from a directory with
//!   the last-good rule, or from paths for the CLI) and
//!   [`ConfigStore::render`], what a [`Workload`](crate::workload::Workload)
//!   receives;
//! - [`Problem`]: what is wrong with the input, with file, line, document
//!   and field;
//! - [`cli`]: the `validate`, `render`, `explain` and
//!   `validate-filter-config` verbs.
//!
//! The input kinds, rendering rules and the last-good rule are described in
//! docs/xds-ext.md.

pub mod cli;
mod decode;
pub mod dir;
pub mod explain;
pub mod manifests;
pub mod model;
mod problem;
mod reader;
pub mod render;
mod store;
mod tree;
mod yaml;

pub use problem::{Problem, Severity};
pub use render::Configs;
pub use store::{ConfigStore, ReloadReport, MAX_FILE_BYTES};
pub use yaml::to_yaml;
