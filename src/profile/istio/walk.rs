//! The interception policy, walked once, in the order upstream's iptables generator emits it
//! (docs/upstream.md, "Rule order"). The order inside each chain *is* the policy: the first
//! matching RETURN wins, so every exemption sits above the capture it exempts.
//!
//! The walk states each rule once (its matches in upstream's iptables order) and sends it to a
//! `Sink`; the dialects (`xtables`, `nft`) decide what families, insert positions and match
//! order mean for them. Where upstream's nft generator spells a rule differently, the rule
//! names the spelling (`spell::HAIRPIN`, ...), applied by the nft dialect.

use super::chains::*;
use super::policy::{Dns, Owner, Policy};
use super::spell;
use crate::plan::builtin::*;
use crate::plan::{CtState, Match, NftSpelling, Proto, Sink, Table::*, Target, rule};
use crate::values::{Cidr, Family, IfName, InboundPorts, Mark, OwnerGroups, Port};

fn tcp() -> Match {
    Match::Proto { proto: Proto::Tcp }
}
fn udp() -> Match {
    Match::Proto { proto: Proto::Udp }
}
fn iif(n: &IfName) -> Match {
    Match::InIface { name: n.clone() }
}
fn oif(n: &IfName) -> Match {
    Match::OutIface { name: n.clone() }
}
fn dst(c: Cidr) -> Match {
    Match::Dst {
        negate: false,
        cidr: c,
    }
}
fn not_dst(c: Cidr) -> Match {
    Match::Dst {
        negate: true,
        cidr: c,
    }
}
fn src(c: Cidr) -> Match {
    Match::Src {
        negate: false,
        cidr: c,
    }
}
fn dport(proto: Proto, port: Port) -> Match {
    Match::Dport {
        proto,
        negate: false,
        port,
    }
}
fn not_dport(proto: Proto, port: Port) -> Match {
    Match::Dport {
        proto,
        negate: true,
        port,
    }
}
fn sport(proto: Proto, port: Port) -> Match {
    Match::Sport {
        proto,
        negate: false,
        port,
    }
}
fn mark(m: Mark, negate: bool) -> Match {
    Match::Mark { negate, mark: m }
}
fn established() -> Match {
    Match::CtState {
        states: vec![CtState::Related, CtState::Established],
    }
}
fn owner(o: &Owner, negate: bool) -> Match {
    match o {
        Owner::Uid(u) => Match::Uid { negate, uid: *u },
        Owner::Gid(g) => Match::Gid {
            negate,
            gid: g.clone(),
        },
    }
}
/// A port list as the walk states it: one match per port, repeats included (upstream's
/// rules, byte for byte), or with `--compact` one list match that names each port once, in
/// the order given (a set holds an element once: the kernel refuses a second copy with
/// EEXIST); a list of one port stays a plain port match.
fn ports_of(p: &Policy, proto: Proto, ports: &[Port]) -> Vec<Match> {
    if !p.compact {
        return ports.iter().map(|port| dport(proto, *port)).collect();
    }
    let mut seen = std::collections::HashSet::with_capacity(ports.len());
    let once: Vec<Port> = ports.iter().copied().filter(|p| seen.insert(*p)).collect();
    match once.as_slice() {
        [] => Vec::new(),
        [one] => vec![dport(proto, *one)],
        _ => vec![Match::DportsIn { proto, ports: once }],
    }
}

/// A CIDR list of one family: one match per CIDR (upstream), or with `--compact` one list
/// match without the CIDRs another one contains (they say nothing more; a set holds no
/// overlaps).
fn cidrs_of(p: &Policy, cidrs: &[Cidr]) -> Vec<Match> {
    if !p.compact || cidrs.len() < 2 {
        return cidrs.iter().map(|c| dst(*c)).collect();
    }
    let merged = without_contained(cidrs);
    match merged.as_slice() {
        [one] => vec![dst(*one)],
        _ => vec![Match::DstIn { cidrs: merged }],
    }
}

