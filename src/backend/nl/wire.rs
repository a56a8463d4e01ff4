//! The nf_tables wire format, in Rust: every message meshtables sends or reads is one of
//! netlink-packet-netfilter's nftables messages (tables, chains, rules, sets, set elements,
//! the generation, the batch delimiters) inside a netlink-packet-core message. No C library is
//! linked for it, which is what lets the binary be static (`.ci/image-rootfs`).
//!
//! Expressions are data, `Expr`: a kind name and its attributes as the kernel receives them.
//! The attributes are built from the crate's typed ones where it has them (bitwise, cmp,
//! immediate, lookup, meta, payload) and from the kernel's attribute numbers where it has
//! none (ct, counter, redir, tproxy); all are written alike into the rule's expression list.
//! Dumps are parsed with the crate and flattened back to that form (`LiveExpr`), so `check`
//! compares sent and live attributes as bytes, kind by kind. Attributes are written in the
//! order libnftnl writes them, the encoder this replaced.
//!
//! A rule's expression list and a set's element list are encoded in one pass into one buffer
//! (`List`, with netlink-packet-core's attribute emitters, each nest's length fixed once its
//! children are written) and handed to the crate's message as one attribute. Built from the
//! crate's nested types instead, every expression is walked about seven times (its emitters
//! recompute a nest's length at each level) and allocated several times over, which made a
//! 7,000-rule batch 10 ms slower than libnftnl wrote it. The bytes are the same either way;
//! the crate parses them back as its typed lists.

use libc::c_int;
use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, ExpressionAttribute, Expressions, GenAttribute,
    GenMessage, Hook, HookNumber, InetHookNumber, ListAttribute, NfTablesMessage, RuleAttribute,
    RuleMessage, SetAttribute, SetDescription, SetElementAttribute, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableFlags, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

// Attributes of the expressions netlink-packet-netfilter does not type, the lookup's set
// reference (which `check` skips), and the lists `List` writes, from
// linux/netfilter/nf_tables.h: libc has no NFTA_* names.
pub const NFTA_CT_DREG: u16 = 1;
pub const NFTA_CT_KEY: u16 = 2;
pub const NFTA_CT_SREG: u16 = 4;
pub const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
pub const NFTA_REDIR_FLAGS: u16 = 3;
pub const NFTA_TPROXY_FAMILY: u16 = 1;
pub const NFTA_NAT_TYPE: u16 = 1;
pub const NFTA_NAT_FAMILY: u16 = 2;
pub const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
pub const NFTA_TPROXY_REG_PORT: u16 = 3;
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;

/// The nfgenmsg version (linux/netfilter/nfnetlink.h).
const NFNETLINK_V0: u8 = libc::NFNETLINK_V0 as u8;

/// The `inet` family of our tables, as the nfgenmsg header carries it.
pub const INET: u8 = libc::NFPROTO_INET as u8;

/// An nftables expression: its kind name (`payload`, `cmp`, ...) and its attributes, each as
/// the kernel receives it (type and value bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub name: &'static str,
    pub attrs: Vec<DefaultNla>,
}

/// A list attribute's value (a rule's expressions, a set's elements) being written: each
/// member goes in as it comes, nests opened and closed around their children.
#[derive(Default)]
pub struct List {
    buf: Vec<u8>,
}

impl List {
    /// Appends `a` (any of the crate's typed attributes, or a `DefaultNla`), padded.
    fn push(&mut self, a: &impl Nla) {
        let start = self.buf.len();
        self.buf.resize(start + a.buffer_len(), 0);
        a.emit(&mut self.buf[start..]);
    }

    /// Appends attribute `kind` holding `value` (a NUL-terminated string's bytes, a key).
    fn push_bytes(&mut self, kind: u16, value: &[u8], nul: bool) {
        let start = self.buf.len();
        let len = 4 + value.len() + usize::from(nul);
        self.buf.resize(start + len.next_multiple_of(4), 0);
        let mut nla = NlaBuffer::new(&mut self.buf[start..start + len]);
        nla.set_kind(kind);
        nla.set_length(len as u16);
        nla.value_mut()[..value.len()].copy_from_slice(value);
    }

    /// Opens nested attribute `kind`; `close` writes its length.
    fn open(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let mut nla = NlaBuffer::new(&mut self.buf[start..start + 4]);
        nla.set_kind(kind);
        nla.set_nested_flag();
        start
    }

