//! Istio `Headers` operations (`set` / `add` / `remove`), validated once.
//!
//! Applied like Envoy's header mutations: `remove` first, then `set`
//! (overwrite or add), then `add` (append). Pseudo-headers and `host` are
//! refused: Istio turns `:authority`/`host` into a host rewrite and drops
//! the others, so here that intent is spelled `rewrite.authority`.

use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::http_match::header_name;
use crate::json::{decode_struct, KeyedList};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOpsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOpsConfig>,
}

decode_struct!(HeadersConfig { request: default, response: default });

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsConfig {
    #[serde(default, skip_serializing_if = "KeyedList::is_empty")]
    pub set: KeyedList<String>,
    #[serde(default, skip_serializing_if = "KeyedList::is_empty")]
    pub add: KeyedList<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

decode_struct!(HeaderOpsConfig { set: default, add: default, remove: default });

/// Operations on one header map. Names are lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Request and response operations of one level (route or destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl HeaderMutations {
    pub(crate) fn compile(config: &HeadersConfig, path: &Path) -> Result<Self, Failed> {
        Ok(HeaderMutations {
            request: compile_ops(config.request.as_ref(), &path.field("request"))?,
            response: compile_ops(config.response.as_ref(), &path.field("response"))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

fn compile_ops(config: Option<&HeaderOpsConfig>, path: &Path) -> Result<HeaderOps, Failed> {
    let Some(config) = config else {
        return Ok(HeaderOps::default());
    };
    let pairs = |list: &KeyedList<String>, field: &str| -> Result<Vec<(String, String)>, Failed> {
        let field_path = path.field(field);
        let mut out = Vec::with_capacity(list.0.len());
        for (name, value) in &list.0 {
            let key_path = field_path.key(name);
            let name = mutable_header_name(name, &key_path)?;
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(key_path.error("header value must not contain CR, LF or NUL"));
            }
            out.push((name, value.clone()));
        }
        Ok(out)
    };
    let remove_path = path.field("remove");
    let mut remove = Vec::with_capacity(config.remove.len());
    for (i, name) in config.remove.iter().enumerate() {
        remove.push(mutable_header_name(name, &remove_path.index(i))?);
    }
    Ok(HeaderOps { remove, set: pairs(&config.set, "set")?, add: pairs(&config.add, "add")? })
}

fn mutable_header_name(raw: &str, path: &Path) -> Result<String, Failed> {
    let name = header_name(raw, path)?;
    if name.starts_with(':') || name == "host" {
        return Err(path
            .error(format!("header {} cannot be changed here (use rewrite.authority for the authority)", quote(raw))));
    }
    Ok(name)
}
