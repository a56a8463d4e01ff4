//! config → plan → both renderers, for upstream's largest golden case (`tproxy`: TPROXY,
//! IPv6, DNS, include and exclude CIDRs, an excluded interface).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use meshtables::cli::{Cli, Command};
use meshtables::config;
use meshtables::host::{Host, HostError};
use meshtables::plan::{self, Family};
use meshtables::render;

struct NoHost;
impl Host for NoHost {
    fn interface_addrs(&self) -> Result<Vec<IpAddr>, HostError> {
        Ok(vec![])
    }
    fn read_file(&self, path: &str) -> Result<String, HostError> {
        Err(HostError::Read {
            path: path.into(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }
}

const TPROXY: &[&str] = &[
    "meshtables",
    "istio-iptables",
    "--dry-run",
    "-u",
    "1337",
    "-g",
    "1337",
    "--enable-ipv6",
    "true",
    "-m",
    "TPROXY",
    "-b",
    "*",
    "-x",
    "1.1.0.0/16",
    "-i",
    "9.9.0.0/16",
    "--redirect-dns",
    "-c",
    "not-istio-nic",
    "--dns-servers",
    "127.0.0.53",
];

fn bench(c: &mut Criterion) {
    let env: HashMap<String, String> = HashMap::new();
    c.bench_function(
        "tproxy: argv -> config -> plan -> iptables + nft text",
        |b| {
            b.iter(|| {
                let cli = Cli::try_parse_from(black_box(TPROXY)).unwrap();
                let Command::Apply(flags) = &cli.command else {
                    unreachable!()
                };
                let cfg = config::resolve(flags, config::Subcommand::Apply, &env, &NoHost).unwrap();
                let p = plan::build(&cfg);
                let v4 = render::iptables::restore(p.xtables.rules(Family::V4));
                let v6 = render::iptables::restore(p.xtables.rules(Family::V6));
                let nft = render::nft::transaction(&p.nft);
                black_box((v4, v6, nft))
            })
        },
    );
    let cli = Cli::try_parse_from(TPROXY).unwrap();
    let Command::Apply(flags) = &cli.command else {
        unreachable!()
    };
    let cfg = config::resolve(flags, config::Subcommand::Apply, &env, &NoHost).unwrap();
    c.bench_function("tproxy: config -> plan -> iptables + nft text", |b| {
        b.iter(|| {
            let p = plan::build(black_box(&cfg));
            let v4 = render::iptables::restore(p.xtables.rules(Family::V4));
            let v6 = render::iptables::restore(p.xtables.rules(Family::V6));
            let nft = render::nft::transaction(&p.nft);
            black_box((v4, v6, nft))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
