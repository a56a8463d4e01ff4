//! Property test over random flag and env combinations: parsing and resolution never panic;
//! every accepted config renders in every format, and its text has only the line shapes the
//! formats allow (no value can inject a line or a token); every rejection names an input
//! that was actually given.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::collections::HashMap;
use std::sync::LazyLock;

use meshtables::cmd;
use meshtables::config::{self, ConfigError, Origin};
use meshtables::flags::Spec;
use meshtables::plan::{Chain, Family, Match, Position, Proto, Table, Target};
use meshtables::profile::istio::flags;
use meshtables::render;
use proptest::prelude::*;
use support::FakeHost;

/// Every value flag of the flag table, in each of its spellings (`-b`, `--istio-inbound-ports`).
static VALUE_FLAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| spellings(|s| !s.boolean, |_| Vec::new()));
/// Every boolean flag of the flag table, in each of its spellings and with `=false`.
static BOOL_FLAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| spellings(|s| s.boolean, |s| vec![format!("--{}=false", s.long)]));
/// Every variable of the flag table, and `ENVOY_USER`, the one config reads outside it.
static ENV_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    flags::ALL
        .iter()
        .flat_map(|s| s.envs.iter().copied())
        .chain(["ENVOY_USER"])
        .collect()
});

/// `-s` and `--long` of every flag `keep` takes, and `more` of each.
fn spellings(keep: fn(&Spec) -> bool, more: fn(&Spec) -> Vec<String>) -> Vec<String> {
    flags::ALL
        .iter()
        .filter(|s| keep(s))
        .flat_map(|s| {
            s.short
                .map(|c| format!("-{c}"))
                .into_iter()
                .chain([format!("--{}", s.long)])
                .chain(more(s))
        })
        .collect()
}

const VALUES: &[&str] = &[
    "",
    "*",
    "15001",
    "0",
    "70000",
    " 80 , 443,",
    "80;rm",
    "a\nb",
    "1337",
    "1337,1338",
    "3,4",
    "10.0.0.0/8",
    "fd00::/8",
    "10.0.0.0/8,fd00::/8",
    "10.0.0.0/8,192.168.0.0/16,10.1.0.0/16,fd00::/8,fd01::/16",
    "80,443,8080,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    "127.1.2.3/32",
    "10.0.0.1",
    "eth0",
    "eth0,eth1",
    "eth 0",
    "TPROXY",
    "REDIRECT",
    "tproxy",
    "true",
    "false",
    "5s",
    "legacy",
    "nft",
    "{ 53 }",
    "java,202",
    "127.0.0.1/8",
    "::127.0.0.53",
    "10.96.0.10,fd00::a",
    "auto",
    "-1",
    "x\"y",
    "0x539",
    "200",
    "254",
];

fn host() -> FakeHost {
    let mut h = FakeHost::v4_pod();
    h.addrs.push("fd00::5".parse().unwrap());
    h.files.insert(
        "/etc/resolv.conf".into(),
        "nameserver 10.96.0.10\nnameserver fd00::a\n".into(),
    );
    h
}

/// Every line of the restore text has one of its shapes, and no token has a separator.
fn check_restore(text: &str) {
    for line in text.lines() {
        assert!(
            line.starts_with("* ")
                || line.starts_with("-N ")
                || line.starts_with("-A ")
                || line.starts_with("-I ")
                || line == "COMMIT",
            "unexpected restore line {line:?}"
        );
        assert!(
            !line.contains([';', '"', '\'', '{', '}', '\r', '\t']),
            "{line:?}"
        );
    }
}

fn check_nft(text: &str) {
    for line in text.lines() {
        assert!(
            [
                "add table ",
                "flush table ",
                "delete table ",
                "add chain ",
                "add rule ",
                "insert rule "
            ]
            .iter()
            .any(|p| line.starts_with(p)),
            "unexpected nft line {line:?}"
        );
        let line = without_quoted_interfaces(line);
        assert!(
            !line.contains([';', '"', '\'', '\r', '\t']) || line.contains("{ type "),
            "{line:?}"
        );
    }
}

