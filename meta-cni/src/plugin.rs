//! The CNI operations of `plexus`.
//!
//! This build delegates the cluster network only: ADD runs it as
//! `CNI_IFNAME` and prints its result in plexus' own `cniVersion`; DEL and
//! CHECK hand it the result the runtime cached for plexus (its `prevResult`),
//! converted to the delegate's version; STATUS and GC are forwarded.
//! Additional networks from annotations and NADs build on this.

use plexus_cni::invoke::{Invoker, RuntimeConf};
use plexus_cni::plugin::{Attachment, Plugin, Request};
use plexus_cni::{CniError, CniResult};
use serde_json::Map;

use crate::config::PlexusConf;

/// The plexus plugin.
#[derive(Debug, Default)]
pub struct Plexus;

struct Primary {
    list: plexus_cni::conf::NetworkConfigList,
    invoker: Invoker,
}

fn primary(req: &Request) -> Result<Primary, CniError> {
    let conf = PlexusConf::from_value(&req.config)?;
    let list = conf.cluster_network()?;
    Ok(Primary {
        invoker: Invoker::new(conf.search_path(&req.path)),
        list,
    })
}

/// The runtime's own parameters, passed on unchanged: the cluster network
/// gets `CNI_IFNAME` and every capability argument the runtime gave us
/// (spec §7.5 of the multi-network standard: runtimeConfig goes to the
/// cluster network only).
fn runtime_conf(req: &Request) -> RuntimeConf {
    RuntimeConf {
        container_id: req.container_id.clone(),
        netns: req.netns.clone(),
        ifname: req.ifname.clone(),
        args: req.args.clone(),
        capability_args: req
            .runtime_config()
            .as_object()
            .cloned()
            .unwrap_or_else(Map::new),
    }
}

impl Plugin for Plexus {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let p = primary(req)?;
        let rt = runtime_conf(req);
        match p.invoker.add_list(&p.list, &rt) {
            Ok(result) => {
                tracing::info!(
                    container = req.container_id,
                    network = p.list.name,
                    "ADD done"
                );
                Ok(result)
            }
            Err(e) => {
                // Leave nothing behind: undo whatever part of the chain ran.
                if let Err(undo) = p.invoker.del_list(&p.list, &rt, None) {
                    tracing::warn!(error = %undo, "rollback DEL after failed ADD also failed");
                }
                Err(e.into())
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let p = primary(req)?;
        let cached = req.prev_result()?;
        p.invoker
            .del_list(&p.list, &runtime_conf(req), cached.as_ref())
            .map_err(CniError::from)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let p = primary(req)?;
        if !p.list.cni_version.allows_check() {
            // The delegate predates CHECK: there is nothing it can verify.
            tracing::debug!(network = p.list.name, version = %p.list.cni_version, "delegate has no CHECK");
            return Ok(());
        }
        let cached = req.prev_result()?.ok_or_else(|| {
            CniError::new(
                plexus_cni::error::code::INVALID_NETWORK_CONFIG,
                "CHECK needs a prevResult",
            )
        })?;
        p.invoker
            .check_list(&p.list, &runtime_conf(req), &cached)
            .map_err(CniError::from)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let p = primary(req)?;
        p.invoker.status_list(&p.list).map_err(CniError::from)
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let p = primary(req)?;
        p.invoker.gc_list(&p.list, valid).map_err(|errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            CniError::new(
                plexus_cni::error::code::INTERNAL,
                "GC failed for some delegates",
            )
            .with_details(all.join("; "))
        })
    }
}
