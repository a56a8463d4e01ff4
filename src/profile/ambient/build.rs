//! `Policy → Plan`: the in-pod policy walked once into each dialect, the policy routing that
//! returns ztunnel's connections to it, and what is ours. Pure: no I/O.

use super::chains::SCHEME;
use super::policy::Policy;
use super::walk::walk;
use crate::plan::{Dialects, MarkRule, Nft, Ownership, Plan, PolicyRoutes, Xtables};

/// `ip rule add fwmark CONNMARK/MASK pref PRIORITY lookup TABLE`, upstream's in-pod mark rule.
pub fn mark_rule(p: &Policy) -> MarkRule {
    MarkRule {
        mark: p.connmark.mark(),
        mask: p.connmark.mask(),
        table: p.route_table,
        priority: Some(p.rule_priority),
    }
}

/// The whole plan, in the dialects asked for (the others are empty).
pub fn build_for(p: &Policy, dialects: Dialects) -> Plan {
    let mut xt = Xtables::new(p.ipv6);
    if dialects.xtables {
        walk(p, &mut xt);
    }
    let mut nft = Nft::new(p.ipv6, &SCHEME);
    if dialects.nft {
        walk(p, &mut nft);
    }
    let rule = mark_rule(p);
    Plan {
        xtables: xt.finish(),
        nft: nft.finish(),
        // Always: every in-pod ruleset restores the connmark on ztunnel's replies.
        routes: Some(PolicyRoutes {
            rule,
            families: p.routing_families(),
        }),
        loopback_v6_address: false,
        sets: Vec::new(),
        ours: Ownership {
            scheme: &SCHEME,
            // No bookkeeping rules in built-in chains: only jumps to our chains.
            marks: Vec::new(),
            rule: Some(rule),
            loopback_v6: false,
            sets: Vec::new(),
        },
    }
}

/// Both dialects.
pub fn build(p: &Policy) -> Plan {
    build_for(p, Dialects::BOTH)
}
