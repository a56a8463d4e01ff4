//! The ZDS server (src/agent/server.rs) against a stand-in ztunnel speaking the protocol as
//! ztunnel's `src/inpod/protocol.rs` does: a SOCK_SEQPACKET client that sends its hello,
//! reads each request into 1024 bytes with room for one fd, and acks. Each case is a trial:
//!
//! - wire: the messages' bytes carry zds.proto's field numbers (del's uid is field 2, keep is
//!   payload 5);
//! - handshake: the snapshot (adds with a netns fd, keeps without, then snapshot_sent; a
//!   refused pod does not end it), an add whose fd is this process's own network namespace
//!   or a pod's, a fresh snapshot on reconnect;
//! - ack: ztunnel's error text comes back, a missing ack is a timeout, a close mid-request
//!   is named;
//! - hostile: oversized, garbage and unknown-oneof acks; no hello, an oversized, garbage or
//!   wrong-version hello, a hello with an fd, a message nobody asked for; a silent peer does
//!   not stall another ztunnel, nor does a flood of them;
//! - upgrade: adds go to the newest connection, deletes to all, a closed newest falls back;
//! - request and bind: a request over 1024 bytes or with an fd that is no namespace is
//!   refused unsent, no ztunnel, the socket
//!   path (a stale socket replaced, a regular file refused, ours removed on drop).
//!
//! No root but for one trial: the netns fd is `/proc/self/ns/net`, which any process may
//! open; `handshake::add_passes_a_pod_netns` (root, `ip`) passes a namespace of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "agent")]

mod support;

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtables::agent::server::{Deadlines, MAX_HANDSHAKING, ZdsError, ZdsServer};
use meshtables::agent::zds::{
    AddWorkload, DelWorkload, KeepWorkload, RequestPayload, SnapshotSent, Version, WorkloadInfo,
    WorkloadRequest, ZdsHello,
};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use prost::Message;
use support::trials::{NOTHING, Trials, root};
use support::ztunnel::{Got, LONG, Ztunnel, assert_is_own_netns};

/// A server on a socket in a fresh temporary directory.
struct Node {
    _dir: tempfile::TempDir,
    path: PathBuf,
    server: Arc<ZdsServer>,
}

fn node(deadlines: Deadlines) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let server = Arc::new(ZdsServer::bind(&path, deadlines).unwrap());
    Node {
        _dir: dir,
        path,
        server,
    }
}

fn short_acks() -> Deadlines {
    Deadlines {
        hello: LONG,
        ack: Duration::from_millis(300),
    }
}

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "default".into(),
        service_account: "sa".into(),
    }
}

fn own_netns() -> OwnedFd {
    std::fs::File::open("/proc/self/ns/net").unwrap().into()
}

/// Polls `cond` until it holds (a state, not a fixed sleep), failing after `LONG`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on the server in a thread (it blocks until ztunnel acks).
fn spawn<T: Send + 'static>(
    n: &Node,
    f: impl FnOnce(&ZdsServer) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let s = n.server.clone();
    std::thread::spawn(move || f(&s))
}

fn add(n: &Node, uid: &'static str) -> std::thread::JoinHandle<Result<(), ZdsError>> {
    spawn(n, move |s| s.add(uid, info(uid), own_netns().as_fd()))
}

// --- wire ---

fn wire_del_uid_is_field_2() {
    let del = WorkloadRequest {
        payload: Some(RequestPayload::Del(DelWorkload { uid: "x".into() })),
    };
    // payload field 2 (len 3) holding field 2 "x".
    assert_eq!(del.encode_to_vec(), [0x12, 3, 0x12, 1, b'x']);
}

fn wire_keep_is_payload_5_and_snapshot_3() {
    let keep = WorkloadRequest {
        payload: Some(RequestPayload::Keep(KeepWorkload { uid: "u".into() })),
    };
    assert_eq!(keep.encode_to_vec(), [0x2a, 3, 0x0a, 1, b'u']);
    let done = WorkloadRequest {
        payload: Some(RequestPayload::SnapshotSent(SnapshotSent {})),
    };
    assert_eq!(done.encode_to_vec(), [0x1a, 0]);
}

