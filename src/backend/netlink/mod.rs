//! Native nftables over netlink: one atomic transaction, no `nft` binary.
//!
//! `lower` turns the plan into operations (pure); this module lists which of our tables
//! exist, assembles the batch, sends it in one `sendmsg` (so a batch of any size is one
//! transaction) over the `transport`, and maps a kernel error back to the line of the dry-run
//! text that caused it. `check` compares the kernel's dumps with the lowering. Every message
//! is encoded and parsed in Rust (`wire`, with netlink-packet-netfilter): no C library, no
//! `unsafe`.

mod batch;
mod check;
pub mod guard;
pub mod lower;
mod sets;
pub mod transport;
mod wire;

use std::io;

use netlink_packet_netfilter::nftables::{
    ChainMessage, GenMessage, NfTablesMessage, RuleMessage, TableMessage,
};
use nix::errno::Errno;

use super::{Backend, BackendError};
use crate::plan::{Plan, Scheme};
use lower::{Existing, Op, clean_ops};
use transport::{Reply, Transport};

/// Errors of the netlink backend.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "meshtables needs CAP_NET_ADMIN to program netfilter: add it to the container's securityContext (capabilities: {{add: [\"NET_ADMIN\"]}}, runAsUser: 0); with --native-nftables, NET_RAW is not needed"
    )]
    NoCapability,
    #[error(
        "the kernel has no nf_tables: the nf_tables (or nfnetlink) module is not loaded and could not be loaded on demand (check that module loading works on the node, or load it: modprobe nf_tables)"
    )]
    NoNfTables,
    #[error("netlink: {context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("kernel rejected {what} '{text}': {source}{more}")]
    Rejected {
        what: &'static str,
        text: String,
        source: io::Error,
        more: String,
    },
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
    #[error("the live nftables rules differ from the requested ones: {}", .0.join("; "))]
    NotInPlace(Vec<String>),
    /// The ruleset changed between our read and our commit (another writer): the kernel
    /// refused the batch whole. Read again and retry.
    #[error("the nftables ruleset kept changing while meshtables tried to commit ({0} attempts)")]
    KeptChanging(usize),
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { context, source }
}

/// Fails with the securityContext advice when CAP_NET_ADMIN is not effective.
pub fn check_capability() -> Result<(), NetlinkError> {
    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    ) {
        Ok(true) => Ok(()),
        _ => Err(NetlinkError::NoCapability),
    }
}

/// The netlink backend.
pub struct Netlink;

