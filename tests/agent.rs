//! The node agent as a node runs it: `meshtables cni-install --ambient-enabled` (the
//! DaemonSet's process) in a namespace that plays the node, a fake API server inside that
//! namespace, a stand-in ztunnel on the ZDS socket, and the plugin the installer copied,
//! invoked as the runtime invokes it (in the node's namespace, `CNI_NETNS` a pod's). Each case
//! is a trial:
//!
//! - add: an ambient pod (by its label, or its namespace's) is redirected (the rules `ambient
//!   check` finds), handed to ztunnel with the pod's own namespace (the same inode; the
//!   stand-in opens a listener in it and the pod's outbound TCP reaches it), its address
//!   joins the node's probe set and it is annotated `enabled` through pods/status; without a
//!   ztunnel, or when ztunnel refuses, the ADD fails and the pod is marked `pending`, and a
//!   ztunnel that connects later gets it in its snapshot; an unlabelled pod, a `none` pod and
//!   a sidecar pod never reach the agent; an agent that is down is "try again later" (11);
//!   the node's own namespace is refused;
//! - del: ztunnel is told, and the probe set loses the address;
//! - socket: a request that is not one, or too large, is answered no; silent clients do not
//!   hold up an ADD; a non-root client is refused;
//! - start: the node's probe rules are installed before the plugin's entry names the agent;
//! - repair: a sidecar pod that started while the plugin was not in the chain gets its rules
//!   in place (the default, and when `--repair-repair-pods` is set beside another mode, as
//!   upstream's precedence); with `--repair-delete-pods` exactly the broken pod is deleted
//!   (and counted), not a healthy one nor one being deleted already; with
//!   `--repair-label-pods` it is labelled once; a bad label key stops the installer at start;
//! - hostile: what a buggy runtime or primary plugin, a misbehaving ztunnel or API server, a
//!   hostile pod, a crash or a race does: a CNI_NETNS that is a FIFO, a file or another
//!   pod's namespace; bad annotations; 410 storms, watches closed at once, garbage and slow
//!   lists; ADDs before the reconcile, behind a slow ztunnel, during a relist; a second
//!   agent; SIGKILL mid-ADD; DELs of other sandboxes; a pod holding its namespace's lock; a
//!   low fd limit; 200 pods (numbers printed);
//! - podman: a real runtime (podman's CNI backend) runs the chain the installer wrote: its
//!   containers are enrolled and redirected before `podman run` returns, and an agent killed
//!   and started again with them running re-enrols each from the /proc scan, once.
//!
//! Every trial needs root (namespaces, netfilter) and `ip`/`nft`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "agent")]

#[path = "support/apiserver.rs"]
mod apiserver;
mod support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshtables::agent::zds::{AddWorkload, DelWorkload, RequestPayload};
use serde_json::{Value, json};
use support::kubeapi::Api;
use support::netns::{Netns, sh};
use support::trials::{Trials, root};
use support::ztunnel::{Got, Ztunnel};

const LONG: Duration = Duration::from_secs(15);
const POD_UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

// ---------------------------------------------------------------------------------------
// The node: its namespace, directories, API server and the installer running the agent.

struct Node {
    ns: Netns,
    dir: tempfile::TempDir,
    api: Api,
    installer: Option<Child>,
    /// A process named kubelet (root's, as real kubelets are): the node's nft probe rule
    /// keys on the kubelet's uid, found in /proc as upstream finds it.
    kubelet: Child,
    /// More installer settings (`start_with`).
    extra: Vec<String>,
}

/// A process whose name is `kubelet` (a copy of sleep, made once per test process). Exec
/// can meet ETXTBSY while another trial's fork still holds the copy's write fd: retried.
fn fake_kubelet() -> Child {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let bin = BIN.get_or_init(|| {
        // Unique also among trials that are each PID 1 of a PID namespace of their own.
        let dir = std::env::temp_dir().join(format!(
            "mt-agent-kubelet-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("kubelet");
        std::fs::copy("/bin/sleep", &bin).unwrap();
        bin
    });
    let start = Instant::now();
    loop {
        match Command::new(bin).arg("600").spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && start.elapsed() < LONG => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("starting the fake kubelet: {e}"),
        }
    }
}

fn pod(ns: &str, name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": POD_UID,
            "labels": labels, "annotations": annotations},
        "spec": {"nodeName": "node-1", "serviceAccountName": "cart-sa",
            "containers": [{"name": "cart", "image": "cart:1"}]},
        "status": {"phase": "Pending"}
    })
}

impl Node {
    /// A node with an ambient namespace `mesh` and a plain one `plain`; the installer is not
    /// started (`start`).
    fn new(tag: &str) -> Node {
        let ns = Netns::new(&format!("node-{tag}"));
        let api = Api::start(&ns.path(), apiserver::tls_server(), apiserver::TOKEN);
        api.add_namespace("mesh", json!({"istio.io/dataplane-mode": "ambient"}));
        api.add_namespace("plain", json!({}));
        let dir = tempfile::tempdir().unwrap();
        for d in ["net", "bin", "sa", "run", "ztunnel"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("sa/token"), apiserver::TOKEN).unwrap();
        std::fs::write(dir.path().join("sa/ca.crt"), &api.ca_pem).unwrap();
        std::fs::write(
            dir.path().join("net/10-test.conflist"),
            r#"{"cniVersion": "1.0.0", "name": "test", "plugins": [{"type": "ptp"}]}"#,
        )
        .unwrap();
        let kubelet = fake_kubelet();
        Node {
            ns,
            dir,
            api,
            installer: None,
            kubelet,
            extra: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn zds(&self) -> PathBuf {
        self.path("ztunnel/ztunnel.sock")
    }

    fn agent_socket(&self) -> PathBuf {
        self.path("run/agent.sock")
    }

    /// Starts `cni-install --ambient-enabled` in the node's namespace and waits until the
    /// chain names the agent.
    fn start(&mut self) {
        self.start_unready();
        wait_until("the agent's start-up reconcile", self, || {
            raw_request(&self.agent_socket(), br#"{"verb":"ping"}"#)
                .is_some_and(|r| r["error"].is_null())
        });
    }

    /// `start` with more installer settings.
    fn start_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.start();
    }

    /// Starts the installer and waits until its agent answers (ready or not).
    fn start_unready(&mut self) {
        let c = self.installer_command("installer.log");
        self.installer = Some(self.spawn_installer(c));
    }

    /// A second installer on the same node and sockets (an upgrade's new DaemonSet pod),
    /// logging to `installer2.log`; returned once its agent holds the plugin's socket.
    fn start_second(&mut self) -> Child {
        let first = inode(&self.agent_socket());
        let c = self.installer_command("installer2.log");
        let mut child = self.spawn_installer(c);
        let start = Instant::now();
        while std::fs::metadata(self.agent_socket())
            .map(|m| (m.dev(), m.ino()))
            .ok()
            == Some(first)
            || raw_request(&self.agent_socket(), br#"{"verb":"ping"}"#).is_none()
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the second installer exited: {}",
                std::fs::read_to_string(self.path("installer2.log")).unwrap_or_default()
            );
            assert!(start.elapsed() < LONG, "the second agent never bound");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    fn installer_command(&self, log: &str) -> Command {
        self.installer_command_under(log, &[])
    }

    /// The installer's command, run under `wrap` (a program that execs the rest, so the
    /// child's pid stays the installer's).
    fn installer_command_under(&self, log: &str, wrap: &[&str]) -> Command {
        let d = self.dir.path().display().to_string();
        let log = std::fs::File::create(self.path(log)).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns.name])
            .args(wrap)
            .arg(support::bin())
            .args(["cni-install", "--ambient-enabled"])
            .args(["--cni-bin-dir", &format!("{d}/bin")])
            .args(["--cni-conf-dir", &format!("{d}/net")])
            .args(["--host-cni-conf-dir", &format!("{d}/net")])
            .args(["--service-account-dir", &format!("{d}/sa")])
            .args(["--cni-agent-run-dir", &format!("{d}/run")])
            .args(["--ztunnel-uds-address", &self.zds().display().to_string()])
            .args(["--exclude-namespaces", "kube-system"])
            .args(["--drift-check-interval", "1"])
            .args(["--node-name", "node-1"])
            .args(["--log-level", "debug"])
            .args(&self.extra);
        support::clear_our_env(&mut c);
        c.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", self.api.port.to_string())
            .env("NATIVE_NFTABLES", "true")
            .env("AMBIENT_DNS_CAPTURE", "true")
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    /// Spawns `c` and waits until the chain names the agent and an agent answers.
    fn spawn_installer(&self, mut c: Command) -> Child {
        let mut child = c.spawn().unwrap();
        let conflist = self.path("net/10-test.conflist");
        let start = Instant::now();
        // The chain names the agent and this installer's agent answers (a ping: even "not
        // ready yet" is an answer), so its sockets are bound.
        while !std::fs::read_to_string(&conflist).is_ok_and(|t| t.contains("ambient-agent"))
            || raw_request(&self.agent_socket(), br#"{"verb":"ping"}"#).is_none()
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the installer exited: {}",
                self.log()
            );
            assert!(
                start.elapsed() < LONG,
                "no agent in the chain: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            self.agent_socket().exists(),
            "no agent socket: {}",
            self.log()
        );
        child
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("installer.log")).unwrap_or_default()
    }

    /// Our entry of the chain, as the runtime hands it to the plugin, with a prevResult of
    /// the pod's address.
    fn plugin_conf(&self) -> Value {
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(self.path("net/10-test.conflist")).unwrap(),
        )
        .unwrap();
        let mut entry = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "meshtables-cni")
            .cloned()
            .unwrap();
        entry["cniVersion"] = json!("1.0.0");
        entry["name"] = json!("test");
        entry["prevResult"] = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "10.244.1.5/24", "interface": 0}]});
        entry
    }

    /// The plugin the installer copied, run as the runtime runs it: in the node's namespace.
    fn plugin(&self, command: &str, pod_ns: &str, pod_name: &str, netns: &str) -> Output {
        self.plugin_with(command, pod_ns, pod_name, netns, &self.plugin_conf())
    }

    fn plugin_with(
        &self,
        command: &str,
        pod_ns: &str,
        pod_name: &str,
        netns: &str,
        conf: &Value,
    ) -> Output {
        self.plugin_of("c0ffee", command, pod_ns, pod_name, netns, conf)
    }

    /// `plugin_with` for the sandbox `container_id`.
    fn plugin_of(
        &self,
        container_id: &str,
        command: &str,
        pod_ns: &str,
        pod_name: &str,
        netns: &str,
        conf: &Value,
    ) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns.name])
            .arg(self.path("bin/meshtables-cni"));
        support::clear_our_env(&mut c);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.path("bin"))
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_ns};K8S_POD_NAME={pod_name}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// The node's IPv4 probe set's members (nft, in the node's namespace).
    fn probe_set(&self) -> String {
        let o = self.ns.run(
            "nft",
            &[
                "list",
                "set",
                "inet",
                "istio-ambient-nat",
                "istio-inpod-probes-v4",
            ],
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kubelet.kill();
        let _ = self.kubelet.wait();
        if let Some(mut c) = self.installer.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + LONG;
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn inode(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

fn fd_inode(fd: RawFd) -> (u64, u64) {
    inode(Path::new(&format!("/proc/self/fd/{fd}")))
}

/// The stand-in ztunnel's next request after its (empty) snapshot. An add's fd, received,
/// is reopened through /proc (a file of our own on the same namespace) and closed.
fn next_request(z: &Ztunnel) -> (RequestPayload, Option<std::fs::File>) {
    match z.recv() {
        Got::Request(r, fd) => {
            let file = fd.map(|f| {
                let file = std::fs::File::open(format!("/proc/self/fd/{f}")).unwrap();
                nix::unistd::close(f).unwrap();
                file
            });
            (r.payload.expect("a request with a payload"), file)
        }
        Got::Closed => panic!("the agent closed ztunnel's connection"),
    }
}

/// Runs the plugin's ADD on a thread while the stand-in takes the request and acks it with
/// `ack`; returns the plugin's output and what ztunnel received.
fn add_with_ztunnel(
    n: &Node,
    z: &Ztunnel,
    pod_ns: &str,
    name: &str,
    netns: &str,
    ack: &str,
) -> (Output, RequestPayload, Option<std::fs::File>) {
    std::thread::scope(|s| {
        let plugin = s.spawn(|| n.plugin("ADD", pod_ns, name, netns));
        let (req, fd) = next_request(z);
        z.ack(ack);
        (plugin.join().unwrap(), req, fd)
    })
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cni_code(o: &Output) -> Option<u64> {
    serde_json::from_slice::<Value>(&o.stdout)
        .ok()?
        .get("code")?
        .as_u64()
}

fn ambient_check(netns: &str) -> Output {
    let mut c = support::command(
        &[
            "ambient",
            "check",
            "--network-namespace",
            netns,
            "--native-nftables",
        ],
        &[("AMBIENT_DNS_CAPTURE", "true")],
    );
    c.output().unwrap()
}

// ---------------------------------------------------------------------------------------
// Trials.

fn add_labelled_pod_is_redirected_acked_and_enabled() {
    let mut n = Node::new("add");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod(
        "shop",
        "cart",
        json!({"istio.io/dataplane-mode": "ambient"}),
        json!({}),
    ));
    n.api.add_namespace("shop", json!({}));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, req, fd) = add_with_ztunnel(&n, &z, "shop", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD: {}", show(&o));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        out["ips"][0]["address"], "10.244.1.5/24",
        "prevResult passed on"
    );
    match req {
        RequestPayload::Add(AddWorkload { uid, workload_info }) => {
            assert_eq!(uid, POD_UID);
            let w = workload_info.unwrap();
            assert_eq!((w.name.as_str(), w.namespace.as_str()), ("cart", "shop"));
            assert_eq!(w.service_account, "cart-sa");
        }
        other => panic!("ztunnel got {other:?}, not an add"),
    }
    let fd = fd.expect("an add carries the pod's netns fd");
    assert_eq!(fd_inode(fd.as_raw_fd()), inode(Path::new(&pod_ns.path())));
    let check = ambient_check(&pod_ns.path());
    assert!(ok(&check), "ambient check in the pod: {}", show(&check));
    assert!(
        n.probe_set().contains("10.244.1.5"),
        "probe set: {}",
        n.probe_set()
    );
    // pending once the rules are in, enabled once ztunnel acked.
    assert_eq!(
        n.api.redirections(),
        vec![Some("pending".to_string()), Some("enabled".to_string())]
    );
    let (ctype, who, _) = n.api.patches()[0].clone();
    assert_eq!(ctype, "application/merge-patch+json");
    assert_eq!(who, "shop/cart");
}

fn add_namespace_label_makes_a_pod_ambient() {
    let mut n = Node::new("nslabel");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, req, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD: {}", show(&o));
    assert!(matches!(req, RequestPayload::Add(_)), "{req:?}");
    // pending once the rules are in, enabled once ztunnel acked.
    assert_eq!(
        n.api.redirections(),
        vec![Some("pending".to_string()), Some("enabled".to_string())]
    );
}

/// A custom `AMBIENT_ENABLEMENT_SELECTOR` (pods labelled `mesh=yes`, quoted: unquoted `yes` is
/// YAML 1.1's true to istio-cni) is written into the plugin's entry and decides the plugin's
/// ADD: such a pod in a namespace that is not ambient is redirected, handed to ztunnel and
/// enabled, while a pod labelled `istio.io/dataplane-mode=ambient` in a namespace labelled so,
/// ambient by the default selectors, never reaches the agent.
fn select_a_custom_selector_decides_the_add_and_the_default_label_no_longer_does() {
    let mut n = Node::new("select");
    let pod_ns = Netns::new("pod");
    let legacy_ns = Netns::new("legacy");
    n.api.add_namespace("shop", json!({}));
    n.api
        .add_pod(pod("shop", "cart", json!({"mesh": "yes"}), json!({})));
    let mut legacy = pod(
        "mesh",
        "legacy",
        json!({"istio.io/dataplane-mode": "ambient"}),
        json!({}),
    );
    legacy["metadata"]["uid"] = json!("uid-legacy");
    n.api.add_pod(legacy);
    n.start_with(&[
        "--ambient-enablement-selector",
        "- podSelector:\n    matchLabels: {mesh: \"yes\"}\n",
    ]);
    assert_eq!(
        n.plugin_conf()["kubernetes"]["enablement-selectors"],
        json!([{"podSelector": {"matchLabels": {"mesh": "yes"}}, "namespaceSelector": {}}])
    );
    let z = Ztunnel::ready(&n.zds());
    let o = n.plugin("ADD", "mesh", "legacy", &legacy_ns.path());
    assert!(ok(&o), "ADD of legacy: {}", show(&o));
    assert!(z.idle(), "ztunnel was sent the legacy pod");
    assert!(n.api.patches().is_empty(), "{:?}", n.api.patches());
    assert!(
        !ok(&ambient_check(&legacy_ns.path())),
        "ambient rules in the legacy pod"
    );
    let (o, req, _) = add_with_ztunnel(&n, &z, "shop", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD of cart: {}", show(&o));
    match req {
        RequestPayload::Add(AddWorkload { workload_info, .. }) => {
            let w = workload_info.unwrap();
            assert_eq!((w.name.as_str(), w.namespace.as_str()), ("cart", "shop"));
        }
        other => panic!("ztunnel got {other:?}, not an add"),
    }
    assert!(
        ok(&ambient_check(&pod_ns.path())),
        "no ambient rules in cart"
    );
    assert_eq!(
        n.api.redirections(),
        vec![Some("pending".to_string()), Some("enabled".to_string())]
    );
}

/// Pods the shared decision leaves out never reach the agent: ztunnel gets nothing and no
/// annotation is written.
fn add_not_ambient(labels: Value, annotations: Value, namespace: &'static str) -> impl FnOnce() {
    move || {
        let mut n = Node::new("notamb");
        let pod_ns = Netns::new("pod");
        n.api.add_pod(pod(namespace, "cart", labels, annotations));
        n.start();
        let z = Ztunnel::ready(&n.zds());
        let o = n.plugin("ADD", namespace, "cart", &pod_ns.path());
        assert!(ok(&o), "ADD: {}", show(&o));
        assert!(z.idle(), "ztunnel was sent something");
        assert!(n.api.patches().is_empty(), "{:?}", n.api.patches());
        assert!(
            !ok(&ambient_check(&pod_ns.path())),
            "ambient rules in a pod that is not ambient"
        );
    }
}

fn add_without_ztunnel_fails_marks_pending_and_the_snapshot_carries_it() {
    let mut n = Node::new("noz");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
    assert!(!ok(&o), "ADD without ztunnel succeeded: {}", show(&o));
    assert_eq!(cni_code(&o), Some(100), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ztunnel"),
        "{}",
        show(&o)
    );
    assert_eq!(n.api.redirections(), vec![Some("pending".to_string())]);
    // The rules are in (a removal must undo them): what `pending` says.
    assert!(ok(&ambient_check(&pod_ns.path())));
    // ztunnel connecting now gets the pod in its snapshot, with its namespace.
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    let (req, fd) = next_request(&z);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("snapshot began with {other:?}"),
    }
    assert_eq!(
        fd_inode(fd.expect("the snapshot's add has the fd").as_raw_fd()),
        inode(Path::new(&pod_ns.path()))
    );
}

fn add_ztunnel_refusal_fails_the_add() {
    let mut n = Node::new("nack");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "no workload info");
    assert!(!ok(&o), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no workload info"),
        "{}",
        show(&o)
    );
    assert_eq!(n.api.redirections(), vec![Some("pending".to_string())]);
}

fn add_agent_down_is_try_again_later() {
    let mut n = Node::new("down");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let conf = n.plugin_conf();
    let mut conf = conf.clone();
    conf["kubernetes"]["ambient-agent"] = json!(n.path("run/nobody.sock").display().to_string());
    let o = n.plugin_with("ADD", "mesh", "cart", &pod_ns.path(), &conf);
    assert!(!ok(&o));
    assert_eq!(cni_code(&o), Some(11), "{}", show(&o));
    assert!(!ok(&ambient_check(&pod_ns.path())));
}

fn add_the_node_namespace_is_refused() {
    let mut n = Node::new("own");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let _z = Ztunnel::ready(&n.zds());
    let o = n.plugin("ADD", "mesh", "cart", &n.ns.path());
    assert!(!ok(&o), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("own network namespace") || text.contains("its own"),
        "{}",
        show(&o)
    );
    assert!(n.api.patches().is_empty());
}

fn add_traffic_reaches_the_ztunnel_given_the_fd() {
    let mut n = Node::new("traffic");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, _, fd) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "{}", show(&o));
    let fd = fd.unwrap();
    // The stand-in opens its outbound listener inside the namespace it was given, with
    // ztunnel's mark on its own sockets, as ztunnel does.
    let listener = std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        std::net::TcpListener::bind("0.0.0.0:15001").unwrap()
    })
    .join()
    .unwrap();
    listener.set_nonblocking(false).unwrap();
    let name = pod_ns.name.clone();
    let o = sh(&format!(
        "ip -n {name} link set veth0 up && ip -n {name} route add default dev eth0"
    ));
    assert!(o.status.success(), "{}", show(&o));
    // The app: any process of the pod (not ztunnel's mark) connecting out.
    let app = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c"])
            .arg("import socket; socket.create_connection(('192.0.2.1', 80), 5).close()")
            .output()
            .unwrap()
    });
    let (conn, peer) = listener.accept().unwrap();
    assert!(peer.ip().to_string() == "10.244.1.5", "from {peer}");
    let orig = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::OriginalDst).unwrap();
    assert_eq!(
        std::net::Ipv4Addr::from(u32::from_be(orig.sin_addr.s_addr)).to_string(),
        "192.0.2.1"
    );
    drop(conn);
    let o = app.join().unwrap();
    assert!(o.status.success(), "the app's connect: {}", show(&o));
}

