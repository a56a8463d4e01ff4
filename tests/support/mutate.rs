//! Mutants of a plan, to prove the tracer can fail: the plan without one of its rules, or with
//! every rule passed through an edit. Rules are reached by dialect (xtables: the IPv4 list,
//! then the IPv6 one; nft: table by table) and chains named by their dialect's name only.

use meshtables::plan::{Match, Plan, Position, Target};

use super::scenarios::Dialect;

/// One rule, open to an edit.
pub struct RuleMut<'a> {
    /// The chain's name in its dialect (`ISTIO_OUTPUT`, `istio-output`).
    pub chain: &'static str,
    pub matches: &'a mut Vec<Match>,
    pub target: &'a mut Target,
    pub position: &'a mut Position,
}

/// How many rules `plan` has in `dialect`.
pub fn rule_count(plan: &Plan, dialect: Dialect) -> usize {
    match dialect {
        Dialect::Xtables => plan.xtables.v4.len() + plan.xtables.v6.as_ref().map_or(0, Vec::len),
        Dialect::Nft => plan.nft.tables.iter().map(|t| t.rules.len()).sum(),
    }
}

/// `plan` without its `n`th rule of `dialect`.
pub fn without(plan: &Plan, dialect: Dialect, mut n: usize) -> Plan {
    let mut p = plan.clone();
    match dialect {
        Dialect::Xtables => {
            let v4 = p.xtables.v4.len();
            if n < v4 {
                p.xtables.v4.remove(n);
            } else if let Some(v6) = p.xtables.v6.as_mut() {
                v6.remove(n - v4);
            }
        }
        Dialect::Nft => {
            for t in &mut p.nft.tables {
                if n < t.rules.len() {
                    t.rules.remove(n);
                    break;
                }
                n -= t.rules.len();
            }
        }
    }
    p
}

/// Passes every rule of `dialect` in `plan` through `edit`.
pub fn alter(plan: &mut Plan, dialect: Dialect, edit: &dyn Fn(RuleMut)) {
    match dialect {
        Dialect::Xtables => {
            let v6 = plan.xtables.v6.iter_mut().flatten();
            for r in plan.xtables.v4.iter_mut().chain(v6) {
                edit(RuleMut {
                    chain: r.chain.xt_name(),
                    matches: &mut r.matches,
                    target: &mut r.target,
                    position: &mut r.position,
                });
            }
        }
        Dialect::Nft => {
            for r in plan.nft.tables.iter_mut().flat_map(|t| t.rules.iter_mut()) {
                edit(RuleMut {
                    chain: r.chain.nft_name(),
                    matches: &mut r.matches,
                    target: &mut r.target,
                    position: &mut r.position,
                });
            }
        }
    }
}