/// The CIDRs (one family) that no other CIDR of the list contains, in address order,
/// normalized to their network address: the same addresses, no overlap. O(n log n): sorted by
/// network then prefix length, a prefix is kept unless the last kept one contains it.
fn without_contained(cidrs: &[Cidr]) -> Vec<Cidr> {
    let mut nets: Vec<ipnet::IpNet> = cidrs.iter().map(|c| c.0.trunc()).collect();
    nets.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut out: Vec<ipnet::IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if !out.last().is_some_and(|last| last.contains(&n)) {
            out.push(n);
        }
    }
    out.into_iter().map(Cidr).collect()
}

fn jump(c: crate::plan::Chain) -> Target {
    Target::Jump { chain: c }
}

/// Sends `p`'s rules to `out`, in upstream's order.
pub fn walk(p: &Policy, out: &mut dyn Sink) {
    interfaces(p, out);
    drop_invalid(p, out);
    redirect_chains(p, out);
    inbound(p, out);
    outbound_exemptions(p, out);
    owners(p, out);
    owner_groups(p, out);
    if p.dns != Dns::Off {
        dns(p, out);
    }
    outbound_capture(p, out);
    if p.tproxy() {
        tproxy_tail(p, out);
    }
}

/// Steps 1-2. Excluded interfaces RETURN before anything else can capture their traffic (in
/// TPROXY mode inbound capture lives in mangle, so the exemption is repeated there). Virtual
/// (VM) interfaces' inbound traffic is not inbound for the pod: inserted at the head, it
/// escapes the inbound capture appended below.
fn interfaces(p: &Policy, out: &mut dyn Sink) {
    let tables: &[_] = if p.tproxy() { &[Nat, Mangle] } else { &[Nat] };
    for t in tables {
        for x in &p.exclude_interfaces {
            out.both(rule(*t, PREROUTING, vec![iif(x)], Target::Return));
            out.both(rule(*t, OUTPUT, vec![oif(x)], Target::Return));
        }
    }
    for k in &p.kube_virt_interfaces {
        out.both(rule(Nat, PREROUTING, vec![iif(k)], Target::Return).insert(0));
    }
}

/// Step 3: drop out-of-window packets instead of letting them reset the connection.
fn drop_invalid(p: &Policy, out: &mut dyn Sink) {
    if p.drop_invalid {
        let invalid = Match::CtState {
            states: vec![CtState::Invalid],
        };
        out.both(
            rule(Mangle, PREROUTING, vec![invalid], jump(ISTIO_DROP)).nft(&spell::DROP_INVALID),
        );
        out.both(rule(Mangle, ISTIO_DROP, vec![], Target::Drop));
    }
}

/// Steps 4-6: the tunnel port is never captured; the two redirect chains everything jumps to.
fn redirect_chains(p: &Policy, out: &mut dyn Sink) {
    let tunnel = vec![tcp(), dport(Proto::Tcp, p.inbound_tunnel_port)];
    out.both(rule(Nat, ISTIO_INBOUND, tunnel, Target::Return));
    let to = |port| Target::Redirect { port };
    out.both(rule(Nat, ISTIO_REDIRECT, vec![tcp()], to(p.proxy_port)));
    out.both(rule(
        Nat,
        ISTIO_IN_REDIRECT,
        vec![tcp()],
        to(p.inbound_capture_port),
    ));
}

