//! The request as the matchers see it: headers fetched lazily, once each.

/// Where request headers come from. The filters implement this over
/// proxy-wasm's `get_http_request_header`; tests use a map.
///
/// Names are lowercase; the pseudo-headers `:authority`, `:path`, `:method`
/// and `:scheme` are included. When a header appears several times, return
/// the values joined with `,` (what Envoy's header matcher sees).
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<String>;
}

/// One request being matched. Every header is fetched from the source at
/// most once, and only when a matcher needs it: a host call costs far more
/// than a lookup in this small cache, and most requests are decided after
/// reading two or three headers.
pub struct Request<'s, S: HeaderSource + ?Sized> {
    source: &'s S,
    port: Option<u16>,
    // Few distinct headers are read per request, so a vector beats a map.
    fetched: Vec<(Box<str>, Option<String>)>,
}

impl<'s, S: HeaderSource + ?Sized> Request<'s, S> {
    pub fn new(source: &'s S) -> Self {
        Request { source, port: None, fetched: Vec::new() }
    }

    /// The destination (listener) port, for match blocks that set `port`.
    /// Without it such blocks never match.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn port(&self) -> Option<u16> {
        self.port
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
