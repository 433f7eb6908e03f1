//! Network selection: the pod annotation `k8s.v1.cni.cncf.io/networks`
//! (multi-net spec §4.1; Multus M22-M24), in both forms, validated, and the
//! interface names each attachment gets.
//!
//! Pure functions over strings: no API server, no files. The text form is a
//! comma list of `[<namespace>/]<name>[@<ifname>]`; the JSON form (detected,
//! as Multus does, by any of `[`, `{` or `"`) is a list of selection
//! objects. Every value is checked before anything runs, so a bad
//! annotation fails the ADD with a message naming the entry and the field.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cni::CniError;
use plexus_cni::error::code;
use plexus_cni::validate;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The pod annotation that selects additional networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// One requested attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSelection {
    /// The NetworkAttachmentDefinition name.
    pub name: String,
    /// Its namespace; `None` (or `""`) means the pod's own.
    #[serde(default, deserialize_with = "unset_if_empty")]
    pub namespace: Option<String>,
    /// The interface name in the pod; `None` (or `""`) means `net<N>`.
    #[serde(
        default,
        alias = "interfaceRequest",
        deserialize_with = "unset_if_empty"
    )]
    pub interface: Option<String>,
    /// Static IPs (IP or CIDR), for delegates with the `ips` capability.
    #[serde(default, deserialize_with = "empty_if_null")]
    pub ips: Vec<String>,
    /// A MAC address, for delegates with the `mac` capability.
    #[serde(default, deserialize_with = "unset_if_empty")]
    pub mac: Option<String>,
    /// Gateways whose default route this attachment takes over.
    #[serde(default, rename = "default-route")]
    pub default_route: Option<Vec<IpAddr>>,
    /// Merged into the delegate config's `args.cni`.
    #[serde(default, rename = "cni-args")]
    pub cni_args: Option<Map<String, Value>>,
    /// For delegates with the `portMappings` capability.
    #[serde(default)]
    pub port_mappings: Option<Value>,
    /// For delegates with the `bandwidth` capability.
    #[serde(default)]
    pub bandwidth: Option<Value>,
    /// For delegates with the `infinibandGUID` capability.
    #[serde(
        default,
        rename = "infiniband-guid",
        deserialize_with = "unset_if_empty"
    )]
    pub infiniband_guid: Option<String>,
    /// Checked (not together with `ips`) and not passed on, as in Multus.
    #[serde(
        default,
        rename = "ipam-claim-reference",
        deserialize_with = "unset_if_empty"
    )]
    pub ipam_claim_reference: Option<String>,
    /// A device for delegates with the `deviceID` capability.
    #[serde(default, rename = "deviceID", deserialize_with = "unset_if_empty")]
    pub device_id: Option<String>,
}

/// `""` and `null` mean "not set", as in Multus (whose Go struct fields
/// are plain strings): pods written for Multus carry them.
fn unset_if_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `null` means no entries, as a Go nil slice does.
fn empty_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_NETWORK_CONFIG,
        "invalid network selection annotation",
    )
    .with_details(msg.into())
}

/// A Kubernetes object name or namespace in a selection: a DNS-1123 label
/// (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 bytes).
pub(crate) fn dns_label(what: &str, s: &str) -> Result<(), CniError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {s:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
        )))
    }
}

/// A hardware address as Go's `net.ParseMAC` accepts it: 6, 8 or 20 bytes,
/// hex pairs separated by `:` or `-`.
fn hw_addr(what: &str, s: &str, lengths: &[usize]) -> Result<(), CniError> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = lengths.contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {s:?} is not a valid hardware address"
        )))
    }
}

