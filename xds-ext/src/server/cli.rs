//! The server verbs: `serve` (the ECDS server) and `status` (per-proxy sync
//! state from a running server, like `istioctl proxy-status`).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::cache::{Cache, Generation};
use super::ecds::{Ecds, Shared};
use super::grpc::EcdsServer;
use super::live::LiveConfig;
use super::resources::{ModuleLayout, ModuleSource, Modules};
use super::tls::{self, GrpcTls, TlsArgs};
use super::{admin, log, watch as dir_watch};
use crate::workload::RESOURCES;

/// istiod's monitoring port; loopback only unless asked.
const DEFAULT_ADMIN: &str = "127.0.0.1:15014";
/// How long a shutdown waits for streams and connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Serve each Envoy its Switchyard filter configs over ECDS, from a
    /// watched directory of Istio (and Switchyard) YAML.
    Serve(Box<ServeArgs>),
    /// Per-proxy sync status from a running `xds-ext serve`: SYNCED, STALE,
    /// NOT SENT or NACKED (with Envoy's error), like `istioctl proxy-status`.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The directory of YAML documents (e.g. a mounted ConfigMap); watched.
    #[arg(long)]
    config_dir: PathBuf,
    /// The ECDS gRPC address (port 0: any free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:15012")]
    grpc: SocketAddr,
    /// The admin HTTP address: /healthz, /readyz, /metrics, /debug/proxies,
    /// /debug/config, /modules/<filter>.wasm.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// The directory of the filters' .wasm modules. Without
    /// --module-base-url, Envoy loads them from this path (`local` code).
    #[arg(long, default_value = "target/switchyard")]
    modules: PathBuf,
    /// Serve the modules as `remote` code instead: Envoy fetches
    /// `<URL>/<filter>.wasm` (xds-ext serves them at /modules/ on the admin
    /// address) and checks their sha256.
    #[arg(long, requires = "module_cluster")]
    module_base_url: Option<String>,
    /// The Envoy cluster that reaches --module-base-url.
    #[arg(long, requires = "module_base_url")]
    module_cluster: Option<String>,
    /// Send the modules' bytes inside each resource (`local` code with
    /// `inline_bytes`) instead of a path or a URL: nothing to fetch or mount,
    /// so a config loads whenever it reaches Envoy (Envoy 1.40 fetches
    /// `remote` code only while a listener warms). Costs the module's size
    /// (100-400 KB) per resource and push.
    #[arg(long, conflicts_with = "module_base_url")]
    inline_modules: bool,
    /// Which module switchyard.egress-tls runs: `combined`, switchyard.wasm
    /// in the VM of switchyard.http (vm_id `switchyard`: one VM per worker
    /// for the HTTP chain and the TLS filter); `single`, egress.wasm in a VM
    /// of its own. Both serve switchyard.http and the four single HTTP
    /// filters: an Envoy runs what it subscribes to.
    #[arg(long, value_enum, default_value_t = Layout::Combined)]
    module_layout: Layout,
    /// Most ECDS streams served at once; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 20_000)]
    max_streams: usize,
    /// Largest request accepted from a proxy, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_request_bytes: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The admin address of the running xds-ext.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: String,
    /// `table`: a row per proxy and a column per resource, then what is not
    /// SYNCED and the config's problems; `json`/`yaml`: both admin views
    /// (`/debug/proxies`, `/debug/config`) as they are.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Layout {
    Combined,
    Single,
}

