//! The ZDS server: the unix SOCK_SEQPACKET listener ztunnel connects to (docs/zds.md). Each
//! connection gets a thread that reads ztunnel's hello (one datagram, at most 1024 bytes, a
//! deadline; at most `MAX_HANDSHAKING` such threads, a new connection closing the oldest
//! silent one, so a silent or hostile peer stalls nobody) and then sends the snapshot of every
//! pod the server knows; afterwards `add` goes to the newest connection and `del` to all.
//! Every request waits for its ack with a deadline, one request in flight per connection
//! (acks correlate by order only). A connection that breaks the protocol (timeout, closed,
//! oversized, garbage) is dropped: a late ack would be taken for the next request's, and
//! ztunnel reconnects and gets a fresh snapshot. Safe code only: nix for the socket calls.
use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr, bind,
    listen, recvmsg, sendmsg, shutdown, socket,
};
use prost::Message;

use super::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, RequestPayload, ResponsePayload, SnapshotSent,
    Version, WorkloadInfo, WorkloadRequest, WorkloadResponse, ZdsHello,
};

/// ztunnel's default socket (its `INPOD_UDS`).
pub const DEFAULT_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";

/// The largest datagram either side accepts: ztunnel reads requests into 1024 bytes and
/// fails a truncated one, so we refuse to send more, and read its messages into as much.
pub const MAX_DATAGRAM: usize = 1024;

/// How long the server waits: for the hello, for each ack and for each send. istio-cni's
/// `readWriteDeadline` is 5 s for all three.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub hello: Duration,
    pub ack: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            hello: Duration::from_secs(5),
            ack: Duration::from_secs(5),
        }
    }
}

/// At most this many connections waiting for their hello, a thread each. A new one beyond
/// it closes the oldest, not itself: a flood of silent peers then delays a real ztunnel by
/// nothing, where refusing newcomers would lock it out until the strangers' deadlines.
pub const MAX_HANDSHAKING: usize = 4;

/// At most this many established connections (hello received); a new one beyond it drops
/// the oldest. During an upgrade ztunnel has two.
pub const MAX_CONNECTIONS: usize = 8;

