//! The walk itself: a packet's way through the hooks (`go_out`, `come_in`), the base chains
//! of each hook in order (`hook`), one base chain with its jumps and returns (`run`), and what
//! NAT, TPROXY and marks do to the packet on the way. The rules of the walk are in the
//! module doc of `tracer`.

use std::net::{IpAddr, SocketAddr};

use meshtables::plan::{Chain, Family, MarkRule, Target};

use super::matching::{self, Conn, Headers};
use super::ruleset::{Base, Hook, Ruleset};
use super::{Origin, Packet, Trace, Verdict};
use crate::support::net;
use crate::support::scenarios::Dialect;

/// How a base chain ended.
enum Stop {
    /// Fell off the end, or returned from it: the policy, accept.
    Policy,
    Accept,
    Drop(String),
    Redirect(u16),
    Tproxy(u16, u32),
}

/// The most nested jumps netfilter allows (nft's NFT_JUMP_STACK_SIZE).
const MAX_DEPTH: usize = 16;

/// Conntrack's hook priority (NF_IP_PRI_CONNTRACK): zones are chosen before it.
const CONNTRACK: i32 = -200;

/// A packet on its way, with the connection state the walk keeps.
struct Flight<'r, 'p> {
    rules: &'r Ruleset<'p>,
    dialect: Dialect,
    /// The policy routing's rule: a packet whose mark it selects is delivered locally.
    local_mark: Option<MarkRule>,
    h: Headers,
    zone: Option<u16>,
    tracked: bool,
    nat_decided: bool,
    orig: SocketAddr,
    redirected: bool,
    tproxied: Option<(u16, u32)>,
    path: Vec<String>,
}

fn name(dialect: Dialect, c: Chain) -> &'static str {
    match dialect {
        Dialect::Xtables => c.xt_name(),
        Dialect::Nft => c.nft_name(),
    }
}

impl Flight<'_, '_> {
    fn family(&self) -> Family {
        self.h.family()
    }

    /// Runs the base chains of `hook`; `Some` when the packet is dropped.
    fn hook(&mut self, hook: Hook) -> Result<Option<Verdict>, String> {
        let conntrack_here = matches!(hook, Hook::Prerouting | Hook::Output);
        let rs = self.rules;
        for base in rs.at(hook) {
            if conntrack_here && base.priority > CONNTRACK {
                self.tracked = true;
            }
            if base.nat && (self.h.conn != Conn::New || self.nat_decided) {
                continue;
            }
            let mark = self.h.mark;
            match self.run(base)? {
                Stop::Policy | Stop::Accept => {}
                Stop::Drop(by) => return Ok(Some(Verdict::Dropped { by })),
                Stop::Redirect(port) => self.redirect(hook, port)?,
                Stop::Tproxy(port, m) => self.tproxied = Some((port, m)),
            }
            if base.reroutes && self.h.mark != mark {
                self.reroute()?;
            }
        }
        if conntrack_here {
            self.tracked = true;
        }
        Ok(None)
    }

