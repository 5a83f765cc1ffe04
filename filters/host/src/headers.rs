//! Request headers as the matchers see them: the whole map fetched once per
//! request, on first use. One host call (and one copy into the module)
//! replaces a call per header the matchers ask for, and tells for free
//! whether a header the filter must strip is there at all, so absent ones
//! cost nothing.

use std::cell::OnceCell;

use switchyard_policy::{HeaderSource, StaticHeaders};

use crate::calls;

#[derive(Default)]
pub struct RequestHeaders {
    map: OnceCell<StaticHeaders>,
}

impl RequestHeaders {
    fn map(&self) -> &StaticHeaders {
        self.map.get_or_init(|| {
            StaticHeaders(calls::request_headers().into_iter().map(|(name, value)| (name, lossy(value))).collect())
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map().0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Every header as the request arrived, for a shadow copy.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.map().0
    }
}

/// Values that are not UTF-8 (HTTP allows obs-text bytes) are converted
/// lossily: matchers compare text, and a panic on a client's bytes is not an
/// option.
fn lossy(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl HeaderSource for RequestHeaders {
    fn header(&self, name: &str) -> Option<String> {
        self.map().header(name)
    }

    /// Istio's port for `match.port`: the `:port` of the virtual host istiod
    /// names `host:port` (the service port on a sidecar, the Gateway server
    /// port on a gateway, where the pod listens on its target port, 8080 for
    /// 80); else, outside an Istio-shaped route table, the port the
    /// connection was made to.
    fn port(&self) -> Option<u16> {
        let vhost = calls::property(&["xds", "virtual_host_name"]);
        let from_vhost = vhost.as_deref().and_then(|name| {
            let name = std::str::from_utf8(name).ok()?;
            name.rsplit_once(':')?.1.parse::<u16>().ok()
        });
        from_vhost.or_else(destination_port)
    }
}

/// `destination.port`, an int64, little-endian.
pub fn destination_port() -> Option<u16> {
    let bytes = calls::property(&["destination", "port"])?;
    let bytes: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    u16::try_from(i64::from_le_bytes(bytes)).ok()
}