fn del_tells_ztunnel_and_empties_the_probe_set() {
    let mut n = Node::new("del");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "{}", show(&o));
    assert!(n.probe_set().contains("10.244.1.5"));
    let del = std::thread::scope(|s| {
        let plugin = s.spawn(|| n.plugin("DEL", "mesh", "cart", &pod_ns.path()));
        let (req, _) = next_request(&z);
        z.ack("");
        match req {
            RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
            other => panic!("ztunnel got {other:?}, not a del"),
        }
        plugin.join().unwrap()
    });
    assert!(ok(&del), "DEL: {}", show(&del));
    assert!(!n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
}

fn del_with_the_agent_down_still_succeeds() {
    let mut n = Node::new("deldown");
    let pod_ns = Netns::new("pod");
    n.start();
    let mut conf = n.plugin_conf();
    conf["kubernetes"]["ambient-agent"] = json!(n.path("run/nobody.sock").display().to_string());
    let o = n.plugin_with("DEL", "mesh", "cart", &pod_ns.path(), &conf);
    assert!(ok(&o), "{}", show(&o));
}

fn raw_request(path: &Path, bytes: &[u8]) -> Option<Value> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).ok()?;
    let _ = send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = recv(s.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    serde_json::from_slice(&buf[..n]).ok()
}

fn socket_garbage_and_oversized_requests_are_answered_no() {
    let mut n = Node::new("garbage");
    n.start();
    for bytes in [
        b"not json".to_vec(),
        br#"{"verb":"add"}"#.to_vec(),
        br#"{"verb":"ping","extra":1}"#.to_vec(),
        vec![b' '; 100 << 10],
    ] {
        let reply = raw_request(&n.agent_socket(), &bytes).expect("a reply");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let ping = raw_request(&n.agent_socket(), br#"{"verb":"ping"}"#).unwrap();
    assert!(ping["error"].is_null(), "{ping}");
}

fn socket_silent_clients_do_not_hold_up_an_add() {
    let mut n = Node::new("silent");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let silent: Vec<std::os::unix::net::UnixStream> = (0..40)
        .filter_map(|_| {
            use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
            let fd = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .ok()?;
            connect(fd.as_raw_fd(), &UnixAddr::new(&n.agent_socket()).ok()?).ok()?;
            Some(std::os::unix::net::UnixStream::from(fd))
        })
        .collect();
    assert!(
        silent.len() >= 16,
        "only {} silent clients connected",
        silent.len()
    );
    let start = Instant::now();
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "{}", show(&o));
    // Each silent client is closed at the request deadline (2 s); the ADD waits for at most
    // a slot, not for all of them one after the other.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "ADD took {:?}",
        start.elapsed()
    );
    drop(silent);
}

fn socket_a_non_root_client_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut n = Node::new("nonroot");
    n.start();
    let sock = n.agent_socket();
    let mode = std::fs::metadata(&sock).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the agent's socket is root's only");
    // Opened up as a careless host path could be: the agent's peer check still refuses.
    for d in [n.dir.path().to_path_buf(), n.path("run")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let python = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\ns.connect({:?})\ntry:\n s.send(b'{{\"verb\":\"ping\"}}')\nexcept BrokenPipeError:\n pass\nprint(s.recv(4096).decode())",
        sock.display().to_string()
    );
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &python,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("only root"), "{}", show(&o));
}

fn start_installs_the_node_probe_rules() {
    let mut n = Node::new("start");
    n.start();
    let o =
        n.ns.run("nft", &["list", "table", "inet", "istio-ambient-nat"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("istio-inpod-probes-v4"),
        "{text}"
    );
    assert!(text.contains("169.254.7.127"), "{text}");
}

/// Enrols `shop/cart` (labelled ambient) in a fresh pod namespace; returns the node, the
/// pod's namespace and the stand-in ztunnel.
fn enrolled(tag: &str) -> (Node, Netns, Ztunnel) {
    enrolled_in(tag, "mesh", json!({}))
}

/// Enrols `shop/cart` by its own label, in a namespace that is not ambient.
fn enrolled_by_its_label(tag: &str) -> (Node, Netns, Ztunnel) {
    enrolled_in(tag, "shop", json!({"istio.io/dataplane-mode": "ambient"}))
}

/// Enrols pod `cart` of namespace `ns` (a new, unlabelled one unless the node has it),
/// labelled `labels`, through the plugin's ADD, acked by the stand-in.
fn enrolled_in(tag: &str, ns: &str, labels: Value) -> (Node, Netns, Ztunnel) {
    let mut n = Node::new(tag);
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod(ns, "cart", labels, json!({})));
    if ns != "mesh" && ns != "plain" {
        n.api.add_namespace(ns, json!({}));
    }
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (o, _, _) = add_with_ztunnel(&n, &z, ns, "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD: {}", show(&o));
    (n, pod_ns, z)
}

