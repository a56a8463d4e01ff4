//! Policy routing over rtnetlink (no `ip` binary), used by both backends and every scheme,
//! from the plan's data (`MarkRule`, `PolicyRoutes`): a `fwmark MARK[/MASK] [pref P] lookup
//! TABLE` rule and a `local default dev lo` route in TABLE per family (Istio's TPROXY, Istio
//! ambient's connmark), plus `::6/128` on `lo` when the plan asks (Istio's sidecar with IPv6:
//! Envoy binds it for inbound passthrough).
//!
//! Ours is exactly what we create: a rule with our mark and mask, our table, our preference
//! when the scheme names one, and no other selector; a `local` default route through `lo` in
//! our table. Anything else in our table is a conflict (it would route marked packets away
//! instead of delivering them locally): apply and check fail naming it, `--reconcile`
//! replaces it, and clean leaves it and says so. Deletions are built from what the kernel
//! dumped, so they match one object exactly.
//!
//! Idempotent, unlike upstream: what is already there is success, so a rerun converges. What
//! an apply added is returned, so a run whose rules then fail can take it back out.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_CREATE, NLM_F_EXCL, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::nl::LO_INDEX;
use super::nl::transport::Transport;
use crate::plan::{Family, MarkRule, Ownership, Plan, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("policy routing: rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("policy routing: {what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "policy routing: table {table} holds routes that are not ours and would send marked packets elsewhere: {}; nothing was changed. Remove them, or rerun with --reconcile to replace them",
        routes.join("; ")
    )]
    Conflict {
        table: RouteTable,
        routes: Vec<String>,
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

/// One routing object, as the kernel holds it: what deleting it takes and how to name it.
#[derive(Debug, Clone)]
pub enum Object {
    Rule(Family, RuleMessage),
    Route(Family, RouteMessage),
    LoopbackV6,
}

impl Object {
    /// The `ip` command that adds it, for messages.
    pub fn describe(&self) -> String {
        match self {
            Object::Rule(f, r) => format!("ip {} rule {}", fam_flag(*f), rule_text(r)),
            Object::Route(f, r) => format!("ip {} route {}", fam_flag(*f), route_text(r)),
            Object::LoopbackV6 => "ip -6 addr ::6/128 dev lo".to_string(),
        }
    }

    fn delete(&self) -> RouteNetlinkMessage {
        match self {
            Object::Rule(_, r) => RouteNetlinkMessage::DelRule(r.clone()),
            Object::Route(_, r) => RouteNetlinkMessage::DelRoute(r.clone()),
            Object::LoopbackV6 => RouteNetlinkMessage::DelAddress(addr_msg()),
        }
    }
}

fn rule_text(r: &RuleMessage) -> String {
    let mut s = String::new();
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => s += &format!("pref {p} "),
            RuleAttribute::FwMark(m) => {
                let mask = r.attributes.iter().find_map(|a| match a {
                    RuleAttribute::FwMask(k) if *k != u32::MAX => Some(*k),
                    _ => None,
                });
                s += &match mask {
                    Some(k) => format!("fwmark {m:#x}/{k:#x} "),
                    None => format!("fwmark {m:#x} "),
                };
            }
            RuleAttribute::Iifname(n) => s += &format!("iif {n} "),
            RuleAttribute::Oifname(n) => s += &format!("oif {n} "),
            RuleAttribute::Source(a) => s += &format!("from {a}/{} ", r.header.src_len),
            RuleAttribute::Destination(a) => s += &format!("to {a}/{} ", r.header.dst_len),
            _ => {}
        }
    }
    s + &format!("lookup {}", rule_table(r))
}

