//! `NftPlan` → the operations of one nftables transaction, as data (no I/O).
//!
//! It walks the plan in the same order as `render::nft::transaction`, and spells each match
//! the way `nft` compiles it, so the kernel ends up holding the ruleset that `nft -f` of the
//! dry-run text would install: `meta nfproto` / `meta l4proto` dependencies are added where
//! `nft` adds them implicitly in an `inet` table, byte-aligned prefixes load only the prefix
//! bytes, other prefixes are masked, `!= { a, b }` becomes an inverted lookup in an anonymous
//! set. Two things differ from the text, with the same resulting ruleset: each table is
//! created fresh (so `flush table` is not needed), unless the plan has named sets, whose
//! members are state (then the table is added and flushed, as the text says, and the sets
//! are added, kept when they exist); and `insert ... index N` is resolved here, so every rule
//! is sent as an append in its final position.

use libc::c_int;
use netlink_packet_netfilter::nftables::{Lookup, MetaKey, Register};

pub use crate::backend::nl::expr::LowerError;
use crate::backend::nl::expr::{
    bitwise, bitwise_xor, cmp, counter, ct_load, ct_set, ifname, immediate, meta_load, meta_set,
    payload, verdict,
};
use crate::backend::nl::guard;
pub use crate::backend::nl::sets::AnonSet;
use crate::backend::nl::wire::{
    Expr, NFTA_NAT_FAMILY, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_TYPE, NFTA_REDIR_FLAGS,
    NFTA_REDIR_REG_PROTO_MIN, NFTA_TPROXY_FAMILY, NFTA_TPROXY_REG_PORT, attr, be32,
};
use crate::plan::{
    AddrSet, Chain, Cidr, CtState, Family, Group, Hook, Match, NftPlan, NftRule, Position, Proto,
    TableLayout, Target,
};
use crate::render::nft::{chain_line, rule_line, set_line};

// Kernel constants libc has no name for: linux/netfilter/nf_nat.h and the conntrack state
// bits of nf_conntrack_common.h (`NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`, ...).
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
const NF_CT_STATE_INVALID_BIT: u32 = 1;
const NF_CT_STATE_ESTABLISHED: u32 = 1 << 1;
const NF_CT_STATE_RELATED: u32 = 1 << 2;

// Where `payload` loads a field (its offset in the network or transport header): offsetof()
// in the kernel's struct iphdr, ipv6hdr, tcphdr and udphdr. No header, libc included, names
// these offsets.
const IPV4_SADDR: u32 = 12;
const IPV4_DADDR: u32 = 16;
const IPV6_SADDR: u32 = 8;
const IPV6_DADDR: u32 = 24;
const L4_SPORT: u32 = 0;
const L4_DPORT: u32 = 2;