/// `line` without the interface names nft needs quoted (`iifname "x|y"`): each quoted
/// string must follow `ifname ` or `ifname != ` and hold one word with no quote, `;`, brace
/// or backslash other than the one escaping a `*`, else it is left for the caller to refuse.
fn without_quoted_interfaces(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find('"') {
        let (before, after) = rest.split_at(i);
        let Some(j) = after[1..].find('"') else {
            break;
        };
        let inner = &after[1..=j];
        let clean = !inner.is_empty()
            && !inner.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '\''))
            && !inner.replace("\\*", "").contains('\\');
        if !(clean && (before.ends_with("ifname ") || before.ends_with("ifname != "))) {
            break;
        }
        out.push_str(before);
        out.push_str("IFNAME");
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// Upstream's dry-run traces of `p`: the apply trace is the two saves, every restore line of
/// each programmed family in order, and the final saves; the cleanup trace is the saves around
/// `-D`/`-F`/`-X` commands, every Istio chain of the plan flushed and deleted exactly once.
fn check_traces(p: &meshtables::plan::Plan) -> Result<(), TestCaseError> {
    let families = p.xtables.families();
    let mut want = vec!["iptables-save".to_string(), "ip6tables-save".to_string()];
    for f in &families {
        want.extend(
            render::iptables::restore(p.xtables.rules(*f))
                .lines()
                .map(str::to_string),
        );
    }
    want.push("iptables-save".into());
    if families.contains(&Family::V6) {
        want.push("ip6tables-save".into());
    }
    let apply: Vec<String> = meshtables::profile::istio::upstream::trace_apply(&p.xtables)
        .lines()
        .map(str::to_string)
        .collect();
    prop_assert_eq!(apply, want);

    let cleanup = meshtables::profile::istio::upstream::trace_cleanup(&p.xtables);
    for f in &families {
        let bin = render::iptables::binary(*f);
        let mut chains: Vec<(String, String)> = p
            .xtables
            .rules(*f)
            .iter()
            .filter(|r| !r.chain.is_builtin())
            .map(|r| (r.table.xt_name().to_string(), r.chain.xt_name().to_string()))
            .collect();
        chains.sort();
        chains.dedup();
        for (t, c) in chains {
            for op in ["-F", "-X"] {
                let line = format!("{bin} -t {t} {op} {c}");
                prop_assert_eq!(
                    cleanup.lines().filter(|l| *l == line).count(),
                    1,
                    "{}",
                    line
                );
            }
        }
    }
    for line in cleanup.lines() {
        let ok = line.ends_with("tables-save")
            || ["-D", "-F", "-X"]
                .iter()
                .any(|op| line.contains(&format!(" {op} ")));
        prop_assert!(ok, "unexpected cleanup trace line {:?}", line);
    }
    Ok(())
}

/// A rule as both dialects must agree on it: table, chain, matches as a set (the explicit
/// protocol match a port match implies dropped: upstream's nft spells it without), target.
type Canon = (String, String, Vec<String>, String);

fn canon(table: Table, chain: Chain, matches: &[Match], target: &Target) -> Canon {
    let implied = |p: &Proto| {
        matches.iter().any(|m| {
            matches!(m, Match::Dport { proto, .. } | Match::Sport { proto, .. } | Match::DportsNotIn { proto, .. } | Match::DportsIn { proto, .. } if proto == p)
        })
    };
    // Upstream's nft --drop-invalid rule matches TCP only (nft::DROP_INVALID): the one
    // difference in meaning, enumerated here.
    let drop_invalid = *target
        == Target::Jump {
            chain: meshtables::profile::istio::chains::ISTIO_DROP,
        };
    let mut m: Vec<String> = matches
        .iter()
        .filter(|m| !matches!(m, Match::Proto { proto } if implied(proto) || drop_invalid))
        .map(|m| format!("{m:?}"))
        .collect();
    m.sort();
    (
        format!("{table:?}"),
        chain.xt_name().to_string(),
        m,
        format!("{target:?}"),
    )
}

