//! Test helpers: the policy of a command line, resolved without the machine.

use super::policy::Policy;
use crate::host::{Host, HostError};

struct NoHost;

impl Host for NoHost {
    fn interface_addrs(&self) -> Result<Vec<std::net::IpAddr>, HostError> {
        Ok(vec!["10.244.1.5".parse().expect("an address")])
    }
    fn read_file(&self, path: &str) -> Result<String, HostError> {
        Err(HostError::Read {
            path: path.into(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }
}

/// The policy of `meshtables apply -u 1337 ARGS` (IPv4 unless the args say otherwise).
pub fn policy(args: &[&str]) -> Policy {
    let mut argv: Vec<std::ffi::OsString> = ["meshtables", "apply", "-u", "1337"]
        .iter()
        .map(Into::into)
        .collect();
    argv.extend(args.iter().map(Into::into));
    let env = std::collections::HashMap::new();
    let m = clap::Command::new("meshtables")
        .subcommand(super::flags::subcommand("apply", None, ""))
        .try_get_matches_from(argv)
        .expect("a valid command line");
    let (_, sub) = m.subcommand().expect("apply");
    let flags = super::flags::from_matches(sub);
    let early = crate::profile::istio::config::early(
        &flags,
        crate::profile::istio::config::Subcommand::Apply,
        &env,
    )
    .expect("a valid command line");
    crate::profile::istio::config::resolve(&flags, &early, &env, &NoHost)
        .expect("a valid command line")
        .policy
}
