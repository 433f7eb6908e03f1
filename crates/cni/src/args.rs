//! `CNI_ARGS` (CONVENTIONS.md "CNI_ARGS"): `K=V;K2=V2`.
//!
//! Parsed leniently: unknown keys are kept for whoever wants them (Go's
//! `LoadArgs` rejects them unless `IgnoreUnknown` is set; a delegating plugin
//! must not), empty segments are skipped, and a value may contain `=`.

use std::fmt;

/// Parsed `CNI_ARGS`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

/// A `CNI_ARGS` pair without `=`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI_ARGS: invalid pair {0:?}: expected KEY=VALUE")]
pub struct ArgsError(pub String);

impl CniArgs {
    /// Parses `K=V;K2=V2`.
    ///
    /// # Errors
    /// When a non-empty segment has no `=` or an empty key.
    pub fn parse(s: &str) -> Result<Self, ArgsError> {
        let mut out = Vec::new();
        for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => out.push((k.to_owned(), v.to_owned())),
                _ => return Err(ArgsError(pair.to_owned())),
            }
        }
        Ok(Self(out))
    }

    /// The last value given for `key` (later pairs override earlier ones).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether no pairs were given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CniArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
        )
        .unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("missing"), None);
        assert_eq!(
            a.to_string(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc"
        );
    }

    #[test]
    fn lenient_but_not_sloppy() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse(";A=1;;").unwrap().get("A"), Some("1"));
        assert_eq!(CniArgs::parse("A=b=c").unwrap().get("A"), Some("b=c"));
        assert_eq!(CniArgs::parse("A=1;A=2").unwrap().get("A"), Some("2"));
        assert!(CniArgs::parse("novalue").is_err());
        assert!(CniArgs::parse("=v").is_err());
    }
}
