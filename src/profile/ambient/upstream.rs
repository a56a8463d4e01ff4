//! What Istio ambient's node agent runs, in its own words, for a dry run users diff against
//! upstream: per family the `iptables-restore --noflush` input of `AppendInpodRules` (or the
//! commands of `DeleteInpodRules`), the nftables transaction of its nft twin (or of its
//! delete), and for `DRY_RUN_FILE_PATH` the lines upstream's dependency stub records for the
//! same run (the two saves its state check runs, then each restore's input; the lines of its
//! tests' goldens, each ending in a newline, as the stub writes its dry-run file).

use super::chains::{ISTIO_OUTPUT, ISTIO_PRERT};
use crate::options::{BackendChoice, Verb};
use crate::plan::{Chain, Family, Plan, Table};
use crate::render::iptables::{binary, restore};
use crate::render::{self, nft};
use crate::values::OutputFormat;

/// `DeleteInpodRules`' commands for one family, in its order, without the binary: the jumps
/// from the built-in chains, then a flush and a delete of both chains in every table.
/// (meshtables' clean removes exactly these objects, from the live state, in one restore per
/// table.)
pub fn cleanup_commands() -> Vec<Vec<String>> {
    let jumps: [(Table, &str, Chain); 6] = [
        (Table::Mangle, "PREROUTING", ISTIO_PRERT),
        (Table::Mangle, "OUTPUT", ISTIO_OUTPUT),
        (Table::Nat, "OUTPUT", ISTIO_OUTPUT),
        (Table::Raw, "PREROUTING", ISTIO_PRERT),
        (Table::Raw, "OUTPUT", ISTIO_OUTPUT),
        (Table::Nat, "PREROUTING", ISTIO_PRERT),
    ];
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut cmds: Vec<Vec<String>> = jumps
        .iter()
        .map(|(t, from, to)| words(&["-t", t.xt_name(), "-D", from, "-j", to.xt_name()]))
        .collect();
    for op in ["-F", "-X"] {
        for t in [Table::Mangle, Table::Nat, Table::Raw] {
            for c in [ISTIO_PRERT, ISTIO_OUTPUT] {
                cmds.push(words(&["-t", t.xt_name(), op, c.xt_name()]));
            }
        }
    }
    cmds
}

/// What `--dry-run` prints on stdout: the plan as JSON; the nftables transaction (apply,
/// check) or upstream's delete transaction (clean); or per family the restore input (apply,
/// check) or the commands upstream's clean runs.
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
                let (label, bin) = match f {
                    Family::V4 => ("IPv4", "iptables"),
                    Family::V6 => ("IPv6", "ip6tables"),
                };
                if clean {
                    s.push_str(&format!(
                        "# {label}: the {bin} commands upstream's clean runs (meshtables' clean removes these objects, and whatever else of the ambient scheme's the live rules hold)\n"
                    ));
                    for cmd in cleanup_commands() {
                        s.push_str(&format!("{bin} {}\n", cmd.join(" ")));
                    }
                } else {
                    s.push_str(&format!("# {label}: {bin}-restore --noflush input\n"));
                    s.push_str(&restore(plan.xtables.rules(f)));
                }
            }
            s
        }
    }
}

/// What upstream's dependency stub writes to `DRY_RUN_FILE_PATH` for the same run: the
/// nftables transaction; or both saves, then each family's restore input (apply, check) or
/// its clean commands.
pub fn trace_file(verb: Verb, backend: BackendChoice, plan: &Plan) -> String {
    let clean = verb == Verb::Clean;
    if backend == BackendChoice::Netlink {
        return match clean {
            true => nft::cleanup_transaction(plan.ours.scheme),
            false => nft::transaction(&plan.nft),
        };
    }
    let mut lines = Vec::new();
    if !clean {
        // `VerifyIptablesState` reads both families first, IPv6 on or off.
        lines.push("iptables-save".to_string());
        lines.push("ip6tables-save".to_string());
    }
    for f in plan.xtables.families() {
        if clean {
            for cmd in cleanup_commands() {
                lines.push(format!("{} {}", binary(f), cmd.join(" ")));
            }
        } else {
            lines.extend(restore(plan.xtables.rules(f)).lines().map(str::to_string));
        }
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}
