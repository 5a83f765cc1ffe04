//! The docker-compose mesh of `examples/compose` (docs/compose.md), brought
//! up from images built here (`scripts/images.sh`) under a project name of
//! its own, with a copy of its policy directory: the bookinfo flows through
//! the ingress gateway, httpbin's mirror and egress from the `sleep` pod as
//! in Istio's tasks, live and invalid policy edits, and losing one of the
//! two xds-ext replicas under load. Containers, networks and volumes are
//! removed at the end, pass or fail (every container's log printed first
//! on failure).
//!
//! Needs Docker. Without it the test fails and says how to skip it locally
//! (`SWITCHYARD_SKIP_COMPOSE=1`, announced loudly); CI never skips.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use switchyard_tests::bootstrap::xds_ext_binary;
use switchyard_tests::xds_ext::{bookinfo, write};
use switchyard_tests::{envoy_binary, http_client, tls, workspace_root, CallReport, EchoResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every Envoy of the mesh (compose service names).
const ENVOYS: [&str; 11] = [
    "istio-ingressgateway",
    "istio-egressgateway",
    "productpage-v1",
    "details-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
    "ratings-v1",
    "httpbin-v1",
    "httpbin-v2",
    "sleep",
];
/// Envoy opens one ECDS stream per filter: two on a sidecar (switchyard.http,
/// switchyard.egress-tls), one on a gateway (switchyard.http).
const STREAMS: usize = ENVOYS.len() * 2 - 2;
const REPLICAS: [&str; 2] = ["xds-ext-1", "xds-ext-2"];
const SKIP_VAR: &str = "SWITCHYARD_SKIP_COMPOSE";

fn compose_dir() -> PathBuf {
    workspace_root().join("examples/compose")
}

/// `docker-compose` (1.29 here), else `docker compose` (v2).
fn compose_program() -> Option<Vec<String>> {
    let works = |program: &[&str]| {
        Command::new(program[0]).args(&program[1..]).arg("version").output().is_ok_and(|o| o.status.success())
    };
    [&["docker-compose"][..], &["docker", "compose"][..]]
        .into_iter()
        .find(|p| works(p))
        .map(|p| p.iter().map(|s| s.to_string()).collect())
}

/// Why Docker cannot be used here, if it cannot.
fn docker_missing() -> Option<String> {
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
        Err(e) => Some(format!("no docker command ({e})")),
        Ok(o) if !o.status.success() => {
            Some(format!("the Docker engine does not answer: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
        Ok(_) if compose_program().is_none() => Some("neither docker-compose nor `docker compose` works".into()),
        Ok(_) => None,
    }
}

/// False (after saying so loudly) when the compose test is skipped on
/// purpose; panics when Docker is missing and nobody asked to skip.
fn docker_or_skip() -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!(skip && ci), "{SKIP_VAR}=1 in CI: the compose test never skips in CI");
    if skip {
        // Straight to stderr: the test harness hides eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! compose test SKIPPED ({SKIP_VAR}=1): the docker-compose mesh was NOT tested !!!!!!!!\n"
        );
        return false;
    }
    if let Some(why) = docker_missing() {
        panic!("compose test needs Docker: {why}. To skip it locally: {SKIP_VAR}=1 make test");
    }
    true
}

fn output_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A running compose project; `down --remove-orphans --volumes` on drop,
/// after printing every container's log if the test is failing.
struct Mesh {
    program: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
    policy: tempfile::TempDir,
    ingress: String,
    ports: Mutex<BTreeMap<(String, u16), String>>,
}

