//! Interception proven with real packets: each scenario (`support::scenarios`, the data
//! tests/tracer.rs traces too) builds a pod/world topology (`support::topo`), applies rules
//! with one backend (nftables over netlink, iptables-nft, iptables-legacy), and asserts where
//! connections and datagrams actually arrived. Every
//! scenario × backend is a trial of its own (`cargo test --test traffic s7_dns::iptables-nft`).
//! Needs root; ignored with the reason without it, failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::net::IpAddr;

use meshtables::plan::Proto;
use support::INJECTED;
use support::ambient::{self, SCENARIOS as AMBIENT_SCENARIOS};
use support::net;
use support::scenarios::{self, APP, Dialect, From, PROXY, Probe, Scenario, Want};
use support::topo::{Answer, Topo};
use support::trials::{Needs, Trials, root};

type Backend = (&'static str, &'static [&'static str]);

const ALL_BACKENDS: [Backend; 3] = [
    ("nftables-netlink", &["--native-nftables"]),
    ("iptables-nft", &["--force-iptables-binary", "nft"]),
    ("iptables-legacy", &["--force-iptables-binary", "legacy"]),
];

/// Every backend, or those named in `MESHTABLES_TEST_BACKENDS` (comma separated; the
/// vm-tests runner's `--backends`, for a kernel or image that lacks some).
fn backends() -> Vec<Backend> {
    let Some(list) = std::env::var("MESHTABLES_TEST_BACKENDS")
        .ok()
        .filter(|l| !l.is_empty())
    else {
        return ALL_BACKENDS.to_vec();
    };
    list.split(',')
        .map(|name| {
            *ALL_BACKENDS
                .iter()
                .find(|(b, _)| *b == name.trim())
                .unwrap_or_else(|| panic!("MESHTABLES_TEST_BACKENDS: unknown backend {name:?}"))
        })
        .collect()
}

/// Checks answers against the scenario data; collects every mismatch of a scenario.
struct Checks(Vec<String>);

impl Checks {
    fn new() -> Checks {
        Checks(Vec::new())
    }
    fn fail(&mut self, label: &str, got: &Option<Answer>, what: String) {
        self.0.push(format!("{label}: {what} ({got:?})"));
    }
    /// Where `probe` landed, and what the server saw, against what the data wants.
    fn probe(&mut self, b: &str, dialect: Dialect, probe: &Probe, got: &Option<Answer>) {
        let label = format!("{b} {}", probe.label());
        let at = got.as_ref().map_or("none".to_string(), Answer::at);
        let want = probe.lands_on(dialect);
        if at != want {
            return self.fail(&label, got, format!("landed on {at}, expected {want}"));
        }
        let Some(a) = got else { return };
        let to = probe.to().to_string();
        match probe.want(dialect) {
            Want::Direct => {}
            // SO_ORIGINAL_DST: TCP only (the probe reports `-` for UDP).
            Want::Redirect(_) if probe.proto == Proto::Udp => {}
            Want::Redirect(_) => {
                if a.orig != to {
                    self.fail(&label, got, format!("original destination, expected {to}"));
                }
            }
            Want::Tproxy(_) => {
                let (_, client) = net::client_of(probe.dst);
                let peer = match client {
                    IpAddr::V4(_) => format!("{client}:"),
                    IpAddr::V6(_) => format!("[{client}]:"),
                };
                if a.local != to || !a.peer.starts_with(&peer) {
                    self.fail(&label, got, format!("expected local {to} and peer {peer}*"));
                }
            }
        }
    }
    fn done(self, scenario: &str) {
        assert!(self.0.is_empty(), "{scenario}:\n{}", self.0.join("\n"));
        println!("{scenario}: ok");
    }
}

fn args<'a>(base: &[&'a str], backend: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(backend).copied().collect()
}

