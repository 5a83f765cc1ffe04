//! The bad-config table: one row per way a config directory can be wrong.
//!
//! Each row is checked twice, with the real binary:
//! - `xds-ext validate DIR` on bookinfo's good policy plus the row's
//!   entries: its exit code, and a line naming the file (and where it has
//!   them, the line, document and field) with the expected message;
//! - one `xds-ext serve` for the whole table, watching a directory with the
//!   same good policy: the row's entries are dropped in, the problem shows
//!   in `/debug/config`, the routing config fetched over ECDS is byte for
//!   byte the last good one, the entries are removed, the problem goes.
//!
//! Tests may run as root, for whom `chmod 000` stops nothing: then every
//! xds-ext of this file runs as `nobody` (uid 65534), so the unreadable row
//! is really unreadable. About 20 s.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use switchyard_tests::bootstrap::xds_ext_binary;
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use tonic::transport::Endpoint;

/// An entry a row puts in the directory.
enum Entry {
    Text(String),
    Bytes(Vec<u8>),
    /// A file of this many bytes (sparse: refused by its size, never read).
    Sized(u64),
    Symlink(&'static str),
    /// An empty directory.
    Dir,
    Fifo,
    Socket,
    /// Valid YAML with no permission to read it.
    Unreadable(String),
}

struct Row {
    name: &'static str,
    /// Paths inside the directory (the first component is what the row removes).
    entries: Vec<(&'static str, Entry)>,
    /// In one line of `validate`'s output and one problem of the server:
    /// `/FILE:LINE: Kind ns/name: field: message`, or a part of it.
    expect: String,
    /// `xds-ext validate`: 1 with an error, 0 with warnings only.
    exit: i32,
    /// The server goes on serving the last good config; false where a
    /// document of the row is valid and applies (one with a warning only,
    /// the first of two with one name).
    last_good: bool,
}

fn row(name: &'static str, file: &'static str, entry: Entry, expect: &str, exit: i32) -> Row {
    Row { name, entries: vec![(file, entry)], expect: expect.to_owned(), exit, last_good: true }
}

/// A VirtualService `bad` for ratings (which bookinfo's good policy leaves
/// alone) with `hosts` and the `http` lines given; its `http` starts at line 8.
fn vs(hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bad\nspec:\n  hosts: {hosts}\n  \
         http:\n{http}"
    )
}

/// A rule routing to ratings v1, then `extra` lines inside it (from line 10).
fn rule(extra: &str) -> String {
    vs("[ratings]", &format!("  - route:\n    - destination: {{host: ratings, subset: v1}}\n{extra}"))
}

/// A match with `uri` (line 9), routing to ratings v1.
fn matching(uri: &str) -> String {
    vs(
        "[ratings]",
        &format!("  - match:\n    - uri: {uri}\n    route:\n    - destination: {{host: ratings, subset: v1}}\n"),
    )
}

/// A fault block (line 9) before the route.
fn fault(block: &str) -> String {
    vs(
        "[ratings]",
        &format!("  - fault:\n      {block}\n    route:\n    - destination: {{host: ratings, subset: v1}}\n"),
    )
}

/// 10 000 valid rules, then one whose timeout is negative; its line.
fn ten_thousand_rules() -> (String, usize) {
    let mut http = String::new();
    for i in 0..10_000 {
        http.push_str(&format!(
            "  - match:\n    - headers: {{end-user: {{exact: user{i}}}}}\n    route:\n    - destination: {{host: ratings, \
             subset: v1}}\n"
        ));
    }
    http.push_str("  - route:\n    - destination: {host: ratings, subset: v1}\n    timeout: -1s\n");
    let text = vs("[ratings]", &http);
    let line = text.lines().count();
    (text, line)
}

fn alias_bomb() -> String {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text
}

fn rows() -> Vec<Row> {
    let d = "VirtualService default/bad";
    let (big, big_line) = ten_thousand_rules();
    let mut rows = vec![
        row("YAML syntax: an unclosed flow mapping", "syntax.yaml", Entry::Text("kind: Service\nmetadata: {name: x\nspec: {}\n".into()),
            "/syntax.yaml:3: YAML syntax error: while parsing a flow mapping", 1),
        row("YAML syntax: a tab in the indentation", "tab.yaml", Entry::Text("apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n".into()),
            "/tab.yaml:4: YAML syntax error: tabs disallowed", 1),
        row("YAML syntax: a duplicate key", "dupkey.yaml", Entry::Text("apiVersion: v1\nkind: Service\nkind: Service\n".into()),
            "/dupkey.yaml:3: duplicate key `kind`", 1),
        row("JSON syntax", "bad.json", Entry::Text(r#"{"apiVersion": "v1", "kind": "Service",,}"#.into()),
            "/bad.json:1: YAML syntax error", 1),
        row("wrong type: hosts a string", "hosts-type.yaml", Entry::Text(rule("").replace("[ratings]", "ratings")),
            &format!("/hosts-type.yaml:6: {d}: spec.hosts: expected a list, found a scalar"), 1),
        row("wrong type: weight a word", "weight-type.yaml", Entry::Text(rule("      weight: fifty\n")),
            &format!("/weight-type.yaml:10: {d}: spec.http[0].route[0].weight: expected an integer from 0 to 1000000, found \"fifty\""), 1),
        row("wrong type: retries a list", "retries-type.yaml", Entry::Text(rule("    retries: [3]\n")),
            &format!("/retries-type.yaml:10: {d}: spec.http[0].retries: expected a mapping, found a list"), 1),
        row("unknown kind", "kind.yaml", Entry::Text("apiVersion: networking.istio.io/v1\nkind: VirtualSrvice\nmetadata: {name: x}\n".into()),
            "/kind.yaml:1: kind VirtualSrvice (networking.istio.io/v1) ignored: Switchyard does not use it", 0),
        row("unsupported apiVersion", "api.yaml", Entry::Text(rule("").replace("networking.istio.io/v1", "networking.istio.io/v2")),
            "/api.yaml:1: apiVersion: unsupported apiVersion \"networking.istio.io/v2\"", 1),
        row("unknown field in a rule", "field.yaml", Entry::Text(rule("    retrys: {attempts: 3}\n")),
            &format!("/field.yaml:10: {d}: spec.http[0].retrys: unknown field `retrys` is ignored"), 0),
        row("a field Switchyard refuses", "cors.yaml", Entry::Text(rule("    corsPolicy: {allowOrigins: [{exact: a.com}]}\n")),
            &format!("/cors.yaml:10: {d}: spec.http[0].corsPolicy: "), 1),
        row("missing metadata.name", "noname.yaml", Entry::Text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {}\nspec: {hosts: [ratings]}\n".into()),
            "/noname.yaml:3: VirtualService: metadata: metadata.name is required", 1),
        row("an invalid regex", "regex.yaml", Entry::Text(matching("{regex: '(unclosed'}")),
            &format!("/regex.yaml:9: {d}: spec.http[0].match[0].uri.regex: invalid regex \"(unclosed\""), 1),
        row("an oversized regex", "bigregex.yaml", Entry::Text(matching(&format!("{{regex: '{}'}}", "(a|b)".repeat(2000)))),
            &format!("/bigregex.yaml:9: {d}: spec.http[0].match[0].uri.regex: regex "), 1),
        row("a negative duration", "neg.yaml", Entry::Text(rule("    timeout: -1s\n")),
            &format!("/neg.yaml:10: {d}: spec.http[0].timeout: invalid duration \"-1s\""), 1),
        row("a huge duration", "huge.yaml", Entry::Text(rule("    timeout: 100000000000000s\n")),
            &format!("/huge.yaml:10: {d}: spec.http[0].timeout: duration \"100000000000000s\" is too large"), 1),
        row("a duration that is not one", "soon.yaml", Entry::Text(rule("    timeout: soon\n")),
            &format!("/soon.yaml:10: {d}: spec.http[0].timeout: invalid duration \"soon\""), 1),
        row("a negative fixed delay", "delay.yaml", Entry::Text(fault("delay: {fixedDelay: -3s, percentage: {value: 10}}")),
            &format!("/delay.yaml:9: {d}: spec.http[0].fault.delay.fixedDelay: invalid duration \"-3s\""), 1),
        row("a delay percentage over 100", "pct.yaml", Entry::Text(fault("delay: {fixedDelay: 1s, percentage: {value: 150}}")),
            &format!("/pct.yaml:9: {d}: spec.http[0].fault.delay.percentage.value: percentage 150 is not within 0..100"), 1),
        row("a negative abort percentage", "negpct.yaml", Entry::Text(fault("abort: {httpStatus: 503, percentage: {value: -5}}")),
            &format!("/negpct.yaml:9: {d}: spec.http[0].fault.abort.percentage.value: percentage -5 is not within 0..100"), 1),
        row("an abort status that is not HTTP", "status.yaml", Entry::Text(fault("abort: {httpStatus: 999, percentage: {value: 5}}")),
            &format!("/status.yaml:9: {d}: spec.http[0].fault.abort.httpStatus: http_status 999 is not within 200..=599"), 1),
        row("a mirror percentage over 100", "mirror.yaml", Entry::Text(rule("    mirror: {host: ratings, subset: v1}\n    mirrorPercentage: {value: 200}\n")),
            &format!("/mirror.yaml:11: {d}: spec.http[0].mirrorPercentage.value: percentage 200 is not within 0..100"), 1),
        row("negative retries", "attempts.yaml", Entry::Text(rule("    retries: {attempts: -2}\n")),
            &format!("/attempts.yaml:10: {d}: spec.http[0].retries.attempts: expected an integer from 0 to 1000, found \"-2\""), 1),
        row("weights that add up to 0", "zero.yaml", Entry::Text(rule("      weight: 0\n    - destination: {host: ratings, subset: v2}\n      weight: 0\n")),
            &format!("/zero.yaml:8: {d}: spec.http[0].route: every destination has weight 0"), 1),
        row("a subset no DestinationRule defines", "subset.yaml", Entry::Text(rule("").replace("subset: v1", "subset: v9")),
            "/subset.yaml:9: ", 1),
        row("a duplicate name in one file", "twice.yaml", Entry::Text(format!("{}---\n{}", rule(""), rule(""))),
            &format!("/twice.yaml:14: {d}: metadata.name: defined twice in this file, here and at line 4"), 1),
        row("a duplicate of a document in force", "zz-reviews.yaml", Entry::Text(bookinfo("virtual-service-reviews-test-v2.yaml").replace("v2", "v3")),
            "/zz-reviews.yaml:5: VirtualService default/reviews: metadata.name: defined twice, here and at ", 1),
        row("a host that is a URL", "url.yaml", Entry::Text(rule("").replace("[ratings]", "['http://ratings']")),
            &format!("/url.yaml:6: {d}: spec.hosts[0]: \"http://ratings\" is not a host name: a URL"), 1),
        row("a host with a port", "port.yaml", Entry::Text(rule("").replace("[ratings]", "['ratings:9080']")),
            &format!("/port.yaml:6: {d}: spec.hosts[0]: \"ratings:9080\" is not a host name: ':' cannot be part of a host name"), 1),
        row("a host with a space", "space.yaml", Entry::Text(rule("").replace("[ratings]", "['rat ings']")),
            &format!("/space.yaml:6: {d}: spec.hosts[0]: \"rat ings\" is not a host name: ' ' cannot be part of a host name"), 1),
        row("a ServiceEntry port over 65535", "se.yaml", Entry::Text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad}\nspec:\n  hosts: [api.example.com]\n  ports:\n  - {number: 70000, name: http, protocol: HTTP}\n".into()),
            "/se.yaml:7: ServiceEntry default/bad: spec.ports[0].number: expected an integer from 1 to 65535, found \"70000\"", 1),
        row("an outbound mode that is not one", "mode.yaml", Entry::Text("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: bad}\nspec:\n  outboundTrafficPolicy: {mode: SOMETIMES}\n".into()),
            "/mode.yaml:5: Sidecar default/bad: spec.outboundTrafficPolicy.mode: mode \"SOMETIMES\" is not REGISTRY_ONLY or ALLOW_ANY", 1),
        row("an alias bomb", "bomb.yaml", Entry::Text(alias_bomb()),
            "/bomb.yaml:", 1),
        row("nesting 100 deep", "deep.yaml", Entry::Text(format!("a: {}{}\n", "[".repeat(100), "]".repeat(100))),
            "/deep.yaml:1: nesting deeper than 64 levels", 1),
        row("a 10 MB file", "huge-file.yaml", Entry::Sized(10 << 20),
            "/huge-file.yaml: file is 10485760 bytes, over the 8388608-byte limit", 1),
        row("10 000 rules, the last one bad", "rules.yaml", Entry::Text(big),
            &format!("/rules.yaml:{big_line}: {d}: spec.http[10000].timeout: invalid duration \"-1s\""), 1),
        row("not UTF-8", "latin1.yaml", Entry::Bytes(b"apiVersion: v1\nkind: Service\nmetadata:\n  name: caf\xe9\n".to_vec()),
            "/latin1.yaml:4: not UTF-8 text (byte 50)", 1),
        row("binary junk", "junk.yaml", Entry::Bytes(b"\x7fELF\x02\x01\x01\0".iter().copied().chain((0..128u8).cycle().take(4096)).collect()),
            "/junk.yaml:1: control character '\\u{7f}' (byte 0): binary data, not YAML or JSON", 1),
        row("a symlink to itself", "loop.yaml", Entry::Symlink("loop.yaml"),
            "/loop.yaml: a symlink loop (-> loop.yaml): skipped", 0),
        row("a symlink back to the directory", "again", Entry::Symlink("."),
            "/again: a symlink loop: it leads back to ", 0),
        row("a broken symlink", "broken.yaml", Entry::Symlink("gone.yaml"),
            "/broken.yaml: a broken symlink (-> gone.yaml, which does not exist): skipped", 0),
        row("a directory named like a file", "dir.yaml", Entry::Dir,
            "/dir.yaml: a directory, not a file: the files inside it are read", 0),
        row("a FIFO named like a file", "fifo.yaml", Entry::Fifo,
            "/fifo.yaml: not a regular file (a FIFO): skipped", 0),
        row("a socket named like a file", "socket.yaml", Entry::Socket,
            "/socket.yaml: not a regular file (a socket): skipped", 0),
        row("an unreadable file", "secret.yaml", Entry::Unreadable(rule("")),
            "/secret.yaml: cannot read: Permission denied (os error 13)", 1),
    ];
    let nine_deep = "d/d/d/d/d/d/d/d/d";
    rows.push(Row {
        name: "a directory 9 levels deep",
        entries: vec![("d", Entry::Dir), ("d/d/d/d/d/d/d/d/d/x.yaml", Entry::Text(rule("")))],
        expect: format!("/{nine_deep}: more than 8 directories deep: skipped"),
        exit: 0,
        last_good: true,
    });
    for row in rows.iter_mut() {
        row.last_good = !["unknown field in a rule", "a duplicate name in one file"].contains(&row.name);
    }
    rows
}

/// Who runs xds-ext: `nobody` when the test is root.
fn run_as() -> Option<u32> {
    // SAFETY: geteuid has no arguments and cannot fail.
    (unsafe { libc::geteuid() } == 0).then_some(65534)
}

fn open_to_all(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("{e}"));
}