impl Mesh {
    async fn up() -> Mesh {
        let policy =
            tempfile::Builder::new().prefix("switchyard-compose-policy-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        for entry in std::fs::read_dir(compose_dir().join("policy")).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            std::fs::copy(&path, policy.path().join(&name)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        // The images of what this build made; their tags in an env file of
        // this run's own (the shared examples/compose/.env is not touched).
        let env_file = policy.path().join(".images.env");
        let images = Command::new(workspace_root().join("scripts/images.sh"))
            .env("SWITCHYARD_IMAGES_ENV", &env_file)
            .output()
            .unwrap_or_else(|e| panic!("scripts/images.sh: {e}"));
        assert!(images.status.success(), "scripts/images.sh failed:\n{}", output_text(&images));
        let mut env: Vec<(String, String)> = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{e}"))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.push(("SWITCHYARD_POLICY_DIR".into(), policy.path().display().to_string()));
        env.push(("SWITCHYARD_INGRESS_PORT".into(), free_port().to_string()));

        let project = format!("switchyard-test-{}", std::process::id());
        let program = compose_program().unwrap_or_else(|| panic!("no compose program"));
        let mut mesh = Mesh { program, project, env, policy, ingress: String::new(), ports: Mutex::default() };
        let started = Instant::now();
        mesh.compose_ok(&["up", "-d", "--no-build", "--remove-orphans"]);
        mesh.ingress = format!("http://{}", mesh.port("istio-ingressgateway", 8080));
        mesh.wait_all_synced(Duration::from_secs(60)).await;
        mesh.wait_clusters_resolved(Duration::from_secs(30)).await;
        eprintln!("compose: mesh {} up and synced in {:?}", mesh.project, started.elapsed());
        mesh
    }

    fn compose(&self, args: &[&str]) -> Output {
        let file = compose_dir().join("compose.yaml");
        Command::new(&self.program[0])
            .args(&self.program[1..])
            .arg("-f")
            .arg(&file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.program.join(" ")))
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(out.status.success(), "compose {args:?} failed:\n{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `127.0.0.1:PORT` on the host for `service`'s container port.
    fn port(&self, service: &str, port: u16) -> String {
        let key = (service.to_owned(), port);
        if let Some(addr) = self.ports.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return addr.clone();
        }
        let addr = self.compose_ok(&["port", service, &port.to_string()]).trim().to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "{service}:{port} published as {addr:?}");
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).insert(key, addr.clone());
        addr
    }

    async fn get_text(&self, url: &str) -> Option<String> {
        let response = http_client().get(url).timeout(Duration::from_secs(3)).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }

    async fn xds_json(&self, replica: &str, path: &str) -> Option<Value> {
        let text = self.get_text(&format!("http://{}{path}", self.port(replica, 15014))).await?;
        serde_json::from_str(&text).ok()
    }

    /// Node id → (its streams on `replicas`, how many of them are SYNCED).
    async fn sync_state(&self, replicas: &[&str]) -> BTreeMap<String, (usize, usize)> {
        let mut nodes = BTreeMap::new();
        for replica in replicas {
            let proxies = self.xds_json(replica, "/debug/proxies").await.unwrap_or(Value::Null);
            for stream in proxies.as_array().into_iter().flatten() {
                let id = stream["node_id"].as_str().unwrap_or_default().to_owned();
                let synced =
                    stream["resources"].as_object().is_some_and(|r| r.values().all(|r| r["status"] == "SYNCED"));
                let entry = nodes.entry(id).or_insert((0, 0));
                entry.0 += 1;
                entry.1 += usize::from(synced);
            }
        }
        nodes
    }

    /// Waits until every stream of all 11 Envoys is on `replicas` and SYNCED.
    async fn wait_synced_on(&self, replicas: &[&str], timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let nodes = self.sync_state(replicas).await;
            let synced: usize = nodes.values().map(|(_, synced)| synced).sum();
            if nodes.len() == ENVOYS.len() && synced == STREAMS {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "not every Envoy's stream SYNCED on {replicas:?} within {timeout:?} ({synced} of {STREAMS}): {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every cluster of every Envoy has a member: the DNS
    /// names of pods that started after it are resolved.
    async fn wait_clusters_resolved(&self, timeout: Duration) {
        let started = Instant::now();
        for envoy in ENVOYS {
            loop {
                let stats = self.stats(envoy).await;
                let empty: Vec<_> = stats
                    .iter()
                    .filter(|(k, v)| k.ends_with(".membership_total") && *v == "0")
                    .map(|(k, _)| k)
                    .collect();
                if !stats.is_empty() && empty.is_empty() {
                    break;
                }
                assert!(started.elapsed() < timeout, "{envoy}: clusters without a member after {timeout:?}: {empty:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn wait_all_synced(&self, timeout: Duration) {
        self.wait_synced_on(&REPLICAS, timeout).await;
    }

    async fn generations(&self) -> Vec<u64> {
        let mut generations = Vec::new();
        for replica in REPLICAS {
            let config = self.xds_json(replica, "/debug/config").await.unwrap_or(Value::Null);
            generations.push(config["generation"].as_u64().unwrap_or(0));
        }
        generations
    }

    /// Writes (or with `None` removes) a policy file, then waits until both
    /// replicas loaded it and every Envoy ACKed what it should now run.
    async fn set_policy(&self, name: &str, text: Option<&str>) {
        let before = self.generations().await;
        match text {
            Some(text) => write(self.policy.path(), name, text),
            None => std::fs::remove_file(self.policy.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.generations().await.iter().zip(&before).any(|(now, was)| now <= was) {
            assert!(Instant::now() < deadline, "xds-ext did not reload after {name} changed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_all_synced(Duration::from_secs(10)).await;
    }

    fn policy_path(&self) -> &Path {
        self.policy.path()
    }

    /// An Envoy's `/stats` as name → value text.
    async fn stats(&self, envoy: &str) -> BTreeMap<String, String> {
        let text = self.get_text(&format!("http://{}/stats", self.port(envoy, 15000))).await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    }

    async fn counter(&self, envoy: &str, name: &str) -> u64 {
        self.stats(envoy).await.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Each filter's `version_text` and `config_reload` on every Envoy.
    async fn filter_versions(&self) -> BTreeMap<String, String> {
        let mut versions = BTreeMap::new();
        for envoy in ENVOYS {
            for (name, value) in self.stats(envoy).await {
                if name.starts_with("extension_config_discovery.")
                    && (name.ends_with(".version_text") || name.ends_with(".config_reload"))
                {
                    versions.insert(format!("{envoy} {name}"), value);
                }
            }
        }
        versions
    }

    /// GET /productpage through the ingress gateway.
    async fn productpage(&self, user: Option<&str>) -> (u16, EchoResponse, Duration) {
        productpage(&self.ingress, user).await
    }

    /// GET through the sleep pod's sidecar (`kubectl exec sleep -- curl`).
    async fn sleep_get(&self, host: &str, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.port("sleep", 15001));
        http_client().get(url).header("host", host).send().await.unwrap_or_else(|e| panic!("{host}{path}: {e}"))
    }

    /// A ClientHello for `sni` to the sleep pod's TLS port: the bytes that
    /// came back, and whether the connection was closed.
    async fn sleep_tls(&self, sni: &str) -> (Vec<u8>, bool) {
        let mut stream = TcpStream::connect(self.port("sleep", 443)).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(&tls::client_hello(sni)).await.unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return (got, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn status_cli(&self, replica: &str) -> String {
        let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(binary)
            .args(["status", "--admin", &self.port(replica, 15014)])
            .output()
            .unwrap_or_else(|e| panic!("xds-ext status: {e}"));
        output_text(&out)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--timestamps"]);
            eprintln!(
                "--- compose {}: every container's log ---\n{}\n--- end of logs ---",
                self.project,
                output_text(&logs)
            );
        }
        let down = self.compose(&["down", "--remove-orphans", "--volumes", "--timeout", "2"]);
        if !down.status.success() {
            eprintln!("compose down of {} failed:\n{}", self.project, output_text(&down));
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

async fn productpage(ingress: &str, user: Option<&str>) -> (u16, EchoResponse, Duration) {
    let started = Instant::now();
    let mut request = http_client().get(format!("{ingress}/productpage"));
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("/productpage: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("/productpage answered {status} {text:?}: {e}"));
    (status, body, started.elapsed())
}

/// The call productpage made to `service`.
fn call<'a>(body: &'a EchoResponse, service: &str) -> &'a CallReport {
    let host = format!("http://{service}:");
    body.calls.iter().find(|c| c.url.starts_with(&host)).unwrap_or_else(|| panic!("no call to {service}: {body:#?}"))
}

/// `reviews v2 -> ratings v1 200` style summary of productpage's reviews call.
fn reviews_path(body: &EchoResponse) -> String {
    let reviews = call(body, "reviews");
    let mut text = format!("reviews {} {}", reviews.version, reviews.status);
    for inner in &reviews.calls {
        text.push_str(&format!(" -> {} {} {}", inner.service, inner.version, inner.status));
    }
    text
}

/// One sample of the steady load: did it fail, and which reviews answered.
#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    ok: bool,
    reviews: String,
}

/// `clients` loops of anonymous /productpage requests until `stop`.
fn steady_load(ingress: &str, clients: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Sample>> {
    let ingress = ingress.to_owned();
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (ingress, stop) = (ingress.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = http_client();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let sample = match client.get(format!("{ingress}/productpage")).send().await {
                            Ok(r) if r.status().is_success() => match r.json::<EchoResponse>().await {
                                Ok(body) => {
                                    let ok = body.calls.len() == 2 && body.calls.iter().all(|c| c.status == 200);
                                    let reviews = body.calls.iter().find(|c| c.service == "reviews");
                                    let reviews = reviews.map_or_else(|| format!("{body:?}"), |c| c.version.clone());
                                    Sample { started, ok, reviews }
                                }
                                Err(e) => Sample { started, ok: false, reviews: format!("bad body: {e}") },
                            },
                            Ok(r) => Sample { started, ok: false, reviews: format!("status {}", r.status()) },
                            Err(e) => Sample { started, ok: false, reviews: format!("error {e}") },
                        };
                        samples.push(sample);
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all.sort_by_key(|s| s.started);
        all
    })
}

const REVIEWS: &str = "virtual-service-reviews.yaml";
const RATINGS: &str = "virtual-service-ratings.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_mesh_runs_the_bookinfo_flows_and_survives_losing_an_xds_ext_replica() {
    if !docker_or_skip() {
        return;
    }
    let mesh = Mesh::up().await;

    // Request routing (the policy as committed): jason sees reviews v2,
    // which calls ratings; everyone else v1, which calls nothing.
    let (status, jason, _) = mesh.productpage(Some("jason")).await;
    assert_eq!((status, reviews_path(&jason).as_str()), (200, "reviews v2 200 -> ratings v1 200"), "{jason:#?}");
    assert_eq!((call(&jason, "details").service.as_str(), call(&jason, "details").status), ("details", 200));
    for _ in 0..10 {
        let (status, anonymous, _) = mesh.productpage(None).await;
        assert_eq!((status, reviews_path(&anonymous).as_str()), (200, "reviews v1 200"), "{anonymous:#?}");
    }

    // Traffic shifting: 50 % v1, 50 % v3, over 400 requests.
    mesh.set_policy(REVIEWS, Some(&bookinfo("virtual-service-reviews-50-v3.yaml"))).await;
    let ingress = mesh.ingress.clone();
    let versions: Vec<String> = futures::stream::iter(0..400)
        .map(|_| {
            let ingress = ingress.clone();
            async move {
                let (status, body, _) = productpage(&ingress, None).await;
                assert_eq!(status, 200);
                let reviews = call(&body, "reviews");
                assert_eq!(reviews.status, 200, "{body:#?}");
                reviews.version.clone()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let v1 = versions.iter().filter(|v| *v == "v1").count();
    let v3 = versions.iter().filter(|v| *v == "v3").count();
    assert_eq!(v1 + v3, 400, "only v1 and v3: {versions:?}");
    assert!((160..=240).contains(&v1), "50/50 over 400 requests: v1 {v1}, v3 {v3}");

    // Request timeouts: reviews (all v2) gets 0.5 s, and ratings makes
    // jason wait 7 s: productpage's call to reviews ends in a 504 after 0.5 s.
    mesh.set_policy(RATINGS, Some(&bookinfo("virtual-service-ratings-test-delay.yaml"))).await;
    mesh.set_policy(REVIEWS, Some(&bookinfo("virtual-service-reviews-timeout.yaml"))).await;
    let (status, jason, _) = mesh.productpage(Some("jason")).await;
    let reviews = call(&jason, "reviews");
    assert_eq!((status, reviews.status, reviews.error.as_str()), (200, 504, "upstream request timeout"), "{jason:#?}");
    assert!((450..2000).contains(&reviews.duration_ms), "the 0.5 s timeout: {reviews:#?}");
    let (_, anonymous, _) = mesh.productpage(None).await;
    assert_eq!(reviews_path(&anonymous), "reviews v2 200 -> ratings v1 200", "no delay, no timeout for others");

    // Fault injection, delay: jason → reviews v2 → ratings, 7 s late.
    mesh.set_policy(REVIEWS, Some(&bookinfo("virtual-service-reviews-test-v2.yaml"))).await;
    let (status, jason, took) = mesh.productpage(Some("jason")).await;
    assert_eq!((status, reviews_path(&jason).as_str()), (200, "reviews v2 200 -> ratings v1 200"), "{jason:#?}");
    let ratings = &call(&jason, "reviews").calls[0];
    assert!((7000..9000).contains(&ratings.duration_ms), "the 7 s delay: {ratings:#?}");
    assert!(took >= Duration::from_secs(7), "{took:?}");
    let (_, anonymous, took) = mesh.productpage(None).await;
    assert_eq!(reviews_path(&anonymous), "reviews v1 200");
    assert!(took < Duration::from_secs(2), "others are not delayed: {took:?}");

    // Fault injection, abort: ratings answers jason 500.
    mesh.set_policy(RATINGS, Some(&bookinfo("virtual-service-ratings-test-abort.yaml"))).await;
    let (_, jason, _) = mesh.productpage(Some("jason")).await;
    let reviews = call(&jason, "reviews");
    assert_eq!((reviews.version.as_str(), reviews.status), ("v2", 200), "{jason:#?}");
    let ratings = &reviews.calls[0];
    assert_eq!((ratings.status, ratings.error.as_str()), (500, "fault filter abort"), "{jason:#?}");
    mesh.set_policy(RATINGS, None).await;
    let (_, jason, _) = mesh.productpage(Some("jason")).await;
    assert_eq!(reviews_path(&jason), "reviews v2 200 -> ratings v1 200");

    mirrors_httpbin_to_v2(&mesh).await;
    egress_leaves_through_the_egress_gateway(&mesh).await;
    a_live_edit_applies_within_2s_without_a_failed_request(&mesh).await;
    an_invalid_edit_keeps_the_last_good_config_and_status_names_it(&mesh).await;
    losing_an_xds_ext_replica_fails_no_request_and_changes_no_version(&mesh).await;
}

/// Istio's mirroring task, from sleep: httpbin v1 answers, v2 gets a copy.
async fn mirrors_httpbin_to_v2(mesh: &Mesh) {
    let inbound = "http.inbound.downstream_rq_total";
    let (v1_before, v2_before) = (mesh.counter("httpbin-v1", inbound).await, mesh.counter("httpbin-v2", inbound).await);
    for _ in 0..5 {
        let response = mesh.sleep_get("httpbin:8000", "/headers").await;
        assert_eq!(response.status().as_u16(), 200);
        let body: EchoResponse = response.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((body.service.as_str(), body.version.as_str()), ("httpbin", "v1"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while mesh.counter("httpbin-v2", inbound).await < v2_before + 5 {
        assert!(Instant::now() < deadline, "httpbin v2 never received the 5 shadows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mesh.counter("httpbin-v1", inbound).await, v1_before + 5);
}

/// REGISTRY_ONLY from sleep: the ServiceEntry host leaves through the egress
/// gateway, an unknown host is denied, an unknown SNI is closed before any
/// upstream connection.
async fn egress_leaves_through_the_egress_gateway(mesh: &Mesh) {
    let through_gateway = "cluster.outbound|80||httpbin.org.upstream_rq_total";
    let before = mesh.counter("istio-egressgateway", through_gateway).await;
    let response = mesh.sleep_get("httpbin.org", "/get").await;
    assert_eq!(response.status().as_u16(), 200);
    let body: EchoResponse = response.json().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((body.service.as_str(), body.version.as_str()), ("httpbin.org", "external"));
    assert_eq!(mesh.counter("istio-egressgateway", through_gateway).await, before + 1);

    let denied = mesh.sleep_get("evil.example.com", "/").await;
    assert_eq!(denied.status().as_u16(), 502);
    assert_eq!(denied.headers().get("x-switchyard-egress").and_then(|v| v.to_str().ok()), Some("denied"));

    let to_gateway = "cluster.outbound|443||istio-egressgateway.istio-system.svc.cluster.local.upstream_cx_total";
    let out = "cluster.outbound|443||www.google.com.upstream_cx_total";
    let (sleep_before, out_before) =
        (mesh.counter("sleep", to_gateway).await, mesh.counter("istio-egressgateway", out).await);
    let (got, _) = mesh.sleep_tls("www.google.com").await;
    assert!(got.starts_with(b"HTTP/1.1 400"), "the ClientHello reached www.google.com's (plain HTTP) server: {got:?}");
    assert_eq!(mesh.counter("istio-egressgateway", out).await, out_before + 1);
    let (got, closed) = mesh.sleep_tls("evil.example.com").await;
    assert!(got.is_empty() && closed, "an unknown SNI is closed: got {got:?}, closed {closed}");
    assert_eq!(mesh.counter("sleep", to_gateway).await, sleep_before + 1, "no upstream connection for the unknown SNI");
}

/// Under steady load, reviews → v3 for everyone: every request after 2 s
/// sees v3, and none fails on the way.
async fn a_live_edit_applies_within_2s_without_a_failed_request(mesh: &Mesh) {
    let (_, anonymous, _) = mesh.productpage(None).await;
    assert_eq!(call(&anonymous, "reviews").version, "v1");
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&mesh.ingress, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let edited = Instant::now();
    write(mesh.policy_path(), REVIEWS, &bookinfo("virtual-service-reviews-v3.yaml"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = load.await.unwrap_or_else(|e| panic!("{e}"));

    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    assert!(failed.is_empty(), "{} of {} requests failed during the edit: {failed:?}", failed.len(), samples.len());
    let last_old = samples.iter().filter(|s| s.reviews != "v3").map(|s| s.started).max();
    let applied = last_old.map_or(Duration::ZERO, |t| t.saturating_duration_since(edited));
    assert!(applied < Duration::from_secs(2), "a request started {applied:?} after the edit still saw the old route");
    let after = samples.iter().filter(|s| s.started > edited + Duration::from_secs(2)).count();
    assert!(after > 10, "the load kept going after the edit: {after} requests");
    eprintln!("compose: live edit applied within {applied:?}, {} requests, none failed", samples.len());
    mesh.wait_all_synced(Duration::from_secs(10)).await;
}

/// A VirtualService whose weights are all 0: every Envoy keeps what it
/// runs, and `xds-ext status` names the file and the problem.
async fn an_invalid_edit_keeps_the_last_good_config_and_status_names_it(mesh: &Mesh) {
    let before = mesh.filter_versions().await;
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 0\n    - destination:\n        host: reviews\n        subset: v2\n      weight: 0\n";
    mesh.set_policy(REVIEWS, Some(bad)).await;
    for replica in REPLICAS {
        let status = mesh.status_cli(replica);
        assert!(
            status.contains("virtual-service-reviews.yaml") && status.contains("every destination has weight 0"),
            "{replica}: xds-ext status names the problem:\n{status}"
        );
    }
    assert_eq!(mesh.filter_versions().await, before, "every Envoy stays on the last good config");
    for _ in 0..5 {
        let (_, anonymous, _) = mesh.productpage(None).await;
        assert_eq!(reviews_path(&anonymous), "reviews v3 200 -> ratings v1 200");
    }
    mesh.set_policy(REVIEWS, Some(&bookinfo("virtual-service-reviews-v3.yaml"))).await;
}

/// `docker kill` of the replica serving more Envoys, under steady load.
async fn losing_an_xds_ext_replica_fails_no_request_and_changes_no_version(mesh: &Mesh) {
    let mut streams = Vec::new();
    for replica in REPLICAS {
        let proxies = mesh.xds_json(replica, "/debug/proxies").await.unwrap_or(Value::Null);
        streams.push(proxies.as_array().map_or(0, Vec::len));
    }
    let (victim, survivor) =
        if streams[0] >= streams[1] { (REPLICAS[0], REPLICAS[1]) } else { (REPLICAS[1], REPLICAS[0]) };
    let before = mesh.filter_versions().await;
    assert!(before.len() >= ENVOYS.len() * 2, "{before:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&mesh.ingress, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.compose_ok(&["kill", victim]);
    let moved = mesh.wait_synced_on(&[survivor], Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = load.await.unwrap_or_else(|e| panic!("{e}"));

    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed with {victim} killed: {failed:?}",
        failed.len(),
        samples.len()
    );
    assert_eq!(mesh.filter_versions().await, before, "moving to {survivor} brought no new version and no reload");
    eprintln!(
        "compose: {victim} killed ({} of {:?} streams), every Envoy SYNCED on {survivor} in {moved:?}, {} requests, none failed",
        streams[0].max(streams[1]),
        streams,
        samples.len()
    );
}

/// The compose policy is bookinfo's own YAML: each file is a copy of
/// `examples/bookinfo/` (the VirtualServices under one name per host), or
/// the egress-gateway task, which bookinfo's directory does not have.
#[test]
fn the_compose_policy_is_bookinfo_s_yaml() {
    let renamed = [
        (REVIEWS, "virtual-service-reviews-test-v2.yaml"),
        ("virtual-service-httpbin.yaml", "virtual-service-httpbin-mirror.yaml"),
    ];
    let policy = compose_dir().join("policy");
    let mut names: Vec<String> = std::fs::read_dir(&policy)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        if name == "egress-gateway-httpbin-org.yaml" {
            continue;
        }
        let source = renamed.iter().find(|(n, _)| n == name).map_or(name.as_str(), |(_, s)| s);
        let text = std::fs::read_to_string(policy.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, bookinfo(source), "examples/compose/policy/{name} differs from examples/bookinfo/{source}");
    }
    assert!(names.len() >= 9, "{names:?}");
    let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary).arg("validate").arg(&policy).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success() && !output_text(&out).contains("warning:"), "{}", output_text(&out));
}

/// The three bootstraps are valid for Envoy 1.40 with a node like the ones
/// compose.yaml gives them (no Docker needed).
#[test]
fn the_compose_bootstraps_are_valid_envoy_configs() {
    let envoy = envoy_binary().unwrap_or_else(|e| panic!("{e}"));
    let compose = std::fs::read_to_string(compose_dir().join("compose.yaml")).unwrap_or_else(|e| panic!("{e}"));
    for file in ["sidecar.yaml", "ingress-gateway.yaml", "egress-gateway.yaml"] {
        assert!(compose.contains(&format!("/etc/envoy/{file}")), "compose.yaml does not use envoy/{file}");
        let path = compose_dir().join("envoy").join(file);
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .args(["--config-yaml", "node: {id: test.default, cluster: test.default, metadata: {NAMESPACE: default}}"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "envoy --mode validate {file}:\n{}", output_text(&out));
    }
}
