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

/// The crate's internal error: boxed, so that `Result<(), Failed>` is one
/// pointer and each `?` a test and a branch rather than a copy of the error
/// (about 15 KB less wasm over the decoder and the validation code).
/// Public functions return `ConfigError`.
pub(crate) type Failed = Box<ConfigError>;

/// Where a value sits in the config, naming every error the same way:
/// `.field`, `[index]`, and `["key"]` for user-chosen map keys (header
/// names, query parameters), which may hold any character.
///
/// A chain of references on the stack, rendered into text only when an
/// error is reported: building a path per field costs nothing, and the
/// validation code carries no allocations or drops for it.
#[derive(Clone, Copy)]
pub(crate) enum Path<'p> {
    Root,
    /// A struct field (`.name`).
    Field(&'p Path<'p>, &'p str),
    /// An array element (`[3]`).
    Index(&'p Path<'p>, usize),
    /// A user-chosen map key (`["end-user"]`).
    Key(&'p Path<'p>, &'p str),
}

impl<'p> Path<'p> {
    pub(crate) fn root() -> Self {
        Path::Root
    }

    pub(crate) fn field<'a>(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    pub(crate) fn index(&self, i: usize) -> Path<'_> {
        Path::Index(self, i)
    }

    pub(crate) fn key<'a>(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn render(&self, out: &mut String) {
        match *self {
            Path::Root => {}
            Path::Field(parent, name) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Path::Index(parent, index) => {
                parent.render(out);
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Path::Key(parent, key) => {
                parent.render(out);
                out.push('[');
                out.push_str(&quote(key));
                out.push(']');
            }
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Failed {
        let mut path = String::new();
        self.render(&mut path);
        Box::new(ConfigError::new(path, message))
    }
}

/// `items` joined by `separator`. One non-generic function instead of
/// `[&str]::join` instantiations.
pub(crate) fn join(items: &[&str], separator: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
    }
    out
}

/// JSON-style quoting for keys and values shown in messages: `"`, `\` and
/// control characters escaped as `serde_json` writes them.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[(u32::from(c) >> 4) as usize]));
                out.push(char::from(HEX[(u32::from(c) & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
