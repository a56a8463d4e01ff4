//! Typed building blocks of rules: tables, chains, matches and targets. Their values are the
//! validated newtypes of `values`, so rendered text cannot be injected: only renderers know how
//! `-m owner --uid-owner` or `skuid` is spelled.

use serde::Serialize;

use crate::values::{Cidr, Family, Group, IfName, Mark, Port, RouteTable, Uid};

/// Netfilter table (xtables name; in nftables the `inet istio-proxy-<name>` table).
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

    /// Our nftables table name (upstream's).
    pub fn nft_name(self) -> &'static str {
        match self {
            Table::Filter => "istio-proxy-filter",
            Table::Mangle => "istio-proxy-mangle",
            Table::Nat => "istio-proxy-nat",
            Table::Raw => "istio-proxy-raw",
        }
    }

    /// The `inet` tables meshtables (and upstream) may own, in transaction order.
    pub const NFT_TABLES: [Table; 3] = [Table::Nat, Table::Mangle, Table::Raw];

    /// How `chain` hooks into this table when it is a base chain (upstream's nft tables:
    /// nat at priority -100, mangle at -150 with a `route` output chain, raw at -300).
    pub fn base_chain(self, chain: Chain) -> Option<BaseChain> {
        let hook = match chain {
            Chain::Prerouting => Hook::Prerouting,
            Chain::Output => Hook::Output,
            _ => return None,
        };
        let (kind, priority) = match (self, chain) {
            (Table::Nat, _) => (ChainType::Nat, -100),
            (Table::Mangle, Chain::Prerouting) => (ChainType::Filter, -150),
            (Table::Mangle, _) => (ChainType::Route, -150),
            (Table::Raw, _) => (ChainType::Filter, -300),
            (Table::Filter, _) => (ChainType::Filter, 0),
        };
        Some(BaseChain {
            kind,
            hook,
            priority,
        })
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
    Output,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
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

/// A chain: a built-in one or one of Istio's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Chain {
    Prerouting,
    Output,
    Input,
    Forward,
    Postrouting,
    IstioInbound,
    IstioRedirect,
    IstioInRedirect,
    IstioOutput,
    IstioOutputDns,
    IstioDivert,
    IstioTproxy,
    IstioDrop,
}

impl Chain {
    pub fn is_builtin(self) -> bool {
        matches!(
            self,
            Chain::Prerouting | Chain::Output | Chain::Input | Chain::Forward | Chain::Postrouting
        )
    }

    pub fn xt_name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::Input => "INPUT",
            Chain::Forward => "FORWARD",
            Chain::Postrouting => "POSTROUTING",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioOutputDns => "ISTIO_OUTPUT_DNS",
            Chain::IstioDivert => "ISTIO_DIVERT",
            Chain::IstioTproxy => "ISTIO_TPROXY",
            Chain::IstioDrop => "ISTIO_DROP",
        }
    }

    pub fn nft_name(self) -> &'static str {
        match self {
            Chain::Prerouting => "prerouting",
            Chain::Output => "output",
            Chain::Input => "input",
            Chain::Forward => "forward",
            Chain::Postrouting => "postrouting",
            Chain::IstioInbound => "istio-inbound",
            Chain::IstioRedirect => "istio-redirect",
            Chain::IstioInRedirect => "istio-in-redirect",
            Chain::IstioOutput => "istio-output",
            Chain::IstioOutputDns => "istio-output-dns",
            Chain::IstioDivert => "istio-divert",
            Chain::IstioTproxy => "istio-tproxy",
            Chain::IstioDrop => "istio-drop",
        }
    }

    /// Every Istio chain, for clean-up code that looks for any of them.
    pub const ISTIO: [Chain; 8] = [
        Chain::IstioInbound,
        Chain::IstioRedirect,
        Chain::IstioInRedirect,
        Chain::IstioOutput,
        Chain::IstioOutputDns,
        Chain::IstioDivert,
        Chain::IstioTproxy,
        Chain::IstioDrop,
    ];
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
}

/// Everything an apply or a clean needs, computed from a `Policy` without I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Rules for `iptables-restore` (always present) and `ip6tables-restore` (when IPv6 is on).
    pub xtables: XtablesPlan,
    /// The native nftables ruleset.
    pub nft: NftPlan,
    /// Policy routing TPROXY needs, when it needs it.
    pub routes: Option<TproxyRoutes>,
    /// Whether `::6/128` goes on `lo` (upstream adds it whenever IPv6 is on).
    pub loopback_v6_address: bool,
    /// What marks our objects, for a clean or a rerun to recognise them.
    #[serde(skip)]
    pub ours: Ownership,
}

/// The TPROXY mark and routing table of this policy: upstream's bookkeeping rules in mangle
/// carry the mark, and the policy routing uses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub mark: Mark,
    pub table: RouteTable,
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
}

/// `ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TproxyRoutes {
    pub mark: Mark,
    pub table: RouteTable,
    pub families: Vec<Family>,
}
