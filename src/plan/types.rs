//! Typed building blocks of rules: tables, chains, matches and targets. Their values are the
//! validated newtypes of `values`, so rendered text cannot be injected: only renderers know how
//! `-m owner --uid-owner` or `skuid` is spelled.

use serde::Serialize;

use std::net::IpAddr;

use crate::values::{
    Cidr, Family, Group, IfName, Mark, MaskedMark, Port, RouteTable, RulePriority, Uid,
};

/// A netfilter table (in nftables, a scheme's `inet` table plays it: `TableLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub fn xt_name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

/// How a scheme lays one netfilter table out in nftables: the `inet` table's name, the chains
/// it may declare in the nft text's fixed order (base chains first), and how its base chains
/// hook in. One declarative row of a scheme's chain table.
#[derive(Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub table: Table,
    pub nft_name: &'static str,
    pub chains: &'static [Chain],
    pub base: &'static [(Chain, BaseChain)],
}

impl TableLayout {
    /// How `chain` hooks in when it is one of this table's base chains.
    pub fn base_chain(&self, chain: Chain) -> Option<BaseChain> {
        self.base.iter().find(|(c, _)| *c == chain).map(|(_, b)| *b)
    }
}

/// What a scheme owns and how it lays its tables out. Every plan carries its scheme, so the
/// renderers and the backends name no scheme: they read which nftables tables and which
/// iptables chains are ours from here.
#[derive(Debug, PartialEq, Eq)]
pub struct Scheme {
    pub name: &'static str,
    /// The scheme's nftables tables, in the transaction's order.
    pub tables: &'static [TableLayout],
    /// Which iptables chains are the scheme's.
    pub xt_chains: XtChains,
    /// Whether an iptables change of more than one commit raises the fail-closed guard. A
    /// pod's interception does (half written, it would intercept some traffic and not the
    /// rest); the node's probe SNAT does not: in the node's namespace the guard would drop
    /// the node's and every pod's forwarded traffic, and a kill would leave the node cut off,
    /// while a half-written change only leaves one family's probes without their SNAT.
    pub fail_closed: bool,
}

/// How a scheme names its iptables chains, so a rerun or a clean can tell them from others'.
#[derive(Debug, PartialEq, Eq)]
pub enum XtChains {
    /// Every chain whose name starts with this (Istio's sidecar: `ISTIO_`, which also covers
    /// the chains older releases made).
    Prefix(&'static str),
    /// Exactly these names (Istio ambient: `ISTIO_PRERT`, `ISTIO_OUTPUT`).
    Named(&'static [&'static str]),
}

impl Scheme {
    /// The layout of `table`, if the scheme uses it in nftables.
    pub fn layout(&self, table: Table) -> Option<&'static TableLayout> {
        self.tables.iter().find(|l| l.table == table)
    }

    /// Whether an iptables chain of this name is the scheme's.
    pub fn owns_xt_chain(&self, name: &str) -> bool {
        match self.xt_chains {
            XtChains::Prefix(p) => name.starts_with(p),
            XtChains::Named(names) => names.contains(&name),
        }
    }
}

/// The type of an nftables base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// The netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// `{ type nat hook prerouting priority -100 ; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

/// A chain: its name in each dialect, and whether netfilter defines it (a base chain's hook)
/// or a scheme does. Netfilter's chains are the constants of `builtin`; a scheme's are
/// constants of its profile (Istio's: `profile::istio::chains`), so nothing here knows a
/// scheme's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain {
    xt: &'static str,
    nft: &'static str,
    builtin: bool,
}

impl Chain {
    /// A scheme's own chain, `xt` in iptables and `nft` in nftables.
    pub const fn scheme(xt: &'static str, nft: &'static str) -> Chain {
        Chain {
            xt,
            nft,
            builtin: false,
        }
    }

    const fn builtin(xt: &'static str, nft: &'static str) -> Chain {
        Chain {
            xt,
            nft,
            builtin: true,
        }
    }

    pub fn is_builtin(self) -> bool {
        self.builtin
    }