/// One message of the transaction; `describe` gives the text the user knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// One of the scheme's tables that exists (by name).
    DelTable(&'static str),
    /// Lower an interrupted iptables run's guard (`nl::guard`).
    DelGuard,
    AddTable(&'static TableLayout),
    /// Every rule of a table that stays (it holds named sets and their members).
    FlushTable(&'static TableLayout),
    /// A named set (created if missing; one that exists is kept, members and all).
    AddNamedSet {
        table: &'static TableLayout,
        set: AddrSet,
    },
    AddChain {
        table: &'static TableLayout,
        chain: Chain,
    },
    /// The anonymous set a rule looks up. Sets go before the table's rules, in the order
    /// the rules that use them appear in the text, as `nft -f` creates them (the kernel names
    /// them `__set0`, `__set1`, ... in creation order).
    AddSet {
        table: &'static TableLayout,
        set: AnonSet,
        /// The rule that looks it up, for error messages.
        rule: &'a NftRule,
    },
    AddRule {
        table: &'static TableLayout,
        /// The plan's rule: its chain, and its text for error messages (rendered only then).
        rule: std::borrow::Cow<'a, NftRule>,
        exprs: Vec<Expr>,
    },
}

impl Op<'_> {
    /// How errors name this message: the line of the dry-run text it comes from.
    pub fn describe(&self) -> String {
        match self {
            Op::DelTable(t) => format!("delete table inet {t}"),
            Op::DelGuard => format!("delete {}", guard::TEXT),
            Op::AddTable(t) => format!("add table inet {}", t.nft_name),
            Op::FlushTable(t) => format!("flush table inet {}", t.nft_name),
            Op::AddNamedSet { table, set } => set_line(table, set),
            Op::AddChain { table, chain } => chain_line(table, *chain),
            Op::AddRule { table, rule, .. } => rule_line(table, rule),
            Op::AddSet { table, rule, .. } => rule_line(table, rule),
        }
    }
}

pub use super::live::Existing;

/// The operations that replace whatever of ours exists (`existing`) with `plan`; a guard left
/// up by an interrupted iptables run goes in the same transaction. Lazy: each rule is lowered
/// when its turn comes, so a consumer that writes as it goes (`batch::Writer`) never holds the
/// whole lowering. Per table: the table, its chains, the anonymous sets in text order (as
/// `nft -f` creates them, and the kernel names them `__set0`, `__set1`, ...), then the rules
/// in their final order.
/// A fresh namespace (nothing existing) gets no delete: deleting makes the kernel wait for
/// an RCU grace period when the socket closes, which a first apply must not pay.
///
/// A plan with named sets (`sets`) keeps its tables, which hold the sets' members: each is
/// added (a no-op when it exists), flushed of its rules when it existed, its sets added
/// (kept when they exist), then its chains and rules, as the dry-run text says.
pub fn ops<'a>(
    plan: &'a NftPlan,
    sets: &'a [AddrSet],
    existing: &Existing,
) -> impl Iterator<Item = Result<Op<'a>, LowerError>> + use<'a> {
    let keep = !sets.is_empty();
    let existed: Vec<&'static str> = existing.tables.clone();
    // Set ids in text order across the transaction, as `nft` numbers them.
    let mut next = 0u32;
    let ids: Vec<Vec<Option<u32>>> = plan
        .tables
        .iter()
        .map(|t| {
            t.rules
                .iter()
                .map(|r| {
                    r.matches.iter().any(has_set).then(|| {
                        next += 1;
                        next
                    })
                })
                .collect()
        })
        .collect();
    let tables = plan.tables.iter().zip(ids).flat_map(move |(t, ids)| {
        let flush =
            (keep && existed.contains(&t.layout.nft_name)).then_some(Op::FlushTable(t.layout));
        let named = sets
            .iter()
            .filter(move |_| keep)
            .map(move |s| Op::AddNamedSet {
                table: t.layout,
                set: *s,
            });
        let head = std::iter::once(Op::AddTable(t.layout))
            .chain(flush)
            .chain(named)
            .chain(t.chains.iter().map(|c| Op::AddChain {
                table: t.layout,
                chain: *c,
            }));
        let sets = t.rules.iter().zip(ids.clone()).filter_map(|(r, id)| {
            let set = r.matches.iter().find_map(|m| set_of(m, id?))?;
            Some(Op::AddSet {
                table: t.layout,
                set,
                rule: r,
            })
        });
        let rules = final_order(&t.rules).into_iter().map(move |i| {
            let rule = &t.rules[i];
            lower_exprs(rule, ids[i]).map(|exprs| Op::AddRule {
                table: t.layout,
                rule: std::borrow::Cow::Borrowed(rule),
                exprs,
            })
        });
        head.chain(sets).map(Ok).chain(rules)
    });
    let mut first = clean_ops(existing);
    if keep {
        first.retain(|op| matches!(op, Op::DelGuard));
    }
    first.into_iter().map(Ok).chain(tables)
}

/// All of `ops` at once (for `check`, which compares them with the kernel's dumps).
pub fn apply_ops<'a>(
    plan: &'a NftPlan,
    sets: &'a [AddrSet],
    existing: &Existing,
) -> Result<Vec<Op<'a>>, LowerError> {
    ops(plan, sets, existing).collect()
}