fn wire_add_carries_workload_info_fields_1_to_3() {
    let add = WorkloadRequest {
        payload: Some(RequestPayload::Add(AddWorkload {
            uid: "u".into(),
            workload_info: Some(WorkloadInfo {
                name: "n".into(),
                namespace: "s".into(),
                service_account: "a".into(),
            }),
        })),
    };
    let inner = [0x0a, 1, b'n', 0x12, 1, b's', 0x1a, 1, b'a'];
    let mut add_body = vec![0x0a, 1, b'u', 0x12, inner.len() as u8];
    add_body.extend(inner);
    let mut want = vec![0x0a, add_body.len() as u8];
    want.extend(add_body);
    assert_eq!(add.encode_to_vec(), want);
}

// --- handshake ---

fn handshake_add_passes_the_netns_fd() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "pod-1");
    let (p, fd) = z.request();
    let RequestPayload::Add(a) = p else {
        panic!("{p:?}")
    };
    assert_eq!(a.uid, "pod-1");
    assert_eq!(a.workload_info, Some(info("pod-1")));
    assert_is_own_netns(fd.expect("an add carries the netns fd"));
    z.ack("");
    h.join().unwrap().unwrap();
}

/// With a pod's own namespace (not the test's), what ztunnel receives is that namespace.
fn handshake_add_passes_a_pod_netns() {
    use std::os::unix::fs::MetadataExt;
    let ns = support::netns::Netns::new("zds");
    let pod: OwnedFd = std::fs::File::open(ns.path()).unwrap().into();
    let inode = std::fs::metadata(ns.path()).unwrap().ino();
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let h = spawn(&n, move |s| s.add("pod", info("pod"), pod.as_fd()));
    let (p, fd) = z.request();
    assert!(matches!(p, RequestPayload::Add(_)));
    let fd = fd.expect("an add carries the netns fd");
    // Its link names the mount path, so compare the namespace's inode (stat follows it).
    let got = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .ino();
    assert_eq!(got, inode);
    assert_ne!(got, std::fs::metadata("/proc/self/ns/net").unwrap().ino());
    nix::unistd::close(fd).unwrap();
    z.ack("");
    h.join().unwrap().unwrap();
}

fn handshake_snapshot_carries_known_pods() {
    let n = node(Deadlines::default());
    assert!(matches!(
        n.server.add("a", info("a"), own_netns().as_fd()),
        Err(ZdsError::NoZtunnel)
    ));
    n.server.keep("b", info("b")).unwrap();
    let z = Ztunnel::connect(&n.path);
    z.hello();
    assert_eq!(z.snapshot(), vec![("a".into(), true), ("b".into(), false)]);
}

fn handshake_reconnect_gets_a_fresh_snapshot() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    for uid in ["a", "b"] {
        let h = add(&n, uid);
        z.next();
        z.ack("");
        h.join().unwrap().unwrap();
    }
    let h = spawn(&n, |s| s.del("a"));
    assert!(matches!(z.next(), RequestPayload::Del(_)));
    z.ack("");
    h.join().unwrap().unwrap();
    drop(z);
    wait_for("the closed connection to go", || {
        n.server.connections() == 0
    });
    let z = Ztunnel::connect(&n.path);
    z.hello();
    assert_eq!(z.snapshot(), vec![("b".into(), true)]);
}

// --- ack ---

fn ack_error_text_comes_back() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "p");
    z.next();
    z.ack("failed to enter netns");
    match h.join().unwrap() {
        Err(ZdsError::Nack(e)) => assert_eq!(e, "failed to enter netns"),
        other => panic!("{other:?}"),
    }
    // A refusal leaves the stream in step: the connection stays.
    assert_eq!(n.server.connections(), 1);
}

fn ack_missing_is_a_timeout_and_drops_the_connection() {
    let n = node(short_acks());
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "p");
    z.next();
    let r = h.join().unwrap();
    assert!(matches!(r, Err(ZdsError::Timeout(..))), "{r:?}");
    assert_eq!(n.server.connections(), 0);
    // A late ack cannot be mistaken for the next request's: the server closed its end.
    assert!(matches!(z.recv(), Got::Closed));
}

fn ack_peer_closing_mid_request_is_named() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "p");
    z.next();
    drop(z);
    let r = h.join().unwrap();
    assert!(matches!(r, Err(ZdsError::PeerClosed { .. })), "{r:?}");
    assert_eq!(n.server.connections(), 0);
}

// --- hostile ---

fn hostile_reply(reply: &'static [u8]) -> Result<(), ZdsError> {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "p");
    z.next();
    z.send(reply);
    let r = h.join().unwrap();
    assert_eq!(
        n.server.connections(),
        0,
        "a protocol error drops the connection"
    );
    r
}

fn hostile_oversized_ack() {
    static BIG: [u8; 2000] = [0x0a; 2000];
    let r = hostile_reply(&BIG);
    assert!(matches!(r, Err(ZdsError::Oversized(_))), "{r:?}");
}

