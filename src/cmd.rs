//! The CLI front end: argv + env + host → exit code, with stdout passed in so tests can run it
//! in-process. stdout carries only dry-run output; every log and error goes to stderr, as one
//! line. It parses the command line and calls the engine (`run`), as the CNI plugin and the
//! installer do.
//!
//! Exit codes: 0 done; 1 apply/clean failed, `check` found a difference, or a host fact could
//! not be read; 2 bad input (an unknown flag, a missing or invalid value); 126 validation
//! failed (as upstream).

use std::ffi::OsString;
use std::io::Write;

use clap::Command;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::flags::{self, Flags};
use crate::host::Host;
use crate::logging;
use crate::profile::ambient::flags as ambient;
use crate::profile::ambient::host::AmbientHost;
use crate::profile::ambient::host::flags as host_flags;
use crate::profile::ambient::host::members::{self, MemberVerb};
use crate::profile::ambient::{Ambient, config as ambient_config};
use crate::profile::istio::Istio;
use crate::profile::istio::config::{self, EnvSource, Resolved, Subcommand};
use crate::profile::istio::flags as istio;
use crate::run::RunError;
use crate::run::execute;

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

/// The CLI: Istio's subcommands (each takes every flag of its table), `ambient` and its verbs
/// (each takes every flag of ambient's table), and the installer's.
pub fn command() -> Command {
    let mut cmd = Command::new("meshtables")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Program an Istio sidecar's traffic interception (a drop-in for istio-iptables), or an ambient pod's redirection to ztunnel (meshtables ambient).")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (name, alias, about) in istio::SUBCOMMANDS {
        cmd = cmd.subcommand(istio::subcommand(name, alias, about));
    }
    // The node's rules are a verb group of `ambient` (`ambient host ...`).
    cmd.subcommand(ambient::command().subcommand(host_flags::command()))
        .subcommand(flags::install_command())
        .subcommand(flags::ready_command())
}

/// The scheme a command line names: chosen once, from the subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `apply`, `clean`, `check` (`istio-iptables`, `istio-clean-iptables`).
    Istio,
    /// `ambient apply|clean|check`.
    Ambient,
    /// `ambient host apply|clean|check`.
    AmbientHost,
    /// `ambient host add-pod|remove-pod` (the verb is the member verb; the subcommand
    /// returned with it means nothing).
    AmbientMember(MemberVerb),
}

fn verb(m: &clap::ArgMatches) -> Result<(Subcommand, &clap::ArgMatches), clap::Error> {
    match m.subcommand() {
        Some(("apply", sm)) => Ok((Subcommand::Apply, sm)),
        Some(("clean", sm)) => Ok((Subcommand::Clean, sm)),
        Some(("check", sm)) => Ok((Subcommand::Check, sm)),
        _ => Err(clap::Error::new(ErrorKind::MissingSubcommand)),
    }
}

/// Parses argv (`argv[0]` first) into the scheme, the verb and the flags given (of that
/// scheme's table).
pub fn parse_command(args: Vec<OsString>) -> Result<(Scheme, Subcommand, Flags), clap::Error> {
    let m = command().try_get_matches_from(normalize_args(args))?;
    if let Some(("ambient", am)) = m.subcommand() {
        if let Some(("host", hm)) = am.subcommand() {
            let member = |v, sm| {
                let f = host_flags::from_matches(sm, host_flags::MEMBERS);
                Ok((Scheme::AmbientMember(v), Subcommand::Apply, f))
            };
            return match hm.subcommand() {
                Some(("add-pod", sm)) => member(MemberVerb::Add, sm),
                Some(("remove-pod", sm)) => member(MemberVerb::Remove, sm),
                _ => {
                    let (sub, sm) = verb(hm)?;
                    let f = host_flags::from_matches(sm, host_flags::RULES);
                    Ok((Scheme::AmbientHost, sub, f))
                }
            };
        }
        let (sub, sm) = verb(am)?;
        return Ok((Scheme::Ambient, sub, ambient::from_matches(sm)));
    }
    let (sub, sm) = verb(&m)?;
    Ok((Scheme::Istio, sub, istio::from_matches(sm)))
}

/// Parses an Istio command line (`argv[0]` first) into the subcommand and the flags given.
pub fn parse_args(args: Vec<OsString>) -> Result<(Subcommand, Flags), clap::Error> {
    match parse_command(args)? {
        (Scheme::Istio, sub, flags) => Ok((sub, flags)),
        _ => Err(clap::Error::new(ErrorKind::InvalidSubcommand)),
    }
}

