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

use crate::workload::{RESOURCES, RESOURCE_EGRESS_TLS};

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

/// The filters' `.wasm` modules as xds-ext knows them: read once at start, so
/// the sha256 in every resource is the hash of the bytes xds-ext serves.
#[derive(Debug, Clone)]
pub struct Modules {
    source: ModuleSource,
    files: BTreeMap<String, ModuleFile>,
}

#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
}

impl Modules {
    /// Reads `<dir>/<module>.wasm` for every filter. A missing file is an
    /// error for `Remote` and `Inline` (nothing to serve, hash or send) and a
    /// warning for `Local` (the path is Envoy's, which may not be ours).
    pub fn load(dir: &Path, source: ModuleSource) -> Result<(Modules, Vec<String>), String> {
        let mut files = BTreeMap::new();
        let mut warnings = Vec::new();
        for name in RESOURCES {
            let module = module_name(name);
            if files.contains_key(module) {
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
        Ok((Modules { source, files }, warnings))
    }

    /// Modules for tests: local code under `dir`, nothing read.
    pub fn local(dir: &Path) -> Modules {
        Modules { source: ModuleSource::Local { dir: dir.to_path_buf() }, files: BTreeMap::new() }
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
        let filter = filter_name(name).ok_or_else(|| format!("unknown resource {name}"))?;
        let plugin = PluginConfig {
            name: name.to_owned(),
            root_id: filter.to_owned(),
            configuration: Some(to_any(&StringValue { value: json.to_owned() })),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: format!("switchyard-{filter}"),
                runtime: "envoy.wasm.runtime.v8".to_owned(),
                code: Some(self.code(module_name(name))?),
                ..Default::default()
            })),
            ..Default::default()
        };
        let typed_config = if name == RESOURCE_EGRESS_TLS {
            to_any(&NetworkWasm { config: Some(plugin) })
        } else {
            to_any(&HttpWasm { config: Some(plugin) })
        };
        let resource = to_any(&TypedExtensionConfig { name: name.to_owned(), typed_config: Some(typed_config) });
        let version = content_version(&resource.value);
        Ok(Built { name: name.to_owned(), version, resource })
    }
}

/// `switchyard.routing` → `routing`; `None` for a name xds-ext does not serve.
pub fn filter_name(resource: &str) -> Option<&str> {
    RESOURCES.contains(&resource).then(|| resource.trim_start_matches("switchyard."))
}

/// The module a resource runs: `egress-tls` is the egress module's network filter.
fn module_name(resource: &str) -> &str {
    match filter_name(resource) {
        Some("egress-tls") => "egress",
        Some(filter) => filter,
        None => resource,
    }
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

    #[test]
    fn egress_tls_is_a_network_filter_running_the_egress_module() {
        let modules = Modules::local(Path::new("/m"));
        let built = modules.build("switchyard.egress-tls", "{}").unwrap();
        assert_eq!(built.resource.type_url, TYPED_EXTENSION_CONFIG);
        let config = TypedExtensionConfig::decode(built.resource.value.as_slice()).unwrap();
        assert_eq!(config.name, "switchyard.egress-tls");
        let any = config.typed_config.unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm");
        let wasm = NetworkWasm::decode(any.value.as_slice()).unwrap();
        let plugin = wasm.config.unwrap();
        assert_eq!(plugin.root_id, "egress-tls");
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else { panic!("no vm config") };
        let Some(async_data_source::Specifier::Local(local)) = vm.code.unwrap().specifier else { panic!("not local") };
        assert_eq!(local.specifier, Some(data_source::Specifier::Filename("/m/egress.wasm".into())));
    }

    #[test]
    fn inline_modules_travel_in_the_resource_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for module in ["routing", "fault", "mirror", "egress"] {
            std::fs::write(dir.path().join(format!("{module}.wasm")), format!("\0asm {module}")).unwrap();
        }
        let (modules, warnings) = Modules::load(dir.path(), ModuleSource::Inline).unwrap();
        assert!(warnings.is_empty());
        let built = modules.build("switchyard.egress-tls", "{}").unwrap();
        let config = TypedExtensionConfig::decode(built.resource.value.as_slice()).unwrap();
        let wasm = NetworkWasm::decode(config.typed_config.unwrap().value.as_slice()).unwrap();
        let Some(plugin_config::Vm::VmConfig(vm)) = wasm.config.unwrap().vm else { panic!("no vm config") };
        let Some(async_data_source::Specifier::Local(local)) = vm.code.unwrap().specifier else { panic!("not local") };
        assert_eq!(local.specifier, Some(data_source::Specifier::InlineBytes(b"\0asm egress".to_vec())));

        std::fs::remove_file(dir.path().join("fault.wasm")).unwrap();
        let missing = Modules::load(dir.path(), ModuleSource::Inline).unwrap_err();
        assert!(missing.contains("fault.wasm"), "{missing}");
    }

    #[test]
    fn unknown_resources_are_refused() {
        assert!(Modules::local(Path::new("/m")).build("switchyard.other", "{}").is_err());
    }
}
