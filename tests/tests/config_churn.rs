//! Config churn under load: 100 policy changes through a real xds-ext while
//! a steady request rate flows through an Envoy with every filter. Every
//! answer must come from a policy that was live while the request was in
//! flight, no switch may cost a request (no 5xx, no 500 `NFCF`), and
//! Envoy's memory must not grow with the pushes.
//!
//! The two policies alternate and differ in every filter, so each answer
//! says which one it came from: routing sends reviews to v1 or v2, the
//! fault probe is aborted with 418 or 429, the mirror copies reviews to v3
//! or to ratings, and egress lets `alpha.example.com` out or denies it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_tests::every_filter::{
    bounded, registry_only_letting_out, wasm_failure_stats, ChainSidecar, EVERY_FILTER,
};
use switchyard_tests::http_client;
use switchyard_tests::xds_ext::write;

const PUSHES: usize = 100;
/// Envoy's RSS after the last push may exceed its RSS after push
/// `RSS_BASE_PUSH` by at most this much.
const RSS_BASE_PUSH: usize = 10;
const RSS_SLACK_KIB: u64 = 5 * 1024;
/// Requests per second, open loop: one is sent every 1/RATE s however long
/// earlier ones take.
const RATE: u64 = 150;
/// Time between a push being applied and the next edit: requests in it see
/// one policy only.
const SETTLE: Duration = Duration::from_millis(150);
/// How long after Envoy counts a config applied its worker may still run
/// the previous one (the update reaches workers by a posted callback).
const GRACE: Duration = Duration::from_millis(50);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const POLICY_FILE: &str = "churn.yaml";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    A,
    B,
}

impl Policy {
    fn other(self) -> Policy {
        match self {
            Policy::A => Policy::B,
            Policy::B => Policy::A,
        }
    }

    fn reviews_subset(self) -> &'static str {
        match self {
            Policy::A => "v1",
            Policy::B => "v2",
        }
    }

    fn abort_status(self) -> u16 {
        match self {
            Policy::A => 418,
            Policy::B => 429,
        }
    }

    /// The mirror's destination (host, subset).
    fn shadow(self) -> (&'static str, &'static str) {
        match self {
            Policy::A => ("reviews", "v3"),
            Policy::B => ("ratings", "v1"),
        }
    }

    /// The external host the ServiceEntry lets out (REGISTRY_ONLY).
    fn external_host(self) -> &'static str {
        match self {
            Policy::A => "alpha.example.com",
            Policy::B => "beta.example.com",
        }
    }

    fn yaml(self) -> String {
        let (subset, status) = (self.reviews_subset(), self.abort_status());
        let (shadow_host, shadow_subset) = self.shadow();
        let egress = registry_only_letting_out("external", self.external_host());
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - name: fault-probe
    match:
    - headers:
        x-churn-fault:
          exact: \"1\"
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: {status}
    route:
    - destination:
        host: reviews
        subset: {subset}
  - name: all
    route:
    - destination:
        host: reviews
        subset: {subset}
    mirror:
      host: {shadow_host}
      subset: {shadow_subset}
---
{egress}"
        )
    }
}

/// What a request probes: each kind is decided by one filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// reviews, answered by the routing filter's subset (and mirrored).
    Route,
    /// reviews with the fault rule's header: aborted by the fault filter.
    Fault,
    /// `alpha.example.com`: let out or denied by the egress filter.
    Egress,
}

#[derive(Debug)]
struct Sample {
    seq: u64,
    kind: Kind,
    sent: Instant,
    done: Instant,
    status: u16,
    /// The policy the answer came from, or what was wrong with it.
    outcome: Result<Policy, String>,
}

/// A config as Envoy applied it: live from `written` until the next one is
/// applied (plus [`GRACE`]).
struct Push {
    policy: Policy,
    written: Instant,
    applied: Instant,
}

/// Is `policy` one that was live at some point in `[sent, done]`?
fn live_during(pushes: &[Push], policy: Policy, sent: Instant, done: Instant) -> bool {
    pushes.iter().enumerate().any(|(j, push)| {
        let until = pushes.get(j + 1).map(|next| next.applied + GRACE);
        push.policy == policy && push.written <= done && until.is_none_or(|until| until >= sent)
    })
}

