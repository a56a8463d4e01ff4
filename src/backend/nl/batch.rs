//! The transaction, serialized as it is built: one buffer holding BEGIN, every message, END,
//! sent in one `sendmsg`. Each operation is lowered and written when its turn comes, so the
//! lowered plan never exists whole beside the batch, and the buffer is the only copy of the
//! batch (no pages to concatenate; a message's parts are built just before it is written).
//! Messages are encoded by `wire`; a set's elements go in as many messages as their size
//! needs, each built only for its turn.

use std::borrow::Cow;

use netlink_packet_netfilter::nftables::NfTablesMessage;

use super::sets::{AnonSet, Element};
use super::wire;
use crate::plan::{Chain, NftRule, TableLayout};

/// What a data message of the batch is, for an error that names it.
#[derive(Debug, Clone)]
pub enum Named<'a> {
    /// A line of `nft` text, fixed when written (tables, chains, the guard, the probe).
    Text(Cow<'static, str>),
    /// A chain of ours, rendered only if the kernel refuses it.
    Chain(&'static TableLayout, Chain),
    /// A rule of the plan (or the set it looks up), rendered only if the kernel refuses it.
    Rule(&'static TableLayout, &'a NftRule),
    /// A rule that is not the plan's (test fault injection).
    Owned(&'static TableLayout, Box<NftRule>),
}

impl Named<'_> {
    pub fn describe(&self) -> String {
        match self {
            Named::Text(t) => t.to_string(),
            Named::Chain(t, c) => crate::render::nft::chain_line(t, *c),
            Named::Rule(t, r) => crate::render::nft::rule_line(t, r),
            Named::Owned(t, r) => crate::render::nft::rule_line(t, r),
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

/// How many element bytes go in one message: a nested attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

impl<'a> Writer<'a> {
    /// A batch whose BEGIN carries `generation`, when given.
    pub fn new(generation: Option<u32>) -> Writer<'a> {
        let mut buf = Vec::with_capacity(64 * 1024);
        wire::delimiter(&mut buf, 1, true, generation);
        Writer {
            buf,
            seq: 2,
            first: 2,
            names: Vec::new(),
        }
    }

    /// Writes `msg` (of nfgenmsg family `family`) as the next data message.
    pub fn put(&mut self, what: &'static str, named: Named<'a>, family: u8, msg: NfTablesMessage) {
        wire::put(&mut self.buf, self.seq, family, msg);
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
        elements: &[Element],
        named: Named<'a>,
    ) {
        let mut list = wire::List::default();
        let mut rest = elements.iter().peekable();
        while let Some(e) = rest.peek() {
            let before = list.len();
            list.element(&e.key, e.flags(), &e.userdata());
            let full = list.len() > ELEMENTS_PER_MESSAGE_BYTES;
            if full && before > 0 {
                // This one goes first into the next message.
                list.truncate(before);
            } else {
                rest.next();
            }
            if full || rest.peek().is_none() {
                let msg = wire::set_elements(table, name, id, std::mem::take(&mut list));
                self.put(
                    "set elements of rule",
                    named.clone(),
                    wire::INET,
                    NfTablesMessage::NewSetElement(msg),
                );
            }
        }
    }

    /// Writes END, keeps the ACK flag on the last data message only (the kernel reports every
    /// error anyway; one ACK per message would only mean one reply per rule to read), and
    /// returns the batch.
    pub fn finish(mut self) -> Finished<'a> {
        let last = self.seq - 1;
        wire::delimiter(&mut self.buf, self.seq, false, None);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Proto;
    use netlink_packet_core::{NLM_F_ACK, NetlinkBuffer};

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
        assert_eq!(msgs[0].0, libc::NFNL_MSG_BATCH_BEGIN as u16);
        assert_eq!(msgs[n + 1].0, libc::NFNL_MSG_BATCH_END as u16);
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
                let (_, m) = wire::parse(&msg.unwrap()).unwrap();
                wire::live_elements(&m).len()
            })
            .sum();
        assert_eq!(total, 20_000);
    }
}
