//! What is ours and what is not, failures that must be failures, and inputs that must not
//! hang or crash a run. One trial per case (and per backend where it matters):
//!
//! - TPROXY routing: a route of our table that is not `local default dev lo` (a gateway
//!   default, `unreachable`, `blackhole`) fails apply before anything changes and names the
//!   route; `--reconcile` replaces it; `check` names one added later; `clean` leaves it.
//! - A failed apply is undone: a restore refused part-way (test fault injection) leaves the
//!   namespace exactly as it was, with every iptables variant.
//! - `clean` and `check` fail, naming the variant, when its `-save` cannot run.
//! - Upstream's detection probe rule: a leftover is removed by a rerun and by a clean; a
//!   probe whose delete fails is an error, not a silent leftover.
//! - The xtables lock: in CNI mode the host's /run/xtables.lock is not taken; a held lock
//!   is reported as such (not as "no kernel support for the nat table").
//! - A FIFO or plain file as `--network-namespace` or `--resolv-conf`, `/dev/zero` or a
//!   huge file as `--resolv-conf`, a thread that cannot be started: one error, no hang, no
//!   panic.
//!
//! Root for the namespace cases; ignored with the reason without it, failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::netns::Netns;
use support::trials::{NOTHING, Needs, Trials, root};

const NEEDS: Needs = root(&[
    "ip",
    "nft",
    "flock",
    "iptables-legacy",
    "iptables-legacy-save",
    "iptables-nft-save",
    "ip6tables-legacy-save",
    "ip6tables-nft-save",
]);

const TABLE: u32 = 133;

fn backend_args(backend: &str) -> Vec<&'static str> {
    match backend {
        "nftables" => vec!["--native-nftables"],
        "legacy" => vec!["--force-iptables-binary", "legacy"],
        "nft" => vec!["--force-iptables-binary", "nft"],
        other => panic!("unknown backend {other}"),
    }
}

const TPROXY: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-g",
    "1337",
    "-m",
    "TPROXY",
    "-b",
    "*",
    "-i",
    "*",
    "--enable-ipv6",
    "true",
];

/// `meshtables VERB ARGS --network-namespace NS`, with `env` added.
fn mt(ns: &Netns, verb: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = ns.path();
    let mut all = vec![verb];
    all.extend(args);
    all.extend(["--network-namespace", &path]);
    support::command(&all, env)
        .output()
        .expect("meshtables runs")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory to put first on PATH, with `name` replaced by a shell script.
fn fake_bin(tag: &str, name: &str, script: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshtables-fake-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A foreign route of our table, as `ip` adds it and as our messages describe it.
fn conflict(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "gateway_default" => (
            "ip -4 route add default via 10.244.1.1 dev eth0 table 133",
            "via 10.244.1.1",
        ),
        "unreachable_v6" => (
            "ip -6 route add unreachable default table 133",
            "unreachable default",
        ),
        "blackhole_v4" => (
            "ip -4 route add blackhole default table 133",
            "blackhole default",
        ),
        other => panic!("unknown conflict {other}"),
    }
}

fn conflicting_route_fails_apply(backend: &str, kind: &str) {
    let ns = Netns::new("conflict");
    let (add, named) = conflict(kind);
    assert!(ns.exec(add).status.success(), "{add}");
    let before = ns.state(TABLE);
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args(backend))
        .collect();
    let o = mt(&ns, "apply", &args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("not ours") && err(&o).contains(named),
        "{}",
        err(&o)
    );
    assert!(
        ns.state(TABLE) == before,
        "a refused apply changed the namespace"
    );
    let mut reconcile = args.clone();
    reconcile.push("--reconcile");
    let o = mt(&ns, "apply", &reconcile, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let routes = String::from_utf8_lossy(
        &ns.exec("ip -4 route show table 133; ip -6 route show table 133")
            .stdout,
    )
    .into_owned();
    assert!(
        !routes.contains(named),
        "--reconcile kept the route: {routes}"
    );
    let o = mt(&ns, "check", &args, &[]);
    assert!(o.status.success(), "check after --reconcile: {}", err(&o));
}

fn check_names_a_conflicting_route(backend: &str) {
    let ns = Netns::new("check");
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args(backend))
        .collect();
    assert!(mt(&ns, "apply", &args, &[]).status.success());
    assert!(
        ns.exec("ip -6 route add unreachable 2001:db8::/32 table 133")
            .status
            .success()
    );
    let o = mt(&ns, "check", &args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("not ours: ip -6 route unreachable 2001:db8::/32"),
        "{}",
        err(&o)
    );
}