/// Step 7: inbound capture, only when some port is captured. TPROXY: established flows are
/// marked and accepted (policy routing delivers them to the local socket), new ones are
/// TPROXY'd, except to loopback.
fn inbound(p: &Policy, out: &mut dyn Sink) {
    if p.inbound_ports.is_empty() {
        return;
    }
    let t = if p.tproxy() { Mangle } else { Nat };
    if p.tproxy() {
        let m = p.tproxy_mark;
        out.both(rule(
            Mangle,
            ISTIO_DIVERT,
            vec![],
            Target::SetMark { mark: m },
        ));
        out.both(rule(Mangle, ISTIO_DIVERT, vec![], Target::Accept));
        let capture = Target::Tproxy {
            port: p.inbound_capture_port,
            mark: m,
        };
        out.versioned(
            rule(
                Mangle,
                ISTIO_TPROXY,
                vec![not_dst(p.lo_dst(Family::V4)), tcp()],
                capture.clone(),
            )
            .nft(&spell::TPROXY_CAPTURE),
            rule(
                Mangle,
                ISTIO_TPROXY,
                vec![not_dst(p.lo_dst(Family::V6)), tcp()],
                capture,
            )
            .nft(&spell::TPROXY_CAPTURE),
        );
    }
    out.both(rule(t, PREROUTING, vec![tcp()], jump(ISTIO_INBOUND)));
    let capture = if p.tproxy() {
        ISTIO_TPROXY
    } else {
        ISTIO_IN_REDIRECT
    };
    match &p.inbound_ports {
        InboundPorts::All => {
            for port in ports_of(p, Proto::Tcp, &p.local_exclude_ports) {
                let m = vec![tcp(), port];
                out.both(rule(t, ISTIO_INBOUND, m, Target::Return));
            }
            if p.tproxy() {
                let m = vec![tcp(), established()];
                out.both(rule(t, ISTIO_INBOUND, m, jump(ISTIO_DIVERT)));
            }
            out.both(rule(t, ISTIO_INBOUND, vec![tcp()], jump(capture)));
        }
        InboundPorts::List(ports) => {
            for port in ports_of(p, Proto::Tcp, ports) {
                if p.tproxy() {
                    let m = vec![tcp(), port.clone(), established()];
                    out.both(
                        rule(t, ISTIO_INBOUND, m, jump(ISTIO_DIVERT))
                            .nft(&spell::ESTABLISHED_FIRST),
                    );
                }
                let m = vec![tcp(), port];
                out.both(rule(t, ISTIO_INBOUND, m, jump(capture)));
            }
        }
    }
}

/// Steps 8-10: all locally generated traffic goes through ISTIO_OUTPUT (any protocol: DNS
/// too); excluded outbound ports leave before the loopback handling can redirect them; Envoy's
/// inbound passthrough binds 127.0.0.6 / ::6: never capture it again.
fn outbound_exemptions(p: &Policy, out: &mut dyn Sink) {
    out.both(rule(Nat, OUTPUT, vec![], jump(ISTIO_OUTPUT)));
    // Upstream: per port, TCP then UDP. Compact: all TCP ports, then all UDP ports (the order
    // of RETURNs does not matter; Istio PR #59544's multiport form).
    let excluded: Vec<(Match, Match)> = if p.compact {
        [(Proto::Tcp, tcp()), (Proto::Udp, udp())]
            .into_iter()
            .flat_map(|(proto, pm)| {
                ports_of(p, proto, &p.outbound_ports_exclude)
                    .into_iter()
                    .map(move |m| (pm.clone(), m))
            })
            .collect()
    } else {
        p.outbound_ports_exclude
            .iter()
            .flat_map(|port| {
                [
                    (tcp(), dport(Proto::Tcp, *port)),
                    (udp(), dport(Proto::Udp, *port)),
                ]
            })
            .collect()
    };
    for (pm, port) in excluded {
        out.both(
            rule(Nat, ISTIO_OUTPUT, vec![pm, port], Target::Return).nft(&spell::PORT_IMPLIES_PROTO),
        );
    }
    let lo = IfName::lo();
    out.versioned(
        rule(
            Nat,
            ISTIO_OUTPUT,
            vec![oif(&lo), src(Cidr::passthrough(Family::V4))],
            Target::Return,
        ),
        rule(
            Nat,
            ISTIO_OUTPUT,
            vec![oif(&lo), src(Cidr::passthrough(Family::V6))],
            Target::Return,
        ),
    );
}

