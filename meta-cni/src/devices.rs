//! Devices the kubelet gave a pod, handed to the networks that need them
//! (Multus M27, M29, M30).
//!
//! A NAD with `k8s.v1.cni.cncf.io/resourceName` takes one device of that
//! resource per attachment. The pod's devices come from the kubelet's
//! PodResources API (`List`, matched by namespace and name) or, when its
//! socket is absent or does not answer, from the device manager's checkpoint
//! (matched by pod UID). They are looked up once per ADD, only when some
//! network needs them, and given out in order: the Nth attachment of a
//! resource gets its Nth device.
//!
//! Order: the kubelet lists a container's devices in no stable order, so the
//! IDs of each container's entry are sorted, and containers keep the
//! kubelet's order (never sorted across containers: that would break the
//! pairing with the `PCIDEVICE_*` variables the device plugin gave each
//! container; Multus #1540).
//!
//! The device goes into every plugin of the delegate config as `deviceID`
//! and `pciBusID`, and into runtimeConfig as `deviceID` and
//! `CNIDeviceInfoFile`. The device plugin's device-info file
//! (`<devinfo>/dp/<resource>-<id>-device.json`) is copied to that file
//! before the delegate runs; after it, the file is read into the
//! network-status `device-info`; DEL removes it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_cni::CniError;
use plexus_cni::conf::NetworkConfigList;
use plexus_cni::error::code;
use plexus_kubelet_api::podresources::v1::ListPodResourcesRequest;
use plexus_kubelet_api::podresources::v1::pod_resources_lister_client::PodResourcesListerClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::PodRef;
use crate::config::PlexusConf;
use crate::resolve::Planned;
use crate::state::list_to_value;

/// How long plexus waits for the kubelet (Multus: 10 s each).
const KUBELET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KUBELET_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `List` answer accepted (Multus: 16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// The device an attachment was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The resource, e.g. `intel.com/sriov_net_a`.
    pub resource: String,
    /// The device ID (a PCI address for SR-IOV VFs).
    pub id: String,
    /// The attachment's device-info file.
    pub info_file: PathBuf,
}

/// A pod's devices by resource, each list in the order they are given out.
pub type DeviceMap = BTreeMap<String, Vec<String>>;

/// Where a pod's devices were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The kubelet's PodResources socket.
    PodResources(PathBuf),
    /// The device manager's checkpoint file.
    Checkpoint(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PodResources(p) => write!(f, "the kubelet PodResources API ({})", p.display()),
            Self::Checkpoint(p) => write!(f, "the kubelet checkpoint {}", p.display()),
        }
    }
}

/// Asks the kubelet's PodResources API for the devices of `pod`.
///
/// # Errors
/// When the socket cannot be reached or the call fails.
pub fn from_pod_resources(socket: &Path, pod: &PodRef) -> Result<DeviceMap, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let resp = rt.block_on(async {
        let channel = plexus_kubelet_api::connect(socket, KUBELET_CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
        let mut client =
            PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        tokio::time::timeout(
            KUBELET_CALL_TIMEOUT,
            client.list(ListPodResourcesRequest {}),
        )
        .await
        .map_err(|_| format!("List timed out after {KUBELET_CALL_TIMEOUT:?}"))?
        .map_err(|s| format!("List failed: {:?}: {}", s.code(), s.message()))
    })?;
    let mut out = DeviceMap::new();
    for p in resp
        .into_inner()
        .pod_resources
        .into_iter()
        .filter(|p| p.namespace == pod.namespace && p.name == pod.name)
    {
        for c in p.containers {
            for mut d in c.devices {
                d.device_ids.sort();
                out.entry(d.resource_name).or_default().extend(d.device_ids);
            }
        }
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The device manager's checkpoint (`kubelet_internal_checkpoint`): only
/// what plexus reads. The checksum is not verified (it hashes a Go-specific
/// dump; Multus does not verify it either) and unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: CheckpointData,
}

#[derive(Debug, Deserialize)]
struct CheckpointData {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct CheckpointEntry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ResourceName")]
    resource_name: String,
    #[serde(rename = "DeviceIDs")]
    device_ids: CheckpointIds,
}

/// Kubelets up to 1.19 wrote a list; later ones a map from NUMA node (a
/// decimal string, `-1` for none) to IDs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CheckpointIds {
    List(Vec<String>),
    PerNuma(BTreeMap<String, Vec<String>>),
}