/// The operations of a clean: delete each of our tables that exists, and a guard.
pub fn clean_ops(existing: &Existing) -> Vec<Op<'static>> {
    let tables = existing.tables.iter().map(|t| Op::DelTable(t));
    tables
        .chain(existing.guard.then_some(Op::DelGuard))
        .collect()
}

/// Replays appends and 0-based inserts per chain; returns the rules in final order, grouped
/// by chain in order of first appearance (chain order does not matter to the kernel).
fn final_order(rules: &[NftRule]) -> Vec<usize> {
    let mut chains: Vec<(Chain, Vec<usize>)> = Vec::new();
    for (n, r) in rules.iter().enumerate() {
        let i = match chains.iter().position(|(c, _)| *c == r.chain) {
            Some(i) => i,
            None => {
                chains.push((r.chain, Vec::new()));
                chains.len() - 1
            }
        };
        let list = &mut chains[i].1;
        match r.position {
            Position::Insert(i) if (i as usize) < list.len() => list.insert(i as usize, n),
            _ => list.push(n),
        }
    }
    chains.into_iter().flat_map(|(_, l)| l).collect()
}

fn nfproto(f: Family) -> u8 {
    (match f {
        Family::V4 => libc::NFPROTO_IPV4,
        Family::V6 => libc::NFPROTO_IPV6,
    }) as u8
}

fn proto_num(p: Proto) -> u8 {
    (match p {
        Proto::Tcp => libc::IPPROTO_TCP,
        Proto::Udp => libc::IPPROTO_UDP,
    }) as u8
}

/// What the rule has established so far, to add `nft`'s implicit dependencies only once.
#[derive(Default)]
struct Ctx {
    l4: Option<Proto>,
    nf: Option<Family>,
}

impl Ctx {
    fn need_l4(&mut self, p: Proto, out: &mut Vec<Expr>) {
        if self.l4 != Some(p) {
            out.push(meta_load(MetaKey::L4Proto));
            out.push(cmp(false, vec![proto_num(p)]));
            self.l4 = Some(p);
        }
    }
    fn need_nf(&mut self, f: Family, out: &mut Vec<Expr>) {
        if self.nf != Some(f) {
            out.push(meta_load(MetaKey::Nfproto));
            out.push(cmp(false, vec![nfproto(f)]));
            self.nf = Some(f);
        }
    }
}

/// An address match, as `nft` compiles a prefix: the full address compares directly; a
/// byte-aligned prefix loads only its bytes; any other prefix is masked.
fn address(out: &mut Vec<Expr>, ctx: &mut Ctx, cidr: Cidr, source: bool, negate: bool) {
    let f = cidr.family();
    ctx.need_nf(f, out);
    let (bytes, offset): (Vec<u8>, u32) = match (cidr.0, source) {
        (ipnet::IpNet::V4(n), true) => (n.network().octets().to_vec(), IPV4_SADDR),
        (ipnet::IpNet::V4(n), false) => (n.network().octets().to_vec(), IPV4_DADDR),
        (ipnet::IpNet::V6(n), true) => (n.network().octets().to_vec(), IPV6_SADDR),
        (ipnet::IpNet::V6(n), false) => (n.network().octets().to_vec(), IPV6_DADDR),
    };
    let full = bytes.len() as u32 * 8;
    let plen = cidr.0.prefix_len() as u32;
    let network = libc::NFT_PAYLOAD_NETWORK_HEADER;
    if plen == full {
        out.push(payload(network, offset, full / 8));
        out.push(cmp(negate, bytes));
    } else if plen.is_multiple_of(8) && plen > 0 {
        let n = (plen / 8) as usize;
        out.push(payload(network, offset, n as u32));
        out.push(cmp(negate, bytes[..n].to_vec()));
    } else {
        let mask: Vec<u8> = match cidr.0 {
            ipnet::IpNet::V4(n) => n.netmask().octets().to_vec(),
            ipnet::IpNet::V6(n) => n.netmask().octets().to_vec(),
        };
        out.push(payload(network, offset, full / 8));
        out.push(bitwise(mask));
        out.push(cmp(negate, bytes));
    }
}

