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
use support::net;
use support::scenarios::{self, Dialect, From, PROXY, Probe, Scenario, Want};
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

fn main() {
    let mut t = Trials::new();
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
    // 10 scenarios × 3 backends × with and without --compact; validation after an apply with
    // each (× --compact); validation without rules.
    t.declare(
        10 * 3 * 2 + 3 * 2 + 1,
        &[("validation_passes_after_apply", 3 * 2)],
    );
    t.run()
}