impl CheckpointIds {
    /// Sorted, without the repeats a device on several NUMA nodes has.
    fn flatten(self) -> Vec<String> {
        let mut ids: Vec<String> = match self {
            Self::List(l) => l,
            Self::PerNuma(m) => m.into_values().flatten().collect(),
        };
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Reads the devices of the pod with `uid` from a checkpoint file. An entry
/// plexus cannot read is skipped (and logged), never the whole file.
///
/// # Errors
/// When the file cannot be read or is not a checkpoint at all.
pub fn from_checkpoint(path: &Path, uid: &str) -> Result<DeviceMap, String> {
    let text = fs::read(path).map_err(|e| e.to_string())?;
    parse_checkpoint(&text, uid).map_err(|e| format!("{}: {e}", path.display()))
}

/// The devices of the pod with `uid` in a checkpoint's bytes; see
/// [`from_checkpoint`].
///
/// # Errors
/// When the bytes are not a checkpoint at all.
pub fn parse_checkpoint(bytes: &[u8], uid: &str) -> Result<DeviceMap, String> {
    let cp: Checkpoint =
        serde_json::from_slice(bytes).map_err(|e| format!("not a device checkpoint: {e}"))?;
    let mut out = DeviceMap::new();
    for raw in cp.data.entries.unwrap_or_default() {
        match serde_json::from_value::<CheckpointEntry>(raw) {
            Ok(e) if e.pod_uid == uid => out
                .entry(e.resource_name)
                .or_default()
                .extend(e.device_ids.flatten()),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable checkpoint entry"),
        }
    }
    Ok(out)
}

/// The pod's devices, looked up when first needed and given out in order.
#[derive(Debug)]
pub struct PodDevices<'a> {
    conf: &'a PlexusConf,
    pod: Option<&'a PodRef>,
    /// The UID the checkpoint knows the pod by: the runtime's
    /// `K8S_POD_UID` (the kubelet's own, right for static pods too), else
    /// the API server's.
    uid: Option<String>,
    found: Option<(Source, DeviceMap)>,
    next: HashMap<String, usize>,
}

impl<'a> PodDevices<'a> {
    /// Nothing is looked up until [`PodDevices::take`] needs it.
    #[must_use]
    pub fn new(conf: &'a PlexusConf, pod: Option<&'a PodRef>, api_uid: Option<&str>) -> Self {
        let uid = pod
            .and_then(|p| p.uid.clone())
            .or_else(|| api_uid.map(str::to_owned));
        Self {
            conf,
            pod,
            uid,
            found: None,
            next: HashMap::new(),
        }
    }

    fn load(&self, network: &str, resource: &str) -> Result<(Source, DeviceMap), CniError> {
        let need = |why: String| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "network {network} needs a device of resource {resource:?}, but the pod's \
                     devices are unknown: {why}"
                ),
            )
        };
        let pod = self
            .pod
            .ok_or_else(|| need("K8S_POD_NAMESPACE and K8S_POD_NAME are not in CNI_ARGS".into()))?;
        let socket = self.conf.pod_resources_socket();
        let checkpoint = self.conf.device_checkpoint_file();
        let mut tried = Vec::new();
        if socket.exists() {
            match from_pod_resources(socket, pod) {
                Ok(m) => return Ok((Source::PodResources(socket.to_owned()), m)),
                Err(e) => {
                    tracing::warn!(socket = %socket.display(), error = %e,
                        "kubelet PodResources failed; trying the checkpoint");
                    tried.push(format!("{}: {e}", socket.display()));
                }
            }
        } else {
            tried.push(format!("{} does not exist", socket.display()));
        }
        if checkpoint.exists() {
            let uid = self.uid.as_deref().ok_or_else(|| {
                need(format!(
                    "{}; the checkpoint {} knows pods by UID, and neither K8S_POD_UID nor \
                     the API server gave one",
                    tried.join("; "),
                    checkpoint.display()
                ))
            })?;
            return from_checkpoint(checkpoint, uid)
                .map(|m| (Source::Checkpoint(checkpoint.to_owned()), m))
                .map_err(|e| {
                    need(format!(
                        "{}; {}: {e}",
                        tried.join("; "),
                        checkpoint.display()
                    ))
                });
        }
        tried.push(format!("{} does not exist", checkpoint.display()));
        Err(need(tried.join("; ")))
    }

    /// The next device of `resource` for an attachment of `network`, or
    /// `None` when the pod has no more (Multus then runs the delegate
    /// without a device, and so does plexus, with a warning).
    ///
    /// # Errors
    /// Code 11 when neither the kubelet nor its checkpoint can say.
    pub fn take(&mut self, network: &str, resource: &str) -> Result<Option<String>, CniError> {
        if self.found.is_none() {
            self.found = Some(self.load(network, resource)?);
        }
        let (source, map) = self.found.as_ref().expect("loaded above");
        let next = self.next.entry(resource.to_owned()).or_default();
        let id = map.get(resource).and_then(|ids| ids.get(*next)).cloned();
        match &id {
            Some(id) => {
                *next += 1;
                tracing::debug!(network, resource, device = id, %source, "device assigned");
            }
            None => tracing::warn!(
                network,
                resource,
                have = map.get(resource).map_or(0, Vec::len),
                %source,
                "the pod has no (more) devices of this resource; running the delegate without one"
            ),
        }
        Ok(id)
    }
}