    pub fn xt_name(self) -> &'static str {
        self.xt
    }

    pub fn nft_name(self) -> &'static str {
        self.nft
    }
}

/// As iptables names it (the plan's JSON).
impl Serialize for Chain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.xt)
    }
}

/// Netfilter's chains (in nftables, the base chains a table declares for a hook).
pub mod builtin {
    use super::Chain;

    pub const PREROUTING: Chain = Chain::builtin("PREROUTING", "prerouting");
    pub const OUTPUT: Chain = Chain::builtin("OUTPUT", "output");
    pub const POSTROUTING: Chain = Chain::builtin("POSTROUTING", "postrouting");
}

/// Layer-4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Conntrack states used by upstream's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    Invalid,
    Related,
    Established,
}

impl CtState {
    /// The state as nft spells it; iptables' conntrack match writes it in capitals.
    pub fn nft_name(self) -> &'static str {
        match self {
            CtState::Invalid => "invalid",
            CtState::Related => "related",
            CtState::Established => "established",
        }
    }

    pub fn xtables_name(self) -> &'static str {
        match self {
            CtState::Invalid => "INVALID",
            CtState::Related => "RELATED",
            CtState::Established => "ESTABLISHED",
        }
    }
}

/// A match: one condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "match")]
pub enum Match {
    InIface {
        name: IfName,
    },
    OutIface {
        name: IfName,
    },
    /// `! -o lo` / `oifname != lo`.
    NotOutIface {
        name: IfName,
    },
    /// `-p tcp` / `meta l4proto tcp`.
    Proto {
        proto: Proto,
    },
    Src {
        negate: bool,
        cidr: Cidr,
    },
    Dst {
        negate: bool,
        cidr: Cidr,
    },
    /// `-s ADDR` / `ip saddr ADDR`: one address, written without a prefix length (as Istio
    /// ambient writes its probe address).
    SrcAddr {
        addr: IpAddr,
    },
    DstAddr {
        addr: IpAddr,
    },
    /// xtables' explicit protocol match module, `-m tcp` with no option of its own (after
    /// `-p tcp`, which it needs). nft has no word for it: the protocol match says it all, so
    /// the nft dialect leaves it out (`NftSpelling::apply`).
    L4Module {
        proto: Proto,
    },
    /// `--dport` / `tcp dport`; the protocol comes along because nft names it.
    Dport {
        proto: Proto,
        negate: bool,
        port: Port,
    },
    Sport {
        proto: Proto,
        negate: bool,
        port: Port,
    },
    /// `-m multiport ! --dports a,b` / `tcp dport != { a, b }`.
    DportsNotIn {
        proto: Proto,
        ports: Vec<Port>,
    },
    /// `--compact`: `-m multiport --dports a,b` (at most 15: the xtables dialect cuts longer
    /// lists into several rules) / `tcp dport { a, b }`.
    DportsIn {
        proto: Proto,
        ports: Vec<Port>,
    },
    /// `--compact`: `ip daddr { a, b }` (one family, aggregated: no prefix inside another);
    /// the xtables dialect writes one `-d` rule per CIDR, as there is no set without ipset.
    DstIn {
        cidrs: Vec<Cidr>,
    },
    Uid {
        negate: bool,
        uid: Uid,
    },
    Gid {
        negate: bool,
        gid: Group,
    },
    CtState {
        states: Vec<CtState>,
    },
    Mark {
        negate: bool,
        mark: Mark,
    },
    ConnMark {
        mark: Mark,
    },
    /// `-m mark [!] --mark 0x539/0xfff` / `mark and 0xfff [!=|==] 0x539`.
    MarkMasked {
        negate: bool,
        mark: MaskedMark,
    },
    /// `-m connmark --mark 0x111/0xfff` / `ct mark and 0xfff == 0x111`.
    ConnMarkMasked {
        mark: MaskedMark,
    },
    /// `-m owner --socket-exists`: the packet belongs to a local socket (xtables only: nft
    /// has no word for it, and a scheme's nft walk keys on the socket's owner instead).
    SocketExists,
    /// `-m set --match-set NAME dst` / `ip daddr @NAME`: the destination is a member of one
    /// of the plan's named address sets (`Plan::sets`).
    DstInSet {
        set: AddrSet,
    },
}