fn rule_table(r: &RuleMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn addr_text(a: &RouteAddress) -> String {
    match a {
        RouteAddress::Inet(a) => a.to_string(),
        RouteAddress::Inet6(a) => a.to_string(),
        other => format!("{other:?}"),
    }
}

fn route_text(r: &RouteMessage) -> String {
    let kind = match r.header.kind {
        RouteType::Unicast => String::new(),
        other => format!("{other:?} ").to_lowercase(),
    };
    let mut dst = "default".to_string();
    let mut rest = String::new();
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                dst = format!("{}/{}", addr_text(d), r.header.destination_prefix_length)
            }
            RouteAttribute::Gateway(g) => rest += &format!(" via {}", addr_text(g)),
            RouteAttribute::Oif(LO_INDEX) => rest += " dev lo",
            RouteAttribute::Oif(i) => rest += &format!(" dev #{i}"),
            RouteAttribute::Priority(p) => rest += &format!(" metric {p}"),
            _ => {}
        }
    }
    format!("{kind}{dst}{rest} table {}", route_table(r))
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// Exactly the rule we create: our mark with our mask (the kernel reports an all-ones mask
/// too, or none), our table, our preference when we name one, no other selector.
fn rule_is_ours(r: &RuleMessage, want: &MarkRule) -> bool {
    let exact_attrs = r.attributes.iter().all(|a| match a {
        RuleAttribute::FwMark(m) => *m == want.mark.get(),
        RuleAttribute::FwMask(m) => *m == want.mask,
        RuleAttribute::Table(t) => *t == want.table.get(),
        RuleAttribute::SuppressPrefixLen(v) | RuleAttribute::SuppressIfGroup(v) => *v == u32::MAX,
        RuleAttribute::Priority(p) => want.priority.is_none_or(|w| w.get() == *p),
        RuleAttribute::Protocol(_) => true,
        _ => false,
    });
    let masked = want.mask == u32::MAX || r.attributes.contains(&RuleAttribute::FwMask(want.mask));
    let placed = want
        .priority
        .is_none_or(|p| r.attributes.contains(&RuleAttribute::Priority(p.get())));
    exact_attrs
        && masked
        && placed
        && r.header.action == RuleAction::ToTable
        && r.header.src_len == 0
        && r.header.dst_len == 0
        && r.header.tos == 0
        && r.attributes
            .contains(&RuleAttribute::FwMark(want.mark.get()))
        && rule_table(r) == want.table.get()
}

