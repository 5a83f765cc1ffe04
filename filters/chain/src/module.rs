//! What each shipped module contains. The stage flags are constants, so
//! every `if M::FAULT` folds away and a single-purpose module links only its
//! own stage.

use switchyard_policy::chain::CompiledChain;
use switchyard_policy::egress::CompiledEgress;
use switchyard_policy::fault::CompiledFault;
use switchyard_policy::mirror::CompiledMirror;
use switchyard_policy::routing::CompiledRouting;
use switchyard_policy::ConfigError;

pub trait Module: 'static {
    /// Names the filter in logs: `switchyard.<NAME>: ...`.
    const NAME: &'static str;
    const EGRESS: bool;
    const ROUTING: bool;
    const FAULT: bool;
    const MIRROR: bool;
    /// Whether root_id `egress-tls` makes a root the TLS network filter.
    const TLS: bool;

    /// The HTTP filter's plugin configuration → its stages.
    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError>;
}

/// `switchyard.wasm`: every stage, from a `switchyard_policy::chain` config.
pub struct Combined;

impl Module for Combined {
    const NAME: &'static str = "http";
    const EGRESS: bool = true;
    const ROUTING: bool = true;
    const FAULT: bool = true;
    const MIRROR: bool = true;
    const TLS: bool = true;

    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError> {
        CompiledChain::from_json(bytes)
    }
}

pub struct RoutingOnly;

impl Module for RoutingOnly {
    const NAME: &'static str = "routing";
    const EGRESS: bool = false;
    const ROUTING: bool = true;
    const FAULT: bool = false;
    const MIRROR: bool = false;
    const TLS: bool = false;

    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError> {
        Ok(CompiledChain { routing: Some(CompiledRouting::from_json(bytes)?), ..CompiledChain::default() })
    }
}

pub struct FaultOnly;

impl Module for FaultOnly {
    const NAME: &'static str = "fault";
    const EGRESS: bool = false;
    const ROUTING: bool = false;
    const FAULT: bool = true;
    const MIRROR: bool = false;
    const TLS: bool = false;

    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError> {
        Ok(CompiledChain { fault: Some(CompiledFault::from_json(bytes)?), ..CompiledChain::default() })
    }
}

pub struct MirrorOnly;

impl Module for MirrorOnly {
    const NAME: &'static str = "mirror";
    const EGRESS: bool = false;
    const ROUTING: bool = false;
    const FAULT: bool = false;
    const MIRROR: bool = true;
    const TLS: bool = false;

    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError> {
        Ok(CompiledChain { mirror: Some(CompiledMirror::from_json(bytes)?), ..CompiledChain::default() })
    }
}

/// `egress.wasm`: the HTTP egress filter, and the TLS one by root_id.
pub struct EgressOnly;

impl Module for EgressOnly {
    const NAME: &'static str = "egress";
    const EGRESS: bool = true;
    const ROUTING: bool = false;
    const FAULT: bool = false;
    const MIRROR: bool = false;
    const TLS: bool = true;

    fn compile(bytes: &[u8]) -> Result<CompiledChain, ConfigError> {
        Ok(CompiledChain { egress: Some(CompiledEgress::from_json(bytes)?), ..CompiledChain::default() })
    }
}
