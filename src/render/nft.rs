//! The nftables transaction text upstream's native mode feeds to `nft -f` (docs/upstream.md, "The nftables text"), which is
//! also an exact picture of the netlink batch meshtables sends: the lowering walks the same
//! `NftPlan` in the same order.

use std::fmt::Write;

use crate::plan::{
    AddrSet, Chain, Family, MarkWords, Match, NftPlan, NftRule, Position, Scheme, Table,
    TableLayout, Target,
};

fn ip_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// The elements of an anonymous set, as `nft` lists them: `a, b, c`.
fn set<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn neq(negate: bool) -> &'static str {
    if negate { "!= " } else { "" }
}

/// The rule body after `add rule inet TABLE CHAIN [index N] `.
pub fn rule_body(table: &TableLayout, rule: &NftRule) -> String {
    let mut s = String::new();
    write_body(&mut s, table, rule);
    s
}

fn addr_family(a: std::net::IpAddr) -> Family {
    if a.is_ipv6() { Family::V6 } else { Family::V4 }
}

/// An interface name as nft reads it back as the same match. Bare when it is one token of
/// nft's `string` (a letter, then letters, digits, `_`, `.`, `-`), as upstream writes every
/// name; else quoted, because bare `x|y`, `x&y`, `x^y` are expressions (they match `y`, `x`,
/// and the empty name), `0x1` is the number 1 and `eth*` a wildcard. In quotes a `*` is
/// nft's wildcard, so a literal one is escaped, and iptables' trailing `+` (every name with
/// that prefix, which the netlink lowering matches as the prefix) becomes nft's `*`.
fn ifname(name: &crate::plan::IfName) -> String {
    let n = name.as_str();
    let bare = n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if bare {
        return n.to_string();
    }
    let (body, wildcard) = match n.strip_suffix('+') {
        Some(prefix) => (prefix, "*"),
        None => (n, ""),
    };
    format!("\"{}{wildcard}\"", body.replace('*', "\\*"))
}

/// One match, in nft's words (`words`: how this rule words a masked mark).
fn write_match(s: &mut String, m: &Match, meta: &str, words: MarkWords) {
    // Writing to a String cannot fail.
    let _ = match m {
        Match::InIface { name } => write!(s, "iifname {} ", ifname(name)),
        Match::OutIface { name } => write!(s, "oifname {} ", ifname(name)),
        Match::NotOutIface { name } => write!(s, "oifname != {} ", ifname(name)),
        Match::SrcAddr { addr } => write!(
            s,
            "{} saddr {} ",
            ip_kw(addr_family(*addr)),
            super::iptables::addr_text(*addr)
        ),
        Match::DstAddr { addr } => write!(
            s,
            "{} daddr {} ",
            ip_kw(addr_family(*addr)),
            super::iptables::addr_text(*addr)
        ),
        // xtables' bare module: the nft dialect leaves it out; nothing to say if it is here.
        Match::L4Module { .. } => Ok(()),
        Match::Proto { proto } => write!(s, "meta l4proto {} ", proto.name()),
        Match::Src { negate, cidr } => {
            write!(s, "{} saddr {}{cidr} ", ip_kw(cidr.family()), neq(*negate))
        }
        Match::Dst { negate, cidr } => {
            write!(s, "{} daddr {}{cidr} ", ip_kw(cidr.family()), neq(*negate))
        }
        Match::Dport {
            proto,
            negate,
            port,
        } => {
            write!(s, "{} dport {}{port} ", proto.name(), neq(*negate))
        }
        Match::Sport {
            proto,
            negate,
            port,
        } => {
            write!(s, "{} sport {}{port} ", proto.name(), neq(*negate))
        }
        Match::DportsNotIn { proto, ports } => {
            write!(s, "{} dport != {{ {} }} ", proto.name(), set(ports))
        }
        Match::DportsIn { proto, ports } => {
            write!(s, "{} dport {{ {} }} ", proto.name(), set(ports))
        }
        Match::DstIn { cidrs } => {
            let f = cidrs.first().map_or(Family::V4, |c| c.family());
            // A single address without its /32 (/128), as nft lists it: a set of only
            // addresses is then a hash set, one of prefixes an interval set.
            let items: Vec<String> = cidrs
                .iter()
                .map(|c| {
                    let text = c.to_string();
                    let full = format!("/{}", c.0.max_prefix_len());
                    text.strip_suffix(&full).unwrap_or(&text).to_string()
                })
                .collect();
            write!(s, "{} daddr {{ {} }} ", ip_kw(f), set(&items))
        }
        Match::Uid { negate, uid } => write!(s, "{meta}skuid {}{uid} ", neq(*negate)),
        Match::Gid { negate, gid } => write!(s, "{meta}skgid {}{gid} ", neq(*negate)),
        Match::CtState { states } => {
            let list: Vec<&str> = states.iter().map(|st| st.nft_name()).collect();
            write!(s, "ct state {} ", list.join(","))
        }
        Match::Mark { negate, mark } => write!(s, "mark {}{mark} ", neq(*negate)),
        Match::ConnMark { mark } => write!(s, "ct mark {mark} "),
        Match::MarkMasked { negate, mark } => {
            let op = if *negate { "!=" } else { "==" };
            let (m, v) = (mark.mask(), mark.value());
            match words {
                MarkWords::And => write!(s, "{meta}mark and {m:#x} {op} {v:#x} "),
                MarkWords::AndWide => write!(s, "{meta}mark and {m:#x}  {op} {v:#x} "),
                MarkWords::MetaAmpersand => write!(s, "meta mark & {m:#x} {op} {v:#x} "),
            }
        }
        Match::ConnMarkMasked { mark } => {
            write!(s, "ct mark and {:#x} == {:#x} ", mark.mask(), mark.value())
        }
        // xtables only: a scheme's nft walk never sends it (nft has no such match), and the
        // lowering refuses it.
        Match::SocketExists => Ok(()),
        Match::DstInSet { set } => write!(s, "{} daddr @{} ", ip_kw(set.family), set.name),
    };
}