/// What went wrong, named.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("ZDS socket {path}: {what}: {errno}")]
    Socket {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
    #[error(
        "ZDS socket {path}: exists and is not a socket; expected a socket left by an earlier agent or nothing"
    )]
    NotASocket { path: PathBuf },
    #[error("no ztunnel is connected")]
    NoZtunnel,
    #[error(
        "ztunnel closed the connection, or sent a message nobody asked for, before the request"
    )]
    Stale,
    #[error("ztunnel closed the connection {during}")]
    PeerClosed { during: &'static str },
    #[error("ztunnel sent nothing within {0:?} {1}")]
    Timeout(Duration, &'static str),
    #[error("ztunnel refused the request: {0}")]
    Nack(String),
    #[error("ztunnel sent a datagram over {MAX_DATAGRAM} bytes (truncated) {0}")]
    Oversized(&'static str),
    #[error("ztunnel sent ancillary data (file descriptors) {0}; it never should")]
    Ancillary(&'static str),
    #[error("ztunnel sent a message that is not a {what}: {source}")]
    Garbage {
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("ztunnel sent a {0} with no payload this server knows (an unknown oneof field)")]
    UnknownMessage(&'static str),
    #[error("ztunnel's hello announces version {0}; this server speaks V1 only")]
    Version(i32),
    #[error("the request for pod {uid} is {len} bytes; ztunnel reads at most {MAX_DATAGRAM}")]
    RequestTooLarge { uid: String, len: usize },
    #[error(
        "the netns fd for pod {uid} is not a namespace (expected an nsfs file such as /proc/<pid>/ns/net)"
    )]
    NotANetns { uid: String },
    #[error("ZDS connection: {what}: {errno}")]
    Io { what: &'static str, errno: Errno },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<ZdsError>),
}

/// A pod the server tells every new connection about.
struct Pod {
    info: WorkloadInfo,
    /// Its network namespace, or none: then the snapshot says `keep`.
    netns: Option<OwnedFd>,
}

/// One ztunnel connection. The mutex around the stream is the "one request in flight".
struct Conn {
    id: u64,
    stream: Mutex<UnixStream>,
}

struct Shared {
    pods: Mutex<BTreeMap<String, Pod>>,
    /// Established connections (hello received), oldest first.
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections still waiting for their hello, oldest first: a second handle on each, to
    /// shut it down when `MAX_HANDSHAKING` is reached.
    handshaking: Mutex<Vec<(u64, UnixStream)>>,
    next_id: AtomicU64,
    deadlines: Deadlines,
    /// Whether snapshots may be sent: closed while the agent rebuilds what it knows at start,
    /// so that ztunnel's first snapshot after a restart holds every running pod (ztunnel
    /// drops the workloads a snapshot does not name).
    open: (Mutex<bool>, std::sync::Condvar),
}

/// The server: listening, accepting on a thread of its own. Dropping it stops accepting and
/// removes the socket it created.
pub struct ZdsServer {
    shared: Arc<Shared>,
    listener: Arc<UnixListener>,
    path: PathBuf,
    inode: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked holding it; the data (a map, a list, a
    // socket) is still consistent for our uses, so carry on rather than panic too.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ZdsServer {
    /// Listens on `path`, replacing a socket an earlier agent left there (anything else at
    /// the path is refused).
    pub fn bind(path: &Path, deadlines: Deadlines) -> Result<ZdsServer, ZdsError> {
        let s = ZdsServer::bind_closed(path, deadlines)?;
        s.open();
        Ok(s)
    }

    /// Listens as `bind` does, but sends no snapshot until `open`: ztunnel's hello is read
    /// and it waits for the snapshot while the agent finds the pods it must name.
    pub fn bind_closed(path: &Path, deadlines: Deadlines) -> Result<ZdsServer, ZdsError> {
        let sock_err = |what, errno| ZdsError::Socket {
            path: path.to_path_buf(),
            what,
            errno,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                .map_err(|e| sock_err("removing the stale socket", io_errno(&e)))?,
            Ok(_) => {
                return Err(ZdsError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(sock_err("stat", io_errno(&e))),
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| sock_err("socket", e))?;
        let addr = UnixAddr::new(path).map_err(|e| sock_err("address", e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| sock_err("bind", e))?;
        listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| sock_err("listen", e))?;
        let inode = std::fs::symlink_metadata(path)
            .map_err(|e| sock_err("stat", io_errno(&e)))?
            .ino();
        // std's accept works on any stream-like unix socket, SOCK_SEQPACKET included.
        let listener = Arc::new(UnixListener::from(fd));
        let shared = Arc::new(Shared {
            pods: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(Vec::new()),
            handshaking: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            deadlines,
            open: (Mutex::new(false), std::sync::Condvar::new()),
        });
        let (l, s) = (listener.clone(), shared.clone());
        std::thread::Builder::new()
            .name("zds-accept".into())
            .spawn(move || accept_loop(&l, &s))
            .map_err(|e| sock_err("spawning the accept thread", io_errno(&e)))?;
        Ok(ZdsServer {
            shared,
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// Lets snapshots go (see `bind_closed`).
    pub fn open(&self) {
        let (flag, cv) = &self.shared.open;
        *lock(flag) = true;
        cv.notify_all();
    }

    /// How many ztunnels have sent their hello and are connected.
    pub fn connections(&self) -> usize {
        prune(&self.shared);
        lock(&self.shared.conns).len()
    }

    /// Remembers a pod whose netns the agent cannot open (it still exists): new connections'
    /// snapshots say `keep` for it, so ztunnel does not drop its proxy. A uid too long for one
    /// datagram is refused here: in a snapshot it would make ztunnel fail and reconnect forever.
    pub fn keep(&self, uid: &str, info: WorkloadInfo) -> Result<(), ZdsError> {
        check_size(uid, &keep_request(uid))?;
        lock(&self.shared.pods).insert(uid.to_string(), Pod { info, netns: None });
        Ok(())
    }

    /// Adds a pod: remembers it (with a duplicate of `netns`) for every later snapshot, and
    /// sends it to the newest ztunnel, waiting for the ack. With no ztunnel connected it is
    /// remembered and `NoZtunnel` returned: the next connection's snapshot carries it.
    pub fn add(
        &self,
        uid: &str,
        info: WorkloadInfo,
        netns: BorrowedFd<'_>,
    ) -> Result<(), ZdsError> {
        check_netns(uid, netns)?;
        let own = netns.try_clone_to_owned().map_err(|e| ZdsError::Io {
            what: "duplicating the netns fd",
            errno: io_errno(&e),
        })?;
        let req = add_request(uid, &info);
        check_size(uid, &req)?;
        lock(&self.shared.pods).insert(
            uid.to_string(),
            Pod {
                info,
                netns: Some(own),
            },
        );
        // Newest first; one found closed is dropped and the next newest tried (during an
        // upgrade the new ztunnel may die before the old one).
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).clone();
        for conn in conns.iter().rev() {
            match request(&self.shared, conn, &req, Some(netns), "after an add") {
                Err(ZdsError::Stale) => continue,
                other => return other,
            }
        }
        Err(ZdsError::NoZtunnel)
    }

    /// Deletes a pod: forgets it and tells every connected ztunnel (the old one during an
    /// upgrade still runs the pod's proxy). Succeeds when no ztunnel is connected.
    pub fn del(&self, uid: &str) -> Result<(), ZdsError> {
        lock(&self.shared.pods).remove(uid);
        let req = WorkloadRequest {
            payload: Some(RequestPayload::Del(DelWorkload {
                uid: uid.to_string(),
            })),
        };
        check_size(uid, &req)?;
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).clone();
        // A connection found closed is no error: that ztunnel and its proxies are gone.
        let mut errors: Vec<ZdsError> = conns
            .iter()
            .filter_map(|c| request(&self.shared, c, &req, None, "after a delete").err())
            .filter(|e| !matches!(e, ZdsError::Stale))
            .collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ZdsError::Several(errors)),
        }
    }
}

impl Drop for ZdsServer {
    fn drop(&mut self) {
        // Shutting a listening socket down wakes its blocked accept (EINVAL) on Linux.
        let _ = shutdown(self.listener.as_raw_fd(), Shutdown::Both);
        // Remove the path only while it is still our socket, not one a newer agent bound.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// The fd is a namespace: a file of nsfs, which is what opening `/proc/<pid>/ns/net` or a
/// bind mount of it gives since Linux 3.19 (ztunnel's `validate_ns` also accepts procfs, for
/// older kernels; so would any /proc file, hence not here). Which namespace type it is needs
/// the NS_GET_NSTYPE ioctl, unsafe code this crate does not have; ztunnel's `setns` with
/// CLONE_NEWNET refuses another type.
fn check_netns(uid: &str, netns: BorrowedFd<'_>) -> Result<(), ZdsError> {
    use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
    let fs = fstatfs(netns)
        .map_err(|errno| ZdsError::Io {
            what: "fstatfs on the netns fd",
            errno,
        })?
        .filesystem_type();
    if fs != NSFS_MAGIC {
        return Err(ZdsError::NotANetns {
            uid: uid.to_string(),
        });
    }
    Ok(())
}

fn add_request(uid: &str, info: &WorkloadInfo) -> WorkloadRequest {
    WorkloadRequest {
        payload: Some(RequestPayload::Add(AddWorkload {
            uid: uid.to_string(),
            workload_info: Some(info.clone()),
        })),
    }
}

fn keep_request(uid: &str) -> WorkloadRequest {
    WorkloadRequest {
        payload: Some(RequestPayload::Keep(KeepWorkload {
            uid: uid.to_string(),
        })),
    }
}

fn check_size(uid: &str, req: &WorkloadRequest) -> Result<(), ZdsError> {
    let len = req.encoded_len();
    if len > MAX_DATAGRAM {
        return Err(ZdsError::RequestTooLarge {
            uid: uid.to_string(),
            len,
        });
    }
    Ok(())
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            // Interrupted or a connection reset before accept: keep listening.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {
                continue;
            }
            // EINVAL after the shutdown in Drop, or EMFILE and the like: stop, and say so
            // unless we were told to.
            Err(e) => {
                if e.raw_os_error() != Some(libc::EINVAL) {
                    crate::logging::error(&format!("ZDS server stops accepting: {e}"));
                }
                return;
            }
        };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut waiting = lock(&shared.handshaking);
            if waiting.len() >= MAX_HANDSHAKING {
                let (_, oldest) = waiting.remove(0);
                crate::logging::warn(&format!(
                    "ZDS: {MAX_HANDSHAKING} connections without a hello; closing the oldest"
                ));
                // Its thread's read returns at once and the thread ends.
                let _ = oldest.shutdown(std::net::Shutdown::Both);
            }
            waiting.push((id, handle));
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("zds-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&s, id, stream) {
                    crate::logging::warn(&format!("ZDS: dropping a ztunnel connection: {e}"));
                }
            });
        if spawned.is_err() {
            lock(&shared.handshaking).retain(|(i, _)| *i != id);
        }
    }
}

/// One connection: hello, register, snapshot. Afterwards the connection lives in the list
/// and requests reach it from `add` / `del`.
fn serve(shared: &Arc<Shared>, id: u64, stream: UnixStream) -> Result<(), ZdsError> {
    let hello = read_msg::<ZdsHello>(&stream, shared.deadlines.hello, "hello", "before its hello");
    lock(&shared.handshaking).retain(|(i, _)| *i != id);
    let hello = hello?;
    if hello.version != Version::V1 as i32 {
        return Err(ZdsError::Version(hello.version));
    }
    {
        let (flag, cv) = &shared.open;
        let mut open = lock(flag);
        while !*open {
            open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
    let conn = Arc::new(Conn {
        id,
        stream: Mutex::new(stream),
    });
    // Hold the stream through the snapshot: an add racing with it waits and follows it.
    // Registered before the pods are read, so a pod added meanwhile is either in the
    // snapshot or sent to this connection afterwards, never lost.
    let guard = lock(&conn.stream);
    {
        let mut conns = lock(&shared.conns);
        conns.push(conn.clone());
        if conns.len() > MAX_CONNECTIONS {
            // The oldest ztunnel: closed once no request holds it.
            conns.remove(0);
        }
    }
    let result = snapshot(shared, &guard);
    drop(guard);
    if result.is_err() {
        remove(shared, conn.id);
    }
    result
}

fn snapshot(shared: &Shared, stream: &UnixStream) -> Result<(), ZdsError> {
    // Duplicate the fds so the pod map is not locked while ztunnel acks. A pod whose fd
    // cannot be duplicated (EMFILE) goes as `keep`: ztunnel keeps what it runs for it, and
    // the next snapshot tries again.
    let pods: Vec<(String, WorkloadInfo, Option<OwnedFd>)> = lock(&shared.pods)
        .iter()
        .map(|(uid, p)| {
            let fd = p.netns.as_ref().and_then(|f| f.try_clone().ok());
            (uid.clone(), p.info.clone(), fd)
        })
        .collect();
    for (uid, info, netns) in pods {
        let (req, fd) = match &netns {
            Some(fd) => (add_request(&uid, &info), Some(fd.as_fd())),
            None => (keep_request(&uid), None),
        };
        match exchange(
            stream,
            shared.deadlines.ack,
            &req,
            fd,
            "during the snapshot",
        ) {
            // ztunnel failing one pod is that pod's problem; the snapshot goes on (as
            // istio-cni does).
            Err(ZdsError::Nack(e)) => {
                crate::logging::warn(&format!("ZDS snapshot: ztunnel refused pod {uid}: {e}"));
            }
            other => other?,
        }
    }
    let done = WorkloadRequest {
        payload: Some(RequestPayload::SnapshotSent(SnapshotSent {})),
    };
    match exchange(
        stream,
        shared.deadlines.ack,
        &done,
        None,
        "after the snapshot",
    ) {
        Err(ZdsError::Nack(e)) => {
            crate::logging::warn(&format!("ZDS snapshot: ztunnel refused its end: {e}"));
            Ok(())
        }
        other => other,
    }
}

/// Sends `req` on `conn` and waits for the ack; drops the connection unless the outcome
/// leaves the stream in step (an ack, or ztunnel's own refusal).
fn request(
    shared: &Shared,
    conn: &Conn,
    req: &WorkloadRequest,
    fd: Option<BorrowedFd<'_>>,
    during: &'static str,
) -> Result<(), ZdsError> {
    let stream = lock(&conn.stream);
    // Checked under the lock, right before sending: the connection's previous exchange is
    // over, so anything readable now is a close or a message nobody asked for.
    if !quiet(&stream) {
        drop(stream);
        remove(shared, conn.id);
        return Err(ZdsError::Stale);
    }
    let result = exchange(&stream, shared.deadlines.ack, req, fd, during);
    drop(stream);
    if let Err(e) = &result
        && !matches!(e, ZdsError::Nack(_))
    {
        remove(shared, conn.id);
    }
    result
}

fn remove(shared: &Shared, id: u64) {
    lock(&shared.conns).retain(|c| c.id != id);
}

/// Drops connections that ztunnel closed, or that hold a message nobody asked for (a
/// protocol error, as istio-cni's keepalive treats it). For counting only: a connection busy
/// with a request is skipped; `request` checks again under the lock.
fn prune(shared: &Shared) {
    let conns: Vec<Arc<Conn>> = lock(&shared.conns).clone();
    for c in conns {
        let Ok(stream) = c.stream.try_lock() else {
            continue;
        };
        let dead = !quiet(&stream);
        drop(stream);
        if dead {
            remove(shared, c.id);
        }
    }
}

/// Nothing to read and no hang-up on an idle connection.
fn quiet(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => fds[0].revents().is_none_or(|r| r.is_empty()),
        // EINTR or ENOMEM: no verdict; the exchange itself will tell.
        Err(_) => true,
    }
}

/// One request and its ack.
fn exchange(
    stream: &UnixStream,
    deadline: Duration,
    req: &WorkloadRequest,
    fd: Option<BorrowedFd<'_>>,
    during: &'static str,
) -> Result<(), ZdsError> {
    let buf = req.encode_to_vec();
    let _ = stream.set_write_timeout(Some(deadline));
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| ControlMessage::ScmRights(r))
        .into_iter()
        .collect();
    // MSG_NOSIGNAL: a closed peer is EPIPE here, not a SIGPIPE that kills the agent.
    match sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&buf)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(_) => {}
        Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ZdsError::PeerClosed { during }),
        Err(Errno::EAGAIN) => return Err(ZdsError::Timeout(deadline, during)),
        Err(errno) => {
            return Err(ZdsError::Io {
                what: "sendmsg",
                errno,
            });
        }
    }
    let resp: WorkloadResponse = read_msg(stream, deadline, "WorkloadResponse", during)?;
    match resp.payload {
        Some(ResponsePayload::Ack(Ack { error })) if error.is_empty() => Ok(()),
        Some(ResponsePayload::Ack(Ack { error })) => Err(ZdsError::Nack(error)),
        None => Err(ZdsError::UnknownMessage("WorkloadResponse")),
    }
}

