//! `plexus install`: what a node's DaemonSet init/sidecar container runs.
//!
//! 1. Copies the `plexus` binary into the host's CNI bin dir atomically
//!    (temp file in the same directory, fsync, rename): a runtime already
//!    executing the old binary keeps its inode, so there is no "text file
//!    busy" and no window with a half-written plugin (Multus P1).
//! 2. Writes a kubeconfig from the pod's service-account token and CA, and
//!    rewrites it whenever they change (Multus only did this with
//!    `--cleanup-config-on-exit`, so bound tokens expired: P6).
//! 3. Generates `00-plexus.conflist` from the master config **named** on the
//!    command line (never "the first file in the directory": P8), carrying
//!    its `cniVersion` and capabilities, and regenerates it when the master
//!    changes. It is never deleted on exit: a node keeps using plexus while
//!    the DaemonSet restarts, instead of silently falling back to the
//!    primary CNI without secondary networks (P3).
//!
//! With `--watch` it keeps doing 2 and 3 once a second, and puts back
//! either file within a round when someone deletes it; without, it does
//! all three once and exits.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::state::private_dir;

/// The options of `plexus install` (Multus thin-entrypoint names where
/// there is one).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "plexus install", about = "Install plexus on a node")]
pub struct InstallArgs {
    /// The binary to install (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The host's CNI bin dir, as mounted in this container.
    #[arg(long, default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI config dir, as mounted in this container.
    #[arg(long, default_value = "/host/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The same directory as the host (and so the runtime) sees it; paths
    /// written into the generated config use it.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub host_cni_conf_dir: PathBuf,
    /// The master (cluster network) config file in the CNI config dir, by
    /// file name, e.g. `05-cilium.conflist`. Required: plexus never guesses.
    #[arg(long)]
    pub master_conf: String,
    /// The generated config's file name.
    #[arg(long, default_value = "00-plexus.conflist")]
    pub conf_name: String,
    /// The network name of the generated config.
    #[arg(long, default_value = "multus-cni-network")]
    pub network_name: String,
    /// Where the service account's `token` and `ca.crt` are.
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// The API server URL; default from `KUBERNETES_SERVICE_HOST`/`_PORT`.
    #[arg(long)]
    pub api_server: Option<String>,
    /// Skip the kubeconfig (standalone nodes without an API server).
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// Extra plexus config keys for the generated config, as a JSON object
    /// (e.g. `{"namespaceIsolation": true, "readinessindicatorfile": "..."}`).
    #[arg(long, default_value = "{}")]
    pub plexus_config: String,
    /// Keep running: refresh the kubeconfig and the config when the token
    /// or the master change.
    #[arg(long)]
    pub watch: bool,
    /// Poll interval in watch mode, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

/// What went wrong while installing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The master config is not a usable CNI config.
    #[error("master config {path}: {why}")]
    Master {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A required setting is missing or malformed.
    #[error("{0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies `src` to `<dir>/plexus` atomically (mode 0755).
///
/// # Errors
/// When the source cannot be read or the directory written.
pub fn install_binary(src: &Path, dir: &Path) -> Result<PathBuf, InstallError> {
    let dest = dir.join("plexus");
    let tmp = dir.join(format!(".plexus.{}.tmp", std::process::id()));
    let copy = || -> io::Result<()> {
        fs::copy(src, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        File::open(&tmp)?.sync_all()?;
        // rename(2) swaps the directory entry: a process executing the old
        // file keeps its inode, and a new exec sees the whole new file.
        fs::rename(&tmp, &dest)?;
        File::open(dir)?.sync_all()
    };
    copy().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(&dest)(e)
    })?;
    Ok(dest)
}

/// Writes `bytes` to `path` atomically with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// A kubeconfig for the API server with the service account's token and
/// CA embedded (the host-side plugin cannot see the container's token
/// file, so the token is copied and rewritten when it rotates).
#[must_use]
pub fn kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "# Written by plexus install; rewritten when the service account token rotates.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: plexus\n  \
         user:\n    token: {token}\ncontexts:\n- name: plexus-context\n  context:\n    \
         cluster: local\n    user: plexus\ncurrent-context: plexus-context\n"
    )
}

