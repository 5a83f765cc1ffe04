//! The offline verbs, istioctl-style: `validate`, `render`, `explain`, and
//! `validate-filter-config` (filter JSON checked by the filters' own code).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::explain::{explain, RequestSpec};
use super::manifests;
use super::{ConfigStore, Problem};
use crate::workload::Workload;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check Istio (VirtualService, DestinationRule, Gateway, ServiceEntry,
    /// Sidecar), Kubernetes Service and Switchyard TrafficPolicy documents.
    /// Exit status 0 when every document is valid, 1 otherwise; one line per
    /// problem: `FILE:LINE: Kind namespace/name: field.path: message`
    /// (warnings are printed too, prefixed `warning: `, and do not fail).
    Validate {
        /// YAML/JSON files, or directories to read recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format: `table` (one line per problem) or `json`/`yaml`.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the filter configurations a workload would receive (JSON keyed
    /// by ECDS resource name: switchyard.routing, .fault, .mirror, .egress,
    /// .egress-tls, and .http, the combined filter's config: the stages that
    /// do something for the workload, as sections).
    Render {
        /// YAML/JSON files, or directories to read recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Output format: `json` (default) or `yaml`; `table` lists the
        /// virtual hosts and rules.
        #[arg(short, long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Show which rule a request hits and what each filter does with it:
    /// egress allow/deny, route (cluster, timeout, retries, rewrite,
    /// redirect), fault (delay/abort) and mirror, as the filters decide it,
    /// and which of those stages the combined filter (switchyard.http) runs.
    ///
    /// Example: xds-ext explain examples/bookinfo/services.yaml
    /// examples/bookinfo/destination-rule-all.yaml
    /// examples/bookinfo/virtual-service-reviews-test-v2.yaml --labels
    /// app=productpage -- GET http://reviews:9080/reviews/0 -H 'end-user: jason'
    Explain {
        /// YAML/JSON files, or directories to read recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// A request header, `name: value` (repeatable; also accepted after the URL).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The random draw the filters would use for this request (weights,
        /// percentages). 0 makes every share above 0% hit.
        #[arg(long, default_value_t = 0)]
        random: u64,
        /// Output format: `table` (default), `json` or `yaml`.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The request, after `--`: METHOD URL [-H 'name: value']...
        #[arg(last = true, required = true, value_name = "METHOD URL [-H HEADER]...")]
        request: Vec<String>,
    },
    /// Print the Istio EnvoyFilters that depend on the policy: the route
    /// patches that make exactly the hosts the documents manage read the
    /// routing filter's cluster header (sidecars: a first route in each
    /// managed `host:port` virtual host; gateways: the virtual hosts of the
    /// VirtualServices bound to them). The filters themselves come from
    /// envoyfilter-manifests/. On any error in the documents: the problems
    /// on stderr, exit status 1, nothing on stdout.
    Manifests {
        /// YAML/JSON files, or directories to read recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Which proxies: `sidecars`, `ingress-gateway` (every Gateway not
        /// selecting `istio: egressgateway`), `egress-gateway`, or `all`.
        #[arg(long = "for", value_enum, default_value_t = ManifestTarget::All)]
        target: ManifestTarget,
        /// `yaml` (documents separated by `---`) or `json` (a Kubernetes `List`).
        #[arg(short, long, value_enum, default_value_t = ManifestFormat::Yaml)]
        output: ManifestFormat,
    },
    /// Check Switchyard filter configurations (the JSON a filter receives as
    /// its plugin configuration) with the same validation the filters run.
    /// Exit status 0 when every file is valid, 1 otherwise; one line per
    /// problem: `FILE: field.path: message`.
    ValidateFilterConfig {
        /// Which filter the files configure.
        #[arg(long, value_enum)]
        filter: Filter,
        /// JSON files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Who receives the config: the node metadata an Istio proxy sends.
#[derive(Args, Clone)]
pub struct WorkloadArgs {
    /// The workload's namespace (Istio `NAMESPACE`).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The workload's labels, `k=v[,k=v]` (repeatable; Istio `LABELS`).
    #[arg(short, long, value_name = "K=V[,K=V]")]
    pub labels: Vec<String>,
}

impl WorkloadArgs {
    pub fn workload(&self) -> Result<Workload, String> {
        Ok(Workload { namespace: self.namespace.clone(), labels: parse_labels(&self.labels)? })
    }
}

/// `k=v,k=v` (repeatable) → labels.
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in args.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("label {pair:?} is not key=value")),
        }
    }
    Ok(labels)
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ManifestTarget {
    Sidecars,
    IngressGateway,
    EgressGateway,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ManifestFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Filter {
    Routing,
    Fault,
    Mirror,
    Egress,
    /// The combined filter (switchyard.wasm, resource switchyard.http):
    /// `{"version":1,"egress":{...},"routing":{...},"fault":{...},"mirror":{...}}`.
    Switchyard,
}

pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Validate { paths, output } => validate(&paths, output),
        ConfigCommand::Render { paths, workload, output } => render(&paths, &workload, output),
        ConfigCommand::Explain { paths, workload, headers, random, output, request } => {
            explain_verb(&paths, &workload, headers, random, output, &request)
        }
        ConfigCommand::Manifests { paths, target, output } => manifests_verb(&paths, target, output),
        ConfigCommand::ValidateFilterConfig { filter, files } => validate_filter_configs(filter, &files),
    }
}

