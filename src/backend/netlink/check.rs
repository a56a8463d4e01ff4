//! `check`: is the live nftables ruleset exactly what the plan installs?
//!
//! The kernel's chain, rule and set dumps are parsed (`wire`, netlink-packet-netfilter) and
//! compared with the lowering of the plan, the same operations an apply sends: our tables
//! (and no stale one), each chain with its hook, priority and type, and in every chain the
//! same rules in the same order, expression by expression, every attribute we send compared
//! by value, and every anonymous set a rule looks up: its header as sent (flags, key type and
//! length, declared size, user data; not the name and batch id, which the kernel replaces) and
//! its elements (keys, interval flags and user data). Not compared: counter values. Foreign
//! tables are ignored.
//! Used by `meshtables check` and the CNI plugin's CHECK.

use netlink_packet_core::DefaultNla;

use super::lower::{self, Op};
use crate::backend::nl::session::{NetlinkError, Nft};
use crate::backend::nl::wire::{self, Expr, LiveChain, LiveElement, LiveRule};
use crate::plan::{Chain, Plan, TableLayout};

/// Every difference between the live ruleset and `plan`; empty when they match. (TPROXY
/// routing is checked by `backend::routes`.)
pub(super) fn differences(nl: &mut Nft, plan: &Plan) -> Result<Vec<String>, NetlinkError> {
    let existing = super::live::our_tables(nl, plan.ours.scheme)?;
    let (chains, rules) = nl.chains_and_rules()?;
    let ops = lower::apply_ops(&plan.nft, &plan.sets, &lower::Existing::default())?;
    let mut out = Vec::new();
    if existing.guard {
        out.push(format!(
            "{} is up: an interrupted run's fail-closed guard drops the pod's traffic (a rerun of apply or clean lowers it)",
            crate::backend::nl::guard::TEXT
        ));
    }
    for table in plan.ours.scheme.tables {
        let name = table.nft_name;
        let planned = plan.nft.tables.iter().find(|t| t.table == table.table);
        match (planned, existing.tables.contains(&name)) {
            (None, false) => {}
            (None, true) => out.push(format!("table inet {name} exists but is not planned")),
            (Some(_), false) => out.push(format!("table inet {name} is missing")),
            (Some(t), true) => {
                let in_table = |m: &&_| wire::table_of(m) == Some(name);
                let live_chains: Vec<LiveChain> = chains
                    .iter()
                    .filter(in_table)
                    .filter_map(LiveChain::from)
                    .collect();
                let live_rules: Vec<LiveRule> = rules
                    .iter()
                    .filter(in_table)
                    .filter_map(LiveRule::from)
                    .collect();
                compare_chains(table, &t.chains, &live_chains, &mut out);
                compare_named_sets(nl, table, &plan.sets, &mut out)?;
                let sets = live_sets(nl, name, &live_rules)?;
                compare_rules(table, &ops, &live_rules, &sets, &mut out);
            }
        }
    }
    Ok(out)
}

