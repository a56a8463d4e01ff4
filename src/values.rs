//! Validated values, a leaf module: every newtype here can only hold a valid value, and is
//! built only by its parser (or a constant), so whatever reaches rule text or a netlink message
//! is known to be a port, a mark, an interface name... and can carry no space, quote, newline or
//! separator. The parsers return the problem in words (`Err("is not a port (expected
//! 1-65535)")`); config prefixes the flag or variable and the value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Serialize, Serializer};

/// What a parser says is wrong with a value (after "FLAG: VALUE ").
pub type Problem = String;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

/// A TCP/UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    /// `None` for 0.
    pub const fn new(p: u16) -> Option<Port> {
        if p == 0 { None } else { Some(Port(p)) }
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

/// A numeric user id (every u32 is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Uid(pub u32);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A group: a numeric id, or a name where upstream accepts names (owner-group lists); config
/// turns names into ids before any backend sees them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    Id(u32),
    Name(GroupName),
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

/// Characters no name may hold: they would split or quote rule text.
fn forbidden(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '"' | '\'' | '`' | '/' | ':' | ',' | ';' | '{' | '}' | '\\' | '#' | '$'
        )
}

/// An interface name as the kernel allows it: 1-15 bytes (IFNAMSIZ - 1), no whitespace,
/// quotes, `/` or `:`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IfName(String);

impl IfName {
    pub const MAX: usize = 15;