/// Steps 11-12, per proxy uid, then per gid: (a) the proxy talking to the pod's own
/// non-loopback address over lo is the app→Envoy→Envoy→app hairpin: capture it inbound;
/// (b) other lo traffic not from the proxy is app-to-self: leave it (unless `-i` lists a
/// loopback range); (c) everything else from the proxy leaves uncaptured.
fn owners(p: &Policy, out: &mut dyn Sink) {
    let lo = IfName::lo();
    let dns = p.dns != Dns::Off;
    for o in p.owners() {
        // Upstream's quirk, kept: only the uid rule excludes port 53 (via multiport).
        let ports = if dns && matches!(o, Owner::Uid(_)) {
            Match::DportsNotIn {
                proto: Proto::Tcp,
                ports: vec![Port::DNS, p.inbound_tunnel_port],
            }
        } else {
            not_dport(Proto::Tcp, p.inbound_tunnel_port)
        };
        let hairpin = |f| {
            let m = vec![
                oif(&lo),
                not_dst(p.lo_dst(f)),
                tcp(),
                ports.clone(),
                owner(&o, false),
            ];
            rule(Nat, ISTIO_OUTPUT, m, jump(ISTIO_IN_REDIRECT)).nft(&spell::HAIRPIN)
        };
        out.versioned(hairpin(Family::V4), hairpin(Family::V6));
        if !p.outbound_include.has_loopback() {
            // With DNS capture, TCP/53 to a resolver on localhost must still be captured.
            let m = if dns {
                vec![
                    oif(&lo),
                    tcp(),
                    not_dport(Proto::Tcp, Port::DNS),
                    owner(&o, true),
                ]
            } else {
                vec![oif(&lo), owner(&o, true)]
            };
            out.both(rule(Nat, ISTIO_OUTPUT, m, Target::Return));
        }
        out.both(rule(
            Nat,
            ISTIO_OUTPUT,
            vec![owner(&o, false)],
            Target::Return,
        ));
    }
}

/// Step 13: RETURN the excluded groups, or RETURN everything in none of the included groups.
fn owner_groups(p: &Policy, out: &mut dyn Sink) {
    let gid = |g: &crate::values::Group, negate| Match::Gid {
        negate,
        gid: g.clone(),
    };
    match &p.owner_groups_include {
        OwnerGroups::All => {
            for g in &p.owner_groups_exclude {
                out.both(rule(Nat, ISTIO_OUTPUT, vec![gid(g, false)], Target::Return));
            }
        }
        OwnerGroups::List(groups) => {
            let m = groups.iter().map(|g| gid(g, true)).collect();
            out.both(rule(Nat, ISTIO_OUTPUT, m, Target::Return));
        }
    }
}

/// Step 14, after the proxy's own traffic has returned (so the agent's upstream queries are
/// not looped back to itself): redirect DNS to the agent, and split its UDP flows into two
/// conntrack zones so the app→agent and agent→resolver legs never share an entry.
fn dns(p: &Policy, out: &mut dyn Sink) {
    let all = p.dns == Dns::All;
    let servers = |f| p.dns.servers(f);
    let has = [
        all || !servers(Family::V4).is_empty(),
        all || !servers(Family::V6).is_empty(),
    ];
    out.both(rule(Raw, OUTPUT, vec![], jump(ISTIO_OUTPUT_DNS)));
    out.where_any(has, rule(Nat, ISTIO_OUTPUT, vec![], jump(ISTIO_OUTPUT_DNS)));
    let to_agent = Target::Redirect {
        port: Port::DNS_PROXY,
    };
    for (proto, pm) in [(Proto::Tcp, tcp()), (Proto::Udp, udp())] {
        if all {
            // Upstream's nft generator keeps `meta l4proto tcp` for TCP and drops it for UDP.
            let spelling = match proto {
                Proto::Tcp => &NftSpelling::AS_IPTABLES,
                Proto::Udp => &spell::PORT_IMPLIES_PROTO,
            };
            let m = vec![pm, dport(proto, Port::DNS)];
            out.both(rule(Nat, ISTIO_OUTPUT_DNS, m, to_agent.clone()).nft(spelling));
            continue;
        }
        for f in Family::BOTH {
            for s in servers(f) {
                let m = vec![pm.clone(), dport(proto, Port::DNS), dst(s)];
                let r = rule(Nat, ISTIO_OUTPUT_DNS, m, to_agent.clone()).nft(&spell::SERVER_FIRST);
                out.family(f, r);
            }
        }
    }
    let zone = |z| Target::CtZone { zone: z };
    // The agent's own queries upstream: zone 1; its answers to apps: zone 2.
    for o in p.owners() {
        let m = vec![udp(), dport(Proto::Udp, Port::DNS), owner(&o, false)];
        out.both(rule(Raw, ISTIO_OUTPUT_DNS, m, zone(1)).nft(&spell::PORT_IMPLIES_PROTO));
        let m = vec![udp(), sport(Proto::Udp, Port::DNS_PROXY), owner(&o, false)];
        out.both(rule(Raw, ISTIO_OUTPUT_DNS, m, zone(2)).nft(&spell::PORT_IMPLIES_PROTO));
    }
    // Apps' queries: zone 2; resolvers' answers (raw ISTIO_INBOUND, not nat's): zone 1.
    out.where_any(has, rule(Raw, PREROUTING, vec![], jump(ISTIO_INBOUND)));
    let implied = &spell::PORT_IMPLIES_PROTO;
    if all {
        let m = vec![udp(), dport(Proto::Udp, Port::DNS)];
        out.both(rule(Raw, ISTIO_OUTPUT_DNS, m, zone(2)).nft(implied));
        let m = vec![udp(), sport(Proto::Udp, Port::DNS)];
        out.both(rule(Raw, ISTIO_INBOUND, m, zone(1)).nft(implied));
        return;
    }
    for f in Family::BOTH {
        for s in servers(f) {
            let m = vec![udp(), dport(Proto::Udp, Port::DNS), dst(s)];
            out.family(f, rule(Raw, ISTIO_OUTPUT_DNS, m, zone(2)).nft(implied));
            let m = vec![udp(), sport(Proto::Udp, Port::DNS), src(s)];
            out.family(f, rule(Raw, ISTIO_INBOUND, m, zone(1)).nft(implied));
        }
    }
}