/// One rule's expressions (and the anonymous set it looks up, if any), as `nft` compiles it;
/// the set gets the next id after `set_id`.
#[cfg(any(test, feature = "test-faults"))]
pub(super) fn lower_rule(
    rule: &NftRule,
    set_id: &mut u32,
) -> Result<(Vec<Expr>, Option<AnonSet>), LowerError> {
    let id = rule.matches.iter().any(has_set).then(|| {
        *set_id += 1;
        *set_id
    });
    let set = id.and_then(|id| rule.matches.iter().find_map(|m| set_of(m, id)));
    Ok((lower_exprs(rule, id)?, set))
}

/// Whether a match is spelled with an anonymous set.
fn has_set(m: &Match) -> bool {
    matches!(
        m,
        Match::DportsNotIn { .. } | Match::DportsIn { .. } | Match::DstIn { .. }
    )
}

/// The anonymous set a match looks up, with batch id `id`.
fn set_of(m: &Match, id: u32) -> Option<AnonSet> {
    match m {
        Match::DportsNotIn { proto, ports } | Match::DportsIn { proto, ports } => {
            Some(AnonSet::ports(id, *proto, ports.iter().map(|p| p.get())))
        }
        Match::DstIn { cidrs } => {
            let f = cidrs.first().map_or(Family::V4, |c| c.family());
            Some(AnonSet::addrs(id, f, cidrs))
        }
        _ => None,
    }
}

/// One rule's expressions; `set_id` is the batch id of the set its lookup names.
fn lower_exprs(rule: &NftRule, set_id: Option<u32>) -> Result<Vec<Expr>, LowerError> {
    let mut out = Vec::new();
    let mut ctx = Ctx::default();
    for m in &rule.matches {
        lower_match(m, &mut out, &mut ctx, set_id.unwrap_or(0))?;
    }
    lower_target(rule, ctx.nf, &mut out);
    if !rule.counter {
        // A counter is a statement of its own: a rule without one is the same rule without
        // that expression.
        out.retain(|e| e.name != "counter");
    }
    Ok(out)
}