    pub fn parse(s: &str) -> Result<IfName, &'static str> {
        if s.is_empty() {
            return Err("is empty");
        }
        if s.len() > Self::MAX {
            return Err("is too long");
        }
        if s.starts_with('-') {
            return Err("starts with '-'");
        }
        // iptables reads a trailing `+` as "any name with this prefix": alone, every
        // interface, which is not a name.
        if s == "+" {
            return Err("is iptables' wildcard for every interface, not a name");
        }
        if s.chars().any(forbidden) {
            return Err("contains a character that is not allowed");
        }
        Ok(IfName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The loopback interface.
    pub fn lo() -> IfName {
        IfName("lo".into())
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group name as /etc/group holds one: a letter or `_` first, then letters, digits, `_`,
/// `-` or `.`, at most 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    pub const MAX: usize = 32;

    pub fn parse(s: &str) -> Option<GroupName> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        ok.then(|| GroupName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase letters, digits and `-`, starting and ending with a letter or digit: the shape
/// of a DNS-1123 label, and of each part of a DNS-1123 subdomain.
fn label_shaped(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 label, as Kubernetes checks it (`IsDNS1123Label`): label-shaped, at most 63.
fn is_dns1123_label(s: &str) -> bool {
    s.len() <= NamespaceName::MAX && label_shaped(s)
}

/// A Kubernetes namespace name: a DNS-1123 label (what the API server accepts for a
/// namespace), so it is safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespaceName(String);

impl NamespaceName {
    pub const MAX: usize = 63;

    pub fn parse(s: &str) -> Result<NamespaceName, Problem> {
        if is_dns1123_label(s) {
            Ok(NamespaceName(s.to_string()))
        } else {
            Err("is not a namespace name (a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pod name: a DNS-1123 subdomain (Kubernetes' `ValidatePodName`): DNS-1123 labels joined
/// by `.`, at most 253 in all, so it is safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodName(String);

impl PodName {
    pub const MAX: usize = 253;

    pub fn parse(s: &str) -> Result<PodName, Problem> {
        // `IsDNS1123Subdomain` bounds the whole name only, not each part.
        if s.len() <= Self::MAX && s.split('.').all(label_shaped) {
            Ok(PodName(s.to_string()))
        } else {
            Err("is not a pod name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit, at most 253)".into())
        }
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name part of a label key, and a non-empty label value: Kubernetes' `IsQualifiedName`
/// name and `IsValidLabelValue` (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63).
fn label_name_shaped(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            s.len() <= LabelKey::MAX_NAME
                && alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|&b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A label key, as the API server checks one (`IsQualifiedName`): an optional prefix, a
/// DNS-1123 subdomain of at most 253, and `/`, then a name of at most 63 (letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit). What it may contain is
/// what the API server accepts, so a key that would be refused at the first broken pod is
/// refused at start instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelKey(String);

impl LabelKey {
    pub const MAX_PREFIX: usize = 253;
    pub const MAX_NAME: usize = 63;

    pub fn parse(s: &str) -> Result<LabelKey, Problem> {
        let (prefix, name) = match s.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, s),
        };
        let prefix_ok = prefix.is_none_or(|p| {
            p.len() <= Self::MAX_PREFIX && p.split('.').all(|l| l.len() <= 63 && label_shaped(l))
        });
        if prefix_ok && label_name_shaped(name) {
            Ok(LabelKey(s.to_string()))
        } else {
            Err("is not a label key (an optional DNS-1123 subdomain prefix of at most 253 and '/', then a name of at most 63: letters, digits, '-', '_' and '.', starting and ending with a letter or digit)".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LabelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label value, as the API server checks one (`IsValidLabelValue`): empty, or at most 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue(String);

impl LabelValue {
    pub fn parse(s: &str) -> Result<LabelValue, Problem> {
        if s.is_empty() || label_name_shaped(s) {
            Ok(LabelValue(s.to_string()))
        } else {
            Err("is not a label value (empty, or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A packet/connection mark, never 0 (decimal in rule text, as upstream writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Mark(u32);

impl Mark {
    pub const fn new(m: u32) -> Option<Mark> {
        if m == 0 { None } else { Some(Mark(m)) }
    }
    pub fn get(self) -> u32 {
        self.0
    }
    /// The mark upstream puts on the proxy's own hairpin traffic in TPROXY mode.
    pub const OUTBOUND: Mark = Mark(1338);
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A mark under a mask, as iptables writes `--mark 0x539/0xfff`: the mask is not 0 and the
/// value lies inside it (so `--set-xmark`'s XOR and nft's `| value` set the same bits), and the
/// value is not 0. Written in hex, as Istio ambient writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedMark {
    value: u32,
    mask: u32,
}

impl MaskedMark {
    pub const fn new(value: u32, mask: u32) -> Option<MaskedMark> {
        if mask == 0 || value == 0 || value & !mask != 0 {
            None
        } else {
            Some(MaskedMark { value, mask })
        }
    }
    pub fn value(self) -> u32 {
        self.value
    }
    /// The value as a mark: never 0, since `new` refuses a 0 value.
    pub fn mark(self) -> Mark {
        Mark(self.value)
    }
    pub fn mask(self) -> u32 {
        self.mask
    }
    /// Whether `mark` has this value under this mask.
    pub fn matches(self, mark: u32) -> bool {
        mark & self.mask == self.value
    }
    /// `mark` with the masked bits replaced by the value (CONNMARK `--set-xmark`, nft
    /// `ct mark set ct mark & ~mask | value`).
    pub fn apply(self, mark: u32) -> u32 {
        (mark & !self.mask) | self.value
    }
}

impl fmt::Display for MaskedMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}/{:#x}", self.value, self.mask)
    }
}

impl Serialize for MaskedMark {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An `ip rule` preference that routes before the main table: 1-32765 (0 is the local
/// table's rule; from 32766 on, the main table would route marked packets first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RulePriority(u32);

impl RulePriority {
    pub const fn new(p: u32) -> Option<RulePriority> {
        match p {
            1..=32765 => Some(RulePriority(p)),
            _ => None,
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for RulePriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A policy-routing table id: not 0 (unspecified) and not 253-255 (default, main, local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RouteTable(u32);

impl RouteTable {
    pub const fn new(t: u32) -> Option<RouteTable> {
        match t {
            0 | 253..=255 => None,
            t => Some(RouteTable(t)),
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

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
    /// `::1/128`, the IPv6 loopback destination.
    pub fn v6_loopback() -> Cidr {
        Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }
    /// The source address Envoy binds for inbound passthrough (127.0.0.6 / ::6).
    pub fn passthrough(f: Family) -> Cidr {
        match f {
            Family::V4 => Cidr::host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))),
            Family::V6 => Cidr::host(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))),
        }
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
            let o = self.0.octets();
            return write!(f, "::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
        }
        self.0.fmt(f)
    }
}

// ---- Parsers: text as a user types it → a value, or what is wrong with it. ----

/// Upstream's list split: comma separated, empty items dropped; items are also trimmed.
pub fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// Go's `strconv.ParseBool`, which upstream uses for flags, env vars and pod env.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub fn boolean(s: &str) -> Result<bool, Problem> {
    parse_bool(s.trim()).ok_or_else(|| "is not a boolean (expected true or false)".into())
}

fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

fn port_item(s: &str) -> Option<Port> {
    digits(s)?.parse::<u16>().ok().and_then(Port::new)
}

pub fn port(s: &str) -> Result<Port, Problem> {
    port_item(s.trim()).ok_or_else(|| "is not a port (expected 1-65535)".into())
}

pub fn ports(s: &str) -> Result<Vec<Port>, Problem> {
    items(s)
        .map(port_item)
        .collect::<Option<_>>()
        .ok_or_else(|| "is not a port list (expected 1-65535, comma separated)".into())
}

/// `-b`: all ports, a list, or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundPorts {
    All,
    List(Vec<Port>),
}

impl InboundPorts {
    pub fn is_empty(&self) -> bool {
        matches!(self, InboundPorts::List(l) if l.is_empty())
    }
}

pub fn inbound_ports(s: &str) -> Result<InboundPorts, Problem> {
    if s.trim() == "*" {
        return Ok(InboundPorts::All);
    }
    items(s)
        .map(port_item)
        .collect::<Option<_>>()
        .map(InboundPorts::List)
        .ok_or_else(|| {
            "is not a port list (expected \"*\" or ports 1-65535, comma separated)".into()
        })
}

fn id(s: &str) -> Option<u32> {
    digits(s)?.parse().ok()
}

/// Numeric uids, at least one.
pub fn uids(s: &str) -> Result<Vec<Uid>, Problem> {
    match items(s).map(|i| id(i).map(Uid)).collect::<Option<Vec<_>>>() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err("is not a uid list (expected numeric uids, comma separated)".into()),
    }
}

/// Numeric gids, at least one.
pub fn gids(s: &str) -> Result<Vec<Group>, Problem> {
    match items(s)
        .map(|i| id(i).map(Group::Id))
        .collect::<Option<Vec<_>>>()
    {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err("is not a gid list (expected numeric gids, comma separated)".into()),
    }
}

/// Group names or numeric gids.
pub fn groups(s: &str) -> Result<Vec<Group>, Problem> {
    items(s)
        .map(|i| {
            id(i)
                .map(Group::Id)
                .or_else(|| GroupName::parse(i).map(Group::Name))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            "is not a group list (expected group names or numeric gids, comma separated)".into()
        })
}

/// Upstream's owner-group include list limit.
pub const MAX_OWNER_GROUPS: usize = 64;

/// Owner groups whose outbound traffic is captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerGroups {
    All,
    List(Vec<Group>),
}

pub fn owner_groups(s: &str) -> Result<OwnerGroups, Problem> {
    if s.trim() == "*" {
        return Ok(OwnerGroups::All);
    }
    let list = groups(s)?;
    if list.len() > MAX_OWNER_GROUPS {
        return Err(format!(
            "has {} groups; the number of owner groups whose outgoing traffic is redirected cannot exceed {MAX_OWNER_GROUPS}",
            list.len()
        ));
    }
    Ok(OwnerGroups::List(list))
}

pub fn interfaces(s: &str) -> Result<Vec<IfName>, Problem> {
    items(s)
        .map(|i| {
            IfName::parse(i).map_err(|why| {
                format!(
                    "is not an interface list: {i:?} {why} (expected names of 1-15 characters without whitespace, quotes, '/' or ':', comma separated)"
                )
            })
        })
        .collect()
}

/// `-i` / `-x`: CIDRs split by family; `-i '*'` sets `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cidrs {
    pub all: bool,
    pub v4: Vec<Cidr>,
    pub v6: Vec<Cidr>,
}

impl Cidrs {
    /// Whether any listed prefix has a loopback address (upstream's `HasLoopBackIP`).
    pub fn has_loopback(&self) -> bool {
        self.v4
            .iter()
            .chain(&self.v6)
            .any(|c| c.0.addr().is_loopback())
    }
    pub fn of(&self, f: Family) -> &[Cidr] {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

fn cidr_list(s: &str, allow_all: bool) -> Result<Cidrs, Problem> {
    let mut out = Cidrs::default();
    let v = s.trim();
    if v == "*" {
        if allow_all {
            out.all = true;
            return Ok(out);
        }
        return Err("cannot be \"*\" (expected CIDRs, comma separated)".into());
    }
    let expected = if allow_all {
        "(expected \"*\" or CIDRs, comma separated)"
    } else {
        "(expected CIDRs, comma separated)"
    };
    for item in items(v) {
        let Ok(net) = item.parse::<IpNet>() else {
            let hint = if item.parse::<IpAddr>().is_ok() {
                format!(
                    "is not a CIDR list: {item:?} has no prefix length (write {item}/32 or {item}/128)"
                )
            } else {
                format!("is not a CIDR list: {item:?} is not an address/prefix")
            };
            return Err(format!("{hint} {expected}"));
        };
        match net {
            IpNet::V4(_) => out.v4.push(Cidr(net)),
            IpNet::V6(_) => out.v6.push(Cidr(net)),
        }
    }
    Ok(out)
}

/// `-i`: `*` or CIDRs.
pub fn include_cidrs(s: &str) -> Result<Cidrs, Problem> {
    cidr_list(s, true)
}

/// `-x`: CIDRs.
pub fn exclude_cidrs(s: &str) -> Result<Cidrs, Problem> {
    cidr_list(s, false)
}

/// A number, decimal or `0x` hex.
fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => digits(s)?.parse().ok(),
    }
}

pub fn mark(s: &str) -> Result<Mark, Problem> {
    number(s)
        .and_then(Mark::new)
        .ok_or_else(|| "is not a mark (expected a number 1-4294967295, decimal or 0x hex)".into())
}

pub fn route_table(s: &str) -> Result<RouteTable, Problem> {
    match number(s) {
        Some(253..=255) => Err(
            "is a reserved routing table (default, main, local); expected another number 1-4294967295"
                .into(),
        ),
        Some(t) => {
            RouteTable::new(t).ok_or_else(|| "is not a routing table (expected a number 1-4294967295)".into())
        }
        None => Err("is not a routing table (expected a number 1-4294967295)".into()),
    }
}

/// `VALUE/MASK`: a mark under a mask (`0x539/0xfff`; decimal or `0x` hex each).
pub fn masked_mark(s: &str) -> Result<MaskedMark, Problem> {
    const WHAT: &str = "is not a masked mark (expected VALUE/MASK, decimal or 0x hex, e.g. 0x539/0xfff: a mask that is not 0 and a value other than 0 inside it)";
    let (v, m) = s.trim().split_once('/').ok_or_else(|| WHAT.to_string())?;
    let (v, m) = number(v).zip(number(m)).ok_or_else(|| WHAT.to_string())?;
    MaskedMark::new(v, m).ok_or_else(|| match (v, m) {
        (_, 0) => "has a zero mask, which matches every packet (expected a mask that is not 0)".into(),
        (0, _) => "has a zero value, which every unmarked packet has (expected a value other than 0)".into(),
        _ => format!(
            "has bits outside its mask ({v:#x} & !{m:#x} = {:#x}); expected a value inside the mask",
            v & !m
        ),
    })
}

/// An `ip rule` preference: 1-32765.
pub fn rule_priority(s: &str) -> Result<RulePriority, Problem> {
    number(s).and_then(RulePriority::new).ok_or_else(|| {
        "is not a rule preference before the main table's (expected 1-32765: 0 is the local table's rule, 32766 and 32767 are main's and default's, after which main routes marked packets first)".into()
    })
}

/// A unicast address of one family that a packet can carry as its source (SNAT's
/// `--to-source`): not unspecified, loopback or multicast (nor broadcast for IPv4), and for
/// IPv6 not an IPv4-mapped address (`::ffff:a.b.c.d`), which is an IPv4 address in IPv6's
/// notation: no IPv6 packet carries it on the wire.
fn unicast(s: &str, v6: bool) -> Result<IpAddr, Problem> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let bad = || {
        format!(
            "is not an {family} unicast address (expected one address, e.g. {})",
            if v6 {
                "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"
            } else {
                "169.254.7.127"
            }
        )
    };
    let a: IpAddr = s.trim().parse().map_err(|_| bad())?;
    let ok = match a {
        IpAddr::V4(a) if !v6 => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) if v6 => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.to_ipv4_mapped().is_some())
        }
        _ => false,
    };
    if ok { Ok(a) } else { Err(bad()) }
}

/// An IPv4 unicast address.
pub fn ipv4_unicast(s: &str) -> Result<IpAddr, Problem> {
    unicast(s, false)
}

/// An IPv6 unicast address.
pub fn ipv6_unicast(s: &str) -> Result<IpAddr, Problem> {
    unicast(s, true)
}

/// A boolean that may be left unset (empty): `None`, else Go's `strconv.ParseBool`.
pub fn optional_boolean(s: &str) -> Result<Option<bool>, Problem> {
    match s.trim() {
        "" => Ok(None),
        t => parse_bool(t)
            .map(Some)
            .ok_or_else(|| "is not a boolean (expected true or false, or empty for unset)".into()),
    }
}

/// Inbound interception mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum InterceptMode {
    #[serde(rename = "REDIRECT")]
    Redirect,
    #[serde(rename = "TPROXY")]
    Tproxy,
}

pub fn intercept_mode(s: &str) -> Result<InterceptMode, Problem> {
    match s.trim() {
        "" | "REDIRECT" => Ok(InterceptMode::Redirect),
        "TPROXY" => Ok(InterceptMode::Tproxy),
        _ => Err("is not an interception mode (expected REDIRECT or TPROXY, upper case)".into()),
    }
}

/// Go's `time.ParseDuration`, for the units that make sense here.
pub fn duration(s: &str) -> Result<Duration, Problem> {
    go_duration(s).ok_or_else(|| "is not a duration (expected e.g. 5s, 500ms, 1m)".into())
}

fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let (mut rest, mut total) = (s, 0f64);
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Which iptables variant to force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XtablesVariant {
    Legacy,
    Nft,
}

pub fn variant(s: &str) -> Result<Option<XtablesVariant>, Problem> {
    match s.trim() {
        "" => Ok(None),
        "legacy" => Ok(Some(XtablesVariant::Legacy)),
        "nft" => Ok(Some(XtablesVariant::Nft)),
        _ => Err("is not an iptables variant (expected legacy or nft)".into()),
    }
}

/// `--enable-ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Setting {
    Auto,
    On,
    Off,
}

pub fn ipv6_setting(s: &str) -> Result<Ipv6Setting, Problem> {
    match s.trim() {
        "auto" | "" => Ok(Ipv6Setting::Auto),
        "true" => Ok(Ipv6Setting::On),
        "false" => Ok(Ipv6Setting::Off),
        _ => Err("is not an IPv6 setting (expected auto, true or false)".into()),
    }
}

pub fn addresses(s: &str) -> Result<Vec<IpAddr>, Problem> {
    items(s)
        .map(|i| i.parse().ok())
        .collect::<Option<_>>()
        .ok_or_else(|| "is not an address list (expected IP addresses, comma separated)".into())
}

pub fn loopback_cidr(s: &str) -> Result<Cidr, Problem> {
    match s.trim().parse::<Ipv4Net>() {
        Ok(n) if n.addr().is_loopback() && (8..=32).contains(&n.prefix_len()) => {
            Ok(Cidr(IpNet::V4(n)))
        }
        _ => Err(
            "is not an IPv4 loopback CIDR (expected 127.x.x.x with a prefix length from /8 to /32)"
                .into(),
        ),
    }
}

/// Dry-run output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// iptables-restore text, or with native nftables the nft transaction.
    Text,
    /// The plan as JSON.
    Json,
}

pub fn output_format(s: &str) -> Result<OutputFormat, Problem> {
    match s.trim() {
        "text" => Ok(OutputFormat::Text),
        "json" => Ok(OutputFormat::Json),
        _ => Err("is not an output format (expected text or json)".into()),
    }
}

/// A path: anything without a NUL or newline (empty means unset where that makes sense).
pub fn path(s: &str) -> Result<String, Problem> {
    if s.contains(['\n', '\0']) {
        Err("is not a path".into())
    } else {
        Ok(s.to_string())
    }
}

/// Values accepted for compatibility and ignored.
pub fn anything(s: &str) -> Result<String, Problem> {
    Ok(s.to_string())
}

/// Upstream's log level syntax, checked: `LEVEL` or `SCOPE:LEVEL,...`.
pub fn log_level(s: &str) -> Result<crate::logging::Level, Problem> {
    crate::logging::parse_level(s).ok_or_else(|| {
        "is not a log level (expected LEVEL or SCOPE:LEVEL,... with debug, info, warn, error, fatal or none)"
            .into()
    })
}

/// An absolute path (a directory or file the installer works in).
pub fn absolute_path(s: &str) -> Result<std::path::PathBuf, Problem> {
    let p = path(s.trim())?;
    if p.starts_with('/') {
        Ok(p.into())
    } else {
        Err("is not an absolute path".into())
    }
}

/// A file name (no directory part): what the installer names a file it writes.
pub fn file_name(s: &str) -> Result<String, Problem> {
    let s = s.trim();
    if s.is_empty() || s.contains(['/', '\n', '\0']) || s == "." || s == ".." {
        Err("is not a file name (expected a name without /, a newline or NUL)".into())
    } else {
        Ok(s.to_string())
    }
}

/// The extensions a container runtime loads from its CNI configuration directory.
pub const CNI_CONF_EXTENSIONS: [&str; 3] = [".conflist", ".conf", ".json"];

/// A CNI configuration file's name (`--cni-conf-name`): a file name with an extension the
/// runtime loads, or empty (none named).
pub fn conf_file_name(s: &str) -> Result<String, Problem> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(String::new());
    }
    let name = file_name(s)?;
    if CNI_CONF_EXTENSIONS.iter().any(|x| name.ends_with(x)) {
        Ok(name)
    } else {
        Err("is not a CNI configuration file name (expected a name ending .conflist, .conf or .json, without /)".into())
    }
}

/// The plugin's kubeconfig file name: a file name with no extension a runtime would load as a
/// network configuration.
pub fn kubeconfig_file_name(s: &str) -> Result<String, Problem> {
    let name = file_name(s)?;
    if CNI_CONF_EXTENSIONS.iter().any(|x| name.ends_with(x)) {
        Err("ends with an extension the runtime loads as a network (.conflist, .conf, .json): it would be read as one".into())
    } else {
        Ok(name)
    }
}

/// Kubernetes namespace names (DNS-1123 labels), comma separated.
pub fn namespaces(s: &str) -> Result<Vec<String>, Problem> {
    items(s)
        .map(|n| {
            is_dns1123_label(n).then(|| n.to_string()).ok_or_else(|| {
                format!(
                    "{n:?} is not a namespace name (lowercase letters, digits and -, at most 63)"
                )
            })
        })
        .collect()
}

/// A node's name (a DNS-1123 subdomain, as Kubernetes names nodes), or empty.
/// A label key (`LabelKey`), as given: no trimming, since the API server would not trim it.
pub fn label_key(s: &str) -> Result<LabelKey, Problem> {
    LabelKey::parse(s)
}

/// A label value (`LabelValue`), as given.
pub fn label_value(s: &str) -> Result<LabelValue, Problem> {
    LabelValue::parse(s)
}

pub fn optional_node_name(s: &str) -> Result<String, Problem> {
    let n = s.trim();
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if n.is_empty() || (n.len() <= 253 && n.split('.').all(label)) {
        Ok(n.to_string())
    } else {
        Err("is not a node name (lowercase letters, digits, - and ., at most 253)".into())
    }
}

/// `HOST:PORT` to listen on (an IP address, not a name), or empty: off.
pub fn optional_listen_address(s: &str) -> Result<Option<std::net::SocketAddr>, Problem> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| {
        "is not an address to listen on (expected IP:PORT, e.g. 127.0.0.1:15014 or [::1]:15014; empty: off)".into()
    })
}

/// Whole seconds, 0 to a day (0: off).
pub fn seconds(s: &str) -> Result<u64, Problem> {
    match s.trim().parse::<u64>() {
        Ok(n) if n <= 86_400 => Ok(n),
        _ => Err("is not a number of seconds (expected 0 to 86400; 0 turns it off)".into()),
    }
}

/// One Kubernetes namespace name (a DNS-1123 label).
pub fn namespace_name(s: &str) -> Result<String, Problem> {
    let n = s.trim();
    if is_dns1123_label(n) {
        Ok(n.to_string())
    } else {
        Err("is not a namespace name (lowercase letters, digits and -, at most 63)".into())
    }
}

/// A JSON object (settings for the chained plugin entry).
pub fn json_object(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, Problem> {
    if s.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("is not a JSON object".into()),
        Err(e) => Err(format!("is not JSON ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_are_what_the_api_server_accepts() {
        for ok in [
            "cni.istio.io/uninitialized",
            "broken",
            "a",
            "A_b.c-9",
            &format!("{}/{}", "a".repeat(63), "n".repeat(63)),
        ] {
            assert!(LabelKey::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "bad key",
            "-x",
            "x-",
            "Upper.Case/x",
            "a/b/c",
            "x\"y",
            &"n".repeat(64),
            &format!("{}/x", "a".repeat(254)),
        ] {
            assert!(LabelKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_are_what_the_api_server_accepts() {
        for ok in ["", "true", "A.b_c-9"] {
            assert!(LabelValue::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [" true", "a/b", "-x", "x\n", &"v".repeat(64)] {
            assert!(LabelValue::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_names_are_dns_1123() {
        for ok in ["shop", "a", "kube-system", &"a".repeat(63)] {
            assert!(NamespaceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Shop",
            "a/b",
            "..",
            "a.b",
            "-a",
            "a-",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(NamespaceName::parse(bad).is_err(), "{bad:?}");
        }
        let long_part = "b".repeat(100);
        for ok in [
            "cart",
            "cart-7d9f8-x2x",
            "a.b.c",
            long_part.as_str(),
            &"a".repeat(253),
        ] {
            assert!(PodName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Cart",
            "a/b",
            "..",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-.b",
            "a b",
            &"a".repeat(254),
        ] {
            assert!(PodName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_values_cannot_be_built() {
        assert_eq!(Port::new(0), None);
        assert_eq!(Mark::new(0), None);
        for t in [0, 253, 254, 255] {
            assert_eq!(RouteTable::new(t), None, "{t}");
        }
        assert!(IfName::parse("averyveryverylong").is_err());
        assert!(IfName::parse("eth0\"").is_err());
        assert!(IfName::parse("-i").is_err());
        assert!(GroupName::parse(&"g".repeat(33)).is_none());
        assert!(GroupName::parse("bad group").is_none());
        assert!(GroupName::parse("1abc").is_none());
    }

    #[test]
    fn lists_are_trimmed_and_empty_items_dropped() {
        assert_eq!(
            ports(" 80 , 443,").unwrap(),
            [Port::new(80).unwrap(), Port::new(443).unwrap()]
        );
        assert!(ports("80;rm").is_err());
        assert_eq!(inbound_ports(" * ").unwrap(), InboundPorts::All);
        assert!(inbound_ports("*,80").is_err());
        let c = include_cidrs(" 10.0.0.0/8 , fd00::/8 ,").unwrap();
        assert_eq!((c.v4.len(), c.v6.len(), c.all), (1, 1, false));
        assert!(exclude_cidrs("*").is_err());
        assert!(
            include_cidrs("10.0.0.1")
                .unwrap_err()
                .contains("10.0.0.1/32")
        );
    }

    #[test]
    fn masked_marks_priorities_and_unicast_addresses() {
        let m = masked_mark("0x539/0xfff").unwrap();
        assert_eq!((m.value(), m.mask()), (0x539, 0xfff));
        assert_eq!(m.to_string(), "0x539/0xfff");
        assert_eq!(masked_mark("1337/4095").unwrap(), m);
        assert!(masked_mark("0x1539/0xfff").unwrap_err().contains("outside"));
        assert!(masked_mark("0x539/0").unwrap_err().contains("zero mask"));
        assert!(masked_mark("0/0xfff").unwrap_err().contains("zero value"));
        assert!(masked_mark("0x539").is_err());
        assert!(masked_mark("0x539/0xfff/1").is_err());
        assert_eq!(m.apply(0x1234_5000), 0x1234_5539);
        assert!(m.matches(0x7000_0539) && !m.matches(0x538));
        assert_eq!(rule_priority("32764").unwrap().get(), 32764);
        for bad in ["0", "32766", "32767", "-1", "x"] {
            assert!(rule_priority(bad).is_err(), "{bad}");
        }
        assert!(ipv4_unicast("169.254.7.127").is_ok());
        for bad in [
            "::1",
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "1.2.3.4/32",
        ] {
            assert!(ipv4_unicast(bad).is_err(), "{bad}");
        }
        assert!(ipv6_unicast("fd16:9254:7127:1337:ffff:ffff:ffff:ffff").is_ok());
        for bad in ["169.254.7.127", "::", "::1", "ff02::1"] {
            assert!(ipv6_unicast(bad).is_err(), "{bad}");
        }
        assert_eq!(optional_boolean(" ").unwrap(), None);
        assert_eq!(optional_boolean("False").unwrap(), Some(false));
        assert!(optional_boolean("tweedledum").is_err());
    }

    #[test]
    fn numbers_marks_tables_and_durations() {
        assert_eq!(mark("0x539").unwrap(), Mark::new(1337).unwrap());
        assert!(mark("0").is_err());
        assert!(route_table("254").unwrap_err().contains("reserved"));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("5 seconds").is_err());
        assert!(owner_groups(&"1,".repeat(65)).unwrap_err().contains("64"));
    }

    #[test]
    fn ipv6_text_as_istio_prints_it() {
        let c = Cidr("::127.0.0.53/128".parse().unwrap());
        assert_eq!(c.to_string(), "::127.0.0.53/128");
        assert_eq!(Cidr::passthrough(Family::V6).to_string(), "::6/128");
    }
}
