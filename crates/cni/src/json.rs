//! JSON the way Go writes and reads it.
//!
//! Go's `encoding/json` matches object keys case-insensitively, and
//! containerd's go-cni sends runtimeConfig structs without json tags
//! (`{"HostPort":8080}`). [`fold_keys`] renames keys that differ from a known
//! canonical name only by case, so strict serde types can then read them.

use serde_json::{Map, Value};

/// Renames, recursively, every object key that equals one of `canonical`
/// ignoring ASCII case to that canonical spelling. Other keys are untouched.
pub fn fold_keys(value: &mut Value, canonical: &[&str]) {
    match value {
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (k, mut v) in old {
                fold_keys(&mut v, canonical);
                let key = canonical
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(&k))
                    .map_or(k, |c| (*c).to_owned());
                new.insert(key, v);
            }
            *map = new;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fold_keys(v, canonical)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_nested_keys_only_when_known() {
        let mut v = json!({"PortMappings": [{"HostPort": 80, "Other": 1}], "x": {"SERVERS": []}});
        fold_keys(&mut v, &["portMappings", "hostPort", "servers"]);
        assert_eq!(
            v,
            json!({"portMappings": [{"hostPort": 80, "Other": 1}], "x": {"servers": []}})
        );
    }
}
