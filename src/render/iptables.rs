//! `iptables-restore` input, byte-identical to upstream's `buildRestore` (SPEC §3.6), and the
//! per-rule argument lists that the clean-up and the iptables backend reuse.

use crate::plan::{Chain, Family, Match, Position, Proto, Table, Target, XtRule};

/// The words of one rule after `-A CHAIN` / `-I CHAIN N`: matches in plan order, then target.
pub fn rule_spec(rule: &XtRule) -> Vec<String> {
    let mut w: Vec<String> = Vec::new();
    let mut push = |s: &str| w.push(s.to_string());
    for m in &rule.matches {
        match m {
            Match::InIface { name } => {
                push("-i");
                push(name.as_str());
            }
            Match::OutIface { name } => {
                push("-o");
                push(name.as_str());
            }
            Match::Proto { proto } => {
                push("-p");
                push(proto.name());
            }
            Match::Src { negate, cidr } => {
                if *negate {
                    push("!");
                }
                push("-s");
                push(&cidr.to_string());
            }
            Match::Dst { negate, cidr } => {
                if *negate {
                    push("!");
                }
                push("-d");
                push(&cidr.to_string());
            }
            Match::Dport { negate, port, .. } => {
                if *negate {
                    push("!");
                }
                push("--dport");
                push(&port.to_string());
            }
            Match::Sport { negate, port, .. } => {
                if *negate {
                    push("!");
                }
                push("--sport");
                push(&port.to_string());
            }
            Match::DportsNotIn { ports, .. } => {
                let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                for s in ["-m", "multiport", "!", "--dports"] {
                    push(s);
                }
                push(&list.join(","));
            }
            Match::Uid { negate, uid } => {
                push("-m");
                push("owner");
                if *negate {
                    push("!");
                }
                push("--uid-owner");
                push(&uid.to_string());
            }
            Match::Gid { negate, gid } => {
                push("-m");
                push("owner");
                if *negate {
                    push("!");
                }
                push("--gid-owner");
                push(&gid.to_string());
            }
            Match::CtState { states } => {
                let list: Vec<&str> = states
                    .iter()
                    .map(|s| match s {
                        crate::plan::CtState::Invalid => "INVALID",
                        crate::plan::CtState::Related => "RELATED",
                        crate::plan::CtState::Established => "ESTABLISHED",
                    })
                    .collect();
                for s in ["-m", "conntrack", "--ctstate"] {
                    push(s);
                }
                push(&list.join(","));
            }
            Match::Mark { negate, mark } => {
                push("-m");
                push("mark");
                if *negate {
                    push("!");
                }
                push("--mark");
                push(&mark.to_string());
            }
            Match::ConnMark { mark } => {
                for s in ["-m", "connmark", "--mark"] {
                    push(s);
                }
                push(&mark.to_string());
            }
        }
    }
    push("-j");
    match &rule.target {
        Target::Jump { chain } => push(chain.xt_name()),
        Target::Return => push("RETURN"),
        Target::Accept => push("ACCEPT"),
        Target::Drop => push("DROP"),
        Target::Redirect { port } => {
            push("REDIRECT");
            // Upstream writes the singular option for its UDP DNS rules; both are accepted.
            let udp = rule
                .matches
                .iter()
                .any(|m| matches!(m, Match::Proto { proto: Proto::Udp }));
            push(if udp { "--to-port" } else { "--to-ports" });
            push(&port.to_string());
        }
        Target::Tproxy { port, mark } => {
            push("TPROXY");
            push("--tproxy-mark");
            push(&format!("{mark}/0xffffffff"));
            push("--on-port");
            push(&port.to_string());
        }
        Target::SetMark { mark } => {
            push("MARK");
            push("--set-mark");
            push(&mark.to_string());
        }
        Target::SaveMark => {
            push("CONNMARK");
            push("--save-mark");
        }
        Target::RestoreMark => {
            push("CONNMARK");
            push("--restore-mark");
        }
        Target::CtZone { zone } => {
            push("CT");
            push("--zone");
            push(&zone.to_string());
        }
    }
    w
}

/// `-A CHAIN ...` or `-I CHAIN N ...`, as one line.
pub fn rule_line(rule: &XtRule) -> String {
    let head = match rule.position {
        Position::Append => format!("-A {}", rule.chain.xt_name()),
        Position::Insert(n) => format!("-I {} {n}", rule.chain.xt_name()),
    };
    format!("{head} {}", rule_spec(rule).join(" "))
}

/// The chain a rule jumps to, when its target is a chain.
fn jump_target(rule: &XtRule) -> Option<Chain> {
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
            out.push_str(&rule_line(r));
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Upstream's `--cleanup-only` commands for one family (SPEC §4.1), as argument lists without
/// the binary: `-t T -D CHAIN ...` for every rule in reverse (rules inside ISTIO_ chains are
/// skipped unless they jump to one: the flush removes them), then `-F`/`-X` for every Istio
/// chain in reverse order of first appearance.
pub fn cleanup_commands(rules: &[XtRule]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for r in rules.iter().rev() {
        let istio_chain = !r.chain.is_builtin();
        let jumps_to_istio = jump_target(r).is_some_and(|c| !c.is_builtin());
        if istio_chain && !jumps_to_istio {
            continue;
        }
        let mut c = vec![
            "-t".to_string(),
            r.table.xt_name().to_string(),
            "-D".to_string(),
            r.chain.xt_name().to_string(),
        ];
        c.extend(rule_spec(r));
        cmds.push(c);
    }
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

/// The iptables binary base name of a family.
pub fn binary(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}
