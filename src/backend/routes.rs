//! TPROXY policy routing over rtnetlink (no `ip` binary), used by both backends:
//! `fwmark MARK lookup TABLE` rules and a `local default dev lo` route in TABLE per family,
//! plus `::6/128` on `lo` when IPv6 is on (Envoy binds it for inbound passthrough).
//! Idempotent, unlike upstream: an existing rule, route or address is success, so a rerun
//! converges instead of failing with EEXIST.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_CREATE, NLM_F_EXCL, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::netlink::transport::Transport;
use crate::plan::{Family, Mark, Plan, RouteTable, TproxyRoutes};

/// The loopback interface's index, the same in every network namespace.
const LO_INDEX: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("TPROXY routing: rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("TPROXY routing: {what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn af(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn fam_flag(f: Family) -> &'static str {
    match f {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

/// A request's bytes (the transport sets flags and sequence number).
fn bytes(msg: RouteNetlinkMessage) -> Vec<u8> {
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

/// The rtnetlink messages of a dump.
fn parse_all(msgs: Vec<Vec<u8>>) -> Vec<RouteNetlinkMessage> {
    msgs.iter()
        .filter_map(|m| NetlinkMessage::<RouteNetlinkMessage>::deserialize(m).ok())
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(inner) => Some(inner),
            _ => None,
        })
        .collect()
}

struct Rtnl {
    t: Transport,
}

impl Rtnl {
    fn open() -> Result<Rtnl, RouteError> {
        Ok(Rtnl {
            t: Transport::route().map_err(RouteError::Socket)?,
        })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Result<(), Errno>> {
        self.t.acked(bytes(msg), flags)
    }

    /// Whether a `fwmark MARK lookup TABLE` rule exists in family `f`. The kernel's
    /// NLM_F_EXCL check does not catch it (the auto-assigned priority differs), so look.
    fn rule_exists(&mut self, f: Family, mark: Mark, table: RouteTable) -> io::Result<bool> {
        let mut req = RuleMessage::default();
        req.header.family = af(f);
        let found = self
            .t
            .dump(bytes(RouteNetlinkMessage::GetRule(req)))?
            .map_err(io::Error::from)?;
        Ok(parse_all(found).iter().any(|m| match m {
            RouteNetlinkMessage::NewRule(r) => {
                let has_mark = r.attributes.contains(&RuleAttribute::FwMark(mark.get()));
                let in_table = r.attributes.contains(&RuleAttribute::Table(table.get()))
                    || u32::from(r.header.table) == table.get();
                let masked = r
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::FwMask(m) if *m != u32::MAX));
                has_mark && in_table && !masked
            }
            _ => false,
        }))
    }
}

fn rule_msg(f: Family, mark: Mark, table: RouteTable) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = af(f);
    m.header.action = RuleAction::ToTable;
    m.header.table = u8::try_from(table.get()).unwrap_or(0);
    m.attributes.push(RuleAttribute::FwMark(mark.get()));
    m.attributes.push(RuleAttribute::Table(table.get()));
    m
}

fn route_msg(f: Family, table: RouteTable) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = af(f);
    m.header.destination_prefix_length = 0;
    m.header.table = u8::try_from(table.get()).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Host;
    m.header.kind = RouteType::Local;
    m.attributes.push(RouteAttribute::Table(table.get()));
    m.attributes.push(RouteAttribute::Oif(LO_INDEX));
    m
}

fn addr_msg() -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    m.header.prefix_len = 128;
    m.header.scope = AddressScope::Host;
    m.header.index = LO_INDEX;
    let six = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));
    m.attributes.push(AddressAttribute::Address(six));
    m
}

fn kernel(what: String) -> impl FnOnce(io::Error) -> RouteError {
    move |source| RouteError::Kernel { what, source }
}

/// Adds, treating "already there" as success; returns whether something was added.
fn add(rtnl: &mut Rtnl, msg: RouteNetlinkMessage, what: String) -> Result<bool, RouteError> {
    match rtnl
        .request(msg, NLM_F_CREATE | NLM_F_EXCL)
        .map_err(kernel(what.clone()))?
    {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        // A pod's runtime brings `lo` up before any init container or chained plugin runs;
        // a bare namespace (`ip netns add`) has it down, and IPv6 refuses routes through it.
        Err(e @ Errno::ENETDOWN) => Err(kernel(format!(
            "{what} (the loopback interface is down; bring it up first: ip link set lo up)"
        ))(e.into())),
        Err(e) => Err(kernel(what)(e.into())),
    }
}

