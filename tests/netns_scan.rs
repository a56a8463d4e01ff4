//! The node agent's /proc scan (src/agent/netns_scan.rs) against proc roots built in a
//! temporary directory: each PID directory has a `cgroup` file in a shape the kubelet writes
//! and an `ns/net` symlink to a real namespace (`ip netns add`, or this process's own, which
//! the fake PID 1 shares as the node's does), so the scan opens, compares and enters real
//! namespaces. Each case is a trial:
//!
//! - choose: of two namespaces whose processes name the pod, the one holding its IP (Istio
//!   #61211), whichever PID comes first; processes sharing a namespace count once; an IPv6
//!   pod IP; the fd returned is that namespace;
//! - refuse: no namespace holds the IPs (the error names them), two do, the pod's processes
//!   are all in the node's namespace (a host-network pod, whose IP the node does hold), no
//!   process of the pod, a pod without IPs, a proc root that does not exist;
//! - skip: a PID that exited (its `ns/net` names a process gone), a PID directory emptied
//!   mid-scan, entries that are no PID, a FIFO for `cgroup` or `ns/net` (no blocking);
//! - real_proc: the real /proc, a child process moved into a `kubepods/.../pod<UID>/<ID>`
//!   cgroup of a writable hierarchy and run in a namespace holding the IP.
//!
//! Root for everything that makes a namespace; the rest runs anywhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "agent")]

mod support;

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use meshtables::agent::netns_scan::{Found, NetnsId, ScanError, find};
use support::netns::Netns;
use support::trials::{NOTHING, Trials, root};

/// The pod the trials look for, in Kubernetes' form and as systemd's driver escapes it.
const POD: &str = "3e1d9b27-6c40-4f8a-b5d2-90a7c61e4f38";
const POD_SYSTEMD: &str = "3e1d9b27_6c40_4f8a_b5d2_90a7c61e4f38";
/// Another pod on the node.
const OTHER_SYSTEMD: &str = "c0ffee00_1234_4abc_8def_0123456789ab";

/// `support::netns::Netns`'s addresses.
fn pod_v4() -> IpAddr {
    "10.244.1.5".parse().unwrap()
}

fn pod_v6() -> IpAddr {
    "fd00:244::5".parse().unwrap()
}

/// A container of `pod_systemd` as cgroup v2 with the systemd driver and containerd shows it.
fn cgroup_of(pod_systemd: &str, container: u32) -> String {
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_systemd}.slice/cri-containerd-{container:064x}.scope\n"
    )
}

/// This process's network namespace: the node's, as far as the scan can tell.
fn own_netns() -> String {
    format!("/proc/{}/ns/net", std::process::id())
}

