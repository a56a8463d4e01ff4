//! Istio ambient's in-pod configurations as data: upstream's `GetCommonInPodTestCases` (the
//! goldens of `tests/golden/ambient/`) as `meshtables ambient` flags, for the dry-run,
//! netlink and iptables trials, and the traffic scenarios of the in-pod rules, which
//! tests/traffic.rs sends as real packets and tests/tracer.rs traces through the plan.

use std::net::IpAddr;

use meshtables::plan::{Plan, Proto};

use super::net::ip;

/// The IPv6 probe address of upstream's `constructTestConfig` (its goldens hold it; the
/// default is fd16:9254:7127:1337:ffff:ffff:ffff:ffff).
pub const TEST_PROBE_V6: &str = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164";

/// One of upstream's in-pod test cases: its golden's name and its inputs as flags.
pub struct Case {
    pub name: &'static str,
    pub args: &'static [&'static str],
}

/// `GetCommonInPodTestCases`: the global `RedirectDNS` is `--ambient-dns-capture`, the pod
/// overrides are the flags the annotations become.
pub const CASES: [Case; 6] = [
    Case {
        name: "default",
        args: &["--ambient-dns-capture"],
    },
    Case {
        name: "ingress",
        args: &["--bypass-inbound-capture"],
    },
    Case {
        name: "virtual_interfaces",
        args: &["--reroute-virtual-interfaces", "fake1s0f0,fake1s0f1"],
    },
    Case {
        name: "ingress_and_virtual_interfaces",
        args: &[
            "--bypass-inbound-capture",
            "--reroute-virtual-interfaces",
            "fake1s0f0,fake1s0f1",
        ],
    },
    Case {
        name: "dns_pod_enabled_and_off_globally",
        args: &["--ambient-dns-capture=false", "--pod-dns-capture", "true"],
    },
    Case {
        name: "dns_pod_disabled_and_on_globally",
        args: &["--ambient-dns-capture", "--pod-dns-capture", "false"],
    },
];

/// How many configurations `configurations` makes (6 cases, IPv6 off and on), as the suites
/// declare them.
pub const CONFIGURATIONS: usize = 12;

/// Every case with IPv6 off and on: the golden's name (`default`, `default_ipv6`) and
/// `ambient apply` with the case's flags (no backend flag).
pub fn configurations() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for c in &CASES {
        for v6 in [false, true] {
            let mut args: Vec<String> =
                ["ambient", "apply", "--host-probe-snat-ipv6", TEST_PROBE_V6]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend(c.args.iter().map(|s| s.to_string()));
            args.push(format!("--ambient-ipv6={v6}"));
            let name = if v6 {
                format!("{}_ipv6", c.name)
            } else {
                c.name.to_string()
            };
            out.push((name, args));
        }
    }
    out
}

/// The plan of `meshtables ARGS` (an `ambient` command line) on a machine whose `lo` has
/// IPv6.
pub fn plan(args: &[&str]) -> Result<Plan, String> {
    let argv = std::iter::once("meshtables")
        .chain(args.iter().copied())
        .map(std::ffi::OsString::from)
        .collect();
    let host = super::FakeHost::default();
    let r = meshtables::cmd::resolve_ambient_args(argv, &std::collections::HashMap::new(), &host)?;
    Ok(meshtables::profile::ambient::build(&r.policy))
}

/// ztunnel's socket mark (its `PACKET_MARK`), which the stand-in's sockets carry.
pub const ZTUNNEL_MARK: u32 = 0x539;
/// ztunnel's listeners.
pub const OUTBOUND: u16 = 15001;
pub const INBOUND_PLAINTEXT: u16 = 15006;
pub const HBONE: u16 = 15008;
pub const DNS_PROXY: u16 = 15053;
/// The node's SNAT source for the kubelet's probes (the default).
pub const PROBE_V4: &str = "169.254.7.127";

/// Who sends a flow in an ambient scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The app, uid 1000, unmarked.
    App,
    /// ztunnel's own socket: SO_MARK 0x539.
    Ztunnel,
    /// A client in the world, from its address on the link that reaches the destination.
    World,
    /// The kubelet's probe as the node SNATs it: from the probe source.
    Probe,
}

/// Where a flow must land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lands {
    /// Where it was sent: the world's server, or the app's / ztunnel's listener at that port.
    Direct,
    /// REDIRECTed to ztunnel's listener at this port, the original destination kept.
    Ztunnel(u16),
}

/// One flow of an ambient scenario.
#[derive(Debug, Clone)]
pub struct Flow {
    pub from: Sender,
    pub proto: Proto,
    pub dst: IpAddr,
    pub port: u16,
    pub lands: Lands,
    /// The conntrack zone its first packet gets (the tracer checks it).
    pub zone: Option<u16>,
}

impl Flow {
    pub fn label(&self) -> String {
        format!(
            "{} {:?} -> {}:{}",
            self.proto.name(),
            self.from,
            self.dst,
            self.port
        )
    }
}

fn flow(from: Sender, proto: Proto, dst: &str, port: u16, lands: Lands) -> Flow {
    Flow {
        from,
        proto,
        dst: ip(dst),
        port,
        lands,
        zone: None,
    }
}

/// One in-pod configuration and the flows sent through it.
pub struct Scenario {
    /// The trial name's first part: `a1_default`.
    pub name: &'static str,
    /// `ambient apply` and these flags (no backend flag).
    pub args: &'static [&'static str],
    pub flows: Vec<Flow>,
}

use Lands::{Direct, Ztunnel};
use Sender::{App, Probe, World};

/// How many scenarios `scenarios` holds, as the suites declare them.
pub const SCENARIOS: usize = 4;

