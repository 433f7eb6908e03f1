//! The CNI error result (SPEC.md §5 "Error") and its well-known codes.
//!
//! This is the *wire* error: what a plugin prints on stdout and what a runtime
//! parses back from a delegate. Library failures (a delegate that cannot be
//! found, a timeout) live in [`crate::Error`] and convert into this type at
//! the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Well-known error codes. 0-99 are reserved by the spec; 100+ are ours.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration; msg names key and value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; msg names them.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure, e.g. reading stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (JSON, version).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: the failure is transient.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may be degraded.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// Plexus: a delegate plugin could not be run (not found, spawn failed).
    pub const DELEGATE_EXEC: u32 = 100;
    /// Plexus: a delegate plugin did not answer in time and was killed.
    pub const DELEGATE_TIMEOUT: u32 = 101;
    /// Plexus: a delegate's output could not be understood.
    pub const DELEGATE_OUTPUT: u32 = 102;
    /// Plexus: an internal failure that fits no other code.
    pub const INTERNAL: u32 = 199;
}

/// A CNI error result: `{"cniVersion","code","msg","details"}`.
///
/// Parsing is lenient the way Go plugins need it: `types.Error` in Go
/// serialises no `cniVersion`, and `details` is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The protocol version in use; filled in when printed if unknown.
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    /// The error code (see [`code`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// A longer explanation; empty when there is none.
    #[serde(default)]
    pub details: String,
}

impl CniError {
    /// An error with a code and message and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            cni_version: None,
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds the long explanation.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Sets the protocol version the error is reported in.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.cni_version = Some(version.into());
        self
    }

    /// The error as printed on stdout, always with a `cniVersion`
    /// (`fallback` when none was set).
    #[must_use]
    pub fn to_json(&self, fallback: &str) -> String {
        let mut e = self.clone();
        e.cni_version.get_or_insert_with(|| fallback.to_owned());
        serde_json::to_string(&e).expect("a CNI error always serialises")
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        write!(f, " (CNI error {})", self.code)
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_all_four_keys() {
        let e = CniError::new(code::INVALID_NETWORK_CONFIG, "Invalid Configuration")
            .with_details("Network 192.168.0.0/31 too small to allocate from.");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "Invalid Configuration",
                "details": "Network 192.168.0.0/31 too small to allocate from."})
        );
    }

    #[test]
    fn parses_go_errors_without_version_or_details() {
        let e: CniError = serde_json::from_str(r#"{"code":11,"msg":"busy"}"#).unwrap();
        assert_eq!(e, CniError::new(11, "busy"));
    }

    #[test]
    fn explicit_version_wins_over_fallback() {
        let e = CniError::new(1, "x").with_version("0.4.0");
        assert!(e.to_json("1.1.0").contains(r#""cniVersion":"0.4.0""#));
    }
}