fn hostile_garbage_ack() {
    let r = hostile_reply(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(r, Err(ZdsError::Garbage { .. })), "{r:?}");
}

fn hostile_truncated_ack() {
    // An Ack field that claims 5 bytes and has 1.
    let r = hostile_reply(&[0x0a, 5, 0x0a]);
    assert!(matches!(r, Err(ZdsError::Garbage { .. })), "{r:?}");
}

fn hostile_unknown_oneof_ack() {
    // WorkloadResponse field 2: no such payload in zds.proto.
    let r = hostile_reply(&[0x12, 0]);
    assert!(matches!(r, Err(ZdsError::UnknownMessage(_))), "{r:?}");
}

/// A hello the server must refuse: it closes the connection and sends no snapshot.
fn refused_hello(hello: &[u8]) {
    let n = node(Deadlines::default());
    let z = Ztunnel::connect(&n.path);
    z.send(hello);
    assert!(matches!(z.recv(), Got::Closed));
    assert_eq!(n.server.connections(), 0);
}

fn hostile_oversized_hello() {
    refused_hello(&[0x08; 2000]);
}

fn hostile_garbage_hello() {
    refused_hello(&[0xff, 0xff, 0xff]);
}

fn hostile_wrong_version_hello() {
    refused_hello(&[0x08, 0x02]);
}

fn hostile_no_hello_is_closed_at_the_deadline() {
    let n = node(Deadlines {
        hello: Duration::from_millis(200),
        ack: LONG,
    });
    let start = Instant::now();
    let z = Ztunnel::connect(&n.path);
    assert!(matches!(z.recv(), Got::Closed));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(n.server.connections(), 0);
}

fn hostile_silent_peer_does_not_stall_ztunnel() {
    // The hello deadline is long: the stranger is still connected throughout.
    let n = node(Deadlines {
        hello: Duration::from_secs(60),
        ack: LONG,
    });
    let stranger = Ztunnel::connect(&n.path);
    let z = Ztunnel::ready(&n.path);
    let h = add(&n, "p");
    assert!(matches!(z.next(), RequestPayload::Add(_)));
    z.ack("");
    h.join().unwrap().unwrap();
    assert_eq!(n.server.connections(), 1, "the stranger is not a ztunnel");
    assert!(stranger.idle(), "the stranger got nothing");
}

fn hostile_hello_with_an_fd() {
    let n = node(Deadlines::default());
    let z = Ztunnel::connect(&n.path);
    let netns = own_netns();
    let hello = ZdsHello {
        version: Version::V1 as i32,
    }
    .encode_to_vec();
    sendmsg::<()>(
        z.stream.as_raw_fd(),
        &[IoSlice::new(&hello)],
        &[ControlMessage::ScmRights(&[netns.as_raw_fd()])],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
    assert!(matches!(z.recv(), Got::Closed));
    assert_eq!(n.server.connections(), 0);
}

fn hostile_unsolicited_message_drops_the_connection() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    z.ack("");
    // Found under the connection's lock before the add is sent: no request goes out.
    let r = n.server.add("p", info("p"), own_netns().as_fd());
    assert!(matches!(r, Err(ZdsError::NoZtunnel)), "{r:?}");
    assert!(matches!(z.recv(), Got::Closed));
}

fn handshake_snapshot_goes_on_after_a_refused_pod() {
    let n = node(Deadlines::default());
    for uid in ["a", "b"] {
        let _ = n.server.add(uid, info(uid), own_netns().as_fd());
    }
    let z = Ztunnel::connect(&n.path);
    z.hello();
    let RequestPayload::Add(a) = z.next() else {
        panic!("not an add")
    };
    assert_eq!(a.uid, "a");
    z.ack("failed to start proxy");
    let RequestPayload::Add(b) = z.next() else {
        panic!("not an add")
    };
    assert_eq!(b.uid, "b");
    z.ack("");
    assert!(matches!(z.next(), RequestPayload::SnapshotSent(_)));
    z.ack("");
    wait_for("the connection", || n.server.connections() == 1);
}

