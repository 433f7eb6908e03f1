//! The CNI protocol, both sides, with no outside CNI crate.
//!
//! - [`version`], [`result`], [`error`]: the wire types for CNI 0.3.0 to
//!   1.1.0 and the conversions between them.
//! - [`plugin`]: the plugin side, validating the environment and stdin as the
//!   reference skeleton does and dispatching ADD/DEL/CHECK/STATUS/GC/VERSION.
//! - [`conf`] and [`invoke`]: the runtime side a delegating plugin needs:
//!   loading configuration lists, deriving each plugin's stdin as libcni
//!   does, and running delegates found in `CNI_PATH`.
//! - [`args`], [`capabilities`], [`json`], [`validate`]: `CNI_ARGS`,
//!   well-known capability arguments, Go-style JSON leniency and the
//!   reference name rules.
//!
//! This crate does no networking of its own and never writes to stdout
//! except through [`plugin::run`].

pub mod args;
pub mod capabilities;
pub mod conf;
pub mod error;
pub mod invoke;
pub mod json;
pub mod plugin;
pub mod result;
pub mod validate;
pub mod version;

pub use error::CniError;
pub use result::CniResult;
pub use version::Version;