/// The generated config: a conflist in the master's `cniVersion` with one
/// `plexus` plugin whose cluster network is the master file, declaring every
/// capability the master's plugins declare (so the runtime passes them, and
/// plexus hands them to the cluster network).
///
/// # Errors
/// When the master is not a JSON CNI config with a version.
pub fn generate(
    master: &Value,
    master_host_path: &Path,
    network_name: &str,
    kubeconfig_host_path: Option<&Path>,
    extra: &Map<String, Value>,
) -> Result<Value, String> {
    let version = master
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or("no cniVersion")?;
    let plugins: Vec<&Value> = match master.get("plugins") {
        Some(Value::Array(p)) => p.iter().collect(),
        Some(_) => return Err("\"plugins\" is not a list".into()),
        None => vec![master],
    };
    let mut caps = Map::new();
    for p in plugins {
        for (k, v) in p
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if v.as_bool() == Some(true) {
                caps.insert(k.clone(), Value::Bool(true));
            }
        }
    }
    let mut plugin = json!({"type": "plexus", "clusterNetwork": master_host_path});
    if let Some(k) = kubeconfig_host_path {
        plugin["kubeconfig"] = json!(k);
    }
    // Capabilities named in the extra keys join the master's: a node that
    // wants `io.kubernetes.cri.pod-annotations` (standalone mode under
    // containerd) must not lose the master's `portMappings` for it.
    if let Some(more) = extra.get("capabilities").and_then(Value::as_object) {
        for (k, v) in more {
            if v.as_bool() == Some(true) {
                caps.insert(k.clone(), Value::Bool(true));
            } else {
                caps.remove(k);
            }
        }
    }
    if !caps.is_empty() {
        plugin["capabilities"] = Value::Object(caps);
    }
    for (k, v) in extra.iter().filter(|(k, _)| *k != "capabilities") {
        plugin[k] = v.clone();
    }
    Ok(json!({"cniVersion": version, "name": network_name, "plugins": [plugin]}))
}

/// The installer's state between rounds, so unchanged inputs are not
/// rewritten.
#[derive(Debug, Default)]
struct Seen {
    sa: Option<(Vec<u8>, Vec<u8>)>,
    master: Option<Vec<u8>>,
}

fn api_server(args: &InstallArgs) -> Result<String, InstallError> {
    if let Some(s) = &args.api_server {
        return Ok(s.clone());
    }
    match (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) {
        (Ok(h), Ok(p)) if !h.is_empty() => Ok(if h.contains(':') {
            format!("https://[{h}]:{p}")
        } else {
            format!("https://{h}:{p}")
        }),
        _ => Err(InstallError::Config(
            "no --api-server and no KUBERNETES_SERVICE_HOST/PORT (use --no-kubeconfig for a node without an API server)".into(),
        )),
    }
}

const KUBECONFIG_DIR: &str = "plexus.d";
const KUBECONFIG_FILE: &str = "plexus.kubeconfig";

