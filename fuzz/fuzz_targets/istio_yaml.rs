//! Istio YAML → validate, render, explain, manifests: what `xds-ext` does with
//! a file in its policy directory or on its command line, through the
//! library the CLI and the server use (`ConfigStore`).
//!
//! Beyond "never panics": whatever renders without problems is accepted by
//! the filters' own JSON reader (`from_json`), because that JSON is what a
//! filter's `on_configure` receives; a config xds-ext would push and the
//! filter would NACK is a bug.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_policy::chain::CompiledChain;
use switchyard_policy::egress::CompiledEgress;
use switchyard_policy::fault::CompiledFault;
use switchyard_policy::mirror::CompiledMirror;
use switchyard_policy::routing::CompiledRouting;
use switchyard_policy::ConfigError;
use xds_ext::config::explain::{explain, RequestSpec};
use xds_ext::config::manifests::{manifests, Target};
use xds_ext::config::model::Spec;
use xds_ext::config::{to_yaml, ConfigStore};
use xds_ext::workload::{
    Workload, RESOURCE_EGRESS, RESOURCE_EGRESS_TLS, RESOURCE_FAULT, RESOURCE_MIRROR, RESOURCE_ROUTING,
};

/// At most this many workloads rendered, workloads explained and hosts per
/// input: `explain` compiles all four configs per request, and one
/// execution should stay in the milliseconds whatever the document count.
const MAX_WORKLOADS: usize = 4;
const MAX_EXPLAINED: usize = 2;
const MAX_HOSTS: usize = 3;

/// The file the store reads: one per fuzzing process (libFuzzer's -fork and
/// -jobs run several), in the temp dir.
fn policy_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-fuzz-istio-yaml-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        dir.join("policy.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let file = policy_file();
    if let Err(e) = std::fs::write(file, data) {
        panic!("{}: {e}", file.display());
    }
    // `xds-ext validate`: the load, then what rendering finds.
    let (store, problems) = ConfigStore::load_paths(std::slice::from_ref(file));
    for problem in &problems {
        let _ = problem.to_string();
    }
    for problem in store.render_problems() {
        let _ = problem.to_string();
    }

    let docs = store.documents();
    let mut workloads = vec![Workload { namespace: "default".into(), labels: BTreeMap::new() }];
    let mut hosts: Vec<String> = Vec::new();
    for doc in docs {
        let selector = match &doc.spec {
            Spec::Gateway(g) => Some(g.selector.clone()),
            Spec::Sidecar(s) => s.selector.clone(),
            Spec::TrafficPolicy(t) => t.selector.clone(),
            Spec::VirtualService(vs) => {
                hosts.extend(vs.hosts.iter().cloned());
                None
            }
            _ => None,
        };
        let labels = selector.unwrap_or_default();
        let workload = Workload { namespace: doc.key.namespace.clone(), labels };
        if !workloads.contains(&workload) {
            workloads.push(workload);
        }
    }
    hosts.truncate(MAX_HOSTS);
    hosts.push("unknown.example.com".into());

    // `xds-ext render` and what the server pushes.
    for (index, workload) in workloads.iter().take(MAX_WORKLOADS).enumerate() {
        let Ok(configs) = store.render_configs(workload) else { continue };
        let Ok(rendered) = configs.to_rendered() else { continue };
        for (name, json) in &rendered.resources {
            let accepted = match name.as_str() {
                RESOURCE_ROUTING => check(CompiledRouting::from_json(json.as_bytes())),
                RESOURCE_FAULT => check(CompiledFault::from_json(json.as_bytes())),
                RESOURCE_MIRROR => check(CompiledMirror::from_json(json.as_bytes())),
                RESOURCE_EGRESS | RESOURCE_EGRESS_TLS => check(CompiledEgress::from_json(json.as_bytes())),
                // The combined filter (switchyard.wasm).
                "switchyard.http" => check(CompiledChain::from_json(json.as_bytes())),
                other => Err(format!("a resource xds-ext does not serve: {other}")),
            };
            if let Err(e) = accepted {
                panic!("xds-ext rendered {name} for {workload:?} and the filter refuses it: {e}\n{json}");
            }
        }
        // `xds-ext explain` for each routed host, as a plain and a jason request.
        for host in hosts.iter().filter(|_| index < MAX_EXPLAINED) {
            for (url, headers) in [
                (format!("http://{host}/"), vec![]),
                (format!("http://{host}:9080/api/v1/products?id=1"), vec!["end-user: jason".to_owned()]),
                (format!("https://{host}/"), vec![]),
            ] {
                if let Ok(request) = RequestSpec::parse("GET", &url, &headers) {
                    if let Ok(explanation) = explain(&configs, &request, data.len() as u64) {
                        let _ = explanation.to_text();
                    }
                }
            }
        }
    }

    // `xds-ext manifests --for all`, as YAML.
    for envoy_filter in manifests(docs, Target::All).envoy_filters {
        let _ = to_yaml(&envoy_filter);
    }
});

fn check<C>(result: Result<C, ConfigError>) -> Result<(), String> {
    result.map(drop).map_err(|e| e.to_string())
}