/// `/` becomes `-`, as in every device-info file name (the NAD client's
/// rule), so a name can never leave its directory.
fn file_part(s: &str) -> String {
    s.replace('/', "-")
}

/// The device plugin's file for one device.
#[must_use]
pub fn dp_info_file(dir: &Path, resource: &str, id: &str) -> PathBuf {
    dir.join("dp").join(format!(
        "{}-{}-device.json",
        file_part(resource),
        file_part(id)
    ))
}

/// The attachment's file: `cni/<network>-<containerID>_<ifname>`, with `/`
/// replaced, as Multus names it.
#[must_use]
pub fn cni_info_file(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join("cni")
        .join(file_part(&format!("{network}-{container_id}_{ifname}")))
}

/// `deviceID` and `pciBusID` set in every plugin of the list (Multus M29:
/// both keys, always, overwriting).
///
/// # Errors
/// Never for a valid list; code 7 if the result were not one.
pub fn inject(list: &NetworkConfigList, id: &str) -> Result<NetworkConfigList, CniError> {
    let mut value = list_to_value(list);
    for plugin in value["plugins"].as_array_mut().into_iter().flatten() {
        if let Value::Object(p) = plugin {
            p.insert("deviceID".into(), id.into());
            p.insert("pciBusID".into(), id.into());
        }
    }
    NetworkConfigList::from_value(value).map_err(CniError::from)
}

/// Gives every planned attachment whose network names a resource its
/// device: in its config, its runtimeConfig, and [`Planned::device`].
///
/// # Errors
/// As [`PodDevices::take`].
pub fn assign(
    planned: &mut [Planned],
    devices: &mut PodDevices<'_>,
    container_id: &str,
) -> Result<(), CniError> {
    let dir = devices.conf.device_info_dir().to_owned();
    for p in planned.iter_mut() {
        let Some(resource) = p.resource.clone() else {
            continue;
        };
        let Some(id) = devices.take(&p.network, &resource)? else {
            continue;
        };
        if let Some(asked) = p.capability_args.get("deviceID").and_then(Value::as_str)
            && asked != id
        {
            tracing::info!(
                network = p.network,
                asked,
                allocated = id,
                "the annotation's deviceID is replaced by the allocated device"
            );
        }
        p.list = inject(&p.list, &id)?;
        let info_file = cni_info_file(&dir, &p.network, container_id, &p.ifname);
        p.capability_args
            .insert("deviceID".into(), id.clone().into());
        p.capability_args.insert(
            "CNIDeviceInfoFile".into(),
            info_file.to_string_lossy().into_owned().into(),
        );
        p.device = Some(Device {
            resource,
            id,
            info_file,
        });
    }
    Ok(())
}

/// Copies the device plugin's file for `device` to the attachment's file
/// (0444), before the delegate runs. Best effort, as in Multus: most
/// device plugins write none, and the delegate may write its own; an
/// existing file is never overwritten.
pub fn copy_info(dir: &Path, device: &Device) {
    let from = dp_info_file(dir, &device.resource, &device.id);
    let copy = || -> std::io::Result<()> {
        let bytes = fs::read(&from)?;
        // Must be JSON: a half-written file is not passed on.
        serde_json::from_slice::<Value>(&bytes).map_err(std::io::Error::other)?;
        if let Some(parent) = device.info_file.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&device.info_file)?;
        f.write_all(&bytes)
    };
    if let Err(e) = copy() {
        tracing::debug!(from = %from.display(), to = %device.info_file.display(), error = %e,
            "no device-info copied");
    }
}