    /// A nest's length is 16 bits: a rule's expressions are a few hundred bytes, and
    /// `batch.rs` starts a new message before a set's elements reach 60,000.
    fn close(&mut self, start: usize) {
        let len = self.buf.len() - start;
        NlaBuffer::new(&mut self.buf[start..start + 4]).set_length(len as u16);
    }

    /// Appends `e` as an element of a rule's expression list.
    pub fn expr(&mut self, e: &Expr) {
        let elem = self.open(NFTA_LIST_ELEM);
        self.push_bytes(NFTA_EXPR_NAME, e.name.as_bytes(), true);
        let data = self.open(NFTA_EXPR_DATA);
        for a in &e.attrs {
            self.push(a);
        }
        self.close(data);
        self.close(elem);
    }

    /// Appends a set element: its key, its `NFT_SET_ELEM_*` flags and its user data (each only
    /// when not empty, in the order libnftnl writes them).
    pub fn element(&mut self, key: &[u8], flags: u32, userdata: &[u8]) {
        let elem = self.open(NFTA_LIST_ELEM);
        if flags != 0 {
            self.push(&be32(NFTA_SET_ELEM_FLAGS, flags));
        }
        let k = self.open(NFTA_SET_ELEM_KEY);
        self.push_bytes(NFTA_DATA_VALUE, key, false);
        self.close(k);
        if !userdata.is_empty() {
            self.push_bytes(NFTA_SET_ELEM_USERDATA, userdata, false);
        }
        self.close(elem);
    }

    /// How many bytes are written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops what was written after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// The list as nested attribute `kind`.
    fn into_attr(self, kind: u16) -> DefaultNla {
        DefaultNla::new(kind | NLA_F_NESTED, self.buf)
    }
}

/// One attribute in its wire form, from any of the crate's typed attributes.
pub fn attr(a: &impl Nla) -> DefaultNla {
    let mut value = vec![0; a.value_len()];
    a.emit_value(&mut value);
    DefaultNla::new(a.kind(), value)
}

/// A big-endian u32 attribute (every number of an expression is one).
pub fn be32(kind: u16, v: u32) -> DefaultNla {
    DefaultNla::new(kind, v.to_be_bytes().to_vec())
}

/// An attribute's value bytes.
fn value(a: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; a.value_len()];
    a.emit_value(&mut v);
    v
}

/// Whether two attributes have the same type and the same value (the nested flag aside: the
/// kernel dumps some nests without it).
pub fn same_attr(a: &DefaultNla, b: &DefaultNla) -> bool {
    a.kind() & NLA_TYPE_MASK == b.kind() & NLA_TYPE_MASK && value(a) == value(b)
}

/// A u32 attribute's value, if `a` is of type `kind`.
pub fn u32_of(a: &DefaultNla, kind: u16) -> Option<u32> {
    (a.kind() & NLA_TYPE_MASK == kind)
        .then(|| Some(u32::from_be_bytes(value(a).get(..4)?.try_into().ok()?)))
        .flatten()
}

/// A string attribute's value (NUL-terminated on the wire), if `a` is of type `kind`.
pub fn str_of(a: &DefaultNla, kind: u16) -> Option<String> {
    if a.kind() & NLA_TYPE_MASK != kind {
        return None;
    }
    let v = value(a);
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).ok()
}

/// The NLM_F_* flags a data message of a batch carries besides REQUEST, those libnftnl's
/// Rust binding sent (ACK is the batch writer's: only the last message asks for one).
fn batch_flags(msg: &NfTablesMessage) -> u16 {
    match msg {
        NfTablesMessage::NewChain(_) => NLM_F_CREATE,
        NfTablesMessage::NewRule(_) => NLM_F_CREATE | NLM_F_APPEND | NLM_F_EXCL,
        NfTablesMessage::NewSet(_) => NLM_F_CREATE | NLM_F_APPEND,
        NfTablesMessage::NewSetElement(_) => NLM_F_CREATE | NLM_F_EXCL,
        _ => 0,
    }
}

/// Appends `msg` (family `family`, sequence number `seq`) to a batch being written.
pub fn put(buf: &mut Vec<u8>, seq: u32, family: u8, msg: NfTablesMessage) {
    let flags = batch_flags(&msg);
    let header = NetfilterHeader::new(family.into(), NFNETLINK_V0, 0);
    emit(buf, seq, flags, header, msg.into());
}

