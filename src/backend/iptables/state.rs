//! Live xtables state (`*-save` output) and the plan in the same canonical form, so a rerun
//! compares them exactly; plus which live rules are ours.
//!
//! `iptables-save` (legacy and nft variants print the same rule text) reorders the address
//! and interface options (`-s -d -i -o -p`), names the implicit protocol match (`-m tcp`),
//! prints marks in hex, masks prefixes, and spells targets with their defaults
//! (`MARK --set-xmark 0x2a/0xffffffff`, `TPROXY --on-port P --on-ip 0.0.0.0 ...`).
//! `save_rule` renders a planned rule that way; tests load every plan and compare.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::plan::{Family, Mark, Match, Ownership, Position, Target, XtRule};
use crate::render::iptables::comma;

/// One table's chains and their rules (the text after `-A CHAIN `), in kernel order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Chain name → rules; user chains and built-in chains alike.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// A family's state: table name → chains.
pub type State = BTreeMap<String, TableState>;

/// Parses `*-save` output; counters and comments are dropped. With `-c` a rule line starts
/// with its counters (`[packets:bytes] -A ...`); they are no part of the rule.
pub fn parse_save(text: &str) -> State {
    let mut state = State::new();
    let mut table: Option<&mut TableState> = None;
    for line in text.lines() {
        let line = without_counters(line.trim_end());
        if let Some(t) = line.strip_prefix('*') {
            table = Some(state.entry(t.trim().to_string()).or_default());
        } else if line == "COMMIT" {
            table = None;
        } else if let (Some(t), Some(rest)) = (table.as_deref_mut(), line.strip_prefix(':')) {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            t.chains.entry(name).or_default();
        } else if let (Some(t), Some(rest)) = (table.as_deref_mut(), line.strip_prefix("-A ")) {
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let rules = t.chains.entry(chain.to_string()).or_default();
            rules.push(spec.to_string());
        }
    }
    state
}

/// `line` without a leading `[packets:bytes] ` (what `-save -c` prints before a rule).
fn without_counters(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else {
        return line;
    };
    match rest.split_once("] ") {
        Some((n, rule)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == ':') => {
            rule
        }
        _ => line,
    }
}

/// The lines of table `table` in `*-save` output, from `*table` to its `COMMIT`: what
/// restores that table exactly as it was.
pub fn table_block(text: &str, table: &str) -> Option<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_end() == format!("*{table}") {
            inside = true;
        }
        if inside {
            out += line;
            out.push('\n');
            if line.trim_end() == "COMMIT" {
                return Some(out);
            }
        }
    }
    None
}

/// Upstream's detection probe (`-t nat -A INPUT -p 255 -j RETURN`, added and deleted again),
/// as `*-save` prints it. A run killed between the two leaves it; it is ours to remove.
pub const PROBE_SPEC: &str = "-p 255 -j RETURN";

/// Whether a detection probe rule was left in nat INPUT.
pub fn has_probe(live: &State) -> bool {
    live.get("nat")
        .and_then(|t| t.chains.get("INPUT"))
        .is_some_and(|rules| rules.iter().any(|r| r == PROBE_SPEC))
}

fn masked(net: IpNet) -> String {
    match net {
        IpNet::V4(n) => format!("{}/{}", n.network(), n.prefix_len()),
        // ip6tables-save prints IPv4-compatible addresses dotted, as Istio's goldens do.
        IpNet::V6(n) => format!("{}/{}", crate::plan::DisplayV6(n.network()), n.prefix_len()),
    }
}

fn hex(m: Mark) -> String {
    format!("{:#x}", m.get())
}

/// A planned rule as `iptables-save` prints it (after `-A CHAIN `). Groups are numeric
/// (config resolved them), as save prints gids.
pub fn save_rule(rule: &XtRule, family: Family) -> String {
    let (ip, rest) = save_matches(&rule.matches);
    format!("{ip}{rest}{}", save_target(&rule.target, family))
}

