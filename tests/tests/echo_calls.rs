//! The echo server's calls (`--call`, `--via`): productpage → reviews →
//! ratings as bookinfo does it, with the user and trace headers passed on
//! and every answer reported in the caller's body. Real servers on loopback.

use std::time::Duration;

use switchyard_tests::{http_client, CallReport, EchoOptions, EchoResponse, EchoServer};

async fn echo(service: &str, version: &str, calls: Vec<String>, via: Option<String>) -> EchoServer {
    let options = EchoOptions { service: service.into(), version: version.into(), calls, via, ..Default::default() };
    EchoServer::bind_with("127.0.0.1:0", options).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn get(url: &str, headers: &[(&str, &str)]) -> EchoResponse {
    let mut request = http_client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.json().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test]
async fn a_call_chain_reports_each_hop_and_passes_the_user_and_trace_headers_on() {
    let ratings = echo("ratings", "v1", vec![], None).await;
    let reviews = echo("reviews", "v2", vec![format!("{}/ratings/0", ratings.url())], None).await;
    let details = echo("details", "v1", vec![], None).await;
    let calls = vec![format!("{}/details/0", details.url()), format!("{}/reviews/0?x=1", reviews.url())];
    let productpage = echo("productpage", "v1", calls, None).await;

    let headers =
        [("end-user", "jason"), ("x-request-id", "r-42"), ("x-b3-traceid", "t-7"), ("x-private", "not for ratings")];
    let body = get(&format!("{}/productpage", productpage.url()), &headers).await;

    assert_eq!(body.service, "productpage");
    let [details_call, reviews_call] = body.calls.as_slice() else { panic!("{:#?}", body.calls) };
    assert_eq!((details_call.status, details_call.service.as_str()), (200, "details"));
    assert!(details_call.calls.is_empty());
    assert_eq!(
        (reviews_call.status, reviews_call.service.as_str(), reviews_call.version.as_str()),
        (200, "reviews", "v2")
    );
    assert_eq!(reviews_call.url, format!("{}/reviews/0?x=1", reviews.url()));
    let [ratings_call] = reviews_call.calls.as_slice() else { panic!("{reviews_call:#?}") };
    assert_eq!((ratings_call.status, ratings_call.service.as_str()), (200, "ratings"));

    // Two hops on, ratings still sees who the user is and which trace this is.
    let [at_ratings] = ratings.received().try_into().unwrap_or_else(|r| panic!("{r:#?}"));
    assert_eq!(at_ratings.path, "/ratings/0");
    assert_eq!(at_ratings.header("end-user"), Some("jason"));
    assert_eq!(at_ratings.header("x-request-id"), Some("r-42"));
    assert_eq!(at_ratings.header("x-b3-traceid"), Some("t-7"));
    assert_eq!(at_ratings.header("x-private"), None, "only the user and trace headers are passed on");
    let [at_reviews] = reviews.received().try_into().unwrap_or_else(|r| panic!("{r:#?}"));
    assert_eq!(at_reviews.query, "x=1");
}

#[tokio::test]
async fn calls_through_via_keep_the_url_authority_as_host() {
    // `via` stands where the pod's sidecar would: it gets every call, each
    // naming the service it is for.
    let sidecar = echo("sidecar", "v1", vec![], None).await;
    let calls = vec!["http://reviews:9080/reviews/1".to_owned(), "http://ratings/ratings/1".to_owned()];
    let productpage = echo("productpage", "v1", calls, Some(sidecar.addr().to_string())).await;

    let body = get(&format!("{}/productpage", productpage.url()), &[("end-user", "jason")]).await;
    assert_eq!(body.calls.len(), 2, "{:#?}", body.calls);
    assert!(body.calls.iter().all(|c| c.status == 200 && c.service == "sidecar"), "{:#?}", body.calls);

    let received = sidecar.received();
    let seen: Vec<_> = received.iter().map(|r| (r.authority().unwrap_or_default(), r.path.as_str())).collect();
    assert_eq!(seen, [("reviews:9080", "/reviews/1"), ("ratings", "/ratings/1")]);
    assert!(received.iter().all(|r| r.header("end-user") == Some("jason")));
}

#[tokio::test]
async fn a_failed_call_is_reported_and_the_caller_still_answers() {
    // A port nothing listens on: bind one, note it, let it go.
    let closed = echo("gone", "v1", vec![], None).await;
    let closed_url = format!("{}/x", closed.url());
    closed.shutdown().await;
    let failing = echo("ratings", "v1", vec![], None).await;
    let calls = vec![closed_url.clone(), format!("{}/ratings/0?status=503&delay_ms=50", failing.url())];
    let reviews = echo("reviews", "v3", calls, None).await;

    let body = get(&format!("{}/reviews/0", reviews.url()), &[]).await;
    let [refused, unavailable] = body.calls.as_slice() else { panic!("{:#?}", body.calls) };
    assert_eq!(
        (refused.url.as_str(), refused.status, refused.service.as_str()),
        (closed_url.as_str(), 0, ""),
        "{refused:#?}"
    );
    assert!(!refused.error.is_empty(), "{refused:#?}");
    assert_eq!((unavailable.status, unavailable.service.as_str()), (503, "ratings"));
    assert!(unavailable.duration_ms >= 50, "{unavailable:#?}");
    assert!(unavailable.error.is_empty(), "an echo body is read, not reported as an error: {unavailable:#?}");
}

#[tokio::test]
async fn a_server_without_calls_answers_as_before() {
    let plain = echo("details", "v1", vec![], None).await;
    let response =
        http_client().get(format!("{}/details/0", plain.url())).send().await.unwrap_or_else(|e| panic!("{e}"));
    let text = response.text().await.unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(json.get("calls").is_none(), "no `calls` key without calls: {text}");
    let body: EchoResponse = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(body.calls.is_empty());
}

#[tokio::test]
async fn the_switchyard_echo_binary_calls_through_via() {
    let sidecar = echo("sidecar", "v1", vec![], None).await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        probe.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-echo"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--service", "reviews", "--version", "v2"])
        .args(["--call", "http://ratings:9080/ratings/0", "--via", &sidecar.addr().to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://127.0.0.1:{port}/reviews/0");
    let mut body = None;
    for _ in 0..200 {
        if let Ok(response) = http_client().get(&url).header("end-user", "jason").send().await {
            body = response.json::<EchoResponse>().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = body.unwrap_or_else(|| panic!("switchyard-echo never answered on {url}"));
    let expected = CallReport {
        url: "http://ratings:9080/ratings/0".into(),
        status: 200,
        service: "sidecar".into(),
        version: "v1".into(),
        duration_ms: body.calls.first().map_or(0, |c| c.duration_ms),
        calls: vec![],
        error: String::new(),
    };
    assert_eq!(body.calls, [expected]);
    let [at_sidecar] = sidecar.received().try_into().unwrap_or_else(|r| panic!("{r:#?}"));
    assert_eq!((at_sidecar.authority(), at_sidecar.header("end-user")), (Some("ratings:9080"), Some("jason")));
}
