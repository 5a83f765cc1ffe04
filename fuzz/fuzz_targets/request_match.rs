//! Request matching on arbitrary header sets, paths and query strings: the
//! per-request code of every filter (`decide`), against representative
//! configs compiled once (fuzz/configs/*.json, which use every matcher kind,
//! the exact-header index, per-port virtual hosts, wildcards, sticky
//! weights, rewrites, redirects and direct responses).
//!
//! Beyond "never panics": a decision is a pure function of the request and
//! the draw, each header is fetched from the source at most once, and what a
//! decision points at (cluster, header operations) exists.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_policy::egress::CompiledEgress;
use switchyard_policy::fault::CompiledFault;
use switchyard_policy::mirror::CompiledMirror;
use switchyard_policy::routing::{CompiledRouting, RedirectTarget, RoutingDecision};
use switchyard_policy::{shadow_authority, HeaderSource, Request, StaticHeaders};

struct Configs {
    routing: CompiledRouting,
    fault: CompiledFault,
    mirror: CompiledMirror,
    egress: CompiledEgress,
}

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let compile = |name: &str, result: Result<(), String>| {
            if let Err(e) = result {
                panic!("fuzz/configs/{name}.json is refused: {e}");
            }
        };
        let routing = CompiledRouting::from_json(include_bytes!("../configs/routing.json"));
        let fault = CompiledFault::from_json(include_bytes!("../configs/fault.json"));
        let mirror = CompiledMirror::from_json(include_bytes!("../configs/mirror.json"));
        let egress = CompiledEgress::from_json(include_bytes!("../configs/egress.json"));
        compile("routing", routing.as_ref().map(drop).map_err(ToString::to_string));
        compile("fault", fault.as_ref().map(drop).map_err(ToString::to_string));
        compile("mirror", mirror.as_ref().map(drop).map_err(ToString::to_string));
        compile("egress", egress.as_ref().map(drop).map_err(ToString::to_string));
        match (routing, fault, mirror, egress) {
            (Ok(routing), Ok(fault), Ok(mirror), Ok(egress)) => Configs { routing, fault, mirror, egress },
            _ => unreachable!("checked above"),
        }
    })
}

/// Names and values the configs match on, so the fuzzer reaches the
/// matchers' interesting branches without guessing them byte by byte.
const NAMES: &[&str] = &[
    ":authority",
    ":path",
    ":method",
    ":scheme",
    "end-user",
    "x-test",
    "x-present",
    "x-prefix",
    "x-forwarded-proto",
    "x-user",
    "cookie",
    "x-mirror",
    "x-switchyard-cluster",
    "x-envoy-upstream-rq-timeout-ms",
];
const AUTHORITIES: &[&str] = &[
    "reviews",
    "reviews:9080",
    "REVIEWS.default.svc.cluster.local",
    "ratings",
    "ratings:8080",
    "a.ratings.svc",
    "api.example.com:443",
    "x.example.com",
    "api.anything",
    "[::1]",
    "[::1]:80",
    "httpbin:8000",
    "10.0.0.1",
    "[2001:db8::1]:8080",
    "a.b.googleapis.com",
];

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Other(String),
}

impl Text {
    fn resolve(&self, known: &[&str]) -> String {
        match self {
            Text::Known(i) => known[usize::from(*i) % known.len()].to_owned(),
            Text::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    authority: Option<Text>,
    path: Option<String>,
    method: Option<String>,
    headers: Vec<(Text, String)>,
    port: Option<u16>,
    random: u64,
    default_port: u16,
    sni: Option<Text>,
    sni_port: Option<u16>,
}

/// The request's headers, recording every name asked for.
struct Counted<'h> {
    headers: &'h StaticHeaders,
    port: Option<u16>,
    asked: RefCell<Vec<String>>,
}

impl HeaderSource for Counted<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().push(name.to_owned());
        self.headers.header(name)
    }

    fn port(&self) -> Option<u16> {
        self.port
    }
}

impl Counted<'_> {
    fn assert_each_header_fetched_once(&self, filter: &str) {
        let mut asked = self.asked.take();
        let total = asked.len();
        asked.sort();
        asked.dedup();
        assert_eq!(asked.len(), total, "{filter}: a header was fetched from the source twice");
    }
}

fuzz_target!(|input: Input| {
    let configs = configs();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(authority) = &input.authority {
        pairs.push((":authority".into(), authority.resolve(AUTHORITIES)));
    }
    if let Some(path) = &input.path {
        pairs.push((":path".into(), path.clone()));
    }
    if let Some(method) = &input.method {
        pairs.push((":method".into(), method.clone()));
    }
    pairs.extend(input.headers.iter().map(|(name, value)| (name.resolve(NAMES), value.clone())));
    let headers = StaticHeaders::new(pairs);
    let source = || Counted { headers: &headers, port: input.port, asked: RefCell::new(Vec::new()) };

    let first = source();
    let decision = configs.routing.decide(&mut Request::new(&first), input.random);
    first.assert_each_header_fetched_once("routing");
    let again = source();
    assert_eq!(configs.routing.decide(&mut Request::new(&again), input.random), decision, "routing is not pure");
    check_routing(&configs.routing, &decision, &headers);

    let fault = source();
    let decided = configs.fault.decide(&mut Request::new(&fault), input.random);
    fault.assert_each_header_fetched_once("fault");
    assert_eq!(configs.fault.decide(&mut Request::new(&source()), input.random), decided, "fault is not pure");

    let mirror = source();
    let decided = configs.mirror.decide(&mut Request::new(&mirror), input.random);
    mirror.assert_each_header_fetched_once("mirror");
    assert_eq!(configs.mirror.decide(&mut Request::new(&source()), input.random), decided, "mirror is not pure");

    let authority = headers.header(":authority").unwrap_or_default();
    let _ = shadow_authority(&authority);
    let _ = configs.egress.decide_authority(&authority);
    let _ = configs.egress.decide_authority_with_default_port(&authority, input.default_port);
    let sni = input.sni.as_ref().map(|s| s.resolve(AUTHORITIES));
    let _ = configs.egress.decide_sni(sni.as_deref(), input.sni_port);
});

/// What a decision points at exists, and applying it does not panic.
fn check_routing(config: &CompiledRouting, decision: &RoutingDecision<'_>, headers: &StaticHeaders) {
    let header = |name: &str| headers.header(name).unwrap_or_default();
    let stripped: Vec<&str> = config.client_headers_to_strip(decision).collect();
    assert!(stripped.contains(&config.cluster_header()), "the cluster header is always stripped");
    match decision {
        RoutingDecision::Route(route) => {
            assert_eq!(config.clusters().get(route.cluster_index).map(String::as_str), Some(route.cluster));
            assert!(config.header_mutations(route.rule_index, route.destination_index).is_some());
            assert!(config.rule_names().get(route.rule_index).is_some());
            if let Some(rewrite) = &route.uri_rewrite {
                let _ = rewrite.apply(&header(":path"));
            }
        }
        RoutingDecision::Redirect(redirect) => {
            let (scheme, proto, authority, path) =
                (header(":scheme"), header("x-forwarded-proto"), header(":authority"), header(":path"));
            let target =
                RedirectTarget { scheme: &scheme, forwarded_proto: &proto, authority: &authority, path: &path };
            let _ = redirect.location(&target);
        }
        RoutingDecision::DirectResponse(direct) => assert!((200..=599).contains(&direct.status)),
        RoutingDecision::Unmanaged | RoutingDecision::NoRoute { .. } => {}
    }
}
