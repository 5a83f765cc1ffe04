//! The kustomize tree (`envoyfilter-manifests/`) checked offline, in
//! `make test`: every kustomization renders with a real `kubectl kustomize`
//! and what it renders validates (`scripts/check-manifests.py`: Kubernetes
//! schemas, Istio's CRD models, EnvoyFilter size). The script is also fed
//! broken kustomizations to prove it names what is wrong. And the policy
//! the base mounts into xds-ext is valid and is the bookinfo examples'.

use std::path::Path;
use std::process::{Command, Output};

use switchyard_tests::bootstrap::xds_ext_binary;
use switchyard_tests::workspace_root;

/// `scripts/check-manifests.py ROOT` under the project's `.venv` python.
fn check(root: &Path) -> Output {
    check_with_path(root, None)
}

fn check_with_path(root: &Path, path: Option<&str>) -> Output {
    let workspace = workspace_root();
    let python = workspace.join(".venv/bin/python");
    assert!(python.is_file(), "{} missing: run `make setup`", python.display());
    let mut cmd = Command::new(python);
    cmd.arg(workspace.join("scripts/check-manifests.py")).arg(root);
    if let Some(path) = path {
        cmd.env("PATH", path).env_remove("KUBECTL");
    }
    cmd.output().unwrap_or_else(|e| panic!("running scripts/check-manifests.py: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A temp tree `<tmp>/tree/case/` holding `kustomization.yaml` and `files`.
fn kustomization(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("switchyard-manifests-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let case = dir.path().join("tree/case");
    for (name, body) in files {
        let path = case.join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(&case)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

const ENVOYFILTER: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: routing, namespace: istio-system}
spec:
  priority: 20
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}
    patch:
      operation: INSERT_BEFORE
      value: {name: switchyard.routing, config_discovery: {type_urls: [type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]}}
";

/// Runs the check over a one-file kustomization; asserts it fails with a
/// line containing `expected`.
fn refused(file: &str, body: &str, expected: &str) {
    let tree = kustomization(&[("kustomization.yaml", &format!("resources: [{file}]\n")), (file, body)]);
    let out = check(&tree.path().join("tree"));
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.lines().any(|l| l.contains(expected)), "no line with `{expected}` in:\n{output}");
}

#[test]
fn every_kustomization_renders_and_validates() {
    let out = check(&workspace_root().join("envoyfilter-manifests"));
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains(" 0 problem(s)"), "{output}");
}

#[test]
fn a_good_envoyfilter_passes() {
    let tree = kustomization(&[("kustomization.yaml", "resources: [filter.yaml]\n"), ("filter.yaml", ENVOYFILTER)]);
    let out = check(&tree.path().join("tree"));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_mistyped_envoyfilter_field_is_refused_by_name() {
    // The Istio model alone would drop `mtach` silently.
    refused(
        "filter.yaml",
        &ENVOYFILTER.replace("    match:", "    mtach:"),
        "case: EnvoyFilter istio-system/routing (tree/case/filter.yaml): spec.configPatches[0].mtach: unknown field",
    );
}

#[test]
fn a_bad_envoyfilter_enum_is_refused() {
    refused(
        "filter.yaml",
        &ENVOYFILTER.replace("applyTo: HTTP_FILTER", "applyTo: HTTP_FILTERZ"),
        "EnvoyFilter istio-system/routing (tree/case/filter.yaml): spec.configPatches[0].applyTo: Input should be",
    );
}

#[test]
fn an_oversized_envoyfilter_is_refused() {
    let inline_policy = format!("      value: {{name: switchyard.routing, inline: \"{}\"}}\n", "x".repeat(12_000));
    let body = ENVOYFILTER.lines().filter(|l| !l.starts_with("      value:")).collect::<Vec<_>>().join("\n");
    refused(
        "filter.yaml",
        &format!("{body}\n{inline_policy}"),
        "EnvoyFilter istio-system/routing (tree/case/filter.yaml): (document): EnvoyFilter is 12",
    );
}

#[test]
fn a_mistyped_kubernetes_field_is_refused_by_name() {
    let deployment = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: xds-ext}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
      - name: x
        image: x
        readinesProbe: {httpGet: {path: /readyz, port: 15014}}
";
    refused(
        "deployment.yaml",
        deployment,
        "Deployment xds-ext (tree/case/deployment.yaml): spec.template.spec.containers[0].readinesProbe: unknown field",
    );
}

#[test]
fn a_policy_file_left_out_of_the_generator_is_reported() {
    let tree = kustomization(&[
        ("kustomization.yaml", "configMapGenerator:\n- name: policy\n  files: [policy/a.yaml]\n"),
        ("policy/a.yaml", "a: 1\n"),
        ("policy/b.yaml", "b: 1\n"),
    ]);
    let out = check(&tree.path().join("tree"));
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("case: configMapGenerator policy: policy/b.yaml is in policy/ but not under files:"),
        "{output}"
    );
}

#[test]
fn a_kustomization_that_does_not_render_is_reported() {
    let tree = kustomization(&[("kustomization.yaml", "resources: [nowhere.yaml]\n")]);
    let output = text(&check(&tree.path().join("tree")));
    assert!(output.contains("case: does not render:") && output.contains("nowhere.yaml"), "{output}");
}

#[test]
fn without_kubectl_the_check_fails_in_one_clear_line() {
    let tree = kustomization(&[("kustomization.yaml", "resources: []\n")]);
    let out = check_with_path(&tree.path().join("tree"), Some("/nonexistent"));
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert_eq!(output.lines().count(), 1, "{output}");
    assert!(output.contains("kubectl not found"), "{output}");
}

#[test]
fn the_base_policy_is_valid_and_is_the_bookinfo_examples() {
    let root = workspace_root();
    let policy = root.join("envoyfilter-manifests/base/policy");
    let mut files: Vec<_> = std::fs::read_dir(&policy)
        .unwrap_or_else(|e| panic!("{}: {e}", policy.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for name in &files {
        let copy = std::fs::read_to_string(policy.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let example = root.join("examples/bookinfo").join(name);
        let original = std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        assert_eq!(copy, original, "envoyfilter-manifests/base/policy/{name} differs from examples/bookinfo/{name}");
    }
    let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(binary).arg("validate").arg(&policy).output().unwrap_or_else(|e| panic!("{e}"));
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains("0 error(s), 0 warning(s)"), "{output}");
}
