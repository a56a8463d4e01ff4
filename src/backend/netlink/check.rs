//! `check`: is the live nftables ruleset exactly what the plan installs?
//!
//! The kernel's chain and rule dumps are parsed with libnftnl and compared with the lowering
//! of the plan, the same operations an apply sends: our tables (and no stale one), each
//! chain with its hook, priority and type, and in every chain the same rules in the same
//! order, expression by expression, every attribute we send compared by value, and the
//! elements of every anonymous set a rule looks up (keys and interval flags). Not compared:
//! counter values. Foreign tables are ignored.
//! Used by `meshtables check` and the CNI plugin's CHECK.

use super::ffi::{ParsedChain, ParsedRule};
use super::lower::{self, Op};
use super::{NFTA_OBJECT_TABLE, NetlinkError, Nft, transport};
use crate::plan::{Chain, Plan, Table};
use nftnl::nftnl_sys as sys;

/// Every difference between the live ruleset and `plan`; empty when they match. (TPROXY
/// routing is checked by `backend::routes`.)
pub(super) fn differences(nl: &mut Nft, plan: &Plan) -> Result<Vec<String>, NetlinkError> {
    let existing = nl.our_tables()?;
    let chains = nl.dump(sys::libc::NFT_MSG_GETCHAIN, "listing chains")?;
    let rules = nl.dump(sys::libc::NFT_MSG_GETRULE, "listing rules")?;
    let ops = lower::apply_ops(&plan.nft, &lower::Existing::default())?;
    let mut out = Vec::new();
    if existing.guard {
        out.push(format!(
            "{} is up: an interrupted run's fail-closed guard drops the pod's traffic (a rerun of apply or clean lowers it)",
            super::guard::TEXT
        ));
    }
    for table in Table::NFT_TABLES {
        let name = table.nft_name();
        let planned = plan.nft.tables.iter().find(|t| t.table == table);
        match (planned, existing.tables.contains(&table)) {
            (None, false) => {}
            (None, true) => out.push(format!("table inet {name} exists but is not planned")),
            (Some(_), false) => out.push(format!("table inet {name} is missing")),
            (Some(t), true) => {
                let in_table = |m: &&Vec<u8>| {
                    transport::nft_attr_str(m, NFTA_OBJECT_TABLE).as_deref() == Some(name)
                };
                let live_chains: Vec<ParsedChain> = chains
                    .iter()
                    .filter(in_table)
                    .filter_map(|m| ParsedChain::parse(m))
                    .collect();
                let live_rules: Vec<ParsedRule> = rules
                    .iter()
                    .filter(in_table)
                    .filter_map(|m| ParsedRule::parse(m))
                    .collect();
                compare_chains(table, &t.chains, &live_chains, &mut out);
                let elements = live_sets(nl, name, &live_rules)?;
                compare_rules(table, &ops, &live_rules, &elements, &mut out);
            }
        }
    }
    Ok(out)
}

fn compare_chains(table: Table, want: &[Chain], live: &[ParsedChain], out: &mut Vec<String>) {
    let t = table.nft_name();
    for c in want {
        let Some(l) = live.iter().find(|l| l.name == c.nft_name()) else {
            out.push(format!("chain inet {t} {} is missing", c.nft_name()));
            continue;
        };
        let hook = table.base_chain(*c).map(|b| {
            (
                lower::hook(b.hook) as u32,
                b.priority,
                b.kind.name().to_string(),
            )
        });
        if l.hook != hook {
            out.push(format!(
                "chain inet {t} {} has hook {:?}, expected {:?}",
                c.nft_name(),
                l.hook,
                hook
            ));
        }
    }
    for l in live {
        if !want.iter().any(|c| c.nft_name() == l.name) {
            out.push(format!("chain inet {t} {} is not planned", l.name));
        }
    }
}

/// The elements of every anonymous set the live rules of `table` look up, by set name,
/// sorted (the kernel lists interval sets in its own order).
fn live_sets(nl: &mut Nft, table: &str, rules: &[ParsedRule]) -> Result<Elements, NetlinkError> {
    let mut out = Elements::new();
    for r in rules {
        for e in r.exprs().iter().filter(|e| e.name() == "lookup") {
            if let Some(name) = e.str_attr(sys::NFTNL_EXPR_LOOKUP_SET)
                && !out.contains_key(&name)
            {
                let mut elements = nl.set_elements(table, &name)?;
                elements.sort();
                out.insert(name, elements);
            }
        }
    }
    Ok(out)
}

