//! The README's tables that describe flags are generated from the flag table
//! (`meshtables::flags`): the flag table (name, variables, default, value) and the table of
//! settings istio-cni takes from the pod, and the installer's settings. These trials fail when
//! the README differs;
//! `UPDATE_README=1 cargo test --test readme` rewrites both sections. A third trial checks that
//! `--help` lists every flag with its variables.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::PathBuf;

use meshtables::flags;
use meshtables::profile::ambient::flags as ambient;
use meshtables::profile::istio::flags as istio;
use support::trials::{NOTHING, Trials};

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// The README's text between the markers of section `name`, and the text around it.
fn section(text: &str, name: &str) -> Option<(usize, usize)> {
    let begin = format!("<!-- generated: {name} -->\n");
    let end = format!("<!-- end of generated: {name} -->");
    let b = text.find(&begin)? + begin.len();
    let e = b + text[b..].find(&end)?;
    Some((b, e))
}

/// Trials run in parallel; the README is read and rewritten by one at a time.
static README: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(name: &'static str, want: String) {
    let _one_at_a_time = README.lock().unwrap_or_else(|e| e.into_inner());
    let path = readme();
    let text = std::fs::read_to_string(&path).unwrap();
    let (b, e) = section(&text, name)
        .unwrap_or_else(|| panic!("README.md has no generated section {name:?}"));
    if std::env::var("UPDATE_README").is_ok_and(|v| v == "1") {
        let new = format!("{}{want}{}", &text[..b], &text[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    let got = &text[b..e];
    assert!(
        got == want,
        "README.md's {name} table differs from the flag table (- README, + table):\n{}\nRun UPDATE_README=1 cargo test --test readme",
        support::diff(got, &want)
    );
}

fn help_lists_every_flag() {
    let out = support::command(&["apply", "--help"], &[])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for s in istio::ALL {
        assert!(
            help.contains(&format!("--{}", s.long)),
            "--help lacks --{}",
            s.long
        );
        for e in s.envs {
            assert!(help.contains(e), "--help of --{} lacks {e}", s.long);
        }
        if let Some(c) = s.short {
            assert!(
                help.contains(&format!("-{c}, --{}", s.long)),
                "--help lacks -{c}"
            );
        }
    }
}

fn help_lists_every_ambient_flag() {
    let out = support::command(&["ambient", "apply", "--help"], &[])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for s in ambient::ALL {
        assert!(
            help.contains(&format!("--{}", s.long)),
            "--help lacks --{}",
            s.long
        );
        for e in s.envs {
            assert!(help.contains(e), "--help of --{} lacks {e}", s.long);
        }
    }
}

fn main() {
    let mut t = Trials::new();
    t.add("readme::ambient_flag_table", NOTHING, || {
        check("ambient flag table", ambient::markdown_table())
    });
    t.add("readme::ambient_host_flag_table", NOTHING, || {
        check(
            "ambient host flag table",
            meshtables::profile::ambient::host::flags::markdown_table(),
        )
    });
    t.add("readme::ambient_pod_annotations", NOTHING, || {
        check("ambient pod annotations", ambient::pod_table())
    });
    t.add(
        "help_lists_every_ambient_flag",
        NOTHING,
        help_lists_every_ambient_flag,
    );
    t.add("readme::flag_table", NOTHING, || {
        check("flag table", istio::markdown_table())
    });
    t.add("readme::pod_table", NOTHING, || {
        check("pod fields", istio::pod_table())
    });
    t.add("readme::installer_table", NOTHING, || {
        check("installer settings", flags::install_table())
    });
    t.add("help_lists_every_flag", NOTHING, help_lists_every_flag);
    // Five README tables (Istio's flags, pod fields, the installer's settings, ambient's flags
    // and annotations) and two --help checks (Istio's, ambient's).
    t.declare(8, &[("readme", 6)]);
    t.run()
}
