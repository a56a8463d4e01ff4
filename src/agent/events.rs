//! The plugin's line to the agent: a unix SOCK_SEQPACKET socket in the agent's run directory
//! (`agent.sock`), one JSON request per datagram and one JSON reply, as istio-cni's plugin
//! POSTs its `CNIPluginAddEvent` to the agent's `pluginevent.sock` and fails the ADD unless the
//! answer is 200. Ours is datagrams, not HTTP: a message is whole or absent, with no framing to
//! parse. Only root (or the agent's own user) may talk to it (SO_PEERCRED): a process on the
//! node cannot enrol or unenrol pods. Each connection has a deadline, at most
//! `MAX_CLIENTS` are served at once, and a request is at most `MAX_REQUEST` bytes.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, getsockopt,
    listen, recv, send, socket, sockopt,
};
use serde::{Deserialize, Serialize};

/// The socket's name in the agent's run directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// The largest request or reply: a pod's names, its netns path and two addresses.
pub const MAX_REQUEST: usize = 16 << 10;

/// Connections served at once; more wait in the backlog.
pub const MAX_CLIENTS: usize = 16;

/// How long the agent waits for a client's request once it connected.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// What the plugin asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// ADD of an ambient pod: redirect it, hand it to ztunnel, mark it enabled.
    Add(PodEvent),
    /// DEL: hand it back (ztunnel's Del, the probe set). Never fails the plugin's DEL.
    Del(PodEvent),
    /// Readiness: the agent is up and has reconciled.
    Ping(Empty),
}

/// A request with no fields (an internally tagged unit variant would accept any).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// One pod, as the runtime names it to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodEvent {
    pub namespace: String,
    pub name: String,
    /// `CNI_NETNS`: the runtime's path of the pod's namespace (empty on a DEL after it went).
    pub netns: String,
    /// The addresses the primary plugin gave the pod (its prevResult).
    pub ips: Vec<IpAddr>,
    pub container_id: String,
}

/// The agent's answer: done, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub error: Option<String>,
}

/// Why a call did not get a yes.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No agent listens (not started, restarting, another node's layout).
    #[error("the node agent at {path} is not reachable: {errno}")]
    Unreachable { path: PathBuf, errno: Errno },
    #[error("the node agent at {path} did not answer within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    #[error("the node agent at {path} answered with something that is not a reply: {why}")]
    Garbled { path: PathBuf, why: String },
    /// The agent answered no.
    #[error("the node agent refused: {0}")]
    Refused(String),
}

/// Sends `req` to the agent at `path` and waits up to `timeout` for its reply.
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<(), CallError> {
    let unreachable = |errno| CallError::Unreachable {
        path: path.to_path_buf(),
        errno,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(unreachable)?;
    let addr = UnixAddr::new(path).map_err(unreachable)?;
    connect(fd.as_raw_fd(), &addr).map_err(unreachable)?;
    let body = serde_json::to_vec(req).map_err(|e| CallError::Garbled {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    send(fd.as_raw_fd(), &body, MsgFlags::MSG_NOSIGNAL).map_err(unreachable)?;
    let reply = match recv_within(&fd, timeout) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Err(CallError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            });
        }
        Err(errno) => return Err(unreachable(errno)),
    };
    let reply: Reply = serde_json::from_slice(&reply).map_err(|e| CallError::Garbled {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    match reply.error {
        None => Ok(()),
        Some(e) => Err(CallError::Refused(e)),
    }
}

/// One datagram, or `None` when nothing came within `timeout`. An empty read is the peer
/// closing (`ECONNRESET` stands for it); a datagram larger than `MAX_REQUEST` is `EMSGSIZE`.
fn recv_within(fd: &impl AsFd, timeout: Duration) -> Result<Option<Vec<u8>>, Errno> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    let n = recv(
        fd.as_fd().as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
    )?;
    match n {
        0 => Err(Errno::ECONNRESET),
        n if n > MAX_REQUEST => Err(Errno::EMSGSIZE),
        n => {
            buf.truncate(n);
            Ok(Some(buf))
        }
    }
}

/// What the agent does with a request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Result<(), String>;
}