/// Deletes, treating "not there" as success; returns whether something was removed.
fn del(rtnl: &mut Rtnl, msg: RouteNetlinkMessage, what: String) -> Result<bool, RouteError> {
    match rtnl.request(msg, 0).map_err(kernel(what.clone()))? {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(kernel(what)(e.into())),
    }
}

/// The `ip` command that adds a family's fwmark rule: how messages name it.
fn rule_add_text(f: Family, r: &TproxyRoutes) -> String {
    format!(
        "ip {} rule add fwmark {} lookup {}",
        fam_flag(f),
        r.mark,
        r.table
    )
}

/// Installs what the plan needs; returns how many objects were newly added.
pub fn apply(plan: &Plan) -> Result<usize, RouteError> {
    if plan.routes.is_none() && !plan.loopback_v6_address {
        return Ok(0);
    }
    let mut rtnl = Rtnl::open()?;
    let mut added = 0;
    if plan.loopback_v6_address {
        let what = "ip -6 addr add ::6/128 dev lo".to_string();
        let msg = RouteNetlinkMessage::NewAddress(addr_msg());
        added += usize::from(add(&mut rtnl, msg, what)?);
    }
    if let Some(r) = &plan.routes {
        for f in &r.families {
            let what = rule_add_text(*f, r);
            let exists = rtnl
                .rule_exists(*f, r.mark, r.table)
                .map_err(kernel(what.clone()))?;
            if !exists {
                let msg = RouteNetlinkMessage::NewRule(rule_msg(*f, r.mark, r.table));
                added += usize::from(add(&mut rtnl, msg, what)?);
            }
            let what = format!(
                "ip {} route add local default dev lo table {}",
                fam_flag(*f),
                r.table
            );
            let msg = RouteNetlinkMessage::NewRoute(route_msg(*f, r.table));
            added += usize::from(add(&mut rtnl, msg, what)?);
        }
    }
    Ok(added)
}

/// What the plan's routing needs and the kernel does not hold: each family's fwmark rule,
/// described as the `ip` command that would add it.
pub fn missing(plan: &Plan) -> Result<Vec<String>, RouteError> {
    let Some(r) = &plan.routes else {
        return Ok(Vec::new());
    };
    let mut rtnl = Rtnl::open()?;
    let mut out = Vec::new();
    for f in &r.families {
        let what = rule_add_text(*f, r);
        if !rtnl
            .rule_exists(*f, r.mark, r.table)
            .map_err(kernel(what.clone()))?
        {
            out.push(format!("missing: {what}"));
        }
    }
    Ok(out)
}

/// Removes the TPROXY rules and routes for `mark`/`table` in both families (every copy of
/// the rule, since upstream reruns could leave several) and `::6/128` on `lo`. Returns
/// descriptions of what was removed.
pub fn clean(mark: Mark, table: RouteTable) -> Result<Vec<String>, RouteError> {
    let mut rtnl = Rtnl::open()?;
    let mut removed = Vec::new();
    for f in Family::BOTH {
        let what = format!("ip {} rule del fwmark {mark} lookup {table}", fam_flag(f));
        for _ in 0..64 {
            let msg = RouteNetlinkMessage::DelRule(rule_msg(f, mark, table));
            if !del(&mut rtnl, msg, what.clone())? {
                break;
            }
            removed.push(what.clone());
        }
        let what = format!(
            "ip {} route del local default dev lo table {table}",
            fam_flag(f)
        );
        let msg = RouteNetlinkMessage::DelRoute(route_msg(f, table));
        if del(&mut rtnl, msg, what.clone())? {
            removed.push(what);
        }
    }
    let what = "ip -6 addr del ::6/128 dev lo".to_string();
    if del(
        &mut rtnl,
        RouteNetlinkMessage::DelAddress(addr_msg()),
        what.clone(),
    )? {
        removed.push(what);
    }
    Ok(removed)
}

impl From<RouteError> for super::BackendError {
    fn from(e: RouteError) -> Self {
        super::BackendError::Failed(Box::new(e))
    }
}
