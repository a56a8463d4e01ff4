//! The CLI front end: argv + env + host → exit code, with stdout passed in so tests can run it
//! in-process. stdout carries only dry-run output; every log and error goes to stderr, as one
//! line.
//!
//! Exit codes: 0 done; 1 apply/clean failed, `check` found a difference, or a host fact could
//! not be read; 2 bad input (an unknown flag, a missing or invalid value); 126 validation
//! failed (as upstream).

use std::ffi::OsString;
use std::io::Write;

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::backend::{self, BackendError};
use crate::config::{self, ConfigError, Early, EnvSource, Resolved, Subcommand, Verb};
use crate::flags::{self, Flags};
use crate::host::Host;
use crate::logging;
use crate::netns;
use crate::plan::{self, Plan};
use crate::render;

/// Errors that end a run, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to write output: {0}")]
    Output(#[source] std::io::Error),
    #[error("failed to write the dry-run trace to {path}: {source}")]
    Trace {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}\n{msg}", msg = crate::validate::FAILURE_MESSAGE)]
    Validation(#[from] crate::validate::ValidationError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(e) => e.exit_code(),
            RunError::Validation(_) => 126,
            _ => 1,
        }
    }
}

/// The subcommand a binary invoked as `istio-iptables` / `istio-clean-iptables` (a symlink,
/// busybox style) acts as.
fn subcommand_for_argv0(argv0: &str) -> Option<&'static str> {
    match argv0.rsplit('/').next().unwrap_or(argv0) {
        "istio-iptables" => Some("istio-iptables"),
        "istio-clean-iptables" => Some("istio-clean-iptables"),
        _ => None,
    }
}

/// Inserts the subcommand when invoked as `istio-iptables` / `istio-clean-iptables`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let argv0 = args.first().and_then(|a| a.to_str()).unwrap_or("");
    match subcommand_for_argv0(argv0) {
        Some(sub) => {
            let mut out = vec![OsString::from("meshtables"), OsString::from(sub)];
            out.extend(args.into_iter().skip(1));
            out
        }
        None => args,
    }
}

/// Parses argv (`argv[0]` first) into the subcommand and the flags given.
pub fn parse_args(args: Vec<OsString>) -> Result<(Subcommand, Flags), clap::Error> {
    let m = flags::command().try_get_matches_from(normalize_args(args))?;
    let (sub, sm) = match m.subcommand() {
        Some(("apply", sm)) => (Subcommand::Apply, sm),
        Some(("clean", sm)) => (Subcommand::Clean, sm),
        Some(("check", sm)) => (Subcommand::Check, sm),
        _ => return Err(clap::Error::new(ErrorKind::MissingSubcommand)),
    };
    Ok((sub, Flags::from_matches(sm)))
}

/// Resolves argv (`argv[0]` first) the way a run would, without running it: for tests and
/// benchmarks that want the configuration or the plan of a command line.
pub fn resolve_args(
    args: Vec<OsString>,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<Resolved, String> {
    let (sub, flags) = parse_args(args).map_err(|e| one_line(&e))?;
    let early = config::early(&flags, sub, env).map_err(|e| e.to_string())?;
    config::resolve(&flags, &early, env, host).map_err(|e| e.to_string())
}

/// Parses argv; `Err` carries the exit code, after printing help/version (stdout, 0) or a
/// one-line error naming the flag (stderr, 2).
fn parse(args: Vec<OsString>, stdout: &mut dyn Write) -> Result<(Subcommand, Flags), i32> {
    parse_args(args).map_err(|e| {
        if e.use_stderr() {
            let _ = writeln!(std::io::stderr(), "meshtables: {}", one_line(&e));
            2
        } else {
            let _ = write!(stdout, "{e}");
            0
        }
    })
}

/// clap's error as one line that names the flag, like every other bad input.
fn one_line(e: &clap::Error) -> String {
    let ctx = |k: ContextKind| match e.get(k) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => String::new(),
    };
    let arg = ctx(ContextKind::InvalidArg);
    let value = ctx(ContextKind::InvalidValue);
    let flag = arg.split_whitespace().next().unwrap_or("").to_string();
    match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            format!("unknown flag {arg} (see meshtables apply --help)")
        }
        ErrorKind::UnknownArgument => format!(
            "unexpected argument {arg:?}: flags take their value as --flag VALUE or --flag=VALUE, booleans as --flag or --flag=BOOL"
        ),
        ErrorKind::InvalidSubcommand => format!(
            "unknown command {arg:?} (expected apply, clean, check, istio-iptables or istio-clean-iptables)"
        ),
        ErrorKind::InvalidValue if value.is_empty() => format!("{flag} needs a value"),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            format!("{flag}: {value:?} is not a valid value")
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a command is needed: apply (istio-iptables), clean (istio-clean-iptables) or check"
                .into()
        }
        _ => e
            .to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string(),
    }
}

