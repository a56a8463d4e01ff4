//! Pure renderers: a `Plan` in, text out. Nothing here touches the machine.
//!
//! - `iptables`: `iptables-restore` input per family, byte-identical to upstream's;
//! - `nft`: the `nft -f` transaction upstream's nftables mode produces, which is also an exact
//!   picture of the netlink batch;
//! - `trace`: upstream's dry-run trace (what its dependency stub records);
//! - `dry_run`: what `--dry-run` prints for an action, in the chosen format (text or JSON).

pub mod iptables;
pub mod nft;
pub mod trace;

use crate::options::{BackendChoice, Verb};
use crate::plan::{Family, Plan};
use crate::values::OutputFormat;

/// What `--dry-run` prints on stdout: the plan as JSON; or the nftables transaction (apply)
/// or upstream's clean transaction; or per family the restore text (apply, check) or the
/// commands upstream's clean runs for these flags.
pub fn dry_run(verb: Verb, backend: BackendChoice, format: OutputFormat, plan: &Plan) -> String {
    let clean = verb == Verb::Clean;
    match (format, backend) {
        (OutputFormat::Json, _) => {
            let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
            s.push('\n');
            s
        }
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
                let rules = plan.xtables.rules(f);
                if clean {
                    s.push_str(&format!(
                        "# {label}: the {bin} commands upstream's clean runs for these flags (meshtables' clean removes these, and whatever else of ours the live rules hold)\n"
                    ));
                    for cmd in iptables::cleanup_commands(rules) {
                        s.push_str(&format!("{bin} {}\n", cmd.join(" ")));
                    }
                } else {
                    s.push_str(&format!("# {label}: {bin}-restore --noflush input\n"));
                    s.push_str(&iptables::restore(rules));
                }
            }
            s
        }
    }
}

/// Upstream's dry-run trace for `DRY_RUN_FILE_PATH`: the nftables transaction, or what its
/// iptables dependency stub records.
pub fn trace_file(verb: Verb, backend: BackendChoice, plan: &Plan) -> String {
    let clean = verb == Verb::Clean;
    match backend {
        BackendChoice::Netlink if clean => nft::cleanup_transaction(plan.ours.scheme),
        BackendChoice::Netlink => nft::transaction(&plan.nft),
        BackendChoice::Iptables(_) if clean => trace::cleanup(&plan.xtables),
        BackendChoice::Iptables(_) => trace::apply(&plan.xtables),
    }
}