fn id_of(path: &str) -> NetnsId {
    let m = std::fs::metadata(path).unwrap();
    NetnsId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// A proc root in a temporary directory: PID 1 in this process's namespace, and the
/// entries a real /proc has besides PIDs.
struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> FakeProc {
        let p = FakeProc {
            dir: tempfile::tempdir().unwrap(),
        };
        p.process(1, "0::/init.scope\n", &own_netns());
        let root = p.root();
        std::fs::write(root.join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        std::fs::create_dir(root.join("sys")).unwrap();
        std::os::unix::fs::symlink("1", root.join("self")).unwrap();
        p
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// PID `pid` in cgroup `cgroup` (the file's text), its `ns/net` a link to `netns`.
    fn process(&self, pid: u32, cgroup: &str, netns: &str) {
        let dir = self.root().join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        std::os::unix::fs::symlink(netns, dir.join("ns/net")).unwrap();
    }

    fn scan(&self, ips: &[IpAddr]) -> Result<Found, ScanError> {
        find(self.root(), POD, ips)
    }
}

/// A pod namespace whose eth0 has `v4` instead of `pod_v4()` (and no IPv6 address).
fn netns_with(tag: &str, v4: &str) -> Netns {
    let ns = Netns::new(tag);
    let o = ns.exec(&format!(
        "ip addr flush dev eth0 && ip addr add {v4}/24 dev eth0"
    ));
    assert!(o.status.success(), "{}", support::stderr(&o));
    ns
}

fn assert_found(found: &Found, pid: u32, ns: &Netns) {
    assert_eq!(found.pid, pid);
    assert_eq!(found.id, id_of(&ns.path()));
    // The fd is that namespace, not just the number we reported.
    let m = std::fs::File::from(found.netns.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    assert_eq!((m.dev(), m.ino()), (found.id.dev, found.id.ino));
    let flags = nix::fcntl::fcntl(&found.netns, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert!(nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC));
}

// ---- choose --------------------------------------------------------------------------------

/// Istio #61211: a process of the pod sits in another namespace (here the lower PID, so a
/// scan in PID order meets it first); only the pod's own holds its IP.
fn choose_the_namespace_holding_the_ip(foreign_first: bool) {
    let foreign = netns_with("scan-foreign", "10.244.1.6");
    let own = Netns::new("scan-own");
    let p = FakeProc::new();
    let (fpid, opid) = if foreign_first {
        (100, 200)
    } else {
        (200, 100)
    };
    p.process(fpid, &cgroup_of(POD_SYSTEMD, 1), &foreign.path());
    p.process(opid, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    let found = p.scan(&[pod_v4()]).unwrap();
    assert_found(&found, opid, &own);
}

fn choose_processes_sharing_a_namespace_count_once() {
    let own = Netns::new("scan-shared");
    let p = FakeProc::new();
    // The pause container and two app containers: one namespace.
    for (pid, c) in [(100, 1), (101, 2), (102, 3)] {
        p.process(pid, &cgroup_of(POD_SYSTEMD, c), &own.path());
    }
    let found = p.scan(&[pod_v4()]).unwrap();
    assert_eq!(found.id, id_of(&own.path()));
    assert!((100..=102).contains(&found.pid), "{}", found.pid);
}

fn choose_by_an_ipv6_pod_ip() {
    let own = Netns::new("scan-v6");
    let other = netns_with("scan-v6-other", "10.244.1.7");
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &other.path());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    // Dual stack, the v4 address not in the namespace: its v6 one is enough.
    let found = p
        .scan(&["10.244.99.99".parse().unwrap(), pod_v6()])
        .unwrap();
    assert_found(&found, 200, &own);
}

fn choose_other_pods_processes_are_not_candidates() {
    let own = Netns::new("scan-mine");
    let theirs = Netns::new("scan-theirs"); // holds the same address, but is another pod's
    let p = FakeProc::new();
    p.process(100, &cgroup_of(OTHER_SYSTEMD, 1), &theirs.path());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    let found = p.scan(&[pod_v4()]).unwrap();
    assert_found(&found, 200, &own);
}

// ---- refuse --------------------------------------------------------------------------------

fn refuse_when_no_namespace_holds_the_ips() {
    let a = netns_with("scan-none-a", "10.244.1.6");
    let b = netns_with("scan-none-b", "10.244.1.7");
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &a.path());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &b.path());
    let ips = [pod_v4(), pod_v6()];
    let err = p.scan(&ips).unwrap_err();
    let ScanError::NoneHoldsIps {
        pod_uid,
        ips: named,
        seen,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(pod_uid, POD);
    assert_eq!(named, &ips);
    let mut pids: Vec<u32> = seen.iter().map(|s| s.pid).collect();
    pids.sort();
    assert_eq!(pids, [100, 200]);
    let text = err.to_string();
    for want in ["10.244.1.5", "fd00:244::5", "pid 100", "pid 200", POD] {
        assert!(text.contains(want), "{want} not in: {text}");
    }
}

fn refuse_two_namespaces_holding_the_ips() {
    let a = Netns::new("scan-two-a");
    let b = Netns::new("scan-two-b");
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &a.path());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &b.path());
    let err = p.scan(&[pod_v4()]).unwrap_err();
    let ScanError::Ambiguous { holding, .. } = &err else {
        panic!("{err}")
    };
    let mut ids: Vec<NetnsId> = holding.iter().map(|(_, id)| *id).collect();
    ids.sort();
    let mut want = vec![id_of(&a.path()), id_of(&b.path())];
    want.sort();
    assert_eq!(ids, want);
    assert!(err.to_string().contains("10.244.1.5"), "{err}");
}

/// A host-network pod: its processes are in the node's namespace, which does hold the pod's
/// IP (a host-network pod's IPs are the node's). Never chosen.
fn refuse_a_host_network_pod() {
    use meshtables::host::Host;
    let node_ips = meshtables::host::System.interface_addrs().unwrap();
    assert!(!node_ips.is_empty(), "this namespace has no address at all");
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &own_netns());
    p.process(101, &cgroup_of(POD_SYSTEMD, 2), &own_netns());
    let err = p.scan(&node_ips).unwrap_err();
    let ScanError::HostNetwork { pids, .. } = &err else {
        panic!("{err}")
    };
    let mut pids = pids.clone();
    pids.sort();
    assert_eq!(pids, [100, 101]);
}

/// Beside a pod namespace holding the IP, a process of the pod in the node's namespace is
/// not a second candidate (not `Ambiguous`).
fn refuse_the_node_namespace_beside_the_pods() {
    use meshtables::host::Host;
    let own = Netns::new("scan-beside-host");
    let mut ips = meshtables::host::System.interface_addrs().unwrap();
    ips.push(pod_v4());
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &own_netns());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    let found = p.scan(&ips).unwrap();
    assert_found(&found, 200, &own);
}

