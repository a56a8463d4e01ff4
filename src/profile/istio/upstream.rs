//! What istio-iptables prints and records beyond the rules, kept as upstream does it
//! (docs/upstream.md, "The iptables text"): the `--dry-run` text, the commands upstream's
//! `--cleanup-only` runs, and its dry-run trace for `DRY_RUN_FILE_PATH` (what its dependency
//! stub records for one run: saves as bare binary names, restores as their stdin lines, other
//! commands as the binary and its arguments).

use crate::options::{BackendChoice, Verb};
use crate::plan::{Family, Plan, XtRule, XtablesPlan};
use crate::render::iptables::{self, binary, restore};
use crate::render::{self, nft};
use crate::values::OutputFormat;

/// What `--dry-run` prints on stdout: the plan as JSON; or the nftables transaction (apply)
/// or upstream's clean transaction; or per family the restore text (apply, check) or the
/// commands upstream's clean runs for these flags.
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
                let rules = plan.xtables.rules(f);
                if clean {
                    s.push_str(&format!(
                        "# {label}: the {bin} commands upstream's clean runs for these flags (meshtables' clean removes these, and whatever else of ours the live rules hold)\n"
                    ));
                    for cmd in cleanup_commands(rules) {
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
        BackendChoice::Iptables(_) if clean => trace_cleanup(&plan.xtables),
        BackendChoice::Iptables(_) => trace_apply(&plan.xtables),
    }
}

/// Upstream's `--cleanup-only` commands for one family (docs/upstream.md, "The iptables text"), as argument lists without
/// the binary: `-t T -D CHAIN ...` for every rule in reverse (rules inside ISTIO_ chains are
/// skipped unless they jump to one: the flush removes them), then `-F`/`-X` for every Istio
/// chain in reverse order of first appearance.
pub fn cleanup_commands(rules: &[XtRule]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for r in rules.iter().rev() {
        let istio_chain = !r.chain.is_builtin();
        let jumps_to_istio = iptables::jump_target(r).is_some_and(|c| !c.is_builtin());
        if istio_chain && !jumps_to_istio {
            continue;
        }
        let mut c = vec![
            "-t".to_string(),
            r.table.xt_name().to_string(),
            "-D".to_string(),
            r.chain.xt_name().to_string(),
        ];
        c.extend(iptables::rule_spec(r));
        cmds.push(c);
    }
    cmds.extend(iptables::chain_teardown(rules));
    cmds
}

fn push_lines(out: &mut Vec<String>, text: &str) {
    out.extend(text.lines().map(str::to_string));
}

/// The trace of an apply into a clean namespace.
pub fn trace_apply(plan: &XtablesPlan) -> String {
    let mut rec = vec!["iptables-save".to_string(), "ip6tables-save".to_string()];
    for f in plan.families() {
        push_lines(&mut rec, &restore(plan.rules(f)));
    }
    final_saves(plan, &mut rec);
    finish(rec)
}

/// The trace of `--cleanup-only`: the quiet `-D`/`-F`/`-X` commands per family.
pub fn trace_cleanup(plan: &XtablesPlan) -> String {
    let mut rec = vec!["iptables-save".to_string(), "ip6tables-save".to_string()];
    for f in plan.families() {
        for cmd in cleanup_commands(plan.rules(f)) {
            rec.push(format!("{} {}", binary(f), cmd.join(" ")));
        }
    }
    final_saves(plan, &mut rec);
    finish(rec)
}

fn final_saves(plan: &XtablesPlan, rec: &mut Vec<String>) {
    rec.push("iptables-save".into());
    if plan.families().contains(&Family::V6) {
        rec.push("ip6tables-save".into());
    }
}