/// Set name → sorted (key, flags) elements.
type Elements = std::collections::HashMap<String, Vec<(Vec<u8>, u32)>>;

/// The planned elements of the set a rule's lookup names by batch id, sorted.
fn planned_set(ops: &[Op], want: &[super::ffi::Expr]) -> Option<Vec<(Vec<u8>, u32)>> {
    let id = want.iter().find(|e| e.name == c"lookup").and_then(|e| {
        e.attrs.iter().find_map(|(k, v)| match v {
            super::ffi::Attr::U32(id) if *k == sys::NFTNL_EXPR_LOOKUP_SET_ID => Some(*id),
            _ => None,
        })
    })?;
    ops.iter().find_map(|op| match op {
        Op::AddSet { set, .. } if set.id == id => {
            let mut e = set.elements.clone();
            e.sort();
            Some(e)
        }
        _ => None,
    })
}

fn compare_rules(
    table: Table,
    ops: &[Op],
    live: &[ParsedRule],
    elements: &Elements,
    out: &mut Vec<String>,
) {
    let t = table.nft_name();
    // The planned rules of this table, grouped by chain in final order (as sent).
    let mut chains: Vec<String> = Vec::new();
    let planned = ops.iter().filter_map(|op| match op {
        Op::AddRule {
            table: tt, rule, ..
        } if *tt == table => Some(rule.chain.nft_name().to_string()),
        _ => None,
    });
    for c in planned.chain(live.iter().filter_map(ParsedRule::chain)) {
        if !chains.contains(&c) {
            chains.push(c);
        }
    }
    for chain in &chains {
        let want: Vec<&Op> = ops
            .iter()
            .filter(|op| matches!(op, Op::AddRule { table: tt, rule, .. } if *tt == table && rule.chain.nft_name() == chain))
            .collect();
        let have: Vec<&ParsedRule> = live
            .iter()
            .filter(|r| r.chain().as_ref() == Some(chain))
            .collect();
        if want.len() != have.len() {
            out.push(format!(
                "chain inet {t} {chain} has {} rules, expected {}",
                have.len(),
                want.len()
            ));
            continue;
        }
        for (i, (w, h)) in want.iter().zip(have).enumerate() {
            let Op::AddRule { exprs, .. } = w else {
                continue;
            };
            if !same_rule(exprs, h) {
                out.push(format!(
                    "rule {} of chain inet {t} {chain} differs from '{}'",
                    i + 1,
                    w.describe()
                ));
            } else if let Some(planned) = planned_set(ops, exprs) {
                let live_set = h
                    .exprs()
                    .iter()
                    .find(|e| e.name() == "lookup")
                    .and_then(|e| e.str_attr(sys::NFTNL_EXPR_LOOKUP_SET))
                    .and_then(|name| elements.get(&name));
                if live_set != Some(&planned) {
                    out.push(format!(
                        "the set of rule {} of chain inet {t} {chain} differs from '{}'",
                        i + 1,
                        w.describe()
                    ));
                }
            }
        }
    }
}

/// Whether the kernel's rule has exactly the planned expressions.
fn same_rule(want: &[super::ffi::Expr], have: &ParsedRule) -> bool {
    let live = have.exprs();
    want.len() == live.len()
        && want.iter().zip(&live).all(|(w, l)| {
            let name = w.name.to_str().unwrap_or_default();
            name == l.name()
                && (name == "counter"
                    || w.attrs.iter().all(|(key, value)| {
                        // An anonymous set is named by the kernel (`__set0`) and referenced
                        // by a batch-local id when sent: neither can match.
                        let set_ref = name == "lookup"
                            && (*key == sys::NFTNL_EXPR_LOOKUP_SET
                                || *key == sys::NFTNL_EXPR_LOOKUP_SET_ID);
                        set_ref || l.has(*key, value)
                    }))
        })
}
