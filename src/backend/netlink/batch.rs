//! The transaction, serialized as it is built: one buffer holding BEGIN, every message, END,
//! sent in one `sendmsg`. Each operation is lowered and written when its turn comes, so the
//! lowered plan never exists whole beside the batch, and the buffer is the only copy of the
//! bytes (no pages to concatenate). Tables, chains, rules and set headers are written by
//! libnftnl (`ffi::put`); set elements, which libnftnl would hold as one large object each,
//! are written here with `netlink-packet-core`'s attribute buffers.

use std::borrow::Cow;

use netlink_packet_core::{
    NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NlaBuffer,
};
use nftnl::MsgType;
use nftnl::nftnl_sys::libc;

use super::ffi;
use super::sets::AnonSet;
use crate::plan::{Chain, NftRule, Table};

/// What a data message of the batch is, for an error that names it.
#[derive(Debug, Clone)]
pub enum Named<'a> {
    /// A line of `nft` text, fixed when written (tables, chains, the guard, the probe).
    Text(Cow<'static, str>),
    /// A chain of ours, rendered only if the kernel refuses it.
    Chain(Table, Chain),
    /// A rule of the plan (or the set it looks up), rendered only if the kernel refuses it.
    Rule(Table, &'a NftRule),
    /// A rule that is not the plan's (test fault injection).
    Owned(Table, Box<NftRule>),
}

impl Named<'_> {
    pub fn describe(&self) -> String {
        match self {
            Named::Text(t) => t.to_string(),
            Named::Chain(t, c) => crate::render::nft::chain_line(*t, *c),
            Named::Rule(t, r) => crate::render::nft::rule_line(*t, r),
            Named::Owned(t, r) => crate::render::nft::rule_line(*t, r),
        }
    }
}

/// A batch being written.
pub struct Writer<'a> {
    buf: Vec<u8>,
    /// The sequence number the next message gets.
    seq: u32,
    /// The first data message's sequence number.
    first: u32,
    /// Per data message, in order: what kind of message, and what it came from.
    names: Vec<(&'static str, Named<'a>)>,
}

