//! `switchyard-echo --listen ADDR --service NAME --version V [--call URL]...
//! [--via ADDR]`: the harness's echo upstream as a standalone server
//! (HTTP/1.1 and h2c), for examples, docker-compose meshes and benchmarks.
//! With `--call`, it calls those URLs before answering (productpage →
//! reviews → ratings), through its sidecar at `--via`. See
//! `switchyard_tests::echo`.

use std::process::ExitCode;

use clap::Parser;
use switchyard_tests::{EchoOptions, EchoServer};

#[derive(Parser, Debug)]
#[command(name = "switchyard-echo", about = "Echo upstream: answers each request with a JSON description of it")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Service name reported in the body and `x-echo-service`.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Version reported in the body and `x-echo-version` (e.g. v1).
    #[arg(long, default_value = "v1")]
    version: String,
    /// A URL to GET before answering each request, forwarding the user and
    /// trace headers (repeat for several, called in order); the answers are
    /// reported in the body's `calls`.
    #[arg(long = "call", value_name = "URL")]
    calls: Vec<String>,
    /// Send the --call requests to this address (the sidecar's outbound
    /// listener, e.g. 127.0.0.1:15001) with each URL's authority as Host.
    #[arg(long, value_name = "ADDR")]
    via: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = EchoOptions {
        service: args.service.clone(),
        version: args.version.clone(),
        calls: args.calls,
        via: args.via,
        ..Default::default()
    };
    let server = match EchoServer::bind_with(args.listen.as_str(), options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard-echo: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("switchyard-echo service={} version={} listening on {}", args.service, args.version, server.addr());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard-echo: installing SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}