/// The matches as save prints them: the address and interface options first, in save's fixed
/// order (`-s -d -i -o -p`), then the match modules in rule order.
fn save_matches(matches: &[Match]) -> (String, String) {
    let neg = |n: bool| if n { "! " } else { "" };
    let mut rest = String::new();
    let (mut src, mut dst, mut iif, mut oif, mut proto) = (None, None, None, None, None);
    // A protocol's match module prints once: `-m udp --dport 53` after an explicit `-m udp`.
    let mut loaded: Option<crate::plan::Proto> = None;
    let mut module = |p: crate::plan::Proto| {
        if loaded == Some(p) {
            String::new()
        } else {
            loaded = Some(p);
            format!("-m {} ", p.name())
        }
    };
    for m in matches {
        match m {
            // iptables drops a match on a zero-length prefix (`-d 0.0.0.0/0`, `-s ::/0`):
            // save prints the rule without it. Negated it stays (legacy keeps it).
            Match::Src { negate, cidr } if *negate || cidr.0.prefix_len() > 0 => {
                src = Some(format!("{}-s {} ", neg(*negate), masked(cidr.0)))
            }
            Match::Dst { negate, cidr } if *negate || cidr.0.prefix_len() > 0 => {
                dst = Some(format!("{}-d {} ", neg(*negate), masked(cidr.0)))
            }
            Match::Src { .. } | Match::Dst { .. } => {}
            Match::InIface { name } => iif = Some(format!("-i {name} ")),
            Match::OutIface { name } => oif = Some(format!("-o {name} ")),
            Match::NotOutIface { name } => oif = Some(format!("! -o {name} ")),
            Match::SrcAddr { addr } => src = Some(format!("-s {} ", masked(IpNet::from(*addr)))),
            Match::DstAddr { addr } => dst = Some(format!("-d {} ", masked(IpNet::from(*addr)))),
            Match::L4Module { proto } => rest += &module(*proto),
            Match::Proto { proto: p } => proto = Some(format!("-p {} ", p.name())),
            Match::Dport {
                proto,
                negate,
                port,
            } => rest += &format!("{}{}--dport {port} ", module(*proto), neg(*negate)),
            Match::Sport {
                proto,
                negate,
                port,
            } => rest += &format!("{}{}--sport {port} ", module(*proto), neg(*negate)),
            Match::DportsNotIn { ports, .. } => {
                rest += &format!("-m multiport ! --dports {} ", comma(ports));
            }
            Match::DportsIn { ports, .. } => {
                rest += &format!("-m multiport --dports {} ", comma(ports));
            }
            Match::DstIn { cidrs } => {
                let l: Vec<String> = cidrs.iter().map(|c| masked(c.0)).collect();
                dst = Some(format!("-d {} ", l.join(",")))
            }
            Match::Uid { negate, uid } => {
                rest += &format!("-m owner {}--uid-owner {uid} ", neg(*negate))
            }
            Match::Gid { negate, gid } => {
                rest += &format!("-m owner {}--gid-owner {gid} ", neg(*negate))
            }
            Match::CtState { states } => {
                let l: Vec<&str> = states.iter().map(|s| s.xtables_name()).collect();
                rest += &format!("-m conntrack --ctstate {} ", l.join(","));
            }
            Match::Mark { negate, mark } => {
                rest += &format!("-m mark {}--mark {} ", neg(*negate), hex(*mark))
            }
            Match::ConnMark { mark } => rest += &format!("-m connmark --mark {} ", hex(*mark)),
            Match::MarkMasked { negate, mark } => {
                rest += &format!("-m mark {}--mark {mark} ", neg(*negate))
            }
            Match::ConnMarkMasked { mark } => rest += &format!("-m connmark --mark {mark} "),
            Match::SocketExists => rest += "-m owner --socket-exists ",
            Match::DstInSet { set } => rest += &format!("-m set --match-set {} dst ", set.name),
        }
    }
    let ip = [src, dst, iif, oif, proto].into_iter().flatten().collect();
    (ip, rest)
}