impl Backend for Netlink {
    /// Replaces whatever of ours exists with the plan's tables, in one transaction that the
    /// kernel commits only if the ruleset is still the one read (`transact_unchanged`).
    fn apply(&self, plan: &Plan) -> Result<String, BackendError> {
        check_capability()?;
        let mut nl = Nft::open()?;
        let (sent, existing) = nl.transact_unchanged(plan.ours.scheme, |existing| {
            faults::inject(plan.ours.scheme, lower::ops(&plan.nft, existing))
        })?;
        let replaced: Vec<&str> = existing.tables.clone();
        crate::logging::debug_with(|| {
            format!(
                "transaction:\n{}",
                crate::render::nft::transaction(&plan.nft)
            )
        });
        Ok(format!(
            "nftables rules programmed: {sent} messages in one transaction{}",
            if replaced.is_empty() {
                String::new()
            } else {
                format!(", replacing {}", replaced.join(", "))
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
        let (_, deleted) = nl.transact_unchanged(plan.ours.scheme, |existing| {
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

/// An nfnetlink connection.
pub(crate) struct Nft {
    t: Transport,
}

impl Nft {
    fn open() -> Result<Nft, NetlinkError> {
        let t = Transport::netfilter().map_err(|e| {
            // No nfnetlink at all: the netfilter modules are absent and were not loaded.
            if e.raw_os_error() == Some(Errno::EPROTONOSUPPORT as i32) {
                NetlinkError::NoNfTables
            } else {
                NetlinkError::Io {
                    context: "opening socket",
                    source: e,
                }
            }
        })?;
        Ok(Nft { t })
    }

    /// Every `inet` object of one kind (the dump `request` asks for), parsed, in the
    /// kernel's order. (A message the crate cannot parse is left out: only another program's
    /// objects can be one, and a missing rule of ours reads as a difference.)
    fn dump(
        &mut self,
        request: NfTablesMessage,
        context: &'static str,
    ) -> Result<Vec<NfTablesMessage>, NetlinkError> {
        let tables = matches!(request, NfTablesMessage::GetTable(_));
        match self
            .t
            .dump(wire::request(request))
            .map_err(io_err(context))?
        {
            Ok(msgs) => Ok(msgs
                .iter()
                .filter_map(|m| wire::parse(m))
                .filter(|(family, _)| *family == wire::INET)
                .map(|(_, m)| m)
                .collect()),
            // nfnetlink answers EINVAL for a subsystem that is not registered: nf_tables is
            // missing and the kernel could not load it.
            Err(Errno::EINVAL) if tables => Err(NetlinkError::NoNfTables),
            Err(e) => Err(NetlinkError::Io {
                context,
                source: e.into(),
            }),
        }
    }

    /// The elements of set `set` of our `inet` table `table` (key, flags, user data), in the
    /// kernel's order.
    fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<wire::LiveElement>, NetlinkError> {
        let request = wire::get_set_elements(table, set);
        Ok(self
            .dump(request, "listing set elements")?
            .iter()
            .flat_map(wire::live_elements)
            .collect())
    }

    /// The sets of our `inet` table `table`, as dumped.
    fn sets(&mut self, table: &str) -> Result<Vec<NfTablesMessage>, NetlinkError> {
        self.dump(wire::get_sets(table), "listing sets")
    }

    /// The names of the `inet` tables (a dump: no transaction, no RCU wait).
    fn table_names(&mut self) -> Result<Vec<String>, NetlinkError> {
        let request = NfTablesMessage::GetTable(TableMessage { attributes: vec![] });
        Ok(self
            .dump(request, "listing tables")?
            .iter()
            .filter_map(|m| wire::table_name(m).map(str::to_string))
            .collect())
    }

    /// Our tables' chains and rules, as dumped.
    fn chains_and_rules(
        &mut self,
    ) -> Result<(Vec<NfTablesMessage>, Vec<NfTablesMessage>), NetlinkError> {
        let chains = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
        let rules = NfTablesMessage::GetRule(RuleMessage { attributes: vec![] });
        Ok((
            self.dump(chains, "listing chains")?,
            self.dump(rules, "listing rules")?,
        ))
    }

    /// Which of the scheme's `inet` tables exist, and whether a guard is up.
    fn our_tables(&mut self, scheme: &Scheme) -> Result<Existing, NetlinkError> {
        let names = self.table_names()?;
        let guard = guard::NAME;
        Ok(Existing {
            tables: scheme
                .tables
                .iter()
                .map(|t| t.nft_name)
                .filter(|t| names.iter().any(|n| n == t))
                .collect(),
            guard: names.iter().any(|n| n == guard),
        })
    }

    /// The ruleset's generation: it changes with every committed transaction, by anyone.
    fn generation(&mut self) -> Result<u32, NetlinkError> {
        let context = "reading the ruleset generation";
        let request = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
        let replies = self
            .t
            .get(wire::request(request))
            .map_err(io_err(context))?
            .map_err(|e| NetlinkError::Io {
                context,
                source: e.into(),
            })?;
        replies
            .iter()
            .filter_map(|m| wire::parse(m))
            .find_map(|(_, m)| wire::generation(&m))
            .ok_or_else(|| NetlinkError::Io {
                context,
                source: io::Error::other("no generation in the kernel's answer"),
            })
    }

    /// Reads the generation and our tables, builds the operations for them with `ops`, and
    /// sends them in a batch stamped with that generation. If anything changed the ruleset in
    /// between (another writer), the kernel refuses the whole batch (ERESTART), and this reads
    /// again and retries: the transaction is never built on a stale read. Returns how many
    /// messages went and which of our tables existed.
    fn transact_unchanged<'p, I>(
        &mut self,
        scheme: &Scheme,
        ops: impl Fn(&Existing) -> I,
    ) -> Result<(usize, Existing), NetlinkError>
    where
        I: Iterator<Item = Result<Op<'p>, lower::LowerError>>,
    {
        const ATTEMPTS: usize = 20;
        for _ in 0..ATTEMPTS {
            let generation = self.generation()?;
            let existing = self.our_tables(scheme)?;
            let mut w = batch::Writer::new(Some(generation));
            for op in ops(&existing) {
                add_op(&mut w, op?);
            }
            if w.count() == 0 {
                return Ok((0, existing));
            }
            match self.commit(w.finish()) {
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

    /// Sends a finished batch and reads the kernel's verdict; returns how many data messages
    /// went.
    fn commit(&mut self, batch: batch::Finished) -> Result<usize, NetlinkError> {
        let count = batch.names.len();
        crate::logging::debug_with(|| {
            format!(
                "sending {count} messages in one batch of {} bytes",
                batch.wire.len()
            )
        });
        self.t.expect_replies(count);
        self.t
            .send(&batch.wire)
            .map_err(io_err("sending the batch"))?;
        let replies = self
            .t
            .queued_replies()
            .map_err(io_err("reading the kernel's replies"))?;
        let describe = |i: usize| batch.names.get(i).map(|(w, n)| (*w, n.describe()));
        verdict(&replies, batch.first, batch.last, &describe).map(|()| count)
    }
}

/// The kernel's verdict on a batch whose data messages are numbered `first..=last`: the first
/// error (by sequence number) names its message; no error and the last message's ACK is
/// success.
fn verdict(
    replies: &[Reply],
    first: u32,
    last: u32,
    describe: &dyn Fn(usize) -> Option<(&'static str, String)>,
) -> Result<(), NetlinkError> {
    let mut errors: Vec<(u32, Errno)> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Status {
                seq,
                errno: Some(e),
            } => Some((*seq, *e)),
            _ => None,
        })
        .collect();
    errors.sort_by_key(|(seq, _)| *seq);
    if let Some((seq, errno)) = errors.first().copied() {
        let (what, text) = seq
            .checked_sub(first)
            .and_then(|i| describe(i as usize))
            .unwrap_or(("batch", "nftables transaction".to_string()));
        let more = match errors.len() {
            1 => String::new(),
            n => format!(" (and {} more errors in the same batch)", n - 1),
        };
        return Err(NetlinkError::Rejected {
            what,
            text,
            source: errno.into(),
            more,
        });
    }
    let acked = replies
        .iter()
        .any(|r| matches!(r, Reply::Status { seq, errno: None } if *seq == last));
    if !acked {
        return Err(NetlinkError::Io {
            context: "committing the batch",
            source: io::Error::other("the kernel did not acknowledge the batch"),
        });
    }
    Ok(())
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
        ..set_header(&set)
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

/// The header of anonymous set `s`, as `nft` declares it.
fn set_header(s: &sets::AnonSet) -> wire::SetHeader<'static> {
    wire::SetHeader {
        name: "__set%d",
        id: s.id,
        flags: s.flags(),
        key_type: s.key_type(),
        key_len: s.key_len(),
        size: s.size(),
        userdata: s.userdata(),
    }
}

/// Whether this kernel can run nat chains for `family`, as upstream's `-t nat -A INPUT -p 255
/// -j RETURN` probe asks of iptables-nft, without leaving anything behind: one transaction
/// adds a throwaway table with a nat base chain and deletes it again. (iptables-nft's probe
/// leaves an empty `nat INPUT` base chain behind, a state change a clean cannot undo.)
pub fn probe_nat(family: crate::plan::Family) -> Result<(), NetlinkError> {
    const TABLE: &str = "meshtables-nat-probe";
    check_capability()?;
    let mut nl = Nft::open()?;
    let pf = (match family {
        crate::plan::Family::V4 => libc::NFPROTO_IPV4,
        crate::plan::Family::V6 => libc::NFPROTO_IPV6,
    }) as u8;
    let hook = wire::BaseHook {
        hook: libc::NF_INET_LOCAL_IN,
        priority: 100,
        kind: "nat",
    };
    let text = |t: &'static str| batch::Named::Text(t.into());
    let mut w = batch::Writer::new(None);
    w.put(
        "table",
        text("add table meshtables-nat-probe"),
        pf,
        NfTablesMessage::NewTable(wire::table(TABLE)),
    );
    w.put(
        "chain",
        text("add chain meshtables-nat-probe input { type nat hook input priority 100 ; }"),
        pf,
        NfTablesMessage::NewChain(wire::chain(TABLE, "input", Some(hook))),
    );
    w.put(
        "table deletion",
        text("delete table meshtables-nat-probe"),
        pf,
        NfTablesMessage::DeleteTable(wire::table(TABLE)),
    );
    nl.commit(w.finish()).map(|_| ())
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
            let msg = wire::set(table.nft_name, set_header(&set));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_names_its_message_and_the_last_ack_commits() {
        let describe = |i: usize| Some(("rule", format!("rule {i}")));
        let ok = [Reply::Status {
            seq: 12,
            errno: None,
        }];
        assert!(verdict(&ok, 10, 12, &describe).is_ok());
        assert!(verdict(&[], 10, 12, &describe).is_err(), "no ACK");
        let failed = [
            Reply::Status {
                seq: 12,
                errno: Some(Errno::ENOENT),
            },
            Reply::Status {
                seq: 11,
                errno: Some(Errno::EOPNOTSUPP),
            },
        ];
        let e = verdict(&failed, 10, 12, &describe).unwrap_err().to_string();
        assert!(e.starts_with("kernel rejected rule 'rule 1'"), "{e}");
        assert!(e.contains("(and 1 more errors"), "{e}");
    }
}
