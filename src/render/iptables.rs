//! `iptables-restore` input, byte-identical to upstream's `buildRestore` (docs/upstream.md, "The iptables text"), and the
//! per-rule argument lists that the clean-up and the iptables backend reuse.

use crate::plan::{Chain, Family, Match, Position, Proto, Table, Target, XtRule};

/// `a,b,c`: multiport's and `-d`'s list syntax.
pub fn comma<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends the words of one rule after `-A CHAIN` / `-I CHAIN N` to `out`, space separated:
/// matches in plan order, then the target. Validated values never contain a space, so
/// splitting this text on spaces gives the argument list (`rule_spec`).
pub fn write_spec(out: &mut String, rule: &XtRule) {
    use std::fmt::Write;
    let neg = |n: bool| if n { "! " } else { "" };
    for m in &rule.matches {
        let _ = match m {
            Match::InIface { name } => write!(out, "-i {name} "),
            Match::OutIface { name } => write!(out, "-o {name} "),
            Match::NotOutIface { name } => write!(out, "! -o {name} "),
            Match::SrcAddr { addr } => write!(out, "-s {} ", addr_text(*addr)),
            Match::DstAddr { addr } => write!(out, "-d {} ", addr_text(*addr)),
            Match::L4Module { proto } => write!(out, "-m {} ", proto.name()),
            Match::Proto { proto } => write!(out, "-p {} ", proto.name()),
            Match::Src { negate, cidr } => write!(out, "{}-s {cidr} ", neg(*negate)),
            Match::Dst { negate, cidr } => write!(out, "{}-d {cidr} ", neg(*negate)),
            Match::Dport { negate, port, .. } => write!(out, "{}--dport {port} ", neg(*negate)),
            Match::Sport { negate, port, .. } => write!(out, "{}--sport {port} ", neg(*negate)),
            Match::DportsNotIn { ports, .. } => {
                write!(out, "-m multiport ! --dports {} ", comma(ports))
            }
            Match::DportsIn { ports, .. } => write!(out, "-m multiport --dports {} ", comma(ports)),
            // The xtables dialect expands a list into one rule per CIDR; `-d a,b` is what
            // iptables would make of it anyway.
            Match::DstIn { cidrs } => write!(out, "-d {} ", comma(cidrs)),
            Match::Uid { negate, uid } => {
                write!(out, "-m owner {}--uid-owner {uid} ", neg(*negate))
            }
            Match::Gid { negate, gid } => {
                write!(out, "-m owner {}--gid-owner {gid} ", neg(*negate))
            }
            Match::CtState { states } => {
                out.push_str("-m conntrack --ctstate ");
                for (i, st) in states.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(st.xtables_name());
                }
                out.push(' ');
                Ok(())
            }
            Match::Mark { negate, mark } => write!(out, "-m mark {}--mark {mark} ", neg(*negate)),
            Match::ConnMark { mark } => write!(out, "-m connmark --mark {mark} "),
            Match::MarkMasked { negate, mark } => {
                write!(out, "-m mark {}--mark {mark} ", neg(*negate))
            }
            Match::ConnMarkMasked { mark } => write!(out, "-m connmark --mark {mark} "),
            Match::SocketExists => write!(out, "-m owner --socket-exists "),
            Match::DstInSet { set } => write!(out, "-m set --match-set {} dst ", set.name),
        };
    }
    let _ = match &rule.target {
        Target::Jump { chain } => write!(out, "-j {}", chain.xt_name()),
        Target::Return => write!(out, "-j RETURN"),
        Target::Accept => write!(out, "-j ACCEPT"),
        Target::Drop => write!(out, "-j DROP"),
        Target::Redirect { port } => {
            // Upstream writes the singular option for its UDP DNS rules; both are accepted.
            let udp = rule
                .matches
                .iter()
                .any(|m| matches!(m, Match::Proto { proto: Proto::Udp }));
            let opt = if udp { "--to-port" } else { "--to-ports" };
            write!(out, "-j REDIRECT {opt} {port}")
        }
        Target::Tproxy { port, mark } => {
            write!(
                out,
                "-j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}"
            )
        }
        Target::SetMark { mark } => write!(out, "-j MARK --set-mark {mark}"),
        Target::SaveMark => write!(out, "-j CONNMARK --save-mark"),
        Target::RestoreMark => write!(out, "-j CONNMARK --restore-mark"),
        Target::CtZone { zone } => write!(out, "-j CT --zone {zone}"),
        Target::SetConnMark { mark } => write!(out, "-j CONNMARK --set-xmark {mark}"),
        Target::RestoreMarkMasked { ctmask } => write!(
            out,
            "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask {ctmask:#x}"
        ),
        Target::Snat { to } => write!(out, "-j SNAT --to-source {}", addr_text(*to)),
    };
}

