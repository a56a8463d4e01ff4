//! The ten traffic scenarios, once, as data: the flags of each setup, the flows sent and where
//! each must land. `tests/traffic.rs` sends them as real packets through each backend,
//! `tests/tracer.rs` walks them through the plan of each dialect, so the two cannot drift
//! apart. Where a dialect lands a flow elsewhere on purpose (an upstream difference recorded in
//! docs/upstream.md), the probe says so (`Probe::except`) rather than the check being weaker.

use std::net::{IpAddr, SocketAddr};

use meshtables::plan::Proto;

use super::INJECTED;
use super::net::{self, ip};

/// The app's uid:gid, and the proxy's.
pub const APP: &str = "1000:1000";
pub const PROXY: &str = "1337:1337";

/// Which of upstream's two pictures of the policy a backend installs: the iptables backends
/// the xtables rules, the native backend the nftables ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Xtables,
    Nft,
}

impl Dialect {
    pub const BOTH: [Dialect; 2] = [Dialect::Xtables, Dialect::Nft];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Xtables => "xtables",
            Dialect::Nft => "nft",
        }
    }
}

/// Who opens the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A process in the pod running as `uid:gid`.
    Pod(&'static str),
    /// A client in the world, over the link that reaches the destination.
    World,
}

/// Where a flow must land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// At the address and port it was sent to: the world's server, or the pod's app.
    Direct,
    /// REDIRECTed to the proxy's port, which reads the original destination back.
    Redirect(u16),
    /// TPROXY'd to the proxy's port: it sees the client's address, and the original
    /// destination as its own local address.
    Tproxy(u16),
}

/// A dialect that lands a flow elsewhere on purpose.
#[derive(Debug, Clone, Copy)]
pub struct Except {
    pub dialect: Dialect,
    pub want: Want,
    /// The docs/upstream.md entry that records the difference.
    pub why: &'static str,
}

/// One flow (a TCP connection or a UDP datagram) and where it must land.
#[derive(Debug, Clone)]
pub struct Probe {
    pub from: From,
    pub proto: Proto,
    pub dst: IpAddr,
    pub port: u16,
    pub want: Want,
    pub except: Option<Except>,
    /// The conntrack zone its first packet gets (the kernel trials cannot observe it; the
    /// tracer checks it), when the policy puts it in one.
    pub zone: Option<u16>,
}

impl Probe {
    /// Where it lands with `dialect`.
    pub fn want(&self, dialect: Dialect) -> Want {
        match self.except {
            Some(e) if e.dialect == dialect => e.want,
            _ => self.want,
        }
    }

    /// Where it was sent.
    pub fn to(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.port)
    }

    /// `tcp 1000:1000 -> 192.0.2.7:80`, for messages.
    pub fn label(&self) -> String {
        let who = match self.from {
            From::Pod(user) => user,
            From::World => "world",
        };
        format!("{} {who} -> {}", self.proto.name(), self.to())
    }

    /// The kernel trial's short form of `want`: `name:port` of the server that must answer.
    pub fn lands_on(&self, dialect: Dialect) -> String {
        match self.want(dialect) {
            Want::Direct if net::pod_owns(self.dst) => format!("app:{}", self.port),
            Want::Direct => format!("world:{}", self.port),
            Want::Redirect(p) | Want::Tproxy(p) => format!("proxy:{p}"),
        }
    }

    pub fn except(mut self, dialect: Dialect, want: Want, why: &'static str) -> Probe {
        self.except = Some(Except { dialect, want, why });
        self
    }

    pub fn zone(mut self, zone: u16) -> Probe {
        self.zone = Some(zone);
        self
    }
}

fn probe(from: From, proto: Proto, dst: &str, port: u16, want: Want) -> Probe {
    Probe {
        from,
        proto,
        dst: ip(dst),
        port,
        want,
        except: None,
        zone: None,
    }
}

/// A TCP connection from the pod as `user`.
pub fn tcp_out(user: &'static str, dst: &str, port: u16, want: Want) -> Probe {
    probe(From::Pod(user), Proto::Tcp, dst, port, want)
}

/// A UDP datagram from the pod as `user`.
pub fn udp_out(user: &'static str, dst: &str, port: u16, want: Want) -> Probe {
    probe(From::Pod(user), Proto::Udp, dst, port, want)
}

/// A TCP connection from the world to the pod.
pub fn tcp_in(dst: &str, port: u16, want: Want) -> Probe {
    probe(From::World, Proto::Tcp, dst, port, want)
}

/// One set of rules and the flows sent through them.
pub struct Setup {
    /// meshtables' arguments, without the backend's flags (and `--compact`).
    pub args: Vec<&'static str>,
    pub probes: Vec<Probe>,
    /// Flows sent after `clean -u 1337` (the tracer sends them through no rules at all:
    /// tests/cleanup.rs proves a clean leaves the namespace as it was before the apply).
    pub after_clean: Vec<Probe>,
}

