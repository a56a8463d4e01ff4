//! The nat probe of iptables detection, asked in one transaction that leaves nothing behind.

use netlink_packet_netfilter::nftables::NfTablesMessage;

use super::batch;
use super::session::{NetlinkError, Nft, check_capability};
use super::wire;

/// Whether this kernel can run nat chains for `family`, as upstream's `-t nat -A INPUT -p 255
/// -j RETURN` probe asks of iptables-nft, without leaving anything behind: one transaction
/// adds a throwaway table with a nat base chain and deletes it again. (iptables-nft's probe
/// leaves an empty `nat INPUT` base chain behind, a state change a clean cannot undo.)
pub fn probe_nat(family: crate::plan::Family) -> Result<(), NetlinkError> {
    const TABLE: &str = "meshtables-nat-probe";
    check_capability()?;
    let mut nl = Nft::open()?;
    let pf = (match family {
        crate::plan::Family::V4 => libc::NFPROTO_IPV4,
        crate::plan::Family::V6 => libc::NFPROTO_IPV6,
    }) as u8;
    let hook = wire::BaseHook {
        hook: libc::NF_INET_LOCAL_IN,
        priority: 100,
        kind: "nat",
    };
    let text = |t: &'static str| batch::Named::Text(t.into());
    let mut w = batch::Writer::new(None);
    w.put(
        "table",
        text("add table meshtables-nat-probe"),
        pf,
        NfTablesMessage::NewTable(wire::table(TABLE)),
    );
    w.put(
        "chain",
        text("add chain meshtables-nat-probe input { type nat hook input priority 100 ; }"),
        pf,
        NfTablesMessage::NewChain(wire::chain(TABLE, "input", Some(hook))),
    );
    w.put(
        "table deletion",
        text("delete table meshtables-nat-probe"),
        pf,
        NfTablesMessage::DeleteTable(wire::table(TABLE)),
    );
    nl.commit(w.finish()).map(|_| ())
}
