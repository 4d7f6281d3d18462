//! The one error type of the model: a problem with the field it is about.
//!
//! Every checker of the workspace reports in this shape: the manifest's
//! schema and cross-field rules (`spec.orderService.retry.maxBackoffMs`),
//! the payment mock's fault plan (`schedule[1].faults.failureRate`), the
//! time scale of `relab run` (`spec.load.durationSeconds (with --time-scale
//! 0.001)`).

use std::fmt;

/// One problem, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, camelCase as written (e.g.
    /// `spec.payment.faultsSchedule[0].endSeconds`); `(document)` when the
    /// problem is the document as a whole.
    pub path: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every problem of one check, in the order they were found.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// `a.b`, or whichever of the two is not empty.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}
