//! Interception proven with real packets: each scenario builds a pod/world topology
//! (`support::topo`), applies rules with one backend (nftables over netlink, iptables-nft,
//! iptables-legacy), and asserts where connections and datagrams actually arrived. Every
//! scenario × backend is a trial of its own (`cargo test --test traffic s7_dns::iptables-nft`).
//! Needs root; ignored with the reason without it, failed under CI=true.

mod support;

use support::INJECTED;
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

const SCENARIOS: [&str; 10] = [
    "1 app -> remote TCP lands on 15001 with its original destination",
    "2 proxy uid/gid 1337 reach the world directly",
    "3 world -> pod lands on 15006 (REDIRECT and TPROXY)",
    "4 -b lists and -d exclusions",
    "5 -i, -x, -o and -q",
    "6 -c excluded and -k virtual interfaces",
    "7 DNS capture",
    "8 hairpin through the pod's own IP",
    "9 owner groups include/exclude",
    "10 after clean everything reaches its real destination",
];

/// A client connection and where it must land: (address, port, `name:port`).
type Probe = (&'static str, u16, &'static str);

const APP: &str = "1000:1000";
const PROXY: &str = "1337:1337";

/// Checks an answer: `want` is `name:port` (or `none`), `orig`/`local`/`peer` optional.
struct Checks(Vec<String>);

impl Checks {
    fn new() -> Checks {
        Checks(Vec::new())
    }
    fn at(&mut self, label: &str, got: &Option<Answer>, want: &str) {
        let at = got.as_ref().map_or("none".to_string(), Answer::at);
        if at != want {
            self.0.push(format!(
                "{label}: landed on {at}, expected {want} ({got:?})"
            ));
        }
    }
    fn field(&mut self, label: &str, got: &Option<Answer>, f: fn(&Answer) -> &str, want: &str) {
        if let Some(a) = got
            && !f(a).starts_with(want)
        {
            self.0.push(format!("{label}: {a:?}, expected {want}"));
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

/// Istio's injected args, with IPv6 on so both families are exercised.
fn injected_v6() -> Vec<&'static str> {
    INJECTED
        .iter()
        .copied()
        .chain(["--enable-ipv6", "true"])
        .collect()
}

/// A topology with the standard servers and the rules of `args` applied in the pod.
fn pod(tproxy: bool, args: &[&str]) -> Topo {
    let mut t = Topo::new();
    t.standard(tproxy);
    t.meshtables(args);
    t
}

fn s1_outbound_capture(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(false, &args(&injected_v6(), extra));
        let a = t.out_tcp("192.0.2.7", 80, APP);
        c.at(&format!("{b} v4"), &a, "proxy:15001");
        c.field(&format!("{b} v4 orig"), &a, |a| &a.orig, "192.0.2.7:80");
        let a = t.out_tcp("2001:db8::7", 80, APP);
        c.at(&format!("{b} v6"), &a, "proxy:15001");
        c.field(&format!("{b} v6 orig"), &a, |a| &a.orig, "[2001:db8::7]:80");
    }
    c.done(SCENARIOS[0]);
}

fn s2_proxy_bypasses(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(false, &args(&injected_v6(), extra));
        c.at(
            &format!("{b} uid 1337"),
            &t.out_tcp("192.0.2.7", 80, PROXY),
            "world:80",
        );
        c.at(
            &format!("{b} gid 1337"),
            &t.out_tcp("192.0.2.7", 80, "2000:1337"),
            "world:80",
        );
        c.at(
            &format!("{b} uid 1337 v6"),
            &t.out_tcp("2001:db8::7", 80, PROXY),
            "world:80",
        );
    }
    c.done(SCENARIOS[1]);
}

fn s3_inbound_redirect_and_tproxy(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        // REDIRECT: the original destination comes from SO_ORIGINAL_DST.
        let t = pod(false, &args(&injected_v6(), extra));
        let a = t.in_tcp("10.244.1.5", 8080);
        c.at(&format!("{b} REDIRECT v4"), &a, "proxy:15006");
        c.field(
            &format!("{b} REDIRECT v4 orig"),
            &a,
            |a| &a.orig,
            "10.244.1.5:8080",
        );
        let a = t.in_tcp("fd00:244::5", 8080);
        c.at(&format!("{b} REDIRECT v6"), &a, "proxy:15006");
        c.field(
            &format!("{b} REDIRECT v6 orig"),
            &a,
            |a| &a.orig,
            "[fd00:244::5]:8080",
        );
        drop(t);
        // TPROXY: the proxy sees the client's address and the original destination as local.
        let mut t = Topo::new();
        t.standard(true);
        let mut tp = args(&injected_v6(), extra);
        let m = tp.iter().position(|a| *a == "REDIRECT").unwrap();
        tp[m] = "TPROXY";
        t.meshtables(&tp);
        let a = t.in_tcp("10.244.1.5", 8080);
        c.at(&format!("{b} TPROXY v4"), &a, "proxy:15006");
        c.field(
            &format!("{b} TPROXY v4 local"),
            &a,
            |a| &a.local,
            "10.244.1.5:8080",
        );
        c.field(
            &format!("{b} TPROXY v4 peer"),
            &a,
            |a| &a.peer,
            "10.244.1.1:",
        );
        let a = t.in_tcp("fd00:244::5", 8080);
        c.at(&format!("{b} TPROXY v6"), &a, "proxy:15006");
        c.field(
            &format!("{b} TPROXY v6 local"),
            &a,
            |a| &a.local,
            "[fd00:244::5]:8080",
        );
        c.field(
            &format!("{b} TPROXY v6 peer"),
            &a,
            |a| &a.peer,
            "[fd00:244::1]:",
        );
    }
    c.done(SCENARIOS[2]);
}

