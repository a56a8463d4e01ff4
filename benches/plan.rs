//! argv → config → plan → both renderers, for upstream's largest golden case (`tproxy`: TPROXY,
//! IPv6, DNS, include and exclude CIDRs, an excluded interface).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failed unwrap ends the run"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use meshtables::cmd;
use meshtables::host::{Host, HostError};
use meshtables::plan::Family;
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
                let argv = black_box(TPROXY).iter().map(Into::into).collect();
                let r = cmd::resolve_args(argv, &env, &NoHost).unwrap();
                let p = meshtables::profile::istio::build(&r.policy);
                let v4 = render::iptables::restore(p.xtables.rules(Family::V4));
                let v6 = render::iptables::restore(p.xtables.rules(Family::V6));
                let nft = render::nft::transaction(&p.nft);
                black_box((v4, v6, nft))
            })
        },
    );
    let argv = TPROXY.iter().map(Into::into).collect();
    let policy = cmd::resolve_args(argv, &env, &NoHost).unwrap().policy;
    c.bench_function("tproxy: config -> plan -> iptables + nft text", |b| {
        b.iter(|| {
            let p = meshtables::profile::istio::build(black_box(&policy));
            let v4 = render::iptables::restore(p.xtables.rules(Family::V4));
            let v6 = render::iptables::restore(p.xtables.rules(Family::V6));
            let nft = render::nft::transaction(&p.nft);
            black_box((v4, v6, nft))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