fn manifests_verb(paths: &[PathBuf], target: ManifestTarget, output: ManifestFormat) -> ExitCode {
    let Some(store) = load_for_workload(paths) else { return ExitCode::FAILURE };
    let (target, label) = match target {
        ManifestTarget::Sidecars => (manifests::Target::Sidecars, "sidecars"),
        ManifestTarget::IngressGateway => (manifests::Target::IngressGateway, "ingress-gateway"),
        ManifestTarget::EgressGateway => (manifests::Target::EgressGateway, "egress-gateway"),
        ManifestTarget::All => (manifests::Target::All, "all"),
    };
    let generated = manifests::manifests(store.documents(), target);
    for note in &generated.notes {
        eprintln!("note: {note}");
    }
    // Encode everything before printing anything: a failure leaves stdout empty.
    let text = match output {
        ManifestFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": generated.envoy_filters});
            serde_json::to_string_pretty(&list).map(|t| t + "\n").map_err(|e| e.to_string())
        }
        ManifestFormat::Yaml => {
            let mut text = format!(
                "# Generated by `xds-ext manifests --for {label}`: the route patches for the hosts the policy \
                 manages.\n# Edit the policy and regenerate; do not edit this file.\n"
            );
            let documents: Result<Vec<String>, String> =
                generated.envoy_filters.iter().map(super::yaml::to_yaml).collect();
            documents.map(|documents| {
                for document in documents {
                    text.push_str("---\n");
                    text.push_str(&document);
                    text.push('\n');
                }
                text
            })
        }
    };
    match text {
        Ok(text) => {
            print!("{text}");
            eprintln!("{} EnvoyFilter(s) for {label}", generated.envoy_filters.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot encode the manifests: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(paths: &[PathBuf], output: Output) -> ExitCode {
    let (store, mut problems) = ConfigStore::load_paths(paths);
    let known: std::collections::BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
    problems.extend(store.render_problems().into_iter().filter(|p| !known.contains(&p.to_string())));
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let failed = problems.iter().any(Problem::is_error);
    match output {
        Output::Table => {
            for p in &problems {
                println!("{p}");
            }
            let errors = problems.iter().filter(|p| p.is_error()).count();
            // A document with a reference error is loaded but not valid.
            let with_errors: std::collections::BTreeSet<&str> =
                problems.iter().filter(|p| p.is_error()).map(|p| p.document.as_str()).collect();
            let valid = store.documents().iter().filter(|d| !with_errors.contains(d.key.to_string().as_str())).count();
            let summary =
                format!("{valid} document(s) valid, {errors} error(s), {} warning(s)", problems.len() - errors);
            eprintln!("{summary}");
        }
        Output::Json | Output::Yaml => {
            let value = serde_json::json!({
                "valid": !failed,
                "documents": store.documents().iter().map(|d| d.key.to_string()).collect::<Vec<_>>(),
                "problems": problems,
            });
            if !print_value(&value, output) {
                return ExitCode::FAILURE;
            }
        }
    }
    exit(!failed)
}

/// Loads the paths for render/explain: problems go to stderr; errors stop.
fn load_for_workload(paths: &[PathBuf]) -> Option<ConfigStore> {
    let (store, problems) = ConfigStore::load_paths(paths);
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.iter().any(Problem::is_error) {
        eprintln!("the documents have errors: fix them first (xds-ext validate shows them)");
        return None;
    }
    Some(store)
}

fn render(paths: &[PathBuf], args: &WorkloadArgs, output: Output) -> ExitCode {
    let workload = match args.workload() {
        Ok(w) => w,
        Err(e) => return usage(&e),
    };
    let Some(store) = load_for_workload(paths) else { return ExitCode::FAILURE };
    let configs = match store.render_configs(&workload) {
        Ok(c) => c,
        Err(problems) => return report_render_problems(&problems),
    };
    let rendered = match configs.to_rendered() {
        Ok(r) => r,
        Err(problems) => return report_render_problems(&problems),
    };
    if output == Output::Table {
        for vh in &configs.routing.virtual_hosts {
            println!("{}  [{}]", vh.name, vh.domains.join(", "));
            for r in &vh.routes {
                let id = format!("{}/{}", vh.name, r.name);
                println!("  {:<40} {}", r.name, configs.sources.get(&id).map(String::as_str).unwrap_or(""));
            }
        }
        let hosts: Vec<&str> = configs.egress.hosts.iter().map(|h| h.host.as_str()).collect();
        let mode = serde_json::to_value(configs.egress.outbound_traffic_policy).unwrap_or_default();
        println!("egress {}: {}", mode.as_str().unwrap_or("?"), hosts.join(", "));
        println!("{}", super::explain::combined_stages(&configs));
        return ExitCode::SUCCESS;
    }
    let mut object = serde_json::Map::new();
    for (name, text) in &rendered.resources {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => {
                object.insert(name.clone(), value);
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    exit(print_value(&serde_json::Value::Object(object), output))
}

fn report_render_problems(problems: &[Problem]) -> ExitCode {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!("this workload's configs cannot be rendered");
    ExitCode::FAILURE
}

fn explain_verb(
    paths: &[PathBuf],
    args: &WorkloadArgs,
    mut headers: Vec<String>,
    random: u64,
    output: Output,
    request: &[String],
) -> ExitCode {
    let workload = match args.workload() {
        Ok(w) => w,
        Err(e) => return usage(&e),
    };
    let (method, url, rest) = match request {
        [method, url, rest @ ..] => (method, url, rest),
        _ => return usage("give the request after `--`: METHOD URL [-H 'name: value']..."),
    };
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-H" | "--header" => match rest.next() {
                Some(h) => headers.push(h.clone()),
                None => return usage("-H needs a value: -H 'name: value'"),
            },
            other => match other.strip_prefix("-H").or_else(|| other.strip_prefix("--header=")) {
                Some(h) if !h.is_empty() => headers.push(h.to_string()),
                _ => return usage(&format!("unexpected argument {other:?} after the URL (only -H 'name: value')")),
            },
        }
    }
    let request = match RequestSpec::parse(method, url, &headers) {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    let Some(store) = load_for_workload(paths) else { return ExitCode::FAILURE };
    let configs = match store.render_configs(&workload) {
        Ok(c) => c,
        Err(problems) => return report_render_problems(&problems),
    };
    match explain(&configs, &request, random) {
        Ok(explanation) => match output {
            Output::Table => {
                print!("{}", explanation.to_text());
                ExitCode::SUCCESS
            }
            Output::Json | Output::Yaml => match serde_json::to_value(&explanation) {
                Ok(value) => exit(print_value(&value, output)),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            },
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints JSON (pretty) or YAML; false when encoding failed.
fn print_value(value: &serde_json::Value, output: Output) -> bool {
    let text = match output {
        Output::Yaml => super::yaml::to_yaml(value),
        _ => serde_json::to_string_pretty(value).map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(e) => {
            eprintln!("cannot encode output: {e}");
            false
        }
    }
}

fn validate_filter_configs(filter: Filter, files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        let result = std::fs::read(file).map_err(|e| e.to_string()).and_then(|bytes| {
            let checked = match filter {
                Filter::Routing => switchyard_policy::routing::CompiledRouting::from_json(&bytes).map(drop),
                Filter::Fault => switchyard_policy::fault::CompiledFault::from_json(&bytes).map(drop),
                Filter::Mirror => switchyard_policy::mirror::CompiledMirror::from_json(&bytes).map(drop),
                Filter::Egress => switchyard_policy::egress::CompiledEgress::from_json(&bytes).map(drop),
                Filter::Switchyard => switchyard_policy::chain::CompiledChain::from_json(&bytes).map(drop),
            };
            checked.map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => println!("{}: valid", file.display()),
            Err(message) => {
                failed = true;
                println!("{}: {message}", file.display());
            }
        }
    }
    exit(!failed)
}
