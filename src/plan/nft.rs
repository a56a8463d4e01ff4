//! The nftables dialect of the policy walk: three `inet` tables (docs/upstream.md, "The
//! nftables text"). What differs from the xtables dialect, all of it here:
//!
//! - family fan-out: a rule for both families is emitted once (an `inet` chain serves both); a
//!   versioned rule is an IPv4 rule immediately followed by its IPv6 twin; a per-family rule
//!   upstream's nft generator collapses (`Sink::where_any`) is emitted once when any
//!   programmed family needs it;
//! - inserts: 0-based `index N`, fixed up as upstream does (an insert into an empty chain, or at
//!   or past its length, becomes an append);
//! - spelling: the `NftSpelling`s below, one per shape of rule upstream spells differently;
//! - which chains each table declares, in upstream's fixed order.

use super::rule::{At, NftSpelling, Rule, Sink};
use super::types::{Chain, Match, Proto, Scheme, Table};
use super::types::{NftPlan, NftRule, NftTable, Position};
use crate::values::Family;

/// `meta l4proto tcp ip daddr != LO tproxy ...`: the protocol before the address.
pub(super) const TPROXY_CAPTURE: NftSpelling = NftSpelling {
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `meta l4proto tcp ct state related,established tcp dport P`: the state before the port.
pub(super) const ESTABLISHED_FIRST: NftSpelling = NftSpelling {
    order: Some(&[0, 2, 1]),
    ..NftSpelling::AS_IPTABLES
};

/// `udp dport 53` where iptables writes `-p udp --dport 53`: the port match implies the
/// protocol (nft adds the `meta l4proto` dependency itself, and so does the lowering).
pub(super) const PORT_IMPLIES_PROTO: NftSpelling = NftSpelling {
    drop_proto: true,
    ..NftSpelling::AS_IPTABLES
};

/// `ip daddr S tcp dport 53`: the resolver before the port, no protocol match.
pub(super) const SERVER_FIRST: NftSpelling = NftSpelling {
    drop_proto: true,
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp ip daddr != LO ...`: the protocol before the address.
pub(super) const HAIRPIN: NftSpelling = NftSpelling {
    order: Some(&[0, 2, 1, 3, 4]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp mark M` (and `iifname lo meta l4proto tcp mark != 1338`):
/// the interface first.
pub(super) const LOOPBACK_FIRST: NftSpelling = NftSpelling {
    order: Some(&[1, 0, 2]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp ip daddr != LO skuid U`: interface, protocol, address.
pub(super) const OUTBOUND_MARK: NftSpelling = NftSpelling {
    order: Some(&[2, 1, 0, 3]),
    ..NftSpelling::AS_IPTABLES
};

/// `iifname lo meta l4proto tcp ip saddr 127.0.0.6`: the interface first.
pub(super) const PASSTHROUGH_GUARD: NftSpelling = NftSpelling {
    order: Some(&[2, 0, 1]),
    ..NftSpelling::AS_IPTABLES
};

/// Upstream's quirk: its nft `--drop-invalid` rule matches TCP only (its iptables rule
/// matches every protocol). Kept, so both renderings stay byte-identical to upstream.
pub(super) const DROP_INVALID: NftSpelling = NftSpelling {
    prepend_tcp: true,
    ..NftSpelling::AS_IPTABLES
};

/// The matches of a rule as the nft dialect spells them.
fn spell(s: &NftSpelling, mut m: Vec<Match>) -> Vec<Match> {
    if s.drop_proto && matches!(m.first(), Some(Match::Proto { .. })) {
        m.remove(0);
    }
    if let Some(order) = s.order {
        m = order.iter().filter_map(|i| m.get(*i).cloned()).collect();
    }
    if s.prepend_tcp {
        m.insert(0, Match::Proto { proto: Proto::Tcp });
    }
    m
}

/// Accumulates rules in emission order.
pub(super) struct Nft {
    v6: bool,
    scheme: &'static Scheme,
    rules: Vec<(Table, NftRule)>,
}

impl Nft {
    pub(super) fn new(ipv6: bool, scheme: &'static Scheme) -> Nft {
        Nft {
            v6: ipv6,
            scheme,
            rules: Vec::new(),
        }
    }

    fn push(&mut self, family: Option<Family>, r: Rule) {
        if family == Some(Family::V6) && !self.v6 {
            return;
        }
        let rule = NftRule {
            chain: r.chain,
            position: match r.at {
                At::Append => Position::Append,
                At::Insert(i) => Position::Insert(i),
            },
            family,
            matches: spell(r.nft, r.matches),
            target: r.target,
        };
        self.rules.push((r.table, rule));
    }

    /// Groups the rules by table, declares the chains that have rules, and fixes up insert
    /// indexes the way upstream does: an index into an empty chain, or at or past its current
    /// length, becomes an append.
    pub(super) fn finish(self) -> NftPlan {
        let mut tables = Vec::new();
        for layout in self.scheme.tables {
            let t = layout.table;
            let mut rules: Vec<NftRule> = Vec::new();
            let mut counts: Vec<(Chain, u32)> = Vec::new();
            for (_, mut r) in self.rules.iter().filter(|(rt, _)| *rt == t).cloned() {
                let n = match counts.iter().position(|(c, _)| *c == r.chain) {
                    Some(i) => i,
                    None => {
                        counts.push((r.chain, 0));
                        counts.len() - 1
                    }
                };
                let len = &mut counts[n].1;
                if let Position::Insert(i) = r.position
                    && (*len == 0 || i >= *len)
                {
                    r.position = Position::Append;
                }
                *len += 1;
                rules.push(r);
            }
            if rules.is_empty() {
                continue;
            }
            let chains = layout
                .chains
                .iter()
                .copied()
                .filter(|c| rules.iter().any(|r| r.chain == *c))
                .collect();
            tables.push(NftTable {
                table: t,
                layout,
                chains,
                rules,
            });
        }
        NftPlan { tables }
    }
}

impl Sink for Nft {
    fn both(&mut self, r: Rule) {
        self.push(None, r);
    }
    fn family(&mut self, f: Family, r: Rule) {
        self.push(Some(f), r);
    }
    fn versioned(&mut self, v4: Rule, v6: Rule) {
        self.push(Some(Family::V4), v4);
        self.push(Some(Family::V6), v6);
    }
    /// Counting IPv6 only when it is on keeps a jump from pointing at a chain that is never
    /// declared (upstream's nft output fails to load then; docs/upstream.md).
    fn where_any(&mut self, when: [bool; 2], r: Rule) {
        if when[0] || (self.v6 && when[1]) {
            self.push(None, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::rule::rule;
    use crate::plan::types::Target;
    use crate::profile::istio::chains::{ISTIO_INBOUND, ISTIO_OUTPUT, SCHEME};
    use crate::values::{Cidr, Port};

    fn m(n: u16) -> Match {
        Match::Dport {
            proto: Proto::Tcp,
            negate: false,
            port: Port::new(n).unwrap(),
        }
    }

    #[test]
    fn every_spelling_keeps_every_match_but_the_implied_protocol() {
        for (s, arity) in [
            (&TPROXY_CAPTURE, 2),
            (&ESTABLISHED_FIRST, 3),
            (&HAIRPIN, 5),
            (&LOOPBACK_FIRST, 3),
            (&OUTBOUND_MARK, 4),
            (&PASSTHROUGH_GUARD, 3),
        ] {
            let given: Vec<Match> = (1..=arity as u16).map(m).collect();
            let mut got = spell(s, given.clone());
            got.sort_by_key(|x| format!("{x:?}"));
            assert_eq!(got.len(), arity, "{s:?}");
            for g in &given {
                assert!(got.contains(g), "{s:?} lost {g:?}");
            }
        }
        let udp = Match::Proto { proto: Proto::Udp };
        assert_eq!(
            spell(&PORT_IMPLIES_PROTO, vec![udp.clone(), m(53)]),
            [m(53)]
        );
        let d = Match::Dst {
            negate: false,
            cidr: Cidr("10.0.0.1/32".parse().unwrap()),
        };
        assert_eq!(
            spell(&SERVER_FIRST, vec![udp, m(53), d.clone()]),
            [d, m(53)]
        );
    }

    #[test]
    fn inserts_into_short_chains_become_appends() {
        let mut n = Nft::new(false, &SCHEME);
        let r = || rule(Table::Mangle, ISTIO_INBOUND, vec![], Target::Return);
        n.both(r().insert(0));
        n.both(r().insert(2));
        n.both(r().insert(1));
        let plan = n.finish();
        let pos: Vec<Position> = plan.tables[0].rules.iter().map(|r| r.position).collect();
        assert_eq!(
            pos,
            [Position::Append, Position::Append, Position::Insert(1)]
        );
        assert_eq!(plan.tables[0].chains, [ISTIO_INBOUND]);
    }

    #[test]
    fn a_collapsed_rule_counts_ipv6_only_when_it_is_on() {
        let r = || rule(Table::Nat, ISTIO_OUTPUT, vec![], Target::Return);
        let mut off = Nft::new(false, &SCHEME);
        off.where_any([false, true], r());
        assert!(off.finish().tables.is_empty());
        let mut on = Nft::new(true, &SCHEME);
        on.where_any([false, true], r());
        on.where_any([true, true], r());
        let plan = on.finish();
        assert_eq!(plan.tables[0].rules.len(), 2);
        assert!(plan.tables[0].rules.iter().all(|r| r.family.is_none()));
    }
}