/// A finished batch: its bytes, and how to name each data message.
pub struct Finished<'a> {
    pub wire: Vec<u8>,
    pub first: u32,
    pub last: u32,
    pub names: Vec<(&'static str, Named<'a>)>,
}

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_BATCH_GENID`: commit only if the ruleset is still at this generation.
const NFNL_BATCH_GENID: u16 = 1;
/// Set element attributes (linux/netfilter/nf_tables.h).
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
/// How many element bytes go in one message: a nested attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

impl<'a> Writer<'a> {
    /// A batch whose BEGIN carries `generation`, when given.
    pub fn new(generation: Option<u32>) -> Writer<'a> {
        let mut w = Writer {
            buf: Vec::with_capacity(64 * 1024),
            seq: 1,
            first: 2,
            names: Vec::new(),
        };
        let start = w.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        if let Some(g) = generation {
            attr(&mut w.buf, NFNL_BATCH_GENID, &g.to_be_bytes());
        }
        w.close(start);
        w.first = w.seq;
        w
    }

    /// Writes an nftnl object (table, chain, rule, set header) as the next data message.
    pub fn put(
        &mut self,
        what: &'static str,
        named: Named<'a>,
        obj: &impl nftnl::NlMsg,
        ty: MsgType,
    ) {
        ffi::put(&mut self.buf, obj, self.seq, ty);
        self.seq += 1;
        self.names.push((what, named));
    }

    /// Writes the elements of `set` (in table `table`) as one or more data messages.
    pub fn elements(&mut self, table: &str, set: &AnonSet, named: Named<'a>) {
        self.elements_of(table, "__set%d", Some(set.id), &set.elements, named);
    }

    /// Writes `elements` into set `name` (by id too, for a set of this batch).
    pub fn elements_of(
        &mut self,
        table: &str,
        name: &str,
        id: Option<u32>,
        elements: &[(Vec<u8>, u32)],
        named: Named<'a>,
    ) {
        let mut rest = elements;
        while !rest.is_empty() {
            let ty = (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWSETELEM as u16;
            let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
            let start = self.header(ty, flags, libc::NFPROTO_INET as u8, 0);
            str_attr(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, table);
            str_attr(&mut self.buf, NFTA_SET_ELEM_LIST_SET, name);
            if let Some(id) = id {
                attr(&mut self.buf, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
            }
            let list = nest_start(&mut self.buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut used = 0;
            while let Some(((key, flags), tail)) = rest.split_first() {
                if used > 0 && used + key.len() + 32 > ELEMENTS_PER_MESSAGE_BYTES {
                    break;
                }
                let before = self.buf.len();
                let elem = nest_start(&mut self.buf, NFTA_LIST_ELEM);
                if *flags != 0 {
                    attr(&mut self.buf, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
                }
                let k = nest_start(&mut self.buf, NFTA_SET_ELEM_KEY);
                attr(&mut self.buf, NFTA_DATA_VALUE, key);
                nest_end(&mut self.buf, k);
                nest_end(&mut self.buf, elem);
                used += self.buf.len() - before;
                rest = tail;
            }
            nest_end(&mut self.buf, list);
            self.close(start);
            self.names.push(("set elements of rule", named.clone()));
        }
    }

    /// Writes END, keeps the ACK flag on the last data message only (the kernel reports every
    /// error anyway; one ACK per message would only mean one reply per rule to read), and
    /// returns the batch.
    pub fn finish(mut self) -> Finished<'a> {
        let last = self.seq - 1;
        let start = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.close(start);
        super::transport::ack_only(&mut self.buf, last);
        Finished {
            wire: self.buf,
            first: self.first,
            last,
            names: self.names,
        }
    }

    /// How many data messages were written.
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// Starts a message: `nlmsghdr` (length fixed by `close`) and `nfgenmsg`.
    fn header(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq += 1;
        start
    }

    fn close(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Appends attribute `kind` with `value`, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let start = buf.len();
    let len = 4 + value.len();
    buf.resize(start + ((len + 3) & !3), 0);
    let mut nla = NlaBuffer::new(&mut buf[start..start + len]);
    nla.set_kind(kind);
    nla.set_length(len as u16);
    nla.value_mut().copy_from_slice(value);
}

fn str_attr(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.extend_from_slice(value.as_bytes());
    v.push(0);
    attr(buf, kind, &v);
}

/// Starts a nested attribute; `nest_end` fixes its length.
fn nest_start(buf: &mut Vec<u8>, kind: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    NlaBuffer::new(&mut buf[start..start + 4]).set_kind(kind | NLA_F_NESTED);
    start
}

fn nest_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    NlaBuffer::new(&mut buf[start..start + 4]).set_length(len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Proto;
    use netlink_packet_core::NetlinkBuffer;

    fn messages(wire: &[u8]) -> Vec<(u16, u32, u16)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < wire.len() {
            let m = NetlinkBuffer::new_checked(&wire[off..]).unwrap();
            out.push((m.message_type(), m.sequence_number(), m.flags()));
            off += (m.length() as usize + 3) & !3;
        }
        out
    }

    #[test]
    fn begin_data_end_with_one_ack() {
        let mut w = Writer::new(Some(7));
        let set = AnonSet::ports(1, Proto::Tcp, 1..=20_000);
        w.elements("t", &set, Named::Text("elements".into()));
        let n = w.count();
        assert!(n > 1, "20,000 ports need several messages");
        let f = w.finish();
        let msgs = messages(&f.wire);
        assert_eq!(msgs.len(), n + 2);
        assert_eq!(msgs[0].0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[n + 1].0, NFNL_MSG_BATCH_END);
        assert_eq!((f.first, f.last), (msgs[1].1, msgs[n].1));
        let acked: Vec<u32> = msgs
            .iter()
            .filter(|m| m.2 & NLM_F_ACK != 0)
            .map(|m| m.1)
            .collect();
        assert_eq!(acked, [f.last]);
        // Every element went, each in exactly one message.
        let total: usize = (0..n)
            .map(|i| {
                let mut off = 0;
                let mut msg = None;
                for _ in 0..=i + 1 {
                    let m = NetlinkBuffer::new_checked(&f.wire[off..]).unwrap();
                    msg = Some(f.wire[off..off + m.length() as usize].to_vec());
                    off += (m.length() as usize + 3) & !3;
                }
                super::super::transport::nft_set_elements(&msg.unwrap()).len()
            })
            .sum();
        assert_eq!(total, 20_000);
    }
}
