//! xds-ext serving a directory laid out as kubelet mounts a ConfigMap, and
//! updated as kubelet updates one: every key is a symlink `key ->
//! ..data/key`, `..data` points at a timestamped directory, and an update
//! writes a new timestamped directory, renames a new `..data_tmp` symlink
//! over `..data`, adds and removes the visible symlinks, then deletes the
//! old directory. The real xds-ext and a real Envoy: the new policy must
//! reach Envoy without a restart, and each document must be read once,
//! through its visible name, never again through `..data` or the
//! timestamped directory.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::bootstrap::static_cluster;
use switchyard_tests::sidecar::{reviews_to, routing_sidecar, send, Reviews, ROUTING};
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use switchyard_tests::{http_client, Envoy};

/// A ConfigMap volume as kubelet's atomic writer keeps it.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    /// The timestamped directory `..data` points at, once projected.
    current: Option<String>,
    updates: u32,
}

impl ConfigMapVolume {
    fn new() -> ConfigMapVolume {
        let dir = tempfile::Builder::new().prefix("switchyard-configmap-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        ConfigMapVolume { dir, current: None, updates: 0 }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Projects `keys` (name, content) the way kubelet does. `pause` runs
    /// between the `..data` swap and the visible-symlink clean-up, so the
    /// watcher can see the in-between state kubelet leaves for a moment.
    async fn project(&mut self, keys: &[(&str, String)], pause: Duration) {
        self.updates += 1;
        let root = self.path().to_path_buf();
        let stamp = format!("..2026_12_02_10_{:02}_00.{:09}", self.updates, 123_456_789 + self.updates);
        std::fs::create_dir(root.join(&stamp)).unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in keys {
            std::fs::write(root.join(&stamp).join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        symlink(&stamp, root.join("..data_tmp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(pause).await;
        for (name, _) in keys {
            let visible = root.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(format!("..data/{name}"), &visible).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{e}")).flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !keys.iter().any(|(key, _)| *key == name) {
                std::fs::remove_file(entry.path()).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(root.join(old)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The entries of the volume's root, sorted.
    fn listing(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

/// Ratings with an abort whose deprecated `percent` draws exactly one
/// warning: the marker that shows how often, and under which path, its
/// file was read.
fn ratings_with_a_warning() -> String {
    bookinfo("virtual-service-ratings-test-abort.yaml").replace("percentage:\n          value: 100.0", "percent: 100")
}

/// Polls until 8 requests in a row answer 200 from `version`.
async fn wait_for_version(envoy: &Envoy, xds: &XdsExt, version: &str) {
    let client = http_client();
    let url = envoy.listener_url("main");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 8 {
        let reply = send(&client, &url, "/reviews/0", &[]).await;
        if reply.status == 200 && reply.version == version {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            let seen = format!("{} {}", reply.status, reply.version);
            assert!(Instant::now() < deadline, "reviews still answers {seen}, wanted {version}:\n{}", xds.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The problems of the loaded config: exactly the ratings warning, named by
/// the visible path (`<volume>/ratings.yaml`) and nothing under `..`.
async fn assert_read_once_through_visible_names(xds: &XdsExt, volume: &ConfigMapVolume) {
    let config = xds.json("/debug/config").await;
    let problems = config["problems"].as_array().cloned().unwrap_or_default();
    let texts: Vec<&str> = problems.iter().filter_map(|p| p["text"].as_str()).collect();
    assert_eq!(problems.len(), 1, "one problem (the ratings warning), not a duplicate definition: {texts:#?}");
    let problem: &Value = &problems[0];
    assert_eq!(problem["severity"], "warning", "{texts:?}");
    assert_eq!(problem["field"], "spec.http[0].fault.abort.percent", "{texts:?}");
    let expected: PathBuf = volume.path().join("ratings.yaml");
    assert_eq!(problem["file"].as_str(), expected.to_str(), "{texts:?}");
}

#[tokio::test]
async fn a_configmap_symlink_swap_reaches_envoy_and_each_document_is_read_once() {
    let reviews = Reviews::start().await;
    let mut volume = ConfigMapVolume::new();
    let mut keys = vec![
        ("services.yaml", bookinfo("services.yaml")),
        ("destination-rule-all.yaml", bookinfo("destination-rule-all.yaml")),
        ("ratings.yaml", ratings_with_a_warning()),
        ("reviews.yaml", reviews_to("v1")),
    ];
    volume.project(&keys, Duration::ZERO).await;
    assert!(volume.listing().contains(&"..data".to_owned()), "{:?}", volume.listing());

    let xds = XdsExt::start(volume.path(), "127.0.0.1:0").await;
    let envoy = Envoy::start(routing_sidecar(
        "productpage-v1",
        &[("app", "productpage"), ("version", "v1")],
        static_cluster("xds-ext", xds.grpc_port, true),
        &reviews,
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for_version(&envoy, &xds, "v1").await;
    assert_read_once_through_visible_names(&xds, &volume).await;
    let first = xds.wait_generation(0).await;
    let first_acked = xds.wait_status("productpage-v1", ROUTING, "SYNCED").await["acked"].clone();

    // An edit of one key: same names, new content, a new timestamped dir.
    keys[3].1 = reviews_to("v2");
    volume.project(&keys, Duration::from_millis(300)).await;
    wait_for_version(&envoy, &xds, "v2").await;
    let second = xds.wait_generation(first).await;
    assert_read_once_through_visible_names(&xds, &volume).await;
    let acked = xds.wait_status("productpage-v1", ROUTING, "SYNCED").await["acked"].clone();
    assert_ne!(acked, first_acked, "a new version was pushed and ACKed");

    // A key renamed: kubelet adds the new symlink and drops the old one
    // after the swap (the old one dangles meanwhile).
    keys[3] = ("reviews-v3.yaml", reviews_to("v3"));
    volume.project(&keys, Duration::from_millis(300)).await;
    wait_for_version(&envoy, &xds, "v3").await;
    xds.wait_generation(second).await;
    assert_read_once_through_visible_names(&xds, &volume).await;
    let listing = volume.listing();
    assert_eq!(listing.iter().filter(|n| n.starts_with("..2026")).count(), 1, "old dirs removed: {listing:?}");
    assert!(!listing.contains(&"reviews.yaml".to_owned()), "{listing:?}");

    assert!(xds.metric("xds_ext_config_reloads_total").await >= 3.0);
    assert_eq!(xds.metric("xds_ext_config_errors").await, 0.0);
    assert!(xds.log().matches("grpc listening on").count() == 1, "one process all along:\n{}", xds.log());
}