pub fn run(command: ServerCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("starting the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        ServerCommand::Serve(args) => runtime.block_on(serve(*args)),
        ServerCommand::Status(args) => runtime.block_on(status(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    super::memory::tune();
    // Bad TLS files fail the start before anything listens.
    let tls = tls::load(&args.tls)?;
    let mut grpc_builder = grpc_server_builder(tls.as_ref())?;
    let modules_dir = std::path::absolute(&args.modules).map_err(|e| format!("--modules: {e}"))?;
    let config_dir = std::path::absolute(&args.config_dir).map_err(|e| format!("--config-dir: {e}"))?;
    let source = match (args.module_base_url, args.module_cluster) {
        (Some(base_url), Some(cluster)) => ModuleSource::Remote { base_url, cluster },
        _ if args.inline_modules => ModuleSource::Inline,
        _ => ModuleSource::Local { dir: modules_dir.clone() },
    };
    let layout = match args.module_layout {
        Layout::Combined => ModuleLayout::Combined,
        Layout::Single => ModuleLayout::Single,
    };
    let (modules, warnings) = Modules::load(&modules_dir, source, layout)?;
    for warning in warnings {
        log(format_args!("warning: {warning}"));
    }

    let (publish, generation) = watch::channel(Generation::first());
    let (stop, stopped) = watch::channel(false);
    let cache = Cache::new(LiveConfig::new(), modules);
    let identity_check = tls.as_ref().and_then(GrpcTls::identity_check);
    let shared =
        Arc::new(Shared::new(cache, generation, stopped.clone(), args.max_streams).with_identity_check(identity_check));

    let grpc = TcpListener::bind(args.grpc).await.map_err(|e| format!("binding --grpc {}: {e}", args.grpc))?;
    let admin_listener =
        TcpListener::bind(args.admin).await.map_err(|e| format!("binding --admin {}: {e}", args.admin))?;
    let grpc_addr = grpc.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    match &tls {
        Some(tls) => log(format_args!("grpc listening on {grpc_addr} ({})", tls.describe())),
        None => log(format_args!("grpc listening on {grpc_addr}")),
    }
    log(format_args!("admin listening on {admin_addr}"));

    tokio::spawn(on_signal(stop));
    let admin_server = axum::serve(admin_listener, admin::router(shared.clone()))
        .with_graceful_shutdown(stopping(stopped.clone()))
        .into_future();
    let admin_task = tokio::spawn(admin_server);

    // The first load completes before any proxy is served, so no proxy ever
    // receives the config of an empty directory.
    let dir_watch = dir_watch::DirWatch::start(&config_dir).await;
    let recheck = dir_watch::load(&config_dir, &shared, &publish).await;
    let watcher = tokio::spawn(dir_watch.run(shared.clone(), publish, recheck, stopped.clone()));

    let service = EcdsServer::new(Ecds::new(shared.clone()), args.max_request_bytes);
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_server =
        grpc_builder.add_service(service).serve_with_incoming_shutdown(incoming, stopping(stopped.clone()));
    let mut grpc_task = tokio::spawn(grpc_server);

    let mut stopped_wait = stopped.clone();
    tokio::select! {
        result = &mut grpc_task => {
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("grpc server: {e}")),
                Err(e) => Err(format!("grpc server: {e}")),
            };
        }
        _ = stopped_wait.wait_for(|s| *s) => {}
    }
    // Streams end on the stop signal; give connections a moment to close.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = grpc_task.await;
        let _ = admin_task.await;
        let _ = watcher.await;
    })
    .await;
    log(format_args!("stopped"));
    Ok(())
}

fn grpc_server_builder(tls: Option<&GrpcTls>) -> Result<tonic::transport::Server, String> {
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        // tls::load checked every file; this is rustls' own word on the rest.
        builder = builder.tls_config(tls.config.clone()).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    }
    Ok(builder)
}

async fn on_signal(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    log(format_args!("shutting down"));
    let _ = stop.send(true);
}

async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let base = if args.admin.contains("://") { args.admin.clone() } else { format!("http://{}", args.admin) };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let get = |path: &'static str| {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let client = client.clone();
        async move {
            let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            let response = response.error_for_status().map_err(|e| format!("{url}: {e}"))?;
            response.json::<Value>().await.map_err(|e| format!("{url}: {e}"))
        }
    };
    let proxies = get("/debug/proxies").await?;
    let config = get("/debug/config").await?;
    let both = || serde_json::json!({"proxies": proxies, "config": config});
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&both()).map_err(|e| e.to_string())?),
        Output::Yaml => println!("{}", crate::config::to_yaml(&both())?),
        Output::Table => print!("{}", status_table(&proxies, &config)),
    }
    Ok(())
}

