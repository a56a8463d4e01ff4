//! Native nftables over netlink: one atomic transaction, no `nft` binary.
//!
//! `lower` turns the plan into operations (pure); this module lists which of our tables
//! exist, assembles the nftnl batch, sends it in one `sendmsg` (so a batch of any size is one
//! transaction) over the `transport`, and maps a kernel error back to the line of the dry-run
//! text that caused it. `check` compares the kernel's dumps with the lowering; `ffi` holds the
//! only `unsafe` of the crate.

mod batch;
mod check;
mod ffi;
pub mod guard;
pub mod lower;
mod sets;
pub mod transport;

use std::io;

use nftnl::set::{Set, SetKey};
use nftnl::{MsgType, ProtoFamily};
use nix::errno::Errno;

use super::{Backend, BackendError};
use crate::plan::{Plan, Table};
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
        let (sent, existing) =
            nl.transact_unchanged(|existing| faults::inject(lower::ops(&plan.nft, existing)))?;
        let replaced: Vec<&str> = existing.tables.iter().map(|t| t.nft_name()).collect();
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
    fn clean(&self, _plan: &Plan) -> Result<Vec<String>, BackendError> {
        check_capability()?;
        let mut nl = Nft::open()?;
        let (_, deleted) =
            nl.transact_unchanged(|existing| clean_ops(existing).into_iter().map(Ok))?;
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
    use crate::plan::{Chain, Family, Mark, NftRule, Port, Position, Table, Target};

    /// The operations, with the refused rule after the first nat rule (mid-batch, so the
    /// rejected message is not the one that carries the ACK).
    pub fn inject<'a>(
        ops: impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a,
    ) -> Box<dyn Iterator<Item = Result<Op<'a>, LowerError>> + 'a> {
        if std::env::var("MESHTABLES_TEST_FAULT").as_deref() != Ok("reject-rule") {
            return Box::new(ops);
        }
        let (Some(port), Some(mark)) = (Port::new(15006), Mark::new(1337)) else {
            return Box::new(ops);
        };
        let rule = NftRule {
            chain: Chain::Output,
            position: Position::Append,
            family: Some(Family::V4),
            matches: vec![],
            target: Target::Tproxy { port, mark },
        };
        let Ok((exprs, _)) = lower::lower_rule(Table::Nat, &rule, &mut 0) else {
            return Box::new(ops);
        };
        let mut bad = Some(Op::AddRule {
            table: Table::Nat,
            rule: std::borrow::Cow::Owned(rule),
            exprs,
        });
        Box::new(ops.flat_map(move |op| {
            let first_nat_rule = matches!(
                op,
                Ok(Op::AddRule {
                    table: Table::Nat,
                    ..
                })
            );
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
        ops: impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a,
    ) -> impl Iterator<Item = Result<Op<'a>, LowerError>> + 'a {
        ops
    }
}

/// `NFTA_TABLE_NAME`, and the table attribute of chains and rules (`NFTA_*_TABLE`), from
/// linux/netfilter/nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_OBJECT_TABLE: u16 = 1;

/// An nf_tables request header (`nlmsghdr` + `nfgenmsg` for family `inet`) of message `kind`;
/// the transport fills in the sequence number and flags.
fn nft_request(kind: i32) -> Vec<u8> {
    use nftnl::nftnl_sys::libc;
    let msg_type = ((libc::NFNL_SUBSYS_NFTABLES << 8) | kind) as u16;
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&[0; 10]); // flags, sequence, port: the transport's
    req.extend_from_slice(&[libc::NFPROTO_INET as u8, 0, 0, 0]);
    req
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

    /// Every `inet` object of one kind (`NFT_MSG_GET*` dump), complete messages in the
    /// kernel's order.
    fn dump(&mut self, kind: i32, context: &'static str) -> Result<Vec<Vec<u8>>, NetlinkError> {
        use nftnl::nftnl_sys::libc;
        match self.t.dump(nft_request(kind)).map_err(io_err(context))? {
            Ok(msgs) => Ok(msgs
                .into_iter()
                .filter(|m| transport::nft_family(m) == Some(libc::NFPROTO_INET as u8))
                .collect()),
            // nfnetlink answers EINVAL for a subsystem that is not registered: nf_tables is
            // missing and the kernel could not load it.
            Err(Errno::EINVAL) if kind == libc::NFT_MSG_GETTABLE => Err(NetlinkError::NoNfTables),
            Err(e) => Err(NetlinkError::Io {
                context,
                source: e.into(),
            }),
        }
    }

    /// The elements of set `set` of our `inet` table `table` (keys and flags, in the
    /// kernel's order).
    fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<(Vec<u8>, u32)>, NetlinkError> {
        use nftnl::nftnl_sys::libc;
        const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
        const NFTA_SET_ELEM_LIST_SET: u16 = 2;
        let mut req = nft_request(libc::NFT_MSG_GETSETELEM);
        transport::push_str_attr(&mut req, NFTA_SET_ELEM_LIST_TABLE, table);
        transport::push_str_attr(&mut req, NFTA_SET_ELEM_LIST_SET, set);
        let context = "listing set elements";
        match self.t.dump(req).map_err(io_err(context))? {
            Ok(msgs) => Ok(msgs
                .iter()
                .flat_map(|m| transport::nft_set_elements(m))
                .collect()),
            Err(e) => Err(NetlinkError::Io {
                context,
                source: e.into(),
            }),
        }
    }

    /// The names of the `inet` tables (a dump: no transaction, no RCU wait).
    fn table_names(&mut self) -> Result<Vec<String>, NetlinkError> {
        use nftnl::nftnl_sys::libc;
        Ok(self
            .dump(libc::NFT_MSG_GETTABLE, "listing tables")?
            .iter()
            .filter_map(|m| transport::nft_attr_str(m, NFTA_TABLE_NAME))
            .collect())
    }

    /// Which of our `inet` tables exist, and whether a guard is up.
    fn our_tables(&mut self) -> Result<Existing, NetlinkError> {
        let names = self.table_names()?;
        let guard = guard::NAME.to_str().unwrap_or_default();
        Ok(Existing {
            tables: Table::NFT_TABLES
                .into_iter()
                .filter(|t| names.iter().any(|n| n == t.nft_name()))
                .collect(),
            guard: names.iter().any(|n| n == guard),
        })
    }

    /// The ruleset's generation: it changes with every committed transaction, by anyone.
    fn generation(&mut self) -> Result<u32, NetlinkError> {
        use nftnl::nftnl_sys::libc;
        const NFTA_GEN_ID: u16 = 1;
        let replies = self
            .t
            .get(nft_request(libc::NFT_MSG_GETGEN))
            .map_err(io_err("reading the ruleset generation"))?
            .map_err(|e| NetlinkError::Io {
                context: "reading the ruleset generation",
                source: e.into(),
            })?;
        replies
            .iter()
            .find_map(|m| transport::nft_attr_be32(m, NFTA_GEN_ID))
            .ok_or_else(|| NetlinkError::Io {
                context: "reading the ruleset generation",
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
        ops: impl Fn(&Existing) -> I,
    ) -> Result<(usize, Existing), NetlinkError>
    where
        I: Iterator<Item = Result<Op<'p>, lower::LowerError>>,
    {
        const ATTEMPTS: usize = 20;
        for _ in 0..ATTEMPTS {
            let generation = self.generation()?;
            let existing = self.our_tables()?;
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
    let family = cidrs
        .first()
        .map_or(crate::plan::Family::V4, |c| c.family());
    let mut set = sets::AnonSet::addrs(0, family, cidrs);
    if descending {
        set.elements.reverse();
    }
    let mut nl = Nft::open()?;
    let table = nftnl::Table::new(c"meshtables-floor", ProtoFamily::Inet);
    let text = |t: &'static str| Named::Text(t.into());
    let mut w = Writer::new(None);
    w.put(
        "table",
        text("add table inet meshtables-floor"),
        &table,
        MsgType::Add,
    );
    match (set.key_type(), set.key_len()) {
        (8, 16) => put_named_set::<Key<8, 16>>(&mut w, &table, &set),
        _ => put_named_set::<Key<7, 4>>(&mut w, &table, &set),
    }
    nl.commit(w.finish())?;
    let mut w = Writer::new(None);
    w.elements_of(
        "meshtables-floor",
        "s",
        None,
        &set.elements,
        text("elements"),
    );
    let finished = w.finish();
    let start = std::time::Instant::now();
    nl.commit(finished)?;
    let took = start.elapsed();
    let mut w = Writer::new(None);
    w.put(
        "table deletion",
        text("delete table inet meshtables-floor"),
        &table,
        MsgType::Del,
    );
    nl.commit(w.finish())?;
    Ok(took)
}

/// A named set `s` of the type of `set` (its flags without anonymous and constant).
fn put_named_set<K: SetKey>(w: &mut batch::Writer, table: &nftnl::Table, set: &sets::AnonSet) {
    let named: Set<K> = Set::new_named(c"s", 1, table, ProtoFamily::Inet);
    ffi::set_extras(
        &named,
        &set.userdata(),
        set.elements.len() as u32,
        set.flags() & !0x3,
    );
    w.put(
        "set",
        batch::Named::Text("add set".into()),
        &named,
        MsgType::Add,
    );
}

/// Whether this kernel can run nat chains for `family`, as upstream's `-t nat -A INPUT -p 255
/// -j RETURN` probe asks of iptables-nft, without leaving anything behind: one transaction
/// adds a throwaway table with a nat base chain and deletes it again. (iptables-nft's probe
/// leaves an empty `nat INPUT` base chain behind, a state change a clean cannot undo.)
pub fn probe_nat(family: crate::plan::Family) -> Result<(), NetlinkError> {
    check_capability()?;
    let mut nl = Nft::open()?;
    let pf = match family {
        crate::plan::Family::V4 => ProtoFamily::Ipv4,
        crate::plan::Family::V6 => ProtoFamily::Ipv6,
    };
    let table = nftnl::Table::new(c"meshtables-nat-probe", pf);
    let mut chain = nftnl::Chain::new(c"input", &table);
    chain.set_hook(nftnl::Hook::In, 100);
    chain.set_type(nftnl::ChainType::Nat);
    let text = |t: &'static str| batch::Named::Text(t.into());
    let mut w = batch::Writer::new(None);
    w.put(
        "table",
        text("add table meshtables-nat-probe"),
        &table,
        MsgType::Add,
    );
    w.put(
        "chain",
        text("add chain meshtables-nat-probe input { type nat hook input priority 100 ; }"),
        &chain,
        MsgType::Add,
    );
    w.put(
        "table deletion",
        text("delete table meshtables-nat-probe"),
        &table,
        MsgType::Del,
    );
    nl.commit(w.finish()).map(|_| ())
}

/// A set key type for nftnl's typed `Set`: its nft datatype id and length. Elements are added
/// with their flags through `ffi::add_element`, so `data` is never asked for.
struct Key<const TYPE: u32, const LEN: u32>;

impl<const TYPE: u32, const LEN: u32> SetKey for Key<TYPE, LEN> {
    const TYPE: u32 = TYPE;
    const LEN: u32 = LEN;
    fn data(&self) -> Box<[u8]> {
        Box::new([])
    }
}

/// Writes an anonymous set's header and its elements.
fn add_set<'a, K: SetKey>(
    w: &mut batch::Writer<'a>,
    t: &nftnl::Table,
    table: Table,
    s: &sets::AnonSet,
    named: batch::Named<'a>,
) {
    let nset: Set<K> = Set::new(c"__set%d", s.id, t, ProtoFamily::Inet);
    ffi::set_extras(&nset, &s.userdata(), s.elements.len() as u32, s.flags());
    w.put("set of rule", named.clone(), &nset, MsgType::Add);
    w.elements(table.nft_name(), s, named);
}

/// Writes one operation as its message(s).
fn add_op<'a>(w: &mut batch::Writer<'a>, op: Op<'a>) {
    use batch::Named;
    let table_of = |t: Table| nftnl::Table::new(t.nft_cname(), ProtoFamily::Inet);
    // Tables and the guard are named by their text now (a few per batch); rules and sets by
    // reference, rendered only if the kernel refuses one.
    let text = |op: &Op| Named::Text(op.describe().into());
    match op {
        Op::DelTable(t) => w.put("table deletion", text(&op), &table_of(t), MsgType::Del),
        Op::DelGuard => {
            let guard = nftnl::Table::new(guard::NAME, ProtoFamily::Inet);
            w.put("table deletion", text(&op), &guard, MsgType::Del);
        }
        Op::AddTable(t) => w.put("table", text(&op), &table_of(t), MsgType::Add),
        Op::AddChain { table, chain } => {
            let t = table_of(table);
            let mut c = nftnl::Chain::new(chain.nft_cname(), &t);
            if let Some(base) = table.base_chain(chain) {
                c.set_hook(lower::hook(base.hook), base.priority);
                c.set_type(lower::chain_type(base.kind));
            }
            w.put("chain", Named::Chain(table, chain), &c, MsgType::Add);
        }
        Op::AddSet { table, set, rule } => {
            let t = table_of(table);
            let named = Named::Rule(table, rule);
            match (set.key_type(), set.key_len()) {
                (7, 4) => add_set::<Key<7, 4>>(w, &t, table, &set, named),
                (8, 16) => add_set::<Key<8, 16>>(w, &t, table, &set, named),
                _ => add_set::<Key<13, 2>>(w, &t, table, &set, named),
            }
        }
        Op::AddRule { table, rule, exprs } => {
            let t = table_of(table);
            let c = nftnl::Chain::new(rule.chain.nft_cname(), &t);
            let mut r = nftnl::Rule::new(&c);
            for e in &exprs {
                r.add_expr(e);
            }
            let named = match rule {
                std::borrow::Cow::Borrowed(rule) => Named::Rule(table, rule),
                std::borrow::Cow::Owned(rule) => Named::Owned(table, Box::new(rule)),
            };
            w.put("rule", named, &r, MsgType::Add);
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