/// A rule's matches once per item of its list match (`--compact`): an nft set and the
/// xtables rules for it (one per CIDR, multiport chunks) must say the same per item.
fn items(matches: &[Match]) -> Vec<Vec<Match>> {
    for (i, m) in matches.iter().enumerate() {
        let each: Vec<Match> = match m {
            Match::DstIn { cidrs } => cidrs
                .iter()
                .map(|c| Match::Dst {
                    negate: false,
                    cidr: *c,
                })
                .collect(),
            Match::DportsIn { proto, ports } => ports
                .iter()
                .map(|p| Match::Dport {
                    proto: *proto,
                    negate: false,
                    port: *p,
                })
                .collect(),
            _ => continue,
        };
        return each
            .into_iter()
            .flat_map(|one| {
                let mut ms = matches.to_vec();
                ms[i] = one;
                items(&ms)
            })
            .collect();
    }
    vec![matches.to_vec()]
}

/// The nft generator collapses these per-family jumps into one for the inet chain.
fn collapsed(c: &Canon) -> bool {
    c.3.contains("\"ISTIO_OUTPUT_DNS\"") && c.1 == "ISTIO_OUTPUT"
        || c.0 == "Raw" && c.1 == "PREROUTING"
}

/// Final chain contents after inserts, per (table, chain): `insert(position)` gives the index
/// a rule goes to, or None to append.
fn chains<'a>(
    rules: impl Iterator<Item = (Canon, Option<usize>)> + 'a,
) -> std::collections::BTreeMap<(String, String), Vec<Canon>> {
    let mut out: std::collections::BTreeMap<(String, String), Vec<Canon>> = Default::default();
    for (c, at) in rules {
        let list = out.entry((c.0.clone(), c.1.clone())).or_default();
        match at {
            Some(i) if i <= list.len() => list.insert(i, c),
            _ => list.push(c),
        }
    }
    out
}

/// Both dialects of `p` express the same policy: per family, every chain holds the same rules
/// in the same order, modulo the enumerated differences (implied protocol matches, upstream's
/// TCP-only nft drop-invalid rule, and the DNS jumps nft emits once for both families).
fn dialects_agree(p: &meshtables::plan::Plan) -> Result<(), TestCaseError> {
    let mut xt_collapsed = std::collections::BTreeSet::new();
    let mut nft_collapsed = std::collections::BTreeSet::new();
    for f in p.xtables.families() {
        let xt = chains(p.xtables.rules(f).iter().flat_map(|r| {
            let at = match r.position {
                Position::Insert(n) => Some(n as usize - 1),
                Position::Append => None,
            };
            items(&r.matches)
                .into_iter()
                .map(move |m| (canon(r.table, r.chain, &m, &r.target), at))
        }));
        // An inet chain holds both families' rules: place them all, then keep this family's.
        let mut nft: std::collections::BTreeMap<(String, String), Vec<Canon>> = Default::default();
        for t in &p.nft.tables {
            let placed = chains(t.rules.iter().flat_map(|r| {
                let at = match r.position {
                    Position::Insert(i) => Some(i as usize),
                    Position::Append => None,
                };
                items(&r.matches).into_iter().map(move |m| {
                    let mut c = canon(t.table, r.chain, &m, &r.target);
                    c.3 = format!("{}|{:?}", c.3, r.family);
                    (c, at)
                })
            }));
            for (k, v) in placed {
                let mine: Vec<Canon> = v
                    .into_iter()
                    .filter(|c| c.3.ends_with("|None") || c.3.ends_with(&format!("|Some({f:?})")))
                    .map(|mut c| {
                        c.3 = c.3.split('|').next().unwrap_or("").to_string();
                        c
                    })
                    .collect();
                if !mine.is_empty() {
                    nft.insert(k, mine);
                }
            }
        }
        let strip = |m: std::collections::BTreeMap<(String, String), Vec<Canon>>,
                     seen: &mut std::collections::BTreeSet<Canon>| {
            m.into_iter()
                .map(|(k, v)| {
                    let kept: Vec<Canon> = v
                        .into_iter()
                        .filter(|c| {
                            let keep = !collapsed(c);
                            if !keep {
                                seen.insert(c.clone());
                            }
                            keep
                        })
                        .collect();
                    (k, kept)
                })
                .filter(|(_, v)| !v.is_empty())
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let xt = same_verdict_runs_sorted(strip(xt, &mut xt_collapsed));
        let nft = same_verdict_runs_sorted(strip(nft, &mut nft_collapsed));
        prop_assert_eq!(xt, nft, "family {:?}", f);
    }
    // A collapsed jump exists in nft iff xtables has it in some family.
    prop_assert_eq!(xt_collapsed, nft_collapsed);
    Ok(())
}

/// Adjacent rules with the same final verdict (RETURN, ACCEPT, DROP) can swap places without
/// changing what a packet meets: upstream's two dialects order some of them differently
/// (e.g. mangle ISTIO_INBOUND's loopback RETURNs), so each such run is compared as a set.
fn same_verdict_runs_sorted(
    m: std::collections::BTreeMap<(String, String), Vec<Canon>>,
) -> std::collections::BTreeMap<(String, String), Vec<Canon>> {
    let terminal = |c: &Canon| ["Return", "Accept", "Drop"].contains(&c.3.as_str());
    m.into_iter()
        .map(|(k, mut v)| {
            let mut i = 0;
            while i < v.len() {
                let mut j = i + 1;
                while j < v.len() && terminal(&v[i]) && v[j].3 == v[i].3 {
                    j += 1;
                }
                v[i..j].sort();
                i = j;
            }
            (k, v)
        })
        .collect()
}

/// A random CIDR of either family, prefix 8-32 (v4) or 16-128 (v6).
fn any_cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 8u8..=32).prop_map(|(a, l)| {
            let n = ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc();
            n.to_string()
        }),
        (any::<[u16; 8]>(), 16u8..=128).prop_map(|(a, l)| {
            let n = ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc();
            n.to_string()
        }),
    ]
}