/// Puts `row`'s entries into `dir`; the sockets it binds must live as long as they are there.
fn materialize(row: &Row, dir: &Path) -> Vec<UnixListener> {
    let mut listeners = Vec::new();
    for (name, entry) in &row.entries {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            let mut up = parent;
            while up != dir {
                open_to_all(up);
                up = up.parent().unwrap_or(dir);
            }
        }
        let done = match entry {
            Entry::Text(text) => std::fs::write(&path, text),
            Entry::Bytes(bytes) => std::fs::write(&path, bytes),
            Entry::Sized(size) => std::fs::File::create(&path).and_then(|f| f.set_len(*size)),
            Entry::Symlink(target) => symlink(target, &path),
            Entry::Dir => std::fs::create_dir_all(&path).map(|()| open_to_all(&path)),
            Entry::Fifo => {
                let c_path =
                    std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                // SAFETY: mkfifo reads the NUL-terminated path it is given.
                match unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            }
            Entry::Socket => UnixListener::bind(&path).map(|l| listeners.push(l)),
            Entry::Unreadable(text) => std::fs::write(&path, text)
                .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000))),
        };
        done.unwrap_or_else(|e| panic!("{}: {}: {e}", row.name, path.display()));
    }
    listeners
}

fn remove(row: &Row, dir: &Path) {
    let top = dir.join(row.entries[0].0.split('/').next().unwrap_or_default());
    let meta = std::fs::symlink_metadata(&top).unwrap_or_else(|e| panic!("{}: {e}", top.display()));
    let removed = if meta.is_dir() { std::fs::remove_dir_all(&top) } else { std::fs::remove_file(&top) };
    removed.unwrap_or_else(|e| panic!("{}: {e}", top.display()));
}

