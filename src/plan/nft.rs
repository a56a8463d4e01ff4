//! The native nftables ruleset, in the order upstream's nftables `Run` emits it (docs/upstream.md, "The nftables text").
//!
//! It mirrors the xtables steps with three structural differences that come from `inet`
//! tables: rules shared by both families are emitted once; a rule that differs per family
//! is emitted as an IPv4 rule immediately followed by its IPv6 twin; and inserts use nft's
//! 0-based index, fixed up (as upstream does) against the rules already emitted, so an
//! insert into an empty or short chain becomes an append.

use super::build::*;
use super::*;
use crate::config::{InboundPorts, OwnerGroups};

/// Chains each table declares, in upstream's fixed order.
fn chain_order(t: Table) -> &'static [Chain] {
    use Chain::*;
    match t {
        Table::Nat => &[
            Prerouting,
            Output,
            IstioInbound,
            IstioRedirect,
            IstioInRedirect,
            IstioOutput,
            IstioOutputDns,
        ],
        Table::Mangle => &[
            Prerouting,
            Output,
            IstioDivert,
            IstioTproxy,
            IstioInbound,
            IstioDrop,
        ],
        Table::Raw => &[Prerouting, Output, IstioInbound, IstioOutputDns],
        Table::Filter => &[],
    }
}

struct Nft {
    v6: bool,
    rules: Vec<(Table, NftRule)>,
}

impl Nft {
    fn add(
        &mut self,
        t: Table,
        chain: Chain,
        fam: Option<Family>,
        index: Option<u32>,
        matches: Vec<Match>,
        target: Target,
    ) {
        if fam == Some(Family::V6) && !self.v6 {
            return;
        }
        let position = index.map_or(Position::Append, Position::Insert);
        self.rules.push((
            t,
            NftRule {
                chain,
                position,
                family: fam,
                matches,
                target,
            },
        ));
    }
    fn a(&mut self, t: Table, c: Chain, m: Vec<Match>, target: Target) {
        self.add(t, c, None, None, m, target)
    }
    fn a_f(&mut self, f: Family, t: Table, c: Chain, m: Vec<Match>, target: Target) {
        self.add(t, c, Some(f), None, m, target)
    }
    /// An IPv4 rule and, when IPv6 is on, its IPv6 twin right after it.
    fn av(&mut self, t: Table, c: Chain, rule: impl Fn(Family) -> (Vec<Match>, Target)) {
        for f in [Family::V4, Family::V6] {
            let (m, target) = rule(f);
            self.a_f(f, t, c, m, target);
        }
    }
    fn i(
        &mut self,
        t: Table,
        c: Chain,
        f: Option<Family>,
        index: u32,
        m: Vec<Match>,
        target: Target,
    ) {
        self.add(t, c, f, Some(index), m, target)
    }

    /// Group by table, declare the chains that have rules, and fix up insert indexes the
    /// way upstream does: an index into an empty chain, or at or past its current length,
    /// becomes an append.
    fn finish(self) -> NftPlan {
        let mut tables = Vec::new();
        for t in Table::NFT_TABLES {
            let mut rules: Vec<NftRule> = Vec::new();
            let mut counts: Vec<(Chain, u32)> = Vec::new();
            for (_, mut r) in self.rules.iter().filter(|(rt, _)| *rt == t).cloned() {
                let n = match counts.iter_mut().find(|(c, _)| *c == r.chain) {
                    Some((_, n)) => n,
                    None => {
                        counts.push((r.chain, 0));
                        &mut counts.last_mut().unwrap().1
                    }
                };
                if let Position::Insert(i) = r.position
                    && (*n == 0 || i >= *n)
                {
                    r.position = Position::Append;
                }
                *n += 1;
                rules.push(r);
            }
            if rules.is_empty() {
                continue;
            }
            let chains = chain_order(t)
                .iter()
                .copied()
                .filter(|c| rules.iter().any(|r| r.chain == *c))
                .collect();
            tables.push(NftTable {
                table: t,
                chains,
                rules,
            });
        }
        NftPlan { tables }
    }
}