/// Sends `probe` from where the data says, as it says.
fn send(t: &Topo, probe: &Probe) -> Option<Answer> {
    let dst = probe.dst.to_string();
    match (probe.from, probe.proto) {
        (From::Pod(user), Proto::Tcp) => t.out_tcp(&dst, probe.port, user),
        (From::Pod(user), Proto::Udp) => t.out_udp(&dst, probe.port, user),
        (From::World, Proto::Tcp) => t.in_tcp(&dst, probe.port),
        (From::World, Proto::Udp) => panic!("{}: no UDP client in the world", probe.label()),
    }
}

/// One scenario with one backend (`extra`: its flags, and `--compact` if so).
fn run(s: &Scenario, b: &str, extra: &[&str]) {
    let dialect = if extra.contains(&"--native-nftables") {
        Dialect::Nft
    } else {
        Dialect::Xtables
    };
    let mut c = Checks::new();
    for setup in &s.setups {
        let mut t = Topo::new();
        t.standard(setup.tproxy());
        t.meshtables(&args(&setup.args, extra));
        for p in &setup.probes {
            c.probe(b, dialect, p, &send(&t, p));
        }
        if setup.after_clean.is_empty() {
            continue;
        }
        let clean: Vec<&str> = ["clean", "-u", "1337"]
            .iter()
            .chain(extra.iter().filter(|a| **a == "--native-nftables"))
            .copied()
            .collect();
        t.meshtables(&clean);
        for p in &setup.after_clean {
            c.probe(&format!("{b} after clean"), dialect, p, &send(&t, p));
        }
    }
    c.done(s.title);
}