fn s4_inbound_port_lists(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-b",
                    "7070,8080,8443",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} -b 7070,8080,8443: 8080"),
            &t.in_tcp("10.244.1.5", 8080),
            "proxy:15006",
        );
        c.at(
            &format!("{b} -b 7070,8080,8443: 9090"),
            &t.in_tcp("10.244.1.5", 9090),
            "app:9090",
        );
        drop(t);
        let t = pod(false, &args(INJECTED, extra));
        c.at(
            &format!("{b} -d 15090: 15090"),
            &t.in_tcp("10.244.1.5", 15090),
            "app:15090",
        );
        c.at(
            &format!("{b} -d 15090: 9090"),
            &t.in_tcp("10.244.1.5", 9090),
            "proxy:15006",
        );
    }
    c.done(SCENARIOS[3]);
}

fn s5_outbound_cidrs_and_ports(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    // Lists of more than one item, so that `--compact` turns them into sets.
    let cases: [(&[&str], &[Probe]); 4] = [
        (
            &["-i", "192.0.2.0/24,198.51.100.0/24"],
            &[
                ("192.0.2.7", 80, "proxy:15001"),
                ("198.51.100.7", 80, "proxy:15001"),
                ("10.96.0.10", 80, "world:80"),
            ],
        ),
        (
            &["-i", "*", "-x", "192.0.2.7/32,198.51.100.0/24"],
            &[
                ("192.0.2.7", 80, "world:80"),
                ("198.51.100.7", 80, "world:80"),
                ("10.96.0.10", 80, "proxy:15001"),
            ],
        ),
        (
            &["-i", "*", "-o", "8080,8081"],
            &[
                ("10.96.0.10", 8080, "world:8080"),
                ("10.96.0.10", 80, "proxy:15001"),
            ],
        ),
        (
            &["-i", "192.0.2.0/24", "-q", "8080,8081"],
            &[
                ("10.96.0.10", 8080, "proxy:15001"),
                ("10.96.0.10", 80, "world:80"),
            ],
        ),
    ];
    {
        for (flags, probes) in cases {
            let mut t = Topo::new();
            t.standard(false);
            let base: Vec<&str> = ["apply", "-u", "1337", "--enable-ipv6", "false"]
                .iter()
                .chain(flags)
                .copied()
                .collect();
            t.meshtables(&args(&base, extra));
            for (ip, port, want) in probes {
                c.at(
                    &format!("{b} {flags:?} {ip}:{port}"),
                    &t.out_tcp(ip, *port, APP),
                    want,
                );
            }
        }
    }
    c.done(SCENARIOS[4]);
}

fn s6_interfaces(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-i",
                    "*",
                    "-c",
                    "eth1",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} -c eth1: out via eth1"),
            &t.out_tcp("198.51.100.7", 80, APP),
            "world:80",
        );
        c.at(
            &format!("{b} -c eth1: out via eth0"),
            &t.out_tcp("192.0.2.7", 80, APP),
            "proxy:15001",
        );
        drop(t);
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-i",
                    "*",
                    "-b",
                    "*",
                    "-k",
                    "eth1",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        let a = t.in_tcp("10.245.0.5", 8080);
        c.at(
            &format!("{b} -k eth1: in via eth1 is outbound"),
            &a,
            "proxy:15001",
        );
        c.field(
            &format!("{b} -k eth1 orig"),
            &a,
            |a| &a.orig,
            "10.245.0.5:8080",
        );
        c.at(
            &format!("{b} -k eth1: in via eth0"),
            &t.in_tcp("10.244.1.5", 8080),
            "proxy:15006",
        );
    }
    c.done(SCENARIOS[5]);
}

fn s7_dns(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "--redirect-dns",
                    "--dns-servers",
                    "10.96.0.10",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} udp to resolver"),
            &t.out_udp("10.96.0.10", 53, APP),
            "proxy:15053",
        );
        c.at(
            &format!("{b} tcp to resolver"),
            &t.out_tcp("10.96.0.10", 53, APP),
            "proxy:15053",
        );
        c.at(
            &format!("{b} udp to another server"),
            &t.out_udp("192.0.2.7", 53, APP),
            "world:53",
        );
        c.at(
            &format!("{b} proxy's own query"),
            &t.out_udp("10.96.0.10", 53, PROXY),
            "world:53",
        );
        drop(t);
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "--redirect-dns",
                    "--capture-all-dns",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} capture-all udp"),
            &t.out_udp("192.0.2.7", 53, APP),
            "proxy:15053",
        );
        c.at(
            &format!("{b} capture-all tcp"),
            &t.out_tcp("192.0.2.7", 53, APP),
            "proxy:15053",
        );
        c.at(
            &format!("{b} capture-all proxy's own"),
            &t.out_udp("192.0.2.7", 53, PROXY),
            "world:53",
        );
    }
    c.done(SCENARIOS[6]);
}