fn hostile_silent_flood_does_not_lock_out_ztunnel() {
    let n = node(Deadlines {
        hello: Duration::from_secs(60),
        ack: LONG,
    });
    // As many silent peers as the server waits for, then ztunnel: the oldest is closed.
    let strangers: Vec<Ztunnel> = (0..MAX_HANDSHAKING)
        .map(|_| Ztunnel::connect(&n.path))
        .collect();
    let z = Ztunnel::ready(&n.path);
    assert!(matches!(strangers[0].recv(), Got::Closed));
    assert!(strangers[1..].iter().all(Ztunnel::idle));
    let h = add(&n, "p");
    assert!(matches!(z.next(), RequestPayload::Add(_)));
    z.ack("");
    h.join().unwrap().unwrap();
}

// --- upgrade ---

fn upgrade_adds_go_to_the_newest() {
    let n = node(Deadlines::default());
    let old = Ztunnel::ready(&n.path);
    let new = Ztunnel::ready(&n.path);
    wait_for("two connections", || n.server.connections() == 2);
    let h = add(&n, "p");
    assert!(matches!(new.next(), RequestPayload::Add(_)));
    new.ack("");
    h.join().unwrap().unwrap();
    assert!(old.idle(), "the old ztunnel got the add too");
}

fn upgrade_deletes_go_to_all() {
    let n = node(Deadlines::default());
    let old = Ztunnel::ready(&n.path);
    let new = Ztunnel::ready(&n.path);
    wait_for("two connections", || n.server.connections() == 2);
    let h = spawn(&n, |s| s.del("p"));
    for z in [&old, &new] {
        match z.next() {
            RequestPayload::Del(d) => assert_eq!(d.uid, "p"),
            other => panic!("{other:?}"),
        }
        z.ack("");
    }
    h.join().unwrap().unwrap();
}

fn upgrade_closed_newest_falls_back_to_the_old() {
    let n = node(Deadlines::default());
    let old = Ztunnel::ready(&n.path);
    let new = Ztunnel::ready(&n.path);
    wait_for("two connections", || n.server.connections() == 2);
    drop(new);
    let h = add(&n, "p");
    assert!(matches!(old.next(), RequestPayload::Add(_)));
    old.ack("");
    h.join().unwrap().unwrap();
}

// --- request ---

fn request_too_large_is_refused_unsent() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let uid = "u".repeat(1100);
    let r = n.server.add(&uid, info("p"), own_netns().as_fd());
    assert!(matches!(r, Err(ZdsError::RequestTooLarge { .. })), "{r:?}");
    assert!(z.idle());
    assert_eq!(n.server.connections(), 1);
}

fn request_with_a_file_for_netns_is_refused_unsent() {
    let n = node(Deadlines::default());
    let z = Ztunnel::ready(&n.path);
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let r = n.server.add("p", info("p"), file.as_fd());
    assert!(matches!(r, Err(ZdsError::NotANetns { .. })), "{r:?}");
    let tmp = tempfile::tempfile().unwrap();
    let r = n.server.add("p", info("p"), tmp.as_fd());
    assert!(matches!(r, Err(ZdsError::NotANetns { .. })), "{r:?}");
    assert!(z.idle());
    // Not remembered either: a new connection's snapshot is empty.
    drop(z);
    wait_for("the closed connection to go", || {
        n.server.connections() == 0
    });
    Ztunnel::ready(&n.path);
}

fn request_keep_too_large_is_refused() {
    let n = node(Deadlines::default());
    let r = n.server.keep(&"u".repeat(1100), info("p"));
    assert!(matches!(r, Err(ZdsError::RequestTooLarge { .. })), "{r:?}");
    // Not remembered: the snapshot is empty.
    Ztunnel::ready(&n.path);
}

fn request_without_ztunnel() {
    let n = node(Deadlines::default());
    let r = n.server.add("p", info("p"), own_netns().as_fd());
    assert!(matches!(r, Err(ZdsError::NoZtunnel)), "{r:?}");
    n.server.del("p").unwrap();
}

// --- bind ---

fn bind_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the stale socket is left behind");
    let server = ZdsServer::bind(&path, Deadlines::default()).unwrap();
    let _z = Ztunnel::connect(&path);
    drop(server);
}

