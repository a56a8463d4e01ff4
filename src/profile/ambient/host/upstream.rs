//! What upstream's agent runs for the node's rules, in its words: per family the
//! `iptables-restore --noflush` input of `AppendHostRules` (its dependency stub records the
//! state check's two saves first), or the commands of `DeleteHostRules` (each rule undone in
//! reverse order, then a flush and a delete of its chain); the nftables transaction of its
//! nft twin; and the lines of a member's add or remove.

use std::net::IpAddr;

use super::flags::PodUid;
use crate::options::{BackendChoice, Verb};
use crate::plan::{AddrSet, Family, Plan, XtRule};
use crate::render::iptables::{binary, chain_teardown, restore, rule_spec};
use crate::render::{self, nft};
use crate::values::OutputFormat;

/// `DeleteHostRules`' commands for one family's rules, without the binary.
pub fn cleanup_commands(rules: &[XtRule]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for r in rules.iter().rev() {
        let mut c = vec!["-t".into(), r.table.xt_name().into(), "-D".into()];
        c.push(r.chain.xt_name().into());
        c.extend(rule_spec(r));
        cmds.push(c);
    }
    cmds.extend(chain_teardown(rules));
    cmds
}

/// What `--dry-run` prints.
pub fn dry_run(verb: Verb, backend: BackendChoice, format: OutputFormat, plan: &Plan) -> String {
    let clean = verb == Verb::Clean;
    match (format, backend) {
        (OutputFormat::Json, _) => render::json(plan),
        (OutputFormat::Text, BackendChoice::Netlink) if clean => {
            nft::cleanup_transaction(plan.ours.scheme)
        }
        (OutputFormat::Text, BackendChoice::Netlink) => nft::transaction(&plan.nft),
        (OutputFormat::Text, BackendChoice::Iptables(_)) => {
            let mut s = String::new();
            for f in plan.xtables.families() {
                let (label, bin) = (label(f), binary(f));
                let rules = plan.xtables.rules(f);
                if clean {
                    s.push_str(&format!("# {label}: the {bin} commands upstream's clean runs (meshtables' clean removes these objects and the ipset)\n"));
                    for cmd in cleanup_commands(rules) {
                        s.push_str(&format!("{bin} {}\n", cmd.join(" ")));
                    }
                } else {
                    s.push_str(&format!("# {label}: {bin}-restore --noflush input\n"));
                    s.push_str(&restore(rules));
                }
            }
            s
        }
    }
}

fn label(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// What upstream's dependency stub records for the same run (`DRY_RUN_FILE_PATH`).
pub fn trace_file(verb: Verb, backend: BackendChoice, plan: &Plan) -> String {
    let clean = verb == Verb::Clean;
    if backend == BackendChoice::Netlink {
        // The agent makes the sets at its start (`NewHostSetManager`), then the rules.
        return match clean {
            true => nft::cleanup_transaction(plan.ours.scheme),
            false => sets_transaction(plan) + &nft::transaction(&plan.nft),
        };
    }
    let mut lines = Vec::new();
    if !clean {
        lines.push("iptables-save".to_string());
        lines.push("ip6tables-save".to_string());
    }
    for f in plan.xtables.families() {
        let rules = plan.xtables.rules(f);
        if clean {
            for cmd in cleanup_commands(rules) {
                lines.push(format!("{} {}", binary(f), cmd.join(" ")));
            }
        } else {
            lines.extend(restore(rules).lines().map(str::to_string));
        }
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The nftables text of the sets an apply makes (upstream's `initializeSets`, run once at the
/// agent's start): the table, then each family's set with its comment.
pub fn sets_transaction(plan: &Plan) -> String {
    let mut s = String::new();
    let Some(t) = plan.ours.scheme.tables.first() else {
        return s;
    };
    s.push_str(&format!("add table inet {}\n", t.nft_name));
    for set in &plan.sets {
        s.push_str(&nft::set_line(t, set));
        s.push('\n');
    }
    s
}

/// A member's add or remove, as `nft` text (upstream's knftables transaction) or as the
/// `ipset` command that does the same.
pub fn member_line(
    netlink: bool,
    table: &str,
    set: &AddrSet,
    addr: IpAddr,
    uid: &PodUid,
    add: bool,
) -> String {
    let a = render::iptables::addr_text(addr);
    match (netlink, add) {
        (true, true) => format!(
            "add element inet {table} {} {{ {a} comment \"{uid}\" }}\n",
            set.name
        ),
        (true, false) => format!("delete element inet {table} {} {{ {a} }}\n", set.name),
        (false, true) => format!("ipset add {} {a} comment \"{uid}\" -exist\n", set.name),
        (false, false) => format!("ipset del {} {a}\n", set.name),
    }
}
