//! Native nftables over netlink: one atomic transaction, no `nft` binary.
//!
//! `lower` turns the plan into operations (pure); this module lists which of our tables
//! exist, assembles the nftnl batch, sends it with a single `sendmsg` (so a batch of any
//! size is one transaction), and reads every ACK, mapping a kernel error back to the text
//! of the message that caused it.

mod check;
mod ffi;
pub mod lower;
pub mod routes;

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use nftnl::set::{Set, SetKey};
use nftnl::{Batch, MsgType, ProtoFamily};
use nix::sys::socket::{self, MsgFlags, sockopt};

use crate::plan::{Mark, Plan, RouteTable, Table};
use lower::{Op, clean_ops};

/// Errors of the netlink backend.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "meshtables needs CAP_NET_ADMIN to program netfilter: add it to the container's securityContext (capabilities: {{add: [\"NET_ADMIN\"]}}, runAsUser: 0); NET_RAW is not needed"
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
    #[error("TPROXY routing: {0}")]
    Routes(#[from] routes::RouteError),
    #[error("the live nftables rules differ from the requested ones: {}", .0.join("; "))]
    NotInPlace(Vec<String>),
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

/// Test-only fault injection: with `MESHTABLES_TEST_FAULT=reject-rule`, a rule the kernel
/// refuses (TPROXY in a nat output chain) is appended to the batch, to prove that a rejected
/// batch changes nothing and that the error names the rule.
pub const TEST_FAULT_ENV: &str = "MESHTABLES_TEST_FAULT";

/// Apply the plan's nftables ruleset (replacing ours atomically) and TPROXY routing.
pub fn apply(plan: &Plan, fault: bool) -> Result<ApplyReport, NetlinkError> {
    check_capability()?;
    let sock = Socket::open()?;
    let existing = sock.our_tables()?;
    let mut ops = lower::apply_ops(&plan.nft, &existing)?;
    if fault {
        // Mid-batch, so the rejected message is not the one that carries the ACK.
        let at = ops.iter().rposition(|op| {
            matches!(
                op,
                Op::AddRule {
                    table: Table::Nat,
                    ..
                }
            )
        });
        ops.insert(at.unwrap_or(ops.len()), fault_op());
    }
    let sent = sock.transact(&ops)?;
    let routes = routes::apply(plan)?;
    Ok(ApplyReport {
        replaced: existing,
        messages: sent,
        routes,
    })
}

/// Succeeds when the live ruleset and TPROXY routing are exactly what `plan` installs;
/// otherwise the error lists every difference (see `check.rs` for what is compared).
pub fn check(plan: &Plan) -> Result<(), NetlinkError> {
    let diffs = check::differences(plan)?;
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(NetlinkError::NotInPlace(diffs))
    }
}

/// What an apply did, for the log.
#[derive(Debug)]
pub struct ApplyReport {
    pub replaced: Vec<Table>,
    pub messages: usize,
    pub routes: usize,
}

/// Delete our tables (those that exist) and our TPROXY routing. Nothing to delete is success.
pub fn clean(mark: Mark, table: RouteTable) -> Result<Vec<String>, NetlinkError> {
    check_capability()?;
    let sock = Socket::open()?;
    let existing = sock.our_tables()?;
    let ops = clean_ops(&existing);
    if !ops.is_empty() {
        sock.transact(&ops)?;
    }
    let mut removed: Vec<String> = ops.iter().map(Op::describe).collect();
    removed.extend(routes::clean(mark, table)?);
    Ok(removed)
}

fn fault_op() -> Op<'static> {
    use crate::plan::{Chain, Mark, Port};
    let rule = crate::plan::NftRule {
        chain: Chain::Output,
        position: crate::plan::Position::Append,
        family: Some(crate::plan::Family::V4),
        matches: vec![],
        target: crate::plan::Target::Tproxy {
            port: Port::new(15006).expect("non-zero"),
            mark: Mark(1337),
        },
    };
    let (exprs, _) = lower::lower_single(Table::Nat, &rule);
    Op::AddRule {
        table: Table::Nat,
        rule: std::borrow::Cow::Owned(rule),
        exprs,
        set: None,
    }
}

/// A port as an nftables `inet_service` set key (big endian, type 13).
struct InetService(u16);