/// `meshtables cni-install`: settings (bad ones exit 2, one line naming the flag or variable),
/// then the installer until SIGTERM (a failure exits 1).
fn install_main(args: Vec<OsString>, env: &dyn EnvSource, stdout: &mut dyn Write) -> i32 {
    let m = match flags::install_command().try_get_matches_from(args.into_iter().skip(1)) {
        Ok(m) => m,
        Err(e) if e.use_stderr() => {
            let _ = writeln!(std::io::stderr(), "meshtables: {}", one_line(&e));
            return 2;
        }
        Err(e) => {
            let _ = write!(stdout, "{e}");
            return 0;
        }
    };
    logging::init(logging::Level::Info, false);
    #[cfg(feature = "kubernetes")]
    {
        let flags = Flags::from_matches_of(&m, flags::install::INSTALL);
        let s = match crate::install::settings(&flags, env) {
            Ok(s) => s,
            Err(e) => {
                logging::error(&e.to_string());
                return 2;
            }
        };
        logging::init(s.log_level, s.log_as_json);
        match crate::install::run(s, env) {
            Ok(()) => 0,
            Err(e) => {
                logging::error(&e.to_string());
                // A plugin entry the plugin would refuse is a bad setting, as any other.
                match e {
                    crate::install::InstallError::Entry(_) => 2,
                    _ => 1,
                }
            }
        }
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = (m, env);
        logging::error(
            "cni-install needs the CNI plugin's Kubernetes client: this binary was built without the kubernetes feature (the init image's); use the installer image",
        );
        2
    }
}

/// `meshtables cni-ready`: the installer's readiness probe (exit 0 ready, 1 not ready and why
/// on stdout, where the kubelet records it; 2 bad settings).
fn ready_main(args: Vec<OsString>, env: &dyn EnvSource, stdout: &mut dyn Write) -> i32 {
    let m = match flags::ready_command().try_get_matches_from(args.into_iter().skip(1)) {
        Ok(m) => m,
        Err(e) if e.use_stderr() => {
            let _ = writeln!(std::io::stderr(), "meshtables: {}", one_line(&e));
            return 2;
        }
        Err(e) => {
            let _ = write!(stdout, "{e}");
            return 0;
        }
    };
    logging::init(logging::Level::Info, false);
    #[cfg(feature = "kubernetes")]
    {
        let flags = Flags::from_matches_of(&m, flags::install::INSTALL);
        let s = match crate::install::settings(&flags, env) {
            Ok(s) => s,
            Err(e) => {
                logging::error(&e.to_string());
                return 2;
            }
        };
        match crate::install::ready::inspect(&s, env) {
            Ok(what) => {
                let _ = writeln!(stdout, "{what}");
                0
            }
            Err(why) => {
                let _ = writeln!(stdout, "not ready: {why}");
                1
            }
        }
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = (m, env);
        logging::error(
            "cni-ready needs the installer: this binary was built without the kubernetes feature",
        );
        2
    }
}

