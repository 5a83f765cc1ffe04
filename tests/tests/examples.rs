//! The examples do what they say, in real Envoys: the static bootstrap, the
//! single sidecar fed by xds-ext, and `make run` itself (scripts/run.sh:
//! the mesh on loopback), every command it prints run and held to its comment.

use switchyard_tests::bootstrap::bootstrap;
use switchyard_tests::xds_ext::{bookinfo, write, XdsExt};
use switchyard_tests::{http_client, workspace_root, EchoServer, Envoy};

/// Envoy from `examples/local/<file>`: `{{NAME}}` placeholders filled from
/// `vars` (admin and listener ports become 0), the backends' fixed ports
/// replaced by their echo servers' and the module paths made absolute.
async fn example_envoy(file: &str, vars: &[(&str, String)], backends: &[(u16, EchoServer)]) -> Envoy {
    let root = workspace_root();
    let mut yaml = std::fs::read_to_string(root.join("examples/local").join(file))
        .unwrap_or_else(|e| panic!("examples/local/{file}: {e}"))
        .replace("{{ADMIN_PORT}}", "0")
        .replace("{{LISTENER_PORT}}", "0")
        .replace("filename: target/switchyard/", &format!("filename: {}/target/switchyard/", root.display()));
    for (name, value) in vars {
        yaml = yaml.replace(&format!("{{{{{name}}}}}"), value);
    }
    for (port, echo) in backends {
        yaml = yaml.replace(&format!("port_value: {port}"), &format!("port_value: {}", echo.port()));
    }
    // Envoy merges --config-yaml over the harness's (empty) bootstrap.
    Envoy::builder(bootstrap(vec![], vec![]))
        .arg("--config-yaml")
        .arg(&yaml)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// GET `/x` through `url` for `host`, as `end-user: user` if given.
async fn get(url: &str, host: &str, user: Option<&str>) -> reqwest::Response {
    let mut request = http_client().get(format!("{url}/x")).header("host", host);
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    request.send().await.unwrap_or_else(|e| panic!("{e}"))
}

/// `service version` of the echo server that answered.
fn served_by(response: &reqwest::Response) -> String {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    format!("{} {}", header("x-echo-service"), header("x-echo-version"))
}

#[tokio::test]
async fn the_static_example_routes_jason_aborts_ratings_and_denies_unknown_hosts() {
    let backends = [
        (18080, EchoServer::start("productpage", "v1").await),
        (18081, EchoServer::start("reviews", "v1").await),
        (18082, EchoServer::start("reviews", "v2").await),
        (18083, EchoServer::start("reviews", "v3").await),
        (18084, EchoServer::start("ratings", "v1").await),
        (18085, EchoServer::start("httpbin.org", "external").await),
    ];
    let envoy = example_envoy("envoy-static.yaml", &[], &backends).await;
    let url = envoy.listener_url("demo");

    assert_eq!(served_by(&get(&url, "reviews", Some("jason")).await), "reviews v2");
    assert_eq!(served_by(&get(&url, "reviews", None).await), "reviews v1");
    assert_eq!(get(&url, "ratings", Some("jason")).await.status().as_u16(), 500);
    assert_eq!(get(&url, "ratings", None).await.status().as_u16(), 200);
    assert_eq!(get(&url, "evil.example.com", None).await.status().as_u16(), 502);
    assert_eq!(served_by(&get(&url, "httpbin.org", None).await), "httpbin.org external");
    // The mirror rule shadows every reviews request to v3.
    backends[3].1.wait_for_requests(2, std::time::Duration::from_secs(5)).await;
}

/// The single-sidecar example (`examples/local/envoy.yaml`: productpage's
/// sidecar, its backends on fixed ports) with bookinfo's routing, fault and
/// egress steps.
#[tokio::test]
async fn the_example_sidecar_serves_the_bookinfo_policy_from_xds_ext() {
    let mut backends = Vec::new();
    for (port, name, version) in [
        (18080, "productpage", "v1"),
        (18081, "reviews", "v1"),
        (18082, "reviews", "v2"),
        (18083, "reviews", "v3"),
        (18084, "ratings", "v1"),
        (18085, "httpbin.org", "external"),
        (18086, "details", "v1"),
    ] {
        backends.push((port, EchoServer::start(name, version).await));
    }
    let config = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for file in [
        "services.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-abort.yaml",
        "service-entry-httpbin-org.yaml",
        "sidecar-registry-only.yaml",
    ] {
        write(config.path(), file, &bookinfo(file));
    }
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let envoy = example_envoy("envoy.yaml", &[("XDS_PORT", xds.grpc_port.to_string())], &backends).await;
    let url = envoy.listener_url("outbound");

    assert_eq!(served_by(&get(&url, "reviews:9080", Some("jason")).await), "reviews v2");
    assert_eq!(served_by(&get(&url, "reviews:9080", None).await), "reviews v1");
    assert_eq!(get(&url, "ratings:9080", Some("jason")).await.status().as_u16(), 500);
    assert_eq!(served_by(&get(&url, "ratings:9080", None).await), "ratings v1");
    assert_eq!(served_by(&get(&url, "details:9080", None).await), "details v1", "Istio's default route");
    assert_eq!(served_by(&get(&url, "productpage:9080", None).await), "productpage v1", "Istio's default route");
    assert_eq!(get(&url, "evil.example.com", None).await.status().as_u16(), 502);
    assert_eq!(served_by(&get(&url, "httpbin.org", None).await), "httpbin.org external");

    // The routing filter's cluster header stops at the route.
    for (_, echo) in &backends {
        for request in echo.received() {
            assert_eq!(request.header("x-switchyard-cluster"), None, "{request:?}");
        }
    }
    assert!(xds.log().contains("proxy connected"), "{}", xds.log());
}

/// `scripts/run.sh`, killed (SIGTERM: its trap stops what it started) on drop.
struct MakeRun {
    child: std::process::Child,
}

impl Drop for MakeRun {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What productpage called, as run.sh's comments put it:
/// `details v1, reviews v2 -> ratings v1`.
fn calls_summary(body: &switchyard_tests::EchoResponse) -> String {
    let hop = |c: &switchyard_tests::CallReport| format!("{} {}", c.service, c.version);
    let summary = body.calls.iter().map(|c| {
        let inner: Vec<String> = c.calls.iter().map(hop).collect();
        std::iter::once(hop(c)).chain(inner).collect::<Vec<_>>().join(" -> ")
    });
    summary.collect::<Vec<_>>().join(", ")
}

/// Holds `output` (stdout of `command`) to `comment`, the words run.sh
/// prints beside it.
async fn check_printed(command: &str, comment: &str, output: &str, net: &str) {
    let json = || -> switchyard_tests::EchoResponse {
        serde_json::from_str(output).unwrap_or_else(|e| panic!("{command}: not an echo body ({e}): {output}"))
    };
    let first = comment.split_whitespace().next().unwrap_or_default();
    if let Some(calls) = comment.strip_prefix("calls: ") {
        assert_eq!(calls_summary(&json()), calls, "{command}");
    } else if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
        let status = output.lines().next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 ") && status.contains(first), "{command}: {comment}: got {status:?}");
    } else if first.trim_end_matches(',') == "SYNCED" {
        let rows: Vec<&str> = output.lines().skip(1).take_while(|l| !l.trim().is_empty()).collect();
        assert!(!rows.is_empty(), "{command}: no proxy rows:\n{output}");
        for row in rows {
            assert!(
                row.contains("SYNCED")
                    && !row.contains("STALE")
                    && !row.contains("NACKED")
                    && !row.contains("NOT SENT"),
                "{command}: {row}"
            );
        }
    } else if first == "cluster" {
        let cluster = comment.split_whitespace().nth(1).unwrap_or_default();
        let line =
            output.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|w| w.first() == Some(&"cluster"));
        assert_eq!(line, Some(vec!["cluster", cluster]), "{command}:\n{output}");
    } else if first.starts_with("switchyard_") {
        assert!(output.contains(first), "{command}: no {first} in:\n{output}");
    } else {
        let mut words = comment.split_whitespace();
        let (service, version) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let body = json();
        assert_eq!((body.service.as_str(), body.version.as_str()), (service, version), "{command}");
        if comment.contains("mirrored copy to v2") {
            // httpbin v2's sidecar (the 27th address of run.sh's network) got it.
            let stats = format!("http://{net}.27:15000/stats?filter=http.inbound.downstream_rq_total");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let text = http_client().get(&stats).send().await.ok();
                let text = match text {
                    Some(r) => r.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                let count: u64 = text.rsplit(": ").next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                if count >= 1 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "httpbin v2 never got the mirrored copy: {text}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// `make run` as users run it: scripts/run.sh on a loopback network and an
/// ingress port of this test's own; every command it prints is run with
/// bash and must show what its comment says.
#[tokio::test]
async fn make_run_starts_the_mesh_on_loopback_and_every_printed_command_does_what_it_says() {
    use std::io::BufRead;
    let net = format!("127.0.{}", 100 + std::process::id() % 100);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
        .to_string();
    let child = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/run.sh"))
        .env("SWITCHYARD_NET", &net)
        .env("SWITCHYARD_PORT", &port)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("scripts/run.sh: {e}"));
    let mut run = MakeRun { child };
    let stdout = run.child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let stderr = run.child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let printed = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            let done = line == "Ctrl-C stops everything.";
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let printed = tokio::time::timeout(std::time::Duration::from_secs(120), printed)
        .await
        .unwrap_or_else(|_| panic!("scripts/run.sh did not finish starting within 120 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    if printed.last().map(String::as_str) != Some("Ctrl-C stops everything.") {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut err);
        panic!("scripts/run.sh ended before the mesh was up:\n{}\n{err}", printed.join("\n"));
    }

    let commands: Vec<(&str, &str)> = printed
        .iter()
        .filter(|l| l.starts_with("  curl ") || l.starts_with("  target/"))
        .map(|l| l.trim().split_once("   # ").unwrap_or_else(|| panic!("no `   # what it shows` on {l:?}")))
        .collect();
    assert!(commands.len() >= 8, "{printed:#?}");
    for (command, comment) in commands {
        let out = std::process::Command::new("bash")
            .args(["-c", command])
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        check_printed(command, comment, &String::from_utf8_lossy(&out.stdout), &net).await;
    }
}