impl NetworkSelection {
    /// Checks every field a user can get wrong.
    ///
    /// # Errors
    /// Code 7 naming the network and the bad field.
    pub fn validate(&self) -> Result<(), CniError> {
        let ctx = |e: CniError| invalid(format!("network {:?}: {}", self.name, e.details));
        dns_label("network name", &self.name).map_err(ctx)?;
        if let Some(ns) = &self.namespace {
            dns_label("namespace", ns).map_err(ctx)?;
        }
        if let Some(ifname) = &self.interface {
            validate::interface_name(ifname).map_err(|e| {
                invalid(format!("network {:?}: {}: {}", self.name, e.msg, e.details))
            })?;
        }
        for ip in &self.ips {
            if ip.parse::<IpAddr>().is_err() && ip.parse::<IpNet>().is_err() {
                return Err(ctx(invalid(format!(
                    "ips entry {ip:?} is not an IP or CIDR"
                ))));
            }
        }
        if let Some(mac) = &self.mac {
            hw_addr("mac", mac, &[6, 8, 20]).map_err(ctx)?;
        }
        if let Some(guid) = &self.infiniband_guid {
            hw_addr("infiniband-guid", guid, &[8, 20]).map_err(ctx)?;
        }
        if self.ipam_claim_reference.is_some() && !self.ips.is_empty() {
            // Multi-net spec v1.3 §4.1.2.1.11: the claim decides the IPs.
            return Err(ctx(invalid(
                "\"ipam-claim-reference\" and \"ips\" cannot be combined",
            )));
        }
        Ok(())
    }
}

/// Parses the networks annotation, either form, and validates each entry.
/// An empty or blank annotation selects nothing.
///
/// # Errors
/// Code 6 for JSON that does not parse, code 7 for a bad entry or value.
pub fn parse(annotation: &str) -> Result<Vec<NetworkSelection>, CniError> {
    let text = annotation.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let selections: Vec<NetworkSelection> = if text.contains(['[', '{', '"']) {
        serde_json::from_str(text).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "cannot parse the networks annotation as JSON",
            )
            .with_details(format!("{NETWORKS_ANNOTATION}: {e}"))
        })?
    } else {
        text.split(',')
            .map(|item| parse_short(item.trim()))
            .collect::<Result<_, _>>()?
    };
    for s in &selections {
        s.validate()?;
    }
    let defaults = selections
        .iter()
        .filter(|s| s.default_route.is_some())
        .count();
    if defaults > 1 {
        return Err(invalid(format!(
            "{defaults} networks ask for \"default-route\"; at most one may"
        )));
    }
    Ok(selections)
}

/// `[<namespace>/]<name>[@<ifname>]`.
fn parse_short(item: &str) -> Result<NetworkSelection, CniError> {
    let (path, interface) = match item.split_once('@') {
        Some((p, i)) => (p, Some(i.to_owned())),
        None => (item, None),
    };
    let (namespace, name) = match path.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [ns, name] => (Some(ns.to_owned()), name),
        _ => return Err(invalid(format!("{item:?} has more than one '/'"))),
    };
    if name.is_empty() {
        return Err(invalid(format!("{item:?}: empty network name")));
    }
    Ok(NetworkSelection {
        name: name.to_owned(),
        namespace,
        interface,
        ..NetworkSelection::default()
    })
}

