//! Filter JSON → the ECDS resource Envoy receives: a `TypedExtensionConfig`
//! named after the filter (`switchyard.routing`...) holding an Envoy `Wasm`
//! filter whose plugin `configuration` is the JSON as a
//! `google.protobuf.StringValue`. Each resource is versioned by a hash of its
//! encoded bytes, so equal content means equal version on every proxy and
//! across xds-ext restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, http_uri, AsyncDataSource, DataSource, HttpUri, RemoteDataSource,
    TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm as HttpWasm;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm as NetworkWasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig, VmConfig};
use envoy_types::pb::google::protobuf::{Any, Duration, StringValue};
use prost::{Message, Name};
use sha2::{Digest, Sha256};

use crate::workload::{
    RESOURCES, RESOURCE_EGRESS, RESOURCE_EGRESS_TLS, RESOURCE_FAULT, RESOURCE_HTTP, RESOURCE_MIRROR, RESOURCE_ROUTING,
};

/// The type URL of every ECDS resource (requests and responses carry it).
pub const TYPED_EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// How long Envoy may take to fetch a remote module.
const REMOTE_FETCH_TIMEOUT_SECONDS: i64 = 30;

/// One resource as sent: its name, content version, and the
/// `TypedExtensionConfig` encoded once as the `Any` every response carries
/// (a push to 10 000 streams copies those bytes, it does not re-encode them).
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub resource: Any,
}

/// A workload's resources by name.
pub type Resources = BTreeMap<String, Arc<Built>>;

/// Where Envoy gets the filters' code.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// `vm_config.code.local.filename`: `<dir>/<module>.wasm` on Envoy's file system.
    Local { dir: PathBuf },
    /// `vm_config.code.remote`: `<base_url>/<module>.wasm` fetched through
    /// Envoy cluster `cluster`, checked against the sha256 of the file xds-ext serves.
    Remote { base_url: String, cluster: String },
    /// `vm_config.code.local.inline_bytes`: the module itself, in every
    /// resource. Nothing for Envoy to fetch or find on disk.
    Inline,
}

/// Which module `switchyard.egress-tls` runs. The other resources run the
/// same in both: the four single HTTP filters their own modules,
/// `switchyard.http` the combined `switchyard.wasm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModuleLayout {
    /// `switchyard.wasm` with vm_id `switchyard`, as `switchyard.http`: one
    /// VM per worker for the HTTP chain and the TLS filter.
    #[default]
    Combined,
    /// `egress.wasm` in a VM of its own (`switchyard-egress-tls`).
    Single,
}

/// The filters' `.wasm` modules as xds-ext knows them: read once at start, so
/// the sha256 in every resource is the hash of the bytes xds-ext serves.
#[derive(Debug, Clone)]
pub struct Modules {
    source: ModuleSource,
    layout: ModuleLayout,
    files: BTreeMap<String, ModuleFile>,
}

/// What a resource runs: the plugin's root id, the VM it runs in, the
/// module (`<module>.wasm`) and whether it is a network filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plugin {
    root_id: &'static str,
    vm_id: &'static str,
    module: &'static str,
    network: bool,
}

#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
}

