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

use meshtables::plan::{Group, MarkRule, Match, Plan, Position, Target};
use support::ambient::{self, SCENARIOS as AMBIENT_SCENARIOS};
use support::mutate::{self, RuleMut};
use support::net;
use support::scenarios::{self, Dialect, Probe, Scenario, Setup, Want};
use support::tracer::{self, Conn, Packet, Ruleset, Trace, Verdict};
use support::trials::{NOTHING, Trials};

/// Whether `t` is where `p` must land with `dialect`; `local_mark` is the mark the plan's
/// policy routing delivers locally.
fn check(
    p: &Probe,
    dialect: Dialect,
    local_mark: Option<MarkRule>,
    t: &Trace,
) -> Result<(), String> {
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
        ) => *got == port && local_mark.is_some_and(|r| r.selects(*mark)) && *orig == to,
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
        let rule = tracer::local_mark(&plan, family).expect("TPROXY routing");
        assert!(rule.selects(t.mark), "{t}");
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

// ---- Istio ambient's in-pod rules (support::ambient, the flows tests/traffic.rs sends). ----

/// Where an ambient flow must end: at its destination, or REDIRECTed to ztunnel's port with
/// its original destination kept; in the zone the data says.
fn ambient_check(f: &ambient::Flow, t: &Trace) -> Result<(), String> {
    let to = std::net::SocketAddr::new(f.dst, f.port);
    let ok = match (f.lands, &t.verdict) {
        (ambient::Lands::Direct, Verdict::Accepted { to: got }) => *got == to,
        (ambient::Lands::Ztunnel(port), Verdict::Redirected { to: got, orig }) => {
            got.port() == port && net::pod_owns(got.ip()) && *orig == to
        }
        _ => false,
    };
    if ok && f.zone.is_none_or(|z| t.zone == Some(z)) {
        Ok(())
    } else {
        Err(format!(
            "{}: expected {:?}, zone {:?}; traced {t}",
            f.label(),
            f.lands,
            f.zone
        ))
    }
}