/// An address as rule text: IPv6 as Istio's goldens show it (`DisplayV6`).
pub fn addr_text(a: std::net::IpAddr) -> String {
    match a {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => crate::plan::DisplayV6(a).to_string(),
    }
}

/// The words of one rule after `-A CHAIN` / `-I CHAIN N`, as an argument list.
pub fn rule_spec(rule: &XtRule) -> Vec<String> {
    let mut s = String::new();
    write_spec(&mut s, rule);
    s.split(' ').map(str::to_string).collect()
}

/// `-A CHAIN ...` or `-I CHAIN N ...`, as one line.
pub fn rule_line(rule: &XtRule) -> String {
    let mut s = String::new();
    write_line(&mut s, rule);
    s
}

fn write_line(out: &mut String, rule: &XtRule) {
    out.push_str(match rule.position {
        Position::Append => "-A ",
        Position::Insert(_) => "-I ",
    });
    out.push_str(rule.chain.xt_name());
    if let Position::Insert(n) = rule.position {
        out.push(' ');
        out.push_str(&n.to_string());
    }
    out.push(' ');
    write_spec(out, rule);
}

/// Upstream's teardown of its own chains, as argument lists without the binary: `-F` then
/// `-X` for every chain that is not built in, in reverse order of first appearance in `rules`
/// (istio-clean-iptables and the node agent's `DeleteHostRules` both end this way).
pub fn chain_teardown(rules: &[XtRule]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let mut seen: Vec<(Table, Chain)> = Vec::new();
    for r in rules.iter().rev() {
        if r.chain.is_builtin() || seen.contains(&(r.table, r.chain)) {
            continue;
        }
        seen.push((r.table, r.chain));
        for op in ["-F", "-X"] {
            cmds.push(vec![
                "-t".into(),
                r.table.xt_name().into(),
                op.into(),
                r.chain.xt_name().into(),
            ]);
        }
    }
    cmds
}

/// The chain a rule jumps to, if it is a jump.
pub fn jump_target(rule: &XtRule) -> Option<Chain> {
    match rule.target {
        Target::Jump { chain } => Some(chain),
        _ => None,
    }
}

/// One family's restore text: tables sorted by name, each `* table`, its `-N` lines (first
/// appearance as a rule's chain, then as a jump target), its rules, `COMMIT`. Empty tables
/// are skipped; an empty plan gives an empty string.
pub fn restore(rules: &[XtRule]) -> String {
    let mut out = String::new();
    for table in [Table::Filter, Table::Mangle, Table::Nat, Table::Raw] {
        let in_table: Vec<&XtRule> = rules.iter().filter(|r| r.table == table).collect();
        if in_table.is_empty() {
            continue;
        }
        let mut declared: Vec<Chain> = Vec::new();
        let candidates = in_table
            .iter()
            .map(|r| r.chain)
            .chain(in_table.iter().filter_map(|r| jump_target(r)));
        for c in candidates {
            if !c.is_builtin() && !declared.contains(&c) {
                declared.push(c);
            }
        }
        out.push_str("* ");
        out.push_str(table.xt_name());
        out.push('\n');
        for c in &declared {
            out.push_str("-N ");
            out.push_str(c.xt_name());
            out.push('\n');
        }
        for r in &in_table {
            write_line(&mut out, r);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The iptables binary base name of a family.
pub fn binary(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}
