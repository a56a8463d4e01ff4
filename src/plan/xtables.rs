//! The xtables dialect of the policy walk: a rule list per family, as upstream's
//! `AppendRule`/`AppendRuleV4`/... helpers fill them (IPv6 only when IPv6 is on), with inserts
//! at 1-based positions (`-I CHAIN 1`). Spelling (`-m owner`, `--to-port` for UDP) is the
//! renderer's; the walk's match order is already iptables order.

use super::rule::{At, Rule, Sink};
use super::types::{Match, Position, Proto, XtRule, XtablesPlan};
use crate::values::Family;

/// Accumulates the per-family rule lists.
pub struct Xtables {
    v4: Vec<XtRule>,
    v6: Option<Vec<XtRule>>,
}

impl Xtables {
    pub fn new(ipv6: bool) -> Xtables {
        Xtables {
            v4: Vec::new(),
            v6: ipv6.then(Vec::new),
        }
    }

    pub fn finish(self) -> XtablesPlan {
        XtablesPlan {
            v4: self.v4,
            v6: self.v6,
        }
    }

    fn push(&mut self, f: Family, r: Rule) {
        for r in expand(r) {
            self.push_one(f, r);
        }
    }

    fn push_one(&mut self, f: Family, r: Rule) {
        let list = match f {
            Family::V4 => &mut self.v4,
            Family::V6 => match &mut self.v6 {
                Some(v6) => v6,
                None => return,
            },
        };
        list.push(XtRule {
            table: r.table,
            chain: r.chain,
            position: match r.at {
                At::Append => Position::Append,
                At::Insert(i) => Position::Insert(i + 1),
            },
            matches: r.matches,
            target: r.target,
        });
    }
}

/// The most ports one `-m multiport` match takes (the kernel's XT_MULTI_PORTS).
pub const MULTIPORT_MAX: usize = 15;

/// How xtables spells a `--compact` list match: a CIDR list as one rule per CIDR (no sets
/// without ipset, another binary and module), a port list as `-m multiport --dports` rules of
/// at most 15 ports (one port: a plain `--dport`). Other rules pass through.
fn expand(mut r: Rule) -> Vec<Rule> {
    let Some(i) = r.matches.iter().position(|m| match m {
        Match::DstIn { .. } => true,
        Match::DportsIn { ports, .. } => ports.len() > MULTIPORT_MAX || ports.len() == 1,
        _ => false,
    }) else {
        return vec![r];
    };
    // The list leaves the rule before the rule is copied once per item: copying the whole
    // list with it, per item, is quadratic.
    let list = std::mem::replace(&mut r.matches[i], Match::Proto { proto: Proto::Tcp });
    let with = |m: Match| {
        let mut c = r.clone();
        c.matches[i] = m;
        c
    };
    match list {
        Match::DstIn { cidrs } => cidrs
            .iter()
            .flat_map(|c| {
                expand(with(Match::Dst {
                    negate: false,
                    cidr: *c,
                }))
            })
            .collect(),
        Match::DportsIn { proto, ports } => ports
            .chunks(MULTIPORT_MAX)
            .map(|chunk| match chunk {
                [one] => Match::Dport {
                    proto,
                    negate: false,
                    port: *one,
                },
                many => Match::DportsIn {
                    proto,
                    ports: many.to_vec(),
                },
            })
            .map(with)
            .collect(),
        other => {
            r.matches[i] = other;
            vec![r]
        }
    }
}

impl Sink for Xtables {
    fn both(&mut self, r: Rule) {
        self.push(Family::V4, r.clone());
        self.push(Family::V6, r);
    }
    fn family(&mut self, f: Family, r: Rule) {
        self.push(f, r);
    }
    fn versioned(&mut self, v4: Rule, v6: Rule) {
        self.push(Family::V4, v4);
        self.push(Family::V6, v6);
    }
    fn where_any(&mut self, when: [bool; 2], r: Rule) {
        for (f, on) in Family::BOTH.into_iter().zip(when) {
            if on {
                self.push(f, r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::rule::rule;
    use crate::plan::types::{Table, Target};

    fn r() -> Rule {
        rule(
            Table::Nat,
            crate::plan::types::builtin::PREROUTING,
            vec![],
            Target::Return,
        )
    }

    #[test]
    fn inserts_are_one_based_and_ipv6_only_when_on() {
        let mut x = Xtables::new(false);
        x.both(r().insert(0));
        x.family(Family::V6, r());
        let p = x.finish();
        assert_eq!(p.v4[0].position, Position::Insert(1));
        assert!(p.v6.is_none());
    }

    #[test]
    fn per_family_rules_go_to_their_list() {
        let mut x = Xtables::new(true);
        x.where_any([false, true], r());
        x.versioned(r(), r().insert(1));
        let p = x.finish();
        assert_eq!(p.v4.len(), 1);
        let v6 = p.v6.unwrap();
        assert_eq!(v6.len(), 2);
        assert_eq!(v6[1].position, Position::Insert(2));
    }
}