fn join(v: &[impl ToString]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// `--compact` with random lists: both dialects still say the same thing per item, and
    /// both texts are well formed.
    #[test]
    fn random_compact_lists(
        tproxy in any::<bool>(),
        all_inbound in any::<bool>(),
        ipv6 in any::<bool>(),
        virt in any::<bool>(),
        inbound in proptest::collection::vec(1u16..=65535, 1..40),
        local_exclude in proptest::collection::vec(1u16..=65535, 0..40),
        out_include_ports in proptest::collection::vec(1u16..=65535, 0..20),
        out_exclude_ports in proptest::collection::vec(1u16..=65535, 0..40),
        include in proptest::collection::vec(any_cidr(), 0..20),
        exclude in proptest::collection::vec(any_cidr(), 0..30),
    ) {
        let mut argv: Vec<String> = ["meshtables", "apply", "--compact", "-u", "1337", "-g", "1337"]
            .iter().map(|s| s.to_string()).collect();
        let mut add = |f: &str, v: String| { argv.push(f.into()); argv.push(v); };
        add("-m", if tproxy { "TPROXY" } else { "REDIRECT" }.into());
        add("--enable-ipv6", ipv6.to_string());
        if all_inbound {
            add("-b", "*".into());
            if !local_exclude.is_empty() { add("-d", join(&local_exclude)); }
        } else {
            add("-b", join(&inbound));
        }
        if !out_include_ports.is_empty() { add("-q", join(&out_include_ports)); }
        if !out_exclude_ports.is_empty() { add("-o", join(&out_exclude_ports)); }
        if !include.is_empty() { add("-i", join(&include)); }
        if !exclude.is_empty() { add("-x", join(&exclude)); }
        if virt { add("-k", "virt0".into()); }
        let os: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
        let (sub, f) = cmd::parse_args(os).unwrap();
        let env = HashMap::new();
        let r = config::early(&f, sub, &env).and_then(|e| config::resolve(&f, &e, &env, &host())).unwrap();
        let p = meshtables::profile::istio::build(&r.policy);
        for fam in [Family::V4, Family::V6] {
            check_restore(&render::iptables::restore(p.xtables.rules(fam)));
        }
        check_nft(&render::nft::transaction(&p.nft));
        dialects_agree(&p)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_flags_and_env(
        flags in proptest::collection::vec((0..VALUE_FLAGS.len(), 0..VALUES.len()), 0..8),
        bools in proptest::collection::vec(0..BOOL_FLAGS.len(), 0..4),
        envs in proptest::collection::vec((0..ENV_NAMES.len(), 0..VALUES.len()), 0..5),
        clean in any::<bool>(),
    ) {
        let mut argv = vec!["meshtables".to_string(), if clean { "clean" } else { "apply" }.to_string()];
        let mut given_flags = Vec::new();
        for (f, v) in &flags {
            argv.push(VALUE_FLAGS[*f].clone());
            argv.push(VALUES[*v].to_string());
            given_flags.push(VALUE_FLAGS[*f].as_str());
        }
        for b in &bools {
            argv.push(BOOL_FLAGS[*b].clone());
        }
        let env: HashMap<String, String> =
            envs.iter().map(|(n, v)| (ENV_NAMES[*n].to_string(), VALUES[*v].to_string())).collect();

        let os: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
        let Ok((sub, f)) = cmd::parse_args(os) else { return Ok(()); };
        let resolved = config::early(&f, sub, &env).and_then(|e| config::resolve(&f, &e, &env, &host()));
        match resolved {
            Ok(r) => {
                let p = meshtables::profile::istio::build(&r.policy);
                for fam in [Family::V4, Family::V6] {
                    check_restore(&render::iptables::restore(p.xtables.rules(fam)));
                    for cmd in meshtables::profile::istio::upstream::cleanup_commands(p.xtables.rules(fam)) {
                        prop_assert!(cmd.iter().all(|w| !w.contains([' ', '\n', ';'])));
                    }
                }
                check_nft(&render::nft::transaction(&p.nft));
                check_traces(&p)?;
                dialects_agree(&p)?;
                // The JSON is the plan: as many rules per family and nft table as it holds.
                let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
                prop_assert_eq!(json["xtables"]["v4"].as_array().map(Vec::len), Some(p.xtables.v4.len()));
                prop_assert_eq!(json["xtables"]["v6"].as_array().map(Vec::len), p.xtables.v6.as_ref().map(Vec::len));
                let nft_rules: Vec<usize> = p.nft.tables.iter().map(|t| t.rules.len()).collect();
                let json_rules: Vec<usize> = json["nft"]["tables"].as_array().unwrap().iter()
                    .map(|t| t["rules"].as_array().unwrap().len()).collect();
                prop_assert_eq!(json_rules, nft_rules);
                // Every jump in the nft plan targets a declared chain of the same table.
                for t in &p.nft.tables {
                    for r in &t.rules {
                        if let meshtables::plan::Target::Jump { chain } = r.target {
                            prop_assert!(t.chains.contains(&chain), "jump to undeclared {chain:?}");
                        }
                    }
                }
            }
            // A group name /etc/group (the fake host's: none) does not know, named by its flag.
            Err(ConfigError::Invalid { origin, .. } | ConfigError::UnknownGroup { origin, .. }) => {
                let named = match &origin {
                    Origin::Flag { long, short } => given_flags.iter().any(|g| {
                        *g == format!("--{long}") || short.is_some_and(|s| *g == format!("-{s}"))
                    }),
                    Origin::Env(name) => env.contains_key(*name),
                    Origin::Default(_) => false,
                };
                prop_assert!(named, "rejection names {origin} which was not given: {argv:?} {env:?}");
            }
            // Reading a file the user pointed at (--resolv-conf) can fail; it names the path.
            Err(ConfigError::Host(e)) => {
                prop_assert!(given_flags.contains(&"--resolv-conf"), "unexpected host error {e}");
                prop_assert!(e.to_string().contains("failed to read"), "{e}");
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}
