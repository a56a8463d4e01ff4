//! The generic resolver: where a setting's value comes from and what it is. A flag table
//! (`flags`) names each setting, its environment variables and its default; the resolver
//! applies upstream's precedence (command-line flag > later env var > earlier env var >
//! default; an empty env var counts as unset), parses the text with the flag's own parser,
//! and on a bad value says which flag or variable held it, the value and what is expected.
//! It knows no scheme: Istio's settings (`config`) and the installer's (`install`) both use it.

use std::collections::HashMap;
use std::fmt;

use crate::flags::{Flag, Flags, Spec};
use crate::host::HostError;

/// Where environment variables come from. `Sync`, so work can move into a network namespace
/// on another thread (`netns`).
pub trait EnvSource: Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Errors from resolving the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or env value is malformed. Exit status 2.
    #[error("{origin}: {value:?} {problem}")]
    Invalid {
        origin: Origin,
        value: String,
        problem: String,
    },
    /// Reading a fact from the machine failed. Exit status 1.
    #[error(transparent)]
    Host(#[from] HostError),
    /// An owner group name /etc/group does not know. Exit status 1.
    #[error(
        "{origin}: group {name:?} is not in /etc/group; use a numeric gid (meshtables never makes `-m owner` or `skgid` look names up through NSS)"
    )]
    UnknownGroup { origin: Origin, name: String },
    /// IPv6 auto-detection found no usable address (upstream's error). Exit status 1.
    #[error(
        "no valid local IP address found (needed to decide IPv6 with --enable-ipv6=auto; pass --enable-ipv6 true|false)"
    )]
    NoLocalIp,
}

impl ConfigError {
    /// Exit status: 2 for bad input, 1 for a failure reading the machine.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Invalid { .. } => 2,
            _ => 1,
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag {
        long: &'static str,
        short: Option<char>,
    },
    Env(&'static str),
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag {
                long,
                short: Some(s),
            } => write!(f, "--{long} (-{s})"),
            Origin::Flag { long, short: None } => write!(f, "--{long}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Default(long) => write!(f, "default of --{long}"),
        }
    }
}

/// A raw value and its origin.
pub struct Raw {
    pub value: String,
    pub origin: Origin,
}

/// Looks flags up: the command line, then the variables (later first), then the default.
pub struct Resolver<'a> {
    flags: &'a Flags,
    env: &'a dyn EnvSource,
}

impl<'a> Resolver<'a> {
    pub fn new(flags: &'a Flags, env: &'a dyn EnvSource) -> Resolver<'a> {
        Resolver { flags, env }
    }
}

impl Resolver<'_> {
    /// The given value (command line, else the highest-precedence variable that is set).
    pub fn raw(&self, s: &'static Spec) -> Option<Raw> {
        if let Some(v) = self.flags.get(s) {
            return Some(Raw {
                value: v.to_string(),
                origin: Origin::Flag {
                    long: s.long,
                    short: s.short,
                },
            });
        }
        // An empty variable counts as unset, whatever the kind of value: the next variable
        // down, else the default, decides (docs/upstream.md, "Flags and environment"). A
        // mesh-wide `FOO=` in the proxy's env must not stop every pod; the flag given empty
        // (`--dns-servers ""`) keeps its meaning.
        s.envs.iter().rev().find_map(|name| {
            self.env
                .var(name)
                .filter(|value| !value.is_empty())
                .map(|value| Raw {
                    value,
                    origin: Origin::Env(name),
                })
        })
    }

    /// `raw` parsed with `f`'s parser.
    pub fn parse<T>(f: &'static Flag<T>, raw: Raw) -> Result<T, ConfigError> {
        (f.parse)(&raw.value).map_err(|problem| invalid(raw, problem))
    }

    /// The given value or the default, parsed.
    pub fn get<T>(&self, f: &'static Flag<T>) -> Result<T, ConfigError> {
        let raw = self.raw(&f.spec).unwrap_or_else(|| Raw {
            value: f.spec.default.unwrap_or("").to_string(),
            origin: Origin::Default(f.spec.long),
        });
        Self::parse(f, raw)
    }

    /// The given value, parsed; `None` when not given.
    pub fn given<T>(&self, f: &'static Flag<T>) -> Result<Option<T>, ConfigError> {
        self.raw(&f.spec).map(|raw| Self::parse(f, raw)).transpose()
    }

    /// Where the value of `s` comes from: the command line, a variable, or the default.
    pub fn origin(&self, s: &'static Spec) -> Origin {
        self.raw(s)
            .map(|r| r.origin)
            .unwrap_or(Origin::Default(s.long))
    }

    /// The given value unless it is blank.
    pub fn non_blank(&self, s: &'static Spec) -> Option<Raw> {
        self.raw(s).filter(|r| !r.value.trim().is_empty())
    }
}

/// The error for `raw`, which is not what it should be.
pub fn invalid(raw: Raw, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: raw.origin,
        value: raw.value,
        problem: problem.into(),
    }
}
