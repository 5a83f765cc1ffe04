//! The request as the matchers see it: headers fetched lazily, once each.

/// Where request headers come from. The filters implement this over
/// proxy-wasm's `get_http_request_header`; tests use a map.
///
/// Names are lowercase; the pseudo-headers `:authority`, `:path`, `:method`
/// and `:scheme` are included. When a header appears several times, return
/// the values joined with `,` (what Envoy's header matcher sees).
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<String>;

    /// The port a `match.port` is compared with, asked only when a matcher
    /// sets one. In Istio that is the port of the service (sidecar) or of
    /// the Gateway server (gateway), not necessarily the one the proxy
    /// listens on. `None`: such matchers never match.
    fn port(&self) -> Option<u16> {
        None
    }
}

/// One request being matched. Every header is fetched from the source at
/// most once, and only when a matcher needs it: a host call costs far more
/// than a lookup in this small cache, and most requests are decided after
/// reading two or three headers.
pub struct Request<'s, S: HeaderSource + ?Sized> {
    source: &'s S,
    /// `None` until asked (or given by `with_port`).
    port: Option<Option<u16>>,
    // Few distinct headers are read per request, so a vector beats a map.
    fetched: Vec<(Box<str>, Option<String>)>,
}

impl<'s, S: HeaderSource + ?Sized> Request<'s, S> {
    pub fn new(source: &'s S) -> Self {
        Request { source, port: None, fetched: Vec::new() }
    }

    /// The port for match blocks that set `port`, instead of asking the
    /// source (`HeaderSource::port`).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(Some(port));
        self
    }

    /// The port, from `with_port` or else the source, asked at most once.
    pub fn port(&mut self) -> Option<u16> {
        *self.port.get_or_insert_with(|| self.source.port())
    }

    /// The header's value; `name` must be lowercase.
    pub fn header(&mut self, name: &str) -> Option<&str> {
        let index = match self.fetched.iter().position(|(n, _)| &**n == name) {
            Some(index) => index,
            None => {
                let value = self.source.header(name);
                self.fetched.push((name.into(), value));
                self.fetched.len() - 1
            }
        };
        self.fetched.get(index).and_then(|(_, v)| v.as_deref())
    }

    /// How many headers were fetched from the source so far.
    pub fn fetched_count(&self) -> usize {
        self.fetched.len()
    }
}

/// A `HeaderSource` over a list of pairs, for tests, benches and tools
/// (`xds-ext explain`). Names are matched case-insensitively; repeated names
/// are joined with `,` as Envoy does.
#[derive(Debug, Clone, Default)]
pub struct StaticHeaders(pub Vec<(String, String)>);

impl StaticHeaders {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        StaticHeaders(pairs.into_iter().map(|(k, v)| (k.into().to_ascii_lowercase(), v.into())).collect())
    }
}

impl HeaderSource for StaticHeaders {
    fn header(&self, name: &str) -> Option<String> {
        let mut values = self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = values.next()?.1.clone();
        Some(values.fold(first, |mut joined, (_, v)| {
            joined.push(',');
            joined.push_str(v);
            joined
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A source that knows its port and counts how often it is asked.
    struct Ported {
        port: Option<u16>,
        asked: Cell<u32>,
    }

    impl HeaderSource for Ported {
        fn header(&self, _name: &str) -> Option<String> {
            None
        }

        fn port(&self) -> Option<u16> {
            self.asked.set(self.asked.get() + 1);
            self.port
        }
    }

    #[test]
    fn the_port_comes_from_the_source_once_and_with_port_overrides_it() {
        let source = Ported { port: Some(80), asked: Cell::new(0) };
        let mut req = Request::new(&source);
        assert_eq!((req.port(), req.port()), (Some(80), Some(80)));
        assert_eq!(source.asked.get(), 1, "asked once");
        let mut given = Request::new(&source).with_port(9080);
        assert_eq!(given.port(), Some(9080));
        assert_eq!(source.asked.get(), 1, "not asked when given");
        let unknown = Ported { port: None, asked: Cell::new(0) };
        assert_eq!(Request::new(&unknown).port(), None);
    }
}