/// The expressions of one match, after those `ctx` says are already there.
fn lower_match(
    m: &Match,
    out: &mut Vec<Expr>,
    ctx: &mut Ctx,
    set_id: u32,
) -> Result<(), LowerError> {
    match m {
        Match::InIface { name } => {
            out.push(meta_load(MetaKey::Iifname));
            out.push(cmp(false, ifname(name.as_str())));
        }
        Match::OutIface { name } => {
            out.push(meta_load(MetaKey::Oifname));
            out.push(cmp(false, ifname(name.as_str())));
        }
        Match::NotOutIface { name } => {
            out.push(meta_load(MetaKey::Oifname));
            out.push(cmp(true, ifname(name.as_str())));
        }
        Match::SrcAddr { addr } => address(out, ctx, Cidr::host(*addr), true, false),
        Match::DstAddr { addr } => address(out, ctx, Cidr::host(*addr), false, false),
        // The nft dialect leaves xtables' bare module out; `nft` compiles nothing for it.
        Match::L4Module { .. } => {}
        Match::Proto { proto } => {
            out.push(meta_load(MetaKey::L4Proto));
            out.push(cmp(false, vec![proto_num(*proto)]));
            ctx.l4 = Some(*proto);
        }
        Match::Src { negate, cidr } => address(out, ctx, *cidr, true, *negate),
        Match::Dst { negate, cidr } => address(out, ctx, *cidr, false, *negate),
        Match::Dport {
            proto,
            negate,
            port,
        } => port_match(out, ctx, *proto, L4_DPORT, *negate, port.get()),
        Match::Sport {
            proto,
            negate,
            port,
        } => port_match(out, ctx, *proto, L4_SPORT, *negate, port.get()),
        Match::DportsNotIn { proto, .. } | Match::DportsIn { proto, .. } => {
            ctx.need_l4(*proto, out);
            out.push(payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, L4_DPORT, 2));
            out.push(lookup(set_id, matches!(m, Match::DportsNotIn { .. })));
        }
        Match::DstIn { cidrs } => {
            let f = cidrs.first().map_or(Family::V4, |c| c.family());
            ctx.need_nf(f, out);
            let (offset, len) = match f {
                Family::V4 => (IPV4_DADDR, 4),
                Family::V6 => (IPV6_DADDR, 16),
            };
            out.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
            out.push(lookup(set_id, false));
        }
        Match::Uid { negate, uid } => {
            out.push(meta_load(MetaKey::SocketUserId));
            out.push(cmp(*negate, uid.0.to_ne_bytes().to_vec()));
        }
        Match::Gid { negate, gid } => {
            let id = match gid {
                Group::Id(id) => *id,
                Group::Name(n) => {
                    return Err(LowerError::UnresolvedGroup(n.as_str().to_string()));
                }
            };
            out.push(meta_load(MetaKey::SocketGroupId));
            out.push(cmp(*negate, id.to_ne_bytes().to_vec()));
        }
        Match::CtState { states } => {
            out.push(ct_load(libc::NFT_CT_STATE));
            out.push(bitwise(ct_state_mask(states).to_ne_bytes().to_vec()));
            out.push(cmp(true, vec![0; 4]));
        }
        Match::Mark { negate, mark } => {
            out.push(meta_load(MetaKey::Mark));
            out.push(cmp(*negate, mark.get().to_ne_bytes().to_vec()));
        }
        Match::ConnMark { mark } => {
            out.push(ct_load(libc::NFT_CT_MARK));
            out.push(cmp(false, mark.get().to_ne_bytes().to_vec()));
        }
        Match::MarkMasked { negate, mark } => {
            out.push(meta_load(MetaKey::Mark));
            out.push(bitwise(mark.mask().to_ne_bytes().to_vec()));
            out.push(cmp(*negate, mark.value().to_ne_bytes().to_vec()));
        }
        Match::ConnMarkMasked { mark } => {
            out.push(ct_load(libc::NFT_CT_MARK));
            out.push(bitwise(mark.mask().to_ne_bytes().to_vec()));
            out.push(cmp(false, mark.value().to_ne_bytes().to_vec()));
        }
        Match::SocketExists => return Err(LowerError::XtablesOnly("-m owner --socket-exists")),
        Match::DstInSet { set } => {
            // `ip daddr @NAME`: the family's dependency, the address, a lookup of the named
            // set by name (no batch id: it exists, or is created earlier in the batch).
            ctx.need_nf(set.family, out);
            let (offset, len) = match set.family {
                Family::V4 => (16, 4),
                Family::V6 => (24, 16),
            };
            out.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len));
            out.push(Expr {
                name: "lookup",
                attrs: vec![
                    attr(&Lookup::SourceRegister(Register::Reg1)),
                    attr(&Lookup::Set(set.name.into())),
                ],
            });
        }
    }
    Ok(())
}

/// `{ ... }` (or `!= { ... }`, inverted): a lookup of the anonymous set sent with the rule.
/// As `nft`, the flags attribute is sent only for an inverted lookup.
fn lookup(set_id: u32, invert: bool) -> Expr {
    let mut attrs = vec![
        attr(&Lookup::SourceRegister(Register::Reg1)),
        attr(&Lookup::Set("__set%d".into())),
        attr(&Lookup::SetId(set_id)),
    ];
    if invert {
        attrs.push(attr(&Lookup::Flags(libc::NFT_LOOKUP_F_INV as u32)));
    }
    Expr {
        name: "lookup",
        attrs,
    }
}

/// The conntrack state bits `ct state a,b` tests (any of them set).
fn ct_state_mask(states: &[CtState]) -> u32 {
    states.iter().fold(0u32, |m, s| {
        m | match s {
            CtState::Invalid => NF_CT_STATE_INVALID_BIT,
            CtState::Established => NF_CT_STATE_ESTABLISHED,
            CtState::Related => NF_CT_STATE_RELATED,
        }
    })
}

