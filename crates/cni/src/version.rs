//! CNI specification versions this library speaks.
//!
//! Versions are matched by exact string, never by semver range: the reference
//! runtime (`pkg/version/reconcile.go`) does the same, so "1.0" or "1.0.1" is
//! not "1.0.0". 0.1.0 and 0.2.0 results can still be *read* (old delegates),
//! but are never advertised or emitted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI specification version this library can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.3.0: the first rich result (interfaces, ips, routes, dns).
    V0_3_0,
    /// 0.3.1: same result shape as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK, `disableCheck` and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `ips[].version` and single-plugin configs, adds codes 4-7.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, `cniVersions`, interface mtu/socketPath/pciID
    /// and route mtu/advmss/priority/table/scope.
    V1_1_0,
}

/// Every version we accept, oldest first: what VERSION reports.
pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// The newest version we speak.
pub const CURRENT: Version = Version::V1_1_0;

impl Version {
    /// The exact wire string, e.g. `"0.4.0"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    #[must_use]
    pub fn allows_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    #[must_use]
    pub fn allows_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results of 0.3.x and 0.4.0 carry `ips[].version`.
    #[must_use]
    pub fn has_ip_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// libcni hands the cached result to DEL only from 0.4.0 on.
    #[must_use]
    pub fn passes_prev_result_on_del(self) -> bool {
        self >= Self::V0_4_0
    }

    /// The interface `mtu`/`socketPath`/`pciID` and the extended route fields.
    #[must_use]
    pub fn has_1_1_fields(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string we do not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported CNI version {0:?}")]
pub struct UnsupportedVersion(pub String);

impl FromStr for Version {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_owned()))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The version a config or result declares, defaulting as libcni does.
///
/// A missing `cniVersion` means "0.1.0" (`pkg/types/create/create.go`), which
/// we do not support, so the caller gets the string back for its error.
#[must_use]
pub fn declared(value: &serde_json::Value) -> &str {
    value
        .get("cniVersion")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("0.1.0")
}

/// Whether a version string, supported or not, is older than `min`,
/// comparing dotted numbers as semver does ("0.10.0" is newer than "0.4.0").
/// Strings that are not dotted numbers count as older.
#[must_use]
pub fn older_than(version: &str, min: Version) -> bool {
    let nums = |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
    match (nums(version), nums(min.as_str())) {
        (Some(v), Some(m)) => v < m,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_strings_only() {
        for v in SUPPORTED {
            assert_eq!(v.as_str().parse::<Version>(), Ok(v));
        }
        for bad in ["", "1.0", "1.0.1", "0.2.0", "0.1.0", "1.2.0", " 1.0.0"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn capabilities_by_version() {
        assert!(!Version::V0_3_1.allows_check());
        assert!(Version::V0_4_0.allows_check());
        assert!(!Version::V1_0_0.allows_status_and_gc());
        assert!(Version::V1_1_0.allows_status_and_gc());
        assert!(Version::V0_4_0.has_ip_version());
        assert!(!Version::V1_0_0.has_ip_version());
    }

    #[test]
    fn numeric_ordering_of_any_string() {
        assert!(older_than("0.2.0", Version::V0_4_0));
        assert!(older_than("0.3.1", Version::V0_4_0));
        assert!(!older_than("0.4.0", Version::V0_4_0));
        assert!(!older_than("0.10.0", Version::V0_4_0));
        assert!(!older_than("2.0.0", Version::V1_1_0));
        assert!(older_than("garbage", Version::V0_4_0));
    }

    #[test]
    fn missing_version_is_0_1_0() {
        assert_eq!(declared(&serde_json::json!({"name": "x"})), "0.1.0");
        assert_eq!(
            declared(&serde_json::json!({"cniVersion": "1.0.0"})),
            "1.0.0"
        );
    }
}