/// Steps 15-18: loopback and excluded destinations leave uncaptured; listed ports are always
/// captured; then everything, or the listed CIDRs, is captured. VM interfaces' inbound traffic
/// to those destinations is captured as outbound (inserted at the head of PREROUTING).
fn outbound_capture(p: &Policy, out: &mut dyn Sink) {
    out.versioned(
        rule(
            Nat,
            ISTIO_OUTPUT,
            vec![dst(p.lo_dst(Family::V4))],
            Target::Return,
        ),
        rule(
            Nat,
            ISTIO_OUTPUT,
            vec![dst(p.lo_dst(Family::V6))],
            Target::Return,
        ),
    );
    for f in Family::BOTH {
        for c in cidrs_of(p, p.outbound_exclude.of(f)) {
            out.family(f, rule(Nat, ISTIO_OUTPUT, vec![c], Target::Return));
        }
    }
    for port in ports_of(p, Proto::Tcp, &p.outbound_ports_include) {
        let m = vec![tcp(), port];
        out.both(rule(Nat, ISTIO_OUTPUT, m, jump(ISTIO_REDIRECT)).nft(&spell::PORT_IMPLIES_PROTO));
    }
    if p.outbound_include.all {
        out.both(rule(Nat, ISTIO_OUTPUT, vec![], jump(ISTIO_REDIRECT)));
        for k in &p.kube_virt_interfaces {
            out.both(rule(Nat, PREROUTING, vec![iif(k)], jump(ISTIO_REDIRECT)).insert(0));
        }
        return;
    }
    for f in Family::BOTH {
        for c in cidrs_of(p, p.outbound_include.of(f)) {
            for k in &p.kube_virt_interfaces {
                let m = vec![iif(k), c.clone()];
                out.family(f, rule(Nat, PREROUTING, m, jump(ISTIO_REDIRECT)).insert(0));
            }
            out.family(f, rule(Nat, ISTIO_OUTPUT, vec![c], jump(ISTIO_REDIRECT)));
        }
    }
}