/// One round: refresh the kubeconfig and the generated config when their
/// inputs changed. Returns what it wrote, for the log.
fn round(args: &InstallArgs, seen: &mut Seen) -> Result<Vec<String>, InstallError> {
    let mut wrote = Vec::new();
    let kube_dir = args.cni_conf_dir.join(KUBECONFIG_DIR);
    if !args.no_kubeconfig {
        let token_path = args.service_account_dir.join("token");
        let ca_path = args.service_account_dir.join("ca.crt");
        let token = fs::read(&token_path).map_err(io_err(&token_path))?;
        let ca = fs::read(&ca_path).map_err(io_err(&ca_path))?;
        let path = kube_dir.join(KUBECONFIG_FILE);
        // Rewritten when the token or CA changed, and when someone deleted
        // it: a node must not lose plexus' kubeconfig until the next
        // rotation.
        if seen.sa.as_ref() != Some(&(token.clone(), ca.clone())) || !path.exists() {
            private_dir(&kube_dir).map_err(io_err(&kube_dir))?;
            let text = kubeconfig(
                &api_server(args)?,
                &ca,
                String::from_utf8_lossy(&token).trim(),
            );
            write_atomic(&path, text.as_bytes(), 0o600)?;
            wrote.push(path.display().to_string());
            seen.sa = Some((token, ca));
        }
    }
    let master_path = args.cni_conf_dir.join(&args.master_conf);
    let master = fs::read(&master_path).map_err(io_err(&master_path))?;
    let path = args.cni_conf_dir.join(&args.conf_name);
    // The same for the generated config: a deleted one would leave pods
    // starting on the master alone, without their extra networks.
    if seen.master.as_ref() != Some(&master) || !path.exists() {
        let value: Value = serde_json::from_slice(&master).map_err(|e| InstallError::Master {
            path: master_path.clone(),
            why: e.to_string(),
        })?;
        let extra: Map<String, Value> = serde_json::from_str(&args.plexus_config)
            .map_err(|e| InstallError::Config(format!("--plexus-config: {e}")))?;
        let kubeconfig_host = (!args.no_kubeconfig).then(|| {
            args.host_cni_conf_dir
                .join(KUBECONFIG_DIR)
                .join(KUBECONFIG_FILE)
        });
        let conf = generate(
            &value,
            &args.host_cni_conf_dir.join(&args.master_conf),
            &args.network_name,
            kubeconfig_host.as_deref(),
            &extra,
        )
        .map_err(|why| InstallError::Master {
            path: master_path.clone(),
            why,
        })?;
        let text = serde_json::to_string_pretty(&conf).expect("config serialises");
        write_atomic(&path, text.as_bytes(), 0o644)?;
        wrote.push(path.display().to_string());
        seen.master = Some(master);
    }
    Ok(wrote)
}

/// Runs the installer.
///
/// # Errors
/// The first failure of the one-shot mode; in watch mode, only failures
/// to install the binary (later ones are logged and retried).
pub fn run(args: &InstallArgs) -> Result<(), InstallError> {
    if args.conf_name == args.master_conf {
        return Err(InstallError::Config(
            "--conf-name and --master-conf name the same file".into(),
        ));
    }
    let src = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?,
    };
    let dest = install_binary(&src, &args.cni_bin_dir)?;
    tracing::info!(binary = %dest.display(), "installed");
    let mut seen = Seen::default();
    if !args.watch {
        for w in round(args, &mut seen)? {
            tracing::info!(file = w, "written");
        }
        return Ok(());
    }
    loop {
        match round(args, &mut seen) {
            Ok(wrote) => {
                for w in wrote {
                    tracing::info!(file = w, "written");
                }
            }
            // The master may not exist yet (its CNI is still starting), or
            // the token may be mid-rotation: keep what is there, try again.
            Err(e) => tracing::warn!(error = %e, "not (re)generated yet; retrying"),
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_carries_the_masters_version_and_capabilities() {
        let master = json!({"cniVersion": "0.4.0", "name": "calico", "plugins": [
            {"type": "calico", "capabilities": {"ipRanges": false}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}]});
        let extra = json!({"namespaceIsolation": true,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true, "bandwidth": false}});
        let c = generate(
            &master,
            Path::new("/etc/cni/net.d/10-calico.conflist"),
            "multus-cni-network",
            Some(Path::new("/etc/cni/net.d/plexus.d/plexus.kubeconfig")),
            extra.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(
            c,
            json!({"cniVersion": "0.4.0", "name": "multus-cni-network", "plugins": [{
                "type": "plexus", "clusterNetwork": "/etc/cni/net.d/10-calico.conflist",
                "kubeconfig": "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                "capabilities": {"portMappings": true,
                    "io.kubernetes.cri.pod-annotations": true},
                "namespaceIsolation": true}]})
        );
        // plexus itself reads what was generated.
        plexus_cni::conf::NetworkConfigList::from_value(c).unwrap();
        assert!(
            generate(
                &json!({"name": "x"}),
                Path::new("/x"),
                "n",
                None,
                &Map::new()
            )
            .is_err()
        );
    }

    #[test]
    fn kubeconfig_is_one_kube_accepts() {
        let text = kubeconfig(
            "https://10.96.0.1:443",
            b"-----BEGIN CERTIFICATE-----\n",
            "tok",
        );
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("plexus-context"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some());
    }
}