fn clean_leaves_a_foreign_route(backend: &str) {
    let ns = Netns::new("keep");
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args(backend))
        .collect();
    assert!(mt(&ns, "apply", &args, &[]).status.success());
    assert!(
        ns.exec("ip -6 route add unreachable 2001:db8::/32 table 133")
            .status
            .success()
    );
    let o = mt(&ns, "clean", &args, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("left in place (not ours): ip -6 route unreachable 2001:db8::/32"),
        "{}",
        err(&o)
    );
    let left = String::from_utf8_lossy(
        &ns.exec("ip -4 route show table 133; ip -6 route show table 133; ip rule; ip -6 rule")
            .stdout,
    )
    .into_owned();
    assert!(
        left.contains("unreachable 2001:db8::/32"),
        "the foreign route was deleted: {left}"
    );
    assert!(
        !left.contains("local default") && !left.contains("fwmark"),
        "ours stayed: {left}"
    );
}

/// A restore refused after `family` earlier commits (fault injection): the run fails and the
/// namespace is exactly as it was, foreign rules included.
fn failed_apply_changes_nothing(backend: &str, family: usize) {
    let ns = Netns::new("undo");
    let x = format!("iptables-{backend}");
    let foreign = format!(
        "{x} -t nat -A OUTPUT -d 10.9.9.9 -j ACCEPT && ip6tables-{backend} -t mangle -A PREROUTING -j MARK --set-mark 7"
    );
    assert!(ns.exec(&foreign).status.success());
    let before = ns.state(TABLE);
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args(backend))
        .collect();
    let fault = format!("fail-family-{family}");
    let o = mt(&ns, "apply", &args, &[("MESHTABLES_TEST_FAULT", &fault)]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("MESHTABLES_NO_SUCH_CHAIN") || err(&o).contains("line"),
        "{}",
        err(&o)
    );
    let after = ns.state(TABLE);
    assert!(
        after == before,
        "a failed apply left changes:\n{}",
        after.brief()
    );
}

/// `clean` (every variant) and `check` (the forced one) fail naming the variant whose
/// `-save` cannot run.
fn unreadable_variant_fails(backend: &str, verb: &str) {
    let ns = Netns::new("unreadable");
    let name = format!("iptables-{backend}-save");
    let dir = fake_bin(
        &format!("{verb}-{backend}"),
        &name,
        "echo 'simulated: cannot read' >&2; exit 4",
    );
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args(backend))
        .collect();
    assert!(mt(&ns, "apply", &args, &[]).status.success());
    let o = mt(&ns, verb, &args, &[("PATH", &path_with(&dir))]);
    assert_eq!(o.status.code(), Some(1), "{verb}: {}", err(&o));
    let e = err(&o);
    assert!(
        e.contains("\terror\t")
            && e.contains(&format!("iptables-{backend}"))
            && e.contains("simulated: cannot read"),
        "{verb}: {e}"
    );
}

const PROBE_ADD: &str = "iptables-legacy -t nat -A INPUT -p 255 -j RETURN";

fn has_probe(ns: &Netns) -> bool {
    String::from_utf8_lossy(&ns.exec("iptables-legacy-save -t nat").stdout)
        .contains("-A INPUT -p 255 -j RETURN")
}

fn leftover_probe_is_removed(verb: &str) {
    let ns = Netns::new("probe");
    assert!(ns.exec(PROBE_ADD).status.success());
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args("legacy"))
        .collect();
    let o = mt(&ns, verb, &args, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!has_probe(&ns), "{verb} left the probe rule");
}

