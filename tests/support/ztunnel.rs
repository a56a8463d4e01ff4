//! A stand-in ztunnel: a ZDS client speaking the protocol as ztunnel's
//! `src/inpod/protocol.rs` does (a SOCK_SEQPACKET client that sends its hello, reads each
//! request into 1024 bytes with room for one fd, and acks), for the ZDS server's suite and the
//! node agent's.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use meshtables::agent::zds::{
    Ack, AddWorkload, KeepWorkload, RequestPayload, ResponsePayload, Version, WorkloadRequest,
    WorkloadResponse, ZdsHello,
};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, connect, recvmsg,
    sendmsg, socket,
};
use prost::Message;

/// How long the stand-in waits for the server.
pub const LONG: Duration = Duration::from_secs(10);

/// What the stand-in ztunnel received: a request, or the server's close.
#[derive(Debug)]
pub enum Got {
    Request(WorkloadRequest, Option<RawFd>),
    Closed,
}

/// The stand-in ztunnel.
pub struct Ztunnel {
    pub stream: UnixStream,
}

impl Ztunnel {
    pub fn connect(path: &Path) -> Ztunnel {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
        let stream = UnixStream::from(fd);
        stream.set_read_timeout(Some(LONG)).unwrap();
        Ztunnel { stream }
    }

    /// Connects, says hello and acks an empty snapshot.
    pub fn ready(path: &Path) -> Ztunnel {
        let z = Ztunnel::connect(path);
        z.hello();
        assert_eq!(z.snapshot(), vec![]);
        z
    }

    pub fn send(&self, bytes: &[u8]) {
        sendmsg::<()>(
            self.stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
    }

    pub fn hello(&self) {
        self.send(
            &ZdsHello {
                version: Version::V1 as i32,
            }
            .encode_to_vec(),
        );
    }

    pub fn ack(&self, error: &str) {
        self.send(
            &WorkloadResponse {
                payload: Some(ResponsePayload::Ack(Ack {
                    error: error.into(),
                })),
            }
            .encode_to_vec(),
        );
    }

    /// One datagram, read as ztunnel reads it (1024 bytes, room for one fd).
    pub fn recv(&self) -> Got {
        let mut buf = [0u8; 1024];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(RawFd);
        let msg = match recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::ECONNRESET) => return Got::Closed,
            Err(e) => panic!("recvmsg: {e}"),
        };
        assert!(
            !msg.flags.contains(MsgFlags::MSG_TRUNC),
            "truncated request"
        );
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(f) = c {
                fds.extend(f);
            }
        }
        let len = msg.bytes;
        if len == 0 {
            return Got::Closed;
        }
        assert!(fds.len() <= 1, "more than one fd: {fds:?}");
        Got::Request(
            WorkloadRequest::decode(&buf[..len]).unwrap(),
            fds.first().copied(),
        )
    }

    pub fn request(&self) -> (RequestPayload, Option<RawFd>) {
        match self.recv() {
            Got::Request(r, fd) => (r.payload.expect("a request with a payload"), fd),
            Got::Closed => panic!("the server closed the connection"),
        }
    }

    /// The next request; its fd, if any, is checked to be a netns and closed.
    pub fn next(&self) -> RequestPayload {
        let (p, fd) = self.request();
        if let Some(fd) = fd {
            assert_is_own_netns(fd);
        }
        p
    }

    /// Reads and acks a snapshot: (uid, had a netns fd) per pod, in order.
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        let mut pods = Vec::new();
        loop {
            let (p, fd) = self.request();
            match p {
                RequestPayload::Add(AddWorkload { uid, .. }) => {
                    let fd = fd.expect("an add without a netns fd");
                    assert_is_own_netns(fd);
                    pods.push((uid, true));
                }
                RequestPayload::Keep(KeepWorkload { uid }) => {
                    assert_eq!(fd, None, "a keep with an fd");
                    pods.push((uid, false));
                }
                RequestPayload::SnapshotSent(_) => {
                    assert_eq!(fd, None);
                    self.ack("");
                    return pods;
                }
                other => panic!("{other:?} in a snapshot"),
            }
            self.ack("");
        }
    }

    /// Nothing is waiting to be read.
    pub fn idle(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.stream.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 0
    }
}

/// `fd` (received, so ours to close) is this process's network namespace: the same nsfs
/// inode as `/proc/self/ns/net`.
pub fn assert_is_own_netns(fd: RawFd) {
    let got = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let want = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(got.to_string_lossy().starts_with("net:["), "{got:?}");
    assert_eq!(got, want);
    nix::unistd::close(fd).unwrap();
}