/// One row per proxy and one column per resource, then the details that
/// explain anything not SYNCED, then the config's problems.
fn status_table(proxies: &Value, config: &Value) -> String {
    let proxies = proxies.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut rows = vec![["NAME", "NAMESPACE", "LABELS"]
        .into_iter()
        .map(str::to_owned)
        .chain(RESOURCES.iter().map(|r| r.trim_start_matches("switchyard.").to_uppercase()))
        .collect::<Vec<_>>()];
    let mut details = Vec::new();
    // Envoy opens one stream per ECDS filter: one row per proxy (node id and
    // workload), merging its streams' resources.
    let mut row_of: Vec<(String, usize)> = Vec::new();
    for proxy in proxies {
        let text = |key: &str| proxy[key].as_str().unwrap_or_default().to_owned();
        let node = text("node_id");
        let labels = proxy["labels"]
            .as_object()
            .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>())
            .unwrap_or_default()
            .join(",");
        let key = format!("{node}\n{}\n{labels}", text("namespace"));
        let index = match row_of.iter().find(|(k, _)| *k == key) {
            Some((_, index)) => *index,
            None => {
                let mut row = vec![node.clone(), text("namespace"), labels];
                row.extend(RESOURCES.iter().map(|_| "-".to_owned()));
                rows.push(row);
                row_of.push((key, rows.len() - 1));
                rows.len() - 1
            }
        };
        for (column, name) in RESOURCES.iter().enumerate() {
            let resource = &proxy["resources"][name];
            if let Some(status) = resource["status"].as_str() {
                rows[index][3 + column] = status.to_owned();
            }
            if let Some(message) = resource["nack"]["message"].as_str() {
                details.push(format!(
                    "{node}: {name} NACKED version {} (proxy runs {}): {message}",
                    resource["nack"]["version"].as_str().unwrap_or("?"),
                    resource["acked"].as_str().unwrap_or("nothing"),
                ));
            }
        }
        if let Some(error) = proxy["render_error"].as_str() {
            let line = format!("{node}: cannot render its config (serving the last good one): {error}");
            if !details.contains(&line) {
                details.push(line);
            }
        }
    }
    let mut out = String::new();
    if proxies.is_empty() {
        out.push_str("no proxies connected\n");
    } else {
        let widths: Vec<usize> =
            (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
        for row in &rows {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    for line in details {
        out.push_str(&line);
        out.push('\n');
    }
    let problems = config["problems"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !problems.is_empty() {
        let errors = problems.iter().filter(|p| p["severity"] == "error").count();
        out.push_str(&format!("config: {errors} error(s), {} warning(s)\n", problems.len() - errors));
        for p in problems {
            out.push_str(&format!("  {}\n", p["text"].as_str().unwrap_or_default()));
        }
    }
    if config["ready"] == Value::Bool(false) {
        out.push_str("config: not loaded yet\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_each_resource_and_explains_a_nack() {
        let proxies = json!([{
            "node_id": "reviews-v1", "namespace": "default", "labels": {"app": "reviews", "version": "v1"},
            "render_error": null,
            "resources": {
                "switchyard.routing": {"status": "NACKED", "acked": "aaaa", "nack": {"version": "bbbb", "message": "Unable to create Wasm plugin switchyard.routing"}},
            }
        }, {
            "node_id": "reviews-v1", "namespace": "default", "labels": {"app": "reviews", "version": "v1"},
            "resources": {"switchyard.fault": {"status": "SYNCED", "acked": "cccc", "nack": null}}
        }]);
        let config = json!({"ready": true, "problems": [{"severity": "error", "text": "vs.yaml:3: VirtualService default/reviews: spec.http: bad"}]});
        let table = status_table(&proxies, &config);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(lines[2].starts_with("reviews-v1: "), "one row per proxy: {table}");
        assert!(lines[0].ends_with("EGRESS-TLS  HTTP"), "{table}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["reviews-v1", "default", "app=reviews,version=v1", "NACKED", "SYNCED", "-", "-", "-", "-"]);
        assert!(table.contains(
            "reviews-v1: switchyard.routing NACKED version bbbb (proxy runs aaaa): Unable to create Wasm plugin"
        ));
        assert!(table.contains("config: 1 error(s), 0 warning(s)\n  vs.yaml:3: VirtualService"), "{table}");
    }
}