/// The probe's delete failing (a wrapper refuses `-D`) fails the run, naming it; the rerun
/// removes the rule.
fn failed_probe_delete_is_an_error() {
    let ns = Netns::new("probedel");
    let real = support::which("iptables-legacy").unwrap();
    let dir = fake_bin(
        "probedel",
        "iptables-legacy",
        &format!(
            "case \"$*\" in *'-D INPUT -p 255'*) echo 'simulated: delete refused' >&2; exit 1;; esac; exec {} \"$@\"",
            real.display()
        ),
    );
    // The wrapper resolves to itself, not to the real binary's other names.
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args("legacy"))
        .collect();
    let o = mt(&ns, "apply", &args, &[("PATH", &path_with(&dir))]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("simulated: delete refused"), "{}", err(&o));
    assert!(
        has_probe(&ns),
        "the wrapper should have left the probe rule"
    );
    let o = mt(&ns, "apply", &args, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!has_probe(&ns), "the rerun left the probe rule");
}

/// Holds an exclusive flock on `path` for `secs` in a child; returns it (killed on drop).
struct Held(std::process::Child);

impl Held {
    fn new(path: &str, secs: u32) -> Held {
        let child = std::process::Command::new("flock")
            .args(["-x", path, "sleep", &secs.to_string()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Held(child)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In CNI mode, legacy writers (detection's probe included) lock the namespace's path, so a
/// held /run/xtables.lock does not stall the run. The held lock lives in a private mount
/// namespace (a file bound over /run/xtables.lock), so other tests and the machine do not
/// see it.
fn cni_mode_does_not_take_the_global_lock() {
    let ns = Netns::new("lockfree");
    let path = ns.path();
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args("legacy"))
        .chain(["--cni-mode", "--network-namespace", &path])
        .collect();
    let private =
        std::env::temp_dir().join(format!("meshtables-xtables-{}.lock", std::process::id()));
    std::fs::write(&private, "").unwrap();
    let script = format!(
        "touch /run/xtables.lock && mount --bind {p} /run/xtables.lock && \
         {{ flock -x /run/xtables.lock sleep 60 >/dev/null 2>&1 & }}; holder=$!; sleep 0.3 && \
         flock -n /run/xtables.lock true && echo LOCK-NOT-HELD; \
         timeout 20 \"$B\" apply {a}; echo \"rc=$?\"; kill $holder",
        p = private.display(),
        a = args
            .iter()
            .map(|a| support::sh_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let t = Instant::now();
    let o = support::clear_our_env(&mut std::process::Command::new("unshare"))
        .args(["-m", "sh", "-c", &script])
        .env("B", support::bin())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("LOCK-NOT-HELD"),
        "the test's lock holder did not hold it"
    );
    assert!(out.contains("rc=0"), "{out}\n{}", err(&o));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "waited {:?} for a lock it should not take",
        t.elapsed()
    );
}

/// `ambient host apply --native-nftables --dry-run` without `--kubelet-uid`, in a pid
/// namespace of its own (its /proc mounted) holding two processes named `kubelet` (a copy of
/// sh, "kubelet" in its path), of uids 0 and `other`: the stdout and stderr, and the status.
fn kubelet_scan(other: u32) -> (String, String, Option<i32>) {
    let script = format!(
        "d=$(mktemp -d) && chmod 755 $d && cp /bin/sh $d/kubelet && \
         {{ $d/kubelet -c 'sleep 30; :' & }} && \
         {{ setpriv --reuid {other} --regid {other} --clear-groups $d/kubelet -c 'sleep 30; :' & }} && \
         i=0; until [ $(cat /proc/[0-9]*/comm 2>/dev/null | grep -cx kubelet) -ge 2 ]; do i=$((i+1)); [ $i -gt 500 ] && break; sleep 0.01; done; \
         \"$B\" ambient host apply --native-nftables --dry-run; echo \"rc=$?\" >&2; rm -rf $d"
    );
    let o = support::clear_our_env(&mut std::process::Command::new("unshare"))
        .args(["-p", "-f", "-m", "--mount-proc", "sh", "-c", &script])
        .env("B", support::bin())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        err(&o),
        o.status.code(),
    )
}

/// Two kubelet processes of one uid: the nftables rule keys on it.
fn kubelet_uid_is_found_in_proc() {
    let (out, e, _) = kubelet_scan(0);
    assert!(e.contains("rc=0"), "{e}");
    assert!(out.contains(" skuid 0 "), "{out}");
}

/// A `kubelet` of another uid beside the kubelet (anyone can start one): refused, exit 2,
/// naming --kubelet-uid and both, not the first taken as upstream does (its uid's TCP would be
/// SNATed to the probe address, which ambient pods let in uncaptured).
fn kubelets_of_two_uids_are_refused() {
    let (out, e, _) = kubelet_scan(1000);
    assert!(e.contains("rc=2"), "{e}");
    assert!(out.is_empty(), "{out}");
    assert!(
        e.contains("--kubelet-uid") && e.contains("uid 0") && e.contains("uid 1000"),
        "{e}"
    );
}

/// A held xtables lock is reported as one, naming the lock file, after iptables' 30 s wait.
fn a_held_lock_is_named() {
    let ns = Netns::new("locked");
    let _held = Held::new(&ns.path(), 90);
    let args: Vec<&str> = TPROXY
        .iter()
        .copied()
        .chain(backend_args("legacy"))
        .chain(["--cni-mode"])
        .collect();
    let o = mt(&ns, "apply", &args, &[]);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("xtables lock") && e.contains(&ns.path()), "{e}");
    assert!(!e.contains("no kernel support"), "{e}");
}

/// Bounded, non-blocking reads of paths a user names: one error, quickly.
fn path_inputs_do_not_hang(case: &str) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("meshtables-paths-{case}-"))
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.join("big");
    std::fs::write(&big, "nameserver 10.0.0.1\n".repeat(60_000)).unwrap();
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    let (args, code, names): (Vec<&str>, i32, &str) = match case {
        "resolv_conf_fifo" => (
            vec![
                "apply",
                "--dry-run",
                "--redirect-dns",
                "--resolv-conf",
                &fifo_s,
            ],
            2,
            "--resolv-conf",
        ),
        "resolv_conf_dev_zero" => (
            vec![
                "apply",
                "--dry-run",
                "--redirect-dns",
                "--resolv-conf",
                "/dev/zero",
            ],
            2,
            "--resolv-conf",
        ),
        "resolv_conf_over_1_mib" => (
            vec![
                "apply",
                "--dry-run",
                "--redirect-dns",
                "--resolv-conf",
                &big_s,
            ],
            2,
            "--resolv-conf",
        ),
        "network_namespace_fifo" => (
            vec!["apply", "--network-namespace", &fifo_s],
            1,
            "not a namespace file",
        ),
        "network_namespace_plain_file" => (
            vec!["apply", "--network-namespace", &big_s],
            1,
            "not a namespace file",
        ),
        other => panic!("unknown case {other}"),
    };
    let mut all = args.clone();
    all.extend(["-u", "1337", "--enable-ipv6", "false"]);
    let t = Instant::now();
    let o = support::command(&all, &[]).output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{case}: took {:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(code), "{case}: {}", err(&o));
    assert!(err(&o).contains(names), "{case}: {}", err(&o));
    assert_eq!(err(&o).lines().count(), 1, "{case}: {}", err(&o));
}

