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
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs;

/// Failing to enter a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "network namespace {0}: not a namespace file (expected /proc/PID/ns/net or a bind mount of one, such as /var/run/netns/NAME)"
    )]
    NotANamespace(PathBuf),
    #[error(
        "network namespace {0}: a namespace file of another type (a mount, user, ... namespace) or another /proc file, not a network namespace (expected /proc/PID/ns/net or a bind mount of one)"
    )]
    NotANetworkNamespace(PathBuf),
    #[error(
        "network namespace {0}: it is this plugin's own network namespace (the node's), not a pod's; refusing to program it"
    )]
    Own(PathBuf),
    #[error(
        "cannot enter network namespace {path}: {source} (entering another namespace needs CAP_SYS_ADMIN)"
    )]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the thread that enters network namespace {path}: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NetnsError {
    /// Whether the path was refused: not a namespace, not a network namespace, or the
    /// caller's own.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            NetnsError::NotANamespace(_) | NetnsError::NotANetworkNamespace(_) | NetnsError::Own(_)
        )
    }

    /// Whether the namespace does not exist (any more): a CNI DEL treats that as done.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Opens a namespace file without blocking (a FIFO named here must not hang the run) and
/// checks that it is one. Callers that keep the namespace (the node agent holds a pod's fd
/// for as long as the pod is enrolled) open it here and enter it with `run_in_file`.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    let open_err = |source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(open_err)?;
    let fs = statfs::fstatfs(&file).map_err(|e| open_err(e.into()))?;
    // The namespace filesystem (nsfs, Linux 3.19+) or procfs (where `/proc/PID/ns/*` lived
    // before).
    let kind = fs.filesystem_type();
    if kind != statfs::NSFS_MAGIC && kind != statfs::PROC_SUPER_MAGIC {
        return Err(NetnsError::NotANamespace(path.to_path_buf()));
    }
    Ok(file)
}

/// Refuses `path` when it is the network namespace this process runs in: a CNI plugin runs
/// in the node's, and a `CNI_NETNS` naming it (`/proc/self/ns/net`, `/proc/1/ns/net`) would
/// program the node.
pub fn refuse_own(path: &Path) -> Result<(), NetnsError> {
    refuse_own_file(&open(path)?, path)
}

/// `refuse_own` for a namespace already open (by `open`), named `path` in the error: the
/// check is of exactly the namespace the caller will program.
pub fn refuse_own_file(file: &File, path: &Path) -> Result<(), NetnsError> {
    let target = file.metadata().map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let own = std::fs::metadata("/proc/self/ns/net").map_err(|source| NetnsError::Open {
        path: "/proc/self/ns/net".into(),
        source,
    })?;
    if (target.dev(), target.ino()) == (own.dev(), own.ino()) {
        return Err(NetnsError::Own(path.to_path_buf()));
    }
    Ok(())
}

/// Runs `work` on a new thread that has entered the network namespace at `path`, and
/// returns its result. A panic in `work` propagates to the caller.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = open(path)?;
    run_in_file(&file, path, work)
}

/// `run_in` for a namespace already open (by `open`): the thread enters exactly the namespace
/// `file` is, whatever `path` names by now (a `/proc/PID` whose process exited and whose PID
/// was reused). `path` only names the namespace in errors.
pub fn run_in_file<T: Send>(
    file: &File,
    path: &Path,
    work: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let floor = crate::logging::floor();
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || {
                crate::logging::quieter(floor, || enter_and_work(file, path, work))
            })
            .map_err(|source| NetnsError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn enter_and_work<T>(file: &File, path: &Path, work: impl FnOnce() -> T) -> Result<T, NetnsError> {
    // The kernel compares the file's namespace type with CLONE_NEWNET: EINVAL from a file
    // `open` accepted (nsfs or procfs) means a namespace of another type (`/proc/PID/ns/mnt`)
    // or a /proc file that is no namespace at all.
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| match e {
        nix::errno::Errno::EINVAL => NetnsError::NotANetworkNamespace(path.to_path_buf()),
        e => NetnsError::Enter {
            path: path.to_path_buf(),
            source: e.into(),
        },
    })?;
    Ok(work())
}
