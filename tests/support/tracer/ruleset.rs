//! One dialect of a plan as the kernel holds it: each chain's final rule order (xtables rules
//! replayed `-A` / `-I chain N` as iptables-restore does; nft rules replayed with their
//! already fixed-up `index N`), and the base chains each hook runs, in netfilter's priority
//! order. Chains and tables are named only through `xt_name()` / `nft_name()` /
//! `is_builtin()` / `base_chain()`, so the tracer does not care which chains a profile has.

use std::collections::HashMap;

use meshtables::plan::{
    ChainType, Family, Hook as NftHook, Match, NftPlan, Position, Target, XtRule,
};
use meshtables::render;

/// A netfilter hook a packet of the pod traverses (the pod does not forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Output,
    Postrouting,
}

impl Hook {
    /// The xtables built-in chain of this hook.
    pub fn xt_chain(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

/// The hooks of an xtables table and the priority it registers each at (NF_IP_PRI_*: raw
/// -300, mangle -150, nat -100 for DNAT and +100 for SNAT, filter 0).
fn xt_hooks(table: &str) -> &'static [(Hook, i32)] {
    use Hook::*;
    match table {
        "raw" => &[(Prerouting, -300), (Output, -300)],
        "mangle" => &[
            (Prerouting, -150),
            (Input, -150),
            (Output, -150),
            (Postrouting, -150),
        ],
        "nat" => &[
            (Prerouting, -100),
            (Input, 100),
            (Output, -100),
            (Postrouting, 100),
        ],
        "filter" => &[(Input, 0), (Output, 0)],
        _ => &[],
    }
}

/// One rule as the tracer needs it.
pub struct Rule<'p> {
    /// nft: the family the rule is restricted to; xtables rules are per-family lists.
    pub family: Option<Family>,
    pub matches: &'p [Match],
    pub target: &'p Target,
    /// The rule as the dialect writes it, for traces.
    pub text: String,
}

/// A base chain: where a chain hooks in.
#[derive(Debug, Clone)]
pub struct Base {
    pub table: String,
    pub chain: String,
    pub hook: Hook,
    pub priority: i32,
    /// A nat chain: consulted for a connection's first packet only.
    pub nat: bool,
    /// A mark change re-routes the packet (mangle OUTPUT, nft `type route`).
    pub reroutes: bool,
}

/// The chains of one dialect (one family for xtables), by (table, chain) name.
#[derive(Default)]
pub struct Ruleset<'p> {
    bases: Vec<Base>,
    chains: HashMap<(String, String), Vec<Rule<'p>>>,
}

fn key(table: &str, chain: &str) -> (String, String) {
    (table.to_string(), chain.to_string())
}

/// Puts `rule` where `position` says; `first` is the index a position of 0 means (xtables
/// counts from 1, nft from 0).
fn place<'p>(
    list: &mut Vec<Rule<'p>>,
    position: Position,
    first: u32,
    rule: Rule<'p>,
) -> Result<(), String> {
    match position {
        Position::Append => list.push(rule),
        Position::Insert(n) => {
            let at = n
                .checked_sub(first)
                .map(|i| i as usize)
                .filter(|i| *i <= list.len())
                .ok_or_else(|| format!("insert at {n} into a chain of {} rules", list.len()))?;
            list.insert(at, rule);
        }
    }
    Ok(())
}