/// A fresh copy of bookinfo's good policy, readable by `nobody`.
fn good_policy() -> tempfile::TempDir {
    let dir = XdsExt::config_dir(&[("reviews.yaml", &bookinfo("virtual-service-reviews-test-v2.yaml"))]);
    open_to_all(dir.path());
    dir
}

/// `xds-ext validate` on the good policy and `row`'s entries: what is wrong with its answer.
fn validate(row: &Row) -> Option<String> {
    let dir = good_policy();
    let _sockets = materialize(row, dir.path());
    let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(binary);
    cmd.arg("validate").arg(dir.path());
    if let Some(uid) = run_as() {
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, uid);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("xds-ext validate: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() != Some(row.exit) {
        return Some(format!("{}: validate exits with {:?}, not {}:\n{text}", row.name, out.status.code(), row.exit));
    }
    if !text.lines().any(|l| l.contains(&row.expect)) {
        return Some(format!("{}: validate does not say {:?}:\n{text}", row.name, row.expect));
    }
    None
}

fn node() -> Node {
    let text = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let labels =
        Struct { fields: [("app".to_owned(), text("productpage")), ("version".to_owned(), text("v1"))].into() };
    let metadata = Struct {
        fields: [
            ("NAMESPACE".to_owned(), text("default")),
            ("LABELS".to_owned(), Value { kind: Some(Kind::StructValue(labels)) }),
        ]
        .into(),
    };
    Node { id: "bad-config-table".to_owned(), metadata: Some(metadata), ..Default::default() }
}