fn compare_chains(table: &TableLayout, want: &[Chain], live: &[LiveChain], out: &mut Vec<String>) {
    let t = table.nft_name;
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

/// Each named set of the plan exists with the header an apply sends (its members are state,
/// not compared).
fn compare_named_sets(
    nl: &mut Nft,
    table: &TableLayout,
    sets: &[crate::plan::AddrSet],
    out: &mut Vec<String>,
) -> Result<(), NetlinkError> {
    if sets.is_empty() {
        return Ok(());
    }
    let t = table.nft_name;
    let live = nl.sets(t)?;
    for s in sets {
        let v6 = s.family == crate::plan::Family::V6;
        let mut want = wire::set_header_attrs(wire::named_addr_set(t, s.name, v6, s.comment));
        // The kernel reports no flags attribute (NFTA_SET_FLAGS, 3) for a set without flags.
        want.retain(|a| wire::u32_of(a, 3) != Some(0));
        let have = live
            .iter()
            .find_map(|m| wire::live_set(m).filter(|(n, _)| n == s.name));
        match have {
            None => out.push(format!("set inet {t} {} is missing", s.name)),
            Some((_, h)) if !want.iter().all(|a| h.iter().any(|b| wire::same_attr(a, b))) => out
                .push(format!(
                    "set inet {t} {} differs from '{}'",
                    s.name,
                    crate::render::nft::set_line(table, s)
                )),
            Some(_) => {}
        }
    }
    Ok(())
}

/// A set as `check` compares it: its header attributes in wire form (without name and id)
/// and its elements, sorted (the kernel lists interval sets in its own order).
#[derive(Debug, PartialEq, Eq)]
struct SetState {
    header: Vec<DefaultNla>,
    elements: Vec<LiveElement>,
}

/// Set name → what the kernel holds for it.
type Sets = std::collections::HashMap<String, SetState>;

/// Every anonymous set the live rules of `table` look up, by name.
fn live_sets(nl: &mut Nft, table: &str, rules: &[LiveRule]) -> Result<Sets, NetlinkError> {
    let mut out = Sets::new();
    let names: Vec<String> = rules
        .iter()
        .flat_map(|r| r.exprs.iter().filter_map(wire::LiveExpr::lookup_set))
        .collect();
    if names.is_empty() {
        return Ok(out);
    }
    let headers = nl.sets(table)?;
    for name in names {
        if out.contains_key(&name) {
            continue;
        }
        let header = headers
            .iter()
            .find_map(|m| wire::live_set(m).filter(|(n, _)| *n == name))
            .map(|(_, h)| h)
            .unwrap_or_default();
        let mut elements = nl.set_elements(table, &name)?;
        elements.sort();
        out.insert(name, SetState { header, elements });
    }
    Ok(out)
}

/// The planned set of a rule's lookup (by batch id): its header attributes and its elements
/// as the kernel reports them, sorted.
fn planned_set(table: &TableLayout, ops: &[Op], want: &[Expr]) -> Option<SetState> {
    let id = want
        .iter()
        .filter(|e| e.name == "lookup")
        .flat_map(|e| &e.attrs)
        .find_map(|a| wire::u32_of(a, wire::NFTA_LOOKUP_SET_ID))?;
    ops.iter().find_map(|op| match op {
        Op::AddSet { set, .. } if set.id == id => {
            let mut elements: Vec<LiveElement> = set.elements.iter().map(|e| e.wire()).collect();
            elements.sort();
            let header = wire::set_header_attrs(wire::set(table.nft_name, set.header()));
            Some(SetState { header, elements })
        }
        _ => None,
    })
}

/// Whether the live set has the planned one's header attributes (it may report more, e.g. a
/// handle) and exactly its elements.
fn same_set(want: &SetState, have: &SetState) -> bool {
    want.elements == have.elements
        && want
            .header
            .iter()
            .all(|a| have.header.iter().any(|b| wire::same_attr(a, b)))
}

fn compare_rules(
    table: &TableLayout,
    ops: &[Op],
    live: &[LiveRule],
    sets: &Sets,
    out: &mut Vec<String>,
) {
    let t = table.nft_name;
    // The planned rules of this table, grouped by chain in final order (as sent).
    let mut chains: Vec<String> = Vec::new();
    let planned = ops.iter().filter_map(|op| match op {
        Op::AddRule {
            table: tt, rule, ..
        } if **tt == *table => Some(rule.chain.nft_name().to_string()),
        _ => None,
    });
    for c in planned.chain(live.iter().map(|r| r.chain.clone())) {
        if !chains.contains(&c) {
            chains.push(c);
        }
    }
    for chain in &chains {
        let want: Vec<&Op> = ops
            .iter()
            .filter(|op| matches!(op, Op::AddRule { table: tt, rule, .. } if **tt == *table && rule.chain.nft_name() == chain))
            .collect();
        let have: Vec<&LiveRule> = live.iter().filter(|r| &r.chain == chain).collect();
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
            } else if let Some(planned) = planned_set(table, ops, exprs) {
                let live_set = h
                    .exprs
                    .iter()
                    .find_map(wire::LiveExpr::lookup_set)
                    .and_then(|name| sets.get(&name));
                if !live_set.is_some_and(|l| same_set(&planned, l)) {
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

/// Whether the kernel's rule has exactly the planned expressions: the same kinds in the same
/// order, and every attribute we send present with the same value (the kernel also reports
/// some we do not send, such as a lookup's flags).
fn same_rule(want: &[Expr], have: &LiveRule) -> bool {
    want.len() == have.exprs.len()
        && want.iter().zip(&have.exprs).all(|(w, l)| {
            w.name == l.name
                && (w.name == "counter"
                    || w.attrs.iter().all(|a| {
                        // An anonymous set is named by the kernel (`__set0`) and referenced
                        // by a batch-local id when sent: neither can match.
                        // A named set's lookup carries no id, and its name is compared.
                        let anonymous = w
                            .attrs
                            .iter()
                            .any(|x| wire::u32_of(x, wire::NFTA_LOOKUP_SET_ID).is_some());
                        let set_ref = w.name == "lookup"
                            && anonymous
                            && (wire::u32_of(a, wire::NFTA_LOOKUP_SET_ID).is_some()
                                || wire::str_of(a, wire::NFTA_LOOKUP_SET).is_some());
                        set_ref || l.attrs.iter().any(|b| wire::same_attr(a, b))
                    }))
        })
}
