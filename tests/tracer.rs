//! The traffic scenarios without root: every flow of `support::scenarios` (the data
//! tests/traffic.rs sends as real packets) traced through the plan of each dialect
//! (`support::tracer`), with and without `--compact`: one trial per scenario × dialect ×
//! variant (`cargo test --test tracer s7_dns::nft::compact`). Then proof that the tracer can
//! fail (`mutant::*`: one rule removed or altered, and a scenario's expectation no longer
//! holds) and the semantics the scenarios do not reach (`semantics::*`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use meshtables::plan::{Group, Match, Plan, Position, Target};
use support::mutate::{self, RuleMut};
use support::net;
use support::scenarios::{self, Dialect, Probe, Scenario, Setup, Want};
use support::tracer::{self, Conn, Packet, Ruleset, Trace, Verdict};
use support::trials::{NOTHING, Trials};

/// Whether `t` is where `p` must land with `dialect`; `local_mark` is the mark the plan's
/// policy routing delivers locally.
fn check(p: &Probe, dialect: Dialect, local_mark: Option<u32>, t: &Trace) -> Result<(), String> {
    let to = p.to();
    let ok = match (p.want(dialect), &t.verdict) {
        (Want::Direct, Verdict::Accepted { to: got }) => *got == to,
        (Want::Redirect(port), Verdict::Redirected { to: got, orig }) => {
            got.port() == port && net::pod_owns(got.ip()) && *orig == to
        }
        (
            Want::Tproxy(port),
            Verdict::Tproxied {
                port: got,
                mark,
                orig,
            },
        ) => *got == port && Some(*mark) == local_mark && *orig == to,
        _ => false,
    };
    let zone_ok = p.zone.is_none_or(|z| t.zone == Some(z));
    if ok && zone_ok {
        return Ok(());
    }
    let why = p
        .except
        .filter(|e| e.dialect == dialect)
        .map_or(String::new(), |e| format!(" (on purpose: {})", e.why));
    Err(format!(
        "{}: expected {:?}{why}, zone {:?}; traced {t}",
        p.label(),
        p.want(dialect),
        p.zone
    ))
}