/// A thread that cannot be started (its stack cannot be mapped) is an error, not an abort.
fn thread_spawn_failure_is_an_error() {
    let ns = Netns::new("thread");
    let o = mt(
        &ns,
        "apply",
        &["-u", "1337", "--enable-ipv6", "false"],
        &[("RUST_MIN_STACK", "100000000000000")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("cannot start the thread"), "{}", err(&o));
}

/// In CNI mode the run refuses to program the namespace it runs in (the node's), whether the
/// mode comes from the flag or from `CNI_MODE`.
fn cni_mode_refuses_its_own_namespace(from_env: bool) {
    let mut args = vec![
        "apply",
        "-u",
        "1337",
        "-b",
        "*",
        "--enable-ipv6",
        "false",
        "--network-namespace",
        "/proc/self/ns/net",
    ];
    let mut env = Vec::new();
    if from_env {
        env.push(("CNI_MODE", "true"));
    } else {
        args.push("--cni-mode");
    }
    // In a namespace of its own: were the refusal to fail, it would program that one, not the
    // machine's.
    let c = support::command(&args, &env);
    let bin = support::bin();
    let mut unshared = std::process::Command::new("unshare");
    unshared.arg("-n").arg(&bin).args(&args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => unshared.env(k, v),
            None => unshared.env_remove(k),
        };
    }
    let o = unshared.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("own network namespace"), "{}", err(&o));
}

