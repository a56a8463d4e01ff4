//! Native nftables over netlink: one atomic transaction, no `nft` binary.
//!
//! `lower` turns the plan into operations (pure); this module lists which of the scheme's
//! tables exist, assembles the batch, and sends it in one `sendmsg` (so a batch of any size is
//! one transaction) over the kernel layer (`backend::nl`), whose session maps a kernel error
//! back to the line of the dry-run text that caused it. `check` compares the kernel's dumps
//! with the lowering. Every message is encoded and parsed in Rust: no C library, no `unsafe`.

mod check;
mod live;
pub mod lower;
pub mod members;

use netlink_packet_netfilter::nftables::NfTablesMessage;
use nix::errno::Errno;

use super::api::{Backend, BackendError};
use super::nl::session::{NetlinkError, Nft, check_capability};
use super::nl::{batch, guard, sets, wire};
use crate::plan::Plan;
use lower::{Existing, Op, clean_ops};

/// The netlink backend.
pub struct Netlink;

impl Backend for Netlink {
    /// Replaces whatever of ours exists with the plan's tables, in one transaction that the
    /// kernel commits only if the ruleset is still the one read (`transact_unchanged`).
    fn apply(&self, plan: &Plan) -> Result<String, BackendError> {
        check_capability()?;
        let mut nl = Nft::open()?;
        let (sent, existing) = transact_unchanged(&mut nl, plan, |existing| {
            faults::inject(
                plan.ours.scheme,
                lower::ops(&plan.nft, &plan.sets, existing),
            )
        })?;
        let replaced: Vec<&str> = existing.tables.clone();
        crate::logging::debug_with(|| {
            format!(
                "transaction:\n{}",
                crate::render::nft::transaction(&plan.nft)
            )
        });
        // A table with named sets is flushed and refilled (its members stay), not replaced.
        let how = if plan.sets.is_empty() {
            "replacing"
        } else {
            "refilling"
        };
        Ok(format!(
            "nftables rules programmed: {sent} messages in one transaction{}",
            if replaced.is_empty() {
                String::new()
            } else {
                format!(", {how} {}", replaced.join(", "))
            }
        ))
    }

    /// Every difference between the live ruleset and the plan (`check.rs`).
    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        check_capability()?;
        let diffs = check::differences(&mut Nft::open()?, plan)?;
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(NetlinkError::NotInPlace(diffs).into())
        }
    }

    /// Deletes our tables (those that exist) in one transaction, committed only if no table
    /// appeared or vanished since the read. Nothing to delete is success.
    fn clean(&self, plan: &Plan) -> Result<Vec<String>, BackendError> {
        check_capability()?;
        let mut nl = Nft::open()?;
        let (_, deleted) = transact_unchanged(&mut nl, plan, |existing| {
            clean_ops(existing).into_iter().map(Ok)
        })?;
        Ok(clean_ops(&deleted).iter().map(Op::describe).collect())
    }
}

/// Test-only fault injection (cargo feature `test-faults`, which only the tests enable):
/// with `MESHTABLES_TEST_FAULT=reject-rule`, a rule the kernel refuses (TPROXY in a nat output
/// chain) goes into the batch, to prove that a rejected batch changes nothing and that the
/// error names the rule.
#[cfg(feature = "test-faults")]
mod faults {
    use super::lower::{self, LowerError, Op};
    use crate::plan::{Family, Mark, NftRule, Port, Position, Scheme, Table, Target};

    /// The operations, with the refused rule after the first nat rule (mid-batch, so the
    /// rejected message is not the one that carries the ACK).
    pub fn inject<'a>(
        scheme: &'static Scheme,
        ops: impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a,
    ) -> Box<dyn Iterator<Item = Result<Op<'a>, LowerError>> + 'a> {
        if std::env::var("MESHTABLES_TEST_FAULT").as_deref() != Ok("reject-rule") {
            return Box::new(ops);
        }
        let (Some(port), Some(mark), Some(nat)) =
            (Port::new(9), Mark::new(4242), scheme.layout(Table::Nat))
        else {
            return Box::new(ops);
        };
        let rule = NftRule {
            chain: crate::plan::builtin::OUTPUT,
            position: Position::Append,
            family: Some(Family::V4),
            matches: vec![],
            target: Target::Tproxy { port, mark },
            mark_words: Default::default(),
            counter: true,
        };
        let Ok((exprs, _)) = lower::lower_rule(&rule, &mut 0) else {
            return Box::new(ops);
        };
        let mut bad = Some(Op::AddRule {
            table: nat,
            rule: std::borrow::Cow::Owned(rule),
            exprs,
        });
        Box::new(ops.flat_map(move |op| {
            let first_nat_rule =
                matches!(&op, Ok(Op::AddRule { table, .. }) if table.table == Table::Nat);
            let extra = if first_nat_rule {
                bad.take().map(Ok)
            } else {
                None
            };
            std::iter::once(op).chain(extra)
        }))
    }
}