/// The plan of a setup's args, with `--compact` if asked.
fn plan_of(setup: &Setup, compact: bool) -> Plan {
    let mut args = setup.args.clone();
    if compact {
        args.push("--compact");
    }
    tracer::plan(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The mismatches of one setup's flows traced through `plan` (and `after_clean`'s through no
/// rules).
fn failures(setup: &Setup, plan: &Plan, dialect: Dialect) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in &setup.probes {
        let family = net::family(p.dst);
        let t = tracer::trace_plan(plan, dialect, &Packet::of(p))?;
        if let Err(e) = check(p, dialect, tracer::local_mark(plan, family), &t) {
            out.push(e);
        }
    }
    for p in &setup.after_clean {
        let t = tracer::trace(&Ruleset::empty(), dialect, None, &Packet::of(p))?;
        if let Err(e) = check(p, dialect, None, &t) {
            out.push(format!("after clean: {e}"));
        }
    }
    Ok(out)
}

fn scenario(s: &Scenario, dialect: Dialect, compact: bool) {
    let mut all = Vec::new();
    for setup in &s.setups {
        let plan = plan_of(setup, compact);
        match failures(setup, &plan, dialect) {
            Ok(f) => all.extend(f.into_iter().map(|f| format!("{:?}: {f}", setup.args))),
            Err(e) => all.push(format!(
                "{:?}: the tracer refused the plan: {e}",
                setup.args
            )),
        }
    }
    assert!(all.is_empty(), "{}:\n{}", s.title, all.join("\n"));
}

fn find(name: &str) -> Scenario {
    scenarios::all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// A mutant `f` makes of scenario `name`'s plans must fail one of its expectations.
fn killed(name: &str, dialect: Dialect, edit: &dyn Fn(RuleMut)) {
    let s = find(name);
    let mut seen = Vec::new();
    for setup in &s.setups {
        let mut plan = plan_of(setup, false);
        let before = failures(setup, &plan, dialect);
        assert!(
            before.as_ref().is_ok_and(Vec::is_empty),
            "unmutated: {before:?}"
        );
        mutate::alter(&mut plan, dialect, edit);
        match failures(setup, &plan, dialect) {
            Ok(f) => seen.extend(f),
            Err(e) => panic!("the mutant is not a valid plan: {e}"),
        }
    }
    assert!(
        !seen.is_empty(),
        "{name}: the mutant passed every expectation"
    );
    println!("{name}: the mutant fails {}", seen.join("; "));
}

/// The catch-all capture (`ISTIO_OUTPUT -j ISTIO_REDIRECT`, by its chains' names) turned into
/// a RETURN: the app's outbound connections then go straight out.
fn without_outbound_capture(dialect: Dialect) {
    killed("s1_outbound_capture", dialect, &|r| {
        let from_output = matches!(r.chain, "ISTIO_OUTPUT" | "istio-output");
        let to_redirect =
            matches!(r.target, Target::Jump { chain } if chain.xt_name() == "ISTIO_REDIRECT");
        if from_output && to_redirect && r.matches.is_empty() {
            *r.target = Target::Return;
        }
    });
}

/// Every insert replayed as an append: `-k`'s RETURN then comes before its capture in nat
/// PREROUTING, and the VM's outbound traffic escapes the proxy.
fn inserts_as_appends(dialect: Dialect) {
    killed("s6_interfaces", dialect, &|r| {
        *r.position = Position::Append
    });
}

/// The proxy's owner RETURNs (uid and gid) made to name 1338: its own connections are then
/// captured.
fn proxy_owner_altered(dialect: Dialect) {
    killed("s2_proxy_bypasses", dialect, &|r| {
        if *r.target != Target::Return {
            return;
        }
        for m in r.matches.iter_mut() {
            match m {
                Match::Uid { negate: false, uid } => uid.0 = 1338,
                Match::Gid { negate: false, gid } => *gid = Group::Id(1338),
                _ => {}
            }
        }
    });
}

/// Every single-rule deletion of every plain scenario plan: how many change some expectation
/// (printed), and at least one per setup that captures anything must.
fn sweep(dialect: Dialect) {
    let (mut total, mut kills, mut refused) = (0, 0, 0);
    for s in scenarios::all() {
        for setup in &s.setups {
            let plan = plan_of(setup, false);
            let mut here = 0;
            for n in 0..mutate::rule_count(&plan, dialect) {
                total += 1;
                match failures(setup, &mutate::without(&plan, dialect, n), dialect) {
                    Ok(f) if f.is_empty() => {}
                    Ok(_) => here += 1,
                    // An insert past the end of its chain once a rule above it is gone.
                    Err(_) => refused += 1,
                }
            }
            kills += here;
            let captures = setup.probes.iter().any(|p| p.want(dialect) != Want::Direct);
            assert!(
                !captures || here > 0,
                "{} {:?}: no rule deletion changes an outcome",
                s.name,
                setup.args
            );
        }
    }
    println!(
        "{}: {kills} of {total} single-rule deletions change a scenario outcome ({refused} make an invalid plan)",
        dialect.name()
    );
}

/// A packet of an established TPROXY'd connection: no nat, ISTIO_DIVERT marks it for the
/// policy routing and accepts it.
fn established_tproxy_is_diverted(dialect: Dialect) {
    let s = find("s3_inbound_redirect_and_tproxy");
    let setup = s
        .setups
        .iter()
        .find(|s| s.tproxy())
        .expect("a TPROXY setup");
    let plan = plan_of(setup, false);
    for p in &setup.probes {
        let mut pkt = Packet::of(p);
        pkt.conn = Conn::Established;
        let t = tracer::trace_plan(&plan, dialect, &pkt).expect("traced");
        let family = net::family(p.dst);
        assert_eq!(t.verdict, Verdict::Accepted { to: p.to() }, "{t}");
        assert_eq!(Some(t.mark), tracer::local_mark(&plan, family), "{t}");
    }
}

/// `--drop-invalid`: an invalid TCP packet is dropped in both dialects; an invalid UDP one
/// only by xtables, as upstream's nft rule matches TCP only (docs/upstream.md, "The nftables
/// text"; `nft::DROP_INVALID`).
fn drop_invalid(dialect: Dialect) {
    let plan = tracer::plan(&[
        "apply",
        "-u",
        "1337",
        "-b",
        "*",
        "--drop-invalid",
        "--enable-ipv6",
        "false",
    ])
    .expect("a plan");
    for (proto, dropped) in [
        (meshtables::plan::Proto::Tcp, true),
        (meshtables::plan::Proto::Udp, dialect == Dialect::Xtables),
    ] {
        let mut pkt = Packet::of(&scenarios::tcp_in("10.244.1.5", 8080, Want::Direct));
        pkt.proto = proto;
        pkt.conn = Conn::Invalid;
        let t = tracer::trace_plan(&plan, dialect, &pkt).expect("traced");
        assert_eq!(
            matches!(t.verdict, Verdict::Dropped { .. }),
            dropped,
            "{proto:?}: {t}"
        );
    }
}

/// A CT zone is chosen once: the proxy's query to a listed resolver matches the owner rules
/// (zone 1) and then the resolver's rule (zone 2); the first wins.
fn first_zone_wins(dialect: Dialect) {
    let s = find("s7_dns");
    let plan = plan_of(&s.setups[0], false);
    let p = scenarios::udp_out(scenarios::PROXY, "10.96.0.10", 53, Want::Direct);
    let t = tracer::trace_plan(&plan, dialect, &Packet::of(&p)).expect("traced");
    let zone_2 = t
        .path
        .iter()
        .any(|r| r.contains("zone") && r.ends_with(" 2"));
    assert!(t.zone == Some(1) && zone_2, "{t}");
}

/// A trial run once per dialect: its name's first part and its body.
type Check = (&'static str, fn(Dialect));

fn main() {
    let mut t = Trials::new();
    let all: &'static [Scenario] = Box::leak(scenarios::all().into_boxed_slice());
    for s in all {
        for d in Dialect::BOTH {
            t.add(format!("{}::{}", s.name, d.name()), NOTHING, move || {
                scenario(s, d, false)
            });
            t.add(
                format!("{}::{}::compact", s.name, d.name()),
                NOTHING,
                move || scenario(s, d, true),
            );
        }
    }
    let checks: [Check; 7] = [
        ("mutant::without_outbound_capture", without_outbound_capture),
        ("mutant::inserts_as_appends", inserts_as_appends),
        ("mutant::proxy_owner_altered", proxy_owner_altered),
        ("mutant::every_single_rule_deletion", sweep),
        (
            "semantics::established_tproxy_is_diverted",
            established_tproxy_is_diverted,
        ),
        ("semantics::drop_invalid", drop_invalid),
        ("semantics::first_zone_wins", first_zone_wins),
    ];
    for (name, f) in checks {
        for d in Dialect::BOTH {
            t.add(format!("{name}::{}", d.name()), NOTHING, move || f(d));
        }
    }
    // 10 scenarios × 2 dialects × with and without --compact; 7 checks × 2 dialects.
    t.declare(
        10 * 2 * 2 + 7 * 2,
        &[("mutant", 4 * 2), ("semantics", 3 * 2)],
    );
    t.run()
}
