//! The rule plan: what meshtables will install, as typed data and nothing else.
//!
//! `build(&Policy) -> Plan` is pure: host facts were read before (`config`). The policy is
//! walked once (`walk`), in upstream's order, into two dialects, because upstream generates
//! its two pictures of the policy with two programs that differ in small, enumerated ways:
//! `xtables` (per-family rule lists, rendered as `iptables-restore` input) and `nft` (three
//! `inet` tables, rendered as an `nft -f` transaction and lowered to netlink). Matches and
//! targets are enums; only renderers know how `-m owner --uid-owner` or `skuid` is spelled.
//! Every value is a validated newtype, so nothing that reaches rendered text can carry a
//! space, a newline or a quote.
//!
//! Module graph (no cycles): `walk` → `nft` (its named spellings), `rule`; `xtables`, `nft` →
//! `rule`, `types`; this module → all of them.

mod nft;
mod rule;
mod types;
mod walk;
mod xtables;

pub use crate::values::{Cidr, DisplayV6, Family, Group, IfName, Mark, Port, RouteTable, Uid};
pub use types::*;

use serde::Serialize;

use crate::policy::Policy;

/// Build the whole plan for `policy`: its rules in both dialects, and the policy routing
/// TPROXY needs.
pub fn build(policy: &Policy) -> Plan {
    let mut xt = xtables::Xtables::new(policy.ipv6);
    walk::walk(policy, &mut xt);
    let mut nft = nft::Nft::new(policy.ipv6);
    walk::walk(policy, &mut nft);
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

/// Everything an apply or a clean needs, computed from a `Policy` without I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Rules for `iptables-restore` (always present) and `ip6tables-restore` (when IPv6 is on).
    pub xtables: XtablesPlan,
    /// The native nftables ruleset.
    pub nft: NftPlan,
    /// Policy routing TPROXY needs, when it needs it.
    pub routes: Option<TproxyRoutes>,
    /// Whether `::6/128` goes on `lo` (upstream adds it whenever IPv6 is on).
    pub loopback_v6_address: bool,
    /// What marks our objects, for a clean or a rerun to recognise them.
    #[serde(skip)]
    pub ours: Ownership,
}

/// The TPROXY mark and routing table of this policy: upstream's bookkeeping rules in mangle
/// carry the mark, and the policy routing uses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub mark: Mark,
    pub table: RouteTable,
}

/// Per-family xtables rule lists, in upstream's emission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XtablesPlan {
    pub v4: Vec<XtRule>,
    /// `None` when IPv6 is off: nothing is sent to ip6tables.
    pub v6: Option<Vec<XtRule>>,
}

impl XtablesPlan {
    /// The rule list of one family, empty when that family is off.
    pub fn rules(&self, family: Family) -> &[XtRule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => self.v6.as_deref().unwrap_or(&[]),
        }
    }

    /// The families that are programmed: IPv4 always, IPv6 when on.
    pub fn families(&self) -> Vec<Family> {
        let mut f = vec![Family::V4];
        if self.v6.is_some() {
            f.push(Family::V6);
        }
        f
    }
}

/// One xtables rule: `-A chain ...` or `-I chain N ...` in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XtRule {
    pub table: Table,
    pub chain: Chain,
    pub position: Position,
    /// Rendered in this order: upstream's match order differs from rule to rule.
    pub matches: Vec<Match>,
    pub target: Target,
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Append,
    /// xtables: 1-based `-I chain N`; nftables: 0-based `insert ... index N`.
    Insert(u32),
}

/// The native nftables ruleset: `inet` tables in transaction order (nat, mangle, raw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftPlan {
    pub tables: Vec<NftTable>,
}

/// One of our `inet` tables with the chains that have rules and the rules in emission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftTable {
    pub table: Table,
    /// Declared chains, in upstream's fixed order; only chains with at least one rule.
    pub chains: Vec<Chain>,
    /// Rules in emission order; `Position::Insert` indexes are already fixed up against the
    /// rules emitted before them, so a renderer or lowering can replay them in order.
    pub rules: Vec<NftRule>,
}

/// One nftables rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftRule {
    pub chain: Chain,
    pub position: Position,
    /// Family the rule is restricted to, when it has ip/ip6 matches or a tproxy target.
    pub family: Option<Family>,
    pub matches: Vec<Match>,
    pub target: Target,
}

/// `ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TproxyRoutes {
    pub mark: Mark,
    pub table: RouteTable,
    pub families: Vec<Family>,
}