/// A named set of addresses of one family that rules look up and that members are added to
/// and removed from one by one, each with a comment saying whose it is: an ipset `hash:ip`
/// with comments in iptables, a named set in the scheme's nat table in nftables. Its name is
/// the scheme's constant (no user text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddrSet {
    pub name: &'static str,
    pub family: Family,
    /// The set's own comment in nftables (`comment "..."`), as the scheme's upstream writes it.
    #[serde(skip)]
    pub comment: &'static str,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "target")]
pub enum Target {
    Jump {
        chain: Chain,
    },
    Return,
    Accept,
    Drop,
    /// REDIRECT to a local port.
    Redirect {
        port: Port,
    },
    /// TPROXY to a local port, marking the packet.
    Tproxy {
        port: Port,
        mark: Mark,
    },
    SetMark {
        mark: Mark,
    },
    /// Copy the packet mark to the connection (CONNMARK --save-mark).
    SaveMark,
    /// Copy the connection mark to the packet (CONNMARK --restore-mark).
    RestoreMark,
    /// Put the packet in a conntrack zone.
    CtZone {
        zone: u16,
    },
    /// Set the masked bits of the connection mark (`CONNMARK --set-xmark 0x111/0xfff` /
    /// `ct mark set ct mark & 0xfffff000 | 0x111`).
    SetConnMark {
        mark: MaskedMark,
    },
    /// The connection mark under `ctmask` becomes the packet mark, every bit of which is
    /// replaced (`CONNMARK --restore-mark --nfmask 0xffffffff --ctmask M` / `meta mark set ct
    /// mark`, with `and M` unless M is all ones). An nfmask other than all ones keeps bits of
    /// the old mark, which one nft statement cannot say, so the plan has none.
    RestoreMarkMasked {
        ctmask: u32,
    },
    /// Source NAT to one address (`-j SNAT --to-source A` / `snat to A`).
    Snat {
        to: IpAddr,
    },
}

/// How upstream's nft text words a masked mark match (`Match::MarkMasked`) in one rule: its
/// generators write the same comparison three ways, and a dry run users diff against
/// upstream keeps them. Same bytecode whichever (`meta load mark`, `bitwise`, `cmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkWords {
    /// `mark and 0xfff != 0x539` (`meta mark and ...` in a raw table, as its owner matches).
    #[default]
    And,
    /// `meta mark & 0xfff == 0x539`.
    MetaAmpersand,
    /// `mark and 0xfff  != 0x539`, with a second space: upstream's words for the IPv4 inbound
    /// rule carry a trailing space (`"mark and 0xfff "`).
    AndWide,
}

/// Everything an apply or a clean needs, computed from a `Policy` without I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Rules for `iptables-restore` (always present) and `ip6tables-restore` (when IPv6 is on).
    pub xtables: XtablesPlan,
    /// The native nftables ruleset.
    pub nft: NftPlan,
    /// The policy routing the rules need (Istio's TPROXY, Istio ambient's connmark), when
    /// they need it.
    pub routes: Option<PolicyRoutes>,
    /// Whether `::6/128` goes on `lo` (Istio's sidecar: upstream adds it whenever IPv6 is on).
    pub loopback_v6_address: bool,
    /// The named address sets the rules look up, created by an apply before the rules that
    /// name them and kept, with their members, across reruns (an nftables table holding one
    /// is flushed and refilled, not replaced).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<AddrSet>,
    /// What marks our objects, for a clean or a rerun to recognise them.
    #[serde(skip)]
    pub ours: Ownership,
}

