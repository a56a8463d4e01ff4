//! `Policy → Plan`: the policy walked once into each dialect, plus the policy routing TPROXY
//! needs. Pure: no I/O.

use super::nft::Nft;
use super::types::{Ownership, Plan, TproxyRoutes};
use super::walk::walk;
use super::xtables::Xtables;
use crate::policy::Policy;

/// Build the whole plan for `policy`: its rules in both dialects, and the policy routing
/// TPROXY needs.
pub fn build(policy: &Policy) -> Plan {
    let mut xt = Xtables::new(policy.ipv6);
    walk(policy, &mut xt);
    let mut nft = Nft::new(policy.ipv6);
    walk(policy, &mut nft);
    // TPROXY needs policy routing only when something is captured inbound.
    let routes = (policy.tproxy() && !policy.inbound_ports.is_empty()).then(|| TproxyRoutes {
        mark: policy.tproxy_mark,
        table: policy.tproxy_route_table,
        families: policy.families(),
    });
    Plan {
        xtables: xt.finish(),
        nft: nft.finish(),
        routes,
        loopback_v6_address: policy.ipv6,
        ours: Ownership {
            mark: policy.tproxy_mark,
            table: policy.tproxy_route_table,
        },
    }
}