pub(super) fn build(d: &Derived) -> NftPlan {
    use Chain::*;
    use Table::*;
    let cfg = d.cfg;
    let mut n = Nft {
        v6: cfg.enable_ipv6,
        rules: Vec::new(),
    };
    let lo = lo();

    // Excluded interfaces first, in nat and (TPROXY) mangle; VM interfaces at the head.
    for x in &cfg.exclude_interfaces {
        n.a(Nat, Prerouting, vec![iif(x)], Target::Return);
        n.a(Nat, Output, vec![oif(x)], Target::Return);
    }
    if d.tproxy {
        for x in &cfg.exclude_interfaces {
            n.a(Mangle, Prerouting, vec![iif(x)], Target::Return);
            n.a(Mangle, Output, vec![oif(x)], Target::Return);
        }
    }
    for k in &cfg.kube_virt_interfaces {
        n.i(Nat, Prerouting, None, 0, vec![iif(k)], Target::Return);
    }

    if cfg.drop_invalid {
        // Upstream's nft rule limits this to TCP (its iptables rule does not).
        let m = vec![
            tcp(),
            Match::CtState {
                states: vec![CtState::Invalid],
            },
        ];
        n.a(Mangle, Prerouting, m, jump(IstioDrop));
        n.a(Mangle, IstioDrop, vec![], Target::Drop);
    }

    n.a(
        Nat,
        IstioInbound,
        vec![tcp(), dport(Proto::Tcp, cfg.inbound_tunnel_port)],
        Target::Return,
    );
    n.a(
        Nat,
        IstioRedirect,
        vec![tcp()],
        Target::Redirect {
            port: cfg.proxy_port,
        },
    );
    n.a(
        Nat,
        IstioInRedirect,
        vec![tcp()],
        Target::Redirect {
            port: cfg.inbound_capture_port,
        },
    );

    if !cfg.inbound_ports.is_empty() {
        let t = if d.tproxy { Mangle } else { Nat };
        if d.tproxy {
            n.a(
                Mangle,
                IstioDivert,
                vec![],
                Target::SetMark {
                    mark: cfg.tproxy_mark,
                },
            );
            n.a(Mangle, IstioDivert, vec![], Target::Accept);
            n.av(Mangle, IstioTproxy, |f| {
                (
                    vec![tcp(), not_dst(d.lo_dst(f))],
                    Target::Tproxy {
                        port: cfg.inbound_capture_port,
                        mark: cfg.tproxy_mark,
                    },
                )
            });
        }
        n.a(t, Prerouting, vec![tcp()], jump(IstioInbound));
        let established = || Match::CtState {
            states: vec![CtState::Related, CtState::Established],
        };
        match &cfg.inbound_ports {
            InboundPorts::All => {
                for p in &cfg.local_exclude_ports {
                    n.a(
                        t,
                        IstioInbound,
                        vec![tcp(), dport(Proto::Tcp, *p)],
                        Target::Return,
                    );
                }
                if d.tproxy {
                    n.a(
                        t,
                        IstioInbound,
                        vec![tcp(), established()],
                        jump(IstioDivert),
                    );
                    n.a(t, IstioInbound, vec![tcp()], jump(IstioTproxy));
                } else {
                    n.a(t, IstioInbound, vec![tcp()], jump(IstioInRedirect));
                }
            }
            InboundPorts::List(ports) => {
                for p in ports {
                    if d.tproxy {
                        let m = vec![tcp(), established(), dport(Proto::Tcp, *p)];
                        n.a(t, IstioInbound, m, jump(IstioDivert));
                        n.a(
                            t,
                            IstioInbound,
                            vec![tcp(), dport(Proto::Tcp, *p)],
                            jump(IstioTproxy),
                        );
                    } else {
                        n.a(
                            t,
                            IstioInbound,
                            vec![tcp(), dport(Proto::Tcp, *p)],
                            jump(IstioInRedirect),
                        );
                    }
                }
            }
        }
    }

    n.a(Nat, Output, vec![], jump(IstioOutput));
    for p in &cfg.outbound_ports_exclude {
        n.a(
            Nat,
            IstioOutput,
            vec![dport(Proto::Tcp, *p)],
            Target::Return,
        );
        n.a(
            Nat,
            IstioOutput,
            vec![dport(Proto::Udp, *p)],
            Target::Return,
        );
    }
    n.av(Nat, IstioOutput, |f| {
        (vec![oif(&lo), src(passthrough_src(f))], Target::Return)
    });

    // Per proxy uid then gid: hairpin to the pod IP captured inbound, other lo traffic of
    // non-proxy processes left alone, the proxy's remaining traffic left alone.
    let include_loopback = cfg.outbound_include.has_loopback();
    for owner in owners(cfg) {
        n.av(Nat, IstioOutput, |f| {
            let ports = if d.dns && owner.is_uid() {
                Match::DportsNotIn {
                    proto: Proto::Tcp,
                    ports: vec![Port::DNS, cfg.inbound_tunnel_port],
                }
            } else {
                not_dport(Proto::Tcp, cfg.inbound_tunnel_port)
            };
            (
                vec![
                    oif(&lo),
                    tcp(),
                    not_dst(d.lo_dst(f)),
                    ports,
                    owner.matcher(false),
                ],
                jump(IstioInRedirect),
            )
        });
        if !include_loopback {
            let m = if d.dns {
                vec![
                    oif(&lo),
                    tcp(),
                    not_dport(Proto::Tcp, Port::DNS),
                    owner.matcher(true),
                ]
            } else {
                vec![oif(&lo), owner.matcher(true)]
            };
            n.a(Nat, IstioOutput, m, Target::Return);
        }
        n.a(Nat, IstioOutput, vec![owner.matcher(false)], Target::Return);
    }

    match &cfg.owner_groups_include {
        OwnerGroups::All => {
            for g in &cfg.owner_groups_exclude {
                n.a(Nat, IstioOutput, vec![gid(g, false)], Target::Return);
            }
        }
        OwnerGroups::List(groups) => {
            n.a(
                Nat,
                IstioOutput,
                groups.iter().map(|g| gid(g, true)).collect(),
                Target::Return,
            );
        }
    }

    if d.dns {
        dns(&mut n, d);
    }

    n.av(Nat, IstioOutput, |f| {
        (vec![dst(d.lo_dst(f))], Target::Return)
    });
    for c in &cfg.outbound_exclude.v4 {
        n.a_f(Family::V4, Nat, IstioOutput, vec![dst(*c)], Target::Return);
    }
    for c in &cfg.outbound_exclude.v6 {
        n.a_f(Family::V6, Nat, IstioOutput, vec![dst(*c)], Target::Return);
    }
    for p in &cfg.outbound_ports_include {
        n.a(
            Nat,
            IstioOutput,
            vec![dport(Proto::Tcp, *p)],
            jump(IstioRedirect),
        );
    }

    let inc = &cfg.outbound_include;
    if inc.all {
        n.a(Nat, IstioOutput, vec![], jump(IstioRedirect));
        for k in &cfg.kube_virt_interfaces {
            n.i(Nat, Prerouting, None, 0, vec![iif(k)], jump(IstioRedirect));
        }
    } else {
        for (f, list) in [(Family::V4, &inc.v4), (Family::V6, &inc.v6)] {
            for c in list {
                for k in &cfg.kube_virt_interfaces {
                    n.i(
                        Nat,
                        Prerouting,
                        Some(f),
                        0,
                        vec![iif(k), dst(*c)],
                        jump(IstioRedirect),
                    );
                }
                n.a_f(f, Nat, IstioOutput, vec![dst(*c)], jump(IstioRedirect));
            }
        }
    }

    if d.tproxy {
        let m = cfg.tproxy_mark;
        n.a(
            Mangle,
            Prerouting,
            vec![tcp(), mark(m, false)],
            Target::SaveMark,
        );
        n.a(
            Mangle,
            Output,
            vec![oif(&lo), tcp(), mark(m, false)],
            Target::Return,
        );
        for owner in owners(cfg) {
            n.av(Mangle, Output, |f| {
                (
                    vec![oif(&lo), tcp(), not_dst(d.lo_dst(f)), owner.matcher(false)],
                    Target::SetMark {
                        mark: Mark::OUTBOUND,
                    },
                )
            });
        }
        n.a(
            Mangle,
            Output,
            vec![tcp(), Match::ConnMark { mark: m }],
            Target::RestoreMark,
        );
        n.i(
            Mangle,
            IstioInbound,
            None,
            0,
            vec![tcp(), mark(m, false)],
            Target::Return,
        );
        for f in [Family::V4, Family::V6] {
            let matches = vec![iif(&lo), tcp(), src(passthrough_src(f))];
            n.i(Mangle, IstioInbound, Some(f), 1, matches, Target::Return);
        }
        let guard = vec![iif(&lo), tcp(), mark(Mark::OUTBOUND, true)];
        n.i(Mangle, IstioInbound, None, 2, guard, Target::Return);
    }

    n.finish()
}