fn main() {
    let mut t = Trials::new();
    for (how, from_env) in [("flag", false), ("env", true)] {
        t.add(
            format!("inputs::cni_mode_from_{how}_refuses_its_own_namespace"),
            NEEDS,
            move || cni_mode_refuses_its_own_namespace(from_env),
        );
    }
    for backend in ["nftables", "legacy", "nft"] {
        for kind in ["gateway_default", "unreachable_v6", "blackhole_v4"] {
            t.add(
                format!("routes::conflicting_{kind}_fails_apply::{backend}"),
                NEEDS,
                move || conflicting_route_fails_apply(backend, kind),
            );
        }
        t.add(
            format!("routes::check_names_a_conflicting_route::{backend}"),
            NEEDS,
            move || check_names_a_conflicting_route(backend),
        );
        t.add(
            format!("routes::clean_leaves_a_foreign_route::{backend}"),
            NEEDS,
            move || clean_leaves_a_foreign_route(backend),
        );
    }
    for backend in ["legacy", "nft"] {
        for family in [0, 1] {
            t.add(
                format!("undo::failed_apply_changes_nothing::{backend}::after_{family}_families"),
                NEEDS,
                move || failed_apply_changes_nothing(backend, family),
            );
        }
        for verb in ["clean", "check"] {
            t.add(
                format!("failures::{verb}_fails_when_{backend}_cannot_be_read"),
                NEEDS,
                move || unreadable_variant_fails(backend, verb),
            );
        }
    }
    for verb in ["apply", "clean"] {
        t.add(
            format!("probe::leftover_removed_by_{verb}"),
            NEEDS,
            move || leftover_probe_is_removed(verb),
        );
    }
    t.add(
        "probe::failed_delete_is_an_error",
        NEEDS,
        failed_probe_delete_is_an_error,
    );
    t.add(
        "lock::cni_mode_does_not_take_the_global_lock",
        NEEDS,
        cni_mode_does_not_take_the_global_lock,
    );
    t.add("lock::a_held_lock_is_named", NEEDS, a_held_lock_is_named);
    for case in [
        "resolv_conf_fifo",
        "resolv_conf_dev_zero",
        "resolv_conf_over_1_mib",
    ] {
        t.add(format!("inputs::{case}"), NOTHING, move || {
            path_inputs_do_not_hang(case)
        });
    }
    for case in ["network_namespace_fifo", "network_namespace_plain_file"] {
        t.add(format!("inputs::{case}"), NOTHING, move || {
            path_inputs_do_not_hang(case)
        });
    }
    t.add(
        "inputs::thread_spawn_failure_is_an_error",
        NEEDS,
        thread_spawn_failure_is_an_error,
    );
    let kubelet = root(&["unshare", "setpriv", "sh"]);
    t.add(
        "inputs::kubelet_uid_is_found_in_proc",
        kubelet,
        kubelet_uid_is_found_in_proc,
    );
    t.add(
        "inputs::kubelets_of_two_uids_are_refused",
        kubelet,
        kubelets_of_two_uids_are_refused,
    );
    t.declare(
        38,
        &[
            ("inputs", 2 + 5 + 1 + 2),
            ("routes", 3 * 5),
            ("undo", 2 * 2),
            ("failures", 2 * 2),
            ("probe", 3),
            ("lock", 2),
        ],
    );
    t.run()
}
