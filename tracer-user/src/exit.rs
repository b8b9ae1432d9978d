//! Exit statuses (documented in the README) and the start-up errors that pick them.
use std::process::ExitCode;

/// Why conntrace stopped, as a process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Ran and stopped normally (duration reached, SIGINT/SIGTERM, stdout closed).
    Ok = 0,
    /// `diagnose` found failing connections; `health`: the heartbeat is stale or missing.
    FailuresFound = 1,
    /// Bad command line (clap's own status).
    Usage = 2,
    /// Not privileged enough to load eBPF programs.
    NoPrivilege = 3,
    /// The kernel lacks something required (tracefs, a tracepoint, BTF, ring buffers).
    KernelUnsupported = 4,
    /// Writing the output failed (disk full, I/O error).
    OutputFailed = 5,
    /// This binary was built without its eBPF object.
    NoEbpfObject = 6,
    /// Anything else: a bug or an unexpected system error.
    Internal = 70,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status as u8)
    }
}

/// An error that decides the exit status. Other errors exit with [`Status::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoPrivilege(String),
    #[error("{0}")]
    KernelUnsupported(String),
    #[error("{0}")]
    NoEbpfObject(String),
    #[error("{0}")]
    Output(String),
}

impl StartError {
    pub fn status(&self) -> Status {
        match self {
            StartError::Usage(_) => Status::Usage,
            StartError::NoPrivilege(_) => Status::NoPrivilege,
            StartError::KernelUnsupported(_) => Status::KernelUnsupported,
            StartError::NoEbpfObject(_) => Status::NoEbpfObject,
            StartError::Output(_) => Status::OutputFailed,
        }
    }
}

/// The exit status for an error anywhere in a run.
pub fn status_of(err: &anyhow::Error) -> Status {
    err.chain()
        .find_map(|e| e.downcast_ref::<StartError>())
        .map_or(Status::Internal, StartError::status)
}
