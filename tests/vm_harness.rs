//! The parts of `vm-tests/run` that judge a VM's console log: `vm-tests/verdicts.awk` turns
//! the harness's "test NAME ... VERDICT" lines into "NAME VERDICT", and every verdict that is
//! not `ok` fails CI. The console interleaves the output of parallel trials and of the kernel,
//! so these are the shapes a real log has had. Needs `awk` only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::trials::{Needs, Trials};

const AWK: Needs = Needs {
    root: false,
    programs: &["awk"],
    shared: false,
};

/// The verdicts `verdicts.awk` reads from `log`, one "NAME VERDICT" per line.
fn verdicts(log: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-tests/verdicts.awk");
    let mut awk = Command::new("awk")
        .arg("-f")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    awk.stdin.take().unwrap().write_all(log.as_bytes()).unwrap();
    let out = awk.wait_with_output().unwrap();
    assert!(out.status.success(), "awk failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn main() {
    let mut t = Trials::new();
    let cases: [(&str, &str, &str); 6] = [
        (
            "a_plain_verdict",
            "test s1::nftables ... ok\n",
            "s1::nftables ok\n",
        ),
        (
            "colours_and_carriage_returns_are_not_part_of_it",
            "test s1::nft ... \x1b[32mok\x1b[0m\r\n",
            "s1::nft ok\n",
        ),
        // Stop 26's CI: another writer's byte landed right after the verdict.
        (
            "bytes_after_the_verdict_are_not_part_of_it",
            "test s7_dns::nftables-netlink ... ok7\n",
            "s7_dns::nftables-netlink ok\n",
        ),
        (
            "a_verdict_after_another_trials_line",
            "test s2::legacy ... nft same_config_8: 10 rounds\nok\n",
            "s2::legacy ok\n",
        ),
        (
            "a_failure_is_a_failure",
            "test s3::nft ... FAILED\ntest s4::nft ... FAILEDx\n",
            "s3::nft FAILED\ns4::nft FAILED\n",
        ),
        (
            "a_trial_without_a_verdict_is_named",
            "test s5::nft ... ok\ntest s6::nft ... \n[  167.4] reboot: Power down\n",
            "s5::nft ok\ns6::nft no-verdict\n",
        ),
    ];
    for (name, log, expected) in cases {
        t.add(name, AWK, move || {
            assert_eq!(verdicts(log), expected, "log:\n{log}");
        });
    }
    t.declare(6, &[]);
    t.run()
}