/// The interface name of each attachment, in order: the requested one, or
/// `net<N>` where N counts attachments from `first_index`. Names must be
/// unique and must not take the primary interface's name.
///
/// # Errors
/// Code 7 for a name used twice or clashing with `primary`.
pub fn interface_names(
    selections: &[NetworkSelection],
    primary: &str,
    first_index: usize,
) -> Result<Vec<String>, CniError> {
    let mut seen: HashSet<String> = HashSet::from([primary.to_owned()]);
    selections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s
                .interface
                .clone()
                .unwrap_or_else(|| format!("net{}", first_index + i));
            if seen.insert(name.clone()) {
                Ok(name)
            } else {
                Err(invalid(format!(
                    "interface {name:?} (network {:?}) is used more than once in the pod",
                    s.name
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form() {
        let s = parse(" macvlan-conf , other-ns/sriov-net@fast0,bridge-net ").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (
                s[0].name.as_str(),
                s[0].namespace.as_deref(),
                s[0].interface.as_deref()
            ),
            ("macvlan-conf", None, None)
        );
        assert_eq!(
            (
                s[1].name.as_str(),
                s[1].namespace.as_deref(),
                s[1].interface.as_deref()
            ),
            ("sriov-net", Some("other-ns"), Some("fast0"))
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("   ").unwrap().is_empty());
    }

    #[test]
    fn json_form_every_key() {
        let s = parse(
            r#"[{"name": "macvlan-conf", "namespace": "team-a", "interface": "data0",
                 "ips": ["10.1.1.11/24", "fd00::11"], "mac": "c2:b0:57:49:47:f1",
                 "default-route": ["10.1.1.1"], "cni-args": {"foo": "bar"},
                 "portMappings": [{"hostPort": 8080, "containerPort": 80}],
                 "bandwidth": {"ingressRate": 1000}, "infiniband-guid": "c2:11:22:33:44:55:66:77",
                 "deviceID": "0000:04:02.1"},
                {"name": "legacy", "interfaceRequest": "old0", "ipam-claim-reference": "claim-1"}]"#,
        )
        .unwrap();
        assert_eq!(s[0].interface.as_deref(), Some("data0"));
        assert_eq!(s[0].ips, ["10.1.1.11/24", "fd00::11"]);
        assert_eq!(
            s[0].default_route.as_deref(),
            Some(&["10.1.1.1".parse().unwrap()][..])
        );
        assert_eq!(s[0].cni_args.as_ref().unwrap()["foo"], "bar");
        assert_eq!(s[1].ipam_claim_reference.as_deref(), Some("claim-1"));
        assert_eq!(s[0].device_id.as_deref(), Some("0000:04:02.1"));
        assert_eq!(
            s[1].interface.as_deref(),
            Some("old0"),
            "interfaceRequest alias"
        );
    }

    #[test]
    fn empty_strings_and_nulls_mean_unset_as_in_multus() {
        let s = parse(
            r#"[{"name": "a", "interface": "", "namespace": "", "mac": "", "ips": null,
                 "infiniband-guid": "", "deviceID": "", "ipam-claim-reference": "",
                 "default-route": null, "cni-args": null}]"#,
        )
        .unwrap();
        assert_eq!(
            s[0],
            NetworkSelection {
                name: "a".into(),
                ..NetworkSelection::default()
            }
        );
        assert_eq!(interface_names(&s, "eth0", 1).unwrap(), ["net1"]);
        // A name is still required.
        assert_eq!(parse(r#"[{"name": ""}]"#).unwrap_err().code, 7);
    }

    #[test]
    fn ipam_claim_with_ips_is_invalid() {
        let e = parse(r#"[{"name": "n", "ips": ["10.0.0.1/24"], "ipam-claim-reference": "c"}]"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("ipam-claim-reference"), "{e:?}");
    }

    #[test]
    fn malformed_json_is_code_6() {
        for bad in [r#"[{"name": "x""#, r#"{"name": "x"}"#, r#"["x"]"#] {
            assert_eq!(parse(bad).unwrap_err().code, 6, "{bad}");
        }
    }

    #[test]
    fn bad_values_are_code_7_and_name_the_field() {
        let cases = [
            ("Upper-Case", "DNS-1123"),
            ("a/b/c", "more than one"),
            ("ns/", "empty network name"),
            ("-bad", "DNS-1123"),
            ("a,,b", "empty network name"),
            ("net@a234567890123456", "too long"),
            ("net@bad/if", "contains /"),
            (r#"[{"name": "n", "ips": ["10.0.0.300"]}]"#, "not an IP"),
            (
                r#"[{"name": "n", "mac": "zz:00:00:00:00:00"}]"#,
                "hardware address",
            ),
            (
                r#"[{"name": "n", "infiniband-guid": "c2:11:22:33:44:55"}]"#,
                "hardware address",
            ),
            (
                r#"[{"name": "a", "default-route": []}, {"name": "b", "default-route": ["10.0.0.1"]}]"#,
                "at most one",
            ),
        ];
        for (annotation, why) in cases {
            let e = parse(annotation).unwrap_err();
            assert_eq!(e.code, 7, "{annotation}");
            assert!(e.details.contains(why), "{annotation}: {}", e.details);
        }
    }

    #[test]
    fn interface_names_default_and_clash() {
        let s = parse("a,b@fast0,a").unwrap();
        assert_eq!(
            interface_names(&s, "eth0", 1).unwrap(),
            ["net1", "fast0", "net3"]
        );
        assert_eq!(
            interface_names(&s, "eth0", 3).unwrap(),
            ["net3", "fast0", "net5"]
        );
        let dup = parse("a@x0,b@x0").unwrap();
        assert!(
            interface_names(&dup, "eth0", 1)
                .unwrap_err()
                .details
                .contains("\"x0\"")
        );
        let clash = parse("a@eth0").unwrap();
        assert_eq!(interface_names(&clash, "eth0", 1).unwrap_err().code, 7);
    }
}
