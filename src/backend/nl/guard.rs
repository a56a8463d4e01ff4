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

use netlink_packet_netfilter::nftables::{MetaKey, NfTablesMessage};

use super::batch::{Named, Writer};
use super::expr::{cmp, meta_load, verdict};
use super::session::{NetlinkError, Nft};
use super::wire;

/// The table's name.
pub const NAME: &str = "meshtables-guard";

/// `nft` text naming it, for messages.
pub const TEXT: &str = "table inet meshtables-guard";

/// Before every other hook: nothing is seen by a half-written rule while the guard is up.
const PRIORITY: i32 = -500;

/// Raises the guard (replacing one that is up).
pub fn raise() -> Result<(), NetlinkError> {
    let table = || wire::table(NAME);
    let inet = wire::INET;
    let mut w = Writer::new(None);
    // `add` then `delete` then `add`: a fresh table whether or not one was there, as nft
    // scripts do it, in one transaction.
    let add = text(format!("add {TEXT}"));
    w.put(
        "table",
        add.clone(),
        inet,
        NfTablesMessage::NewTable(table()),
    );
    let del = text(format!("delete {TEXT}"));
    w.put(
        "table deletion",
        del,
        inet,
        NfTablesMessage::DeleteTable(table()),
    );
    w.put("table", add, inet, NfTablesMessage::NewTable(table()));
    let hooks = [
        (
            "input",
            libc::NF_INET_LOCAL_IN,
            Some(MetaKey::Iif),
            "iif != lo drop",
        ),
        (
            "output",
            libc::NF_INET_LOCAL_OUT,
            Some(MetaKey::Oif),
            "oif != lo drop",
        ),
        ("forward", libc::NF_INET_FORWARD, None, "drop"),
    ];
    for (name, hook, key, rule_text) in hooks {
        let base = wire::BaseHook {
            hook,
            priority: PRIORITY,
            kind: "filter",
        };
        let line = format!(
            "add chain inet meshtables-guard {name} {{ type filter hook {name} priority {PRIORITY} ; }}"
        );
        let chain = wire::chain(NAME, name, Some(base));
        w.put("chain", text(line), inet, NfTablesMessage::NewChain(chain));
        let mut exprs = Vec::new();
        if let Some(key) = key {
            exprs.push(meta_load(key));
            exprs.push(cmp(true, super::LO_INDEX.to_ne_bytes().to_vec()));
        }
        exprs.push(verdict(libc::NF_DROP, None));
        let line = format!("add rule inet meshtables-guard {name} {rule_text}");
        let rule = wire::rule(NAME, name, &exprs);
        w.put("rule", text(line), inet, NfTablesMessage::NewRule(rule));
    }
    Nft::open()?.commit(w.finish()).map(|_| ())
}

/// Lowers the guard; success when it was not up.
pub fn lower() -> Result<(), NetlinkError> {
    let inet = wire::INET;
    let mut w = Writer::new(None);
    let add = NfTablesMessage::NewTable(wire::table(NAME));
    w.put("table", text(format!("add {TEXT}")), inet, add);
    let del = NfTablesMessage::DeleteTable(wire::table(NAME));
    w.put("table deletion", text(format!("delete {TEXT}")), inet, del);
    Nft::open()?.commit(w.finish()).map(|_| ())
}

/// Whether the guard is up.
pub fn present() -> Result<bool, NetlinkError> {
    let mut nl = Nft::open()?;
    Ok(nl.table_names()?.iter().any(|n| n == NAME))
}

fn text(s: String) -> Named<'static> {
    Named::Text(s.into())
}