/// Appends a batch's BEGIN (carrying `generation`: commit only if the ruleset is still at it)
/// or END message.
pub fn delimiter(buf: &mut Vec<u8>, seq: u32, begin: bool, generation: Option<u32>) {
    let msg = match (begin, generation) {
        (true, Some(g)) => ControlMessage::Other {
            message_type: libc::NFNL_MSG_BATCH_BEGIN as u8,
            attributes: vec![DefaultNla::new(
                libc::NFNL_BATCH_GENID as u16,
                g.to_be_bytes().to_vec(),
            )],
        },
        (true, None) => ControlMessage::BatchBegin,
        (false, _) => ControlMessage::BatchEnd,
    };
    // The delimiters name the subsystem the batch is for in `res_id`.
    let header = NetfilterHeader::new(
        NetfilterProtoFamily::Unspec,
        NFNETLINK_V0,
        libc::NFNL_SUBSYS_NFTABLES as u16,
    );
    emit(buf, seq, 0, header, msg.into());
}

/// A request (a GET or dump of `inet` objects); the transport stamps its sequence number and
/// flags.
pub fn request(msg: NfTablesMessage) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = NetfilterHeader::new(INET.into(), NFNETLINK_V0, 0);
    emit(&mut buf, 0, 0, header, msg.into());
    buf
}

fn emit(
    buf: &mut Vec<u8>,
    seq: u32,
    flags: u16,
    header: NetfilterHeader,
    inner: NetfilterMessageInner,
) {
    let mut nl = NetlinkHeader::default();
    nl.flags = NLM_F_REQUEST | flags;
    nl.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        nl,
        NetlinkPayload::from(NetfilterMessage::new(header, inner)),
    );
    msg.finalize();
    let len = msg.buffer_len();
    let start = buf.len();
    // Messages follow each other at 4-byte boundaries.
    buf.resize(start + len.next_multiple_of(4), 0);
    msg.serialize(&mut buf[start..start + len]);
}

/// `table <name>` (no flags), to add or delete.
pub fn table(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![
            TableAttribute::Name(name.into()),
            TableAttribute::Flags(TableFlags::empty()),
        ],
    }
}

/// A base chain's hook: number (`NF_INET_*`), priority and type name.
pub struct BaseHook {
    pub hook: c_int,
    pub priority: i32,
    pub kind: &'static str,
}

/// Chain `name` of table `table`; a base chain when `base` is given.
pub fn chain(table: &str, name: &str, base: Option<BaseHook>) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table(table.into()),
        ChainAttribute::Name(name.into()),
    ];
    if let Some(b) = base {
        attributes.push(ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Inet(InetHookNumber::from(b.hook as u32))),
            // The kernel reads the priority as a signed 32-bit number.
            Hook::Priority(b.priority as u32),
        ]));
        attributes.push(ChainAttribute::Type(b.kind.into()));
    }
    ChainMessage { attributes }
}

/// A rule appended to `chain` of `table`.
pub fn rule(table: &str, chain: &str, exprs: &[Expr]) -> RuleMessage {
    let mut list = List::default();
    for e in exprs {
        list.expr(e);
    }
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Other(list.into_attr(NFTA_RULE_EXPRESSIONS)),
        ],
    }
}

/// A set's header, as `nft` declares it.
pub struct SetHeader<'a> {
    pub name: &'a str,
    /// Batch-local id, by which the elements and the rule's lookup refer to it.
    pub id: u32,
    pub flags: u32,
    /// nft's datatype id of the key (informational to the kernel, read back by `nft`).
    pub key_type: u32,
    pub key_len: u32,
    /// The declared number of elements (`NFTA_SET_DESC_SIZE`).
    pub size: u32,
    pub userdata: Vec<u8>,
}

/// Set `s.name` of table `table`.
pub fn set(table: &str, s: SetHeader) -> SetMessage {
    SetMessage {
        attributes: vec![
            SetAttribute::Table(table.into()),
            SetAttribute::Name(s.name.into()),
            SetAttribute::Flags(SetFlags::from_bits_retain(s.flags)),
            SetAttribute::KeyType(s.key_type),
            SetAttribute::KeyLen(s.key_len),
            SetAttribute::Id(s.id),
            SetAttribute::Description(vec![SetDescription::Size(s.size)]),
            SetAttribute::UserData(s.userdata),
        ],
    }
}