/// The agent's listener: accepting on a thread of its own; dropping it stops accepting and
/// removes the socket (while it is still ours).
pub struct Listener {
    fd: Arc<UnixListener>,
    path: PathBuf,
    inode: u64,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("agent socket {path}: {what}: {errno}")]
pub struct ListenError {
    pub path: PathBuf,
    pub what: &'static str,
    pub errno: Errno,
}

impl Listener {
    /// Listens at `path` (a socket an earlier agent left is replaced; anything else there is
    /// refused), mode 0600, serving each connection with `handler`.
    pub fn bind(path: &Path, handler: Arc<dyn Handler>) -> Result<Listener, ListenError> {
        use std::os::unix::fs::MetadataExt;
        let err = |what, errno| ListenError {
            path: path.to_path_buf(),
            what,
            errno,
        };
        let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| err("removing the stale socket", io(e)))?
            }
            Ok(_) => return Err(err("exists and is not a socket", Errno::EEXIST)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("stat", io(e))),
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| err("socket", e))?;
        let addr = UnixAddr::new(path).map_err(|e| err("address", e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| err("bind", e))?;
        // Root's only: the peer check below is the real gate, the mode keeps others from
        // even connecting.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("chmod", io(e)))?;
        listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(|e| err("listen", e))?;
        let inode = std::fs::symlink_metadata(path)
            .map_err(|e| err("stat", io(e)))?
            .ino();
        // std's accept works on any stream-like unix socket, SOCK_SEQPACKET included.
        let fd = Arc::new(UnixListener::from(fd));
        let l = fd.clone();
        std::thread::Builder::new()
            .name("agent-accept".into())
            .spawn(move || accept_loop(&l, &handler))
            .map_err(|e| err("spawning the accept thread", io(e)))?;
        Ok(Listener {
            fd,
            path: path.to_path_buf(),
            inode,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn accept_loop(listener: &UnixListener, handler: &Arc<dyn Handler>) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {
                continue;
            }
            // EINVAL after the shutdown in Drop.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => {
                crate::logging::error(&format!("agent socket: accept: {e}; retrying"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Wait (in the accept loop, so the backlog holds the rest) until a slot is free: a
        // flood of connections costs at most MAX_CLIENTS threads, each for its deadline.
        while busy.load(Ordering::SeqCst) >= MAX_CLIENTS {
            std::thread::sleep(Duration::from_millis(5));
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (h, b) = (handler.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("agent-conn".into())
            .spawn(move || {
                serve(&conn, h.as_ref());
                b.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve(conn: &UnixStream, handler: &dyn Handler) {
    let reply = |error: Option<String>| {
        let body = serde_json::to_vec(&Reply { error }).unwrap_or_default();
        let _ = send(conn.as_raw_fd(), &body, MsgFlags::MSG_NOSIGNAL);
    };
    // The request is read before the peer is judged: closing a connection with a datagram
    // unread resets it, and the refusal would never arrive.
    let bytes = match recv_within(conn, REQUEST_DEADLINE) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return crate::logging::warn(&format!(
                "agent socket: a client sent nothing within {REQUEST_DEADLINE:?}; closed"
            ));
        }
        Err(Errno::EMSGSIZE) => {
            return reply(Some(format!(
                "the request is over {MAX_REQUEST} bytes; refused"
            )));
        }
        Err(_) => return,
    };
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(conn, sockopt::PeerCredentials) {
        Ok(c) if c.uid() == 0 || c.uid() == me => {}
        Ok(c) => {
            crate::logging::warn(&format!(
                "agent socket: refusing a client of uid {} (pid {}): only root may enrol pods",
                c.uid(),
                c.pid()
            ));
            return reply(Some("only root may talk to the node agent".into()));
        }
        Err(e) => return crate::logging::warn(&format!("agent socket: SO_PEERCRED: {e}")),
    }
    match serde_json::from_slice::<Request>(&bytes) {
        Ok(req) => reply(handler.handle(req).err()),
        Err(e) => reply(Some(format!("not a request: {e}"))),
    }
}