/// The routing config xds-ext serves productpage now, as encoded on the wire.
async fn served_routing(xds: &XdsExt) -> Vec<u8> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", xds.grpc_port))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to xds-ext: {e}"));
    let request = DiscoveryRequest {
        node: Some(node()),
        type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".to_owned(),
        resource_names: vec!["switchyard.routing".to_owned()],
        ..Default::default()
    };
    let response = ExtensionConfigDiscoveryServiceClient::new(channel)
        .fetch_extension_configs(request)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}\n{}", xds.log()))
        .into_inner();
    assert_eq!(response.resources.len(), 1, "{response:?}");
    response.resources[0].value.clone()
}

/// Waits until some problem of the server's config contains `text` (or none does).
async fn wait_problem(xds: &XdsExt, row: &Row, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = xds.json("/debug/config").await;
        let problems = config["problems"].as_array().cloned().unwrap_or_default();
        let texts: Vec<&str> = problems.iter().filter_map(|p| p["text"].as_str()).collect();
        let top = format!("/{}", row.entries[0].0.split('/').next().unwrap_or_default());
        let found = if present {
            texts.iter().any(|t| t.contains(&row.expect))
        } else {
            texts.iter().any(|t| t.contains(&top))
        };
        if found == present {
            return;
        }
        let what = if present { "never reported" } else { "still reported" };
        assert!(Instant::now() < deadline, "{}: {what} by the server: {:?}\n{texts:#?}", row.name, row.expect);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_bad_config_is_named_by_validate_and_the_server_keeps_its_last_good_config() {
    let rows = rows();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    // Every row's verdict at once: a table is fixed a row at a time.
    let wrong: Vec<String> = rows.iter().filter_map(validate).collect();
    assert!(wrong.is_empty(), "{} of {} rows:\n\n{}", wrong.len(), rows.len(), wrong.join("\n"));

    let dir = good_policy();
    let modules = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    open_to_all(modules.path());
    let xds = XdsExt::start_as(dir.path(), "127.0.0.1:0", modules.path(), &[], run_as()).await;
    let good = served_routing(&xds).await;
    assert!(String::from_utf8_lossy(&good).contains("jason"), "the good policy routes jason");
    for row in &rows {
        let _sockets = materialize(row, dir.path());
        wait_problem(&xds, row, true).await;
        let served = served_routing(&xds).await;
        if row.last_good {
            assert!(served == good, "{}: the served routing config changed\n{}", row.name, xds.log());
        } else {
            assert!(served != good, "{}: a valid document (with a warning) did not apply", row.name);
        }
        remove(row, dir.path());
        wait_problem(&xds, row, false).await;
        if !row.last_good {
            assert!(served_routing(&xds).await == good, "{}: removing it did not restore the config", row.name);
        }
    }
    assert!(served_routing(&xds).await == good);
}
