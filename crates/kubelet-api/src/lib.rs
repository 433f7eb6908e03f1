//! The kubelet's gRPC APIs (PodResources v1, device plugin v1beta1, plugin
//! registration v1), generated from the `.proto` files in `proto/`
//! (written from the published definitions; see the header of each), and
//! gRPC over the unix sockets the kubelet uses.
//!
//! Both sides are generated: plexus is a client of PodResources, and tests
//! stand in for the kubelet with a real server on a real socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// The kubelet PodResources API (`k8s.io/kubelet/pkg/apis/podresources/v1`).
pub mod podresources {
    /// Version v1: `v1.PodResourcesLister`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    pub mod v1 {
        tonic::include_proto!("v1");
    }
}

/// The kubelet device-plugin API (`k8s.io/kubelet/pkg/apis/deviceplugin`).
pub mod deviceplugin {
    /// Version v1beta1: `v1beta1.Registration` (kubelet) and
    /// `v1beta1.DevicePlugin` (plugins).
    #[allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
}

/// The kubelet plugin-watcher registration API
/// (`k8s.io/kubelet/pkg/apis/pluginregistration/v1`).
pub mod pluginregistration {
    /// Package `pluginregistration`: `Registration` served by plugins.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    pub mod v1 {
        tonic::include_proto!("pluginregistration");
    }
}

/// The default PodResources socket of the kubelet.
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// A channel to a gRPC server on a unix socket. The socket is opened when
/// the channel connects (here, before returning), within `connect_timeout`.
///
/// # Errors
/// When the socket cannot be connected to.
pub async fn connect(
    path: &Path,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is required by the API but never used: the connector below
    // ignores it and dials the socket.
    Endpoint::from_static("http://kubelet.invalid")
        .connect_timeout(connect_timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// The incoming connections of a unix listener, for
/// `tonic::transport::Server::serve_with_incoming`.
#[must_use]
pub fn incoming(listener: UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}
