//! Configuration errors that name the JSON path of the offending field.

use std::fmt;

/// A rejected configuration: `path` is the JSON path of the field at fault
/// (`virtual_hosts[0].routes[2].timeout`), `message` says what is wrong.
/// An empty path means the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(config): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Builds JSON paths while validating, so every error names its field the
/// same way: `.field`, `[index]`, and `["key"]` for user-chosen map keys
/// (header names, query parameters), which may hold any character.
#[derive(Debug, Clone)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root() -> Self {
        Path(String::new())
    }

    pub(crate) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Path(format!("{}[{}]", self.0, i))
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        Path(format!("{}[{}]", self.0, quote(key)))
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.0.clone(), message)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// JSON-style quoting for keys and values shown in messages.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}