fn ambient_plan(s: &ambient::Scenario) -> Plan {
    let mut args = vec!["ambient", "apply"];
    args.extend(s.args);
    ambient::plan(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The mismatches of a scenario's flows traced through `plan`.
fn ambient_failures(s: &ambient::Scenario, plan: &Plan, d: Dialect) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in &s.flows {
        let t = tracer::trace_plan(plan, d, &ambient::packet(f))?;
        if let Err(e) = ambient_check(f, &t) {
            out.push(e);
        }
    }
    Ok(out)
}

fn ambient_scenario(s: &ambient::Scenario, d: Dialect) {
    let f = ambient_failures(s, &ambient_plan(s), d).expect("the tracer takes the plan");
    assert!(f.is_empty(), "{}:\n{}", s.name, f.join("\n"));
}

/// Every single-rule deletion of every ambient plan: at least one per scenario changes an
/// outcome, and every deleted REDIRECT does.
fn ambient_sweep(d: Dialect) {
    let (mut total, mut kills) = (0, 0);
    for s in ambient::scenarios() {
        let plan = ambient_plan(&s);
        let mut here = 0;
        for n in 0..mutate::rule_count(&plan, d) {
            total += 1;
            let mutant = mutate::without(&plan, d, n);
            let failed = !ambient_failures(&s, &mutant, d)
                .expect("a deletion leaves a valid plan")
                .is_empty();
            here += usize::from(failed);
        }
        kills += here;
        assert!(here > 0, "{}: no rule deletion changes an outcome", s.name);
    }
    println!(
        "{}: {kills} of {total} single-rule deletions change an ambient outcome",
        d.name()
    );
}

/// The exemption for ztunnel's mark taken out of the outbound capture: ztunnel's own
/// connections are then sent back to it.
fn ambient_without_the_ztunnel_exemption(d: Dialect) {
    let s = ambient::scenarios().remove(0);
    let mut plan = ambient_plan(&s);
    mutate::alter(&mut plan, d, &|r| {
        if matches!(r.target, Target::Redirect { port } if port.get() == ambient::OUTBOUND) {
            r.matches
                .retain(|m| !matches!(m, Match::MarkMasked { negate: true, .. }));
        }
    });
    let f = ambient_failures(&s, &plan, d).expect("a valid plan");
    assert!(
        f.iter().any(|e| e.contains("Ztunnel -> 192.0.2.7")),
        "ztunnel's connection must now be captured: {f:?}"
    );
}

/// ztunnel's connection to the app's address (its inbound path: over `lo`, marked 0x539)
/// gives the connection the connmark in mangle PREROUTING, and is not redirected.
fn ambient_ztunnel_connections_get_the_connmark(d: Dialect) {
    let plan = ambient::plan(&["ambient", "apply", "--ambient-ipv6"]).expect("a plan");
    for dst in ["10.244.1.5", "fd00:244::5"] {
        let f = ambient::Flow {
            from: ambient::Sender::Ztunnel,
            proto: meshtables::plan::Proto::Tcp,
            dst: net::ip(dst),
            port: 8080,
            lands: ambient::Lands::Direct,
            zone: None,
        };
        let t = tracer::trace_plan(&plan, d, &ambient::packet(&f)).expect("traced");
        assert!(ambient_check(&f, &t).is_ok(), "{t}");
        assert_eq!(t.connmark & 0xfff, 0x111, "{t}");
    }
}

/// The app's reply on a connection with the connmark gets it back as its mark, which the
/// plan's policy routing rule selects (delivered to ztunnel on `lo`).
fn ambient_replies_get_the_routing_mark(d: Dialect) {
    let plan = ambient::plan(&["ambient", "apply", "--ambient-ipv6"]).expect("a plan");
    for (dst, family) in [
        ("10.244.1.1", meshtables::plan::Family::V4),
        ("fd00:244::1", meshtables::plan::Family::V6),
    ] {
        let f = ambient::Flow {
            from: ambient::Sender::App,
            proto: meshtables::plan::Proto::Tcp,
            dst: net::ip(dst),
            port: 40000,
            lands: ambient::Lands::Direct,
            zone: None,
        };
        let mut pkt = ambient::packet(&f);
        pkt.conn = Conn::Established;
        pkt.connmark = 0x111;
        let t = tracer::trace_plan(&plan, d, &pkt).expect("traced");
        let rule = tracer::local_mark(&plan, family).expect("policy routing");
        assert!(rule.selects(t.mark), "{t}");
        assert!(
            t.path
                .iter()
                .any(|r| r.contains("Output") && r.contains("mangle")),
            "{t}"
        );
    }
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
    let ambient_scenarios: &'static [ambient::Scenario] =
        Box::leak(ambient::scenarios().into_boxed_slice());
    for s in ambient_scenarios {
        for d in Dialect::BOTH {
            t.add(
                format!("ambient::{}::{}", s.name, d.name()),
                NOTHING,
                move || ambient_scenario(s, d),
            );
        }
    }
    let ambient_checks: [Check; 4] = [
        ("ambient::mutant::every_single_rule_deletion", ambient_sweep),
        (
            "ambient::mutant::without_the_ztunnel_exemption",
            ambient_without_the_ztunnel_exemption,
        ),
        (
            "ambient::semantics::ztunnel_connections_get_the_connmark",
            ambient_ztunnel_connections_get_the_connmark,
        ),
        (
            "ambient::semantics::replies_get_the_routing_mark",
            ambient_replies_get_the_routing_mark,
        ),
    ];
    for (name, f) in ambient_checks {
        for d in Dialect::BOTH {
            t.add(format!("{name}::{}", d.name()), NOTHING, move || f(d));
        }
    }
    // 10 scenarios × 2 dialects × with and without --compact; 7 checks × 2 dialects; ambient's
    // 4 scenarios and 4 checks × 2 dialects.
    t.declare(
        10 * 2 * 2 + 7 * 2 + AMBIENT_SCENARIOS * 2 + 4 * 2,
        &[
            ("mutant", 4 * 2),
            ("semantics", 3 * 2),
            ("ambient", AMBIENT_SCENARIOS * 2 + 4 * 2),
        ],
    );
    t.run()
}