/// Parse and run; returns the process exit code. Errors are printed to stderr here.
pub fn main_with(
    args: Vec<OsString>,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> i32 {
    match args.get(1).and_then(|a| a.to_str()) {
        Some("cni-install") => return install_main(args, env, stdout),
        Some("cni-ready") => return ready_main(args, env, stdout),
        _ => {}
    }
    let (sub, flags) = match parse(args, stdout) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    // The level as given (validated with every other flag when the run resolves).
    let level = flags
        .get(&flags::LOG_OUTPUT_LEVEL.spec)
        .and_then(logging::parse_level)
        .unwrap_or(logging::Level::Info);
    let json = flags
        .get(&flags::LOG_AS_JSON.spec)
        .and_then(crate::values::parse_bool)
        .unwrap_or(false);
    logging::init(level, json);
    match execute(&flags, sub, env, host, stdout) {
        Ok(()) => 0,
        Err(e) => {
            logging::error(&e.to_string());
            if !logging::enabled(logging::Level::Error) {
                let _ = writeln!(std::io::stderr(), "meshtables: {e}");
            }
            e.exit_code()
        }
    }
}

/// Decides what to do, then resolves, plans, and dry-runs, applies, cleans or checks. With
/// `--network-namespace` (and not a dry run, which touches nothing) all of it, from reading
/// host facts on, happens inside that namespace.
pub fn execute(
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let early = config::early(flags, sub, env)?;
    match &early.network_namespace {
        Some(ns) if !early.action.dry_run => {
            // A plugin runs in the node's namespace: a CNI_NETNS naming it is refused.
            let cni_mode = flags
                .get(&flags::CNI_MODE.spec)
                .and_then(crate::values::parse_bool);
            if cni_mode == Some(true) {
                netns::refuse_own(ns)?;
            }
            let mut out = Vec::new();
            netns::run_in(ns, || run(flags, &early, env, host, &mut out))??;
            stdout.write_all(&out).map_err(RunError::Output)
        }
        _ => run(flags, &early, env, host, stdout),
    }
}

fn run(
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let r = config::resolve(flags, early, env, host)?;
    for w in &r.warnings {
        logging::warn(w);
    }
    logging::debug_with(|| format!("config: {}", serde_json::to_string(&r).unwrap_or_default()));
    let verb = r.action.verb;
    // Applying or checking over netlink needs only the nftables dialect; everything else
    // (dry runs, JSON, the iptables backend, a clean of every backend) both.
    let netlink_only =
        !r.action.dry_run && verb != Verb::Clean && r.run.backend == config::BackendChoice::Netlink;
    let dialects = plan::Dialects {
        xtables: !netlink_only,
        nft: true,
    };
    let plan = plan::build_for(&r.policy, dialects);
    if r.action.dry_run {
        dry_run(&r, &plan, env, stdout)?;
    } else if r.run.skip_rule_apply && verb == Verb::Apply {
        logging::info("skipping rule apply (--skip-rule-apply)");
    } else {
        backend::dispatch::run(verb, &plan, &r.run)?;
    }
    // Upstream runs the validation in a dry run too, and after --skip-rule-apply.
    if let Some(v) = &r.run.validation
        && verb == Verb::Apply
    {
        crate::validate::run(v)?;
        logging::info("validation passed: the probe connection was redirected");
    }
    Ok(())
}

/// `--dry-run`: print what would be applied (or cleaned) and write upstream's trace file.
fn dry_run(
    r: &Resolved,
    plan: &Plan,
    env: &dyn EnvSource,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let verb = r.action.verb;
    let text = render::dry_run(verb, r.run.backend, r.run.output, plan);
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(RunError::Output)?;
    if let Some(path) = env.var("DRY_RUN_FILE_PATH").filter(|p| !p.is_empty()) {
        let trace = render::trace_file(verb, r.run.backend, plan);
        std::fs::write(&path, trace).map_err(|source| RunError::Trace { path, source })?;
    }
    Ok(())
}