fn finish(rec: Vec<String>) -> String {
    let mut s = rec.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::testing::policy;
    use super::*;
    use crate::plan::Table;
    use crate::render::nft::{chain_line, cleanup_transaction, transaction};

    #[test]
    fn restore_text_as_upstream_writes_it() {
        let p = build(&policy(&["-b", "*", "-i", "*"]));
        let text = restore(p.xtables.rules(Family::V4));
        // `* nat` with a space (upstream prints it with fmt.Fprintln("*", table)).
        assert!(text.starts_with("* nat\n"), "{text}");
        // -N lines: chains in order of first appearance, then jump targets.
        let n: Vec<&str> = text.lines().filter(|l| l.starts_with("-N ")).collect();
        assert_eq!(
            n,
            [
                "-N ISTIO_INBOUND",
                "-N ISTIO_REDIRECT",
                "-N ISTIO_IN_REDIRECT",
                "-N ISTIO_OUTPUT"
            ]
        );
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn udp_redirects_say_to_port() {
        let p = build(&policy(&["--redirect-dns", "--capture-all-dns"]));
        let text = restore(p.xtables.rules(Family::V4));
        assert!(
            text.contains("-p udp --dport 53 -j REDIRECT --to-port 15053"),
            "{text}"
        );
        assert!(
            text.contains("-p tcp --dport 53 -j REDIRECT --to-ports 15053"),
            "{text}"
        );
    }

    #[test]
    fn cleanup_deletes_jumps_then_flushes_and_deletes_chains() {
        let p = build(&policy(&["-b", "8080"]));
        let cmds: Vec<String> = cleanup_commands(p.xtables.rules(Family::V4))
            .iter()
            .map(|c| c.join(" "))
            .collect();
        let first_flush = cmds.iter().position(|c| c.contains(" -F ")).unwrap();
        assert!(cmds[..first_flush].iter().all(|c| c.contains(" -D ")));
        assert!(cmds.contains(&"-t nat -D OUTPUT -j ISTIO_OUTPUT".to_string()));
        // Inside ISTIO_ chains only the jumps to other ISTIO_ chains are deleted one by one;
        // the rest goes with the flush.
        let inside: Vec<&String> = cmds.iter().filter(|c| c.contains(" -D ISTIO_")).collect();
        assert!(!inside.is_empty());
        assert!(inside.iter().all(|c| c.contains("-j ISTIO_")), "{inside:?}");
    }

    #[test]
    fn saves_both_families_first_and_programmed_ones_last() {
        let v4 = build(&policy(&[]));
        let t = trace_apply(&v4.xtables);
        assert!(
            t.starts_with("iptables-save\nip6tables-save\n* nat\n"),
            "{t}"
        );
        assert!(t.ends_with("COMMIT\niptables-save\n"), "{t}");
        let v6 = build(&policy(&["--enable-ipv6", "true"]));
        assert!(trace_apply(&v6.xtables).ends_with("COMMIT\niptables-save\nip6tables-save\n"));
    }

    #[test]
    fn cleanup_records_the_quiet_commands_with_their_binary() {
        let p = build(&policy(&["--enable-ipv6", "true"]));
        let t = trace_cleanup(&p.xtables);
        assert!(
            t.contains("\niptables -t nat -D OUTPUT -j ISTIO_OUTPUT\n"),
            "{t}"
        );
        assert!(t.contains("\nip6tables -t nat -X ISTIO_OUTPUT\n"), "{t}");
    }

    #[test]
    fn base_chains_declare_upstream_hooks_and_priorities() {
        let scheme = &crate::profile::istio::chains::SCHEME;
        let layout = |t| scheme.layout(t).unwrap();
        assert_eq!(
            chain_line(layout(Table::Mangle), crate::plan::builtin::OUTPUT),
            "add chain inet istio-proxy-mangle output { type route hook output priority -150 ; }"
        );
        assert_eq!(
            chain_line(
                layout(Table::Nat),
                crate::profile::istio::chains::ISTIO_OUTPUT
            ),
            "add chain inet istio-proxy-nat istio-output"
        );
    }

    #[test]
    fn tproxy_names_its_family_and_raw_owner_matches_say_meta() {
        let p = build(&policy(&[
            "-m",
            "TPROXY",
            "-b",
            "*",
            "--enable-ipv6",
            "true",
            "--redirect-dns",
            "--capture-all-dns",
        ]));
        let text = transaction(&p.nft);
        assert!(
            text.contains("tproxy ip to :15006 meta mark set 1337 counter accept"),
            "{text}"
        );
        assert!(
            text.contains("tproxy ip6 to :15006 meta mark set 1337 counter accept"),
            "{text}"
        );
        assert!(
            text.contains("udp dport 53 meta skuid 1337 counter ct zone set 1"),
            "{text}"
        );
        assert!(
            text.lines()
                .all(|l| !l.contains("raw") || !l.contains(" skuid") || l.contains("meta skuid"))
        );
    }

    #[test]
    fn a_clean_adds_then_deletes_each_table() {
        let t = cleanup_transaction(&crate::profile::istio::chains::SCHEME);
        assert_eq!(t.lines().count(), 6);
        assert!(
            t.starts_with("add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n")
        );
    }
}
