//! The `validate`, `render`, `explain` and `validate-filter-config` verbs,
//! run as the real binary.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use std::process::{Command, Output};

use config_common::bookinfo_dir;

fn xds_ext(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xds-ext")).args(args).current_dir(bookinfo_dir()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_exits_0_for_valid_documents_and_1_with_one_line_per_problem() {
    let ok =
        xds_ext(&["validate", "services.yaml", "destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml"]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert_eq!(stdout(&ok), "");
    assert!(stderr(&ok).contains("9 document(s) valid, 0 error(s), 0 warning(s)"), "{}", stderr(&ok));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{statPrefix: r}]\n    route:\n    - {destination: {host: reviews, subset: v1}, weight: 0}\n    - {destination: {host: reviews, subset: v2}, weight: 0}\n",
    )
    .unwrap();
    let out = xds_ext(&["validate", "services.yaml", "destination-rule-all.yaml", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> =
        stdout(&out).lines().map(|l| l.replace(&format!("{}/", dir.path().display()), "")).collect();
    assert_eq!(
        lines,
        [
            "warning: bad.yaml:7: VirtualService default/reviews: spec.http[0].match[0].statPrefix: statPrefix is not applied: Switchyard's stats are named after the rule",
            "bad.yaml:8: VirtualService default/reviews: spec.http[0].route: every destination has weight 0 (or none): give at least one a weight above 0 (Istio refuses a total of 0)",
        ]
    );

    let json = xds_ext(&["validate", "-o", "json", bad.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(value["valid"], false);
    assert_eq!(value["problems"][1]["field"], "spec.http[0].route");
    assert_eq!(value["problems"][1]["line"], 8);
    assert_eq!(value["problems"][1]["severity"], "error");
}

#[test]
fn render_prints_the_six_configs_of_a_workload() {
    let out = xds_ext(&[
        "render",
        "services.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "--namespace",
        "default",
        "--labels",
        "app=productpage,version=v1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "switchyard.egress",
            "switchyard.egress-tls",
            "switchyard.fault",
            "switchyard.http",
            "switchyard.mirror",
            "switchyard.routing"
        ]
    );
    // The combined config: routing only (ALLOW_ANY, no fault, no mirror),
    // exactly the single routing config.
    let http = value["switchyard.http"].as_object().unwrap();
    assert_eq!(http.keys().collect::<Vec<_>>(), ["routing", "version"]);
    assert_eq!(http["routing"], value["switchyard.routing"]);
    let reviews = value["switchyard.routing"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vh| vh["name"] == "reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(reviews["routes"][0]["route"][0]["destination"]["subset"], "v2");

    let yaml = xds_ext(&[
        "render",
        "virtual-service-reviews-v3.yaml",
        "services.yaml",
        "destination-rule-all.yaml",
        "-o",
        "yaml",
    ]);
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    assert!(stdout(&yaml).contains("subset: v3"), "{}", stdout(&yaml));

    let table = xds_ext(&[
        "render",
        "virtual-service-reviews-v3.yaml",
        "services.yaml",
        "destination-rule-all.yaml",
        "-o",
        "table",
    ]);
    assert!(
        stdout(&table).contains("reviews.default.svc.cluster.local  [reviews.default.svc.cluster.local"),
        "{}",
        stdout(&table)
    );
    assert!(
        stdout(&table).contains(
            "\nswitchyard.http: routing (left out: egress: ALLOW_ANY: every host is allowed; fault: no fault rules; \
             mirror: no mirror rules)\n"
        ),
        "{}",
        stdout(&table)
    );
}

#[test]
fn render_refuses_documents_with_errors() {
    // The VirtualService names subset v2 but no DestinationRule defines it.
    let out = xds_ext(&["render", "services.yaml", "virtual-service-reviews-test-v2.yaml", "-l", "app=productpage"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("virtual-service-reviews-test-v2.yaml:16: VirtualService default/reviews: spec.http[0].route[0].destination: subset \"v2\" of reviews.default.svc.cluster.local is not defined"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn explain_tells_which_rule_a_request_hits_and_what_each_filter_does() {
    let out = xds_ext(&[
        "explain",
        "services.yaml",
        "destination-rule-all.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "sidecar-registry-only.yaml",
        "--labels",
        "app=reviews,version=v2",
        "--",
        "GET",
        "http://ratings:9080/ratings/0",
        "-H",
        "end-user: jason",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "request:  GET http://ratings:9080/ratings/0",
        "end-user: jason",
        "egress:   allow (listed host ratings)",
        "rule         ratings.default.svc.cluster.local/jason-delay",
        "from         VirtualService default/ratings spec.http[0] (virtual-service-ratings-test-delay.yaml:10)",
        "cluster      outbound|9080|v1|ratings.default.svc.cluster.local",
        "fault:    rule ratings.default.svc.cluster.local/jason-delay: delay 7s at 100% (injected with this draw)",
        "mirror:   none",
        "combined: switchyard.http: egress → routing → fault (left out: mirror: no mirror rules)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    let json = xds_ext(&[
        "explain",
        "services.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-50-v3.yaml",
        "-o",
        "json",
        "--random",
        "18446744073709551615",
        "--",
        "GET",
        "http://reviews:9080/",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(value["routing"]["cluster"], "outbound|9080|v3|reviews.default.svc.cluster.local");
    assert_eq!(value["routing"]["destinations"].as_array().unwrap().len(), 2);

    let usage = xds_ext(&["explain", "services.yaml", "--", "GET"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("METHOD URL"), "{}", stderr(&usage));
}

#[test]
fn every_verb_has_help() {
    for verb in ["validate", "render", "explain", "validate-filter-config"] {
        let out = xds_ext(&[verb, "--help"]);
        assert!(out.status.success(), "{verb}");
        assert!(stdout(&out).contains("Usage: xds-ext"), "{verb}: {}", stdout(&out));
    }
}

#[test]
fn validate_filter_config_checks_filter_json() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, r#"{"version": 1, "virtual_hosts": []}"#).unwrap();
    std::fs::write(&bad, r#"{"version": 2, "virtual_hosts": []}"#).unwrap();
    let out = xds_ext(&["validate-filter-config", "--filter", "routing", good.to_str().unwrap()]);
    assert!(out.status.success());
    let out = xds_ext(&["validate-filter-config", "--filter", "fault", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("unsupported config version 2"), "{}", stdout(&out));

    // The combined filter's config: errors name the section.
    let chain = dir.path().join("chain.json");
    std::fs::write(&chain, r#"{"version": 1, "routing": {"version": 1, "virtual_hosts": []}}"#).unwrap();
    let out = xds_ext(&["validate-filter-config", "--filter", "switchyard", chain.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out), format!("{}: valid\n", chain.display()));
    std::fs::write(&chain, r#"{"version": 1, "mirror": {"version": 2, "virtual_hosts": []}}"#).unwrap();
    let out = xds_ext(&["validate-filter-config", "--filter", "switchyard", chain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("chain.json: mirror.version: unsupported config version 2"), "{}", stdout(&out));
}

/// `xds-ext manifests` on bookinfo steps, against the files in tests/golden/
/// (regenerate with `UPDATE_GOLDEN=1 cargo test -p xds-ext --test config_cli`).
#[test]
fn manifests_of_the_bookinfo_steps_match_their_golden_files() {
    let cases: [(&str, &[&str], &str); 3] = [
        ("manifests-reviews-test-v2-sidecars.yaml", &["virtual-service-reviews-test-v2.yaml"], "sidecars"),
        ("manifests-gateways-ingress.json", &["bookinfo-gateway.yaml"], "ingress-gateway"),
        ("manifests-egress-gateway-all.yaml", &["service-entry-httpbin-org.yaml", "egress-gateway.yaml"], "all"),
    ];
    for (golden, steps, target) in cases {
        let mut args = vec!["manifests", "services.yaml", "destination-rule-all.yaml"];
        args.extend_from_slice(steps);
        args.extend_from_slice(&["--for", target]);
        if golden.ends_with(".json") {
            args.extend_from_slice(&["-o", "json"]);
        }
        let out = xds_ext(&args);
        assert!(out.status.success(), "{golden}: {}", stderr(&out));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(golden);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, stdout(&out)).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(stdout(&out), want, "{golden} differs: rerun with UPDATE_GOLDEN=1 if the change is intended");
    }
}

#[test]
fn validate_counts_a_document_with_a_reference_error_as_not_valid() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("reviews.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v9}}]}]\n",
    )
    .unwrap();
    let out = xds_ext(&["validate", "services.yaml", "destination-rule-all.yaml", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("reviews.yaml:6: VirtualService default/reviews"), "{}", stdout(&out));
    assert!(stderr(&out).contains("8 document(s) valid, 1 error(s), 0 warning(s)"), "{}", stderr(&out));
}