/// Reads one datagram (at most `MAX_DATAGRAM` bytes, within `deadline`) and decodes it.
fn read_msg<M: Message + Default>(
    stream: &UnixStream,
    deadline: Duration,
    what: &'static str,
    during: &'static str,
) -> Result<M, ZdsError> {
    let _ = stream.set_read_timeout(Some(deadline));
    let mut buf = [0u8; MAX_DATAGRAM];
    // No control-message buffer: fds ztunnel might attach are closed by the kernel, and
    // MSG_CTRUNC tells us they were there.
    let (len, flags) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break (m.bytes, m.flags),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(ZdsError::Timeout(deadline, during)),
            Err(Errno::ECONNRESET) => return Err(ZdsError::PeerClosed { during }),
            Err(errno) => {
                return Err(ZdsError::Io {
                    what: "recvmsg",
                    errno,
                });
            }
        }
    };
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(ZdsError::Oversized(during));
    }
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(ZdsError::Ancillary(during));
    }
    // SOCK_SEQPACKET: zero bytes is the peer's close (ztunnel never sends an empty message:
    // its hello and acks always carry a field).
    if len == 0 {
        return Err(ZdsError::PeerClosed { during });
    }
    M::decode(&buf[..len]).map_err(|source| ZdsError::Garbage { what, source })
}