/// `tcp dport P` (offset 2) or `tcp sport P` (offset 0), with nft's l4proto dependency.
fn port_match(
    out: &mut Vec<Expr>,
    ctx: &mut Ctx,
    proto: Proto,
    offset: u32,
    negate: bool,
    port: u16,
) {
    ctx.need_l4(proto, out);
    out.push(payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2));
    out.push(cmp(negate, port.to_be_bytes().to_vec()));
}

/// The expressions of the verdict or statement, `counter` placed where `nft` puts it.
fn lower_target(rule: &NftRule, nf: Option<Family>, out: &mut Vec<Expr>) {
    match &rule.target {
        Target::Jump { chain } => {
            out.push(counter());
            out.push(verdict(libc::NFT_JUMP, Some(chain.nft_name())));
        }
        Target::Return => out.extend([counter(), verdict(libc::NFT_RETURN, None)]),
        Target::Accept => out.extend([counter(), verdict(libc::NF_ACCEPT, None)]),
        Target::Drop => out.extend([counter(), verdict(libc::NF_DROP, None)]),
        Target::Redirect { port } => {
            out.push(counter());
            out.push(immediate(port.get().to_be_bytes().to_vec()));
            out.push(Expr {
                name: "redir",
                attrs: vec![
                    be32(NFTA_REDIR_REG_PROTO_MIN, libc::NFT_REG_1 as u32),
                    be32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
                ],
            });
        }
        Target::Tproxy { port, mark } => {
            let f = rule.family.or(nf).unwrap_or(Family::V4);
            out.push(immediate(port.get().to_be_bytes().to_vec()));
            out.push(Expr {
                name: "tproxy",
                attrs: vec![
                    be32(NFTA_TPROXY_FAMILY, u32::from(nfproto(f))),
                    be32(NFTA_TPROXY_REG_PORT, libc::NFT_REG_1 as u32),
                ],
            });
            out.push(immediate(mark.get().to_ne_bytes().to_vec()));
            out.push(meta_set(MetaKey::Mark));
            out.push(counter());
            out.push(verdict(libc::NF_ACCEPT, None));
        }
        Target::SetMark { mark } => {
            out.push(counter());
            out.push(immediate(mark.get().to_ne_bytes().to_vec()));
            out.push(meta_set(MetaKey::Mark));
        }
        Target::SaveMark => out.extend([
            counter(),
            meta_load(MetaKey::Mark),
            ct_set(libc::NFT_CT_MARK),
        ]),
        Target::RestoreMark => out.extend([
            counter(),
            ct_load(libc::NFT_CT_MARK),
            meta_set(MetaKey::Mark),
        ]),
        Target::CtZone { zone } => {
            out.push(counter());
            out.push(immediate(zone.to_ne_bytes().to_vec()));
            out.push(ct_set(libc::NFT_CT_ZONE));
        }
        Target::SetConnMark { mark } => {
            // `ct mark set ct mark & ~M | V`: the value lies inside the mask, so nft's mask
            // `~M & ~V` is `~M` and its xor `V`.
            out.push(counter());
            out.push(ct_load(libc::NFT_CT_MARK));
            out.push(bitwise_xor(
                (!mark.mask()).to_ne_bytes().to_vec(),
                mark.value().to_ne_bytes().to_vec(),
            ));
            out.push(ct_set(libc::NFT_CT_MARK));
        }
        Target::RestoreMarkMasked { ctmask } => {
            out.push(counter());
            out.push(ct_load(libc::NFT_CT_MARK));
            if *ctmask != u32::MAX {
                out.push(bitwise(ctmask.to_ne_bytes().to_vec()));
            }
            out.push(meta_set(MetaKey::Mark));
        }
        Target::Snat { to } => {
            // `snat to A`: the address in a register, then nat with the address's family
            // and only the minimum address (nft sends no maximum for one address).
            let (bytes, f) = match to {
                std::net::IpAddr::V4(a) => (a.octets().to_vec(), Family::V4),
                std::net::IpAddr::V6(a) => (a.octets().to_vec(), Family::V6),
            };
            out.push(counter());
            out.push(immediate(bytes));
            out.push(Expr {
                name: "nat",
                attrs: vec![
                    be32(NFTA_NAT_TYPE, libc::NFT_NAT_SNAT as u32),
                    be32(NFTA_NAT_FAMILY, u32::from(nfproto(f))),
                    be32(NFTA_NAT_REG_ADDR_MIN, libc::NFT_REG_1 as u32),
                ],
            });
        }
    }
}

