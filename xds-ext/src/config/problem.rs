//! What `validate`, `status` and the log say about the input: one problem
//! per line, `FILE:LINE: Kind namespace/name: field.path: message`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with (or worth knowing about) the input documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line of the field at fault (of the document, when the field
    /// has no line of its own); 0 when the whole file is concerned.
    pub line: usize,
    /// `"VirtualService default/reviews"`, or `""` for problems of a file.
    pub document: String,
    /// Path of the field in the document, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    pub message: String,
    pub severity: Severity,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.document.is_empty() {
            write!(f, "{}: ", self.document)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A finding inside one document, before it is tied to its file and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub line: usize,
    pub field: String,
    pub message: String,
    pub severity: Severity,
}

impl Finding {
    pub(crate) fn into_problem(self, file: &std::path::Path, document: &str) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line: self.line,
            document: document.to_string(),
            field: self.field,
            message: self.message,
            severity: self.severity,
        }
    }
}

/// Findings collected while decoding one document.
#[derive(Debug, Default)]
pub(crate) struct Findings(pub Vec<Finding>);

impl Findings {
    pub(crate) fn error(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.push(line, field, message, Severity::Error);
    }

    pub(crate) fn warning(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.push(line, field, message, Severity::Warning);
    }

    fn push(&mut self, line: usize, field: &str, message: impl Into<String>, severity: Severity) {
        self.0.push(Finding { line, field: field.to_string(), message: message.into(), severity });
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.0.iter().any(|f| f.severity == Severity::Error)
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_document_and_field() {
        let p = Problem {
            file: "vs.yaml".into(),
            line: 7,
            document: "VirtualService default/reviews".into(),
            field: "spec.http[0].route".into(),
            message: "destination weights sum to 90, not 100".into(),
            severity: Severity::Error,
        };
        assert_eq!(
            p.to_string(),
            "vs.yaml:7: VirtualService default/reviews: spec.http[0].route: destination weights sum to 90, not 100"
        );
        let w = Problem { severity: Severity::Warning, document: String::new(), field: String::new(), ..p };
        assert_eq!(w.to_string(), "warning: vs.yaml:7: destination weights sum to 90, not 100");
    }
}
