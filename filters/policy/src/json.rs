//! JSON decoding shared by every filter config: size bound, version check,
//! typed decoding with the path of the failing field, duplicate-key checks.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{quote, ConfigError, Path};

/// The only config version these filters understand.
pub const CONFIG_VERSION: u64 = 1;

/// Configs are a few hundred bytes per rule; a document this large is a
/// mistake or an attack, and refusing it keeps `on_configure` fast.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Decodes a filter config: refuses oversized input, then checks `version`
/// before anything else (so a future config gets "unsupported version", not
/// "unknown field"), then decodes the typed config.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            "",
            format!("config is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit", bytes.len()),
        ));
    }
    // serde accepts a sequence for a struct; a config is always an object.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ConfigError::new("", "a config must be a JSON object"));
    }
    check_version(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let config = serde_path_to_error::deserialize(&mut de).map_err(convert)?;
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(config)
}

#[derive(Deserialize)]
struct VersionProbe {
    version: Option<serde_json::Value>,
}

fn check_version(bytes: &[u8]) -> Result<(), ConfigError> {
    let probe: VersionProbe =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes)).map_err(convert)?;
    match probe.version {
        None => Err(ConfigError::new(
            "version",
            format!("missing config version (this filter understands {CONFIG_VERSION})"),
        )),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(CONFIG_VERSION) => Ok(()),
        Some(other) => Err(ConfigError::new(
            "version",
            format!("unsupported config version {other} (this filter understands {CONFIG_VERSION})"),
        )),
    }
}

/// Map fields whose keys the user chooses (header and parameter names):
/// their keys print as `["end-user"]`, struct fields as `.field`.
const USER_KEYED_FIELDS: &[&str] = &["headers", "without_headers", "query_params", "set", "add"];

fn convert(error: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    use serde_path_to_error::Segment;
    let mut path = Path::root();
    let mut previous: Option<&str> = None;
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => {
                path = path.index(*index);
                previous = None;
            }
            Segment::Map { key } => {
                path = match previous {
                    Some(field) if USER_KEYED_FIELDS.contains(&field) && !is_ops_level(key) => path.key(key),
                    _ => path.field(key),
                };
                previous = Some(key.as_str());
            }
            Segment::Enum { variant } => {
                path = path.field(variant);
                previous = None;
            }
            Segment::Unknown => {
                path = path.field("?");
                previous = None;
            }
        }
    }
    ConfigError::new(path.as_str(), error.into_inner().to_string())
}

/// `headers` is also the header-operations block (`headers.request.set`),
/// whose keys are struct fields.
fn is_ops_level(key: &str) -> bool {
    key == "request" || key == "response"
}

/// A JSON object with user-chosen keys, kept in document order. Unlike a
/// plain map it refuses a repeated key instead of keeping the last one
/// silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedList<V>(pub Vec<(String, V)>);

impl<V> Default for KeyedList<V> {
    fn default() -> Self {
        KeyedList(Vec::new())
    }
}

impl<V> KeyedList<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V, K: Into<String>> FromIterator<(K, V)> for KeyedList<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        KeyedList(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for KeyedList<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for ListVisitor<V> {
            type Value = KeyedList<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {}", quote(&key))));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(KeyedList(entries))
            }
        }
        deserializer.deserialize_map(ListVisitor(PhantomData))
    }
}

impl<V: Serialize> Serialize for KeyedList<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}