async fn probe(client: &reqwest::Client, url: &str, seq: u64) -> Sample {
    let kind = [Kind::Route, Kind::Fault, Kind::Egress][(seq % 3) as usize];
    let request = match kind {
        Kind::Route => client.get(format!("{url}/reviews/{seq}")).header("host", "reviews:9080"),
        Kind::Fault => {
            client.get(format!("{url}/fault/{seq}")).header("host", "reviews:9080").header("x-churn-fault", "1")
        }
        Kind::Egress => client.get(format!("{url}/egress/{seq}")).header("host", Policy::A.external_host()),
    };
    let sent = Instant::now();
    let response = request.timeout(REQUEST_TIMEOUT).send().await;
    let (status, outcome) = match response {
        Err(e) => (0, Err(format!("no response: {e}"))),
        Ok(response) => {
            let status = response.status().as_u16();
            let header =
                |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let (version, service, egress) =
                (header("x-echo-version"), header("x-echo-service"), header("x-switchyard-egress"));
            let body = response.text().await.unwrap_or_default();
            let outcome = match (kind, status) {
                (Kind::Route, 200) if version == Policy::A.reviews_subset() && service == "reviews" => Ok(Policy::A),
                (Kind::Route, 200) if version == Policy::B.reviews_subset() && service == "reviews" => Ok(Policy::B),
                (Kind::Fault, s) if s == Policy::A.abort_status() && body == "fault filter abort" => Ok(Policy::A),
                (Kind::Fault, s) if s == Policy::B.abort_status() && body == "fault filter abort" => Ok(Policy::B),
                (Kind::Egress, 200) if service == "external" => Ok(Policy::A),
                (Kind::Egress, 502) if egress == "denied" => Ok(Policy::B),
                _ => Err(format!("{status} from {service:?} {version:?}: {body:.200}")),
            };
            (status, outcome)
        }
    };
    Sample { seq, kind, sent, done: Instant::now(), status, outcome }
}

