//! Mirror comparison in a real Envoy: each shadow's answer compared with its
//! primary's (status, chosen headers, the body up to a bound), counted per
//! rule and mirror, mismatches logged without secrets; and shadows bounded
//! (in-flight cap, timeout) so a shadow that never answers costs the
//! primary nothing and Envoy no memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    admin, bootstrap, ecds_http_filter, http_listener, istio_node, module_path, route_config, route_to_cluster,
    static_cluster, wasm_http_filter,
};
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use switchyard_tests::{http_client, EchoOptions, EchoServer, Envoy};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const COUNTER: &str = "wasmcustom.switchyard_mirror";

async fn echo(version: &str, status: Option<u16>, body: &str) -> EchoServer {
    let options = EchoOptions {
        service: "httpbin".into(),
        version: version.into(),
        status,
        body: Some(body.into()),
        ..Default::default()
    };
    EchoServer::bind_with("127.0.0.1:0", options).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A mirror filter in front of `httpbin-v1`; `shadows` are the other
/// clusters (`httpbin-<subset>`) by subset and port.
async fn mirror_envoy(config: Value, primary_port: u16, shadows: &[(&str, u16)]) -> Envoy {
    let module = module_path("mirror").unwrap_or_else(|e| panic!("{e}"));
    let filter = wasm_http_filter("switchyard.mirror", &module, "mirror", "switchyard-mirror", &config.to_string());
    let listener = http_listener("main", route_config(vec![route_to_cluster("httpbin-v1")]), vec![filter]);
    let mut clusters = vec![static_cluster("httpbin-v1", primary_port, false)];
    clusters.extend(shadows.iter().map(|(subset, port)| static_cluster(&format!("httpbin-{subset}"), *port, false)));
    Envoy::builder(bootstrap(vec![listener], clusters)).start().await.unwrap_or_else(|e| panic!("{e}"))
}

fn rule(name: &str, subset: &str, compare: Value) -> Value {
    json!({"name": name, "match": [{"uri": {"prefix": format!("/{name}")}}],
           "mirrors": [{"destination": {"host": "httpbin", "subset": subset}, "compare": compare}]})
}

fn config(routes: Vec<Value>) -> Value {
    json!({"version": 1, "cluster_name_template": "httpbin-{subset}",
           "virtual_hosts": [{"name": "httpbin", "domains": ["httpbin"], "routes": routes}]})
}

async fn get(envoy: &Envoy, client: &reqwest::Client, host: &str, path: &str) -> u16 {
    let reply = client
        .get(format!("{}{path}", envoy.listener_url("main")))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = reply.status().as_u16();
    let _ = reply.bytes().await;
    status
}

/// `switchyard_mirror_<what>_total.httpbin.<rule>.httpbin-<subset>`.
fn per_mirror(stats: &HashMap<String, u64>, what: &str, rule: &str, subset: &str) -> u64 {
    stats.get(&format!("{COUNTER}_{what}_total.httpbin.{rule}.httpbin-{subset}")).copied().unwrap_or(0)
}

/// Polls until `done(stats)`; panics with the stats after 5 s.
async fn wait_for_stats(envoy: &Envoy, done: impl Fn(&HashMap<String, u64>) -> bool) -> HashMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = envoy.stats().await;
        if done(&stats) {
            return stats;
        }
        if Instant::now() > deadline {
            let ours: Vec<_> = stats.iter().filter(|(k, _)| k.starts_with(COUNTER)).collect();
            panic!("mirror stats not reached within 5 s: {ours:#?}\n{}", envoy.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The v1 → v2 flow: a v2 that fails, one that answers alike, one whose
/// body differs only after its first 64 bytes, and headers that differ.
#[tokio::test]
async fn shadows_are_compared_with_their_primaries_and_mismatches_logged_without_secrets() {
    let start = "a".repeat(64);
    let (body_one, body_two) = (format!("{start}-then-one"), format!("{start}-then-two"));
    let v1 = echo("v1-token-AAA", None, &body_one).await;
    let same = echo("v2-token-BBB", None, &body_one).await;
    let fail = echo("v2-token-BBB", Some(500), &body_one).await;
    let tail = echo("v2-token-BBB", None, &body_two).await;
    let config = config(vec![
        rule("status", "fail", json!({})),
        rule("same", "same", json!({"headers": ["content-type"], "body_bytes": 4096})),
        rule("beyond", "tail", json!({"body_bytes": 64})),
        rule("within", "tail", json!({"body_bytes": 4096})),
        rule("header", "same", json!({"headers": ["x-echo-version", "content-type"], "log_headers": ["content-type"]})),
    ]);
    let envoy =
        mirror_envoy(config, v1.port(), &[("fail", fail.port()), ("same", same.port()), ("tail", tail.port())]).await;

    const N: u64 = 5;
    let client = http_client();
    for i in 0..N {
        for rule in ["status", "same", "beyond", "within", "header"] {
            let path = format!("/{rule}/item-{i}?api_key=SECRET-QUERY");
            assert_eq!(get(&envoy, &client, "httpbin", &path).await, 200, "the primary is v1's answer");
        }
    }

    let cases = [
        ("status", "fail", "mismatched_status"),
        ("same", "same", "matched"),
        ("beyond", "tail", "matched"),
        ("within", "tail", "mismatched_body"),
        ("header", "same", "mismatched_header"),
    ];
    let stats = wait_for_stats(&envoy, |s| cases.iter().all(|(r, m, _)| per_mirror(s, "compared", r, m) >= N)).await;
    for (rule, subset, outcome) in cases {
        for what in ["compared", outcome] {
            assert_eq!(per_mirror(&stats, what, rule, subset), N, "{rule}: {what}");
        }
        let others = ["matched", "mismatched_status", "mismatched_header", "mismatched_body"];
        for other in others.iter().filter(|o| **o != outcome) {
            assert_eq!(per_mirror(&stats, other, rule, subset), 0, "{rule}: {other}");
        }
        for reason in ["timeout", "failed", "over_bound", "primary_incomplete"] {
            assert_eq!(per_mirror(&stats, &format!("not_compared_{reason}"), rule, subset), 0, "{rule}: {reason}");
        }
    }
    assert_eq!(stats.get(&format!("{COUNTER}_mirrored_total")).copied(), Some(5 * N));

    let log = envoy.log();
    let lines = |rule: &str| -> Vec<&str> {
        log.lines().filter(|l| l.contains(&format!("switchyard.mirror: mismatch httpbin/{rule} -> "))).collect()
    };
    let status = lines("status");
    assert_eq!(status.len(), N as usize, "{log}");
    assert!(
        status[0].contains(
            "mismatch httpbin/status -> httpbin-fail: /status/item-0?…: primary 200, shadow 500; differs: status"
        ),
        "{}",
        status[0]
    );
    assert_eq!(lines("within").len(), N as usize);
    assert!(lines("within")[0].ends_with("primary 200, shadow 200; differs: body (first 4096 bytes)"), "{log}");
    assert!(lines("header")[0].ends_with("differs: header x-echo-version"), "{log}");
    assert!(lines("same").is_empty() && lines("beyond").is_empty(), "{log}");
    for secret in ["SECRET-QUERY", "token-AAA", "token-BBB", "then-one", "then-two"] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

/// A shadow upstream that accepts connections and never answers.
async fn silent_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

fn rss_kib(envoy: &Envoy) -> u64 {
    let pid = envoy.pid().unwrap_or_else(|| panic!("envoy is not running"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("{e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// `n` GETs to `host`, `concurrency` at a time; each one's latency.
async fn load(envoy: &Envoy, host: &str, n: usize, concurrency: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let url = envoy.listener_url("main");
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, url, host) = (Arc::clone(&next), url.clone(), host.to_owned());
            tokio::spawn(async move {
                let client = http_client();
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let started = Instant::now();
                    let reply = client.get(format!("{url}/get")).header("host", &host).send().await;
                    let reply = reply.unwrap_or_else(|e| panic!("GET {host}: {e}"));
                    assert_eq!(reply.status().as_u16(), 200);
                    let _ = reply.bytes().await;
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test]
async fn a_shadow_that_never_answers_is_capped_in_flight_costs_the_primary_nothing_and_envoy_no_memory() {
    let v1 = EchoServer::start("httpbin", "v1").await;
    let (silent_port, _accepted) = silent_upstream().await;
    // `httpbin` is mirrored (and compared) to the silent upstream, at most
    // 10 in flight, each given up after 1 s; `plain` is not mirrored.
    let config = json!({"version": 1, "cluster_name_template": "httpbin-{subset}",
        "virtual_hosts": [{"name": "httpbin", "domains": ["httpbin"], "routes": [{"name": "all", "mirrors": [
            {"destination": {"host": "httpbin", "subset": "silent"}, "timeout": "1s", "max_in_flight": 10,
             "compare": {"body_bytes": 1024}}]}]}]});
    let envoy = mirror_envoy(config, v1.port(), &[("silent", silent_port)]).await;
    const CONCURRENCY: usize = 8;

    // Warm up both hosts (connections, V8, the allocator's arenas).
    load(&envoy, "plain", 500, CONCURRENCY).await;
    load(&envoy, "httpbin", 1_000, CONCURRENCY).await;
    let rss_before = rss_kib(&envoy);

    // 10 000 mirrored requests in batches, the unmirrored ones in between as
    // the control; Envoy's count of shadows in flight sampled after each.
    let started = Instant::now();
    let (mut mirrored, mut plain) = (Vec::new(), Vec::new());
    let mut most_in_flight = 0;
    for _ in 0..10 {
        plain.extend(load(&envoy, "plain", 200, CONCURRENCY).await);
        mirrored.extend(load(&envoy, "httpbin", 1_000, CONCURRENCY).await);
        let active = envoy.stat("cluster.httpbin-silent.upstream_rq_active").await.unwrap_or(0);
        most_in_flight = most_in_flight.max(active);
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(&envoy);

    let (p99_mirrored, p99_plain) = (p99(&mut mirrored), p99(&mut plain));
    assert!(
        p99_mirrored <= p99_plain * 2 + Duration::from_millis(5),
        "p99 with a silent shadow {p99_mirrored:?}, without mirroring {p99_plain:?}"
    );
    assert!(most_in_flight <= 10, "{most_in_flight} shadows in flight at once, the cap is 10");
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 4 * 1024, "Envoy's RSS grew {growth} KiB over 10 000 requests ({rss_before} → {rss_after} KiB)");

    // Every shadow not sent was skipped and counted; the sent ones (10 per
    // timeout at most) time out and are counted as not compared.
    let total = 11_000;
    let stats = wait_for_stats(&envoy, |s| {
        per_mirror(s, "not_compared_timeout", "all", "silent")
            == s.get(&format!("{COUNTER}_mirrored_total")).copied().unwrap_or(0)
    })
    .await;
    let sent = stats[&format!("{COUNTER}_mirrored_total")];
    let skipped = stats[&format!("{COUNTER}_in_flight_overflow_total")];
    assert_eq!(sent + skipped, total, "{stats:?}");
    let most_sent = 10 * (elapsed.as_secs() + 3);
    assert!(sent >= 10 && sent <= most_sent, "{sent} shadows sent in {elapsed:?}, at most 10 per second");
    assert_eq!(per_mirror(&stats, "not_compared_over_bound", "all", "silent"), skipped);
    assert_eq!(per_mirror(&stats, "compared", "all", "silent"), 0);
    eprintln!(
        "p99 mirrored {p99_mirrored:?} / plain {p99_plain:?}; {sent} sent, {skipped} skipped in {elapsed:?}; \
         RSS {rss_before} → {rss_after} KiB"
    );
}

/// The rollout flow from YAML: `examples/bookinfo`'s TrafficPolicy, served
/// by a real `xds-ext serve` over ECDS to the mirror filter of an Envoy
/// that presents itself as a sidecar of `default`; a v2 that answers 500
/// is counted and logged under the rule and mirror xds-ext named.
#[tokio::test]
async fn a_traffic_policy_from_xds_ext_compares_httpbin_v2_with_v1() {
    const HTTPBIN: &str = "httpbin.default.svc.cluster.local";
    let v1 = echo("v1", None, "same body").await;
    let v2 = echo("v2", Some(500), "same body").await;
    let files =
        [("httpbin.yaml", bookinfo("httpbin.yaml")), ("compare.yaml", bookinfo("traffic-policy-httpbin-compare.yaml"))];
    let named: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
    let config = XdsExt::config_dir(&named);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;

    let (v1_cluster, v2_cluster) = (format!("outbound|8000|v1|{HTTPBIN}"), format!("outbound|8000|v2|{HTTPBIN}"));
    let listener = http_listener(
        "main",
        route_config(vec![route_to_cluster(&v1_cluster)]),
        vec![ecds_http_filter("switchyard.mirror", "xds-ext")],
    );
    let clusters = vec![
        static_cluster("xds-ext", xds.grpc_port, true),
        static_cluster(&v1_cluster, v1.port(), false),
        static_cluster(&v2_cluster, v2.port(), false),
    ];
    let sidecar = json!({
        "node": istio_node("sleep-1", "default", &[("app", "sleep")]),
        "admin": admin(),
        "static_resources": {"listeners": [listener], "clusters": clusters},
    });
    let envoy = match Envoy::start(sidecar).await {
        Ok(envoy) => envoy,
        Err(e) => panic!("{e}\n--- xds-ext log ---\n{}", xds.log()),
    };
    xds.wait_status("sleep-1", "switchyard.mirror", "SYNCED").await;

    const N: u64 = 4;
    let client = http_client();
    for i in 0..N {
        assert_eq!(get(&envoy, &client, "httpbin:8000", &format!("/anything/{i}")).await, 200);
    }
    let counter = |what: &str| format!("{COUNTER}_{what}_total.{HTTPBIN}.v1-compared-with-v2.{v2_cluster}");
    let stats = wait_for_stats(&envoy, |s| s.get(&counter("compared")).copied().unwrap_or(0) >= N).await;
    assert_eq!(stats.get(&counter("mismatched_status")).copied(), Some(N), "{stats:?}");
    assert_eq!(stats.get(&counter("matched")).copied(), Some(0));
    let log = envoy.log();
    let line = format!(
        "switchyard.mirror: mismatch {HTTPBIN}/v1-compared-with-v2 -> {v2_cluster}: /anything/0: primary 200, \
         shadow 500; differs: status"
    );
    assert!(log.contains(&line), "{line}\n{log}");
}