/// libnftnl's set user data TLVs (libnftnl/udata.h): the key's byte order and the comment.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_COMMENT: u8 = 7;
/// libnftnl's element user data TLV for a comment.
const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft's byte order value for big endian (`BYTEORDER_BIG_ENDIAN`).
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// nft's datatype ids of `ipv4_addr` and `ipv6_addr`.
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;

/// A TLV of user data, its text NUL-terminated (as libnftnl writes strings); `None` past the
/// 255 bytes one can hold.
fn udata_str(kind: u8, text: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(text.len() + 1).ok()?;
    let mut out = vec![kind, len];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Some(out)
}

/// A named set of addresses of one family with a comment, as `nft add set inet T NAME { type
/// ipv4_addr ; comment "C" ; }` sends it (no flags, no size; batch id 1, which nothing uses).
pub fn named_addr_set(table: &str, name: &str, v6: bool, comment: &str) -> SetMessage {
    let mut userdata = vec![UDATA_SET_KEYBYTEORDER, 4];
    userdata.extend_from_slice(&BYTEORDER_BIG_ENDIAN.to_le_bytes());
    userdata.extend(udata_str(UDATA_SET_COMMENT, comment).unwrap_or_default());
    let (key_type, key_len) = if v6 {
        (TYPE_IPV6_ADDR, 16)
    } else {
        (TYPE_IPV4_ADDR, 4)
    };
    SetMessage {
        attributes: vec![
            SetAttribute::Table(table.into()),
            SetAttribute::Name(name.into()),
            SetAttribute::Flags(SetFlags::from_bits_retain(0)),
            SetAttribute::KeyType(key_type),
            SetAttribute::KeyLen(key_len),
            SetAttribute::Id(1),
            SetAttribute::UserData(userdata),
        ],
    }
}

/// An element's user data holding its comment, as `nft` writes `comment "C"`.
pub fn element_comment(comment: &str) -> Vec<u8> {
    udata_str(UDATA_SET_ELEM_COMMENT, comment).unwrap_or_default()
}

/// The comment in an element's user data, if it has one.
pub fn comment_of(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len);
        let value = tail.get(..n)?;
        if *kind == UDATA_SET_ELEM_COMMENT {
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return String::from_utf8(value[..end].to_vec()).ok();
        }
        rest = &tail[n..];
    }
    None
}

/// `flush table inet NAME`: delete every rule of the table (chains and sets stay).
pub fn flush_table(name: &str) -> RuleMessage {
    RuleMessage {
        attributes: vec![RuleAttribute::Table(name.into())],
    }
}

/// Elements (a `List` of them) added to set `set` of table `table` (by id too, for a set of
/// the same batch).
pub fn set_elements(table: &str, set: &str, id: Option<u32>, elements: List) -> SetElementMessage {
    let mut attributes = vec![
        SetElementList::Table(table.into()),
        SetElementList::Set(set.into()),
    ];
    attributes.extend(id.map(SetElementList::SetId));
    attributes.push(SetElementList::Other(
        elements.into_attr(NFTA_SET_ELEM_LIST_ELEMENTS),
    ));
    SetElementMessage { attributes }
}

/// The dump request for the elements of set `set` of table `table`.
pub fn get_set_elements(table: &str, set: &str) -> NfTablesMessage {
    NfTablesMessage::GetSetElement(SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.into()),
            SetElementList::Set(set.into()),
        ],
    })
}

/// The dump request for the sets of table `table`.
pub fn get_sets(table: &str) -> NfTablesMessage {
    NfTablesMessage::GetSet(SetMessage {
        attributes: vec![SetAttribute::Table(table.into())],
    })
}

/// A set's attributes in wire form, without its name and batch id (which the kernel's dump
/// replaces with its own name and a handle).
pub fn set_header_attrs(s: SetMessage) -> Vec<DefaultNla> {
    s.attributes
        .iter()
        .filter(|a| !matches!(a, SetAttribute::Name(_) | SetAttribute::Id(_)))
        .map(attr)
        .collect()
}