impl Setup {
    /// TPROXY mode: the proxy's sockets must be transparent.
    pub fn tproxy(&self) -> bool {
        self.args.windows(2).any(|w| w == ["-m", "TPROXY"])
    }
}

fn setup(args: Vec<&'static str>, probes: Vec<Probe>) -> Setup {
    Setup {
        args,
        probes,
        after_clean: Vec::new(),
    }
}

pub struct Scenario {
    /// The trial name's first part: `s1_outbound_capture`.
    pub name: &'static str,
    pub title: &'static str,
    pub setups: Vec<Setup>,
}

/// Istio's injected args, in `mode`, with IPv6 on so both families are exercised.
fn injected_v6(mode: &'static str) -> Vec<&'static str> {
    let mut a: Vec<&'static str> = INJECTED.to_vec();
    if let Some(m) = a.iter().position(|a| *a == "REDIRECT") {
        a[m] = mode;
    }
    a.extend(["--enable-ipv6", "true"]);
    a
}

/// `apply -u 1337 --enable-ipv6 false` and `flags`.
fn v4(flags: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec!["apply", "-u", "1337", "--enable-ipv6", "false"];
    a.extend(flags);
    a
}

use Want::{Direct, Redirect, Tproxy};

pub fn all() -> Vec<Scenario> {
    vec![s1(), s2(), s3(), s4(), s5(), s6(), s7(), s8(), s9(), s10()]
}

fn s1() -> Scenario {
    Scenario {
        name: "s1_outbound_capture",
        title: "1 app -> remote TCP lands on 15001 with its original destination",
        setups: vec![setup(
            injected_v6("REDIRECT"),
            vec![
                tcp_out(APP, "192.0.2.7", 80, Redirect(15001)),
                tcp_out(APP, "2001:db8::7", 80, Redirect(15001)),
            ],
        )],
    }
}

fn s2() -> Scenario {
    Scenario {
        name: "s2_proxy_bypasses",
        title: "2 proxy uid/gid 1337 reach the world directly",
        setups: vec![setup(
            injected_v6("REDIRECT"),
            vec![
                tcp_out(PROXY, "192.0.2.7", 80, Direct),
                tcp_out("2000:1337", "192.0.2.7", 80, Direct),
                tcp_out(PROXY, "2001:db8::7", 80, Direct),
            ],
        )],
    }
}

fn s3() -> Scenario {
    Scenario {
        name: "s3_inbound_redirect_and_tproxy",
        title: "3 world -> pod lands on 15006 (REDIRECT and TPROXY)",
        setups: vec![
            setup(
                injected_v6("REDIRECT"),
                vec![
                    tcp_in("10.244.1.5", 8080, Redirect(15006)),
                    tcp_in("fd00:244::5", 8080, Redirect(15006)),
                ],
            ),
            setup(
                injected_v6("TPROXY"),
                vec![
                    tcp_in("10.244.1.5", 8080, Tproxy(15006)),
                    tcp_in("fd00:244::5", 8080, Tproxy(15006)),
                ],
            ),
        ],
    }
}

/// docs/upstream.md, "The nftables text": the nft dialect's `inet` tables see IPv6.
const IPV6_OFF: &str = "with IPv6 off, upstream's inet tables still capture IPv6";

fn s4() -> Scenario {
    Scenario {
        name: "s4_inbound_port_lists",
        title: "4 -b lists and -d exclusions",
        setups: vec![
            setup(
                v4(&["-b", "7070,8080,8443"]),
                vec![
                    tcp_in("10.244.1.5", 8080, Redirect(15006)),
                    tcp_in("10.244.1.5", 9090, Direct),
                ],
            ),
            setup(
                INJECTED.to_vec(),
                vec![
                    tcp_in("10.244.1.5", 15090, Direct),
                    tcp_in("10.244.1.5", 9090, Redirect(15006)),
                    // IPv6 is off (the pod's first address is IPv4), yet the pod has IPv6.
                    tcp_in("fd00:244::5", 9090, Direct).except(
                        Dialect::Nft,
                        Redirect(15006),
                        IPV6_OFF,
                    ),
                    tcp_out(APP, "2001:db8::7", 80, Direct).except(
                        Dialect::Nft,
                        Redirect(15001),
                        IPV6_OFF,
                    ),
                ],
            ),
        ],
    }
}

fn s5() -> Scenario {
    // Lists of more than one item, so that `--compact` turns them into sets.
    Scenario {
        name: "s5_outbound_cidrs_and_ports",
        title: "5 -i, -x, -o and -q",
        setups: vec![
            setup(
                v4(&["-i", "192.0.2.0/24,198.51.100.0/24"]),
                vec![
                    tcp_out(APP, "192.0.2.7", 80, Redirect(15001)),
                    tcp_out(APP, "198.51.100.7", 80, Redirect(15001)),
                    tcp_out(APP, "10.96.0.10", 80, Direct),
                ],
            ),
            setup(
                v4(&["-i", "*", "-x", "192.0.2.7/32,198.51.100.0/24"]),
                vec![
                    tcp_out(APP, "192.0.2.7", 80, Direct),
                    tcp_out(APP, "198.51.100.7", 80, Direct),
                    tcp_out(APP, "10.96.0.10", 80, Redirect(15001)),
                ],
            ),
            setup(
                v4(&["-i", "*", "-o", "8080,8081"]),
                vec![
                    tcp_out(APP, "10.96.0.10", 8080, Direct),
                    tcp_out(APP, "10.96.0.10", 80, Redirect(15001)),
                ],
            ),
            setup(
                v4(&["-i", "192.0.2.0/24", "-q", "8080,8081"]),
                vec![
                    tcp_out(APP, "10.96.0.10", 8080, Redirect(15001)),
                    tcp_out(APP, "10.96.0.10", 80, Direct),
                ],
            ),
        ],
    }
}

fn s6() -> Scenario {
    Scenario {
        name: "s6_interfaces",
        title: "6 -c excluded and -k virtual interfaces",
        setups: vec![
            setup(
                v4(&["-i", "*", "-c", "eth1"]),
                vec![
                    // 198.51.100.7 is routed out of eth1, 192.0.2.7 out of eth0.
                    tcp_out(APP, "198.51.100.7", 80, Direct),
                    tcp_out(APP, "192.0.2.7", 80, Redirect(15001)),
                ],
            ),
            setup(
                v4(&["-i", "*", "-b", "*", "-k", "eth1"]),
                vec![
                    // Inbound over eth1 is the VM's outbound traffic.
                    tcp_in("10.245.0.5", 8080, Redirect(15001)),
                    tcp_in("10.244.1.5", 8080, Redirect(15006)),
                ],
            ),
        ],
    }
}

fn s7() -> Scenario {
    Scenario {
        name: "s7_dns",
        title: "7 DNS capture",
        setups: vec![
            setup(
                v4(&["--redirect-dns", "--dns-servers", "10.96.0.10"]),
                vec![
                    udp_out(APP, "10.96.0.10", 53, Redirect(15053)).zone(2),
                    tcp_out(APP, "10.96.0.10", 53, Redirect(15053)),
                    udp_out(APP, "192.0.2.7", 53, Direct),
                    udp_out(PROXY, "10.96.0.10", 53, Direct).zone(1),
                ],
            ),
            setup(
                v4(&["--redirect-dns", "--capture-all-dns"]),
                vec![
                    udp_out(APP, "192.0.2.7", 53, Redirect(15053)).zone(2),
                    tcp_out(APP, "192.0.2.7", 53, Redirect(15053)),
                    udp_out(PROXY, "192.0.2.7", 53, Direct).zone(1),
                ],
            ),
        ],
    }
}

fn s8() -> Scenario {
    Scenario {
        name: "s8_hairpin",
        title: "8 hairpin through the pod's own IP",
        setups: vec![setup(
            injected_v6("REDIRECT"),
            vec![
                tcp_out(PROXY, "10.244.1.5", 8080, Redirect(15006)),
                tcp_out(APP, "10.244.1.5", 8080, Direct),
            ],
        )],
    }
}

fn s9() -> Scenario {
    Scenario {
        name: "s9_owner_groups",
        title: "9 owner groups include/exclude",
        setups: vec![
            setup(
                v4(&["-i", "*", "--outbound-owner-groups", "2000"]),
                vec![
                    tcp_out("1000:2000", "192.0.2.7", 80, Redirect(15001)),
                    tcp_out("1000:3000", "192.0.2.7", 80, Direct),
                ],
            ),
            setup(
                v4(&["-i", "*", "--outbound-owner-groups-exclude", "3000"]),
                vec![
                    tcp_out("1000:3000", "192.0.2.7", 80, Direct),
                    tcp_out("1000:2000", "192.0.2.7", 80, Redirect(15001)),
                ],
            ),
        ],
    }
}

fn s10() -> Scenario {
    // The same flows before and after the clean: captured, then direct.
    let flows = |captured: bool| {
        let w = |want| if captured { want } else { Direct };
        vec![
            tcp_out(APP, "192.0.2.7", 80, w(Redirect(15001))),
            tcp_out(APP, "2001:db8::7", 80, w(Redirect(15001))),
            tcp_in("10.244.1.5", 8080, w(Tproxy(15006))),
            tcp_in("fd00:244::5", 8080, w(Tproxy(15006))),
            udp_out(APP, "10.96.0.10", 53, w(Redirect(15053))),
            tcp_out(PROXY, "10.244.1.5", 8080, w(Redirect(15006))),
        ]
    };
    let args = vec![
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
    ];
    Scenario {
        name: "s10_after_clean",
        title: "10 after clean everything reaches its real destination",
        setups: vec![Setup {
            args,
            probes: flows(true),
            after_clean: flows(false),
        }],
    }
}