/// The attachment's device-info, for network-status: whatever the file
/// holds after the delegate ran (plexus' copy or the delegate's own).
#[must_use]
pub fn read_info(device: &Device) -> Option<Value> {
    let bytes = fs::read(&device.info_file).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %device.info_file.display(), error = %e,
                "device-info file is not JSON; left out of network-status");
            None
        }
    }
}

/// Removes an attachment's device-info file after its DEL; a missing file
/// is fine.
pub fn remove_info(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot remove device-info"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checkpoint_reads_both_id_forms_by_uid_and_skips_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet_internal_checkpoint");
        fs::write(
            &path,
            json!({"Data": {"PodDeviceEntries": [
                {"PodUID": "u1", "ContainerName": "a", "ResourceName": "intel.com/sriov",
                 "DeviceIDs": {"1": ["0000:03:02.3", "0000:03:02.0"], "0": ["0000:03:02.0"]},
                 "AllocResp": "CikK"},
                {"PodUID": "u2", "ContainerName": "a", "ResourceName": "intel.com/sriov",
                 "DeviceIDs": ["0000:03:02.7"]},
                {"PodUID": "u1", "ContainerName": "b", "ResourceName": "intel.com/sriov",
                 "DeviceIDs": ["0000:03:02.1"]},
                {"PodUID": "u1", "ContainerName": "b", "ResourceName": 7},
                {"PodUID": "u1", "ContainerName": "b", "ResourceName": "nvidia.com/gpu",
                 "DeviceIDs": {"-1": ["GPU-1"]}}
            ], "RegisteredDevices": null}, "Checksum": 229_855_270u64, "BootID": "x"})
            .to_string(),
        )
        .unwrap();
        let m = from_checkpoint(&path, "u1").unwrap();
        assert_eq!(
            m["intel.com/sriov"],
            // Sorted and deduplicated within an entry, entries in file order.
            ["0000:03:02.0", "0000:03:02.3", "0000:03:02.1"]
        );
        assert_eq!(m["nvidia.com/gpu"], ["GPU-1"]);
        assert!(from_checkpoint(&path, "nobody").unwrap().is_empty());
        fs::write(&path, "{\"Data\":").unwrap();
        assert!(
            from_checkpoint(&path, "u1")
                .unwrap_err()
                .contains("not a device checkpoint")
        );
    }

    #[test]
    fn file_names_follow_the_nad_client() {
        let d = Path::new("/run/devinfo");
        assert_eq!(
            dp_info_file(d, "intel.com/sriov_net_A", "0000:03:02.3"),
            Path::new("/run/devinfo/dp/intel.com-sriov_net_A-0000:03:02.3-device.json")
        );
        assert_eq!(
            cni_info_file(d, "admin/srv", "e061", "net1"),
            Path::new("/run/devinfo/cni/admin-srv-e061_net1")
        );
        // A hostile name stays in its directory.
        assert_eq!(
            cni_info_file(d, "../../etc/x", "c", "net1")
                .parent()
                .unwrap(),
            Path::new("/run/devinfo/cni")
        );
    }

    #[test]
    fn inject_sets_both_keys_in_every_plugin() {
        let list = NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "sriov", "deviceID": "old"}, {"type": "tuning"}]}))
        .unwrap();
        let v = list_to_value(&inject(&list, "0000:03:02.3").unwrap());
        for p in v["plugins"].as_array().unwrap() {
            assert_eq!(p["deviceID"], "0000:03:02.3");
            assert_eq!(p["pciBusID"], "0000:03:02.3");
        }
    }

    #[test]
    fn no_source_is_an_error_naming_the_resource() {
        let dir = tempfile::tempdir().unwrap();
        let conf = PlexusConf::from_value(&json!({
            "podResourcesSocket": dir.path().join("kubelet.sock"),
            "deviceCheckpointFile": dir.path().join("checkpoint"),
        }))
        .unwrap();
        let pod = PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: Some("u".into()),
        };
        let mut devices = PodDevices::new(&conf, Some(&pod), None);
        let e = devices
            .take("default/sriov-a", "intel.com/sriov")
            .unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("\"intel.com/sriov\""), "{}", e.msg);
        assert!(e.msg.contains("kubelet.sock does not exist"), "{}", e.msg);
        assert!(e.msg.contains("checkpoint does not exist"), "{}", e.msg);
    }
}