fn drift_pod_rules_flushed_are_put_back() {
    let (n, pod_ns, _z) = enrolled("driftpod");
    let o = pod_ns.run("nft", &["flush", "ruleset"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !ok(&ambient_check(&pod_ns.path())),
        "flushed rules still check"
    );
    let start = Instant::now();
    while !ok(&ambient_check(&pod_ns.path())) {
        assert!(start.elapsed() < LONG, "rules not put back: {}", n.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(n.log().contains("put back"), "{}", n.log());
    // The passes that found the rules in place said nothing.
    assert!(
        !n.log().contains("exactly the requested ones"),
        "{}",
        n.log()
    );
}

/// A sandbox re-created under an enrolled pod while no ADD reached the agent: the pod's
/// processes now run in another namespace (holding its address). The drift pass sees it
/// (one pass over /proc), and enrols the pod again there: rules in the new namespace and
/// ztunnel's Add with it.
fn drift_a_namespace_changed_under_a_pod_is_enrolled_again() {
    if support::podproc::in_a_pid_namespace(
        "drift::a_namespace_changed_under_a_pod_is_enrolled_again",
    ) {
        return;
    }
    let (n, old_ns, z) = enrolled("moved");
    n.api.modify_pod("mesh/cart", running);
    let old = support::podproc::pod_process(&old_ns, POD_UID);
    // The sandbox is re-created: its processes end, the new ones run in a new namespace.
    let new_ns = Netns::new("pod");
    drop(old);
    let _new = support::podproc::pod_process(&new_ns, POD_UID);
    let (req, fd) = take(&z, &n);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not the pod's Add: {}", n.log()),
    }
    assert_eq!(
        fd_inode(fd.expect("the Add carries the new namespace").as_raw_fd()),
        inode(Path::new(&new_ns.path())),
        "ztunnel got another namespace than the new one"
    );
    let check = ambient_check(&new_ns.path());
    assert!(ok(&check), "the new namespace's rules: {}", show(&check));
    assert!(n.log().contains("enrolled again there"), "{}", n.log());
}

/// A running sidecar pod whose rules the plugin's ADD wrote: the drift pass finds them in
/// place pass after pass (no repair: the check and the ADD agree on the settings), and puts
/// them back once they are flushed (Istio's sidecar rules, as the ambient pods' are).
fn drift_a_sidecar_pods_flushed_rules_are_put_back() {
    if support::podproc::in_a_pid_namespace("drift::a_sidecar_pods_flushed_rules_are_put_back") {
        return;
    }
    let mut n = Node::new("sidecar");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(healthy_sidecar_pod("web", POD_UID));
    n.start();
    let o = n.plugin("ADD", "plain", "web", &pod_ns.path());
    assert!(ok(&o), "the sidecar pod's ADD: {}", show(&o));
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    let tables =
        || String::from_utf8_lossy(&pod_ns.run("nft", &["list", "tables"]).stdout).into_owned();
    assert!(tables().contains("istio-proxy-nat"), "{}", tables());
    let passes = |n: &Node| n.log().matches("drift pass:").count();
    let before = passes(&n);
    wait_until("three drift passes", &n, || passes(&n) >= before + 3);
    assert!(
        !n.log().contains("interception rules were gone"),
        "the ADD's rules were repaired: {}",
        n.log()
    );
    let o = pod_ns.run("nft", &["flush", "ruleset"]);
    assert!(ok(&o), "{}", show(&o));
    wait_until("the sidecar's rules put back", &n, || {
        tables().contains("istio-proxy-nat")
    });
    assert!(
        n.log().contains(
            "drift: sidecar pod plain/web's interception rules were gone or changed; put back"
        ),
        "{}",
        n.log()
    );
}

fn drift_node_rules_flushed_are_put_back_with_the_members() {
    let (n, _pod_ns, _z) = enrolled("driftnode");
    let o = n.ns.run("nft", &["flush", "ruleset"]);
    assert!(o.status.success(), "{}", show(&o));
    let start = Instant::now();
    while !n.probe_set().contains("10.244.1.5") {
        assert!(
            start.elapsed() < LONG,
            "probe set not put back: {}",
            n.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules =
        n.ns.run("nft", &["list", "table", "inet", "istio-ambient-nat"]);
    assert!(String::from_utf8_lossy(&rules.stdout).contains("169.254.7.127"));
}

fn ready_says_the_agent_answers() {
    let mut n = Node::new("ready");
    n.start();
    let d = n.dir.path().display().to_string();
    let ready = |extra: &[&str]| {
        let mut c = Command::new(support::bin());
        c.args(["cni-ready", "--ambient-enabled"])
            .args(["--cni-bin-dir", &format!("{d}/bin")])
            .args(["--cni-conf-dir", &format!("{d}/net")])
            .args(["--host-cni-conf-dir", &format!("{d}/net")])
            .args(["--service-account-dir", &format!("{d}/sa")])
            .args(["--exclude-namespaces", "kube-system"])
            .args(["--node-name", "node-1"])
            .args(extra);
        support::clear_our_env(&mut c);
        c.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", n.api.port.to_string())
            .env("NATIVE_NFTABLES", "true")
            .output()
            .unwrap()
    };
    let here = format!("{d}/run");
    let o = ready(&["--cni-agent-run-dir", &here]);
    assert!(ok(&o), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("node agent answers"),
        "{}",
        show(&o)
    );
    // An agent that does not answer (its socket moved away): not ready, and it says why.
    let aside = n.path("run/aside.sock");
    std::fs::rename(n.agent_socket(), &aside).unwrap();
    let o = ready(&["--cni-agent-run-dir", &here]);
    std::fs::rename(&aside, n.agent_socket()).unwrap();
    assert!(!ok(&o), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("node agent"),
        "{}",
        show(&o)
    );
}

/// The pod running with its address, as the API has it once the ADD returned.
fn running(pod: &mut Value) {
    pod["status"] =
        json!({"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]});
}

/// Waits for the stand-in's next request, acks it, and returns it (with its fd).
fn take(z: &Ztunnel, n: &Node) -> (RequestPayload, Option<std::fs::File>) {
    wait_until("a request to ztunnel", n, || !z.idle());
    let (req, fd) = next_request(z);
    z.ack("");
    (req, fd)
}

fn wait_until(what: &str, n: &Node, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LONG,
            "timed out waiting for {what}: {}",
            n.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restart_the_first_snapshot_names_the_running_pod() {
    if support::podproc::in_a_pid_namespace("restart::the_first_snapshot_names_the_running_pod") {
        return;
    }
    let (mut n, pod_ns, z) = enrolled("restart");
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    n.api.modify_pod("mesh/cart", running);
    drop(z);
    // The agent dies without a word (SIGKILL at the end of a grace period), and comes back.
    let mut old = n.installer.take().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    n.start();
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    let (req, fd) = take(&z, &n);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("the first snapshot began with {other:?}: {}", n.log()),
    }
    assert_eq!(
        fd_inode(fd.expect("the snapshot's add has the fd").as_raw_fd()),
        inode(Path::new(&pod_ns.path()))
    );
    match next_request(&z).0 {
        RequestPayload::SnapshotSent(_) => z.ack(""),
        other => panic!("after the pod: {other:?}"),
    }
    assert!(ok(&ambient_check(&pod_ns.path())));
}

fn watch_a_pod_labelled_later_is_enrolled() {
    if support::podproc::in_a_pid_namespace("watch::a_pod_labelled_later_is_enrolled") {
        return;
    }
    let mut n = Node::new("later");
    let pod_ns = Netns::new("pod");
    let mut p = pod("plain", "cart", json!({}), json!({}));
    running(&mut p);
    n.api.add_pod(p);
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    n.start();
    let z = Ztunnel::ready(&n.zds());
    assert!(!ok(&ambient_check(&pod_ns.path())));
    n.api.modify_pod("plain/cart", |p| {
        p["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
    });
    let (req, fd) = take(&z, &n);
    assert!(matches!(req, RequestPayload::Add(_)), "{req:?}");
    assert_eq!(
        fd_inode(fd.unwrap().as_raw_fd()),
        inode(Path::new(&pod_ns.path()))
    );
    wait_until("the enabled annotation", &n, || {
        n.api.redirections().last() == Some(&Some("enabled".to_string()))
    });
    assert!(ok(&ambient_check(&pod_ns.path())));
    assert!(n.probe_set().contains("10.244.1.5"));
}

fn watch_a_namespace_labelled_later_enrols_its_pods() {
    if support::podproc::in_a_pid_namespace("watch::a_namespace_labelled_later_enrols_its_pods") {
        return;
    }
    let mut n = Node::new("nslater");
    let pod_ns = Netns::new("pod");
    let mut p = pod("plain", "cart", json!({}), json!({}));
    running(&mut p);
    n.api.add_pod(p);
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    n.start();
    let z = Ztunnel::ready(&n.zds());
    n.api
        .add_namespace("plain", json!({"istio.io/dataplane-mode": "ambient"}));
    let (req, _) = take(&z, &n);
    assert!(matches!(req, RequestPayload::Add(_)), "{req:?}");
    wait_until("the rules", &n, || ok(&ambient_check(&pod_ns.path())));
}

fn watch_an_unlabelled_pod_is_removed() {
    let (n, pod_ns, z) = enrolled_by_its_label("unlabel");
    n.api.modify_pod("shop/cart", |p| {
        running(p);
        p["metadata"]["labels"] = json!({});
    });
    match take(&z, &n).0 {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not a del: {}", n.log()),
    }
    wait_until("the annotation removed", &n, || {
        n.api.pod("shop/cart")["metadata"]["annotations"]
            .get("ambient.istio.io/redirection")
            .is_none()
    });
    assert!(
        !ok(&ambient_check(&pod_ns.path())),
        "rules left in an unlabelled pod"
    );
    assert!(!n.probe_set().contains("10.244.1.5"));
    // The whole walk: pending (rules in), enabled (ztunnel acked), removed.
    assert_eq!(
        n.api.redirections(),
        vec![
            Some("pending".to_string()),
            Some("enabled".to_string()),
            None
        ]
    );
}

fn watch_a_deleted_pod_is_let_go() {
    let (n, _pod_ns, z) = enrolled("deleted");
    n.api.delete_pod("mesh/cart");
    match take(&z, &n).0 {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not a del: {}", n.log()),
    }
    wait_until("the probe set emptied", &n, || {
        !n.probe_set().contains("10.244.1.5")
    });
}

fn restart_ztunnel_reconnecting_gets_the_pod_in_its_snapshot() {
    let (n, pod_ns, z) = enrolled("zrestart");
    drop(z);
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    let (req, fd) = take(&z, &n);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("the new connection's snapshot began with {other:?}"),
    }
    assert_eq!(
        fd_inode(fd.unwrap().as_raw_fd()),
        inode(Path::new(&pod_ns.path()))
    );
    assert!(matches!(take(&z, &n).0, RequestPayload::SnapshotSent(_)));
}

fn watch_an_expired_watch_relists() {
    let (n, _pod_ns, z) = enrolled("expired");
    n.api.expire_pod_watches(3);
    wait_until("three expired watches", &n, || n.api.expired() >= 3);
    n.api.delete_pod("mesh/cart");
    match take(&z, &n).0 {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not a del: {}", n.log()),
    }
    assert!(n.log().contains("expired"), "{}", n.log());
}

/// A pod marked `enabled` whose namespace the start-up scan cannot find (no process of it
/// runs: its sandbox is being re-created) is in ztunnel's first snapshot as a `keep`, as
/// istio-cni sends it, so ztunnel does not cut a proxy that may still serve it; once the pod
/// is deleted ztunnel gets its Del, and the next snapshot no longer names it.
fn restart_a_pod_marked_enabled_but_not_found_is_kept_until_it_goes() {
    if support::podproc::in_a_pid_namespace(
        "restart::a_pod_marked_enabled_but_not_found_is_kept_until_it_goes",
    ) {
        return;
    }
    let mut n = Node::new("kept");
    let mut p = pod(
        "mesh",
        "cart",
        json!({}),
        json!({"ambient.istio.io/redirection": "enabled"}),
    );
    running(&mut p);
    n.api.add_pod(p);
    n.start();
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    assert_eq!(
        z.snapshot(),
        vec![(POD_UID.to_string(), false)],
        "the first snapshot: {}",
        n.log()
    );
    n.api.delete_pod("mesh/cart");
    match take(&z, &n).0 {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("after the kept pod was deleted: {other:?}"),
    }
    let again = Ztunnel::connect(&n.zds());
    again.hello();
    assert_eq!(again.snapshot(), vec![], "a later snapshot: {}", n.log());
}

fn restart_a_pod_unlabelled_while_no_agent_ran_loses_its_rules() {
    if support::podproc::in_a_pid_namespace(
        "restart::a_pod_unlabelled_while_no_agent_ran_loses_its_rules",
    ) {
        return;
    }
    let (mut n, pod_ns, z) = enrolled_by_its_label("stranded");
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    let mut old = n.installer.take().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    drop(z);
    n.api.modify_pod("shop/cart", |p| {
        running(p);
        p["metadata"]["labels"] = json!({});
    });
    n.start();
    wait_until("the annotation removed", &n, || {
        n.api.pod("shop/cart")["metadata"]["annotations"]
            .get("ambient.istio.io/redirection")
            .is_none()
    });
    assert!(
        !ok(&ambient_check(&pod_ns.path())),
        "rules left: {}",
        n.log()
    );
    assert!(!n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
}

/// The agent's metrics text, from the address it logged.
fn metrics(n: &Node) -> String {
    let log = n.log();
    let url = log
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address logged: {log}"))
        .to_string();
    let o = n.ns.run(
        "/usr/bin/python3",
        &["-c", &format!("import urllib.request; print(urllib.request.urlopen({url:?}, timeout=5).read().decode())")],
    );
    assert!(o.status.success(), "{}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn metrics_count_what_the_agent_did() {
    let mut n = Node::new("metrics");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start_with(&["--metrics-address", "127.0.0.1:0"]);
    let z = Ztunnel::ready(&n.zds());
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "{}", show(&o));
    let text = metrics(&n);
    for line in [
        "meshtables_agent_enrolled_pods 1",
        "meshtables_agent_ztunnel_connections 1",
        "meshtables_agent_enrolments_total 1",
        "meshtables_agent_repairs_total{cause=\"pod_rules\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
}

/// A pod injected for CNI (istio-validation, not istio-init) that never got its rules: it
/// started while the plugin was not in the chain. As the API shows such a pod: Pending (its
/// init container keeps failing with 126, backing off) with its sandbox's address.
fn broken_sidecar_pod(name: &str, uid: &str) -> Value {
    let mut p = pod(
        "plain",
        name,
        json!({}),
        json!({"sidecar.istio.io/status": "{}"}),
    );
    p["metadata"]["uid"] = json!(uid);
    p["spec"]["initContainers"] = json!([{"name": "istio-validation"}]);
    p["spec"]["containers"] = json!([{"name": name, "image": "web:1"},
        {"name": "istio-proxy", "args": ["proxy", "sidecar"]}]);
    p["status"] = json!({"phase": "Pending", "podIPs": [{"ip": "10.244.1.5"}],
        "initContainerStatuses": [{"name": "istio-validation", "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}}]});
    p
}

/// A sidecar pod whose istio-validation failed once but passed on its next try (upstream's
/// `workingPodDiedPreviously`): it is Running and must never be touched.
fn healthy_sidecar_pod(name: &str, uid: &str) -> Value {
    let mut p = broken_sidecar_pod(name, uid);
    p["status"]["phase"] = json!("Running");
    p["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    p
}

/// The in-place repair with the installer's extra settings `extra`: the broken pod gets its
/// rules, and is neither deleted nor labelled.
fn repaired_in_place(trial: &'static str, extra: &'static [&'static str]) -> impl FnOnce() {
    move || {
        if support::podproc::in_a_pid_namespace(trial) {
            return;
        }
        let mut n = Node::new("repair");
        let pod_ns = Netns::new("pod");
        n.api.add_pod(broken_sidecar_pod("web", POD_UID));
        let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
        let tables =
            || String::from_utf8_lossy(&pod_ns.run("nft", &["list", "tables"]).stdout).into_owned();
        assert!(!tables().contains("istio-proxy-nat"));
        n.start_with(extra);
        wait_until("the sidecar's rules", &n, || {
            tables().contains("istio-proxy-nat")
        });
        assert!(n.log().contains("istio-validation passes"), "{}", n.log());
        assert_eq!(n.api.deletes(), vec![], "{}", n.log());
        assert_eq!(n.api.label_patches(), vec![], "{}", n.log());
    }
}

/// Delete mode: the broken pod is deleted once, with its uid and version as preconditions;
/// the healthy one never; a broken pod that appears later is deleted too (so the first's
/// own MODIFIED event, now terminating, was seen before and left alone).
fn repair_delete_mode_deletes_exactly_the_broken_pod() {
    let mut n = Node::new("rdel");
    n.api.add_pod(broken_sidecar_pod("web", "uid-web"));
    n.api.add_pod(healthy_sidecar_pod("api", "uid-api"));
    let rv = n.api.pod("plain/web")["metadata"]["resourceVersion"].clone();
    n.start_with(&["--repair-delete-pods"]);
    wait_until("web deleted", &n, || !n.api.deletes().is_empty());
    assert!(
        n.api.pod("plain/web")["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        n.log()
    );
    n.api.add_pod(broken_sidecar_pod("late", "uid-late"));
    wait_until("late deleted", &n, || n.api.deletes().len() >= 2);
    let deletes = n.api.deletes();
    let pods: Vec<&str> = deletes.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(pods, ["plain/web", "plain/late"], "{}", n.log());
    assert_eq!(
        deletes[0].1["preconditions"],
        json!({"uid": "uid-web", "resourceVersion": rv}),
        "{}",
        n.log()
    );
    assert_eq!(n.api.label_patches(), vec![], "{}", n.log());
}

/// Delete mode: a broken pod already being deleted gets no DELETE, while one beside it does
/// (both are in the start-up list, which is synced whole before the agent is ready).
fn repair_a_pod_already_being_deleted_is_left_alone() {
    let mut n = Node::new("rgone");
    let mut going = broken_sidecar_pod("going", "uid-going");
    going["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
    n.api.add_pod(going);
    n.api.add_pod(broken_sidecar_pod("web", "uid-web"));
    n.start_with(&["--repair-delete-pods"]);
    wait_until("web deleted", &n, || !n.api.deletes().is_empty());
    let pods: Vec<String> = n.api.deletes().into_iter().map(|(p, _)| p).collect();
    assert_eq!(pods, ["plain/web"], "{}", n.log());
}

/// Label mode: the broken pod is labelled once through pods/status (with its uid), the
/// healthy one never, and a broken pod that appears later is labelled too (so the first's
/// own MODIFIED event, labelled, was seen before and skipped).
fn repair_label_mode_labels_the_broken_pod_once() {
    let mut n = Node::new("rlabel");
    n.api.add_pod(broken_sidecar_pod("web", "uid-web"));
    n.api.add_pod(healthy_sidecar_pod("api", "uid-api"));
    n.start_with(&[
        "--repair-label-pods",
        "--repair-broken-pod-label-key",
        "example.com/broken",
    ]);
    wait_until("web labelled", &n, || {
        n.api.pod("plain/web")["metadata"]["labels"]["example.com/broken"] == "true"
    });
    n.api.add_pod(broken_sidecar_pod("late", "uid-late"));
    wait_until("late labelled", &n, || n.api.label_patches().len() >= 2);
    assert_eq!(
        n.api.label_patches(),
        [
            (
                "plain/web".to_string(),
                json!({"example.com/broken": "true"})
            ),
            (
                "plain/late".to_string(),
                json!({"example.com/broken": "true"})
            )
        ],
        "{}",
        n.log()
    );
    let (content_type, _, body) = n.api.patches().remove(0);
    assert_eq!(content_type, "application/merge-patch+json");
    assert_eq!(body["metadata"]["uid"], "uid-web");
    assert!(
        n.api.pod("plain/api")["metadata"]["labels"]
            .get("example.com/broken")
            .is_none()
    );
    assert_eq!(n.api.deletes(), vec![], "{}", n.log());
}

/// A deleted pod is counted: `meshtables_agent_repairs_total{cause="sidecar_deleted"}`.
fn repair_a_deleted_pod_is_counted() {
    let mut n = Node::new("rcount");
    n.api.add_pod(broken_sidecar_pod("web", "uid-web"));
    n.start_with(&["--repair-delete-pods", "--metrics-address", "127.0.0.1:0"]);
    wait_until("web deleted", &n, || !n.api.deletes().is_empty());
    let text = metrics(&n);
    let line = "meshtables_agent_repairs_total{cause=\"sidecar_deleted\"} 1";
    assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
}

/// A label key the API server would refuse stops the installer at start (exit 2), the error
/// naming the flag, the value and what a label key is; no pod is touched.
fn repair_a_bad_label_key_is_refused_at_start() {
    let mut n = Node::new("rbadkey");
    n.api.add_pod(broken_sidecar_pod("web", "uid-web"));
    n.extra = [
        "--repair-label-pods",
        "--repair-broken-pod-label-key",
        "bad key/",
    ]
    .map(String::from)
    .to_vec();
    let mut child = n.installer_command("installer.log").spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < LONG, "still running: {}", n.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = n.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--repair-broken-pod-label-key"), "{log}");
    assert!(
        log.contains("\"bad key/\"") || log.contains("bad key/"),
        "{log}"
    );
    assert!(log.contains("is not a label key"), "{log}");
    assert_eq!(n.api.label_patches(), vec![]);
}

// ---------------------------------------------------------------------------------------
// Hostile: what a buggy runtime or primary plugin, a misbehaving ztunnel or a race would do.

/// An ADD whose `CNI_NETNS` is `netns` (not a namespace) is refused within `within`, naming
/// the path, and the agent still enrols a real pod afterwards.
fn hostile_not_a_netns(make: fn(&Path) -> PathBuf) -> impl FnOnce() {
    move || {
        let mut n = Node::new("notns");
        let pod_ns = Netns::new("pod");
        n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
        n.start();
        let z = Ztunnel::ready(&n.zds());
        let bad = make(n.dir.path());
        let start = Instant::now();
        let o = n.plugin("ADD", "mesh", "cart", &bad.display().to_string());
        let took = start.elapsed();
        assert!(!ok(&o), "{}", show(&o));
        assert!(took < Duration::from_secs(5), "took {took:?}: {}", show(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(&bad.display().to_string()) && text.contains("not a namespace"),
            "{}",
            show(&o)
        );
        assert_eq!(cni_code(&o), Some(100), "{}", show(&o));
        assert!(n.api.patches().is_empty());
        assert!(z.idle(), "ztunnel was sent something");
        let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
        assert!(ok(&o), "ADD after: {}", show(&o));
    }
}

fn fifo(dir: &Path) -> PathBuf {
    let p = dir.join("netns-fifo");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

fn regular_file(dir: &Path) -> PathBuf {
    let p = dir.join("netns-file");
    std::fs::write(&p, b"not a namespace").unwrap();
    p
}

/// An ADD of a pod whose annotation `key` is `value` fails naming the annotation, and
/// leaves the pod's namespace without any rule, ztunnel untold and the pod unannotated.
fn hostile_bad_annotation(key: &'static str, value: &'static str) -> impl FnOnce() {
    move || {
        let mut n = Node::new("badann");
        let pod_ns = Netns::new("pod");
        n.api
            .add_pod(pod("mesh", "cart", json!({}), json!({ key: value })));
        n.start();
        let z = Ztunnel::ready(&n.zds());
        let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
        assert!(!ok(&o), "{}", show(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(key), "the error names no {key}: {}", show(&o));
        assert!(n.api.patches().is_empty(), "{:?}", n.api.patches());
        assert!(z.idle(), "ztunnel was sent something");
        let rules = pod_ns.run("nft", &["list", "ruleset"]);
        assert!(
            String::from_utf8_lossy(&rules.stdout).trim().is_empty(),
            "rules half-written: {}",
            String::from_utf8_lossy(&rules.stdout)
        );
    }
}

/// The agent's open fds (the installer execs itself in `ip netns exec`'s place).
/// The installer's fds, but for the node's CNI configuration files: those come and go on
/// the installer's own clock (it holds a displaced conflist open while it watches for a late
/// in-place write), which made the count move under load. What an ADD could leak (sockets,
/// namespaces) is all counted.
fn fds_of(n: &Node) -> usize {
    let pid = n.installer.as_ref().unwrap().id();
    let conf = n.path("net");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| !t.starts_with(&conf)))
        .count()
}

fn hostile_fifty_failing_adds_leak_no_fd() {
    let mut n = Node::new("fdleak");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    // The first failing ADD leaves the pod pending (its namespace held): counted after it.
    let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
    assert_eq!(cni_code(&o), Some(100), "{}", show(&o));
    let before = fds_of(&n);
    let start = Instant::now();
    for _ in 0..50 {
        let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
        assert_eq!(cni_code(&o), Some(100), "{}", show(&o));
    }
    let took = start.elapsed();
    let after = fds_of(&n);
    eprintln!("50 failing ADDs (no ztunnel): {took:?}; agent fds {before} -> {after}");
    assert_eq!(before, after, "fds leaked");
}

/// A pod `mesh/NAME` with its own uid.
fn other_pod(name: &str, uid: &str) -> Value {
    let mut p = pod("mesh", name, json!({}), json!({}));
    p["metadata"]["uid"] = json!(uid);
    p
}

fn sigterm_and_wait(mut c: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LONG, "the installer did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hostile_a_second_agent_takes_over_and_the_first_leaving_breaks_nothing() {
    let (mut n, _pod_ns, _z) = enrolled("two");
    let second = n.start_second();
    let (agent, zds) = (inode(&n.agent_socket()), inode(&n.zds()));
    let z2 = Ztunnel::connect(&n.zds());
    z2.hello();
    // The second agent's scan cannot find the first's pod (the API gives it no address):
    // marked enabled, it is kept, not dropped.
    assert_eq!(
        z2.snapshot(),
        vec![(POD_UID.to_string(), false)],
        "{}",
        n.log()
    );
    // The old DaemonSet pod leaves (SIGTERM, its grace period).
    sigterm_and_wait(n.installer.replace(second).unwrap());
    assert_eq!(
        inode(&n.agent_socket()),
        agent,
        "the first agent's exit took the socket"
    );
    assert_eq!(
        inode(&n.zds()),
        zds,
        "the first agent's exit took ztunnel's socket"
    );
    let conflist = std::fs::read_to_string(n.path("net/10-test.conflist")).unwrap();
    assert!(conflist.contains("ambient-agent"), "{conflist}");
    let pod2 = Netns::new("pod2");
    n.api
        .add_pod(other_pod("cart2", "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d"));
    let (o, req, _) = add_with_ztunnel(&n, &z2, "mesh", "cart2", &pod2.path(), "");
    assert!(ok(&o), "ADD through the second agent: {}", show(&o));
    assert!(matches!(req, RequestPayload::Add(_)), "{req:?}");
    assert!(ok(&ambient_check(&pod2.path())));
}

fn hostile_another_pods_namespace_is_refused() {
    let (n, pod_ns, z) = enrolled("otherns");
    n.api
        .add_pod(other_pod("cart2", "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d"));
    // The runtime names cart's namespace for cart2, whose primary plugin gave 10.244.1.6.
    let mut conf = n.plugin_conf();
    conf["prevResult"]["ips"] = json!([{"address": "10.244.1.6/24", "interface": 0}]);
    let o = n.plugin_with("ADD", "mesh", "cart2", &pod_ns.path(), &conf);
    assert!(!ok(&o), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("holds none of the pod's addresses 10.244.1.6"),
        "{}",
        show(&o)
    );
    assert!(z.idle(), "ztunnel was sent something");
    // Only cart's own enrolment: pending, enabled.
    assert_eq!(
        n.api.redirections(),
        vec![Some("pending".to_string()), Some("enabled".to_string())]
    );
    assert!(!n.probe_set().contains("10.244.1.6"), "{}", n.probe_set());
}

fn hostile_a_410_storm_is_backed_off() {
    let mut n = Node::new("storm");
    n.start();
    wait_until("the start-up reconcile", &n, || {
        raw_request(&n.agent_socket(), br#"{"verb":"ping"}"#).is_some_and(|r| r["error"].is_null())
    });
    n.api.fault(|s| s.expire_watches = true);
    let before = n.api.pod_lists();
    std::thread::sleep(Duration::from_secs(3));
    let lists = n.api.pod_lists() - before;
    eprintln!("pod lists in 3 s of 410s: {lists}");
    assert!(lists <= 5, "{lists} relists in 3 s: no backoff on 410");
    assert!(!n.log().contains("panicked"), "{}", n.log());
}

fn hostile_garbage_lists_keep_the_agent_unready_and_adds_untouched() {
    let mut n = Node::new("garblist");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.api.fault(|s| s.garbage_lists = true);
    n.start_unready();
    let _z = Ztunnel::connect(&n.zds());
    _z.hello();
    wait_until("a failed start-up list", &n, || {
        n.log().contains("start-up reconcile")
    });
    let ping = raw_request(&n.agent_socket(), br#"{"verb":"ping"}"#).unwrap();
    assert!(
        ping["error"]
            .as_str()
            .is_some_and(|e| e.contains("starting")),
        "{ping}"
    );
    let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
    assert!(!ok(&o), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("starting"),
        "{}",
        show(&o)
    );
    assert!(n.api.patches().is_empty(), "{:?}", n.api.patches());
    assert!(
        !ok(&ambient_check(&pod_ns.path())),
        "rules written before the reconcile"
    );
    // The API server heals: the agent becomes ready and the ADD goes through.
    n.api.fault(|s| s.garbage_lists = false);
    wait_until("readiness", &n, || {
        raw_request(&n.agent_socket(), br#"{"verb":"ping"}"#).is_some_and(|r| r["error"].is_null())
    });
    assert!(!n.log().contains("panicked"), "{}", n.log());
}

fn hostile_a_relist_racing_an_add_keeps_the_pod() {
    let mut n = Node::new("relist");
    let pod_ns = Netns::new("pod");
    n.start();
    let z = Ztunnel::ready(&n.zds());
    // The next relist answers slowly, with the pods as they were when it was asked.
    n.api.fault(|s| {
        s.list_delay = Duration::from_secs(2);
        s.expire_watches = true;
    });
    let before = n.api.pod_lists();
    wait_until("a relist", &n, || n.api.pod_lists() > before);
    n.api.fault(|s| s.expire_watches = false);
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD: {}", show(&o));
    // The relist's answer (without the pod, created after it was asked) arrives now.
    std::thread::sleep(Duration::from_secs(3));
    n.api.fault(|s| s.list_delay = Duration::ZERO);
    assert!(
        z.idle(),
        "ztunnel was told something after the ADD: {:?}",
        next_request(&z).0
    );
    assert!(n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
}

/// The agent's `VmRSS` in kB.
fn rss_of(n: &Node) -> u64 {
    let pid = n.installer.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The longest drift pass the log reports for `pods` pods, in ms.
fn drift_pass_ms(n: &Node, pods: usize) -> Option<u64> {
    let want = format!("drift pass: {pods} pod(s) and the node checked in ");
    n.log()
        .lines()
        .filter_map(|l| l.split_once(&want).map(|(_, r)| r.to_string()))
        .filter_map(|r| r.trim_end_matches(" ms").parse().ok())
        .max()
}

/// Enrols `count` pods `mesh/pNNN`, each in a namespace of its own with an address of its
/// own, ztunnel acking; returns the namespaces and the slowest ADD.
fn enrol_many(n: &Node, z: &Ztunnel, count: usize) -> (Vec<Netns>, Duration) {
    let mut namespaces = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..count {
        let ip = format!("10.244.{}.{}", 2 + i / 250, 1 + i % 250);
        let ns = Netns::new("many");
        let o = sh(&format!("ip -n {} addr add {ip}/32 dev eth0", ns.name));
        assert!(o.status.success(), "{}", show(&o));
        let name = format!("p{i:03}");
        n.api.add_pod(other_pod(
            &name,
            &format!("00000000-0000-4000-8000-{i:012}"),
        ));
        let mut conf = n.plugin_conf();
        conf["prevResult"]["ips"] = json!([{"address": format!("{ip}/32"), "interface": 0}]);
        let t = Instant::now();
        let o = std::thread::scope(|s| {
            let plugin = s.spawn(|| n.plugin_with("ADD", "mesh", &name, &ns.path(), &conf));
            // ztunnel's request, unless the ADD failed before it.
            while z.idle() && !plugin.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !z.idle() {
                let _ = next_request(z);
                z.ack("");
            }
            plugin.join().unwrap()
        });
        slowest = slowest.max(t.elapsed());
        assert!(ok(&o), "ADD {i}: {}", show(&o));
        namespaces.push(ns);
    }
    (namespaces, slowest)
}

fn hostile_two_hundred_pods_enrol_and_one_drift_pass_keeps_up() {
    const PODS: usize = 200;
    let mut n = Node::new("many");
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (fds0, rss0) = (fds_of(&n), rss_of(&n));
    let start = Instant::now();
    let (_namespaces, slowest) = enrol_many(&n, &z, PODS);
    let took = start.elapsed();
    let (fds1, rss1) = (fds_of(&n), rss_of(&n));

    wait_until("a drift pass over every pod", &n, || {
        drift_pass_ms(&n, PODS).is_some()
    });
    let pass = drift_pass_ms(&n, PODS).unwrap();
    eprintln!(
        "{PODS} ADDs: {took:?} ({:?} each, the plugin's process included; slowest {slowest:?}); agent fds {fds0} -> {fds1}; RSS {rss0} kB -> {rss1} kB; one drift pass over {PODS} pods: {pass} ms",
        took / PODS as u32
    );
    // Two fds per pod (the agent's and the ZDS server's duplicate for snapshots), nothing else.
    assert!(fds1 - fds0 <= 2 * PODS + 16, "fds {fds0} -> {fds1}");
    assert!(
        pass < 10_000,
        "a drift pass over {PODS} pods took {pass} ms"
    );
}

fn hostile_a_low_soft_fd_limit_does_not_cap_the_pods() {
    const PODS: usize = 30;
    let mut n = Node::new("nofile");
    // A container's soft limit as containerd 2 leaves it, scaled down: 48, hard 4096.
    let c = n.installer_command_under("installer.log", &["prlimit", "--nofile=48:4096"]);
    n.installer = Some(n.spawn_installer(c));
    wait_until("readiness", &n, || {
        raw_request(&n.agent_socket(), br#"{"verb":"ping"}"#).is_some_and(|r| r["error"].is_null())
    });
    let z = Ztunnel::ready(&n.zds());
    let (_namespaces, _) = enrol_many(&n, &z, PODS);
    assert!(fds_of(&n) > 48, "{} fds", fds_of(&n));
}

fn hostile_a_pod_unlabelled_during_a_drift_pass_is_not_put_back() {
    let mut n = Node::new("driftrace");
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (namespaces, _) = enrol_many(&n, &z, 2);
    // The pass stalls on p000 (its namespace's lock held, as a run in it would), after it
    // listed p001.
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &namespaces[0].name, "python3", "-c"])
        .arg("import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0meshtables/netns-lock')\nprint('held', flush=True)\ntime.sleep(60)")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 5];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    n.api.modify_pod("mesh/p001", |p| {
        p["metadata"]["labels"] = json!({"istio.io/dataplane-mode": "none"});
    });
    match take(&z, &n).0 {
        RequestPayload::Del(_) => {}
        other => panic!("ztunnel got {other:?}, not the unlabelled pod's del"),
    }
    wait_until("p001's rules cleaned", &n, || {
        !ok(&ambient_check(&namespaces[1].path()))
    });
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The stalled pass goes on, and two more run.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !ok(&ambient_check(&namespaces[1].path())),
        "the drift pass put an unlabelled pod's rules back: {}",
        n.log()
    );
}

fn hostile_adds_queued_behind_a_slow_ztunnel_get_the_agents_answer() {
    const PODS: usize = 6;
    let mut n = Node::new("slowack");
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let mut namespaces = Vec::new();
    let mut confs = Vec::new();
    for i in 0..PODS {
        let ip = format!("10.244.3.{}", 1 + i);
        let ns = Netns::new("slow");
        let o = sh(&format!("ip -n {} addr add {ip}/32 dev eth0", ns.name));
        assert!(o.status.success(), "{}", show(&o));
        n.api.add_pod(other_pod(
            &format!("p{i:03}"),
            &format!("00000000-0000-4000-8000-{i:012}"),
        ));
        let mut conf = n.plugin_conf();
        conf["prevResult"]["ips"] = json!([{"address": format!("{ip}/32"), "interface": 0}]);
        confs.push(conf);
        namespaces.push(ns);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let outputs: Vec<Output> = std::thread::scope(|s| {
        // ztunnel acks every add, two seconds late.
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if z.idle() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let _ = next_request(&z);
                std::thread::sleep(Duration::from_secs(2));
                z.ack("");
            }
        });
        let plugins: Vec<_> = (0..PODS)
            .map(|i| {
                let (n, ns, conf) = (&n, &namespaces[i], &confs[i]);
                s.spawn(move || n.plugin_with("ADD", "mesh", &format!("p{i:03}"), &ns.path(), conf))
            })
            .collect();
        let outputs = plugins.into_iter().map(|p| p.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        outputs
    });
    // Let anything the agent still had queued finish.
    std::thread::sleep(Duration::from_secs(3));
    let mut succeeded = 0;
    for (i, o) in outputs.iter().enumerate() {
        let key = format!("mesh/p{i:03}");
        let mark =
            n.api.pod(&key)["metadata"]["annotations"]["ambient.istio.io/redirection"].clone();
        if ok(o) {
            succeeded += 1;
            assert_eq!(mark, json!("enabled"), "{key}");
            continue;
        }
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("did not answer"),
            "{key}: the plugin gave up before the agent answered: {}",
            show(o)
        );
        assert_ne!(
            mark,
            json!("enabled"),
            "{key} is enabled though its ADD failed: {}",
            show(o)
        );
    }
    assert!(succeeded >= 1, "no ADD went through");
}

fn hostile_watches_closed_at_once_are_backed_off() {
    let mut n = Node::new("shortwatch");
    n.start();
    n.api.fault(|s| s.close_watches = true);
    let before = n.api.pod_watches();
    std::thread::sleep(Duration::from_secs(3));
    let watches = n.api.pod_watches() - before;
    eprintln!("pod watches in 3 s of watches closed at once: {watches}");
    assert!(
        watches <= 6,
        "{watches} watches in 3 s: no backoff on very short watches"
    );
}

/// A process in `ns` holding the namespace's lock (as any of a pod's own processes can)
/// until it is killed.
fn hold_netns_lock(ns: &Netns) -> Child {
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c"])
        .arg("import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0meshtables/netns-lock')\nprint('held', flush=True)\ntime.sleep(120)")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 5];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    holder
}

fn hostile_a_pod_holding_its_lock_does_not_hold_up_adds() {
    let mut n = Node::new("podlock");
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let (namespaces, _) = enrol_many(&n, &z, 1);
    let mut holder = hold_netns_lock(&namespaces[0]);
    let held = Instant::now();
    // A pass blocks on p000's lock within a second (the check interval) and gives up a
    // second later (the agent's lock wait, not the CLI's 30 s); a repair would then wait as
    // long again, holding up every enrolment.
    wait_until("a drift pass giving up on p000's lock", &n, || {
        n.log().contains("drift: pod mesh/p000 not checked")
    });
    let gave_up = held.elapsed();
    assert!(
        gave_up < Duration::from_secs(5),
        "the pass gave up after {gave_up:?}"
    );
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    let t = Instant::now();
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "ADD: {}", show(&o));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ADD took {:?}",
        t.elapsed()
    );
    println!(
        "a pass gave up on a held lock after {gave_up:?}; an ADD then took {:?}",
        t.elapsed()
    );
    // Once the pod lets go, the next pass checks it again.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = namespaces[0].run("nft", &["flush", "ruleset"]);
    assert!(ok(&o), "{}", show(&o));
    wait_until("p000's rules put back once its lock is free", &n, || {
        ok(&ambient_check(&namespaces[0].path()))
    });
}

fn hostile_sigkill_mid_add_then_the_retried_add_enrols() {
    let mut n = Node::new("killadd");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(pod("mesh", "cart", json!({}), json!({})));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let pid = nix::unistd::Pid::from_raw(n.installer.as_ref().unwrap().id() as i32);
    let first = std::thread::scope(|s| {
        let plugin = s.spawn(|| n.plugin("ADD", "mesh", "cart", &pod_ns.path()));
        // ztunnel has the Add (the rules are in); the agent dies before its ack.
        let _ = next_request(&z);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        plugin.join().unwrap()
    });
    n.installer.take().unwrap().wait().unwrap();
    assert!(!ok(&first), "{}", show(&first));
    assert_eq!(cni_code(&first), Some(11), "{}", show(&first));
    // The rules were in before ztunnel got the Add: `pending` says so to whoever comes next.
    assert_eq!(n.api.redirections(), vec![Some("pending".to_string())]);
    drop(z);
    n.start();
    // The new agent knows nothing of the pod (its ADD never finished): its first snapshot
    // is empty, so ztunnel lets the half-added pod go; the runtime's retry enrols it.
    let z = Ztunnel::ready(&n.zds());
    let (o, req, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &pod_ns.path(), "");
    assert!(ok(&o), "the retried ADD: {}", show(&o));
    assert!(matches!(req, RequestPayload::Add(_)), "{req:?}");
    assert_eq!(
        n.api.redirections().last(),
        Some(&Some("enabled".to_string()))
    );
    assert!(ok(&ambient_check(&pod_ns.path())));
}

/// A DEL of another sandbox of the enrolled pod (`other_id`: its container id; `other_ns`:
/// in a namespace of its own) leaves the pod enrolled: ztunnel untold, its address in the
/// probe set; the enrolled sandbox's own DEL still lets it go.
fn hostile_a_del_of_another_sandbox(other_id: &'static str, other_ns: bool) -> impl FnOnce() {
    move || {
        let (n, pod_ns, z) = enrolled("oldsandbox");
        let old = Netns::new("old");
        let netns = if other_ns { old.path() } else { pod_ns.path() };
        let o = n.plugin_of(other_id, "DEL", "mesh", "cart", &netns, &n.plugin_conf());
        assert!(ok(&o), "{}", show(&o));
        std::thread::sleep(Duration::from_millis(500));
        assert!(z.idle(), "ztunnel was told: {:?}", next_request(&z).0);
        assert!(n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
        let del = std::thread::scope(|s| {
            let plugin = s.spawn(|| n.plugin("DEL", "mesh", "cart", &pod_ns.path()));
            let (req, _) = next_request(&z);
            z.ack("");
            assert!(matches!(req, RequestPayload::Del(_)), "{req:?}");
            plugin.join().unwrap()
        });
        assert!(ok(&del), "{}", show(&del));
        assert!(!n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
    }
}

fn hostile_an_add_of_a_new_sandbox_drops_the_old_ones_address() {
    let (n, _pod_ns, z) = enrolled("resandbox");
    // The pod's sandbox is recreated with another address before the old one's DEL.
    let new = Netns::new("new");
    let o = sh(&format!(
        "ip -n {} addr add 10.244.1.9/32 dev eth0",
        new.name
    ));
    assert!(o.status.success(), "{}", show(&o));
    let mut conf = n.plugin_conf();
    conf["prevResult"]["ips"] = json!([{"address": "10.244.1.9/32", "interface": 0}]);
    let o = std::thread::scope(|s| {
        let plugin = s.spawn(|| n.plugin_of("beef02", "ADD", "mesh", "cart", &new.path(), &conf));
        let _ = next_request(&z);
        z.ack("");
        plugin.join().unwrap()
    });
    assert!(ok(&o), "{}", show(&o));
    let set = n.probe_set();
    assert!(set.contains("10.244.1.9"), "{set}");
    assert!(
        !set.contains("10.244.1.5,") && !set.contains("10.244.1.5 "),
        "the old sandbox's address stayed: {set}"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile, second pass: the repair modes, the agent's lock wait, stale news from the API.

/// The plugin's DEL of `mesh/cart`'s sandbox `c0ffee` in `netns`, its ztunnel Del acked.
fn del_acked(n: &Node, z: &Ztunnel, netns: &str) -> RequestPayload {
    std::thread::scope(|s| {
        let plugin = s.spawn(|| n.plugin("DEL", "mesh", "cart", netns));
        let (req, _) = next_request(z);
        z.ack("");
        let o = plugin.join().unwrap();
        assert!(ok(&o), "DEL: {}", show(&o));
        req
    })
}

/// Waits until the agent has synced pod `plain/NAME` (its debug line), added to the API after
/// whatever the trial wants seen: the watch is in order, so all before it was synced too.
fn synced_past(n: &Node, name: &str) {
    let mut p = pod("plain", name, json!({}), json!({}));
    p["metadata"]["uid"] = json!(format!("uid-{name}"));
    n.api.add_pod(p);
    let line = format!("pod plain/{name}: ambient false");
    wait_until(&format!("the agent syncing plain/{name}"), n, || {
        n.log().contains(&line)
    });
}

/// A StatefulSet's pod is deleted and created again under its name (another uid) while the
/// agent's watch lags: the new pod's ADD enrols it before the watch brings the old pod's
/// last events. Those are old news: the new pod stays enrolled (ztunnel is not told to let it
/// go, its address stays in the probe set), and the old pod's uid is what ztunnel let go.
fn hostile2_a_lagging_watchs_news_of_the_old_pod_keeps_the_new_one() {
    let (n, old_ns, z) = enrolled("stale");
    n.api.fault(|s| s.hold_watches = true);
    // The old pod terminates: its deletion starts, the runtime's DEL, then it is gone.
    n.api.modify_pod("mesh/cart", |p| {
        running(p);
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
    });
    match del_acked(&n, &z, &old_ns.path()) {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not the old pod's del"),
    }
    n.api.delete_pod("mesh/cart");
    // Its successor, under the same name, gets a new sandbox and is enrolled by its ADD.
    let new_ns = Netns::new("new");
    n.api
        .add_pod(other_pod("cart", "7c9e6679-7425-40de-944b-e07fc1f90ae7"));
    let o = std::thread::scope(|s| {
        let plugin = s.spawn(|| {
            n.plugin_of(
                "beef02",
                "ADD",
                "mesh",
                "cart",
                &new_ns.path(),
                &n.plugin_conf(),
            )
        });
        let (req, _) = next_request(&z);
        z.ack("");
        assert!(
            matches!(&req, RequestPayload::Add(AddWorkload { uid, .. }) if uid == "7c9e6679-7425-40de-944b-e07fc1f90ae7"),
            "{req:?}"
        );
        plugin.join().unwrap()
    });
    assert!(ok(&o), "the new pod's ADD: {}", show(&o));
    // The watch catches up: the old pod's MODIFIED and DELETED, then the new one's ADDED.
    n.api.fault(|s| s.hold_watches = false);
    synced_past(&n, "marker");
    assert!(
        z.idle(),
        "ztunnel was told {:?} on the old pod's news: {}",
        next_request(&z).0,
        n.log()
    );
    assert!(n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
    assert!(ok(&ambient_check(&new_ns.path())));
}

/// An API server that gives a pod a uid that is not one (not Kubernetes' UUID): the ADD is
/// refused naming it, before anything is written (no rules, no annotation, nothing to
/// ztunnel), since the node's probe set would refuse it after all of that.
fn hostile2_a_pod_uid_that_is_not_one_is_refused_before_anything_is_written() {
    let mut n = Node::new("baduid");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(other_pod("cart", "uid-of-cart"));
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let o = n.plugin("ADD", "mesh", "cart", &pod_ns.path());
    assert!(!ok(&o), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("uid-of-cart"),
        "{}",
        show(&o)
    );
    assert!(z.idle(), "ztunnel was told {:?}", next_request(&z).0);
    assert_eq!(n.api.redirections(), Vec::<Option<String>>::new());
    assert!(
        !ok(&ambient_check(&pod_ns.path())),
        "rules written for a refused pod"
    );
    let o = pod_ns.run("nft", &["list", "tables"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "{}",
        show(&o)
    );
}

/// A running pod that holds its namespace's lock and changes often (its owner patching it,
/// as a tenant may): labelled ambient, each change is an enrolment the lock makes fail. Those
/// tries must not hold up another pod's ADD behind them: it is enrolled at once (within
/// 0.6 s, less than one wait for hog's lock), however many changes are queued.
fn hostile2_a_pod_holding_its_lock_and_changing_does_not_starve_adds() {
    if support::podproc::in_a_pid_namespace(
        "hostile2::a_pod_holding_its_lock_and_changing_does_not_starve_adds",
    ) {
        return;
    }
    let mut n = Node::new("hog");
    let hog_ns = Netns::new("hog");
    let mut p = pod("plain", "hog", json!({}), json!({}));
    running(&mut p);
    n.api.add_pod(p);
    let _proc = support::podproc::pod_process(&hog_ns, POD_UID);
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let mut holder = hold_netns_lock(&hog_ns);
    n.api.modify_pod("plain/hog", |p| {
        p["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
    });
    wait_until("an enrolment of hog failing on its lock", &n, || {
        n.log().contains("network namespace's lock")
    });
    for i in 0..8 {
        n.api.modify_pod("plain/hog", |p| {
            p["metadata"]["annotations"]["tick"] = json!(i.to_string());
        });
    }
    // The agent is at those changes: the next tries meet the lock.
    wait_until("a second try of hog failing on its lock", &n, || {
        n.log().matches("network namespace's lock").count() >= 2
    });
    let cart_ns = Netns::new("cart");
    n.api
        .add_pod(other_pod("cart", "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d"));
    let t = Instant::now();
    let (o, _, _) = add_with_ztunnel(&n, &z, "mesh", "cart", &cart_ns.path(), "");
    let took = t.elapsed();
    println!("an ADD behind a lock-holding pod's 8 changes took {took:?}");
    assert!(ok(&o), "ADD after {took:?}: {}", show(&o));
    // Not one of hog's lock waits (a second each) in front of it, nor most of one.
    assert!(took < Duration::from_millis(600), "ADD took {took:?}");
    holder.kill().unwrap();
    holder.wait().unwrap();
}

// ---------------------------------------------------------------------------------------
// Under podman's CNI backend: a real runtime runs the chain the installer wrote into.

/// The reference plugins podman runs before ours.
fn podman_plugins() -> Option<String> {
    ["bridge", "host-local", "loopback"]
        .iter()
        .find(|p| !Path::new("/usr/lib/cni").join(p).exists())
        .map(|p| format!("needs /usr/lib/cni/{p} (containernetworking-plugins)"))
}

/// Podman's view of a node: its CNI backend reads the node's conf dir (a bridge + host-local
/// network `test`, which the installer chains us into) and runs plugins from the node's bin
/// dir (where the installer copies `meshtables-cni`) and the reference plugins' dir. Its
/// storage is the node's own, its containers are a busybox root filesystem (nothing is
/// pulled), and it runs in the node's namespace (`nsenter --net`, not `ip netns exec`,
/// which would mount a fresh /sys and hide the cgroup hierarchies podman places containers
/// in).
struct Podman {
    netns: String,
    dir: PathBuf,
    /// The pods it runs, (name, uid): uids of the trial's own, as the pods' cgroups are.
    pods: Vec<(&'static str, String)>,
}

impl Podman {
    /// Podman for node `n`, to run pods `web-1` and `web-2` with uids of `series` (one per
    /// trial: trials run at once, and a pod's cgroup is named by its uid).
    fn new(n: &Node, series: u8) -> Podman {
        let dir = n.dir.path().to_path_buf();
        let d = dir.display();
        for sub in ["podroot", "podrun", "ipam", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy(
            support::which("busybox").unwrap(),
            dir.join("rootfs/bin/busybox"),
        )
        .unwrap();
        // (busybox's wget crashes in a root without /etc; its nc does not.)
        for applet in ["sh", "sleep", "nc"] {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{d}/bin\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{d}/net\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("net/10-test.conflist"),
            format!(
                r#"{{"cniVersion": "1.0.0", "name": "test", "plugins": [
  {{"type": "bridge", "bridge": "mtbr0", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{d}/ipam", "ranges": [[{{"subnet": "10.98.0.0/24"}}]],
             "routes": [{{"dst": "0.0.0.0/0"}}]}}}}
]}}
"#
            ),
        )
        .unwrap();
        let pods = (1..=2)
            .map(|i| {
                let name = if i == 1 { "web-1" } else { "web-2" };
                (
                    name,
                    format!("6f1c2b9e-0d4a-4c51-9d3e-5a7b8c9d0e{series}{i}"),
                )
            })
            .collect();
        Podman {
            netns: n.ns.path(),
            dir,
            pods,
        }
    }

    /// `podman ARGS...` in the node's namespace; the runtime's `CNI_ARGS` carry the pod's
    /// namespace (podman's CNI backend sends only `K8S_POD_NAME`, the container's name, and
    /// appends what its own environment's `CNI_ARGS` says, as a kubelet's would send it).
    fn run(&self, pod_ns: &str, args: &[&str]) -> Output {
        let d = self.dir.display().to_string();
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .args(["podman", "--root", &format!("{d}/podroot")])
            .args(["--runroot", &format!("{d}/podrun")])
            .args(args)
            .env("CONTAINERS_CONF", format!("{d}/containers.conf"))
            .env("CNI_ARGS", format!("K8S_POD_NAMESPACE={pod_ns}"))
            .output()
            .unwrap()
    }

    /// Starts container `name` (pod `pod_ns/name` of `uid`, in the cgroup a kubelet gives
    /// that pod, so the /proc scan finds it) running `sleep`.
    fn start(&self, pod_ns: &str, name: &str, uid: &str) -> Output {
        let parent = format!("/kubepods/besteffort/pod{uid}");
        let rootfs = self.dir.join("rootfs").display().to_string();
        self.run(
            pod_ns,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "test",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--cgroup-parent",
                &parent,
                "--rootfs",
                &rootfs,
                "sleep",
                "1000",
            ],
        )
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        let o = self.run("", &["inspect", name, "--format", format]);
        assert!(o.status.success(), "podman inspect {name}: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The container's network namespace (podman's bind mount of it).
    fn netns_of(&self, name: &str) -> String {
        self.inspect(name, "{{.NetworkSettings.SandboxKey}}")
    }

    fn ip_of(&self, name: &str) -> String {
        // A network other than podman's default keeps its address under its name.
        self.inspect(
            name,
            r#"{{(index .NetworkSettings.Networks "test").IPAddress}}"#,
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run("", &["rm", "-af", "-t", "0"]);
        // podman removes a container's cgroup (when its cleanup process has run), not the
        // pod's group it was placed under, nor the `conmon` group it makes there.
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for (_, uid) in &self.pods {
                remove_cgroup(&h.path().join(format!("kubepods/besteffort/pod{uid}")));
            }
        }
        let d = self.dir.display();
        let _ = Command::new("umount")
            .args(["-R", &format!("{d}/podroot"), &format!("{d}/podrun")])
            .output();
    }
}

/// Removes cgroup `g` and the groups under it, each once its processes are gone (5 s at most).
fn remove_cgroup(g: &Path) {
    for sub in std::fs::read_dir(g).into_iter().flatten().flatten() {
        if sub.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&sub.path());
        }
    }
    let t = Instant::now();
    while g.exists() && std::fs::remove_dir(g).is_err() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pod of namespace `mesh` (ambient by its namespace's label) named `name` with `uid`.
fn mesh_pod(name: &str, uid: &str) -> Value {
    let mut p = pod("mesh", name, json!({}), json!({}));
    p["metadata"]["uid"] = json!(uid);
    p
}

/// Starts the node (agent and stand-in ztunnel) and podman's pods (`series`), each
/// `podman run` answered by the stand-in: returns them with the fd ztunnel got per pod.
fn podman_enrolled(tag: &str, series: u8) -> (Node, Podman, Ztunnel, Vec<std::fs::File>) {
    let mut n = Node::new(tag);
    let podman = Podman::new(&n, series);
    for (name, uid) in &podman.pods {
        n.api.add_pod(mesh_pod(name, uid));
    }
    n.start();
    let z = Ztunnel::ready(&n.zds());
    let mut fds = Vec::new();
    for (name, uid) in &podman.pods {
        let (o, req, fd) = std::thread::scope(|s| {
            let run = s.spawn(|| podman.start("mesh", name, uid));
            let (req, fd) = next_request(&z);
            z.ack("");
            (run.join().unwrap(), req, fd)
        });
        assert!(ok(&o), "podman run {name}: {}\n{}", show(&o), n.log());
        match req {
            RequestPayload::Add(AddWorkload {
                uid: got,
                workload_info,
            }) => {
                assert_eq!(&got, uid);
                let w = workload_info.unwrap();
                assert_eq!((w.name.as_str(), w.namespace.as_str()), (*name, "mesh"));
            }
            other => panic!("ztunnel got {other:?} for {name}, not an add"),
        }
        let fd = fd.expect("an add carries the pod's netns fd");
        assert_eq!(
            fd_inode(fd.as_raw_fd()),
            inode(Path::new(&podman.netns_of(name))),
            "ztunnel got another namespace than {name}'s"
        );
        fds.push(fd);
    }
    (n, podman, z, fds)
}

/// Containers podman starts on the ambient network are enrolled before `podman run`
/// returns: rules in (`ambient check` in each container's namespace), ztunnel given the
/// container's own namespace, the pod annotated `enabled`; a container's outbound TCP
/// reaches the listener the stand-in opens in the namespace it was given; `podman rm` is a
/// Del to ztunnel.
fn podman_containers_on_an_ambient_network_are_enrolled_and_redirected() {
    let (n, podman, z, mut fds) = podman_enrolled("podman", 1);
    for (name, _) in &podman.pods {
        let check = ambient_check(&podman.netns_of(name));
        assert!(ok(&check), "ambient check in {name}: {}", show(&check));
        let ip = podman.ip_of(name);
        assert!(n.probe_set().contains(&ip), "{ip}: {}", n.probe_set());
        assert_eq!(
            n.api.pod(&format!("mesh/{name}"))["metadata"]["annotations"]["ambient.istio.io/redirection"],
            "enabled"
        );
    }
    // The stand-in's outbound listener, in the namespace it was given for web-1.
    let fd = fds.remove(0);
    let listener = std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        std::net::TcpListener::bind("0.0.0.0:15001").unwrap()
    })
    .join()
    .unwrap();
    let app = std::thread::scope(|s| {
        let app = s.spawn(|| {
            podman.run(
                "mesh",
                &["exec", "web-1", "nc", "-w", "5", "192.0.2.1", "80"],
            )
        });
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let (conn, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < LONG => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!(
                    "no connection reached the stand-in's listener ({e}): {}",
                    show(&app.join().unwrap())
                ),
            }
        };
        assert_eq!(peer.ip().to_string(), podman.ip_of("web-1"), "from {peer}");
        let orig =
            nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::OriginalDst).unwrap();
        assert_eq!(
            std::net::Ipv4Addr::from(u32::from_be(orig.sin_addr.s_addr)).to_string(),
            "192.0.2.1"
        );
        drop(conn);
        app.join().unwrap()
    });
    // nc saw its connection closed without an answer: that it connected is what counts.
    assert!(
        !String::from_utf8_lossy(&app.stderr).contains("can't connect"),
        "{}",
        show(&app)
    );
    // The runtime's DEL of web-2: ztunnel is told.
    let (rm, req) = std::thread::scope(|s| {
        let rm = s.spawn(|| podman.run("mesh", &["rm", "-f", "-t", "0", "web-2"]));
        let (req, _) = next_request(&z);
        z.ack("");
        (rm.join().unwrap(), req)
    });
    assert!(ok(&rm), "podman rm: {}", show(&rm));
    match req {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, podman.pods[1].1),
        other => panic!("ztunnel got {other:?} at podman rm, not a del"),
    }
}

/// The agent killed (SIGKILL, as at the end of a grace period) with podman's containers
/// running, then started again: its start-up scan finds each container's namespace through
/// its cgroup and its address, and ztunnel's first snapshot adds each pod exactly once with
/// its own namespace; a later drift pass (it puts back web-1's flushed rules) adds nothing.
fn podman_a_restarted_agent_re_enrols_running_containers_without_duplicate_adds() {
    if support::podproc::in_a_pid_namespace(
        "podman::a_restarted_agent_re_enrols_running_containers_without_duplicate_adds",
    ) {
        return;
    }
    let (mut n, podman, z, _fds) = podman_enrolled("podrestart", 2);
    for (name, _) in &podman.pods {
        let ip = podman.ip_of(name);
        n.api.modify_pod(&format!("mesh/{name}"), |p| {
            p["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
        });
    }
    drop(z);
    let mut old = n.installer.take().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    n.start();
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    let mut added = Vec::new();
    loop {
        match next_request(&z) {
            (RequestPayload::Add(AddWorkload { uid, .. }), fd) => {
                let (name, _) = podman
                    .pods
                    .iter()
                    .find(|(_, u)| *u == uid)
                    .unwrap_or_else(|| panic!("an add of {uid}, not one of ours"));
                let fd = fd.expect("the snapshot's add has the fd");
                assert_eq!(
                    fd_inode(fd.as_raw_fd()),
                    inode(Path::new(&podman.netns_of(name))),
                    "{name}: another namespace"
                );
                added.push(uid);
            }
            (RequestPayload::SnapshotSent(_), _) => break,
            (other, _) => panic!("{other:?} in the snapshot: {}", n.log()),
        }
        z.ack("");
    }
    z.ack("");
    added.sort();
    let mut want: Vec<String> = podman.pods.iter().map(|(_, u)| u.clone()).collect();
    want.sort();
    assert_eq!(added, want, "one add per running pod: {}", n.log());
    let web1 = podman.netns_of("web-1");
    let o = sh(&format!("nsenter --net={web1} nft flush ruleset"));
    assert!(ok(&o), "{}", show(&o));
    wait_until("the drift pass putting web-1's rules back", &n, || {
        ok(&ambient_check(&web1))
    });
    assert!(z.idle(), "ztunnel got more after the snapshot: {}", n.log());
}

fn cgroups() -> Option<String> {
    support::podproc::writable_hierarchy()
        .is_none()
        .then(|| "needs a writable cgroup hierarchy under /sys/fs/cgroup".into())
}

/// A running sidecar pod of a namespace the plugin's entry excludes (`--exclude-namespaces`):
/// its ADD wrote nothing, so the rules "the plugin's ADD would have written" are none. The
/// drift pass must not write Istio's interception rules into it pass after pass.
fn hostile3_a_sidecar_pod_of_an_excluded_namespace_gets_no_rules() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::a_sidecar_pod_of_an_excluded_namespace_gets_no_rules",
    ) {
        return;
    }
    let mut n = Node::new("sidecarex");
    let pod_ns = Netns::new("pod");
    let mut p = healthy_sidecar_pod("web", POD_UID);
    p["metadata"]["namespace"] = json!("kube-system");
    n.api.add_pod(p);
    n.start();
    let o = n.plugin("ADD", "kube-system", "web", &pod_ns.path());
    assert!(ok(&o), "the excluded pod's ADD: {}", show(&o));
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    let tables =
        || String::from_utf8_lossy(&pod_ns.run("nft", &["list", "tables"]).stdout).into_owned();
    assert!(
        !tables().contains("istio-proxy-nat"),
        "the ADD wrote rules: {}",
        tables()
    );
    let passes = |n: &Node| n.log().matches("drift pass:").count();
    let before = passes(&n);
    wait_until("three drift passes", &n, || passes(&n) >= before + 3);
    assert!(
        !tables().contains("istio-proxy-nat"),
        "the drift pass wrote rules into a pod of an excluded namespace: {}",
        n.log()
    );
}

/// A sandbox re-created under an enrolled pod while no ADD reached the agent gets a new
/// address from the primary plugin (host-local hands out the next one), which the API then
/// shows. The drift pass must find the new namespace by the pod's addresses now, not by the
/// ones it was enrolled with (which no namespace holds any more), and enrol it again there.
fn hostile3_a_sandbox_re_created_with_a_new_address_is_enrolled_again() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::a_sandbox_re_created_with_a_new_address_is_enrolled_again",
    ) {
        return;
    }
    let (n, old_ns, z) = enrolled("movedip");
    n.api.modify_pod("mesh/cart", running);
    let old = support::podproc::pod_process(&old_ns, POD_UID);
    let new_ns = Netns::new("pod");
    for args in [
        &["addr", "del", "10.244.1.5/24", "dev", "eth0"][..],
        &["addr", "add", "10.244.1.9/24", "dev", "eth0"][..],
    ] {
        let o = new_ns.run("ip", args);
        assert!(ok(&o), "{}", show(&o));
    }
    n.api.modify_pod("mesh/cart", |p| {
        p["status"] =
            json!({"phase": "Running", "podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}]});
    });
    drop(old);
    let _new = support::podproc::pod_process(&new_ns, POD_UID);
    let (req, fd) = take(&z, &n);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not the pod's Add: {}", n.log()),
    }
    assert_eq!(
        fd_inode(fd.expect("the Add carries the new namespace").as_raw_fd()),
        inode(Path::new(&new_ns.path())),
        "ztunnel got another namespace than the new one"
    );
    wait_until("the new address in the probe set", &n, || {
        n.probe_set().contains("10.244.1.9")
    });
    assert!(
        !n.probe_set().contains("10.244.1.5"),
        "the old address stayed in the probe set: {}",
        n.probe_set()
    );
}

/// A running sidecar pod whose ADD wrote its rules with the pod's own interception
/// annotations: the drift pass checks them with the same settings, so it finds them in place
/// pass after pass and never rewrites them (a check that disagreed with the ADD would fight
/// it every ten seconds).
fn hostile3_sidecar_rules_with(trial: &'static str, annotations: Value) -> impl FnOnce() {
    move || {
        if support::podproc::in_a_pid_namespace(trial) {
            return;
        }
        let mut n = Node::new("sidecarann");
        let pod_ns = Netns::new("pod");
        let mut p = healthy_sidecar_pod("web", POD_UID);
        for (k, v) in annotations.as_object().unwrap() {
            p["metadata"]["annotations"][k] = v.clone();
        }
        n.api.add_pod(p);
        n.start();
        let o = n.plugin("ADD", "plain", "web", &pod_ns.path());
        assert!(ok(&o), "the sidecar pod's ADD: {}", show(&o));
        let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
        let before = pod_ns.netfilter();
        let passes = |n: &Node| n.log().matches("drift pass:").count();
        let start = passes(&n);
        wait_until("three drift passes", &n, || passes(&n) >= start + 3);
        assert!(
            !n.log().contains("interception rules were gone"),
            "the drift pass rewrote the ADD's rules: {}",
            n.log()
        );
        assert_eq!(pod_ns.netfilter(), before, "{}", n.log());
    }
}

/// A kept pod (`restart::a_pod_marked_enabled_but_not_found_is_kept_until_it_goes`) deleted
/// and created again under its name (a StatefulSet's) while the pods' watch was gone: the
/// relist after the 410 has the name, but as another uid. The kept uid is gone from the API,
/// so ztunnel must get its Del, as for a kept pod the relist no longer names at all.
fn hostile3_a_kept_pod_recreated_while_the_watch_expired_is_let_go() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::a_kept_pod_recreated_while_the_watch_expired_is_let_go",
    ) {
        return;
    }
    let mut n = Node::new("keptnew");
    let mut p = pod(
        "mesh",
        "cart",
        json!({}),
        json!({"ambient.istio.io/redirection": "enabled"}),
    );
    running(&mut p);
    n.api.add_pod(p);
    n.start();
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    assert_eq!(
        z.snapshot(),
        vec![(POD_UID.to_string(), false)],
        "the first snapshot: {}",
        n.log()
    );
    n.api.fault(|st| st.hold_watches = true);
    n.api.delete_pod("mesh/cart");
    let mut new = pod("mesh", "cart", json!({}), json!({}));
    new["metadata"]["uid"] = json!("2b4e28ba-2fa1-11d2-883f-0016d3cca427");
    n.api.add_pod(new);
    n.api.expire_pod_watches(1);
    wait_until("the pods' watch expired", &n, || n.api.expired() >= 1);
    n.api.fault(|st| st.hold_watches = false);
    match take(&z, &n).0 {
        RequestPayload::Del(DelWorkload { uid }) => assert_eq!(uid, POD_UID),
        other => panic!("after the kept pod was replaced: {other:?}: {}", n.log()),
    }
    let again = Ztunnel::connect(&n.zds());
    again.hello();
    assert_eq!(again.snapshot(), vec![], "a later snapshot: {}", n.log());
}

/// A running sidecar pod whose ADD ran under an earlier entry of the plugin, with iptables
/// (before `NATIVE_NFTABLES` was turned on, or upstream's istio-cni before the switch): its
/// rules are in place, in the other backend. The drift pass must not stack a second set of
/// interception rules (nftables) on them in every such pod of the node.
fn hostile3_a_sidecar_pods_iptables_rules_get_no_nftables_copy() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::a_sidecar_pods_iptables_rules_get_no_nftables_copy",
    ) {
        return;
    }
    let mut n = Node::new("sidecaript");
    let pod_ns = Netns::new("pod");
    n.api.add_pod(healthy_sidecar_pod("web", POD_UID));
    n.start();
    let mut earlier = n.plugin_conf();
    earlier.as_object_mut().unwrap().remove("native-nftables");
    let o = n.plugin_with("ADD", "plain", "web", &pod_ns.path(), &earlier);
    assert!(ok(&o), "the sidecar pod's ADD with iptables: {}", show(&o));
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    let saved = || {
        let o = pod_ns.run("iptables-save", &[]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(saved().contains("ISTIO_OUTPUT"), "{}", saved());
    let passes = |n: &Node| n.log().matches("drift pass:").count();
    let before = passes(&n);
    wait_until("three drift passes", &n, || passes(&n) >= before + 3);
    let tables =
        String::from_utf8_lossy(&pod_ns.run("nft", &["list", "tables"]).stdout).into_owned();
    assert!(
        !tables.contains("istio-proxy-nat"),
        "nftables interception rules stacked on the pod's iptables ones: {tables}: {}",
        n.log()
    );
}

/// A kept pod whose processes show up later with no ADD and no change of the pod (its sandbox
/// was only being set up when the start-up scan looked): the doc's "or a later scan: then an
/// Add". The drift pass, which looks at /proc anyway, finds it and enrols it; otherwise it
/// stayed a `keep` (no rules checked, no probe-set members) until the pod happened to change.
fn hostile3_a_kept_pod_whose_processes_show_up_is_enrolled_by_the_drift() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::a_kept_pod_whose_processes_show_up_is_enrolled_by_the_drift",
    ) {
        return;
    }
    let mut n = Node::new("keptfound");
    let pod_ns = Netns::new("pod");
    let mut p = pod(
        "mesh",
        "cart",
        json!({}),
        json!({"ambient.istio.io/redirection": "enabled"}),
    );
    running(&mut p);
    n.api.add_pod(p);
    n.start();
    let z = Ztunnel::connect(&n.zds());
    z.hello();
    assert_eq!(
        z.snapshot(),
        vec![(POD_UID.to_string(), false)],
        "the first snapshot: {}",
        n.log()
    );
    let _proc = support::podproc::pod_process(&pod_ns, POD_UID);
    let (req, fd) = take(&z, &n);
    match req {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not the kept pod's Add: {}", n.log()),
    }
    assert_eq!(
        fd_inode(fd.expect("the Add carries the namespace").as_raw_fd()),
        inode(Path::new(&pod_ns.path())),
        "ztunnel got another namespace than the pod's"
    );
    wait_until("the pod's rules", &n, || ok(&ambient_check(&pod_ns.path())));
}

/// A pod enrolled again by the namespace drift (its sandbox re-created while no ADD reached
/// the agent), then the runtime's late DEL of the old sandbox (its container id, its
/// namespace gone by now: a retried StopPodSandbox, a garbage collection). That DEL is of
/// the sandbox the drift replaced, not of the one enrolled: the pod stays enrolled, ztunnel
/// untold, its address in the probe set.
fn hostile3_the_old_sandboxs_del_after_a_namespace_drift_leaves_the_pod() {
    if support::podproc::in_a_pid_namespace(
        "hostile3::the_old_sandboxs_del_after_a_namespace_drift_leaves_the_pod",
    ) {
        return;
    }
    let (n, old_ns, z) = enrolled("moveddel");
    n.api.modify_pod("mesh/cart", running);
    let old = support::podproc::pod_process(&old_ns, POD_UID);
    let new_ns = Netns::new("pod");
    drop(old);
    let _new = support::podproc::pod_process(&new_ns, POD_UID);
    match take(&z, &n).0 {
        RequestPayload::Add(AddWorkload { uid, .. }) => assert_eq!(uid, POD_UID),
        other => panic!("ztunnel got {other:?}, not the pod's Add: {}", n.log()),
    }
    wait_until("enrolled again", &n, || {
        n.log().contains("enrolled again there")
    });
    let old_path = old_ns.path();
    old_ns.delete();
    let o = n.plugin_of("c0ffee", "DEL", "mesh", "cart", &old_path, &n.plugin_conf());
    assert!(ok(&o), "{}", show(&o));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        z.idle(),
        "ztunnel was told: {:?}: {}",
        next_request(&z).0,
        n.log()
    );
    assert!(n.probe_set().contains("10.244.1.5"), "{}", n.probe_set());
}

fn main() {
    let mut t = Trials::new();
    let needs = root(&["ip", "nft", "setpriv", "python3"]);
    t.add(
        "add::labelled_pod_is_redirected_acked_and_enabled",
        needs,
        add_labelled_pod_is_redirected_acked_and_enabled,
    );
    t.add(
        "add::namespace_label_makes_a_pod_ambient",
        needs,
        add_namespace_label_makes_a_pod_ambient,
    );
    t.add(
        "add::unlabelled_pod_never_reaches_the_agent",
        needs,
        add_not_ambient(json!({}), json!({}), "plain"),
    );
    t.add(
        "add::pod_labelled_none_in_an_ambient_namespace_never_reaches_the_agent",
        needs,
        add_not_ambient(
            json!({"istio.io/dataplane-mode": "none"}),
            json!({}),
            "mesh",
        ),
    );
    t.add(
        "add::excluded_namespace_never_reaches_the_agent",
        needs,
        add_not_ambient(
            json!({"istio.io/dataplane-mode": "ambient"}),
            json!({}),
            "kube-system",
        ),
    );
    t.add(
        "add::without_ztunnel_fails_marks_pending_and_the_snapshot_carries_it",
        needs,
        add_without_ztunnel_fails_marks_pending_and_the_snapshot_carries_it,
    );
    t.add(
        "add::ztunnel_refusal_fails_the_add",
        needs,
        add_ztunnel_refusal_fails_the_add,
    );
    t.add(
        "add::agent_down_is_try_again_later",
        needs,
        add_agent_down_is_try_again_later,
    );
    t.add(
        "add::the_node_namespace_is_refused",
        needs,
        add_the_node_namespace_is_refused,
    );
    t.add(
        "add::traffic_reaches_the_ztunnel_given_the_fd",
        needs,
        add_traffic_reaches_the_ztunnel_given_the_fd,
    );
    t.add(
        "select::a_custom_selector_decides_the_add_and_the_default_label_no_longer_does",
        needs,
        select_a_custom_selector_decides_the_add_and_the_default_label_no_longer_does,
    );
    t.add(
        "del::tells_ztunnel_and_empties_the_probe_set",
        needs,
        del_tells_ztunnel_and_empties_the_probe_set,
    );
    t.add(
        "del::with_the_agent_down_still_succeeds",
        needs,
        del_with_the_agent_down_still_succeeds,
    );
    t.add(
        "socket::garbage_and_oversized_requests_are_answered_no",
        needs,
        socket_garbage_and_oversized_requests_are_answered_no,
    );
    t.add(
        "socket::silent_clients_do_not_hold_up_an_add",
        needs,
        socket_silent_clients_do_not_hold_up_an_add,
    );
    t.add(
        "socket::a_non_root_client_is_refused",
        needs,
        socket_a_non_root_client_is_refused,
    );
    t.add(
        "start::installs_the_node_probe_rules",
        needs,
        start_installs_the_node_probe_rules,
    );
    t.add(
        "drift::pod_rules_flushed_are_put_back",
        needs,
        drift_pod_rules_flushed_are_put_back,
    );
    t.add_if(
        "drift::a_namespace_changed_under_a_pod_is_enrolled_again",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        drift_a_namespace_changed_under_a_pod_is_enrolled_again,
    );
    t.add_if(
        "drift::a_sidecar_pods_flushed_rules_are_put_back",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        drift_a_sidecar_pods_flushed_rules_are_put_back,
    );
    t.add(
        "drift::node_rules_flushed_are_put_back_with_the_members",
        needs,
        drift_node_rules_flushed_are_put_back_with_the_members,
    );
    t.add(
        "start::ready_says_the_agent_answers",
        needs,
        ready_says_the_agent_answers,
    );
    let scan = root(&["ip", "nft", "unshare"]);
    t.add_if(
        "restart::the_first_snapshot_names_the_running_pod",
        scan,
        cgroups,
        restart_the_first_snapshot_names_the_running_pod,
    );
    t.add_if(
        "watch::a_pod_labelled_later_is_enrolled",
        scan,
        cgroups,
        watch_a_pod_labelled_later_is_enrolled,
    );
    t.add_if(
        "watch::a_namespace_labelled_later_enrols_its_pods",
        scan,
        cgroups,
        watch_a_namespace_labelled_later_enrols_its_pods,
    );
    t.add(
        "watch::an_unlabelled_pod_is_removed",
        needs,
        watch_an_unlabelled_pod_is_removed,
    );
    t.add(
        "watch::a_deleted_pod_is_let_go",
        needs,
        watch_a_deleted_pod_is_let_go,
    );
    t.add(
        "restart::ztunnel_reconnecting_gets_the_pod_in_its_snapshot",
        needs,
        restart_ztunnel_reconnecting_gets_the_pod_in_its_snapshot,
    );
    t.add_if(
        "restart::a_pod_marked_enabled_but_not_found_is_kept_until_it_goes",
        scan,
        cgroups,
        restart_a_pod_marked_enabled_but_not_found_is_kept_until_it_goes,
    );
    t.add_if(
        "restart::a_pod_unlabelled_while_no_agent_ran_loses_its_rules",
        scan,
        cgroups,
        restart_a_pod_unlabelled_while_no_agent_ran_loses_its_rules,
    );
    t.add(
        "watch::an_expired_watch_relists",
        needs,
        watch_an_expired_watch_relists,
    );
    t.add(
        "start::metrics_count_what_the_agent_did",
        needs,
        metrics_count_what_the_agent_did,
    );
    t.add_if(
        "repair::a_sidecar_pod_started_without_the_plugin_gets_its_rules",
        scan,
        cgroups,
        repaired_in_place(
            "repair::a_sidecar_pod_started_without_the_plugin_gets_its_rules",
            &[],
        ),
    );
    t.add_if(
        "repair::repair_pods_set_wins_over_delete_pods_as_upstream",
        scan,
        cgroups,
        repaired_in_place(
            "repair::repair_pods_set_wins_over_delete_pods_as_upstream",
            &["--repair-repair-pods", "--repair-delete-pods"],
        ),
    );
    t.add(
        "repair::delete_mode_deletes_exactly_the_broken_pod",
        needs,
        repair_delete_mode_deletes_exactly_the_broken_pod,
    );
    t.add(
        "repair::a_pod_already_being_deleted_is_left_alone",
        needs,
        repair_a_pod_already_being_deleted_is_left_alone,
    );
    t.add(
        "repair::label_mode_labels_the_broken_pod_once",
        needs,
        repair_label_mode_labels_the_broken_pod_once,
    );
    t.add(
        "repair::a_deleted_pod_is_counted",
        needs,
        repair_a_deleted_pod_is_counted,
    );
    t.add(
        "repair::a_bad_label_key_is_refused_at_start",
        needs,
        repair_a_bad_label_key_is_refused_at_start,
    );
    t.add(
        "hostile::a_fifo_netns_is_refused_at_once",
        needs,
        hostile_not_a_netns(fifo),
    );
    t.add(
        "hostile::a_regular_file_netns_is_refused",
        needs,
        hostile_not_a_netns(regular_file),
    );
    t.add(
        "hostile::a_dns_capture_annotation_maybe_fails_naming_it",
        needs,
        hostile_bad_annotation("ambient.istio.io/dns-capture", "maybe"),
    );
    t.add(
        "hostile::an_injected_virtual_interfaces_annotation_fails_naming_it",
        needs,
        hostile_bad_annotation(
            "istio.io/reroute-virtual-interfaces",
            "eth1\" counter accept; flush ruleset #",
        ),
    );
    t.add(
        "hostile::fifty_failing_adds_leak_no_fd",
        needs,
        hostile_fifty_failing_adds_leak_no_fd,
    );
    t.add(
        "hostile::a_second_agent_takes_over_and_the_first_leaving_breaks_nothing",
        needs,
        hostile_a_second_agent_takes_over_and_the_first_leaving_breaks_nothing,
    );
    t.add(
        "hostile::another_pods_namespace_is_refused",
        needs,
        hostile_another_pods_namespace_is_refused,
    );
    t.add(
        "hostile::a_410_storm_is_backed_off",
        needs,
        hostile_a_410_storm_is_backed_off,
    );
    t.add(
        "hostile::garbage_lists_keep_the_agent_unready_and_adds_untouched",
        needs,
        hostile_garbage_lists_keep_the_agent_unready_and_adds_untouched,
    );
    t.add(
        "hostile::a_relist_racing_an_add_keeps_the_pod",
        needs,
        hostile_a_relist_racing_an_add_keeps_the_pod,
    );
    t.add(
        "hostile::two_hundred_pods_enrol_and_one_drift_pass_keeps_up",
        needs,
        hostile_two_hundred_pods_enrol_and_one_drift_pass_keeps_up,
    );
    t.add(
        "hostile::a_low_soft_fd_limit_does_not_cap_the_pods",
        root(&["ip", "nft", "setpriv", "python3", "prlimit"]),
        hostile_a_low_soft_fd_limit_does_not_cap_the_pods,
    );
    t.add(
        "hostile::a_pod_unlabelled_during_a_drift_pass_is_not_put_back",
        needs,
        hostile_a_pod_unlabelled_during_a_drift_pass_is_not_put_back,
    );
    t.add(
        "hostile::adds_queued_behind_a_slow_ztunnel_get_the_agents_answer",
        needs,
        hostile_adds_queued_behind_a_slow_ztunnel_get_the_agents_answer,
    );
    t.add(
        "hostile::watches_closed_at_once_are_backed_off",
        needs,
        hostile_watches_closed_at_once_are_backed_off,
    );
    t.add(
        "hostile::a_pod_holding_its_lock_does_not_hold_up_adds",
        needs,
        hostile_a_pod_holding_its_lock_does_not_hold_up_adds,
    );
    t.add(
        "hostile::sigkill_mid_add_then_the_retried_add_enrols",
        needs,
        hostile_sigkill_mid_add_then_the_retried_add_enrols,
    );
    t.add(
        "hostile::a_del_of_another_sandbox_id_leaves_the_pod_enrolled",
        needs,
        hostile_a_del_of_another_sandbox("deadbeef", false),
    );
    t.add(
        "hostile::a_del_of_another_sandbox_namespace_leaves_the_pod_enrolled",
        needs,
        hostile_a_del_of_another_sandbox("", true),
    );
    t.add(
        "hostile::an_add_of_a_new_sandbox_drops_the_old_ones_address",
        needs,
        hostile_an_add_of_a_new_sandbox_drops_the_old_ones_address,
    );
    t.add(
        "hostile2::a_lagging_watchs_news_of_the_old_pod_keeps_the_new_one",
        needs,
        hostile2_a_lagging_watchs_news_of_the_old_pod_keeps_the_new_one,
    );
    t.add(
        "hostile2::a_pod_uid_that_is_not_one_is_refused_before_anything_is_written",
        needs,
        hostile2_a_pod_uid_that_is_not_one_is_refused_before_anything_is_written,
    );
    t.add_if(
        "hostile2::a_pod_holding_its_lock_and_changing_does_not_starve_adds",
        root(&["ip", "nft", "unshare", "python3"]),
        cgroups,
        hostile2_a_pod_holding_its_lock_and_changing_does_not_starve_adds,
    );
    t.add_if(
        "hostile3::a_sidecar_pod_of_an_excluded_namespace_gets_no_rules",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_a_sidecar_pod_of_an_excluded_namespace_gets_no_rules,
    );
    t.add_if(
        "hostile3::a_sandbox_re_created_with_a_new_address_is_enrolled_again",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_a_sandbox_re_created_with_a_new_address_is_enrolled_again,
    );
    t.add_if(
        "hostile3::a_sidecar_pods_port_annotations_are_not_fought_by_the_drift",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_sidecar_rules_with(
            "hostile3::a_sidecar_pods_port_annotations_are_not_fought_by_the_drift",
            json!({"traffic.sidecar.istio.io/includeInboundPorts": "8080,9090", "traffic.sidecar.istio.io/excludeOutboundPorts": "5432", "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.0/12"}),
        ),
    );
    t.add_if(
        "hostile3::a_tproxy_sidecar_pod_is_not_fought_by_the_drift",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_sidecar_rules_with(
            "hostile3::a_tproxy_sidecar_pod_is_not_fought_by_the_drift",
            json!({"sidecar.istio.io/interceptionMode": "TPROXY"}),
        ),
    );
    t.add_if(
        "hostile3::a_sidecar_pod_capturing_all_inbound_is_not_fought_by_the_drift",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_sidecar_rules_with(
            "hostile3::a_sidecar_pod_capturing_all_inbound_is_not_fought_by_the_drift",
            json!({"traffic.sidecar.istio.io/includeInboundPorts": "*", "traffic.sidecar.istio.io/excludeInboundPorts": "15020", "traffic.sidecar.istio.io/includeOutboundIPRanges": "*"}),
        ),
    );
    t.add_if(
        "hostile3::a_kept_pod_recreated_while_the_watch_expired_is_let_go",
        scan,
        cgroups,
        hostile3_a_kept_pod_recreated_while_the_watch_expired_is_let_go,
    );
    t.add_if(
        "hostile3::a_sidecar_pods_iptables_rules_get_no_nftables_copy",
        root(&["ip", "nft", "unshare", "iptables-save"]),
        cgroups,
        hostile3_a_sidecar_pods_iptables_rules_get_no_nftables_copy,
    );
    t.add_if(
        "hostile3::a_kept_pod_whose_processes_show_up_is_enrolled_by_the_drift",
        scan,
        cgroups,
        hostile3_a_kept_pod_whose_processes_show_up_is_enrolled_by_the_drift,
    );
    t.add_if(
        "hostile3::the_old_sandboxs_del_after_a_namespace_drift_leaves_the_pod",
        root(&["ip", "nft", "unshare"]),
        cgroups,
        hostile3_the_old_sandboxs_del_after_a_namespace_drift_leaves_the_pod,
    );
    let podman = root(&["ip", "nft", "podman", "nsenter", "busybox", "python3"]);
    t.add_if(
        "podman::containers_on_an_ambient_network_are_enrolled_and_redirected",
        podman,
        podman_plugins,
        podman_containers_on_an_ambient_network_are_enrolled_and_redirected,
    );
    t.add_if(
        "podman::a_restarted_agent_re_enrols_running_containers_without_duplicate_adds",
        podman,
        podman_plugins,
        podman_a_restarted_agent_re_enrols_running_containers_without_duplicate_adds,
    );
    t.declare(
        73,
        &[
            ("add", 10),
            ("select", 1),
            ("del", 2),
            ("socket", 3),
            ("start", 3),
            ("drift", 4),
            ("restart", 4),
            ("watch", 5),
            ("repair", 7),
            ("hostile", 20),
            ("hostile2", 3),
            ("hostile3", 9),
            ("podman", 2),
        ],
    );
    t.run()
}
