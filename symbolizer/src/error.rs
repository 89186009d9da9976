use std::path::PathBuf;

/// Errors of the symbolizer. Per-address failures are not errors (see [`crate::Symbol::Unknown`]);
/// these are failures to read a whole process or module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the memory map of process {pid} ({path})")]
    ReadMaps {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open module {path} of process {pid}")]
    OpenModule {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} is not the one sampled: it started at tick {found:?}, the sampled one at {expected} (PID reused)")]
    PidReused {
        pid: u32,
        expected: u64,
        found: Option<u64>,
    },
    #[error("cannot extract the vDSO image")]
    Vdso(#[source] std::io::Error),
}

/// `error: cause: cause`, for log lines (the binary prints its own errors with anyhow's `{:#}`).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
