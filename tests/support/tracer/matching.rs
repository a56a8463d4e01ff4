//! What a packet looks like to a rule (`Headers`), and whether each `Match` holds for it, as
//! the kernel decides: an address or port match never holds for a packet of another family or
//! protocol, negated or not (nft's `ip daddr != X` carries a `meta nfproto ipv4` dependency,
//! `tcp dport != 53` a `meta l4proto tcp` one); owner matches need the sending socket, which
//! only a locally generated packet on its way out has. The two dialects differ in two places,
//! both kernel facts: a negated owner match holds for a packet without a socket in xtables
//! (xt_owner) and never in nft (`meta skuid` breaks), and an xtables interface name ending in
//! `+` is a prefix where nft compares the name exactly.

use std::net::{IpAddr, SocketAddr};

use meshtables::plan::{Cidr, CtState, Family, Group, IfName, Match, Proto};

use crate::support::net;
use crate::support::scenarios::Dialect;

/// The conntrack state of the packet's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// The first packet of a connection.
    New,
    Established,
    Related,
    Invalid,
}

/// The packet as rules see it at one point of its way.
#[derive(Debug, Clone)]
pub struct Headers {
    pub proto: Proto,
    pub src: IpAddr,
    pub dst: SocketAddr,
    pub sport: u16,
    pub iif: Option<&'static str>,
    pub oif: Option<&'static str>,
    /// uid and gid of the sending socket, while the packet has one.
    pub owner: Option<(u32, u32)>,
    pub conn: Conn,
    pub mark: u32,
    pub connmark: u32,
}

impl Headers {
    pub fn family(&self) -> Family {
        net::family(self.dst.ip())
    }
}

fn iface(dialect: Dialect, want: &IfName, got: Option<&str>) -> bool {
    let Some(got) = got else { return false };
    let want = want.as_str();
    match (dialect, want.strip_suffix('+')) {
        (Dialect::Xtables, Some(prefix)) => got.starts_with(prefix),
        _ => got == want,
    }
}

/// An address match: never for an address of the other family, negated or not.
fn address(cidr: &Cidr, addr: IpAddr, negate: bool) -> bool {
    cidr.family() == net::family(addr) && cidr.0.contains(&addr) != negate
}

/// An owner match: `id` of the socket, negated or not.
fn owner(dialect: Dialect, id: Option<u32>, want: u32, negate: bool) -> bool {
    match id {
        Some(id) => (id == want) != negate,
        None => dialect == Dialect::Xtables && negate,
    }
}

fn gid(g: &Group) -> u32 {
    match g {
        Group::Id(id) => *id,
        // Test invariant: config turns names into gids before any plan is built.
        Group::Name(n) => panic!("the plan holds group name {n}, not a gid"),
    }
}

fn state(s: CtState) -> Conn {
    match s {
        CtState::Invalid => Conn::Invalid,
        CtState::Related => Conn::Related,
        CtState::Established => Conn::Established,
    }
}

/// Whether `m` holds for `h`.
pub fn holds(m: &Match, h: &Headers, dialect: Dialect) -> bool {
    let port = |proto: Proto, port: u16, f: &dyn Fn(u16) -> bool| proto == h.proto && f(port);
    match m {
        Match::InIface { name } => iface(dialect, name, h.iif),
        Match::OutIface { name } => iface(dialect, name, h.oif),
        // A packet not yet routed has no output interface: not `lo`, so `!= lo` holds.
        Match::NotOutIface { name } => !iface(dialect, name, h.oif),
        Match::SrcAddr { addr } => h.src == *addr,
        Match::DstAddr { addr } => h.dst.ip() == *addr,
        // `-m tcp` with no option: the protocol is tcp.
        Match::L4Module { proto } => *proto == h.proto,
        Match::Proto { proto } => *proto == h.proto,
        Match::Src { negate, cidr } => address(cidr, h.src, *negate),
        Match::Dst { negate, cidr } => address(cidr, h.dst.ip(), *negate),
        Match::Dport {
            proto,
            negate,
            port: p,
        } => port(*proto, h.dst.port(), &|d| (d == p.get()) != *negate),
        Match::Sport {
            proto,
            negate,
            port: p,
        } => port(*proto, h.sport, &|s| (s == p.get()) != *negate),
        Match::DportsNotIn { proto, ports } => port(*proto, h.dst.port(), &|d| {
            !ports.iter().any(|p| p.get() == d)
        }),
        Match::DportsIn { proto, ports } => port(*proto, h.dst.port(), &|d| {
            ports.iter().any(|p| p.get() == d)
        }),
        Match::DstIn { cidrs } => cidrs.iter().any(|c| address(c, h.dst.ip(), false)),
        Match::Uid { negate, uid } => owner(dialect, h.owner.map(|o| o.0), uid.0, *negate),
        Match::Gid { negate, gid: g } => owner(dialect, h.owner.map(|o| o.1), gid(g), *negate),
        Match::CtState { states } => states.iter().any(|s| state(*s) == h.conn),
        Match::Mark { negate, mark } => (h.mark == mark.get()) != *negate,
        Match::ConnMark { mark } => h.connmark == mark.get(),
        Match::MarkMasked { negate, mark } => mark.matches(h.mark) != *negate,
        Match::ConnMarkMasked { mark } => mark.matches(h.connmark),
        // A packet of a local socket has an owner.
        Match::SocketExists => h.owner.is_some(),
        // The tracer holds no set members (the node's probe sets): nothing is in one.
        Match::DstInSet { .. } => false,
    }
}
