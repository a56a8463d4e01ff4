//! The fail-closed guard: `table inet meshtables-guard`, whose base chains drop every packet
//! that does not come in or go out through `lo`.
//!
//! The iptables binaries commit one table of one family at a time, so a change that spans
//! several tables or both families passes through states that mix configurations (IPv4
//! intercepted and IPv6 not, mangle without nat). The iptables backend raises the guard before
//! the first of those commits and lowers it after the last: a kill in between leaves the
//! pod's traffic dropped, never half intercepted, and the guard tells the rerun that the rules
//! it finds are an interrupted run's, to be replaced. One nftables transaction each way; an
//! `inet` table covers both families and sits in front of the legacy and nft variants alike.

use std::ffi::CStr;

use nftnl::{MsgType, ProtoFamily};

use super::batch::{Named, Writer};

use super::lower::{NF_DROP, cmp, meta_load, verdict};
use super::{NetlinkError, Nft};

/// The table's name.
pub const NAME: &CStr = c"meshtables-guard";

/// `nft` text naming it, for messages.
pub const TEXT: &str = "table inet meshtables-guard";

/// Before every other hook: nothing is seen by a half-written rule while the guard is up.
const PRIORITY: i32 = -500;
const META_IIF: u32 = 4;
const META_OIF: u32 = 5;
/// `lo`'s interface index, the same in every network namespace.
const LO: u32 = 1;

/// Raises the guard (replacing one that is up).
pub fn raise() -> Result<(), NetlinkError> {
    let table = nftnl::Table::new(NAME, ProtoFamily::Inet);
    let mut w = Writer::new(None);
    // `add` then `delete` then `add`: a fresh table whether or not one was there, as nft
    // scripts do it, in one transaction.
    w.put("table", text(format!("add {TEXT}")), &table, MsgType::Add);
    w.put(
        "table deletion",
        text(format!("delete {TEXT}")),
        &table,
        MsgType::Del,
    );
    w.put("table", text(format!("add {TEXT}")), &table, MsgType::Add);
    let hooks = [
        (c"input", nftnl::Hook::In, Some(META_IIF), "iif != lo drop"),
        (
            c"output",
            nftnl::Hook::Out,
            Some(META_OIF),
            "oif != lo drop",
        ),
        (c"forward", nftnl::Hook::Forward, None, "drop"),
    ];
    for (name, hook, key, rule_text) in hooks {
        let mut chain = nftnl::Chain::new(name, &table);
        chain.set_hook(hook, PRIORITY);
        chain.set_type(nftnl::ChainType::Filter);
        let chain_name = name.to_string_lossy();
        let line = format!(
            "add chain inet meshtables-guard {chain_name} {{ type filter hook {chain_name} priority {PRIORITY} ; }}"
        );
        w.put("chain", text(line), &chain, MsgType::Add);
        let mut rule = nftnl::Rule::new(&chain);
        if let Some(key) = key {
            rule.add_expr(&meta_load(key));
            rule.add_expr(&cmp(true, LO.to_ne_bytes().to_vec()));
        }
        rule.add_expr(&verdict(NF_DROP, None));
        let line = format!("add rule inet meshtables-guard {chain_name} {rule_text}");
        w.put("rule", text(line), &rule, MsgType::Add);
    }
    Nft::open()?.commit(w.finish()).map(|_| ())
}

/// Lowers the guard; success when it was not up.
pub fn lower() -> Result<(), NetlinkError> {
    let table = nftnl::Table::new(NAME, ProtoFamily::Inet);
    let mut w = Writer::new(None);
    w.put("table", text(format!("add {TEXT}")), &table, MsgType::Add);
    w.put(
        "table deletion",
        text(format!("delete {TEXT}")),
        &table,
        MsgType::Del,
    );
    Nft::open()?.commit(w.finish()).map(|_| ())
}

/// Whether the guard is up.
pub fn present() -> Result<bool, NetlinkError> {
    let mut nl = Nft::open()?;
    Ok(nl
        .table_names()?
        .iter()
        .any(|n| n.as_bytes() == NAME.to_bytes()))
}

fn text(s: String) -> Named<'static> {
    Named::Text(s.into())
}
