//! The in-pod policy, walked once, in the order upstream's `AppendInpodRules` emits it (its
//! iptables and nftables generators emit the same rules in the same order). The order inside
//! each chain is the policy: the first matching ACCEPT or REDIRECT wins, so every exemption
//! (ztunnel's own mark, the probe source, the HBONE port, loopback) sits above the capture it
//! exempts.
//!
//! Each rule is stated once, its matches in upstream's iptables order, and sent to a `Sink`;
//! the dialects decide what families mean for them. A rule upstream writes per family is
//! `versioned` (the IPv4 rule, then its IPv6 twin, in both dialects); one it writes once is
//! `both`. Where upstream's nft generator spells a rule differently, the rule names the
//! spelling (`spell::*`).

use super::chains::{ISTIO_OUTPUT, ISTIO_PRERT};
use super::policy::Policy;
use super::spell;
use crate::plan::builtin::{OUTPUT, PREROUTING};
use crate::plan::{MaskedMark, Match, Port, Proto, Rule, Sink, Table::*, Target, rule};
use crate::values::{Cidr, Family, IfName};

/// The conntrack zone of DNS between ztunnel and the upstream resolvers (istio/istio#33469).
const DNS_ZONE: u16 = 1;

/// DNS.
const DNS: Option<Port> = Port::new(53);

fn proto(p: Proto) -> Match {
    Match::Proto { proto: p }
}
fn module(p: Proto) -> Match {
    Match::L4Module { proto: p }
}
fn mark(m: MaskedMark, negate: bool) -> Match {
    Match::MarkMasked { negate, mark: m }
}
/// `! -d 127.0.0.1/32` / `! -d ::1/128`.
fn not_loopback(f: Family) -> Match {
    let cidr = match f {
        Family::V4 => Cidr::host(std::net::Ipv4Addr::LOCALHOST.into()),
        Family::V6 => Cidr::v6_loopback(),
    };
    Match::Dst { negate: true, cidr }
}
fn port(p: Proto, port: Port, negate: bool, source: bool) -> Match {
    if source {
        Match::Sport {
            proto: p,
            negate,
            port,
        }
    } else {
        Match::Dport {
            proto: p,
            negate,
            port,
        }
    }
}
fn redirect(port: Port) -> Target {
    Target::Redirect { port }
}

/// A rule upstream writes once per family, `build(family)` giving each.
fn versioned(out: &mut dyn Sink, build: impl Fn(Family) -> Rule) {
    out.versioned(build(Family::V4), build(Family::V6));
}

/// Walks `p` into `out`.
pub fn walk(p: &Policy, out: &mut dyn Sink) {
    jumps(p, out);
    virtual_interfaces(p, out);
    ztunnel_connmark(p, out);
    probes(p, out);
    inbound(p, out);
    restore_connmark(p, out);
    dns(p, out);
    outbound(p, out);
}

/// Jumps from the built-in chains to ours (raw only for DNS), in upstream's order.
fn jumps(p: &Policy, out: &mut dyn Sink) {
    let mut jump = |table, from, to| {
        let r = rule(table, from, vec![], Target::Jump { chain: to });
        out.both(r.nft(&spell::JUMP));
    };
    jump(Mangle, PREROUTING, ISTIO_PRERT);
    jump(Mangle, OUTPUT, ISTIO_OUTPUT);
    jump(Nat, OUTPUT, ISTIO_OUTPUT);
    if p.dns {
        jump(Raw, PREROUTING, ISTIO_PRERT);
        jump(Raw, OUTPUT, ISTIO_OUTPUT);
    }
    jump(Nat, PREROUTING, ISTIO_PRERT);
}

/// First in nat ISTIO_PRERT: a virtual interface's inbound TCP is the pod's outbound, sent to
/// ztunnel's outbound port, then out of our chain (a RETURN from ISTIO_PRERT, not from
/// PREROUTING, so others' rules still run). TCP only: ztunnel proxies no UDP.
fn virtual_interfaces(p: &Policy, out: &mut dyn Sink) {
    let iif = |n: &IfName| Match::InIface { name: n.clone() };
    for v in &p.virtual_interfaces {
        let m = vec![iif(v), proto(Proto::Tcp)];
        out.both(rule(
            Nat,
            ISTIO_PRERT,
            m.clone(),
            redirect(p.ports.outbound),
        ));
        out.both(rule(Nat, ISTIO_PRERT, m, Target::Return));
    }
}

/// A packet carrying ztunnel's mark gives its connection the connmark (ztunnel's connections
/// to the pod's own addresses come back in through PREROUTING).
fn ztunnel_connmark(p: &Policy, out: &mut dyn Sink) {
    let set = Target::SetConnMark { mark: p.connmark };
    let r = rule(Mangle, ISTIO_PRERT, vec![mark(p.ztunnel_mark, false)], set);
    out.both(r.nft(&spell::MARK_TO_CONNMARK));
}