/// Step 19, whenever the mode is TPROXY (even with `-b` empty, as upstream): remember the mark
/// Envoy's original_src sets on the connection; give the proxy's hairpin to the pod IP the
/// outbound mark so inbound capture won't loop it; loop guards at the head of mangle
/// ISTIO_INBOUND.
fn tproxy_tail(p: &Policy, out: &mut dyn Sink) {
    let m = p.tproxy_mark;
    let lo = IfName::lo();
    out.both(rule(
        Mangle,
        PREROUTING,
        vec![tcp(), mark(m, false)],
        Target::SaveMark,
    ));
    let ret = vec![tcp(), oif(&lo), mark(m, false)];
    out.both(rule(Mangle, OUTPUT, ret, Target::Return).nft(&spell::LOOPBACK_FIRST));
    for o in p.owners() {
        let outbound = |f| {
            let mm = vec![not_dst(p.lo_dst(f)), tcp(), oif(&lo), owner(&o, false)];
            let set = Target::SetMark {
                mark: Mark::OUTBOUND,
            };
            rule(Mangle, OUTPUT, mm, set).nft(&spell::OUTBOUND_MARK)
        };
        out.versioned(outbound(Family::V4), outbound(Family::V6));
    }
    let restore = vec![tcp(), Match::ConnMark { mark: m }];
    out.both(rule(Mangle, OUTPUT, restore, Target::RestoreMark));
    out.both(
        rule(
            Mangle,
            ISTIO_INBOUND,
            vec![tcp(), mark(m, false)],
            Target::Return,
        )
        .insert(0),
    );
    let passthrough = |f| {
        let mm = vec![tcp(), src(Cidr::passthrough(f)), iif(&lo)];
        rule(Mangle, ISTIO_INBOUND, mm, Target::Return)
            .insert(1)
            .nft(&spell::PASSTHROUGH_GUARD)
    };
    out.versioned(passthrough(Family::V4), passthrough(Family::V6));
    let guard = vec![tcp(), iif(&lo), mark(Mark::OUTBOUND, true)];
    out.both(
        rule(Mangle, ISTIO_INBOUND, guard, Target::Return)
            .insert(2)
            .nft(&spell::LOOPBACK_FIRST),
    );
}

#[cfg(test)]
mod tests {
    use super::super::testing::policy;
    use super::*;
    use crate::plan::{At, Rule};

