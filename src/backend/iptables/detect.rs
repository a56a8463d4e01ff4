//! Which iptables binaries to use, as upstream decides (docs/upstream.md, "Applying with iptables"): legacy if it is usable
//! and already holds rules, else the nft variant, else plain `iptables`;
//! `--force-iptables-binary` overrides. "Usable" means `<bin>-save` runs and the nat table
//! works in this kernel (upstream's probe: add and delete a harmless rule). Binaries are found
//! by absolute path on PATH and run directly, no shell: both through the `Machine`.

use std::path::PathBuf;

use super::exec::IptError;
use super::machine::Machine;
use crate::plan::Family;
use crate::values::XtablesVariant;

/// A usable set of binaries for one family.
#[derive(Debug, Clone)]
pub struct Xtables {
    pub family: Family,
    /// `iptables-legacy`, `iptables-nft`, `iptables` (or the ip6tables twins).
    pub name: String,
    pub bin: PathBuf,
    pub save: PathBuf,
    pub restore: PathBuf,
    pub nf_tables: bool,
    pub version: (u32, u32, u32),
    /// What detection's `-save` printed, so reading the live state needs no second run. (The
    /// nat-table probe that follows it adds and deletes one rule: the rules are the same.)
    pub saved: Option<String>,
}

impl Xtables {
    /// Legacy iptables from 1.6.2 takes `--wait`; upstream passes `--wait=30` to writers.
    pub fn wait_args(&self) -> &'static [&'static str] {
        if !self.nf_tables && self.version >= (1, 6, 2) {
            &["--wait=30"]
        } else {
            &[]
        }
    }
}

fn base(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// The binaries of one variant (`Some(Legacy)`, `Some(Nft)`, or `None` for plain).
pub fn locate(
    m: &dyn Machine,
    family: Family,
    variant: Option<XtablesVariant>,
) -> Option<(String, PathBuf, PathBuf, PathBuf)> {
    let name = match variant {
        Some(XtablesVariant::Legacy) => format!("{}-legacy", base(family)),
        Some(XtablesVariant::Nft) => format!("{}-nft", base(family)),
        None => base(family).to_string(),
    };
    Some((
        name.clone(),
        m.which(&name)?,
        m.which(&format!("{name}-save"))?,
        m.which(&format!("{name}-restore"))?,
    ))
}

/// Why a variant was not picked: not usable (the reason goes in the error listing every
/// candidate), or a failure that ends detection (the xtables lock, a probe rule that could not
/// be deleted).
pub enum ProbeError {
    NotUsable(String),
    Fatal(IptError),
}

/// Probes one variant; `Err` says why it is not usable. With `need_rules`, a variant whose
/// `-save` shows no rule is reported as such without further probes: upstream would not pick
/// it whatever they found (legacy is only chosen when it holds rules), so running
/// `-save --version` and the nat-table probe for it is wasted time.
pub fn probe(
    m: &dyn Machine,
    family: Family,
    variant: Option<XtablesVariant>,
    need_rules: bool,
    env: &[(&str, &str)],
) -> Result<Xtables, ProbeError> {
    use ProbeError::NotUsable;
    let (name, bin, save, restore) = locate(m, family, variant).ok_or_else(|| {
        let n = match variant {
            Some(XtablesVariant::Legacy) => "-legacy",
            Some(XtablesVariant::Nft) => "-nft",
            None => "",
        };
        NotUsable(format!(
            "{}{n}, {0}{n}-save or {0}{n}-restore not found on PATH",
            base(family)
        ))
    })?;
    let out = m
        .run(&save, &[], None, &[])
        .map_err(|e| NotUsable(format!("failed to execute {name}-save: {e}")))?;
    let existing_rules = has_rules(&out);
    if need_rules && !existing_rules {
        return Err(NotUsable(format!("{name} holds no rules")));
    }
    // The -nft binaries are nf_tables and take no --wait: no need to ask. Legacy and plain
    // `iptables` are asked for their version (legacy >= 1.6.2 takes --wait).
    let (nf_tables, version) = if variant == Some(XtablesVariant::Nft) {
        (true, (0, 0, 0))
    } else {
        match m.run(&save, &["--version"], None, &[]) {
            Ok(v) => (v.contains("nf_tables"), parse_version(&v)),
            Err(_) => (false, (0, 0, 0)),
        }
    };
    let mut x = Xtables {
        family,
        name: name.clone(),
        bin,
        save,
        restore,
        nf_tables,
        version,
        saved: None,
    };
    nat_probe(m, &x, env)?;
    x.saved = Some(out);
    Ok(x)
}

/// Upstream's kernel probe: can this variant use the nat table? Legacy: add and delete a
/// harmless rule (`-t nat -A INPUT -p 255 -j RETURN`), as upstream. nf_tables variants: the
/// same question in one netlink transaction that leaves nothing behind (`nl::probe`).
/// The add and the delete are writers: they take the xtables lock `env` names, as every
/// write does. The lock timing out, or the delete failing, ends detection with that error
/// (the probe rule left behind is removed by the next apply or clean).
fn nat_probe(m: &dyn Machine, x: &Xtables, env: &[(&str, &str)]) -> Result<(), ProbeError> {
    let no_nat = |e: String| {
        ProbeError::NotUsable(format!(
            "{} has no kernel support for the nat table: {e}",
            x.name
        ))
    };
    if x.nf_tables {
        return m.nat_probe_nf_tables(x.family).map_err(no_nat);
    }
    let mut add: Vec<&str> = vec!["-t", "nat", "-A", "INPUT", "-p", "255", "-j", "RETURN"];
    add.extend(x.wait_args());
    match m.run(&x.bin, &add, None, env) {
        Ok(_) => {}
        Err(e @ IptError::Locked { .. }) => return Err(ProbeError::Fatal(e)),
        Err(e) => return Err(no_nat(e.to_string())),
    }
    let mut del = add.clone();
    del[2] = "-D";
    m.run(&x.bin, &del, None, env).map_err(ProbeError::Fatal)?;
    Ok(())
}

/// Upstream's test since Istio PR #61024 (1.29-1.31 backports): a variant "has existing rules"
/// iff its `-save` output has a line starting `-A ` or `-I `. Empty tables, chain headers and
/// user chains without rules do not count (the nat-table probe leaves empty legacy tables).
pub fn has_rules(save: &str) -> bool {
    save.lines()
        .any(|l| l.starts_with("-A ") || l.starts_with("-I "))
}

fn parse_version(s: &str) -> (u32, u32, u32) {
    let Some(i) = s.find(" v") else {
        return (0, 0, 0);
    };
    let v: Vec<u32> = s[i + 2..]
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or("")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
        v.get(2).copied().unwrap_or(0),
    )
}