/// The ambient scenarios: every one with IPv6 on (both families exercised).
pub fn scenarios() -> Vec<Scenario> {
    let tcp = Proto::Tcp;
    let udp = Proto::Udp;
    vec![
        Scenario {
            name: "a1_default",
            args: &["--ambient-dns-capture", "--ambient-ipv6"],
            flows: vec![
                // The pod's outbound TCP lands on ztunnel's outbound port.
                flow(App, tcp, "192.0.2.7", 80, Ztunnel(OUTBOUND)),
                flow(App, tcp, "2001:db8::7", 80, Ztunnel(OUTBOUND)),
                // Inbound TCP lands on the plaintext port, HBONE goes to ztunnel directly.
                flow(World, tcp, "10.244.1.5", 8080, Ztunnel(INBOUND_PLAINTEXT)),
                flow(World, tcp, "fd00:244::5", 8080, Ztunnel(INBOUND_PLAINTEXT)),
                flow(World, tcp, "10.244.1.5", HBONE, Direct),
                flow(World, tcp, "fd00:244::5", HBONE, Direct),
                // DNS to the DNS proxy; ztunnel's own query leaves, in conntrack zone 1.
                Flow {
                    zone: None,
                    ..flow(App, udp, "10.96.0.10", 53, Ztunnel(DNS_PROXY))
                },
                flow(App, tcp, "10.96.0.10", 53, Ztunnel(DNS_PROXY)),
                Flow {
                    zone: Some(1),
                    ..flow(Sender::Ztunnel, udp, "10.96.0.10", 53, Direct)
                },
                // ztunnel's own connections are never redirected.
                flow(Sender::Ztunnel, tcp, "192.0.2.7", 80, Direct),
                flow(Sender::Ztunnel, tcp, "2001:db8::7", 80, Direct),
                // The kubelet's probe, SNATed by the node, reaches the app.
                flow(Probe, tcp, "10.244.1.5", 8080, Direct),
                // The app to its own address over lo is not captured.
                flow(App, tcp, "10.244.1.5", 8080, Direct),
            ],
        },
        Scenario {
            name: "a2_ingress",
            args: &["--bypass-inbound-capture", "--ambient-ipv6"],
            flows: vec![
                flow(World, tcp, "10.244.1.5", 8080, Direct),
                flow(World, tcp, "fd00:244::5", 8080, Direct),
                flow(App, tcp, "192.0.2.7", 80, Ztunnel(OUTBOUND)),
                // No DNS capture (the node's default is off).
                flow(App, udp, "10.96.0.10", 53, Direct),
            ],
        },
        Scenario {
            name: "a3_dns_off_for_the_pod",
            args: &[
                "--ambient-dns-capture",
                "--pod-dns-capture",
                "false",
                "--ambient-ipv6",
            ],
            flows: vec![
                flow(App, udp, "10.96.0.10", 53, Direct),
                flow(App, tcp, "10.96.0.10", 53, Ztunnel(OUTBOUND)),
                flow(World, tcp, "10.244.1.5", 8080, Ztunnel(INBOUND_PLAINTEXT)),
            ],
        },
        Scenario {
            name: "a4_virtual_interfaces",
            args: &["--reroute-virtual-interfaces", "eth1", "--ambient-ipv6"],
            flows: vec![
                // Inbound over eth1 is the VM's outbound traffic.
                flow(World, tcp, "10.245.0.5", 8080, Ztunnel(OUTBOUND)),
                flow(World, tcp, "10.244.1.5", 8080, Ztunnel(INBOUND_PLAINTEXT)),
            ],
        },
    ]
}

/// The first packet of an ambient flow, for the tracer.
pub fn packet(f: &Flow) -> super::tracer::Packet {
    use super::tracer::{Conn, Origin, Packet};
    let arriving = |src: IpAddr| Origin::Arriving {
        iface: super::net::client_of(f.dst).0.pod_if,
        src,
    };
    let (origin, mark) = match f.from {
        Sender::App => (
            Origin::Local {
                uid: 1000,
                gid: 1000,
            },
            0,
        ),
        Sender::Ztunnel => (Origin::Local { uid: 0, gid: 0 }, ZTUNNEL_MARK),
        Sender::World => (arriving(super::net::client_of(f.dst).1), 0),
        Sender::Probe => (arriving(ip(PROBE_V4)), 0),
    };
    Packet {
        origin,
        proto: f.proto,
        dst: std::net::SocketAddr::new(f.dst, f.port),
        sport: 40000,
        conn: Conn::New,
        mark,
        connmark: 0,
    }
}

/// Upstream's `GetCommonHostTestCases` (one case, `hostprobe`; its `RedirectDNS` does not
/// touch the node's rules), IPv6 off and on: the golden's name and `ambient host apply` for
/// each dialect. Upstream's nftables test takes `constructTestConfig`'s IPv6 probe address
/// and a kubelet uid of 1000 from its stub; its iptables test sets the default address.
pub fn host_configurations() -> Vec<(String, Vec<String>, Vec<String>)> {
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut out = Vec::new();
    for v6 in [false, true] {
        let v6flag = format!("--ambient-ipv6={v6}");
        let mut nft = owned(&[
            "ambient",
            "host",
            "apply",
            "--kubelet-uid",
            "1000",
            "--host-probe-snat-ipv6",
            TEST_PROBE_V6,
            "--native-nftables",
        ]);
        nft.push(v6flag.clone());
        let mut ipt = owned(&["ambient", "host", "apply"]);
        ipt.push(v6flag);
        let name = if v6 { "hostprobe_ipv6" } else { "hostprobe" };
        out.push((name.to_string(), nft, ipt));
    }
    out
}
