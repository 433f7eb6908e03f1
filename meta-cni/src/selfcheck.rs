//! What must hold for any input to the parsers of outside data: the
//! networks annotation, the netconf on stdin, NAD objects, the cache file
//! and the kubelet's device checkpoint. The coverage-guided fuzz targets
//! (`meta-cni/fuzz`, `make fuzz`) call these on every input they make, and
//! `tests/fuzz_corpora.rs` replays the committed corpora through them in
//! CI.
//!
//! Each returns `Err` for a broken invariant (a panic inside is a broken
//! one too): an accepted input must be usable as plexus uses it, and a
//! refused one must come back as the CNI error the spec's runtime expects,
//! never as a crash.

use std::path::Path;

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::error::code;
use serde_json::Value;

use crate::config::PlexusConf;
use crate::state::{Cache, list_to_value};
use crate::{devices, nad, selection};

/// The networks annotation (either form): refusals are code 6 (JSON) or 7
/// (a value); what is accepted validates, and gets one unique, valid
/// interface name per entry (or a code-7 clash).
///
/// # Errors
/// The broken invariant.
pub fn annotation(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let sels = match selection::parse(text) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.code,
                code::DECODING_FAILURE | code::INVALID_NETWORK_CONFIG
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(format!("refused with code {}: {e:?}", e.code)),
    };
    for s in &sels {
        s.validate()
            .map_err(|e| format!("{s:?} was accepted but does not validate: {e:?}"))?;
    }
    match selection::interface_names(&sels, "eth0", 1) {
        Ok(names) => {
            let mut seen = std::collections::HashSet::new();
            for n in &names {
                if !seen.insert(n) || n == "eth0" {
                    return Err(format!("interface {n:?} given twice: {names:?}"));
                }
                plexus_cni::validate::interface_name(n)
                    .map_err(|e| format!("interface {n:?} is not valid: {e:?}"))?;
            }
            Ok(())
        }
        Err(e) if e.code == code::INVALID_NETWORK_CONFIG => Ok(()),
        Err(e) => Err(format!("interface names refused with code {}", e.code)),
    }
}

/// The stdin netconf: plexus' own keys are read or refused with code 7;
/// a network config list that parses survives the cache's round trip.
///
/// # Errors
/// The broken invariant.
pub fn netconf(data: &[u8]) -> Result<(), String> {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return Ok(());
    };
    match PlexusConf::from_value(&value) {
        Ok(conf) => {
            let _ = conf.first_delegate();
            let _ = conf.extra_delegates();
        }
        Err(e) if e.code == code::INVALID_NETWORK_CONFIG => {}
        Err(e) => return Err(format!("plexus config refused with code {}", e.code)),
    }
    if let Ok(list) = NetworkConfigList::from_value(value) {
        let again = NetworkConfigList::from_value(list_to_value(&list))
            .map_err(|e| format!("a parsed config does not parse back: {e}"))?;
        if again != list {
            return Err(format!("the round trip changed it: {list:?} -> {again:?}"));
        }
    }
    Ok(())
}

/// NAD objects (YAML or JSON, one or more documents, `List`s): every NAD
/// read either becomes a delegate network that is not plexus itself, or
/// is refused with code 7.
///
/// # Errors
/// The broken invariant.
pub fn nad(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let Ok(nads) = nad::parse_text(text) else {
        return Ok(());
    };
    for n in &nads {
        match n.network(Path::new("/nonexistent")) {
            Ok(list) => {
                if let Some(p) = list
                    .plugins
                    .iter()
                    .find(|p| nad::SELF_TYPES.contains(&p.plugin_type()))
                {
                    return Err(format!("{} runs {:?}", n.display(), p.plugin_type()));
                }
            }
            Err(e) if e.code == code::INVALID_NETWORK_CONFIG => {}
            Err(e) => return Err(format!("{} refused with code {}", n.display(), e.code)),
        }
    }
    Ok(())
}

/// A cache file: what parses is written back to the same cache, and its
/// attachments can be read as DEL reads them.
///
/// # Errors
/// The broken invariant.
pub fn cache(data: &[u8]) -> Result<(), String> {
    let Ok(cache) = Cache::from_bytes(data) else {
        return Ok(());
    };
    let bytes = serde_json::to_vec(&cache).map_err(|e| e.to_string())?;
    let again = Cache::from_bytes(&bytes).map_err(|e| format!("written back, refused: {e}"))?;
    if again != cache {
        return Err("the round trip changed it".into());
    }
    for a in &cache.attachments {
        let _ = a.list();
        let _ = a.result();
        let _ = a.args();
    }
    Ok(())
}

/// The kubelet's device checkpoint: a bad entry is skipped, never the
/// file, and the answer does not depend on anything but the bytes.
///
/// # Errors
/// The broken invariant.
pub fn checkpoint(data: &[u8]) -> Result<(), String> {
    for uid in ["pod-a", ""] {
        let Ok(map) = devices::parse_checkpoint(data, uid) else {
            return Ok(());
        };
        let again = devices::parse_checkpoint(data, uid)
            .map_err(|e| format!("parsed once, refused the second time: {e}"))?;
        if again != map {
            return Err(format!("two parses disagree: {map:?} / {again:?}"));
        }
    }
    Ok(())
}