/// A base chain's hook (`NF_INET_*`).
pub fn hook(h: Hook) -> c_int {
    match h {
        Hook::Prerouting => libc::NF_INET_PRE_ROUTING,
        Hook::Input => libc::NF_INET_LOCAL_IN,
        Hook::Output => libc::NF_INET_LOCAL_OUT,
        Hook::Postrouting => libc::NF_INET_POST_ROUTING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{IfName, Mark, Port};

    /// A chain of no scheme: the lowering knows none.
    const TEST_CHAIN: Chain = Chain::scheme("TEST_CHAIN", "test-chain");

    fn rule(matches: Vec<Match>, target: Target) -> NftRule {
        NftRule {
            chain: TEST_CHAIN,
            position: Position::Append,
            family: None,
            matches,
            target,
            mark_words: Default::default(),
            counter: true,
        }
    }

    fn names(exprs: &[Expr]) -> Vec<&str> {
        exprs.iter().map(|e| e.name).collect()
    }

    #[test]
    fn implicit_l4proto_added_once() {
        let r = rule(
            vec![
                Match::OutIface { name: IfName::lo() },
                Match::Proto { proto: Proto::Tcp },
                Match::Dport {
                    proto: Proto::Tcp,
                    negate: true,
                    port: Port::new(53).unwrap(),
                },
            ],
            Target::Return,
        );
        let (e, _) = lower_rule(&r, &mut 0).unwrap();
        assert_eq!(
            names(&e),
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "counter",
                "immediate"
            ]
        );
        let r = rule(
            vec![Match::Dport {
                proto: Proto::Udp,
                negate: false,
                port: Port::new(53).unwrap(),
            }],
            Target::Return,
        );
        let (e, _) = lower_rule(&r, &mut 0).unwrap();
        assert_eq!(
            e[1],
            cmp(false, vec![libc::IPPROTO_UDP as u8]),
            "udp dependency"
        );
    }

    #[test]
    fn prefixes_like_nft() {
        let mut out = Vec::new();
        let c = Cidr("127.0.0.1/8".parse().unwrap());
        address(&mut out, &mut Ctx::default(), c, false, true);
        assert_eq!(out[2], payload(libc::NFT_PAYLOAD_NETWORK_HEADER, 16, 1));
        assert_eq!(out[3], cmp(true, vec![127]));
        let mut out = Vec::new();
        let c = Cidr("10.96.0.0/12".parse().unwrap());
        address(&mut out, &mut Ctx::default(), c, false, false);
        assert_eq!(out[3], bitwise(vec![255, 240, 0, 0]));
        assert_eq!(out[4], cmp(false, vec![10, 96, 0, 0]));
    }

    #[test]
    fn inserts_resolved_in_order() {
        let mk = |pos, mark| NftRule {
            chain: TEST_CHAIN,
            position: pos,
            family: None,
            matches: vec![],
            target: Target::SetMark {
                mark: Mark::new(mark).unwrap(),
            },
            mark_words: Default::default(),
            counter: true,
        };
        let rules = vec![
            mk(Position::Append, 1),
            mk(Position::Append, 2),
            mk(Position::Insert(0), 3),
            mk(Position::Insert(1), 4),
        ];
        let order: Vec<u32> = final_order(&rules)
            .iter()
            .map(|i| match rules[*i].target {
                Target::SetMark { mark } => mark.get(),
                _ => 0,
            })
            .collect();
        assert_eq!(order, [3, 4, 1, 2]);
    }

    #[test]
    fn unresolved_group_is_an_error() {
        let r = rule(
            vec![Match::Gid {
                negate: false,
                gid: Group::Name(crate::values::GroupName::parse("nosuchgroup").unwrap()),
            }],
            Target::Return,
        );
        assert!(lower_rule(&r, &mut 0).is_err());
    }
}