fn refuse_no_process_of_the_pod() {
    let p = FakeProc::new();
    p.process(100, &cgroup_of(OTHER_SYSTEMD, 1), &own_netns());
    p.process(101, "0::/system.slice/containerd.service\n", &own_netns());
    let err = p.scan(&[pod_v4()]).unwrap_err();
    assert!(matches!(err, ScanError::NoProcess { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(POD) && text.contains(&p.root().display().to_string()),
        "{text}"
    );
}

fn refuse_a_pod_without_ips() {
    let p = FakeProc::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &own_netns());
    let err = p.scan(&[]).unwrap_err();
    assert!(matches!(err, ScanError::NoPodIps { .. }), "{err}");
}

fn refuse_a_proc_root_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("proc");
    let err = find(&missing, POD, &[pod_v4()]).unwrap_err();
    // PID 1's namespace is read first; either way the path is named.
    assert!(
        matches!(
            err,
            ScanError::HostNamespace { .. } | ScanError::Proc { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

// ---- skip ----------------------------------------------------------------------------------

/// A process that has exited and not been reaped (a zombie): its PID is still listed and
/// cannot be reused, its namespace is gone (opening `ns/net` is ENOENT), as for a process
/// that exits while the scan looks at it.
struct Zombie(Child);

impl Zombie {
    fn new() -> Zombie {
        let z = Zombie(Command::new("true").spawn().unwrap());
        let t = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", z.pid())).unwrap();
            let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
            if state == Some("Z") {
                return z;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "never exited: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }
}

impl Drop for Zombie {
    fn drop(&mut self) {
        let _ = self.0.wait();
    }
}

fn skip_a_pid_that_exited() {
    let own = Netns::new("scan-exited");
    let p = FakeProc::new();
    // Listed, but its process is gone by the time its namespace is opened.
    let z = Zombie::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &z.netns());
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    let found = p.scan(&[pod_v4()]).unwrap();
    assert_found(&found, 200, &own);
}

fn skip_a_pid_directory_emptied_mid_scan() {
    let own = Netns::new("scan-emptied");
    let p = FakeProc::new();
    std::fs::create_dir(p.root().join("150")).unwrap();
    p.process(200, &cgroup_of(POD_SYSTEMD, 2), &own.path());
    let found = p.scan(&[pod_v4()]).unwrap();
    assert_found(&found, 200, &own);
}

fn skip_only_exited_pids_is_no_process() {
    let p = FakeProc::new();
    let z = Zombie::new();
    p.process(100, &cgroup_of(POD_SYSTEMD, 1), &z.netns());
    let err = p.scan(&[pod_v4()]).unwrap_err();
    assert!(matches!(err, ScanError::NoProcess { .. }), "{err}");
}

fn skip_entries_that_are_no_pid() {
    let own = Netns::new("scan-names");
    let p = FakeProc::new();
    // Names a digit parser could be fooled by, and a PID that is a file, not a directory.
    for name in ["+200", "200a", "0x200", "99999999999"] {
        let dir = p.root().join(name);
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup_of(POD_SYSTEMD, 9)).unwrap();
        std::os::unix::fs::symlink(own.path(), dir.join("ns/net")).unwrap();
    }
    std::fs::write(p.root().join("300"), cgroup_of(POD_SYSTEMD, 9)).unwrap();
    let err = p.scan(&[pod_v4()]).unwrap_err();
    assert!(matches!(err, ScanError::NoProcess { .. }), "{err}");
}

/// Runs the scan on a thread and waits for it, so a scan that blocks fails the trial.
fn scan_within(p: &FakeProc, ips: Vec<IpAddr>) -> Result<Found, ScanError> {
    let root = p.root().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(find(&root, POD, &ips));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the scan blocked (a FIFO opened for reading?)")
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn skip_a_fifo_for_cgroup() {
    let p = FakeProc::new();
    let dir = p.root().join("100");
    std::fs::create_dir_all(dir.join("ns")).unwrap();
    mkfifo(&dir.join("cgroup"));
    std::os::unix::fs::symlink(own_netns(), dir.join("ns/net")).unwrap();
    let err = scan_within(&p, vec![pod_v4()]).unwrap_err();
    assert!(matches!(err, ScanError::NoProcess { .. }), "{err}");
}

fn skip_a_fifo_for_ns_net() {
    let p = FakeProc::new();
    let dir = p.root().join("100");
    std::fs::create_dir_all(dir.join("ns")).unwrap();
    std::fs::write(dir.join("cgroup"), cgroup_of(POD_SYSTEMD, 1)).unwrap();
    mkfifo(&dir.join("ns/net"));
    let err = scan_within(&p, vec![pod_v4()]).unwrap_err();
    let ScanError::NoneHoldsIps { seen, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(seen.len(), 1, "{err}");
    assert!(seen[0].why.contains("not a namespace"), "{err}");
}

// ---- real_proc -----------------------------------------------------------------------------

/// A cgroup hierarchy this process may create groups in: cgroup v2 (at /sys/fs/cgroup or
/// /sys/fs/cgroup/unified) or v1's pids controller.
fn real_proc_can_run() -> Option<String> {
    if support::podproc::writable_hierarchy().is_none() {
        return Some("needs a writable cgroup hierarchy under /sys/fs/cgroup".into());
    }
    None
}

fn real_proc_finds_a_child_in_a_pod_cgroup() {
    if support::podproc::in_a_pid_namespace("real_proc::finds_a_child_in_a_pod_cgroup") {
        return;
    }
    let ns = Netns::new("scan-real");
    // A UID of this run's own, so that concurrent runs do not see each other's process.
    let uid = format!("{:08x}-6c40-4f8a-b5d2-90a7c61e4f38", std::process::id());
    let child = support::podproc::pod_process(&ns, &uid);
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", child.child.id())).unwrap();
    assert_eq!(
        meshtables::agent::netns_scan::pod_uid_from_cgroup(&text).as_deref(),
        Some(uid.as_str()),
        "{text}"
    );
    let found = find(Path::new("/proc"), &uid, &[pod_v4()]).unwrap();
    assert_eq!(found.pid, child.child.id());
    assert_eq!(found.id, id_of(&ns.path()));
}

fn main() {
    let mut t = Trials::new();
    let ip = root(&["ip"]);
    t.add(
        "choose::the_namespace_holding_the_ip_foreign_first",
        ip,
        || choose_the_namespace_holding_the_ip(true),
    );
    t.add(
        "choose::the_namespace_holding_the_ip_foreign_last",
        ip,
        || choose_the_namespace_holding_the_ip(false),
    );
    t.add(
        "choose::processes_sharing_a_namespace_count_once",
        ip,
        choose_processes_sharing_a_namespace_count_once,
    );
    t.add("choose::by_an_ipv6_pod_ip", ip, choose_by_an_ipv6_pod_ip);
    t.add(
        "choose::other_pods_processes_are_not_candidates",
        ip,
        choose_other_pods_processes_are_not_candidates,
    );
    t.add(
        "refuse::no_namespace_holds_the_ips",
        ip,
        refuse_when_no_namespace_holds_the_ips,
    );
    t.add(
        "refuse::two_namespaces_hold_the_ips",
        ip,
        refuse_two_namespaces_holding_the_ips,
    );
    t.add(
        "refuse::a_host_network_pod",
        NOTHING,
        refuse_a_host_network_pod,
    );
    t.add(
        "refuse::the_node_namespace_beside_the_pods",
        ip,
        refuse_the_node_namespace_beside_the_pods,
    );
    t.add(
        "refuse::no_process_of_the_pod",
        NOTHING,
        refuse_no_process_of_the_pod,
    );
    t.add(
        "refuse::a_pod_without_ips",
        NOTHING,
        refuse_a_pod_without_ips,
    );
    t.add(
        "refuse::a_proc_root_that_does_not_exist",
        NOTHING,
        refuse_a_proc_root_that_does_not_exist,
    );
    t.add("skip::a_pid_that_exited", ip, skip_a_pid_that_exited);
    t.add(
        "skip::a_pid_directory_emptied_mid_scan",
        ip,
        skip_a_pid_directory_emptied_mid_scan,
    );
    t.add(
        "skip::only_exited_pids_is_no_process",
        NOTHING,
        skip_only_exited_pids_is_no_process,
    );
    t.add(
        "skip::entries_that_are_no_pid",
        ip,
        skip_entries_that_are_no_pid,
    );
    t.add("skip::a_fifo_for_cgroup", NOTHING, skip_a_fifo_for_cgroup);
    t.add("skip::a_fifo_for_ns_net", NOTHING, skip_a_fifo_for_ns_net);
    t.add_if(
        "real_proc::finds_a_child_in_a_pod_cgroup",
        root(&["ip", "unshare"]),
        real_proc_can_run,
        real_proc_finds_a_child_in_a_pod_cgroup,
    );
    t.declare(
        19,
        &[("choose", 5), ("refuse", 7), ("skip", 6), ("real_proc", 1)],
    );
    t.run()
}
