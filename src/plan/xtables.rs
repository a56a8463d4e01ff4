//! The xtables rule lists, in the exact order upstream's `IptablesConfigurator.Run` emits
//! them (docs/upstream.md, "Rule order"). The order inside each chain is the interception policy: the first
//! matching RETURN wins, so every exclusion has to sit above the capture it exempts.

use super::build::*;
use super::*;
use crate::config::{InboundPorts, OwnerGroups};

/// Accumulates rules per family, like upstream's `AppendRule`/`AppendRuleV4`/... helpers.
struct Xt {
    v4: Vec<XtRule>,
    v6: Option<Vec<XtRule>>,
}

impl Xt {
    fn push(&mut self, f: Family, rule: XtRule) {
        match f {
            Family::V4 => self.v4.push(rule),
            Family::V6 => {
                if let Some(v6) = &mut self.v6 {
                    v6.push(rule)
                }
            }
        }
    }

    /// Append to one family (a no-op for IPv6 when it is off).
    fn a_f(&mut self, f: Family, table: Table, chain: Chain, matches: Vec<Match>, target: Target) {
        self.push(
            f,
            XtRule {
                table,
                chain,
                position: Position::Append,
                matches,
                target,
            },
        );
    }

    /// Append to both families.
    fn a(&mut self, table: Table, chain: Chain, matches: Vec<Match>, target: Target) {
        self.a_f(Family::V4, table, chain, matches.clone(), target.clone());
        self.a_f(Family::V6, table, chain, matches, target);
    }

    /// Append a rule whose text differs per family (upstream's `AppendVersionedRule`).
    fn av(&mut self, table: Table, chain: Chain, rule: impl Fn(Family) -> (Vec<Match>, Target)) {
        for f in [Family::V4, Family::V6] {
            let (m, t) = rule(f);
            self.a_f(f, table, chain, m, t);
        }
    }

    /// Insert at a 1-based position in one family.
    fn i_f(
        &mut self,
        f: Family,
        table: Table,
        chain: Chain,
        pos: u32,
        matches: Vec<Match>,
        target: Target,
    ) {
        self.push(
            f,
            XtRule {
                table,
                chain,
                position: Position::Insert(pos),
                matches,
                target,
            },
        );
    }

    fn i(&mut self, table: Table, chain: Chain, pos: u32, matches: Vec<Match>, target: Target) {
        self.i_f(
            Family::V4,
            table,
            chain,
            pos,
            matches.clone(),
            target.clone(),
        );
        self.i_f(Family::V6, table, chain, pos, matches, target);
    }
}

