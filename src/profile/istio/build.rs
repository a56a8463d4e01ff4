//! `Policy → Plan`: Istio's policy walked once into each dialect, plus the policy routing
//! TPROXY needs, and what is ours. Pure: no I/O.

use super::chains::SCHEME;
use super::policy::Policy;
use super::walk::walk;
use crate::plan::{Dialects, MarkRule, Nft, Ownership, Plan, PolicyRoutes, Xtables};

/// Build the whole plan for `policy`: its rules in both dialects, and the policy routing
/// TPROXY needs.
pub fn build(policy: &Policy) -> Plan {
    build_for(policy, Dialects::BOTH)
}

/// `build`, with only the dialects asked for (the others are empty).
pub fn build_for(policy: &Policy, dialects: Dialects) -> Plan {
    let mut xt = Xtables::new(policy.ipv6);
    if dialects.xtables {
        walk(policy, &mut xt);
    }
    let scheme = &SCHEME;
    let mut nft = Nft::new(policy.ipv6, scheme);
    if dialects.nft {
        walk(policy, &mut nft);
    }
    // TPROXY needs policy routing only when something is captured inbound: `ip rule add
    // fwmark MARK lookup TABLE`, as upstream (the full mask, the kernel's preference).
    let rule = MarkRule {
        mark: policy.tproxy_mark,
        mask: u32::MAX,
        table: policy.tproxy_route_table,
        priority: None,
    };
    let routes = (policy.tproxy() && !policy.inbound_ports.is_empty()).then(|| PolicyRoutes {
        rule,
        families: policy.families(),
    });
    Plan {
        xtables: xt.finish(),
        nft: nft.finish(),
        routes,
        loopback_v6_address: policy.ipv6,
        sets: Vec::new(),
        ours: Ownership {
            scheme,
            // Upstream's TPROXY bookkeeping rules in mangle carry the inbound mark or the
            // outbound one.
            marks: vec![policy.tproxy_mark, crate::values::Mark::OUTBOUND],
            rule: Some(rule),
            loopback_v6: true,
            sets: Vec::new(),
        },
    }
}