/// DNS capture, as the xtables step 14, in nft's match order. Jumps to the DNS chains are
/// emitted once (an `inet` chain serves both families) and only when a rule will sit in the
/// target chain: IPv6 resolvers count only when IPv6 is on, so no jump can point at a chain
/// that is never declared (upstream's nft path can emit such a jump).
fn dns(n: &mut Nft, d: &Derived) {
    use Chain::*;
    use Table::*;
    let cfg = d.cfg;
    let all = cfg.capture_all_dns;
    let v4: Vec<Cidr> = cfg.dns_servers_v4.iter().map(|a| Cidr::host(*a)).collect();
    let v6: Vec<Cidr> = cfg.dns_servers_v6.iter().map(|a| Cidr::host(*a)).collect();
    let any_server = !v4.is_empty() || (cfg.enable_ipv6 && !v6.is_empty());

    n.a(Raw, Output, vec![], jump(IstioOutputDns));
    if all || any_server {
        n.a(Nat, IstioOutput, vec![], jump(IstioOutputDns));
    }
    let to_agent = Target::Redirect {
        port: Port::DNS_PROXY,
    };
    for proto in [Proto::Tcp, Proto::Udp] {
        if all {
            // Upstream spells the TCP rule with an explicit l4proto and the UDP one without.
            let mut m = vec![dport(proto, Port::DNS)];
            if proto == Proto::Tcp {
                m.insert(0, tcp());
            }
            n.a(Nat, IstioOutputDns, m, to_agent.clone());
        } else {
            for (f, list) in [(Family::V4, &v4), (Family::V6, &v6)] {
                for s in list {
                    n.a_f(
                        f,
                        Nat,
                        IstioOutputDns,
                        vec![dst(*s), dport(proto, Port::DNS)],
                        to_agent.clone(),
                    );
                }
            }
        }
    }
    for owner in owners(cfg) {
        let m = vec![dport(Proto::Udp, Port::DNS), owner.matcher(false)];
        n.a(Raw, IstioOutputDns, m, Target::CtZone { zone: 1 });
        let m = vec![sport(Proto::Udp, Port::DNS_PROXY), owner.matcher(false)];
        n.a(Raw, IstioOutputDns, m, Target::CtZone { zone: 2 });
    }
    if all {
        n.a(Raw, Prerouting, vec![], jump(IstioInbound));
        n.a(
            Raw,
            IstioOutputDns,
            vec![dport(Proto::Udp, Port::DNS)],
            Target::CtZone { zone: 2 },
        );
        n.a(
            Raw,
            IstioInbound,
            vec![sport(Proto::Udp, Port::DNS)],
            Target::CtZone { zone: 1 },
        );
    } else {
        if any_server {
            n.a(Raw, Prerouting, vec![], jump(IstioInbound));
        }
        for (f, list) in [(Family::V4, &v4), (Family::V6, &v6)] {
            for s in list {
                n.a_f(
                    f,
                    Raw,
                    IstioOutputDns,
                    vec![dport(Proto::Udp, Port::DNS), dst(*s)],
                    Target::CtZone { zone: 2 },
                );
                n.a_f(
                    f,
                    Raw,
                    IstioInbound,
                    vec![sport(Proto::Udp, Port::DNS), src(*s)],
                    Target::CtZone { zone: 1 },
                );
            }
        }
    }
}
