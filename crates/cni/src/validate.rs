//! The name rules of the reference implementation (`pkg/utils/utils.go`).

use crate::error::{CniError, code};

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: container IDs and network names.
fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `CNI_CONTAINERID`: empty is code 3, bad characters code 4 (skel).
///
/// # Errors
/// When the ID is empty or has characters outside the reference set.
pub fn container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !valid_id(id) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid characters in containerID",
        )
        .with_details(id.to_owned()));
    }
    Ok(())
}

/// A network name: code 7 when missing or badly formed.
///
/// # Errors
/// When the name is empty or has characters outside the reference set.
pub fn network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "missing network name",
        ));
    }
    if !valid_id(name) {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid characters found in network name",
        )
        .with_details(name.to_owned()));
    }
    Ok(())
}

/// The Linux maximum interface name length (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// An interface name (`CNI_IFNAME`, or one a user asks for): code 4.
///
/// Rejects empty, longer than 15 bytes, `.` and `..`, and names containing
/// `/`, `:` or whitespace, as the kernel's `dev_valid_name` and skel do.
///
/// # Errors
/// When the name breaks one of those rules; the message says which.
pub fn interface_name(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        "interface name is empty"
    } else if name.len() > IFNAME_MAX {
        "interface name is too long"
    } else if name == "." || name == ".." {
        "interface name is . or .."
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "interface name contains / or : or whitespace characters"
    } else {
        return Ok(());
    };
    Err(
        CniError::new(code::INVALID_ENVIRONMENT, why).with_details(format!(
            "interface name {name:?} (at most {IFNAME_MAX} bytes)"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(container_id("abc-123_x.y").is_ok());
        assert_eq!(container_id("").unwrap_err().code, 3);
        for bad in ["-x", "a/b", "a b", "_a", "a;b"] {
            assert_eq!(container_id(bad).unwrap_err().code, 4, "{bad}");
        }
    }

    #[test]
    fn network_names() {
        assert!(network_name("macvlan-conf.1").is_ok());
        assert_eq!(network_name("").unwrap_err().code, 7);
        assert_eq!(network_name("a/b").unwrap_err().code, 7);
    }

    #[test]
    fn interface_names() {
        assert!(interface_name("net1").is_ok());
        assert!(
            interface_name("a23456789012345").is_ok(),
            "15 bytes is the maximum"
        );
        for bad in [
            "",
            "a234567890123456",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            let e = interface_name(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad:?}");
        }
        // Bytes, not characters: 8 two-byte characters are 16 bytes.
        assert!(interface_name("éééééééé").is_err());
    }
}