impl Modules {
    /// Reads `<dir>/<module>.wasm` for every module a resource runs under
    /// `layout`. A missing file is an error for `Remote` and `Inline`
    /// (nothing to serve, hash or send) and a warning for `Local` (the path
    /// is Envoy's, which may not be ours).
    pub fn load(dir: &Path, source: ModuleSource, layout: ModuleLayout) -> Result<(Modules, Vec<String>), String> {
        let mut files = BTreeMap::new();
        let mut warnings = Vec::new();
        // Each module once, read or missing (two resources may run one).
        let mut seen = std::collections::BTreeSet::new();
        for name in RESOURCES {
            let Some(module) = plugin(name, layout).map(|p| p.module) else { continue };
            if !seen.insert(module) {
                continue;
            }
            let path = dir.join(format!("{module}.wasm"));
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let sha256 = hex(&Sha256::digest(&bytes));
                    files.insert(module.to_owned(), ModuleFile { bytes: Arc::new(bytes), sha256 });
                }
                Err(e) => match source {
                    ModuleSource::Remote { .. } | ModuleSource::Inline => {
                        return Err(format!("reading module {}: {e}", path.display()))
                    }
                    ModuleSource::Local { .. } => warnings.push(format!("module {}: {e}", path.display())),
                },
            }
        }
        Ok((Modules { source, layout, files }, warnings))
    }

    /// Modules for tests: local code under `dir`, nothing read, the default layout.
    pub fn local(dir: &Path) -> Modules {
        Modules {
            source: ModuleSource::Local { dir: dir.to_path_buf() },
            layout: ModuleLayout::default(),
            files: BTreeMap::new(),
        }
    }

    /// The same modules under another layout (tests).
    pub fn with_layout(self, layout: ModuleLayout) -> Modules {
        Modules { layout, ..self }
    }

    /// The bytes of `<module>.wasm` (e.g. `routing.wasm`), for the HTTP endpoint.
    pub fn file(&self, file_name: &str) -> Option<&ModuleFile> {
        file_name.strip_suffix(".wasm").and_then(|m| self.files.get(m))
    }

    fn code(&self, module: &str) -> Result<AsyncDataSource, String> {
        let specifier = match &self.source {
            ModuleSource::Local { dir } => async_data_source::Specifier::Local(DataSource {
                specifier: Some(data_source::Specifier::Filename(
                    dir.join(format!("{module}.wasm")).to_string_lossy().into_owned(),
                )),
                ..Default::default()
            }),
            ModuleSource::Inline => {
                let file = self.files.get(module).ok_or_else(|| format!("module {module}.wasm was not loaded"))?;
                async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(file.bytes.as_ref().clone())),
                    ..Default::default()
                })
            }
            ModuleSource::Remote { base_url, cluster } => {
                let file = self.files.get(module).ok_or_else(|| format!("module {module}.wasm was not loaded"))?;
                async_data_source::Specifier::Remote(RemoteDataSource {
                    http_uri: Some(HttpUri {
                        uri: format!("{}/{module}.wasm", base_url.trim_end_matches('/')),
                        timeout: Some(Duration { seconds: REMOTE_FETCH_TIMEOUT_SECONDS, nanos: 0 }),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster.clone())),
                    }),
                    sha256: file.sha256.clone(),
                    retry_policy: None,
                })
            }
        };
        Ok(AsyncDataSource { specifier: Some(specifier) })
    }

    /// The resource `name` (e.g. `switchyard.routing`) carrying `json`.
    pub fn build(&self, name: &str, json: &str) -> Result<Built, String> {
        let runs = plugin(name, self.layout).ok_or_else(|| format!("unknown resource {name}"))?;
        // Envoy shares a VM between plugins whose vm_id, runtime and code
        // are equal: switchyard.http and a combined egress-tls build theirs
        // alike.
        let plugin = PluginConfig {
            name: name.to_owned(),
            root_id: runs.root_id.to_owned(),
            configuration: Some(to_any(&StringValue { value: json.to_owned() })),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: runs.vm_id.to_owned(),
                runtime: "envoy.wasm.runtime.v8".to_owned(),
                code: Some(self.code(runs.module)?),
                ..Default::default()
            })),
            ..Default::default()
        };
        let typed_config = if runs.network {
            to_any(&NetworkWasm { config: Some(plugin) })
        } else {
            to_any(&HttpWasm { config: Some(plugin) })
        };
        let resource = to_any(&TypedExtensionConfig { name: name.to_owned(), typed_config: Some(typed_config) });
        let version = content_version(&resource.value);
        Ok(Built { name: name.to_owned(), version, resource })
    }
}