    /// Runs one base chain and what it jumps to.
    fn run(&mut self, base: &Base) -> Result<Stop, String> {
        let table = base.table.as_str();
        let rs = self.rules;
        let mut stack: Vec<(String, usize)> = vec![(base.chain.clone(), 0)];
        while let Some((chain, next)) = stack.last().cloned() {
            let rules = rs
                .chain(table, &chain)
                .ok_or_else(|| format!("{table}: no chain {chain}"))?;
            let Some(rule) = rules.get(next) else {
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let family_ok = rule.family.is_none_or(|f| f == self.family());
            if !family_ok
                || !rule
                    .matches
                    .iter()
                    .all(|m| matching::holds(m, &self.h, self.dialect))
            {
                continue;
            }
            self.path.push(format!("{:?}: {}", base.hook, rule.text));
            match rule.target {
                Target::Jump { chain } => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(format!("{table}: jumps nest deeper than {MAX_DEPTH}"));
                    }
                    stack.push((name(self.dialect, *chain).to_string(), 0));
                }
                Target::Return => {
                    stack.pop();
                }
                Target::Accept => return Ok(Stop::Accept),
                Target::Drop => return Ok(Stop::Drop(rule.text.clone())),
                Target::Redirect { port } => {
                    if !base.nat {
                        return Err(format!("REDIRECT outside a nat chain: {}", rule.text));
                    }
                    return Ok(Stop::Redirect(port.get()));
                }
                Target::Tproxy { port, mark } => {
                    if base.hook != Hook::Prerouting || base.nat {
                        return Err(format!(
                            "TPROXY outside a PREROUTING filter chain: {}",
                            rule.text
                        ));
                    }
                    self.h.mark = mark.get();
                    return Ok(Stop::Tproxy(port.get(), mark.get()));
                }
                Target::SetMark { mark } => self.h.mark = mark.get(),
                Target::SaveMark => self.h.connmark = self.h.mark,
                Target::RestoreMark => self.h.mark = self.h.connmark,
                Target::CtZone { zone } => {
                    if !self.tracked && self.zone.is_none() {
                        self.zone = Some(*zone);
                    }
                }
                Target::SetConnMark { mark } => self.h.connmark = mark.apply(self.h.connmark),
                Target::RestoreMarkMasked { ctmask } => self.h.mark = self.h.connmark & ctmask,
                // Source NAT ends the nat chain's walk; the tracer follows no new source.
                Target::Snat { .. } => return Ok(Stop::Accept),
            }
        }
        Ok(Stop::Policy)
    }

    /// REDIRECT: to the loopback address from OUTPUT, to the arriving interface's address
    /// from PREROUTING (none: the kernel drops the packet, which is an error here).
    fn redirect(&mut self, hook: Hook, port: u16) -> Result<(), String> {
        let v6 = self.family() == Family::V6;
        let to = match (hook, self.h.iif) {
            (Hook::Output, _) => net::primary("lo", v6),
            (Hook::Prerouting, Some(iif)) => net::primary(iif, v6),
            _ => None,
        }
        .ok_or_else(|| format!("REDIRECT at {hook:?} has no address to redirect to"))?;
        self.h.dst = SocketAddr::new(to, port);
        self.redirected = true;
        if hook == Hook::Output {
            self.reroute()?;
        }
        Ok(())
    }

    /// Whether the policy routing delivers this packet locally by its mark.
    fn marked_local(&self) -> bool {
        self.local_mark.is_some_and(|r| r.selects(self.h.mark))
    }

    /// A locally generated packet's route, again (new destination or mark).
    fn reroute(&mut self) -> Result<(), String> {
        self.h.oif = Some(if self.marked_local() {
            "lo"
        } else {
            route(self.h.dst.ip())?.0
        });
        Ok(())
    }

    /// Delivered to a socket of the pod, or to the world: the verdict.
    fn arrived(&self) -> Verdict {
        match (self.tproxied, self.redirected) {
            (Some((port, mark)), _) => Verdict::Tproxied {
                port,
                mark,
                orig: self.orig,
            },
            (None, true) => Verdict::Redirected {
                to: self.h.dst,
                orig: self.orig,
            },
            (None, false) => Verdict::Accepted { to: self.h.dst },
        }
    }

    /// PREROUTING, the routing decision and INPUT, for a packet coming into the pod.
    fn come_in(&mut self) -> Result<Verdict, String> {
        if let Some(v) = self.hook(Hook::Prerouting)? {
            return Ok(v);
        }
        if !net::pod_owns(self.h.dst.ip()) && !self.marked_local() {
            return Ok(Verdict::NotLocal { to: self.h.dst });
        }
        if let Some(v) = self.hook(Hook::Input)? {
            return Ok(v);
        }
        Ok(self.arrived())
    }

    /// OUTPUT and POSTROUTING, then out of the pod or back in over `lo`.
    fn go_out(&mut self) -> Result<Verdict, String> {
        for hook in [Hook::Output, Hook::Postrouting] {
            if let Some(v) = self.hook(hook)? {
                return Ok(v);
            }
        }
        if self.h.oif != Some("lo") {
            return Ok(self.arrived());
        }
        // Looped back: the socket stays behind, NAT was decided on the way out.
        self.nat_decided = true;
        self.h.iif = Some("lo");
        self.h.oif = None;
        self.h.owner = None;
        self.come_in()
    }
}

fn route(dst: IpAddr) -> Result<(&'static str, IpAddr), String> {
    net::route(dst).ok_or_else(|| format!("the pod has no route to {dst}"))
}

/// Traces `packet` through `rules` (one dialect; for xtables, the packet's family's rules).
pub fn trace(
    rules: &Ruleset,
    dialect: Dialect,
    local_mark: Option<MarkRule>,
    packet: &Packet,
) -> Result<Trace, String> {
    let (src, iif, oif, owner) = match packet.origin {
        Origin::Local { uid, gid } => {
            let (oif, src) = route(packet.dst.ip())?;
            (src, None, Some(oif), Some((uid, gid)))
        }
        Origin::Arriving { iface, src } => (src, Some(iface), None, None),
    };
    let mut f = Flight {
        rules,
        dialect,
        local_mark,
        h: Headers {
            proto: packet.proto,
            src,
            dst: packet.dst,
            sport: packet.sport,
            iif,
            oif,
            owner,
            conn: packet.conn,
            mark: packet.mark,
            connmark: packet.connmark,
        },
        zone: None,
        tracked: false,
        nat_decided: false,
        orig: packet.dst,
        redirected: false,
        tproxied: None,
        path: Vec::new(),
    };
    let verdict = match packet.origin {
        Origin::Local { .. } => {
            // A socket's mark can route it too (the policy routing's mark: to `lo`).
            f.reroute()?;
            f.go_out()?
        }
        Origin::Arriving { .. } => f.come_in()?,
    };
    Ok(Trace {
        verdict,
        mark: f.h.mark,
        connmark: f.h.connmark,
        zone: f.zone,
        path: f.path,
    })
}