/// What is ours in a namespace this plan programs, for an apply, a check or a clean to tell
/// ours from theirs: the scheme's tables and chains, the marks its bookkeeping rules in
/// built-in chains carry (Istio's TPROXY rules in mangle), its policy routing rule (whose
/// routes are those of its table), and whether `::6/128` on `lo` is the scheme's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub scheme: &'static Scheme,
    pub marks: Vec<Mark>,
    /// The policy routing rule the scheme makes, with or without this plan (`None`: the
    /// scheme makes none, and no rule is its to remove).
    pub rule: Option<MarkRule>,
    /// Whether `::6/128` on `lo` is one of the scheme's objects.
    pub loopback_v6: bool,
    /// The named sets that are the scheme's, in every family whether this plan makes them or
    /// not (a run with IPv6 off still owns, and cleans, the IPv6 set).
    pub sets: Vec<AddrSet>,
}

/// Per-family xtables rule lists, in upstream's emission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XtablesPlan {
    pub v4: Vec<XtRule>,
    /// `None` when IPv6 is off: nothing is sent to ip6tables.
    pub v6: Option<Vec<XtRule>>,
}

impl XtablesPlan {
    /// The rule list of one family, empty when that family is off.
    pub fn rules(&self, family: Family) -> &[XtRule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => self.v6.as_deref().unwrap_or(&[]),
        }
    }

    /// The families that are programmed: IPv4 always, IPv6 when on.
    pub fn families(&self) -> Vec<Family> {
        let mut f = vec![Family::V4];
        if self.v6.is_some() {
            f.push(Family::V6);
        }
        f
    }
}

/// One xtables rule: `-A chain ...` or `-I chain N ...` in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XtRule {
    pub table: Table,
    pub chain: Chain,
    pub position: Position,
    /// Rendered in this order: upstream's match order differs from rule to rule.
    pub matches: Vec<Match>,
    pub target: Target,
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Append,
    /// xtables: 1-based `-I chain N`; nftables: 0-based `insert ... index N`.
    Insert(u32),
}

/// The native nftables ruleset: `inet` tables in transaction order (nat, mangle, raw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftPlan {
    pub tables: Vec<NftTable>,
}

/// One of our `inet` tables with the chains that have rules and the rules in emission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftTable {
    pub table: Table,
    /// The scheme's layout of this table: its name, its chains' order, its base chains.
    #[serde(skip)]
    pub layout: &'static TableLayout,
    /// Declared chains, in upstream's fixed order; only chains with at least one rule.
    pub chains: Vec<Chain>,
    /// Rules in emission order; `Position::Insert` indexes are already fixed up against the
    /// rules emitted before them, so a renderer or lowering can replay them in order.
    pub rules: Vec<NftRule>,
}

/// One nftables rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftRule {
    pub chain: Chain,
    pub position: Position,
    /// Family the rule is restricted to, when it has ip/ip6 matches or a tproxy target.
    pub family: Option<Family>,
    pub matches: Vec<Match>,
    pub target: Target,
    /// How the text words a masked mark match (text only: the same bytecode).
    #[serde(skip)]
    pub mark_words: MarkWords,
    /// Whether the rule counts its packets (`counter`, as upstream's rules do but Istio
    /// ambient's jumps); the JSON says so only when it does not.
    #[serde(skip_serializing_if = "is_true")]
    pub counter: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `ip rule add fwmark MARK[/MASK] [pref P] lookup TABLE`: what sends marked packets to the
/// scheme's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MarkRule {
    pub mark: Mark,
    /// All ones for a plain `fwmark MARK`.
    pub mask: u32,
    pub table: RouteTable,
    /// `None`: the kernel chooses (the preference before the lowest one in use), as `ip rule
    /// add` without `pref` does.
    pub priority: Option<RulePriority>,
}

impl MarkRule {
    /// Whether packets with `mark` take this rule.
    pub fn selects(&self, mark: u32) -> bool {
        mark & self.mask == self.mark.get() & self.mask
    }
}

/// The rule and, per family, `ip route add local default dev lo table TABLE`: marked packets
/// are delivered locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRoutes {
    pub rule: MarkRule,
    /// The families that get the rule and the route.
    pub families: Vec<Family>,
}