impl<'p> Ruleset<'p> {
    /// No rules at all: every hook accepts.
    pub fn empty() -> Ruleset<'p> {
        Ruleset::default()
    }

    /// The xtables rules of `family`, replayed as iptables-restore would.
    pub fn xtables(rules: &'p [XtRule]) -> Result<Ruleset<'p>, String> {
        let mut rs = Ruleset::empty();
        for r in rules {
            let (t, c) = (r.table.xt_name(), r.chain.xt_name());
            if r.chain.is_builtin() && !xt_hooks(t).iter().any(|(h, _)| h.xt_chain() == c) {
                return Err(format!("table {t} has no built-in chain {c}"));
            }
            if let Target::Jump { chain } = &r.target {
                if chain.is_builtin() {
                    return Err(format!(
                        "{t} {c}: a jump to built-in chain {}",
                        chain.xt_name()
                    ));
                }
                // iptables-restore creates (`-N`) every chain a rule jumps to.
                rs.chains.entry(key(t, chain.xt_name())).or_default();
            }
            let text = format!("{t} {c} {}", render::iptables::rule_spec(r).join(" "));
            let rule = Rule {
                family: None,
                matches: &r.matches,
                target: &r.target,
                text,
            };
            let list = rs.chains.entry(key(t, c)).or_default();
            place(list, r.position, 1, rule).map_err(|e| format!("{t} {c}: {e}"))?;
        }
        let mut tables: Vec<String> = rs.chains.keys().map(|(t, _)| t.clone()).collect();
        tables.dedup();
        for t in tables {
            for (hook, priority) in xt_hooks(&t) {
                // A table comes with all of its built-in chains, rules or not.
                rs.chains.entry(key(&t, hook.xt_chain())).or_default();
                let base = Base {
                    table: t.clone(),
                    chain: hook.xt_chain().to_string(),
                    hook: *hook,
                    priority: *priority,
                    nat: t == "nat",
                    reroutes: t == "mangle" && *hook == Hook::Output,
                };
                if !rs
                    .bases
                    .iter()
                    .any(|b| b.table == base.table && b.hook == base.hook)
                {
                    rs.bases.push(base);
                }
            }
        }
        rs.sort();
        Ok(rs)
    }

    /// The nftables ruleset, replayed in emission order.
    pub fn nft(plan: &'p NftPlan) -> Result<Ruleset<'p>, String> {
        let mut rs = Ruleset::empty();
        for t in &plan.tables {
            let tn = t.layout.nft_name;
            for c in &t.chains {
                rs.chains.insert(key(tn, c.nft_name()), Vec::new());
                if let Some(b) = t.layout.base_chain(*c) {
                    rs.bases.push(Base {
                        table: tn.to_string(),
                        chain: c.nft_name().to_string(),
                        hook: match b.hook {
                            NftHook::Prerouting => Hook::Prerouting,
                            NftHook::Input => Hook::Input,
                            NftHook::Output => Hook::Output,
                            NftHook::Postrouting => Hook::Postrouting,
                        },
                        priority: b.priority,
                        nat: b.kind == ChainType::Nat,
                        reroutes: b.kind == ChainType::Route,
                    });
                }
            }
            for r in &t.rules {
                let c = r.chain.nft_name();
                if let Target::Jump { chain } = &r.target
                    && !t.chains.contains(chain)
                {
                    return Err(format!(
                        "{tn} {c}: a jump to undeclared chain {}",
                        chain.nft_name()
                    ));
                }
                let rule = Rule {
                    family: r.family,
                    matches: &r.matches,
                    target: &r.target,
                    text: format!("{tn} {c} {}", render::nft::rule_body(t.layout, r)),
                };
                let list = rs
                    .chains
                    .get_mut(&key(tn, c))
                    .ok_or_else(|| format!("{tn}: a rule in undeclared chain {c}"))?;
                place(list, r.position, 0, rule).map_err(|e| format!("{tn} {c}: {e}"))?;
            }
        }
        rs.sort();
        Ok(rs)
    }

    /// Base chains in the order netfilter runs them: by priority (stable: registration
    /// order breaks ties).
    fn sort(&mut self) {
        self.bases.sort_by_key(|b| b.priority);
    }

    /// The base chains `hook` runs, in order.
    pub fn at(&self, hook: Hook) -> impl Iterator<Item = &Base> {
        self.bases.iter().filter(move |b| b.hook == hook)
    }

    /// A chain's rules in their final order; `None` when the chain does not exist.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&[Rule<'p>]> {
        self.chains.get(&key(table, chain)).map(Vec::as_slice)
    }

    /// How many rules there are in all.
    pub fn len(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}
