//! The kubelet's gRPC APIs (PodResources v1, device plugin v1beta1, plugin
//! registration v1) and the part of the CRI (runtime.v1) the kubelet uses
//! to run pod sandboxes, generated from the `.proto` files in `proto/`
//! (written from the published definitions; see the header of each), and
//! gRPC over the unix sockets the kubelet uses.
//!
//! Both sides are generated: plexus is a client of PodResources, tests
//! stand in for the kubelet with a real server on a real socket, and drive
//! a real container runtime (containerd) through the CRI as the kubelet
//! does.

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

/// The Container Runtime Interface (`k8s.io/cri-api/pkg/apis/runtime/v1`).
pub mod runtime {
    /// Version v1: `runtime.v1.RuntimeService`, the pod-sandbox calls.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// The default PodResources socket of the kubelet.
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// A channel to a gRPC server on a unix socket. The socket is opened when
/// the channel connects (here, before returning), within `connect_timeout`.
///
/// Requests carry `:authority: localhost`, as the kubelet's grpc-go sends
/// since Kubernetes 1.26 (kubernetes PR 112597). Older kubelets, grpcurl,
/// grpc-java and Python's grpcio send the socket path instead, which the
/// HTTP/2 layer of tonic servers (h2) refuses with `RST_STREAM
/// PROTOCOL_ERROR`: a test client must send what the kubelet sends.
///
/// # Errors
/// When the socket cannot be connected to.
pub async fn connect(
    path: &Path,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The connector below ignores the URI and dials the socket; the URI's
    // host is only the `:authority` pseudo-header.
    Endpoint::from_static("http://localhost")
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