/// Writes `policy` and waits until Envoy has applied it in every filter
/// (each filter's `update_success` moved on by one).
async fn push(sidecar: &ChainSidecar, policy: Policy) -> Push {
    let before = sidecar.updates_applied().await;
    let written = Instant::now();
    write(sidecar.config.path(), POLICY_FILE, &policy.yaml());
    let wanted = before + sidecar.resources.len() as u64;
    let deadline = written + Duration::from_secs(10);
    loop {
        let now = sidecar.updates_applied().await;
        if now >= wanted {
            assert_eq!(now, wanted, "one edit must be one update per filter\n{}", sidecar.logs());
            return Push { policy, written, applied: Instant::now() };
        }
        assert!(
            Instant::now() < deadline,
            "policy {policy:?} not applied within 10 s ({now}/{wanted})\n{}",
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The churn suite over the filters `resources` (ECDS resource names in
/// chain order): the single modules, or one module carrying every filter.
async fn policy_changes_under_load_lose_no_request_and_keep_memory_flat(resources: &[&str]) {
    let sidecar = ChainSidecar::start(resources, &[(POLICY_FILE, &Policy::A.yaml())]).await;
    let started = Instant::now();
    let mut pushes = vec![Push { policy: Policy::A, written: started, applied: started }];

    let samples = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let load = {
        let (samples, url) = (samples.clone(), sidecar.url());
        tokio::spawn(async move {
            let client = http_client();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut in_flight = Vec::new();
            for seq in 0.. {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                let (client, url, samples) = (client.clone(), url.clone(), samples.clone());
                in_flight.push(tokio::spawn(async move {
                    let sample = probe(&client, &url, seq).await;
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                }));
            }
            futures::future::join_all(in_flight).await;
        })
    };

    let mut rss_at_base = 0;
    tokio::time::sleep(SETTLE).await;
    for i in 1..=PUSHES {
        let next = pushes[i - 1].policy.other();
        pushes.push(push(&sidecar, next).await);
        tokio::time::sleep(SETTLE).await;
        if i == RSS_BASE_PUSH {
            rss_at_base = sidecar.envoy.rss_kib().unwrap_or_else(|| panic!("no RSS for envoy"));
        }
    }
    let rss_at_end = sidecar.envoy.rss_kib().unwrap_or_else(|| panic!("no RSS for envoy"));
    let _ = stop_tx.send(());
    bounded("the load's last requests", REQUEST_TIMEOUT * 2, load).await.unwrap_or_else(|e| panic!("{e}"));
    let churn_took = started.elapsed();

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| match &s.outcome {
            Ok(policy) => !live_during(&pushes, *policy, s.sent, s.done),
            Err(_) => true,
        })
        .collect();
    let server_errors: Vec<&Sample> =
        samples.iter().filter(|s| s.status >= 500 && !(s.kind == Kind::Egress && s.outcome.is_ok())).collect();
    assert!(
        server_errors.is_empty(),
        "{} answers were 5xx (not egress denials): {server_errors:#?}",
        server_errors.len()
    );
    assert!(wrong.is_empty(), "{} of {} answers from no live policy: {wrong:#?}", wrong.len(), samples.len());
    let per_policy = |kind: Kind, policy: Policy| {
        samples.iter().filter(|s| s.kind == kind && s.outcome.as_ref().ok() == Some(&policy)).count()
    };
    for kind in [Kind::Route, Kind::Fault, Kind::Egress] {
        assert!(
            per_policy(kind, Policy::A) > PUSHES && per_policy(kind, Policy::B) > PUSHES,
            "{kind:?}: every policy must be seen many times (A {}, B {})",
            per_policy(kind, Policy::A),
            per_policy(kind, Policy::B)
        );
    }

    // Each reviews request was mirrored once, by a policy live while it was
    // in flight: its path reached v3 (A) or ratings (B), never both.
    let routed: Vec<&Sample> = samples.iter().filter(|s| s.kind == Kind::Route).collect();
    let shadows = |echo: &switchyard_tests::EchoServer| -> HashMap<String, usize> {
        let mut by_path = HashMap::new();
        for request in echo.received() {
            *by_path.entry(request.path).or_insert(0) += 1;
        }
        by_path
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (on_v3, on_ratings) = loop {
        let (v3, ratings) = (shadows(&sidecar.upstreams.reviews_v3), shadows(&sidecar.upstreams.ratings_v1));
        if v3.values().sum::<usize>() + ratings.values().sum::<usize>() >= routed.len() || Instant::now() > deadline {
            break (v3, ratings);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut mirror_wrong = Vec::new();
    for sample in &routed {
        let path = format!("/reviews/{}", sample.seq);
        let policy = match (on_v3.get(&path).copied().unwrap_or(0), on_ratings.get(&path).copied().unwrap_or(0)) {
            (1, 0) => Policy::A,
            (0, 1) => Policy::B,
            (v3, ratings) => {
                mirror_wrong.push(format!("{path}: {v3} shadow(s) on reviews v3, {ratings} on ratings"));
                continue;
            }
        };
        if !live_during(&pushes, policy, sample.sent, sample.done) {
            mirror_wrong.push(format!("{path}: mirrored by {policy:?}, not live during {sample:?}"));
        }
    }
    assert!(mirror_wrong.is_empty(), "{} of {} mirrors wrong: {mirror_wrong:#?}", mirror_wrong.len(), routed.len());

    assert_eq!(
        wasm_failure_stats(&sidecar.envoy).await.iter().filter(|(_, v)| *v > 0).count(),
        0,
        "{:?}",
        wasm_failure_stats(&sidecar.envoy).await
    );
    let grown = rss_at_end.saturating_sub(rss_at_base);
    eprintln!(
        "churn over {resources:?}: {PUSHES} pushes in {churn_took:?}, {} requests ({} mirrored), none failed; \
         envoy RSS {rss_at_base} KiB after {RSS_BASE_PUSH} pushes, {rss_at_end} KiB after {PUSHES} (+{grown} KiB)",
        samples.len(),
        routed.len()
    );
    assert!(
        grown <= RSS_SLACK_KIB,
        "envoy RSS grew {grown} KiB from push {RSS_BASE_PUSH} to push {PUSHES} (allowed {RSS_SLACK_KIB} KiB)"
    );
}

#[tokio::test]
async fn a_hundred_policy_changes_under_load_through_the_single_filter_modules() {
    policy_changes_under_load_lose_no_request_and_keep_memory_flat(EVERY_FILTER).await;
}

#[tokio::test]
async fn a_hundred_policy_changes_under_load_through_the_combined_module() {
    policy_changes_under_load_lose_no_request_and_keep_memory_flat(&["switchyard.http"]).await;
}