impl SetKey for InetService {
    const TYPE: u32 = 13;
    const LEN: u32 = 2;
    fn data(&self) -> Box<[u8]> {
        Box::new(self.0.to_be_bytes())
    }
}

fn cname(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("object names have no NUL")
}

/// An nfnetlink socket.
struct Socket {
    sock: mnl::Socket,
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFT_MSG_GETTABLE: u16 = (10 << 8) | 1;
const NFT_MSG_GETCHAIN: u16 = (10 << 8) | 4;
const NFT_MSG_GETRULE: u16 = (10 << 8) | 7;
const NFPROTO_INET: u8 = 1;
/// `NFTA_TABLE_NAME`, and the table attribute of chains and rules (`NFTA_*_TABLE`).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_OBJECT_TABLE: u16 = 1;

/// A string attribute of a complete nf_tables message (after the 16-byte header and the
/// 4-byte nfgenmsg).
fn object_name(msg: &[u8], attr: u16) -> Option<&str> {
    let body = msg.get(20..)?;
    attrs(body)
        .find(|(t, _)| *t == attr)
        .and_then(|(_, v)| std::str::from_utf8(v.split(|b| *b == 0).next()?).ok())
}

impl Socket {
    fn open() -> Result<Socket, NetlinkError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|e| {
            // No nfnetlink at all: the netfilter modules are absent and were not loaded.
            if e.raw_os_error() == Some(93) {
                NetlinkError::NoNfTables
            } else {
                NetlinkError::Io {
                    context: "opening socket",
                    source: e,
                }
            }
        })?;
        Ok(Socket { sock })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        ffi::borrow_fd(&self.sock)
    }

    /// Which of our `inet` tables exist (a GETTABLE dump; no transaction, no RCU wait).
    fn our_tables(&self) -> Result<Vec<Table>, NetlinkError> {
        let names = self.dump(NFT_MSG_GETTABLE, "listing tables")?;
        Ok(Table::NFT_TABLES
            .into_iter()
            .filter(|t| {
                names
                    .iter()
                    .any(|m| object_name(m, NFTA_TABLE_NAME) == Some(t.nft_name()))
            })
            .collect())
    }

    /// A dump of every `inet` object of one kind (`NFT_MSG_GET*` with NLM_F_DUMP): the
    /// complete reply messages, headers included, in the kernel's order.
    fn dump(&self, kind: u16, context: &'static str) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut req = Vec::with_capacity(20);
        req.extend_from_slice(&20u32.to_ne_bytes());
        req.extend_from_slice(&kind.to_ne_bytes());
        req.extend_from_slice(&(0x301u16).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        self.sock.send(&req).map_err(io_err(context))?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.sock.recv_raw(&mut buf).map_err(io_err(context))?;
            for (msg, whole) in messages(&buf[..n]) {
                match msg.kind {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        let errno = msg.error_code();
                        // nfnetlink answers EINVAL for a subsystem that is not registered:
                        // nf_tables is missing and the kernel could not load it.
                        if errno == -22 && kind == NFT_MSG_GETTABLE {
                            return Err(NetlinkError::NoNfTables);
                        }
                        if errno != 0 {
                            return Err(NetlinkError::Io {
                                context,
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    _ if msg.payload.first() == Some(&NFPROTO_INET) => found.push(whole.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// Sends `ops` as one batch in one `sendmsg` and checks every reply. Returns the number
    /// of messages sent.
    fn transact(&self, ops: &[Op]) -> Result<usize, NetlinkError> {
        let estimate: usize = ops
            .iter()
            .map(|op| match op {
                Op::AddRule { exprs, set, .. } => {
                    256 + 128 * exprs.len() + set.as_ref().map_or(0, |s| 512 + 32 * s.ports.len())
                }
                _ => 256,
            })
            .sum();
        let page = (estimate + 4096)
            .next_power_of_two()
            .clamp(128 * 1024, 64 << 20);
        let mut batch = Batch::with_page_size(page as u32);
        // Which op and what kind of message each one is, in send order, for error reports.
        let mut descs: Vec<(&'static str, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            add_op(&mut batch, op, i, &mut descs);
        }
        let batch = batch.finalize();
        let describe = |i: usize| descs.get(i).map(|(what, op)| (*what, ops[*op].describe()));
        self.commit(&batch, descs.len(), &describe)
    }

    /// Sends a finalized batch of `count` data messages in one `sendmsg` and checks the
    /// replies; `describe(i)` names the i-th data message for an error report.
    fn commit(
        &self,
        batch: &nftnl::FinalizedBatch,
        count: usize,
        describe: &dyn Fn(usize) -> Option<(&'static str, String)>,
    ) -> Result<usize, NetlinkError> {
        let seqs = batch.sequence_numbers();
        let first = if seqs.len() == count + 2 {
            seqs.start + 1
        } else {
            seqs.start
        };

        // Room for an error per message, should everything fail.
        let rcvbuf = (count * 1024).max(256 * 1024);
        let _ = socket::setsockopt(&self.fd(), sockopt::RcvBufForce, &rcvbuf);
        // One contiguous buffer, so the batch is one sendmsg whatever nftnl's page size.
        let mut wire: Vec<u8> = Vec::with_capacity(batch.iter().map(|page| page.len()).sum());
        for page in batch.iter() {
            wire.extend_from_slice(page);
        }
        // The kernel reports every error whether or not NLM_F_ACK is set; asking for an ACK
        // per message only makes it build (and us read) one reply per rule. Keep the ACK on
        // the last data message alone: it confirms the kernel processed the whole batch.
        let last_seq = first + count as u32 - 1;
        ack_only(&mut wire, last_seq);
        // A netlink sendmsg larger than the send buffer fails with EMSGSIZE; the whole batch
        // must go in one call to be one transaction, so make room for it.
        if wire.len() + 64 * 1024 > 208 * 1024 {
            socket::setsockopt(&self.fd(), sockopt::SndBufForce, &(wire.len() + 64 * 1024))
                .map_err(|e| NetlinkError::Io {
                    context: "sizing the send buffer for the batch",
                    source: e.into(),
                })?;
        }
        socket::sendmsg::<()>(
            self.fd().as_raw_fd(),
            &[IoSlice::new(&wire)],
            &[],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| NetlinkError::Io {
            context: "sending the batch",
            source: e.into(),
        })?;

        let mut errors: Vec<(u32, i32)> = Vec::new();
        let mut acked = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket::recv(self.fd().as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    for (msg, _) in messages(&buf[..n]) {
                        if msg.kind != NLMSG_ERROR {
                            continue;
                        }
                        match msg.error_code() {
                            0 => acked |= msg.error_seq() == last_seq,
                            code => errors.push((msg.error_seq(), code)),
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    return Err(NetlinkError::Io {
                        context: "reading the kernel's replies",
                        source: e.into(),
                    });
                }
            }
        }
        errors.sort();
        if let Some((seq, errno)) = errors.first().copied() {
            let (what, text) = seq
                .checked_sub(first)
                .and_then(|i| describe(i as usize))
                .unwrap_or(("batch", "nftables transaction".to_string()));
            let more = if errors.len() > 1 {
                format!(" (and {} more errors in the same batch)", errors.len() - 1)
            } else {
                String::new()
            };
            return Err(NetlinkError::Rejected {
                what,
                text,
                source: io::Error::from_raw_os_error(-errno),
                more,
            });
        }
        if !acked {
            return Err(NetlinkError::Io {
                context: "committing the batch",
                source: io::Error::other("the kernel did not acknowledge the batch"),
            });
        }
        Ok(count)
    }
}

/// Whether this kernel can run nat chains for `family`, as upstream's `-t nat -A INPUT -p 255
/// -j RETURN` probe asks of iptables-nft, without leaving anything behind: one transaction
/// adds a throwaway table with a nat base chain and deletes it again. (iptables-nft's probe
/// leaves an empty `nat INPUT` base chain behind, a state change a clean cannot undo.)
pub fn probe_nat(family: crate::plan::Family) -> Result<(), NetlinkError> {
    check_capability()?;
    let sock = Socket::open()?;
    let pf = match family {
        crate::plan::Family::V4 => ProtoFamily::Ipv4,
        crate::plan::Family::V6 => ProtoFamily::Ipv6,
    };
    let table = nftnl::Table::new(c"meshtables-nat-probe", pf);
    let mut chain = nftnl::Chain::new(c"input", &table);
    chain.set_hook(nftnl::Hook::In, 100);
    chain.set_type(nftnl::ChainType::Nat);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&chain, MsgType::Add);
    batch.add(&table, MsgType::Del);
    let texts = [
        ("table", "add table meshtables-nat-probe"),
        (
            "chain",
            "add chain meshtables-nat-probe input { type nat hook input priority 100 ; }",
        ),
        ("table deletion", "delete table meshtables-nat-probe"),
    ];
    let describe = |i: usize| texts.get(i).map(|(w, t)| (*w, t.to_string()));
    sock.commit(&batch.finalize(), texts.len(), &describe)
        .map(|_| ())
}

/// Clears NLM_F_ACK on every message of `wire` except the one with sequence `keep`.
fn ack_only(wire: &mut [u8], keep: u32) {
    const NLM_F_ACK: u16 = 4;
    let mut off = 0;
    while off + 16 <= wire.len() {
        let len = u32::from_ne_bytes(wire[off..off + 4].try_into().unwrap()) as usize;
        let seq = u32::from_ne_bytes(wire[off + 8..off + 12].try_into().unwrap());
        let mut flags = u16::from_ne_bytes(wire[off + 6..off + 8].try_into().unwrap());
        if seq == keep {
            flags |= NLM_F_ACK;
        } else {
            flags &= !NLM_F_ACK;
        }
        wire[off + 6..off + 8].copy_from_slice(&flags.to_ne_bytes());
        if len < 16 {
            break;
        }
        off += (len + 3) & !3;
    }
}

fn add_op(batch: &mut Batch, op: &Op, index: usize, descs: &mut Vec<(&'static str, usize)>) {
    let table_of = |t: Table| nftnl::Table::new(cname(t.nft_name()), ProtoFamily::Inet);
    match op {
        Op::DelTable(t) => {
            batch.add(&table_of(*t), MsgType::Del);
            descs.push(("table deletion", index));
        }
        Op::AddTable(t) => {
            batch.add(&table_of(*t), MsgType::Add);
            descs.push(("table", index));
        }
        Op::AddChain { table, chain } => {
            let t = table_of(*table);
            let mut c = nftnl::Chain::new(cname(chain.nft_name()), &t);
            if let Some((ty, hook, prio)) = lower::chain_hook(*table, *chain) {
                c.set_hook(hook, prio);
                c.set_type(ty);
            }
            batch.add(&c, MsgType::Add);
            descs.push(("chain", index));
        }
        Op::AddRule {
            table,
            rule,
            exprs,
            set,
        } => {
            let t = table_of(*table);
            let c = nftnl::Chain::new(cname(rule.chain.nft_name()), &t);
            if let Some(s) = set {
                let mut nset: Set<InetService> = Set::new(c"__set%d", s.id, &t, ProtoFamily::Inet);
                for p in &s.ports {
                    nset.add(&InetService(*p));
                }
                ffi::set_extras(&nset, s.userdata, s.ports.len() as u32);
                batch.add(&nset, MsgType::Add);
                descs.push(("set of rule", index));
                for elems in nset.elems_iter() {
                    batch.add(&elems, MsgType::Add);
                    descs.push(("set elements of rule", index));
                }
            }
            let mut r = nftnl::Rule::new(&c);
            for e in exprs {
                r.add_expr(e);
            }
            batch.add(&r, MsgType::Add);
            descs.push(("rule", index));
        }
    }
}

/// One netlink message in a receive buffer.
struct NlMsg<'a> {
    kind: u16,
    payload: &'a [u8],
}

impl NlMsg<'_> {
    /// `nlmsgerr.error` (0 for an ACK, else minus errno).
    fn error_code(&self) -> i32 {
        self.payload
            .get(..4)
            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The sequence number of the message an error or ACK answers.
    fn error_seq(&self) -> u32 {
        self.payload
            .get(12..16)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The messages in a receive buffer: each parsed, and its complete bytes.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (NlMsg<'_>, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let msg = NlMsg {
            kind,
            payload: &buf[16..len],
        };
        let whole = &buf[..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((msg, whole))
    })
}

/// Netlink attributes (type without flag bits, value).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, value))
    })
}
