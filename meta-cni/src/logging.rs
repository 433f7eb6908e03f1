//! Structured logs for `plexus` (Multus C14, C15): to stderr and/or a file,
//! never stdout (stdout is the CNI result).
//!
//! The level comes from `PLEXUS_LOG` (a tracing filter) when set, else from
//! `logLevel`, which takes Multus' names (`debug`, `verbose`, `error`,
//! `panic`) as well as tracing's. The log file is opened for append, created
//! 0600; a directory plexus has to create for it is 0700.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::PlexusConf;

/// The tracing filter for a Multus `logLevel`.
#[must_use]
pub fn filter_for(level: Option<&str>) -> &'static str {
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("debug") => "debug",
        Some("verbose" | "info") => "info",
        Some("error") => "error",
        Some("panic" | "off") => "off",
        Some("trace") => "trace",
        _ => "warn",
    }
}

/// Sets up logging once per process from the config; later calls do nothing.
pub fn init(conf: &PlexusConf) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = || {
            EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| EnvFilter::new(filter_for(conf.log_level.as_deref())))
        };
        let stderr = conf.log_to_stderr.then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter())
        });
        let file = conf.log_file.as_ref().and_then(|path| {
            if let Some(dir) = path.parent() {
                let _ = DirBuilder::new().recursive(true).mode(0o700).create(dir);
            }
            match OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
            {
                Ok(f) => Some(
                    tracing_subscriber::fmt::layer()
                        .with_writer(Mutex::new(f))
                        .with_ansi(false)
                        .with_filter(filter()),
                ),
                Err(e) => {
                    // Logging must never fail a CNI call; say it where we can.
                    eprintln!("plexus: cannot open log file {}: {e}", path.display());
                    None
                }
            }
        });
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(file)
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_level_names() {
        assert_eq!(filter_for(Some("verbose")), "info");
        assert_eq!(filter_for(Some("DEBUG")), "debug");
        assert_eq!(filter_for(Some("panic")), "off");
        assert_eq!(filter_for(None), "warn");
    }
}