/// A dumped set's name and attributes in wire form.
pub fn live_set(m: &NfTablesMessage) -> Option<(String, Vec<DefaultNla>)> {
    let NfTablesMessage::NewSet(s) = m else {
        return None;
    };
    let name = s.attributes.iter().find_map(|a| match a {
        SetAttribute::Name(n) => Some(n.clone()),
        _ => None,
    })?;
    Some((name, s.attributes.iter().map(attr).collect()))
}

/// A message the kernel sent (header included): its nfgenmsg family and content; `None` for
/// one that is not an nf_tables message the crate parses.
pub fn parse(msg: &[u8]) -> Option<(u8, NfTablesMessage)> {
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(msg).ok()?;
    match m.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            header,
            inner: NetfilterMessageInner::NfTables(t),
            ..
        }) => Some((header.family.into(), t)),
        _ => None,
    }
}

/// The table a dumped chain, rule or set element list belongs to.
pub fn table_of(m: &NfTablesMessage) -> Option<&str> {
    match m {
        NfTablesMessage::NewChain(c) => c.attributes.iter().find_map(|a| match a {
            ChainAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::NewRule(r) => r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// A dumped table's name.
pub fn table_name(m: &NfTablesMessage) -> Option<&str> {
    match m {
        NfTablesMessage::NewTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// The ruleset generation of a `GETGEN` answer.
pub fn generation(m: &NfTablesMessage) -> Option<u32> {
    match m {
        NfTablesMessage::NewGen(GenMessage { attributes }) => {
            attributes.iter().find_map(|a| match a {
                GenAttribute::Id(id) => Some(*id),
                _ => None,
            })
        }
        _ => None,
    }
}

/// A chain of a dump: its name and, for a base chain, (hook number, priority, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChain {
    pub name: String,
    pub hook: Option<(u32, i32, String)>,
}

impl LiveChain {
    pub fn from(m: &NfTablesMessage) -> Option<LiveChain> {
        let NfTablesMessage::NewChain(c) = m else {
            return None;
        };
        let (mut name, mut num, mut prio, mut kind) = (None, None, None, None);
        for a in &c.attributes {
            match a {
                ChainAttribute::Name(n) => name = Some(n.clone()),
                ChainAttribute::Type(t) => kind = Some(t.clone()),
                ChainAttribute::Hook(hooks) => {
                    for h in hooks {
                        match h {
                            Hook::Number(n) => num = Some(u32::from(*n)),
                            Hook::Priority(p) => prio = Some(*p as i32),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(LiveChain {
            name: name?,
            hook: num.map(|n| (n, prio.unwrap_or_default(), kind.unwrap_or_default())),
        })
    }
}

/// One expression of a dumped rule: its name and its attributes in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveExpr {
    pub name: String,
    pub attrs: Vec<DefaultNla>,
}

impl LiveExpr {
    /// The set a lookup names.
    pub fn lookup_set(&self) -> Option<String> {
        if self.name != "lookup" {
            return None;
        }
        self.attrs.iter().find_map(|a| str_of(a, NFTA_LOOKUP_SET))
    }
}

/// A rule of a dump: its chain and its expressions in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRule {
    pub chain: String,
    pub exprs: Vec<LiveExpr>,
}

impl LiveRule {
    pub fn from(m: &NfTablesMessage) -> Option<LiveRule> {
        let NfTablesMessage::NewRule(r) = m else {
            return None;
        };
        let mut chain = None;
        let mut exprs = Vec::new();
        for a in &r.attributes {
            match a {
                RuleAttribute::Chain(c) => chain = Some(c.clone()),
                RuleAttribute::Expressions(list) => {
                    exprs = list.iter().filter_map(live_expr).collect();
                }
                _ => {}
            }
        }
        Some(LiveRule {
            chain: chain?,
            exprs,
        })
    }
}

fn live_expr(l: &ListAttribute<ExpressionAttribute>) -> Option<LiveExpr> {
    let ListAttribute::Element(attrs) = l else {
        return None;
    };
    let mut name = None;
    let mut data = Vec::new();
    for a in attrs {
        match a {
            ExpressionAttribute::Name(n) => name = Some(n.clone()),
            ExpressionAttribute::Data(e) => data = flatten(e),
            _ => {}
        }
    }
    Some(LiveExpr {
        name: name?,
        attrs: data,
    })
}

/// A parsed expression's attributes, back in wire form.
fn flatten(e: &Expressions) -> Vec<DefaultNla> {
    fn all<T: Nla>(v: &[T]) -> Vec<DefaultNla> {
        v.iter().map(attr).collect()
    }
    match e {
        Expressions::Bitwise(v) => all(v),
        Expressions::Cmp(v) => all(v),
        Expressions::Immediate(v) => all(v),
        Expressions::Lookup(v) => all(v),
        Expressions::Meta(v) => all(v),
        Expressions::Payload(v) => all(v),
        Expressions::Unknown(v) => v.clone(),
        Expressions::Other { attributes, .. } => attributes.clone(),
        // A kind a later crate version types: compared as having no attributes, so any
        // attribute we sent reads as a difference rather than a match.
        _ => Vec::new(),
    }
}

/// One element of a dumped set: key, flags, user data.
pub type LiveElement = (Vec<u8>, u32, Vec<u8>);

/// The elements of an `NFT_MSG_NEWSETELEM` message of a dump.
pub fn live_elements(m: &NfTablesMessage) -> Vec<LiveElement> {
    let NfTablesMessage::NewSetElement(SetElementMessage { attributes }) = m else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in attributes {
        let SetElementList::Elements(elements) = list else {
            continue;
        };
        for e in elements {
            let ListAttribute::Element(attrs) = e else {
                continue;
            };
            let (mut key, mut flags, mut userdata) = (None, 0, Vec::new());
            for a in attrs {
                match a {
                    SetElementAttribute::Key(DataAttribute::Value(k)) => key = Some(k.clone()),
                    SetElementAttribute::Flags(f) => flags = f.bits(),
                    SetElementAttribute::UserData(u) => userdata = u.clone(),
                    _ => {}
                }
            }
            out.extend(key.map(|k| (k, flags, userdata)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_netfilter::nftables::{Cmp, Operator, Register};

    #[test]
    fn a_rule_reads_back_as_it_was_sent() {
        let cmp = Expr {
            name: "cmp",
            attrs: vec![
                attr(&Cmp::SourceRegister(Register::Reg1)),
                attr(&Cmp::Op(Operator::NotEqual)),
                attr(&Cmp::Data(DataAttribute::Value(vec![1, 2]))),
            ],
        };
        let ct = Expr {
            name: "ct",
            attrs: vec![be32(NFTA_CT_KEY, 3), be32(NFTA_CT_DREG, 1)],
        };
        let mut buf = Vec::new();
        put(
            &mut buf,
            7,
            INET,
            NfTablesMessage::NewRule(rule("t", "c", &[cmp.clone(), ct.clone()])),
        );
        assert_eq!(buf.len() % 4, 0);
        let (family, msg) = parse(&buf).expect("parses");
        assert_eq!(family, INET);
        assert_eq!(table_of(&msg), Some("t"));
        let live = LiveRule::from(&msg).expect("a rule");
        assert_eq!(live.chain, "c");
        assert_eq!(live.exprs.len(), 2);
        for (want, have) in [cmp, ct].iter().zip(&live.exprs) {
            assert_eq!(want.name, have.name);
            assert!(
                want.attrs
                    .iter()
                    .all(|w| have.attrs.iter().any(|h| same_attr(w, h)))
            );
        }
        assert!(!same_attr(&be32(NFTA_CT_KEY, 3), &be32(NFTA_CT_KEY, 4)));
        assert!(!same_attr(&be32(NFTA_CT_KEY, 3), &be32(NFTA_CT_DREG, 3)));
    }

    #[test]
    fn elements_keep_flags_and_user_data() {
        let mut list = List::default();
        list.element(&[0, 0, 0, 0], 1, &[]);
        list.element(&[128, 0, 0, 0], 0, &[1, 4, 1, 0, 0, 0]);
        let msg = NfTablesMessage::NewSetElement(set_elements("t", "__set%d", Some(1), list));
        let mut buf = Vec::new();
        put(&mut buf, 1, INET, msg);
        let (_, back) = parse(&buf).expect("parses");
        assert_eq!(
            live_elements(&back),
            [
                (vec![0, 0, 0, 0], 1, vec![]),
                (vec![128, 0, 0, 0], 0, vec![1, 4, 1, 0, 0, 0])
            ]
        );
    }
}
