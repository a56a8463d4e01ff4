//! Typed building blocks of rules: tables, chains, matches, targets and value newtypes.
//!
//! Every newtype is constructed only through a validating parser, so its `Display` output is
//! known to be free of whitespace, quotes and separators: rendered text cannot be injected.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Serialize, Serializer};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

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

/// A TCP/UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    /// `None` for 0.
    pub fn new(p: u16) -> Option<Port> {
        (p != 0).then_some(Port(p))
    }
    pub fn get(self) -> u16 {
        self.0
    }
    /// The DNS port.
    pub const DNS: Port = Port(53);
    /// Where istio-agent's DNS proxy listens.
    pub const DNS_PROXY: Port = Port(15053);
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A numeric user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Uid(pub u32);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A group: numeric id, or a name where upstream accepts names (owner-group lists).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    Id(u32),
    Name(Name),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Id(id) => id.fmt(f),
            Group::Name(n) => n.fmt(f),
        }
    }
}

impl Serialize for Group {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Group::Id(id) => s.serialize_u32(*id),
            Group::Name(n) => s.serialize_str(n.as_str()),
        }
    }
}

/// A validated token (interface or group name): non-empty, no whitespace, quotes, control
/// characters, `/`, `:`, `,`, `;`, braces, and no leading `-`. Safe to place in any rule text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Validates `s` as a name of at most `max` bytes; on failure says what is wrong.
    pub fn parse(s: &str, max: usize) -> Result<Name, &'static str> {
        if s.is_empty() {
            return Err("is empty");
        }
        if s.len() > max {
            return Err("is too long");
        }
        if s.starts_with('-') {
            return Err("starts with '-'");
        }
        if s.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '"' | '\'' | '`' | '/' | ':' | ',' | ';' | '{' | '}' | '\\' | '#' | '$'
                )
        }) {
            return Err("contains a character that is not allowed");
        }
        Ok(Name(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A packet/connection mark (decimal in rendered text, as upstream writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Mark(pub u32);

impl Mark {
    /// The mark upstream puts on the proxy's own hairpin traffic in TPROXY mode.
    pub const OUTBOUND: Mark = Mark(1338);
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A policy-routing table id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RouteTable(pub u32);

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A prefix as upstream prints it: address canonical, host bits kept (`127.0.0.1/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn family(self) -> Family {
        match self.0 {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
    /// A host prefix (`/32` or `/128`) for one address.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr(IpNet::from(addr))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpNet::V4(n) => n.fmt(f),
            IpNet::V6(n) => write!(f, "{}/{}", DisplayV6(n.addr()), n.prefix_len()),
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// IPv6 text as Istio's goldens show it: RFC 5952, except that IPv4-compatible addresses
/// (`::a.b.c.d`, above `::ffff`) keep their dotted tail (`::127.0.0.53`).
pub struct DisplayV6(pub Ipv6Addr);

impl fmt::Display for DisplayV6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.segments();
        if s[..6] == [0; 6] && s[6] != 0 {
            let [a, b, c, d] = self.0.octets()[12..16] else {
                unreachable!()
            };
            return write!(f, "::{a}.{b}.{c}.{d}");
        }
        self.0.fmt(f)
    }
}

/// A match: one condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "match")]
pub enum Match {
    InIface {
        name: Name,
    },
    OutIface {
        name: Name,
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