/// The kubelet's probes, which the node SNATs to the probe source, are let in uncaptured (not
/// in ingress mode, which captures no inbound anyway), and their replies out.
fn probes(p: &Policy, out: &mut dyn Sink) {
    let tcp = || [proto(Proto::Tcp), module(Proto::Tcp)];
    if !p.ingress {
        versioned(out, |f| {
            let mut m = vec![Match::SrcAddr { addr: p.probe(f) }];
            m.extend(tcp());
            rule(Nat, ISTIO_PRERT, m, Target::Accept).nft(&spell::PROTO_FIRST)
        });
    }
    versioned(out, |f| {
        let mut m = vec![Match::DstAddr { addr: p.probe(f) }];
        m.extend(tcp());
        rule(Nat, ISTIO_OUTPUT, m, Target::Accept).nft(&spell::PROTO_FIRST)
    });
}

/// Inbound TCP not to loopback, not to HBONE (which ztunnel takes directly) and not ztunnel's
/// own goes to ztunnel's plaintext port; none in ingress mode.
fn inbound(p: &Policy, out: &mut dyn Sink) {
    if p.ingress {
        return;
    }
    versioned(out, |f| {
        let m = vec![
            not_loopback(f),
            proto(Proto::Tcp),
            port(Proto::Tcp, p.ports.inbound, true, false),
            mark(p.ztunnel_mark, true),
        ];
        let spelling = match f {
            Family::V4 => &spell::INBOUND_V4,
            Family::V6 => &spell::INBOUND_V6,
        };
        rule(Nat, ISTIO_PRERT, m, redirect(p.ports.inbound_plaintext)).nft(spelling)
    });
}

/// The pod's packets of a connection with the connmark get it back as their mark, which the
/// policy routing delivers to ztunnel on `lo`.
fn restore_connmark(p: &Policy, out: &mut dyn Sink) {
    let m = vec![Match::ConnMarkMasked { mark: p.connmark }];
    let restore = Target::RestoreMarkMasked { ctmask: u32::MAX };
    out.both(rule(Mangle, ISTIO_OUTPUT, m, restore));
}

/// With DNS captured: UDP DNS not through `lo` and TCP DNS not to loopback, not ztunnel's,
/// to the DNS proxy; ztunnel's queries and the answers to the pod in conntrack zone 1.
fn dns(p: &Policy, out: &mut dyn Sink) {
    let Some(dns) = DNS.filter(|_| p.dns) else {
        return;
    };
    let udp = vec![
        Match::NotOutIface { name: IfName::lo() },
        proto(Proto::Udp),
        mark(p.ztunnel_mark, true),
        module(Proto::Udp),
        port(Proto::Udp, dns, false, false),
    ];
    let to_proxy = redirect(p.ports.dns);
    out.both(rule(Nat, ISTIO_OUTPUT, udp, to_proxy.clone()).nft(&spell::PORT_IMPLIES_PROTO));
    versioned(out, |f| {
        let m = vec![
            not_loopback(f),
            proto(Proto::Tcp),
            port(Proto::Tcp, dns, false, false),
            mark(p.ztunnel_mark, true),
        ];
        rule(Nat, ISTIO_OUTPUT, m, to_proxy.clone()).nft(&spell::PORT_IMPLIES_PROTO)
    });
    let zone = Target::CtZone { zone: DNS_ZONE };
    for (chain, source, negate) in [(ISTIO_OUTPUT, false, false), (ISTIO_PRERT, true, true)] {
        let m = vec![
            proto(Proto::Udp),
            mark(p.ztunnel_mark, negate),
            module(Proto::Udp),
            port(Proto::Udp, dns, false, source),
        ];
        out.both(rule(Raw, chain, m, zone.clone()).nft(&spell::PORT_FIRST));
    }
}

/// Outbound: TCP with the connmark (ztunnel's connections) goes out; the pod talking to its
/// own address over `lo` stays uncaptured; every other TCP not to loopback and not ztunnel's
/// goes to ztunnel's outbound port.
fn outbound(p: &Policy, out: &mut dyn Sink) {
    let m = vec![proto(Proto::Tcp), mark(p.connmark, false)];
    out.both(rule(Nat, ISTIO_OUTPUT, m, Target::Accept));
    versioned(out, |f| {
        let m = vec![not_loopback(f), Match::OutIface { name: IfName::lo() }];
        rule(Nat, ISTIO_OUTPUT, m, Target::Accept).nft(&spell::LOOPBACK_FIRST)
    });
    versioned(out, |f| {
        let m = vec![
            not_loopback(f),
            proto(Proto::Tcp),
            mark(p.ztunnel_mark, true),
        ];
        rule(Nat, ISTIO_OUTPUT, m, redirect(p.ports.outbound)).nft(&spell::OUTBOUND)
    });
}
