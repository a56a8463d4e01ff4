//! Upstream's dry-run trace (docs/upstream.md, "The iptables text"): what its dependency stub records for one run, so a
//! `DRY_RUN_FILE_PATH` consumer sees the same file. Saves are recorded as bare binary names,
//! restores as their stdin lines, other commands as the binary and its arguments.

use crate::plan::{Family, XtablesPlan};
use crate::render::iptables::{binary, cleanup_commands, restore};

fn push_lines(out: &mut Vec<String>, text: &str) {
    out.extend(text.lines().map(str::to_string));
}

/// The trace of an apply into a clean namespace.
pub fn apply(plan: &XtablesPlan) -> String {
    let mut rec = vec!["iptables-save".to_string(), "ip6tables-save".to_string()];
    for f in plan.families() {
        push_lines(&mut rec, &restore(plan.rules(f)));
    }
    final_saves(plan, &mut rec);
    finish(rec)
}

/// The trace of `--cleanup-only`: the quiet `-D`/`-F`/`-X` commands per family.
pub fn cleanup(plan: &XtablesPlan) -> String {
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
    use super::*;
    use crate::plan::testing::policy;

    #[test]
    fn saves_both_families_first_and_programmed_ones_last() {
        let v4 = crate::plan::build(&policy(&[]));
        let t = apply(&v4.xtables);
        assert!(
            t.starts_with("iptables-save\nip6tables-save\n* nat\n"),
            "{t}"
        );
        assert!(t.ends_with("COMMIT\niptables-save\n"), "{t}");
        let v6 = crate::plan::build(&policy(&["--enable-ipv6", "true"]));
        assert!(apply(&v6.xtables).ends_with("COMMIT\niptables-save\nip6tables-save\n"));
    }

    #[test]
    fn cleanup_records_the_quiet_commands_with_their_binary() {
        let p = crate::plan::build(&policy(&["--enable-ipv6", "true"]));
        let t = cleanup(&p.xtables);
        assert!(
            t.contains("\niptables -t nat -D OUTPUT -j ISTIO_OUTPUT\n"),
            "{t}"
        );
        assert!(t.contains("\nip6tables -t nat -X ISTIO_OUTPUT\n"), "{t}");
    }
}