fn bind_refuses_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    std::fs::write(&path, "not ours").unwrap();
    let r = ZdsServer::bind(&path, Deadlines::default());
    assert!(matches!(r, Err(ZdsError::NotASocket { .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not ours");
}

fn bind_drop_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let server = ZdsServer::bind(&path, Deadlines::default()).unwrap();
    assert!(path.exists());
    drop(server);
    assert!(!path.exists());
}

fn main() {
    let mut t = Trials::new();
    t.add("wire::del_uid_is_field_2", NOTHING, wire_del_uid_is_field_2);
    t.add(
        "wire::keep_is_payload_5_and_snapshot_3",
        NOTHING,
        wire_keep_is_payload_5_and_snapshot_3,
    );
    t.add(
        "wire::add_carries_workload_info_fields_1_to_3",
        NOTHING,
        wire_add_carries_workload_info_fields_1_to_3,
    );
    t.add(
        "handshake::add_passes_the_netns_fd",
        NOTHING,
        handshake_add_passes_the_netns_fd,
    );
    t.add(
        "handshake::add_passes_a_pod_netns",
        root(&["ip"]),
        handshake_add_passes_a_pod_netns,
    );
    t.add(
        "handshake::snapshot_carries_known_pods",
        NOTHING,
        handshake_snapshot_carries_known_pods,
    );
    t.add(
        "handshake::reconnect_gets_a_fresh_snapshot",
        NOTHING,
        handshake_reconnect_gets_a_fresh_snapshot,
    );
    t.add(
        "handshake::snapshot_goes_on_after_a_refused_pod",
        NOTHING,
        handshake_snapshot_goes_on_after_a_refused_pod,
    );
    t.add(
        "ack::error_text_comes_back",
        NOTHING,
        ack_error_text_comes_back,
    );
    t.add(
        "ack::missing_is_a_timeout_and_drops_the_connection",
        NOTHING,
        ack_missing_is_a_timeout_and_drops_the_connection,
    );
    t.add(
        "ack::peer_closing_mid_request_is_named",
        NOTHING,
        ack_peer_closing_mid_request_is_named,
    );
    t.add("hostile::oversized_ack", NOTHING, hostile_oversized_ack);
    t.add("hostile::garbage_ack", NOTHING, hostile_garbage_ack);
    t.add("hostile::truncated_ack", NOTHING, hostile_truncated_ack);
    t.add(
        "hostile::unknown_oneof_ack",
        NOTHING,
        hostile_unknown_oneof_ack,
    );
    t.add("hostile::oversized_hello", NOTHING, hostile_oversized_hello);
    t.add("hostile::garbage_hello", NOTHING, hostile_garbage_hello);
    t.add(
        "hostile::wrong_version_hello",
        NOTHING,
        hostile_wrong_version_hello,
    );
    t.add(
        "hostile::no_hello_is_closed_at_the_deadline",
        NOTHING,
        hostile_no_hello_is_closed_at_the_deadline,
    );
    t.add(
        "hostile::silent_peer_does_not_stall_ztunnel",
        NOTHING,
        hostile_silent_peer_does_not_stall_ztunnel,
    );
    t.add(
        "hostile::hello_with_an_fd",
        NOTHING,
        hostile_hello_with_an_fd,
    );
    t.add(
        "hostile::unsolicited_message_drops_the_connection",
        NOTHING,
        hostile_unsolicited_message_drops_the_connection,
    );
    t.add(
        "hostile::silent_flood_does_not_lock_out_ztunnel",
        NOTHING,
        hostile_silent_flood_does_not_lock_out_ztunnel,
    );
    t.add(
        "upgrade::adds_go_to_the_newest",
        NOTHING,
        upgrade_adds_go_to_the_newest,
    );
    t.add(
        "upgrade::deletes_go_to_all",
        NOTHING,
        upgrade_deletes_go_to_all,
    );
    t.add(
        "upgrade::closed_newest_falls_back_to_the_old",
        NOTHING,
        upgrade_closed_newest_falls_back_to_the_old,
    );
    t.add(
        "request::too_large_is_refused_unsent",
        NOTHING,
        request_too_large_is_refused_unsent,
    );
    t.add(
        "request::a_file_for_netns_is_refused_unsent",
        NOTHING,
        request_with_a_file_for_netns_is_refused_unsent,
    );
    t.add(
        "request::keep_too_large_is_refused",
        NOTHING,
        request_keep_too_large_is_refused,
    );
    t.add("request::without_ztunnel", NOTHING, request_without_ztunnel);
    t.add(
        "bind::replaces_a_stale_socket",
        NOTHING,
        bind_replaces_a_stale_socket,
    );
    t.add(
        "bind::refuses_a_regular_file",
        NOTHING,
        bind_refuses_a_regular_file,
    );
    t.add(
        "bind::drop_removes_the_socket",
        NOTHING,
        bind_drop_removes_the_socket,
    );
    t.declare(
        33,
        &[
            ("wire", 3),
            ("handshake", 5),
            ("ack", 3),
            ("hostile", 12),
            ("upgrade", 3),
            ("request", 4),
            ("bind", 3),
        ],
    );
    t.run()
}
