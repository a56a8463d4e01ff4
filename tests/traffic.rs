//! Interception proven with real packets: each scenario builds a pod/world topology
//! (`support::topo`), applies rules with each backend (nftables over netlink, iptables-nft,
//! iptables-legacy), and asserts where connections and datagrams actually arrived. Needs root;
//! fails under CI=true if it cannot run.

mod support;

use support::topo::{Answer, Topo};
use support::{INJECTED, require_program, require_root};

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

fn ready() -> bool {
    let selected = backends();
    let uses = |b: &str| selected.iter().any(|(name, _)| *name == b);
    require_root("traffic tests (network namespaces)")
        && ["ip", "setpriv", "nft"].iter().all(|p| require_program(p))
        && (!uses("iptables-legacy") || require_program("iptables-legacy-restore"))
        && (!uses("iptables-nft") || require_program("iptables-nft-restore"))
}

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
        println!("{scenario}: ok with {} backends", backends().len());
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

#[test]
fn s1_outbound_capture() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s2_proxy_bypasses() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s3_inbound_redirect_and_tproxy() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s4_inbound_port_lists() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
        let t = pod(
            false,
            &args(
                &[
                    "apply",
                    "-u",
                    "1337",
                    "-b",
                    "8080",
                    "--enable-ipv6",
                    "false",
                ],
                extra,
            ),
        );
        c.at(
            &format!("{b} -b 8080: 8080"),
            &t.in_tcp("10.244.1.5", 8080),
            "proxy:15006",
        );
        c.at(
            &format!("{b} -b 8080: 9090"),
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

#[test]
fn s5_outbound_cidrs_and_ports() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    let cases: [(&[&str], &[Probe]); 4] = [
        (
            &["-i", "192.0.2.0/24"],
            &[
                ("192.0.2.7", 80, "proxy:15001"),
                ("10.96.0.10", 80, "world:80"),
            ],
        ),
        (
            &["-i", "*", "-x", "192.0.2.7/32"],
            &[
                ("192.0.2.7", 80, "world:80"),
                ("10.96.0.10", 80, "proxy:15001"),
            ],
        ),
        (
            &["-i", "*", "-o", "8080"],
            &[
                ("10.96.0.10", 8080, "world:8080"),
                ("10.96.0.10", 80, "proxy:15001"),
            ],
        ),
        (
            &["-i", "192.0.2.0/24", "-q", "8080"],
            &[
                ("10.96.0.10", 8080, "proxy:15001"),
                ("10.96.0.10", 80, "world:80"),
            ],
        ),
    ];
    for (b, extra) in backends() {
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

#[test]
fn s6_interfaces() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s7_dns() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s8_hairpin() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s9_owner_groups() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn s10_after_clean() {
    if !ready() {
        return;
    }
    let mut c = Checks::new();
    for (b, extra) in backends() {
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

#[test]
fn validation_passes_after_apply_and_fails_without_rules() {
    if !ready() {
        return;
    }
    for (b, extra) in backends() {
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
    println!(
        "validation: passes after apply with {} backends; fails with 126 in {took:?} without rules",
        backends().len()
    );
}