fn write_body(s: &mut String, table: &TableLayout, rule: &NftRule) {
    // Upstream's raw-table DNS rules spell the owner match `meta skuid`; same bytecode.
    let meta = if table.table == Table::Raw {
        "meta "
    } else {
        ""
    };
    for m in &rule.matches {
        write_match(s, m, meta, rule.mark_words);
    }
    // Upstream's ambient jumps carry no counter.
    let c = if rule.counter { "counter " } else { "" };
    let _ = match &rule.target {
        Target::Jump { chain } => write!(s, "{c}jump {}", chain.nft_name()),
        Target::Return => write!(s, "{c}return"),
        Target::Accept => write!(s, "{c}accept"),
        Target::Drop => write!(s, "{c}drop"),
        Target::Redirect { port } => write!(s, "{c}redirect to :{port}"),
        Target::Tproxy { port, mark } => {
            let f = ip_kw(rule.family.unwrap_or(Family::V4));
            write!(s, "tproxy {f} to :{port} meta mark set {mark} {c}accept")
        }
        Target::SetMark { mark } => write!(s, "{c}meta mark set {mark}"),
        Target::SaveMark => write!(s, "{c}ct mark set mark"),
        Target::RestoreMark => write!(s, "{c}meta mark set ct mark"),
        Target::CtZone { zone } => write!(s, "{c}ct zone set {zone}"),
        // Upstream's words end in "| " and are joined by a space: two before the value.
        Target::SetConnMark { mark } => write!(
            s,
            "{c}ct mark set ct mark & {:#x} |  {:#x}",
            !mark.mask(),
            mark.value()
        ),
        Target::RestoreMarkMasked { ctmask: u32::MAX } => {
            write!(s, "{c}meta mark set ct mark")
        }
        Target::RestoreMarkMasked { ctmask } => {
            write!(s, "{c}meta mark set ct mark and {ctmask:#x}")
        }
        Target::Snat { to } => write!(s, "{c}snat to {}", super::iptables::addr_text(*to)),
    };
}

/// One `add rule` / `insert rule` line without the newline.
pub fn rule_line(table: &TableLayout, rule: &NftRule) -> String {
    let mut s = String::new();
    write_rule_line(&mut s, table, rule);
    s
}

fn write_rule_line(s: &mut String, table: &TableLayout, rule: &NftRule) {
    let t = table.nft_name;
    let c = rule.chain.nft_name();
    let _ = match rule.position {
        Position::Append => write!(s, "add rule inet {t} {c} "),
        Position::Insert(i) => write!(s, "insert rule inet {t} {c} index {i} "),
    };
    write_body(s, table, rule);
}

/// `add chain` line for one declared chain.
pub fn chain_line(table: &TableLayout, chain: Chain) -> String {
    let t = table.nft_name;
    let c = chain.nft_name();
    match table.base_chain(chain) {
        Some(b) => format!(
            "add chain inet {t} {c} {{ type {} hook {} priority {} ; }}",
            b.kind.name(),
            b.hook.name(),
            b.priority
        ),
        None => format!("add chain inet {t} {c}"),
    }
}

/// `add set inet TABLE NAME { type ipv4_addr ; comment "..." ; }`: a named address set.
pub fn set_line(table: &TableLayout, set: &AddrSet) -> String {
    let kind = match set.family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    format!(
        "add set inet {} {} {{ type {kind} ; comment \"{}\" ; }}",
        table.nft_name, set.name, set.comment
    )
}

/// The apply transaction: per table `add table`, `flush table`, chains, rules.
pub fn transaction(plan: &NftPlan) -> String {
    let mut out = String::new();
    for t in &plan.tables {
        let name = t.layout.nft_name;
        let _ = writeln!(out, "add table inet {name}");
        let _ = writeln!(out, "flush table inet {name}");
        for c in &t.chains {
            out.push_str(&chain_line(t.layout, *c));
            out.push('\n');
        }
        for r in &t.rules {
            write_rule_line(&mut out, t.layout, r);
            out.push('\n');
        }
    }
    out
}

/// The clean-up transaction: `add table` (so the delete cannot fail) + `delete table` for
/// each of the scheme's tables.
pub fn cleanup_transaction(scheme: &Scheme) -> String {
    let mut out = String::new();
    for t in scheme.tables {
        let _ = writeln!(out, "add table inet {}", t.nft_name);
        let _ = writeln!(out, "delete table inet {}", t.nft_name);
    }
    out
}
