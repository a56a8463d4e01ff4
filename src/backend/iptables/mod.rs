//! Apply through the iptables binaries (the default backend, as upstream).
//!
//! Apply: detect the binaries per family; read the live state with `*-save`; if nothing of
//! ours is there, `*-restore --noflush` the plan's text (one atomic COMMIT per table). If our
//! rules are there and equal the plan (compared exactly, in `iptables-save`'s canonical form),
//! do nothing. If they differ: without `--reconcile` stop with status 1 and name the chains
//! that differ, changing nothing; with `--reconcile` (or `--force-apply`) replace them in one
//! restore per table, so there is no moment without interception and no DROP guardrail.
//!
//! Clean reads the live state of every variant (legacy and nft) and family and removes what
//! is ours in one restore per table, plus the native nftables tables and TPROXY routing.

pub mod detect;
pub mod state;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{Config, XtablesVariant};
use crate::logging;
use crate::plan::{Family, Plan};
use detect::Xtables;
use state::{State, drift, expected, has_ours, parse_save, replace_text};

#[derive(Debug, thiserror::Error)]
pub enum IptError {
    #[error(
        "no usable {} binary: {}. Use --native-nftables, which needs no binaries",
        binary_family(*family),
        reasons.join("; ")
    )]
    NoBinary {
        family: Family,
        reasons: Vec<String>,
    },
    #[error("{bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{bin} {status}: {stderr}")]
    Failed {
        bin: String,
        status: String,
        stderr: String,
    },
    #[error(
        "existing {} rules differ from the requested ones in {}; nothing was changed. Rerun with --reconcile to replace them",
        binary_family(*family),
        chains.join(", ")
    )]
    Drift { family: Family, chains: Vec<String> },
    #[error(
        "the live {} rules differ from the requested ones in {}",
        binary_family(*family),
        chains.join(", ")
    )]
    NotInPlace { family: Family, chains: Vec<String> },
    #[error("TPROXY routing is not in place: {}", .0.join("; "))]
    RoutesMissing(Vec<String>),
    #[error("clean left things behind: {}", .0.join("; "))]
    Clean(Vec<String>),
    #[error(transparent)]
    Routes(#[from] crate::backend::netlink::routes::RouteError),
    /// Config resolves every owner-group name before a backend runs; a name here is a bug.
    #[error("group {0:?} (in an owner-group rule) was not resolved to a gid")]
    UnresolvedGroup(String),
}

/// Fails on a group name: `-m owner --gid-owner NAME` would make iptables ask NSS.
fn numeric_only(rules: &[crate::plan::XtRule]) -> Result<(), IptError> {
    for r in rules {
        for m in &r.matches {
            if let crate::plan::Match::Gid {
                gid: crate::plan::Group::Name(n),
                ..
            } = m
            {
                return Err(IptError::UnresolvedGroup(n.as_str().to_string()));
            }
        }
    }
    Ok(())
}

fn binary_family(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn display(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.display().to_string())
}