/// What resource `name` runs under `layout`; `None` for a name xds-ext does
/// not serve. A single filter is its module's root id in a VM of its own
/// (`switchyard-<filter>`); `egress-tls` is the network filter of the egress
/// module (single) or of the combined one (combined).
fn plugin(name: &str, layout: ModuleLayout) -> Option<Plugin> {
    const COMBINED: &str = "switchyard";
    let http = |root_id, vm_id, module| Plugin { root_id, vm_id, module, network: false };
    Some(match name {
        RESOURCE_HTTP => http(COMBINED, COMBINED, COMBINED),
        RESOURCE_EGRESS_TLS => match layout {
            ModuleLayout::Combined => {
                Plugin { root_id: "egress-tls", vm_id: COMBINED, module: COMBINED, network: true }
            }
            ModuleLayout::Single => {
                Plugin { root_id: "egress-tls", vm_id: "switchyard-egress-tls", module: "egress", network: true }
            }
        },
        RESOURCE_ROUTING => http("routing", "switchyard-routing", "routing"),
        RESOURCE_FAULT => http("fault", "switchyard-fault", "fault"),
        RESOURCE_MIRROR => http("mirror", "switchyard-mirror", "mirror"),
        RESOURCE_EGRESS => http("egress", "switchyard-egress", "egress"),
        _ => return None,
    })
}

fn to_any<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