    /// A sink that records what the walk sent, in order.
    #[derive(Default)]
    struct Record(Vec<(&'static str, Rule)>);

    impl Sink for Record {
        fn both(&mut self, r: Rule) {
            self.0.push(("both", r));
        }
        fn family(&mut self, f: Family, r: Rule) {
            self.0.push((if f == Family::V4 { "v4" } else { "v6" }, r));
        }
        fn versioned(&mut self, v4: Rule, v6: Rule) {
            self.0.push(("v4", v4));
            self.0.push(("v6", v6));
        }
        fn where_any(&mut self, _when: [bool; 2], r: Rule) {
            self.0.push(("any", r));
        }
    }

    fn walked(args: &[&str]) -> Vec<(&'static str, Rule)> {
        let mut rec = Record::default();
        walk(&policy(args), &mut rec);
        rec.0
    }

    fn position(rules: &[(&str, Rule)], pred: impl Fn(&Rule) -> bool) -> usize {
        rules
            .iter()
            .position(|(_, r)| pred(r))
            .expect("rule present")
    }

    #[test]
    fn exemptions_sit_above_the_captures_they_exempt() {
        let r = walked(&["-i", "*", "-o", "25", "-x", "10.0.0.0/8", "-q", "8443"]);
        let port_exempt = position(&r, |r| {
            r.target == Target::Return
                && r.matches
                    .iter()
                    .any(|m| matches!(m, Match::Dport { port, .. } if port.get() == 25))
        });
        let owner_return = position(&r, |r| {
            r.matches
                .iter()
                .any(|m| matches!(m, Match::Uid { negate: false, .. }))
                && r.target == Target::Return
        });
        let cidr_exempt = position(&r, |r| {
            r.target == Target::Return && r.matches.iter().any(|m| matches!(m, Match::Dst { negate: false, cidr } if cidr.to_string() == "10.0.0.0/8"))
        });
        let capture_all = position(&r, |r| {
            r.chain == ISTIO_OUTPUT && r.matches.is_empty() && r.target == jump(ISTIO_REDIRECT)
        });
        assert!(
            port_exempt < owner_return,
            "excluded ports leave before the owner rules"
        );
        assert!(owner_return < cidr_exempt && cidr_exempt < capture_all);
    }

    #[test]
    fn only_the_uid_rule_excludes_dns_by_multiport() {
        let r = walked(&[
            "-u",
            "1337",
            "-g",
            "1337",
            "--redirect-dns",
            "--capture-all-dns",
        ]);
        let hairpins: Vec<&Rule> = r
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.target == jump(ISTIO_IN_REDIRECT) && r.chain == ISTIO_OUTPUT)
            .collect();
        let multiport = |r: &&&Rule| {
            r.matches
                .iter()
                .any(|m| matches!(m, Match::DportsNotIn { .. }))
        };
        assert_eq!(hairpins.len(), 4, "uid and gid, each versioned");
        assert_eq!(
            hairpins.iter().filter(multiport).count(),
            2,
            "the uid rules only"
        );
        assert!(hairpins.iter().all(|r| r.nft == &spell::HAIRPIN));
    }

    #[test]
    fn the_tproxy_tail_is_there_even_without_inbound_ports() {
        let r = walked(&["-m", "TPROXY"]);
        assert!(r.iter().any(|(_, r)| r.target == Target::SaveMark));
        let guards: Vec<At> = r
            .iter()
            .filter(|(_, r)| r.table == Mangle && r.chain == ISTIO_INBOUND)
            .map(|(_, r)| r.at)
            .collect();
        assert_eq!(
            guards,
            [At::Insert(0), At::Insert(1), At::Insert(1), At::Insert(2)]
        );
        assert!(
            !r.iter().any(|(_, r)| r.chain == ISTIO_TPROXY),
            "no capture without -b"
        );
    }

    /// The `Dport`/`DportsIn` port lists of the walk's rules, in order.
    fn port_lists(rules: &[(&str, Rule)]) -> Vec<Vec<u16>> {
        rules
            .iter()
            .flat_map(|(_, r)| &r.matches)
            .filter_map(|m| match m {
                Match::DportsIn { ports, .. } => Some(ports.iter().map(|p| p.get()).collect()),
                Match::Dport {
                    negate: false,
                    port,
                    ..
                } => Some(vec![port.get()]),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn compact_lists_name_each_port_once() {
        let args = ["-b", "80,80,443,80", "-q", "8443,8443", "-o", "25,587,25"];
        let compact: Vec<&str> = args.iter().copied().chain(["--compact"]).collect();
        let lists = port_lists(&walked(&compact));
        assert!(lists.contains(&vec![80, 443]), "{lists:?}");
        assert!(lists.contains(&vec![8443]), "a list of one port: {lists:?}");
        assert!(lists.contains(&vec![25, 587]), "{lists:?}");
        assert!(
            lists.iter().all(|l| {
                let mut u = l.clone();
                u.sort_unstable();
                u.dedup();
                u.len() == l.len()
            }),
            "a port twice in one list: {lists:?}"
        );
        // Without --compact the rules repeat, as upstream's do.
        let plain = port_lists(&walked(&args));
        let count = |port: u16| plain.iter().filter(|l| **l == [port]).count();
        assert_eq!(count(443), 1, "{plain:?}");
        assert_eq!(count(80), 3, "{plain:?}");
        assert_eq!(count(8443), 2, "{plain:?}");
    }

    #[test]
    fn dns_jumps_are_collapsible_and_servers_per_family() {
        let r = walked(&[
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10,fd00::a",
            "--enable-ipv6",
            "true",
        ]);
        let any: Vec<&Rule> = r
            .iter()
            .filter(|(k, _)| *k == "any")
            .map(|(_, r)| r)
            .collect();
        assert_eq!(
            any.len(),
            2,
            "nat ISTIO_OUTPUT -> DNS and raw PREROUTING -> ISTIO_INBOUND"
        );
        let per_family = r
            .iter()
            .filter(|(k, r)| {
                *k == "v6"
                    && r.target
                        == Target::Redirect {
                            port: Port::DNS_PROXY,
                        }
            })
            .count();
        assert_eq!(per_family, 2, "TCP and UDP to the IPv6 resolver");
    }
}