/// Upstream's choice for one family. The error lists why each candidate was refused.
/// Writers take the xtables lock `env` names (`XTABLES_LOCKFILE`, in CNI mode).
pub fn detect(
    m: &dyn Machine,
    family: Family,
    force: Option<XtablesVariant>,
    env: &[(&str, &str)],
) -> Result<Xtables, IptError> {
    let candidates = match force {
        Some(v) => vec![(Some(v), false)],
        None => vec![
            (Some(XtablesVariant::Legacy), true),
            (Some(XtablesVariant::Nft), false),
            (None, false),
        ],
    };
    let mut reasons = Vec::new();
    for (variant, need_rules) in candidates {
        match probe(m, family, variant, need_rules, env) {
            Ok(x) => return Ok(x),
            Err(ProbeError::NotUsable(why)) => reasons.push(why),
            Err(ProbeError::Fatal(e)) => return Err(e),
        }
    }
    Err(IptError::NoBinary { family, reasons })
}

#[cfg(test)]
mod tests {
    #[test]
    fn existing_rules_means_an_a_or_i_line() {
        let empty_tables =
            "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(!super::has_rules(empty_tables));
        assert!(!super::has_rules("*nat\n:SOME_CHAIN - [0:0]\nCOMMIT\n"));
        assert!(super::has_rules("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"));
        assert!(super::has_rules("*filter\n-I INPUT 1 -j ACCEPT\nCOMMIT\n"));
    }

    #[test]
    fn versions() {
        assert_eq!(
            super::parse_version("iptables-save v1.8.9 (nf_tables)\n"),
            (1, 8, 9)
        );
        assert_eq!(super::parse_version("iptables-save v1.6.1"), (1, 6, 1));
        assert_eq!(super::parse_version("garbage"), (0, 0, 0));
    }
}