pub(super) fn build(d: &Derived) -> XtablesPlan {
    use Chain::*;
    use Table::*;
    let cfg = d.cfg;
    let mut x = Xt {
        v4: Vec::new(),
        v6: cfg.enable_ipv6.then(Vec::new),
    };
    let lo = lo();

    // 1. Excluded interfaces: RETURN before anything else can capture their traffic. In
    //    TPROXY mode inbound capture lives in mangle, so the exemption is repeated there.
    for x_if in &cfg.exclude_interfaces {
        x.a(Nat, Prerouting, vec![iif(x_if)], Target::Return);
        x.a(Nat, Output, vec![oif(x_if)], Target::Return);
    }
    if d.tproxy {
        for x_if in &cfg.exclude_interfaces {
            x.a(Mangle, Prerouting, vec![iif(x_if)], Target::Return);
            x.a(Mangle, Output, vec![oif(x_if)], Target::Return);
        }
    }

    // 2. Virtual (VM) interfaces: their inbound traffic is not inbound for the pod; inserted
    //    at the head so it escapes the inbound capture appended below.
    for k in &cfg.kube_virt_interfaces {
        x.i(Nat, Prerouting, 1, vec![iif(k)], Target::Return);
    }

    // 3. Drop out-of-window packets instead of letting them reset the connection.
    if cfg.drop_invalid {
        x.a(
            Mangle,
            Prerouting,
            vec![Match::CtState {
                states: vec![CtState::Invalid],
            }],
            jump(IstioDrop),
        );
        x.a(Mangle, IstioDrop, vec![], Target::Drop);
    }

    // 4-6. The tunnel port is never captured; the two redirect chains everything jumps to.
    x.a(
        Nat,
        IstioInbound,
        vec![tcp(), dport(Proto::Tcp, cfg.inbound_tunnel_port)],
        Target::Return,
    );
    x.a(
        Nat,
        IstioRedirect,
        vec![tcp()],
        Target::Redirect {
            port: cfg.proxy_port,
        },
    );
    x.a(
        Nat,
        IstioInRedirect,
        vec![tcp()],
        Target::Redirect {
            port: cfg.inbound_capture_port,
        },
    );

    // 7. Inbound capture, only when some port is captured.
    if !cfg.inbound_ports.is_empty() {
        let t = if d.tproxy { Mangle } else { Nat };
        if d.tproxy {
            // Established flows are marked and accepted (policy routing delivers them to the
            // local socket); new ones are TPROXY'd, except to loopback.
            x.a(
                Mangle,
                IstioDivert,
                vec![],
                Target::SetMark {
                    mark: cfg.tproxy_mark,
                },
            );
            x.a(Mangle, IstioDivert, vec![], Target::Accept);
            x.av(Mangle, IstioTproxy, |f| {
                (
                    vec![not_dst(d.lo_dst(f)), tcp()],
                    Target::Tproxy {
                        port: cfg.inbound_capture_port,
                        mark: cfg.tproxy_mark,
                    },
                )
            });
        }
        x.a(t, Prerouting, vec![tcp()], jump(IstioInbound));
        match &cfg.inbound_ports {
            InboundPorts::All => {
                for p in &cfg.local_exclude_ports {
                    x.a(
                        t,
                        IstioInbound,
                        vec![tcp(), dport(Proto::Tcp, *p)],
                        Target::Return,
                    );
                }
                if d.tproxy {
                    x.a(
                        t,
                        IstioInbound,
                        vec![tcp(), established()],
                        jump(IstioDivert),
                    );
                    x.a(t, IstioInbound, vec![tcp()], jump(IstioTproxy));
                } else {
                    x.a(t, IstioInbound, vec![tcp()], jump(IstioInRedirect));
                }
            }
            InboundPorts::List(ports) => {
                for p in ports {
                    if d.tproxy {
                        x.a(
                            t,
                            IstioInbound,
                            vec![tcp(), dport(Proto::Tcp, *p), established()],
                            jump(IstioDivert),
                        );
                        x.a(
                            t,
                            IstioInbound,
                            vec![tcp(), dport(Proto::Tcp, *p)],
                            jump(IstioTproxy),
                        );
                    } else {
                        x.a(
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

    // 8. All locally generated traffic goes through ISTIO_OUTPUT (any protocol: DNS too).
    x.a(Nat, Output, vec![], jump(IstioOutput));

    // 9. Excluded outbound ports, before the loopback handling can redirect them.
    for p in &cfg.outbound_ports_exclude {
        x.a(
            Nat,
            IstioOutput,
            vec![tcp(), dport(Proto::Tcp, *p)],
            Target::Return,
        );
        x.a(
            Nat,
            IstioOutput,
            vec![Match::Proto { proto: Proto::Udp }, dport(Proto::Udp, *p)],
            Target::Return,
        );
    }

    // 10. Envoy's inbound passthrough binds 127.0.0.6 / ::6: never capture it again.
    x.av(Nat, IstioOutput, |f| {
        (vec![oif(&lo), src(passthrough_src(f))], Target::Return)
    });

    // 11-12. Per proxy uid, then per gid: (a) the proxy talking to the pod's own
    // non-loopback address over lo is the app→Envoy→Envoy→app hairpin: capture it inbound;
    // (b) other lo traffic not from the proxy is app-to-self: leave it (unless -i lists a
    // loopback range); (c) everything else from the proxy leaves uncaptured.
    let include_loopback = cfg.outbound_include.has_loopback();
    for owner in owners(cfg) {
        x.av(Nat, IstioOutput, |f| {
            // Upstream's quirk, kept: only the uid rule excludes port 53 via multiport.
            let port_match = if d.dns && owner.is_uid() {
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
                    not_dst(d.lo_dst(f)),
                    tcp(),
                    port_match,
                    owner.matcher(false),
                ],
                jump(IstioInRedirect),
            )
        });
        if !include_loopback {
            // With DNS capture, TCP/53 to a resolver on localhost must still be captured.
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
            x.a(Nat, IstioOutput, m, Target::Return);
        }
        x.a(Nat, IstioOutput, vec![owner.matcher(false)], Target::Return);
    }

    // 13. Owner groups: either RETURN the excluded groups, or RETURN everything that is in
    //     none of the included groups.
    match &cfg.owner_groups_include {
        OwnerGroups::All => {
            for g in &cfg.owner_groups_exclude {
                x.a(Nat, IstioOutput, vec![gid(g, false)], Target::Return);
            }
        }
        OwnerGroups::List(groups) => {
            let m = groups.iter().map(|g| gid(g, true)).collect();
            x.a(Nat, IstioOutput, m, Target::Return);
        }
    }

    // 14. DNS: after the proxy's own traffic has returned, so the agent's upstream queries
    //     are not looped back to itself.
    if d.dns {
        dns(&mut x, d);
    }

    // 15-16. Loopback and excluded destinations leave uncaptured.
    x.av(Nat, IstioOutput, |f| {
        (vec![dst(d.lo_dst(f))], Target::Return)
    });
    for c in &cfg.outbound_exclude.v4 {
        x.a_f(Family::V4, Nat, IstioOutput, vec![dst(*c)], Target::Return);
    }
    for c in &cfg.outbound_exclude.v6 {
        x.a_f(Family::V6, Nat, IstioOutput, vec![dst(*c)], Target::Return);
    }

    // 17. Ports always captured, whatever their destination.
    for p in &cfg.outbound_ports_include {
        x.a(
            Nat,
            IstioOutput,
            vec![tcp(), dport(Proto::Tcp, *p)],
            jump(IstioRedirect),
        );
    }

    // 18. Outbound capture: everything, or the listed CIDRs; VM interfaces' inbound traffic
    //     to those destinations is captured as outbound.
    for f in [Family::V4, Family::V6] {
        let inc = &cfg.outbound_include;
        if inc.all {
            x.a_f(f, Nat, IstioOutput, vec![], jump(IstioRedirect));
            for k in &cfg.kube_virt_interfaces {
                x.i_f(f, Nat, Prerouting, 1, vec![iif(k)], jump(IstioRedirect));
            }
        } else {
            let list = if f == Family::V4 { &inc.v4 } else { &inc.v6 };
            for c in list {
                for k in &cfg.kube_virt_interfaces {
                    x.i_f(
                        f,
                        Nat,
                        Prerouting,
                        1,
                        vec![iif(k), dst(*c)],
                        jump(IstioRedirect),
                    );
                }
                x.a_f(f, Nat, IstioOutput, vec![dst(*c)], jump(IstioRedirect));
            }
        }
    }

    // 19. TPROXY bookkeeping (emitted whenever the mode is TPROXY, as upstream).
    if d.tproxy {
        let m = cfg.tproxy_mark;
        // Remember the mark Envoy's original_src sets, on the connection.
        x.a(
            Mangle,
            Prerouting,
            vec![tcp(), mark(m, false)],
            Target::SaveMark,
        );
        x.a(
            Mangle,
            Output,
            vec![tcp(), oif(&lo), mark(m, false)],
            Target::Return,
        );
        // The proxy's hairpin to the pod IP gets the outbound mark so inbound won't loop it.
        for owner in owners(cfg) {
            x.av(Mangle, Output, |f| {
                (
                    vec![not_dst(d.lo_dst(f)), tcp(), oif(&lo), owner.matcher(false)],
                    Target::SetMark {
                        mark: Mark::OUTBOUND,
                    },
                )
            });
        }
        x.a(
            Mangle,
            Output,
            vec![tcp(), Match::ConnMark { mark: m }],
            Target::RestoreMark,
        );
        // Loop guards at the head of mangle ISTIO_INBOUND.
        x.i(
            Mangle,
            IstioInbound,
            1,
            vec![tcp(), mark(m, false)],
            Target::Return,
        );
        for f in [Family::V4, Family::V6] {
            x.i_f(
                f,
                Mangle,
                IstioInbound,
                2,
                vec![tcp(), src(passthrough_src(f)), iif(&lo)],
                Target::Return,
            );
        }
        x.i(
            Mangle,
            IstioInbound,
            3,
            vec![tcp(), iif(&lo), mark(Mark::OUTBOUND, true)],
            Target::Return,
        );
    }

    XtablesPlan { v4: x.v4, v6: x.v6 }
}

fn established() -> Match {
    Match::CtState {
        states: vec![CtState::Related, CtState::Established],
    }
}

/// Step 14 (`SetupDNSRedir`): redirect DNS to the agent and split its UDP flows into two
/// conntrack zones, so the app→agent and agent→resolver legs never share a conntrack entry.
fn dns(x: &mut Xt, d: &Derived) {
    use Chain::*;
    use Table::*;
    let cfg = d.cfg;
    let all = cfg.capture_all_dns;
    let udp = || Match::Proto { proto: Proto::Udp };
    let servers = |f: Family| -> Vec<Cidr> {
        let list = if f == Family::V4 {
            &cfg.dns_servers_v4
        } else {
            &cfg.dns_servers_v6
        };
        list.iter().map(|a| Cidr::host(*a)).collect()
    };

    x.a(Raw, Output, vec![], jump(IstioOutputDns));
    for f in [Family::V4, Family::V6] {
        if all || !servers(f).is_empty() {
            x.a_f(f, Nat, IstioOutput, vec![], jump(IstioOutputDns));
        }
    }
    let to_agent = Target::Redirect {
        port: Port::DNS_PROXY,
    };
    for proto in [Proto::Tcp, Proto::Udp] {
        let p = Match::Proto { proto };
        if all {
            x.a(
                Nat,
                IstioOutputDns,
                vec![p, dport(proto, Port::DNS)],
                to_agent.clone(),
            );
        } else {
            for f in [Family::V4, Family::V6] {
                for s in servers(f) {
                    let m = vec![p.clone(), dport(proto, Port::DNS), dst(s)];
                    x.a_f(f, Nat, IstioOutputDns, m, to_agent.clone());
                }
            }
        }
    }
    // The agent's own queries upstream: zone 1; its answers to apps: zone 2.
    for owner in owners(cfg) {
        x.a(
            Raw,
            IstioOutputDns,
            vec![udp(), dport(Proto::Udp, Port::DNS), owner.matcher(false)],
            Target::CtZone { zone: 1 },
        );
        x.a(
            Raw,
            IstioOutputDns,
            vec![
                udp(),
                sport(Proto::Udp, Port::DNS_PROXY),
                owner.matcher(false),
            ],
            Target::CtZone { zone: 2 },
        );
    }
    // Apps' queries: zone 2; resolvers' answers: zone 1.
    if all {
        x.a(Raw, Prerouting, vec![], jump(IstioInbound));
        x.a(
            Raw,
            IstioOutputDns,
            vec![udp(), dport(Proto::Udp, Port::DNS)],
            Target::CtZone { zone: 2 },
        );
        x.a(
            Raw,
            IstioInbound,
            vec![udp(), sport(Proto::Udp, Port::DNS)],
            Target::CtZone { zone: 1 },
        );
    } else {
        for f in [Family::V4, Family::V6] {
            let list = servers(f);
            if !list.is_empty() {
                x.a_f(f, Raw, Prerouting, vec![], jump(IstioInbound));
            }
            for s in list {
                x.a_f(
                    f,
                    Raw,
                    IstioOutputDns,
                    vec![udp(), dport(Proto::Udp, Port::DNS), dst(s)],
                    Target::CtZone { zone: 2 },
                );
                x.a_f(
                    f,
                    Raw,
                    IstioInbound,
                    vec![udp(), sport(Proto::Udp, Port::DNS), src(s)],
                    Target::CtZone { zone: 1 },
                );
            }
        }
    }
}
