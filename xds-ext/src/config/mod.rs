//! Istio (and Switchyard) YAML in, per-workload filter configurations out.

pub mod cli;