/// Exactly the route we create: `local default dev lo`.
fn route_is_ours(r: &RouteMessage) -> bool {
    r.header.kind == RouteType::Local
        && r.header.destination_prefix_length == 0
        && r.header.source_prefix_length == 0
        && r.attributes.contains(&RouteAttribute::Oif(LO_INDEX))
        && !r.attributes.iter().any(|a| {
            matches!(
                a,
                RouteAttribute::Gateway(_)
                    | RouteAttribute::MultiPath(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Encap(_)
                    | RouteAttribute::NhId(_)
            )
        })
}

/// `ip rule add fwmark MARK[/MASK] [pref P] lookup TABLE`, as `ip` sends it.
fn rule_msg(f: Family, want: &MarkRule) -> RuleMessage {
    let table = want.table;
    let mut m = RuleMessage::default();
    m.header.family = af(f);
    m.header.action = RuleAction::ToTable;
    m.header.table = u8::try_from(table.get()).unwrap_or(0);
    if let Some(p) = want.priority {
        m.attributes.push(RuleAttribute::Priority(p.get()));
    }
    m.attributes.push(RuleAttribute::FwMark(want.mark.get()));
    if want.mask != u32::MAX {
        m.attributes.push(RuleAttribute::FwMask(want.mask));
    }
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

/// What one family holds of interest: our rules, and the routes of our table split into
/// ours and the others.
struct Seen {
    rules: Vec<Object>,
    ours: Vec<Object>,
    foreign: Vec<Object>,
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

    fn dump(
        &mut self,
        req: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, RouteError> {
        let found = self
            .t
            .dump(bytes(req))
            .and_then(|r| r.map_err(io::Error::from))
            .map_err(kernel(format!("reading {what}")))?;
        Ok(parse_all(found))
    }

    /// Our rules (`want`) and the routes of its table, in family `f`.
    fn look(&mut self, f: Family, want: &MarkRule) -> Result<Seen, RouteError> {
        let table = want.table;
        let mut req = RuleMessage::default();
        req.header.family = af(f);
        let rules = self
            .dump(RouteNetlinkMessage::GetRule(req), "the routing rules")?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) if rule_is_ours(&r, want) => {
                    Some(Object::Rule(f, r))
                }
                _ => None,
            })
            .collect();
        let mut req = RouteMessage::default();
        req.header.address_family = af(f);
        let (mut ours, mut foreign) = (Vec::new(), Vec::new());
        for m in self.dump(RouteNetlinkMessage::GetRoute(req), "the routes")? {
            if let RouteNetlinkMessage::NewRoute(r) = m
                && route_table(&r) == table.get()
            {
                if route_is_ours(&r) {
                    ours.push(Object::Route(f, r));
                } else {
                    foreign.push(Object::Route(f, r));
                }
            }
        }
        Ok(Seen {
            rules,
            ours,
            foreign,
        })
    }

    /// Whether `::6/128` is on `lo`.
    fn has_loopback_v6(&mut self) -> Result<bool, RouteError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet6;
        let six = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));
        Ok(self
            .dump(RouteNetlinkMessage::GetAddress(req), "the addresses")?
            .iter()
            .any(|m| {
                matches!(m, RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == LO_INDEX
                        && a.header.prefix_len == 128
                        && a.attributes.contains(&AddressAttribute::Address(six)))
            }))
    }

    /// Adds; "already there" is success. Returns whether something was added.
    fn add(&mut self, msg: RouteNetlinkMessage, what: String) -> Result<bool, RouteError> {
        match self
            .t
            .acked(bytes(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(kernel(what.clone()))?
        {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            // A pod's runtime brings `lo` up before any init container or chained plugin
            // runs; a bare namespace (`ip netns add`) has it down, and IPv6 refuses routes
            // through it.
            Err(e @ Errno::ENETDOWN) => Err(kernel(format!(
                "{what} (the loopback interface is down; bring it up first: ip link set lo up)"
            ))(e.into())),
            Err(e) => Err(kernel(what)(e.into())),
        }
    }

    /// Deletes one object; "not there" is success. Returns whether something was removed.
    fn delete(&mut self, o: &Object) -> Result<bool, RouteError> {
        let what = format!("deleting {}", o.describe());
        match self
            .t
            .acked(bytes(o.delete()), 0)
            .map_err(kernel(what.clone()))?
        {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(kernel(what)(e.into())),
        }
    }
}

/// Installs what the plan needs, before the rules that mark packets for it. Routes of our
/// table that are not ours fail the apply before anything changes, unless `reconcile`
/// (then they are deleted first). Returns what this run added, for `undo`.
pub fn apply(plan: &Plan, reconcile: bool) -> Result<Vec<Object>, RouteError> {
    if plan.routes.is_none() && !plan.loopback_v6_address {
        return Ok(Vec::new());
    }
    let mut rtnl = Rtnl::open()?;
    let mut added = Vec::new();
    let mut seen = Vec::new();
    if let Some(r) = &plan.routes {
        for f in &r.families {
            seen.push((*f, rtnl.look(*f, &r.rule)?));
        }
        let foreign: Vec<&Object> = seen.iter().flat_map(|(_, s)| &s.foreign).collect();
        if !foreign.is_empty() && !reconcile {
            return Err(RouteError::Conflict {
                table: r.rule.table,
                routes: foreign.iter().map(|o| o.describe()).collect(),
            });
        }
        for o in foreign {
            rtnl.delete(o)?;
            crate::logging::info(&format!("replaced (--reconcile): {}", o.describe()));
        }
    }
    if plan.loopback_v6_address
        && rtnl.add(
            RouteNetlinkMessage::NewAddress(addr_msg()),
            "ip -6 addr add ::6/128 dev lo".into(),
        )?
    {
        added.push(Object::LoopbackV6);
    }
    if let Some(r) = &plan.routes {
        for (f, s) in &seen {
            if s.ours.is_empty() {
                let m = route_msg(*f, r.rule.table);
                let o = Object::Route(*f, m.clone());
                if rtnl.add(
                    RouteNetlinkMessage::NewRoute(m),
                    format!("adding {}", o.describe()),
                )? {
                    added.push(o);
                }
            }
            if s.rules.is_empty() {
                let m = rule_msg(*f, &r.rule);
                let o = Object::Rule(*f, m.clone());
                if rtnl.add(
                    RouteNetlinkMessage::NewRule(m),
                    format!("adding {}", o.describe()),
                )? {
                    added.push(o);
                }
            }
        }
    }
    Ok(added)
}

/// Takes out what `apply` added (an apply whose rules then failed changes nothing).
pub fn undo(added: &[Object]) -> Result<(), RouteError> {
    if added.is_empty() {
        return Ok(());
    }
    let mut rtnl = Rtnl::open()?;
    // Rules first: a rule never points at a table this run emptied.
    for o in added.iter().rev() {
        rtnl.delete(o)?;
    }
    Ok(())
}

/// Removes our routing the plan does not use (TPROXY routing after a switch to REDIRECT, a
/// family no longer captured, `::6` when IPv6 is off), after the new rules are in: nothing
/// marks packets for it any more. Returns what was removed.
pub fn retire(plan: &Plan) -> Result<Vec<String>, RouteError> {
    let ours = &plan.ours;
    let kept: &[Family] = plan.routes.as_ref().map_or(&[], |r| &r.families);
    let Some(rule) = &ours.rule else {
        return Ok(Vec::new());
    };
    let mut rtnl = Rtnl::open()?;
    let mut removed = Vec::new();
    for f in Family::BOTH.into_iter().filter(|f| !kept.contains(f)) {
        let s = rtnl.look(f, rule)?;
        for o in s.rules.iter().chain(&s.ours) {
            if rtnl.delete(o)? {
                removed.push(o.describe());
            }
        }
    }
    // `::6` is only ours to retire when the scheme makes it.
    if ours.loopback_v6
        && !plan.loopback_v6_address
        && rtnl.has_loopback_v6()?
        && rtnl.delete(&Object::LoopbackV6)?
    {
        removed.push(Object::LoopbackV6.describe());
    }
    Ok(removed)
}

/// What differs from the plan's routing: each missing object as the `ip` command that adds
/// it, each conflicting route as what it is.
pub fn drift(plan: &Plan) -> Result<Vec<String>, RouteError> {
    let mut out = Vec::new();
    if plan.routes.is_none() && !plan.loopback_v6_address {
        return Ok(out);
    }
    let mut rtnl = Rtnl::open()?;
    if plan.loopback_v6_address && !rtnl.has_loopback_v6()? {
        out.push("missing: ip -6 addr add ::6/128 dev lo".to_string());
    }
    let Some(r) = &plan.routes else {
        return Ok(out);
    };
    for f in &r.families {
        let s = rtnl.look(*f, &r.rule)?;
        if s.rules.is_empty() {
            let o = Object::Rule(*f, rule_msg(*f, &r.rule));
            out.push(format!("missing: {}", o.describe()));
        }
        if s.ours.is_empty() {
            let o = Object::Route(*f, route_msg(*f, r.rule.table));
            out.push(format!("missing: {}", o.describe()));
        }
        for o in s.foreign {
            out.push(format!("not ours: {}", o.describe()));
        }
    }
    Ok(out)
}

/// Removes the scheme's rules (every copy: upstream reruns could leave several) and our
/// route in both families, then `::6/128` on `lo` when it is the scheme's, after the rules
/// that used them. Routes of the table that are not ours stay, with a warning. Returns what
/// was removed.
pub fn clean(ours: &Ownership) -> Result<Vec<String>, RouteError> {
    let mut rtnl = Rtnl::open()?;
    let mut removed = Vec::new();
    // A scheme without policy routing owns no rule (nor the routes of any table).
    for (f, rule) in Family::BOTH
        .into_iter()
        .flat_map(|f| ours.rule.map(|r| (f, r)))
    {
        let s = rtnl.look(f, &rule)?;
        // Rules before routes: no moment where a rule leads to a table without our route.
        for o in s.rules.iter().chain(&s.ours) {
            if rtnl.delete(o)? {
                removed.push(o.describe());
            }
        }
        for o in &s.foreign {
            crate::logging::warn(&format!("left in place (not ours): {}", o.describe()));
        }
    }
    if ours.loopback_v6 && rtnl.has_loopback_v6()? && rtnl.delete(&Object::LoopbackV6)? {
        removed.push(Object::LoopbackV6.describe());
    }
    Ok(removed)
}

impl From<RouteError> for super::api::BackendError {
    fn from(e: RouteError) -> Self {
        super::api::BackendError::Failed(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::{Mark, RulePriority};

    fn table() -> RouteTable {
        RouteTable::new(133).unwrap()
    }

    fn tproxy() -> MarkRule {
        MarkRule {
            mark: Mark::new(4242).unwrap(),
            mask: u32::MAX,
            table: table(),
            priority: None,
        }
    }

    /// A masked rule with a preference (as Istio ambient's; other values: the backend names
    /// no scheme's).
    fn masked() -> MarkRule {
        MarkRule {
            mark: Mark::new(0x220).unwrap(),
            mask: 0xff0,
            table: RouteTable::new(77).unwrap(),
            priority: RulePriority::new(1000),
        }
    }

    #[test]
    fn our_rule_is_only_the_exact_one() {
        let ours = rule_msg(Family::V4, &tproxy());
        assert!(rule_is_ours(&ours, &tproxy()));
        let mut masked = ours.clone();
        masked.attributes.push(RuleAttribute::FwMask(0xff));
        assert!(!rule_is_ours(&masked, &tproxy()));
        let mut iif = ours.clone();
        iif.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert!(!rule_is_ours(&iif, &tproxy()));
        let other = MarkRule {
            table: RouteTable::new(134).unwrap(),
            ..tproxy()
        };
        assert!(!rule_is_ours(&rule_msg(Family::V4, &other), &tproxy()));
    }

    #[test]
    fn a_masked_rule_with_a_preference_is_ours_only_with_both() {
        let ours = rule_msg(Family::V6, &masked());
        assert!(rule_is_ours(&ours, &masked()));
        assert!(
            ours.attributes.contains(&RuleAttribute::FwMask(0xff0))
                && ours.attributes.contains(&RuleAttribute::Priority(1000))
        );
        let mut elsewhere = ours.clone();
        elsewhere
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::Priority(_)));
        elsewhere.attributes.push(RuleAttribute::Priority(100));
        assert!(!rule_is_ours(&elsewhere, &masked()));
        assert_eq!(
            Object::Rule(Family::V6, ours.clone()).describe(),
            "ip -6 rule pref 1000 fwmark 0x220/0xff0 lookup 77"
        );
        let mut unmasked = ours.clone();
        unmasked
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::FwMask(_)));
        assert!(
            !rule_is_ours(&unmasked, &masked()),
            "fwmark 0x220 is another rule"
        );
        assert!(!rule_is_ours(&ours, &tproxy()));
    }

    #[test]
    fn our_route_is_only_local_default_dev_lo() {
        let ours = route_msg(Family::V6, table());
        assert!(route_is_ours(&ours));
        let mut unreachable = ours.clone();
        unreachable.header.kind = RouteType::Unreachable;
        assert!(!route_is_ours(&unreachable));
        let mut via = route_msg(Family::V4, table());
        via.header.kind = RouteType::Unicast;
        via.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "10.244.1.1".parse().unwrap(),
            )));
        assert!(!route_is_ours(&via));
        assert_eq!(
            Object::Route(Family::V4, via).describe(),
            "ip -4 route default dev lo via 10.244.1.1 table 133"
        );
    }
}