/// Upstream's validation probe passes once the rules are in.
fn validation_passes_after_apply(b: &str, extra: &'static [&'static str]) {
    let t = Topo::new();
    t.meshtables(&args(INJECTED, extra));
    let mut v = args(INJECTED, &["--run-validation", "--skip-rule-apply"]);
    v.extend(extra);
    let o = t.meshtables_as(PROXY, &v);
    assert!(
        o.status.success(),
        "{b}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Without rules it fails with upstream's exit status and message, within the timeout.
fn validation_fails_without_rules() {
    let t = Topo::new();
    let v = args(
        INJECTED,
        &[
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            "2s",
        ],
    );
    let start = std::time::Instant::now();
    let o = t.meshtables_as(PROXY, &v);
    let took = start.elapsed();
    assert_eq!(
        o.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("iptables validation failed; workload is not ready for Istio.")
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

/// What a scenario needs with one backend: root, the tools the topology uses, and the
/// backend's restore binary.
fn needs(backend: &str) -> Needs {
    match backend {
        "iptables-nft" => root(&["ip", "setpriv", "nft", "iptables-nft-restore"]),
        "iptables-legacy" => root(&["ip", "setpriv", "nft", "iptables-legacy-restore"]),
        _ => root(&["ip", "setpriv", "nft"]),
    }
}

// ---- Istio ambient: the in-pod redirection to a stand-in ztunnel. ----

/// The stand-in ztunnel's options: its listeners, and SO_MARK 0x539 on every socket.
const ZTUNNEL_MARK: &str = "0x539";

/// The pod and the world for the ambient scenarios: the world's servers (and the node's
/// probe source on its loopback), the stand-in ztunnel on 15001, 15006, 15008 and 15053 (as
/// root, its sockets marked), the app on 8080 as uid 1000.
fn ambient_topo() -> Topo {
    let mut t = Topo::new();
    let (w, p) = (t.world.clone(), t.pod.clone());
    t.serve(&w, &["world", "--tcp", "53,80,8080", "--udp", "53"]);
    t.world_address(&format!("{}/32", ambient::PROBE_V4));
    t.serve(
        &p,
        &[
            "ztunnel",
            "--tcp",
            "15001,15006,15008,15053",
            "--udp",
            "15053",
            "--mark",
            ZTUNNEL_MARK,
        ],
    );
    t.serve(&p, &["app", "--tcp", "8080", "--as", "1000:1000"]);
    t
}

/// Sends one ambient flow from where the data says.
fn ambient_send(t: &Topo, f: &ambient::Flow) -> Option<Answer> {
    let proto = f.proto.name();
    let dst = f.dst.to_string();
    let probe_from = ["--from", ambient::PROBE_V4];
    match f.from {
        ambient::Sender::App => t.client_with(&t.pod, proto, &dst, f.port, &["--as", APP]),
        ambient::Sender::Ztunnel => {
            t.client_with(&t.pod, proto, &dst, f.port, &["--mark", ZTUNNEL_MARK])
        }
        ambient::Sender::World => t.client_with(&t.world, proto, &dst, f.port, &[]),
        ambient::Sender::Probe => t.client_with(&t.world, proto, &dst, f.port, &probe_from),
    }
}

/// Where a flow must land, as `name:port`.
fn ambient_lands_on(f: &ambient::Flow) -> String {
    let ztunnel = [
        ambient::OUTBOUND,
        ambient::INBOUND_PLAINTEXT,
        ambient::HBONE,
        ambient::DNS_PROXY,
    ];
    match f.lands {
        ambient::Lands::Ztunnel(p) => format!("ztunnel:{p}"),
        ambient::Lands::Direct if net::pod_owns(f.dst) && ztunnel.contains(&f.port) => {
            format!("ztunnel:{}", f.port)
        }
        ambient::Lands::Direct if net::pod_owns(f.dst) => format!("app:{}", f.port),
        ambient::Lands::Direct => format!("world:{}", f.port),
    }
}

/// One ambient scenario with one backend: every flow lands where the data says, a
/// redirected TCP flow with its original destination, the probe with its source.
fn ambient_run(s: &ambient::Scenario, b: &str, extra: &[&str]) {
    let t = ambient_topo();
    let mut args = vec!["ambient", "apply"];
    args.extend(s.args);
    args.extend(extra);
    t.meshtables(&args);
    let mut fails = Vec::new();
    for f in &s.flows {
        let got = ambient_send(&t, f);
        let at = got.as_ref().map_or("none".to_string(), Answer::at);
        let want = ambient_lands_on(f);
        let to = std::net::SocketAddr::new(f.dst, f.port).to_string();
        let orig_ok = match (&got, f.lands, f.proto) {
            (Some(a), ambient::Lands::Ztunnel(_), Proto::Tcp) => a.orig == to,
            _ => true,
        };
        let peer_ok = match (&got, f.from) {
            (Some(a), ambient::Sender::Probe) => {
                a.peer.starts_with(&format!("{}:", ambient::PROBE_V4))
            }
            _ => true,
        };
        if at != want || !orig_ok || !peer_ok {
            fails.push(format!(
                "{b} {}: landed on {at}, expected {want} ({got:?})",
                f.label()
            ));
        }
    }
    assert!(fails.is_empty(), "{}:\n{}", s.name, fails.join("\n"));
}

/// ztunnel's inbound connection to the app carries the client's address (IP_TRANSPARENT,
/// SO_MARK 0x539), as real ztunnel's does: its packets give the connection the connmark, the
/// app's replies get it back as their mark, and the policy routing (`fwmark 0x111/0xfff
/// lookup 100`, `local default dev lo table 100`) returns them to ztunnel instead of sending
/// them to the client's real address. Without the rule the same connection fails.
fn ambient_replies_return_to_ztunnel(b: &str, extra: &[&str]) {
    let t = ambient_topo();
    let mut args = vec!["ambient", "apply", "--ambient-ipv6"];
    args.extend(extra);
    t.meshtables(&args);
    let spoof = [
        "--mark",
        ZTUNNEL_MARK,
        "--from",
        "10.244.1.1",
        "--transparent",
    ];
    let got = t.client_with(&t.pod, "tcp", "10.244.1.5", 8080, &spoof);
    let ok = got
        .as_ref()
        .is_some_and(|a| a.at() == "app:8080" && a.peer.starts_with("10.244.1.1:"));
    assert!(ok, "{b}: with the policy routing: {got:?}");
    t.pod_ip(&[
        "rule",
        "del",
        "fwmark",
        "0x111/0xfff",
        "lookup",
        "100",
        "pref",
        "32764",
    ]);
    let got = t.client_with(&t.pod, "tcp", "10.244.1.5", 8080, &spoof);
    assert!(
        got.is_none(),
        "{b}: without the rule the reply must not come back: {got:?}"
    );
}

/// The backends the ambient trials run with (no `--compact`: ambient has no lists).
fn ambient_needs(backend: &str) -> Needs {
    needs(backend)
}

// ---- Istio ambient: the node's probe SNAT. ----

/// The kubelet's uid in the host trials (the nftables rule keys on it).
const KUBELET: &str = "4242:4242";

/// What one host trial sends: from the world (the node) as `user` to `dst`:8080 of the pod.
struct HostProbe {
    dst: &'static str,
    user: &'static str,
    ipv6: bool,
    /// The source the pod's app must see: the probe address, or the world's own.
    peer: &'static str,
}

/// The world plays the node: `ambient host apply` and `add-pod` for the pod's eth0
/// addresses (not eth1's) run there; a TCP connection from the world to the pod's app
/// arrives with the source `want.peer`.
fn host_probe(b: &str, extra: &[&str], probe: &HostProbe) {
    let mut t = Topo::new();
    let p = t.pod.clone();
    t.serve(&p, &["app", "--tcp", "8080", "--as", "1000:1000"]);
    let v6 = format!("--ambient-ipv6={}", probe.ipv6);
    let mut apply = vec!["ambient", "host", "apply", "--kubelet-uid", "4242", &v6];
    apply.extend(extra);
    t.meshtables_in_world(&apply);
    let mut add = vec![
        "ambient",
        "host",
        "add-pod",
        "--pod-uid",
        "0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b",
        "--pod-ip",
        "10.244.1.5,fd00:244::5",
        &v6,
    ];
    add.extend(extra);
    t.meshtables_in_world(&add);
    if probe.ipv6 {
        // An IPv6 reply to the probe address is dropped by the node while its link-local
        // addresses are still tentative (duplicate address detection): a real node's are not.
        wait_for_link_locals(&t.world);
        wait_for_link_locals(&t.pod);
    }
    let got = t.client_with(&t.world, "tcp", probe.dst, 8080, &["--as", probe.user]);
    let Some(a) = got else {
        panic!("{b}: no answer from {}:8080", probe.dst)
    };
    assert_eq!(a.at(), "app:8080", "{b}: {a:?}");
    assert!(
        a.peer.starts_with(probe.peer),
        "{b}: the app saw {}, expected {}",
        a.peer,
        probe.peer
    );
}

/// Waits (10 s at most) until every veth of `ns` has its link-local address and none is
/// tentative any more.
fn wait_for_link_locals(ns: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = std::process::Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "scope", "link"])
            .output()
            .expect("ip runs");
        let text = String::from_utf8_lossy(&o.stdout);
        let links = net::LINKS.len();
        if text.matches("inet6 fe80").count() >= links && !text.contains("tentative") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}: IPv6 addresses still tentative after 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Which backends a host trial runs with: the nftables rule keys on the kubelet's uid,
/// iptables' on any local socket (`-m owner --socket-exists`), as upstream's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    All,
    Netlink,
    Iptables,
}

/// The host trials: name, what is sent, with which backends.
fn host_probes() -> Vec<(&'static str, HostProbe, On)> {
    vec![
        (
            "kubelet_to_a_pod_in_the_set_is_snatted",
            HostProbe {
                dst: "10.244.1.5",
                user: KUBELET,
                ipv6: false,
                peer: "169.254.7.127:",
            },
            On::All,
        ),
        (
            "kubelet_to_an_address_not_in_the_set_is_not",
            HostProbe {
                dst: "10.245.0.5",
                user: KUBELET,
                ipv6: false,
                peer: "10.245.0.1:",
            },
            On::All,
        ),
        (
            "kubelet_over_ipv6_gets_the_ipv6_probe_address",
            HostProbe {
                dst: "fd00:244::5",
                user: KUBELET,
                ipv6: true,
                peer: "[fd16:9254:7127:1337:ffff:ffff:ffff:ffff]:",
            },
            On::All,
        ),
        (
            "another_local_socket_is_snatted_by_iptables",
            HostProbe {
                dst: "10.244.1.5",
                user: "0:0",
                ipv6: false,
                peer: "169.254.7.127:",
            },
            On::Iptables,
        ),
        (
            "another_uid_is_not_snatted_by_nftables",
            HostProbe {
                dst: "10.244.1.5",
                user: "0:0",
                ipv6: false,
                peer: "10.244.1.1:",
            },
            On::Netlink,
        ),
    ]
}

/// The node's probe trials: 4 cases on each of the 3 backends (each case names the backends
/// it runs on).
const HOST_PROBE_TRIALS: usize = 12;

fn main() {
    let mut t = Trials::new();
    let host_cases: &'static [(&'static str, HostProbe, On)] =
        Box::leak(host_probes().into_boxed_slice());
    for (b, extra) in backends() {
        for (name, probe, on) in host_cases {
            let netlink = b == "nftables-netlink";
            if (*on == On::Netlink && !netlink) || (*on == On::Iptables && netlink) {
                continue;
            }
            t.add(format!("ambient::host::{name}::{b}"), needs(b), move || {
                host_probe(b, extra, probe)
            });
        }
    }
    let scenarios: &'static [Scenario] = Box::leak(scenarios::all().into_boxed_slice());
    for s in scenarios {
        for (b, extra) in backends() {
            t.add(format!("{}::{b}", s.name), needs(b), move || {
                run(s, b, extra)
            });
            // The same traffic with `--compact` rulesets (sets, multiport).
            let compact: &'static [&'static str] =
                Box::leak([extra, &["--compact"]].concat().into_boxed_slice());
            t.add(format!("{}::{b}::compact", s.name), needs(b), move || {
                run(s, b, compact)
            });
        }
    }
    for (b, extra) in backends() {
        let name = "validation_passes_after_apply";
        t.add(format!("{name}::{b}"), needs(b), move || {
            validation_passes_after_apply(b, extra)
        });
        let compact: &'static [&'static str] =
            Box::leak([extra, &["--compact"]].concat().into_boxed_slice());
        t.add(format!("{name}::{b}::compact"), needs(b), move || {
            validation_passes_after_apply(b, compact)
        });
    }
    t.add(
        "validation_fails_without_rules",
        root(&["ip", "setpriv"]),
        validation_fails_without_rules,
    );
    let ambient_scenarios: &'static [ambient::Scenario] =
        Box::leak(ambient::scenarios().into_boxed_slice());
    for (b, extra) in backends() {
        for s in ambient_scenarios {
            t.add(
                format!("ambient::{}::{b}", s.name),
                ambient_needs(b),
                move || ambient_run(s, b, extra),
            );
        }
        t.add(
            format!("ambient::replies_return_to_ztunnel::{b}"),
            ambient_needs(b),
            move || ambient_replies_return_to_ztunnel(b, extra),
        );
    }
    // 10 scenarios × 3 backends × with and without --compact; validation after an apply with
    // each (× --compact); validation without rules; ambient's scenarios and its replies trial
    // with each backend.
    t.declare(
        10 * 3 * 2 + 3 * 2 + 1 + (AMBIENT_SCENARIOS + 1) * 3 + HOST_PROBE_TRIALS,
        &[
            ("validation_passes_after_apply", 3 * 2),
            ("ambient", (AMBIENT_SCENARIOS + 1) * 3 + HOST_PROBE_TRIALS),
        ],
    );
    t.run()
}
