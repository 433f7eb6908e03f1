//! Kubernetes RBAC, as the API server applies it, for the requests the API
//! server stand-in recorded: a test runs a binary against the stand-in and
//! then checks that the ClusterRole `deploy/` gives that binary allows
//! every request it made, so a manifest cannot lag behind the code (the
//! pod would get 403s only in a real cluster).

use std::path::Path;

use plexus_testkit::apiserver::Recorded;
use serde::Deserialize as _;
use serde_json::Value;

/// One `rules[]` entry of a ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `apiGroups` (`""` is the core group, `*` any).
    pub groups: Vec<String>,
    /// `resources`, subresources as `pods/status` (`*` any).
    pub resources: Vec<String>,
    /// `verbs` (`*` any).
    pub verbs: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The rules of the ClusterRole `name` in a multi-document manifest.
///
/// # Panics
/// When the file cannot be read or has no such ClusterRole.
#[must_use]
pub fn cluster_role(manifest: &Path, name: &str) -> Vec<Rule> {
    let text =
        std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{}: no ClusterRole {name}", manifest.display()))["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Rule {
            groups: strings(&r["apiGroups"]),
            resources: strings(&r["resources"]),
            verbs: strings(&r["verbs"]),
        })
        .collect()
}

/// The authorizer's view of a request: (verb, API group, resource with
/// its subresource). `None` for paths that are not resources (discovery,
/// `/version`), which any authenticated client may read.
#[must_use]
pub fn attributes(method: &str, path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [] => return None,
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((verb.to_owned(), group.to_owned(), resource))
}

fn any(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether `rules` allow (verb, group, resource).
#[must_use]
pub fn allows(rules: &[Rule], verb: &str, group: &str, resource: &str) -> bool {
    rules
        .iter()
        .any(|r| any(&r.verbs, verb) && any(&r.groups, group) && any(&r.resources, resource))
}

/// The authorizer's view of a recorded request: [`attributes`], with a
/// `GET ...?watch=true` a `watch`.
#[must_use]
pub fn request_attributes(r: &Recorded) -> Option<(String, String, String)> {
    let (verb, group, resource) = attributes(&r.method, &r.path)?;
    let watch = matches!(r.query.get("watch").map(String::as_str), Some("true" | "1"));
    Some(if watch && verb == "list" {
        ("watch".to_owned(), group, resource)
    } else {
        (verb, group, resource)
    })
}

/// The recorded requests `rules` would refuse, as `METHOD path (verb
/// group/resource)`.
#[must_use]
pub fn denied(rules: &[Rule], requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| {
            let (verb, group, resource) = request_attributes(r)?;
            (!allows(rules, &verb, &group, &resource))
                .then(|| format!("{} {} ({verb} {group}/{resource})", r.method, r.path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_authorizer_attributes() {
        let a = |m, p| attributes(m, p).map(|(v, g, r)| format!("{v} {g}/{r}"));
        assert_eq!(
            a("GET", "/api/v1/namespaces/ns/pods/p").as_deref(),
            Some("get /pods")
        );
        assert_eq!(
            a("PATCH", "/api/v1/namespaces/ns/pods/p/status").as_deref(),
            Some("patch /pods/status")
        );
        assert_eq!(
            a(
                "GET",
                "/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/n"
            )
            .as_deref(),
            Some("get k8s.cni.cncf.io/network-attachment-definitions")
        );
        assert_eq!(
            a("GET", "/apis/plexus.dev/v1alpha1/flowtables").as_deref(),
            Some("list plexus.dev/flowtables")
        );
        assert_eq!(
            a("PATCH", "/apis/plexus.dev/v1alpha1/flowtables/t/status").as_deref(),
            Some("patch plexus.dev/flowtables/status")
        );
        assert_eq!(a("GET", "/api/v1/nodes/n1").as_deref(), Some("get /nodes"));
        assert_eq!(a("GET", "/version"), None);
    }

    #[test]
    fn rules_allow_only_what_they_name() {
        let rules = [Rule {
            groups: vec![String::new()],
            resources: vec!["pods".into()],
            verbs: vec!["get".into()],
        }];
        assert!(allows(&rules, "get", "", "pods"));
        assert!(!allows(&rules, "patch", "", "pods"));
        assert!(!allows(&rules, "get", "", "pods/status"));
        assert!(!allows(&rules, "get", "apps", "pods"));
    }
}
