//! Retries as Envoy request headers: `x-envoy-max-retries`,
//! `x-envoy-retry-on`, `x-envoy-retry-grpc-on`,
//! `x-envoy-retriable-status-codes`, `x-envoy-upstream-rq-per-try-timeout-ms`.
//!
//! Follows Istio's `retry.ConvertPolicy`: `attempts: 0` disables retries;
//! without `retry_on` Istio's default
//! `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
//! with status 503 applies; numeric entries become retriable status codes
//! and add `retriable-status-codes`. Envoy reads gRPC conditions from a
//! separate header, so they are split out here. Unknown conditions are
//! refused (Istio passes them on and Envoy ignores them).

use serde::{Deserialize, Serialize};

use crate::duration::millis;
use crate::error::{join, quote, Failed, Path};
use crate::json::decode_struct;

const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];
const GRPC_RETRY_ON: &[&str] = &["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"];
const ISTIO_DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const ISTIO_DEFAULT_STATUS_CODES: &str = "503";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

decode_struct!(RetriesConfig { attempts: required, per_try_timeout: default, retry_on: default });

/// Header values, ready to set. `None` means "do not set the header".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeaders {
    /// `x-envoy-max-retries`.
    pub max_retries: String,
    /// `x-envoy-retry-on`.
    pub retry_on: Option<String>,
    /// `x-envoy-retry-grpc-on`.
    pub grpc_retry_on: Option<String>,
    /// `x-envoy-retriable-status-codes`.
    pub retriable_status_codes: Option<String>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`.
    pub per_try_timeout_ms: Option<String>,
}

impl RetryHeaders {
    pub(crate) fn compile(config: &RetriesConfig, path: &Path) -> Result<Self, Failed> {
        let per_try_timeout_ms = match &config.per_try_timeout {
            Some(text) => Some(millis(&path.field("per_try_timeout"), text, false)?.to_string()),
            None => None,
        };
        if config.attempts == 0 {
            // Istio: an explicit 0 disables retries for the route.
            return Ok(RetryHeaders {
                max_retries: "0".to_string(),
                retry_on: None,
                grpc_retry_on: None,
                retriable_status_codes: None,
                per_try_timeout_ms: None,
            });
        }
        let spec = config.retry_on.as_deref().unwrap_or(ISTIO_DEFAULT_RETRY_ON);
        let retry_on_path = path.field("retry_on");
        let mut http: Vec<&str> = Vec::new();
        let mut grpc: Vec<&str> = Vec::new();
        let mut codes: Vec<u16> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Ok(code) = part.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    return Err(retry_on_path.error(format!("status code {code} is not within 100..=599")));
                }
                if !codes.contains(&code) {
                    codes.push(code);
                }
            } else if HTTP_RETRY_ON.contains(&part) {
                if !http.contains(&part) {
                    http.push(part);
                }
            } else if GRPC_RETRY_ON.contains(&part) {
                if !grpc.contains(&part) {
                    grpc.push(part);
                }
            } else {
                return Err(retry_on_path.error(format!(
                    "unknown retry condition {} (Envoy knows {} and gRPC {})",
                    quote(part),
                    join(HTTP_RETRY_ON, ", "),
                    join(GRPC_RETRY_ON, ", ")
                )));
            }
        }
        if !codes.is_empty() && !http.contains(&"retriable-status-codes") {
            http.push("retriable-status-codes");
        }
        let mut retriable_status_codes = String::new();
        for code in &codes {
            if !retriable_status_codes.is_empty() {
                retriable_status_codes.push(',');
            }
            retriable_status_codes.push_str(&code.to_string());
        }
        if config.retry_on.is_none() {
            retriable_status_codes = ISTIO_DEFAULT_STATUS_CODES.to_string();
        }
        let joined = |list: Vec<&str>| (!list.is_empty()).then(|| join(&list, ","));
        Ok(RetryHeaders {
            max_retries: config.attempts.to_string(),
            retry_on: joined(http),
            grpc_retry_on: joined(grpc),
            retriable_status_codes: (!retriable_status_codes.is_empty()).then_some(retriable_status_codes),
            per_try_timeout_ms,
        })
    }
}
