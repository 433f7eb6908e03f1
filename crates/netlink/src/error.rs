//! The crate's one error type.
//!
//! Owns the mapping from a kernel errno (an `NLMSG_ERROR` or a failed
//! `NLMSG_DONE`) to a semantic variant and a message that names the operation
//! and its target, e.g.
//! `create veth pair veth0/veth1: interface already exists (EEXIST)`.
//! It must not decide policy: whether "not found" is fine (teardown) is the
//! caller's call, helped by [`Error::is_not_found`] and friends.

use std::{fmt, io};

/// What a request was doing, for error messages: `"create veth pair
/// veth0/veth1"` acting on an `"interface"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    desc: String,
    object: &'static str,
    creates_kind: bool,
}

impl Op {
    /// `desc` is the operation and its target as a user would say it
    /// ("add address 10.0.0.2/24 to ifindex 7"); `object` names the thing the
    /// operation creates or looks up ("interface", "address", "route").
    pub fn new(desc: impl Into<String>, object: &'static str) -> Self {
        Self {
            desc: desc.into(),
            object,
            creates_kind: false,
        }
    }

    /// Marks an operation that instantiates a kernel module by name (a link
    /// kind, a qdisc or classifier kind). For these, the kernel answers
    /// `ENOENT` ("TC classifier not found") or `EOPNOTSUPP` ("Unknown device
    /// type") when the kind is not built, which is "not supported", not
    /// "not found".
    #[must_use]
    pub fn creates_kind(mut self) -> Self {
        self.creates_kind = true;
        self
    }

    /// The operation and its target.
    pub fn desc(&self) -> &str {
        &self.desc
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc)
    }
}

/// A failure the kernel reported for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// What we asked for.
    pub op: Op,
    /// The positive errno (`libc::EEXIST`, ...).
    pub errno: i32,
    /// The kernel's extended-ack message (`NLMSGERR_ATTR_MSG`), if it sent one.
    pub ext_ack: Option<String>,
}

impl KernelError {
    fn meaning(&self) -> String {
        let object = self.op.object;
        match self.errno {
            libc::EEXIST => format!("{object} already exists"),
            // ENODEV means the interface, even when adding an address or a
            // route *to* it; for devlink, the devlink instance.
            libc::ENODEV if object == "devlink device" => "devlink device not found".to_owned(),
            libc::ENODEV => "interface not found".to_owned(),
            libc::ENOENT if self.op.creates_kind => {
                format!("{object} kind not available in this kernel")
            }
            libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL => format!("{object} not found"),
            e => describe_errno(e),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.op,
            self.meaning(),
            errno_name(self.errno)
        )?;
        if let Some(msg) = &self.ext_ack {
            write!(f, ": {msg}")?;
        }
        Ok(())
    }
}

/// Errors of the netlink layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is not there: `ENODEV`, `ENOENT`, `ESRCH` or
    /// `EADDRNOTAVAIL` (deleting an address that is not assigned).
    #[error("{0}")]
    NotFound(KernelError),
    /// The object already exists (`EEXIST`).
    #[error("{0}")]
    Exists(KernelError),
    /// The kernel cannot do this: `EOPNOTSUPP`, or `ENOENT` for a link,
    /// qdisc or classifier kind this kernel does not have.
    #[error("{0}")]
    NotSupported(KernelError),
    /// Missing privileges (`EPERM`, `EACCES`).
    #[error("{0}")]
    Permission(KernelError),
    /// Any other errno.
    #[error("{0}")]
    Other(KernelError),
    /// The socket itself failed (open, setns, send, receive).
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be decoded.
    #[error("{op}: malformed reply from the kernel: {reason}")]
    BadReply {
        /// What we were doing.
        op: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// The caller's input cannot be encoded (checked before anything is sent).
    #[error("{op}: {reason}")]
    InvalidInput {
        /// What we were about to do.
        op: String,
        /// What is wrong with the input.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies a kernel errno (positive) for `op`.
    pub fn from_errno(op: &Op, errno: i32, ext_ack: Option<String>) -> Self {
        let e = KernelError {
            op: op.clone(),
            errno,
            ext_ack,
        };
        match errno {
            libc::ENOENT | libc::EOPNOTSUPP if op.creates_kind => Self::NotSupported(e),
            libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL => Self::NotFound(e),
            libc::EEXIST => Self::Exists(e),
            libc::EOPNOTSUPP => Self::NotSupported(e),
            libc::EPERM | libc::EACCES => Self::Permission(e),
            _ => Self::Other(e),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn bad_reply(op: &Op, reason: impl Into<String>) -> Self {
        Self::BadReply {
            op: op.desc.clone(),
            reason: reason.into(),
        }
    }

    /// The kernel part of the error, for the errno variants.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            Self::NotFound(e)
            | Self::Exists(e)
            | Self::NotSupported(e)
            | Self::Permission(e)
            | Self::Other(e) => Some(e),
            Self::Io { .. } | Self::BadReply { .. } | Self::InvalidInput { .. } => None,
        }
    }

    /// The kernel's errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        self.kernel().map(|e| e.errno)
    }

    /// The kernel's extended-ack message, if any.
    pub fn ext_ack(&self) -> Option<&str> {
        self.kernel().and_then(|e| e.ext_ack.as_deref())
    }

    /// "Already gone": teardown treats this as success.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// "Already there".
    pub fn is_exists(&self) -> bool {
        matches!(self, Self::Exists(_))
    }

    /// The kernel lacks the feature, kind or driver support.
    pub fn is_not_supported(&self) -> bool {
        matches!(self, Self::NotSupported(_))
    }

    /// Missing privileges.
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::Permission(_))
    }
}

/// The symbolic name of an errno (`EEXIST`), or `errno N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

/// `strerror(errno)` in lowercase, without std's " (os error N)" suffix:
/// "invalid argument", "device or resource busy".
fn describe_errno(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_op_target_errno_and_ext_ack() {
        let op = Op::new("create veth pair veth0/veth1", "interface");
        let e = Error::from_errno(&op, libc::EEXIST, Some("Interface exists".into()));
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            "create veth pair veth0/veth1: interface already exists (EEXIST): Interface exists"
        );

        let e = Error::from_errno(&Op::new("delete link ifindex 9", "interface"), 19, None);
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "delete link ifindex 9: interface not found (ENODEV)"
        );

        let op = Op::new("add u32 filter on ifindex 2", "filter").creates_kind();
        let e = Error::from_errno(&op, libc::ENOENT, None);
        assert!(e.is_not_supported());
        assert_eq!(
            e.to_string(),
            "add u32 filter on ifindex 2: filter kind not available in this kernel (ENOENT)"
        );

        let e = Error::from_errno(&Op::new("delete route", "route"), libc::ESRCH, None);
        assert!(e.is_not_found());
        let e = Error::from_errno(&Op::new("x", "y"), libc::EPERM, None);
        assert!(e.is_permission());
        let e = Error::from_errno(&Op::new("x", "y"), libc::EBUSY, None);
        assert_eq!(e.to_string(), "x: device or resource busy (EBUSY)");
        let e = Error::from_errno(&Op::new("x", "y"), 4242, None);
        assert_eq!(e.to_string(), "x: unknown error 4242 (errno 4242)");
        assert_eq!(e.errno(), Some(4242));
    }
}