#[cfg(not(feature = "test-faults"))]
mod faults {
    use super::lower::{LowerError, Op};

    pub fn inject<'a>(
        _scheme: &'static crate::plan::Scheme,
        ops: impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a,
    ) -> impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a {
        ops
    }
}

/// For the benchmark: the kernel's own cost of inserting the elements of an address set of
/// `cidrs` (one family), the floor under any apply that loads them. One transaction creates
/// `table inet meshtables-floor` with an empty named set of the same type (interval for
/// prefixes, hash for single addresses); the next holds only the elements, in ascending
/// order (as `nft` sends them) or descending, and is timed from `sendmsg` to the kernel's
/// verdict; a third deletes the table.
pub fn element_floor(
    cidrs: &[crate::plan::Cidr],
    descending: bool,
) -> Result<std::time::Duration, NetlinkError> {
    use batch::{Named, Writer};
    const TABLE: &str = "meshtables-floor";
    let family = cidrs
        .first()
        .map_or(crate::plan::Family::V4, |c| c.family());
    let mut set = sets::AnonSet::addrs(0, family, cidrs);
    if descending {
        set.elements.reverse();
    }
    let mut nl = Nft::open()?;
    let text = |t: &'static str| Named::Text(t.into());
    let mut w = Writer::new(None);
    let table = || NfTablesMessage::NewTable(wire::table(TABLE));
    w.put(
        "table",
        text("add table inet meshtables-floor"),
        wire::INET,
        table(),
    );
    // A named set `s` of the same type: the anonymous set's flags without anonymous and
    // constant.
    let header = wire::SetHeader {
        name: "s",
        id: 1,
        flags: set.flags() & !((libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32),
        ..set.header()
    };
    let named = NfTablesMessage::NewSet(wire::set(TABLE, header));
    w.put("set", text("add set"), wire::INET, named);
    nl.commit(w.finish())?;
    let mut w = Writer::new(None);
    w.elements_of(TABLE, "s", None, &set.elements, text("elements"));
    let finished = w.finish();
    let start = std::time::Instant::now();
    nl.commit(finished)?;
    let took = start.elapsed();
    let mut w = Writer::new(None);
    let delete = NfTablesMessage::DeleteTable(wire::table(TABLE));
    w.put(
        "table deletion",
        text("delete table inet meshtables-floor"),
        wire::INET,
        delete,
    );
    nl.commit(w.finish())?;
    Ok(took)
}

/// Reads the generation and our tables, builds the operations for them with `ops`, and
/// sends them in a batch stamped with that generation. If anything changed the ruleset in
/// between (another writer), the kernel refuses the whole batch (ERESTART), and this reads
/// again and retries: the transaction is never built on a stale read. Returns how many
/// messages went and which of our tables existed.
fn transact_unchanged<'p, I>(
    nl: &mut Nft,
    plan: &Plan,
    ops: impl Fn(&Existing) -> I,
) -> Result<(usize, Existing), NetlinkError>
where
    I: Iterator<Item = Result<Op<'p>, lower::LowerError>>,
{
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let generation = nl.generation()?;
        // Read under the same generation as the batch: a foreign object added after this
        // read makes the kernel refuse the batch, and the next attempt sees it.
        refuse_foreign(nl, plan)?;
        let existing = live::our_tables(nl, plan.ours.scheme)?;
        let mut w = batch::Writer::new(Some(generation));
        for op in ops(&existing) {
            add_op(&mut w, op?);
        }
        if w.count() == 0 {
            return Ok((0, existing));
        }
        match nl.commit(w.finish()) {
            Err(NetlinkError::Rejected { source, .. })
                if source.raw_os_error() == Some(Errno::ERESTART as i32) =>
            {
                continue;
            }
            Ok(sent) => return Ok((sent, existing)),
            Err(e) => return Err(e),
        }
    }
    Err(NetlinkError::KeptChanging(ATTEMPTS))
}

