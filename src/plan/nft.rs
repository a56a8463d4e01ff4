//! The nftables dialect of the policy walk: three `inet` tables (docs/upstream.md, "The
//! nftables text"). What differs from the xtables dialect, all of it here:
//!
//! - family fan-out: a rule for both families is emitted once (an `inet` chain serves both); a
//!   versioned rule is an IPv4 rule immediately followed by its IPv6 twin; a per-family rule
//!   upstream's nft generator collapses (`Sink::where_any`) is emitted once when any
//!   programmed family needs it;
//! - inserts: 0-based `index N`, fixed up as upstream does (an insert into an empty chain, or at
//!   or past its length, becomes an append);
//! - spelling: each rule's `NftSpelling` (a scheme names one per shape of rule its upstream
//!   spells differently: Istio's are `profile::istio::spell`);
//! - which chains each table declares, in upstream's fixed order.

use super::rule::{At, Rule, Sink};
use super::types::{Chain, Scheme, Table, Target};
use super::types::{NftPlan, NftRule, NftTable, Position};
use crate::values::Family;

/// Accumulates rules in emission order.
pub struct Nft {
    v6: bool,
    scheme: &'static Scheme,
    rules: Vec<(Table, NftRule)>,
}

impl Nft {
    pub fn new(ipv6: bool, scheme: &'static Scheme) -> Nft {
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
            matches: {
                // A spelling names every match of the rule it was made for; one that does not
                // fit is a walk's bug (every golden configuration runs through this in tests).
                debug_assert!(
                    r.nft.fits(&r.matches),
                    "{:?} does not fit {:?}",
                    r.nft,
                    r.matches
                );
                r.nft.apply(r.matches)
            },
            target: r.target,
            mark_words: r.nft.mark_words,
            counter: r.nft.counter,
        };
        self.rules.push((r.table, rule));
    }

    /// Groups the rules by table, declares the chains that have rules, and fixes up insert
    /// indexes the way upstream does: an index into an empty chain, or at or past its current
    /// length, becomes an append.
    pub fn finish(self) -> NftPlan {
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
            // A chain is declared when it has rules or a rule jumps to it (an empty chain a
            // base chain jumps to, as Istio ambient's nat prerouting in ingress mode): a jump
            // to an undeclared chain does not load.
            let used = |c: &Chain| {
                rules.iter().any(|r| {
                    r.chain == *c || matches!(r.target, Target::Jump { chain } if chain == *c)
                })
            };
            let chains = layout.chains.iter().copied().filter(used).collect();
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
    use crate::plan::types::{TableLayout, XtChains};

    /// A scheme of one chain in two tables: the dialect knows no real one.
    const CHAIN: Chain = Chain::scheme("TEST_CHAIN", "test-chain");
    static SCHEME: Scheme = Scheme {
        name: "test",
        tables: &[
            TableLayout {
                table: Table::Nat,
                nft_name: "test-nat",
                chains: &[CHAIN],
                base: &[],
            },
            TableLayout {
                table: Table::Mangle,
                nft_name: "test-mangle",
                chains: &[CHAIN],
                base: &[],
            },
        ],
        xt_chains: XtChains::Prefix("TEST_"),
        fail_closed: true,
    };

    #[test]
    fn inserts_into_short_chains_become_appends() {
        let mut n = Nft::new(false, &SCHEME);
        let r = || rule(Table::Mangle, CHAIN, vec![], Target::Return);
        n.both(r().insert(0));
        n.both(r().insert(2));
        n.both(r().insert(1));
        let plan = n.finish();
        let pos: Vec<Position> = plan.tables[0].rules.iter().map(|r| r.position).collect();
        assert_eq!(
            pos,
            [Position::Append, Position::Append, Position::Insert(1)]
        );
        assert_eq!(plan.tables[0].chains, [CHAIN]);
    }

    #[test]
    fn a_collapsed_rule_counts_ipv6_only_when_it_is_on() {
        let r = || rule(Table::Nat, CHAIN, vec![], Target::Return);
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