/// The target as save prints it, defaults spelled out.
fn save_target(target: &Target, family: Family) -> String {
    match target {
        Target::Jump { chain } => format!("-j {}", chain.xt_name()),
        Target::Return => "-j RETURN".into(),
        Target::Accept => "-j ACCEPT".into(),
        Target::Drop => "-j DROP".into(),
        Target::Redirect { port } => format!("-j REDIRECT --to-ports {port}"),
        Target::Tproxy { port, mark } => {
            let any = if family == Family::V4 {
                "0.0.0.0"
            } else {
                "::"
            };
            format!(
                "-j TPROXY --on-port {port} --on-ip {any} --tproxy-mark {}/0xffffffff",
                hex(*mark)
            )
        }
        Target::SetMark { mark } => format!("-j MARK --set-xmark {}/0xffffffff", hex(*mark)),
        Target::SaveMark => {
            "-j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff".into()
        }
        Target::RestoreMark => {
            "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff".into()
        }
        Target::CtZone { zone } => format!("-j CT --zone {zone}"),
        Target::SetConnMark { mark } => format!("-j CONNMARK --set-xmark {mark}"),
        Target::RestoreMarkMasked { ctmask } => {
            format!("-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask {ctmask:#x}")
        }
        Target::Snat { to } => format!("-j SNAT --to-source {to}"),
    }
}

/// The state the plan's rules produce (in save form, inserts resolved), per table.
pub fn expected(rules: &[XtRule], family: Family) -> State {
    let mut state = State::new();
    for r in rules {
        let t = state.entry(r.table.xt_name().to_string()).or_default();
        if let Target::Jump { chain } = r.target
            && !chain.is_builtin()
        {
            t.chains.entry(chain.xt_name().to_string()).or_default();
        }
        let list = t.chains.entry(r.chain.xt_name().to_string()).or_default();
        let text = save_rule(r, family);
        match r.position {
            Position::Insert(n) if (n as usize) <= list.len() && n >= 1 => {
                list.insert(n as usize - 1, text)
            }
            _ => list.push(text),
        }
    }
    state
}

/// Whether a live rule in a built-in chain is ours: it jumps to one of the scheme's chains,
/// or it is a bookkeeping rule carrying one of the plan's marks (a TPROXY scheme's rules in
/// mangle: CONNMARK save/restore, MARK set, or a RETURN on the mark), or it equals a rule the
/// plan puts in that chain (e.g. a `-c` RETURN).
pub fn builtin_rule_is_ours(spec: &str, ours: &Ownership, planned: &[String]) -> bool {
    let words: Vec<&str> = spec.split_whitespace().collect();
    if words
        .windows(2)
        .any(|w| w[0] == "-j" && ours.scheme.owns_xt_chain(w[1]))
    {
        return true;
    }
    if planned.iter().any(|p| p == spec) {
        return true;
    }
    let carries = |s: &str| {
        ours.marks.iter().map(|m| hex(*m)).any(|m| {
            s.contains(&format!("--mark {m} ")) || s.contains(&format!("--set-xmark {m}/"))
        })
    };
    let shapes = [
        "-j CONNMARK --save-mark",
        "-j CONNMARK --restore-mark",
        "-j MARK --set-xmark",
    ];
    carries(spec) && (shapes.iter().any(|s| spec.contains(s)) || spec.ends_with(" -j RETURN"))
}