fn s8_hairpin(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(false, &args(&injected_v6(), extra));
        let a = t.out_tcp("10.244.1.5", 8080, PROXY);
        c.at(&format!("{b} proxy -> own IP"), &a, "proxy:15006");
        c.field(
            &format!("{b} proxy -> own IP orig"),
            &a,
            |a| &a.orig,
            "10.244.1.5:8080",
        );
        c.at(
            &format!("{b} app -> own IP"),
            &t.out_tcp("10.244.1.5", 8080, APP),
            "app:8080",
        );
    }
    c.done(SCENARIOS[7]);
}

fn s9_owner_groups(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-i",
                    "*",
                    "--outbound-owner-groups",
                    "2000",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} include 2000: gid 2000"),
            &t.out_tcp("192.0.2.7", 80, "1000:2000"),
            "proxy:15001",
        );
        c.at(
            &format!("{b} include 2000: gid 3000"),
            &t.out_tcp("192.0.2.7", 80, "1000:3000"),
            "world:80",
        );
        drop(t);
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-i",
                    "*",
                    "--outbound-owner-groups-exclude",
                    "3000",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} exclude 3000: gid 3000"),
            &t.out_tcp("192.0.2.7", 80, "1000:3000"),
            "world:80",
        );
        c.at(
            &format!("{b} exclude 3000: gid 2000"),
            &t.out_tcp("192.0.2.7", 80, "1000:2000"),
            "proxy:15001",
        );
    }
    c.done(SCENARIOS[8]);
}

fn s10_after_clean(b: &str, extra: &'static [&'static str]) {
    let mut c = Checks::new();
    {
        let mut t = Topo::new();
        t.standard(true);
        let apply: Vec<&str> = [
            "apply",
            "-u",
            "1337",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "-i",
            "*",
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10",
            "--enable-ipv6",
            "true",
        ]
        .to_vec();
        t.meshtables(&args(&apply, extra));
        c.at(
            &format!("{b} before clean"),
            &t.out_tcp("192.0.2.7", 80, APP),
            "proxy:15001",
        );
        let clean: Vec<&str> = ["clean", "-u", "1337"]
            .iter()
            .chain(extra.iter().filter(|a| **a == "--native-nftables"))
            .copied()
            .collect();
        t.meshtables(&clean);
        c.at(
            &format!("{b} out v4"),
            &t.out_tcp("192.0.2.7", 80, APP),
            "world:80",
        );
        c.at(
            &format!("{b} out v6"),
            &t.out_tcp("2001:db8::7", 80, APP),
            "world:80",
        );
        c.at(
            &format!("{b} in v4"),
            &t.in_tcp("10.244.1.5", 8080),
            "app:8080",
        );
        c.at(
            &format!("{b} in v6"),
            &t.in_tcp("fd00:244::5", 8080),
            "app:8080",
        );
        c.at(
            &format!("{b} dns"),
            &t.out_udp("10.96.0.10", 53, APP),
            "world:53",
        );
        c.at(
            &format!("{b} hairpin"),
            &t.out_tcp("10.244.1.5", 8080, PROXY),
            "app:8080",
        );
    }
    c.done(SCENARIOS[9]);
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

/// A scenario run with one backend: its name and its extra flags.
type Scenario = fn(&str, &'static [&'static str]);

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
    let scenarios: [(&str, Scenario); 11] = [
        ("s1_outbound_capture", s1_outbound_capture),
        ("s2_proxy_bypasses", s2_proxy_bypasses),
        (
            "s3_inbound_redirect_and_tproxy",
            s3_inbound_redirect_and_tproxy,
        ),
        ("s4_inbound_port_lists", s4_inbound_port_lists),
        ("s5_outbound_cidrs_and_ports", s5_outbound_cidrs_and_ports),
        ("s6_interfaces", s6_interfaces),
        ("s7_dns", s7_dns),
        ("s8_hairpin", s8_hairpin),
        ("s9_owner_groups", s9_owner_groups),
        ("s10_after_clean", s10_after_clean),
        (
            "validation_passes_after_apply",
            validation_passes_after_apply,
        ),
    ];
    let mut t = Trials::new();
    for (name, f) in scenarios {
        for (b, extra) in backends() {
            t.add(format!("{name}::{b}"), needs(b), move || f(b, extra));
            // The same traffic with `--compact` rulesets (sets, multiport).
            let compact: &'static [&'static str] =
                Box::leak([extra, &["--compact"]].concat().into_boxed_slice());
            t.add(format!("{name}::{b}::compact"), needs(b), move || {
                f(b, compact)
            });
        }
    }
    t.add(
        "validation_fails_without_rules",
        root(&["ip", "setpriv"]),
        validation_fails_without_rules,
    );
    t.run()
}