/// The first 16 hex digits of the sha256 of `bytes`: short enough to read in
/// a status table, long enough never to collide between two configs.
pub fn content_version(bytes: &[u8]) -> String {
    let mut version = hex(&Sha256::digest(bytes));
    version.truncate(16);
    version
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_has_equal_version_and_any_change_a_new_one() {
        let modules = Modules::local(Path::new("/m"));
        let a = modules.build("switchyard.routing", r#"{"version":1}"#).unwrap();
        let b = modules.build("switchyard.routing", r#"{"version":1}"#).unwrap();
        let c = modules.build("switchyard.routing", r#"{"version":1} "#).unwrap();
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }

    /// The plugin of a built resource, its VM and code, and whether it is a network filter.
    fn plugin_of(built: &Built) -> (PluginConfig, VmConfig, data_source::Specifier, bool) {
        assert_eq!(built.resource.type_url, TYPED_EXTENSION_CONFIG);
        let config = TypedExtensionConfig::decode(built.resource.value.as_slice()).unwrap();
        assert_eq!(config.name, built.name);
        let any = config.typed_config.unwrap();
        let (plugin, network) = match any.type_url.as_str() {
            "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm" => {
                (NetworkWasm::decode(any.value.as_slice()).unwrap().config.unwrap(), true)
            }
            "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm" => {
                (HttpWasm::decode(any.value.as_slice()).unwrap().config.unwrap(), false)
            }
            other => panic!("unexpected filter type {other}"),
        };
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm.clone() else { panic!("no vm config") };
        let Some(async_data_source::Specifier::Local(local)) = vm.code.clone().unwrap().specifier else {
            panic!("not local")
        };
        (plugin, vm, local.specifier.unwrap(), network)
    }

    #[test]
    fn single_layout_egress_tls_is_a_network_filter_running_the_egress_module() {
        let modules = Modules::local(Path::new("/m")).with_layout(ModuleLayout::Single);
        let (plugin, vm, code, network) = plugin_of(&modules.build("switchyard.egress-tls", "{}").unwrap());
        assert!(network);
        assert_eq!((plugin.name.as_str(), plugin.root_id.as_str()), ("switchyard.egress-tls", "egress-tls"));
        assert_eq!(vm.vm_id, "switchyard-egress-tls");
        assert_eq!(code, data_source::Specifier::Filename("/m/egress.wasm".into()));
    }

    #[test]
    fn the_combined_filter_and_combined_egress_tls_share_one_vm_of_switchyard_wasm() {
        let modules = Modules::local(Path::new("/m"));
        let (http, http_vm, http_code, network) =
            plugin_of(&modules.build("switchyard.http", r#"{"version":1}"#).unwrap());
        assert!(!network);
        assert_eq!((http.name.as_str(), http.root_id.as_str()), ("switchyard.http", "switchyard"));
        assert_eq!(http_code, data_source::Specifier::Filename("/m/switchyard.wasm".into()));
        let (tls, tls_vm, _, network) = plugin_of(&modules.build("switchyard.egress-tls", "{}").unwrap());
        assert!(network);
        assert_eq!(tls.root_id, "egress-tls");
        // Envoy shares the VM when vm_id, runtime and code are equal.
        assert_eq!(tls_vm, http_vm);
        assert_eq!(http_vm.vm_id, "switchyard");

        // The single filters keep their modules and VMs in both layouts.
        for layout in [ModuleLayout::Combined, ModuleLayout::Single] {
            let modules = Modules::local(Path::new("/m")).with_layout(layout);
            for filter in ["routing", "fault", "mirror", "egress"] {
                let (plugin, vm, code, network) =
                    plugin_of(&modules.build(&format!("switchyard.{filter}"), "{}").unwrap());
                assert!(!network);
                assert_eq!(plugin.root_id, filter);
                assert_eq!(vm.vm_id, format!("switchyard-{filter}"));
                assert_eq!(code, data_source::Specifier::Filename(format!("/m/{filter}.wasm")));
            }
            let (http, http_vm, _, _) = plugin_of(&modules.build("switchyard.http", "{}").unwrap());
            assert_eq!((http.root_id.as_str(), http_vm.vm_id.as_str()), ("switchyard", "switchyard"));
        }
    }

    #[test]
    fn inline_modules_travel_in_the_resource_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for module in ["routing", "fault", "mirror", "egress", "switchyard"] {
            std::fs::write(dir.path().join(format!("{module}.wasm")), format!("\0asm {module}")).unwrap();
        }
        for (layout, module) in [(ModuleLayout::Single, "egress"), (ModuleLayout::Combined, "switchyard")] {
            let (modules, warnings) = Modules::load(dir.path(), ModuleSource::Inline, layout).unwrap();
            assert!(warnings.is_empty());
            let (_, _, code, _) = plugin_of(&modules.build("switchyard.egress-tls", "{}").unwrap());
            assert_eq!(code, data_source::Specifier::InlineBytes(format!("\0asm {module}").into_bytes()));
            let (_, _, code, _) = plugin_of(&modules.build("switchyard.http", "{}").unwrap());
            assert_eq!(code, data_source::Specifier::InlineBytes(b"\0asm switchyard".to_vec()));
            assert_eq!(modules.file("switchyard.wasm").unwrap().bytes.as_slice(), b"\0asm switchyard");
        }

        // switchyard.http runs switchyard.wasm in both layouts.
        std::fs::remove_file(dir.path().join("switchyard.wasm")).unwrap();
        for layout in [ModuleLayout::Combined, ModuleLayout::Single] {
            let missing = Modules::load(dir.path(), ModuleSource::Inline, layout).unwrap_err();
            assert!(missing.contains("switchyard.wasm"), "{missing}");
            let remote = ModuleSource::Remote { base_url: "http://x/modules".into(), cluster: "x".into() };
            let missing = Modules::load(dir.path(), remote, layout).unwrap_err();
            assert!(missing.contains("switchyard.wasm"), "{missing}");
            let local = ModuleSource::Local { dir: dir.path().to_path_buf() };
            let (_, warnings) = Modules::load(dir.path(), local, layout).unwrap();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains("switchyard.wasm"), "{warnings:?}");
        }
        std::fs::remove_file(dir.path().join("fault.wasm")).unwrap();
        let missing = Modules::load(dir.path(), ModuleSource::Inline, ModuleLayout::Single).unwrap_err();
        assert!(missing.contains("fault.wasm"), "{missing}");
    }

    #[test]
    fn unknown_resources_are_refused() {
        assert!(Modules::local(Path::new("/m")).build("switchyard.other", "{}").is_err());
    }
}
