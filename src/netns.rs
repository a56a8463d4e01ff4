//! Run work inside another network namespace, given by path (`/var/run/netns/NAME`,
//! `/proc/PID/ns/net`, a CNI runtime's `CNI_NETNS`).
//!
//! The namespace is entered on a dedicated thread with `setns(2)`, so the calling thread (and
//! the rest of the process) never changes namespace. Everything the work does on that thread
//! happens inside: netlink sockets, child processes (`iptables-restore` inherits the thread's
//! namespace), threads it spawns (validation listeners), and reading interface addresses. If
//! the caller is already in that namespace, entering it again changes nothing, so callers that
//! `nsenter` first (upstream's model) and callers that pass the path both work.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Failing to enter a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot enter network namespace {path}: {source} (entering another namespace needs CAP_SYS_ADMIN)"
    )]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NetnsError {
    /// Whether the namespace does not exist (any more): a CNI DEL treats that as done.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
            || matches!(self, NetnsError::Enter { source, .. } if source.raw_os_error() == Some(22))
    }
}

/// Runs `work` on a new thread that has entered the network namespace at `path`, and
/// returns its result. A panic in `work` propagates to the caller.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            Ok(work())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
