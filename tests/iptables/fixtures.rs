//! `*-save` output captured from the real binaries (iptables 1.8.9, legacy and nft) in fresh
//! network namespaces, kept under `tests/fixtures/iptables-save/`: foreign rules with comments
//! and a chain of their own, counters (traffic went through; `-c` prints them on rules too),
//! our rules beside them, TPROXY's mangle and raw tables, IPv6, a detection probe rule left
//! behind, the empty table detection's probe leaves. `state.rs`'s unit tests parse them, and
//! the fake-machine trials (`decisions`) feed them to the backend as what `*-save` printed.
//!
//! Each capture is data (how the namespace is set up, which save runs), so the root trial
//! `fixtures::CAPTURE_is_current` makes it again and compares (comments and counter values
//! aside); `UPDATE_FIXTURES=1 cargo test --test iptables fixtures::` rewrites the files.

use std::path::PathBuf;
use std::process::Command;

/// One captured file: the shell commands that set up a fresh namespace (`$B` is meshtables,
/// `$P` the probe that makes traffic) and the save command whose stdout the file holds.
pub struct Capture {
    pub file: &'static str,
    pub setup: fn() -> String,
    pub save: &'static str,
}

/// Foreign rules of both families for variant `v`: kube-proxy's shape in nat (a chain of its
/// own, comments with spaces and a colon), an INPUT accept, a mangle mark.
fn foreign(v: &str) -> String {
    let mut s = Vec::new();
    for (b, svc) in [
        ("iptables", "10.96.0.1/32"),
        ("ip6tables", "fd00:10:96::1/128"),
    ] {
        s.push(format!("{b}-{v} -t nat -N KUBE-SERVICES"));
        s.push(format!(
            "{b}-{v} -t nat -A OUTPUT -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES"
        ));
        s.push(format!(
            "{b}-{v} -t nat -A KUBE-SERVICES -d {svc} -p tcp -m comment --comment 'default/kubernetes:https cluster IP' -m tcp --dport 443 -j RETURN"
        ));
        s.push(format!("{b}-{v} -A INPUT -p tcp --dport 22 -j ACCEPT"));
        s.push(format!(
            "{b}-{v} -t mangle -A PREROUTING -i eth0 -j MARK --set-mark 7"
        ));
    }
    s.join(" && ")
}

/// A connection attempt to a closed port of each family: packets through the chains, so the
/// counters are not all zero.
const TRAFFIC: &str = "\"$P\" tcp 127.0.0.1 9 --timeout 200 >/dev/null; \"$P\" tcp ::1 9 --timeout 200 >/dev/null; true";

/// Istio's injected init container (REDIRECT) with IPv6, with variant `v`.
fn injected(v: &str) -> String {
    let mut args = crate::support::INJECTED.to_vec();
    args.extend(["--enable-ipv6", "true", "--force-iptables-binary", v]);
    format!(
        "{} && {} && {TRAFFIC}",
        foreign(v),
        crate::support::mt(&args)
    )
}

/// TPROXY, DNS, IPv6 and every list (`support::EVERYTHING`), with iptables-nft.
fn tproxy() -> String {
    let mut args = crate::support::EVERYTHING.to_vec();
    args.extend(["--force-iptables-binary", "nft"]);
    format!("{} && {TRAFFIC}", crate::support::mt(&args))
}

pub const CAPTURES: &[Capture] = &[
    Capture {
        file: "legacy-foreign.v4.save",
        setup: || format!("{} && {TRAFFIC}", foreign("legacy")),
        save: "iptables-legacy-save -c",
    },
    Capture {
        file: "legacy-foreign.v6.save",
        setup: || format!("{} && {TRAFFIC}", foreign("legacy")),
        save: "ip6tables-legacy-save -c",
    },
    Capture {
        file: "legacy-injected.v4.save",
        setup: || injected("legacy"),
        save: "iptables-legacy-save",
    },
    Capture {
        file: "legacy-injected.v6.save",
        setup: || injected("legacy"),
        save: "ip6tables-legacy-save",
    },
    Capture {
        file: "nft-injected.v4.save",
        setup: || injected("nft"),
        save: "iptables-nft-save",
    },
    Capture {
        file: "nft-injected.v6.save",
        setup: || injected("nft"),
        save: "ip6tables-nft-save",
    },
    Capture {
        file: "nft-tproxy.v4.save",
        setup: tproxy,
        save: "iptables-nft-save",
    },
    Capture {
        file: "nft-tproxy.v6.save",
        setup: tproxy,
        save: "ip6tables-nft-save",
    },
    Capture {
        file: "legacy-probe-left.v4.save",
        setup: || "iptables-legacy -t nat -A INPUT -p 255 -j RETURN".into(),
        save: "iptables-legacy-save",
    },
    Capture {
        file: "legacy-empty.v4.save",
        setup: || {
            "iptables-legacy -t nat -A INPUT -p 255 -j RETURN && iptables-legacy -t nat -D INPUT -p 255 -j RETURN".into()
        },
        save: "iptables-legacy-save",
    },
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iptables-save")
}

/// The committed text of fixture `file`.
pub fn read(file: &str) -> String {
    std::fs::read_to_string(dir().join(file))
        .unwrap_or_else(|e| panic!("tests/fixtures/iptables-save/{file}: {e}"))
}

/// The text without what differs between two captures of the same state: comment lines (dates)
/// and counter values.
fn comparable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut out = String::new();
            let mut rest = l;
            while let Some(at) = rest.find('[') {
                out.push_str(&rest[..at]);
                match rest[at..].find(']') {
                    Some(end)
                        if rest[at + 1..at + end]
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ':') =>
                    {
                        out.push_str("[n:n]");
                        rest = &rest[at + end + 1..];
                    }
                    _ => {
                        out.push('[');
                        rest = &rest[at + 1..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Captures `c` again in a fresh namespace and compares it with the committed file (or, with
/// `UPDATE_FIXTURES=1`, writes it).
pub fn is_current(c: &Capture) {
    let script = format!(
        "{} && ip link set lo up && {{ {}; }} >/dev/null && {}",
        crate::support::hermetic_files(),
        (c.setup)(),
        c.save
    );
    let o = crate::support::clear_our_env(&mut Command::new("unshare"))
        .args(["-n", "-m", "sh", "-c", &script])
        .env("B", crate::support::bin())
        .env("P", crate::support::topo::probe_bin())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        c.file,
        String::from_utf8_lossy(&o.stderr)
    );
    let now = String::from_utf8(o.stdout).unwrap();
    if std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(dir().join(c.file), &now).unwrap();
        return;
    }
    let (want, got) = (comparable(&read(c.file)), comparable(&now));
    assert!(
        want == got,
        "{} is not what `{}` prints now (- committed, + now); UPDATE_FIXTURES=1 cargo test --test iptables fixtures:: rewrites it\n{}",
        c.file,
        c.save,
        crate::support::diff(&want, &got)
    );
}