/// Names of the chains whose content differs between `live` and `want`, as `table/CHAIN`.
/// Built-in chains are compared on the rules that are ours only.
pub fn drift(live: &State, want: &State, ours: &Ownership) -> Vec<String> {
    let mut out = Vec::new();
    let tables: std::collections::BTreeSet<&String> = live.keys().chain(want.keys()).collect();
    let empty = TableState::default();
    for t in tables {
        let l = live.get(t).unwrap_or(&empty);
        let w = want.get(t).unwrap_or(&empty);
        let chains: std::collections::BTreeSet<&String> =
            l.chains.keys().chain(w.chains.keys()).collect();
        for c in chains {
            let want_rules = w.chains.get(c).cloned().unwrap_or_default();
            let live_rules: Vec<String> = if ours.scheme.owns_xt_chain(c) {
                match l.chains.get(c) {
                    Some(r) => r.clone(),
                    None => {
                        out.push(format!("{t}/{c} (missing)"));
                        continue;
                    }
                }
            } else {
                l.chains
                    .get(c)
                    .map(|rules| {
                        rules
                            .iter()
                            .filter(|r| builtin_rule_is_ours(r, ours, &want_rules))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if ours.scheme.owns_xt_chain(c) && !w.chains.contains_key(c) {
                out.push(format!("{t}/{c} (not in the new rules)"));
            } else if live_rules != want_rules {
                out.push(format!("{t}/{c}"));
            }
        }
    }
    out
}

/// Chains of ours by name that jump to a chain of the same table that is not ours, as
/// `table/CHAIN -> TARGET`: another scheme's chain of the same name, such as the sidecar's nat
/// `ISTIO_OUTPUT` (jumping to its `ISTIO_REDIRECT`) under ambient, whose chains jump to none.
/// Only for a scheme that owns chains by exact name: one owning a prefix (the sidecar's
/// `ISTIO_`) takes every chain of it as its own, whatever it jumps to.
pub fn namesakes(live: &State, ours: &Ownership) -> Vec<String> {
    let mut out = Vec::new();
    if !matches!(ours.scheme.xt_chains, crate::plan::XtChains::Named(_)) {
        return out;
    }
    for (t, ts) in live {
        for (c, rules) in ts
            .chains
            .iter()
            .filter(|(c, _)| ours.scheme.owns_xt_chain(c))
        {
            for r in rules {
                let words: Vec<&str> = r.split_whitespace().collect();
                for w in words.windows(2) {
                    let other = w[1];
                    if matches!(w[0], "-j" | "-g")
                        && ts.chains.contains_key(other)
                        && !ours.scheme.owns_xt_chain(other)
                    {
                        out.push(format!("{t}/{c} -> {other}"));
                    }
                }
            }
        }
    }
    out.dedup();
    out
}

/// Whether the live state holds anything of ours.
pub fn has_ours(live: &State, ours: &Ownership) -> bool {
    live.values().any(|ts| {
        ts.chains.iter().any(|(c, rules)| {
            ours.scheme.owns_xt_chain(c) || rules.iter().any(|r| builtin_rule_is_ours(r, ours, &[]))
        })
    })
}

/// A restore text (for `--noflush`) that removes everything of ours from `live` and, with
/// `install`, adds the new rules, one COMMIT per table: our rules in built-in chains are
/// deleted by their live spec, our chains flushed, chains `planned` does not keep deleted,
/// then the new rules appended. Foreign rules are never mentioned. `planned` is the state
/// the flags describe (its built-in-chain rules, such as a `-c` RETURN, count as ours).
/// `None` when there is nothing to do.
pub fn replace_text(
    live: &State,
    planned: &State,
    install: Option<&[XtRule]>,
    ours: &Ownership,
) -> Option<String> {
    let then = install.map(|rules| (rules, planned));
    let tables: std::collections::BTreeSet<String> = live
        .keys()
        .cloned()
        .chain(then.iter().flat_map(|(_, w)| w.keys().cloned()))
        .collect();
    let mut out = String::new();
    let empty = TableState::default();
    for t in tables {
        let l = live.get(&t).unwrap_or(&empty);
        let w = then.and_then(|(_, w)| w.get(&t));
        let planned_builtin = |c: &str| -> Vec<String> {
            planned
                .get(&t)
                .and_then(|p| p.chains.get(c))
                .cloned()
                .unwrap_or_default()
        };
        let mut body = String::new();
        for (c, rules) in &l.chains {
            if ours.scheme.owns_xt_chain(c) {
                continue;
            }
            let planned = planned_builtin(c);
            let probe = |r: &str| t == "nat" && c == "INPUT" && r == PROBE_SPEC;
            for r in rules
                .iter()
                .filter(|r| builtin_rule_is_ours(r, ours, &planned) || probe(r))
            {
                body += &format!("-D {c} {r}\n");
            }
        }
        let mine: Vec<&String> = l
            .chains
            .keys()
            .filter(|c| ours.scheme.owns_xt_chain(c))
            .collect();
        for c in &mine {
            body += &format!("-F {c}\n");
        }
        for c in &mine {
            if !w.is_some_and(|w| w.chains.contains_key(*c)) {
                body += &format!("-X {c}\n");
            }
        }
        if let Some((rules, want)) = then
            && let Some(wt) = want.get(&t)
        {
            for c in wt.chains.keys().filter(|c| ours.scheme.owns_xt_chain(c)) {
                if !l.chains.contains_key(c) {
                    body += &format!("-N {c}\n");
                }
            }
            for r in rules.iter().filter(|r| r.table.xt_name() == t) {
                body += &crate::render::iptables::rule_line(r);
                body.push('\n');
            }
        }
        if !body.is_empty() {
            out += &format!("*{t}\n{body}COMMIT\n");
        }
    }
    (!out.is_empty()).then_some(out)
}