/// A plan with named sets keeps its tables (their members are state): an apply flushes them
/// and a clean deletes them, so anything in one that is not the scheme's, a chain it does not
/// declare or a set it does not make, is a conflict to report, and nothing is changed. A
/// scheme without named sets replaces its tables whole, but a named set in one is not its
/// own either: it is another scheme's table of the same name (the node's `inet
/// istio-ambient-nat` with its probe sets, met by the in-pod rules run in the node's
/// namespace), and replacing or deleting it would drop the node's probe SNAT and its members.
fn refuse_foreign(nl: &mut Nft, plan: &Plan) -> Result<(), NetlinkError> {
    let existing = live::our_tables(nl, plan.ours.scheme)?;
    if existing.tables.is_empty() {
        return Ok(());
    }
    let with_sets = !plan.ours.sets.is_empty();
    let chains = match with_sets {
        true => nl.chains_and_rules()?.0,
        false => Vec::new(),
    };
    let mut foreign = Vec::new();
    for layout in plan.ours.scheme.tables {
        let name = layout.nft_name;
        if !existing.tables.contains(&name) {
            continue;
        }
        for c in chains.iter().filter(|m| wire::table_of(m) == Some(name)) {
            let Some(live) = wire::LiveChain::from(c) else {
                continue;
            };
            if !layout.chains.iter().any(|k| k.nft_name() == live.name) {
                foreign.push(format!("chain inet {name} {}", live.name));
            }
        }
        for m in nl.sets(name)? {
            let Some((set, _)) = wire::live_set(&m) else {
                continue;
            };
            // Anonymous sets belong to rules (flushed with them); named ones must be ours.
            if !set.starts_with("__set") && !plan.ours.sets.iter().any(|s| s.name == set) {
                foreign.push(format!("set inet {name} {set}"));
            }
        }
    }
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(NetlinkError::NotOurs(foreign))
    }
}

/// Writes one operation as its message(s).
fn add_op<'a>(w: &mut batch::Writer<'a>, op: Op<'a>) {
    use batch::Named;
    // Tables and the guard are named by their text now (a few per batch); rules and sets by
    // reference, rendered only if the kernel refuses one.
    let text = |op: &Op| Named::Text(op.describe().into());
    let inet = wire::INET;
    match op {
        Op::DelTable(t) => {
            let msg = NfTablesMessage::DeleteTable(wire::table(t));
            w.put("table deletion", text(&op), inet, msg);
        }
        Op::DelGuard => {
            let msg = NfTablesMessage::DeleteTable(wire::table(guard::NAME));
            w.put("table deletion", text(&op), inet, msg);
        }
        Op::AddTable(t) => {
            let msg = NfTablesMessage::NewTable(wire::table(t.nft_name));
            w.put("table", text(&op), inet, msg);
        }
        Op::FlushTable(t) => {
            let msg = NfTablesMessage::DeleteRule(wire::flush_table(t.nft_name));
            w.put("table flush", text(&op), inet, msg);
        }
        Op::AddNamedSet { table, set } => {
            let v6 = set.family == crate::plan::Family::V6;
            let msg = wire::named_addr_set(table.nft_name, set.name, v6, set.comment);
            w.put("set", text(&op), inet, NfTablesMessage::NewSet(msg));
        }
        Op::AddChain { table, chain } => {
            let base = table.base_chain(chain).map(|b| wire::BaseHook {
                hook: lower::hook(b.hook),
                priority: b.priority,
                kind: b.kind.name(),
            });
            let msg = wire::chain(table.nft_name, chain.nft_name(), base);
            let named = Named::Chain(table, chain);
            w.put("chain", named, inet, NfTablesMessage::NewChain(msg));
        }
        Op::AddSet { table, set, rule } => {
            let named = Named::Rule(table, rule);
            let msg = wire::set(table.nft_name, set.header());
            w.put(
                "set of rule",
                named.clone(),
                inet,
                NfTablesMessage::NewSet(msg),
            );
            w.elements(table.nft_name, &set, named);
        }
        Op::AddRule { table, rule, exprs } => {
            let msg = wire::rule(table.nft_name, rule.chain.nft_name(), &exprs);
            let named = match rule {
                std::borrow::Cow::Borrowed(rule) => Named::Rule(table, rule),
                std::borrow::Cow::Owned(rule) => Named::Owned(table, Box::new(rule)),
            };
            w.put("rule", named, inet, NfTablesMessage::NewRule(msg));
        }
    }
}

impl From<NetlinkError> for BackendError {
    fn from(e: NetlinkError) -> Self {
        BackendError::Failed(Box::new(e))
    }
}