/// Resolves an Istio command line (`argv[0]` first) the way a run would, without running it:
/// for tests and benchmarks that want the configuration or the plan of a command line.
pub fn resolve_args(
    args: Vec<OsString>,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<Resolved, String> {
    let (sub, flags) = parse_args(args).map_err(|e| one_line(&e))?;
    let early = config::early(&flags, sub, env).map_err(|e| e.to_string())?;
    config::resolve(&flags, &early, env, host).map_err(|e| e.to_string())
}

/// `resolve_args` for `meshtables ambient VERB ...`.
pub fn resolve_ambient_args(
    args: Vec<OsString>,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<crate::profile::ambient::config::Resolved, String> {
    let (sub, flags) = match parse_command(args).map_err(|e| one_line(&e))? {
        (Scheme::Ambient, sub, flags) => (sub, flags),
        _ => return Err("not an ambient in-pod command line".into()),
    };
    let early = ambient_config::early(&flags, sub, env).map_err(|e| e.to_string())?;
    ambient_config::resolve(&flags, &early, env, host).map_err(|e| e.to_string())
}

/// Parses argv; `Err` carries the exit code, after printing help/version (stdout, 0) or a
/// one-line error naming the flag (stderr, 2).
fn parse(args: Vec<OsString>, stdout: &mut dyn Write) -> Result<(Scheme, Subcommand, Flags), i32> {
    parse_command(args).map_err(|e| {
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
            format!("unknown flag {arg} (see {} --help)", usage_command(e))
        }
        ErrorKind::UnknownArgument => format!(
            "unexpected argument {arg:?}: flags take their value as --flag VALUE or --flag=VALUE, booleans as --flag or --flag=BOOL"
        ),
        ErrorKind::InvalidSubcommand => format!(
            "unknown command {arg:?} (expected apply, clean, check, istio-iptables, istio-clean-iptables, or ambient apply|clean|check)"
        ),
        ErrorKind::InvalidValue if value.is_empty() => format!("{flag} needs a value"),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            format!("{flag}: {value:?} is not a valid value")
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a command is needed: apply (istio-iptables), clean (istio-clean-iptables), check, or ambient apply|clean|check"
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

/// The command the error is about, from clap's usage line ("meshtables ambient apply"), so the
/// hint names the help that lists the flags of that command.
fn usage_command(e: &clap::Error) -> String {
    let usage = match e.get(ContextKind::Usage) {
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        _ => String::new(),
    };
    let words: Vec<&str> = usage
        .trim_start()
        .trim_start_matches("Usage:")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '-', '<']))
        .collect();
    match words.first() {
        None => "meshtables apply".into(),
        Some(w) if w.starts_with("meshtables") || w.starts_with("istio-") => words.join(" "),
        // `cni-install` parses its arguments without the program's name.
        Some(_) => format!("meshtables {}", words.join(" ")),
    }
}

/// A subcommand's arguments (after the program's name and the subcommand's) parsed by `cmd`;
/// `Err` is the exit code after help or version (stdout, 0) or a one-line error (stderr, 2).
fn matches(
    cmd: clap::Command,
    args: Vec<OsString>,
    stdout: &mut dyn Write,
) -> Result<clap::ArgMatches, i32> {
    cmd.try_get_matches_from(args.into_iter().skip(1))
        .map_err(|e| {
            if e.use_stderr() {
                let _ = writeln!(std::io::stderr(), "meshtables: {}", one_line(&e));
                2
            } else {
                let _ = write!(stdout, "{e}");
                0
            }
        })
}

/// `meshtables cni-install`: settings (bad ones exit 2, one line naming the flag or variable),
/// then the installer until SIGTERM (a failure exits 1).
fn install_main(args: Vec<OsString>, env: &dyn EnvSource, stdout: &mut dyn Write) -> i32 {
    let m = match matches(flags::install_command(), args, stdout) {
        Ok(m) => m,
        Err(code) => return code,
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
    let m = match matches(flags::ready_command(), args, stdout) {
        Ok(m) => m,
        Err(code) => return code,
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
    let (scheme, sub, flags) = match parse(args, stdout) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    // The level as given (validated with every other flag when the run resolves; both
    // tables name it alike).
    let level = flags
        .get(&istio::LOG_OUTPUT_LEVEL.spec)
        .and_then(logging::parse_level)
        .unwrap_or(logging::Level::Info);
    let json = flags
        .get(&istio::LOG_AS_JSON.spec)
        .and_then(crate::values::parse_bool)
        .unwrap_or(false);
    logging::init(level, json);
    let ran = match scheme {
        Scheme::Istio => execute(&Istio, &flags, sub, env, host, stdout),
        Scheme::Ambient => execute(&Ambient, &flags, sub, env, host, stdout),
        Scheme::AmbientHost => execute(&AmbientHost, &flags, sub, env, host, stdout),
        Scheme::AmbientMember(v) => members::resolve(v, &flags, env)
            .map_err(RunError::from)
            .and_then(|m| members::run(&m, &flags, env, stdout)),
    };
    match ran {
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