/// Runs `bin args` (no shell), feeding `stdin`; returns stdout, or an error that quotes the
/// binary, its exit status and its stderr.
pub fn run(
    bin: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String, IptError> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let spawn_err = |source| IptError::Spawn {
        bin: display(bin),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(input) = stdin {
        // A write error shows up as the child's failure below.
        let _ = child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(IptError::Failed {
        bin: format!("{} {}", display(bin), args.join(" "))
            .trim_end()
            .to_string(),
        status: match out.status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".into(),
        },
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Environment for writers: in CNI mode a per-namespace xtables lock, so pods being set up
/// concurrently do not serialize on the host's /run/xtables.lock.
fn writer_env(cfg: &Config) -> Vec<(&'static str, String)> {
    match (&cfg.cni_mode, &cfg.network_namespace) {
        (true, Some(ns)) => vec![("XTABLES_LOCKFILE", ns.display().to_string())],
        _ => vec![],
    }
}

fn restore(x: &Xtables, text: &str, cfg: &Config) -> Result<(), IptError> {
    let mut args = vec!["--noflush"];
    args.extend(x.wait_args());
    let env = writer_env(cfg);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    logging::debug_with(|| format!("{} --noflush with:\n{text}", x.restore.display()));
    run(&x.restore, &args, Some(text), &env).map(|_| ())
}

/// What apply will do for one family, decided before anything changes.
enum Step {
    Fresh(String),
    Nothing,
    Replace(String),
}

/// One family as it is and as the plan wants it.
struct FamilyState {
    x: Xtables,
    /// The plan's rules with group names replaced by gids.
    rules: Vec<crate::plan::XtRule>,
    live: State,
    want: State,
}

/// Detects the binaries for `f` and reads the live state (detection's `-save`). The plan's
/// groups are numeric (config resolved them), as `*-save` prints them.
fn read_family(plan: &Plan, cfg: &Config, f: Family) -> Result<FamilyState, IptError> {
    let mut x = detect::detect(f, cfg.force_iptables_binary)?;
    let rules = plan.xtables.rules(f).to_vec();
    numeric_only(&rules)?;
    let saved = match x.saved.take() {
        Some(text) => text,
        None => run(&x.save, &[], None, &[])?,
    };
    let live = parse_save(&saved);
    let want = expected(&rules, f);
    Ok(FamilyState {
        x,
        rules,
        live,
        want,
    })
}

/// Apply the plan's xtables rules and the TPROXY routing.
pub fn apply(plan: &Plan, cfg: &Config) -> Result<(), IptError> {
    let mut steps = Vec::new();
    for f in plan.xtables.families() {
        let FamilyState {
            x,
            rules,
            live,
            want,
        } = read_family(plan, cfg, f)?;
        logging::info(&format!("using {} ({})", x.name, x.bin.display()));
        let step = if !has_ours(&live, cfg.tproxy_mark) {
            Step::Fresh(crate::render::iptables::restore(&rules))
        } else {
            let chains = drift(&live, &want, cfg.tproxy_mark);
            if chains.is_empty() && !cfg.force_apply {
                Step::Nothing
            } else if !cfg.reconcile && !cfg.force_apply {
                return Err(IptError::Drift { family: f, chains });
            } else {
                if !chains.is_empty() {
                    logging::info(&format!("reconciling {}: {}", x.name, chains.join(", ")));
                }
                let text = replace_text(&live, &want, Some(&rules), cfg.tproxy_mark);
                Step::Replace(text.unwrap_or_default())
            }
        };
        steps.push((x, step));
    }
    for (x, step) in steps {
        match step {
            Step::Nothing => logging::info(&format!("{}: rules already in place", x.name)),
            Step::Fresh(text) | Step::Replace(text) if !text.is_empty() => restore(&x, &text, cfg)?,
            _ => {}
        }
    }
    crate::backend::netlink::routes::apply(plan)?;
    Ok(())
}

/// Succeeds when the live rules (of the variant detection picks) are exactly the plan's,
/// compared as a rerun compares them, and the TPROXY routing is in place.
pub fn check(plan: &Plan, cfg: &Config) -> Result<(), IptError> {
    for f in plan.xtables.families() {
        let fam = read_family(plan, cfg, f)?;
        let chains = drift(&fam.live, &fam.want, cfg.tproxy_mark);
        if !chains.is_empty() {
            return Err(IptError::NotInPlace { family: f, chains });
        }
    }
    let missing = crate::backend::netlink::routes::missing(plan)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(IptError::RoutesMissing(missing))
    }
}

/// Remove everything of ours from every variant and family, plus native nftables tables and
/// TPROXY routing. Every failure is collected; the error lists them all.
pub fn clean(plan: &Plan, cfg: &Config) -> Result<Vec<String>, IptError> {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    // Every variant, whatever --force-iptables-binary says: that flag chooses where an apply
    // writes, and a clean removes what any earlier run left.
    let variants = [
        Some(XtablesVariant::Legacy),
        Some(XtablesVariant::Nft),
        None,
    ];
    for f in [Family::V4, Family::V6] {
        let planned = expected(plan.xtables.rules(f), f);
        let mut seen: Vec<PathBuf> = Vec::new();
        for v in &variants {
            let Some((name, bin, save, restore_bin)) = detect::locate(f, *v) else {
                continue;
            };
            // Plain `iptables` is usually a link to one of the variants already handled.
            let real = std::fs::canonicalize(&bin).unwrap_or(bin.clone());
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            let live: State = match run(&save, &[], None, &[]) {
                Ok(text) => parse_save(&text),
                Err(e) => {
                    logging::debug(&format!("{name}: not readable, skipped: {e}"));
                    continue;
                }
            };
            let Some(text) = replace_text(&live, &planned, None, cfg.tproxy_mark) else {
                continue;
            };
            let x = Xtables {
                family: f,
                name: name.clone(),
                bin,
                save,
                restore: restore_bin,
                nf_tables: matches!(v, Some(XtablesVariant::Nft)),
                version: (1, 8, 0),
                existing_rules: true,
                saved: None,
            };
            match restore(&x, &text, cfg) {
                Ok(()) => done.push(format!(
                    "{name}: removed {} lines of ours",
                    text.lines().filter(|l| l.starts_with('-')).count()
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    match crate::backend::netlink::clean(cfg.tproxy_mark, cfg.tproxy_route_table) {
        Ok(removed) => done.extend(removed),
        Err(e) => failures.push(e.to_string()),
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(IptError::Clean(failures))
    }
}
