//! Members of a plan's named address sets, one by one: each is an element with a comment
//! saying whose it is (the scheme decides what: Istio ambient's node agent writes the pod's
//! UID). `put` is an upsert: a member of another owner's becomes ours (delete and add in one
//! transaction); `take` removes only members with our comment. An element without a comment
//! was not made this way and is a conflict: nothing changes. Each call is one transaction,
//! committed only if the ruleset is still the one read.

use std::net::IpAddr;

use netlink_packet_netfilter::nftables::NfTablesMessage;
use nix::errno::Errno;

use crate::backend::nl::batch::{Named, Writer};
use crate::backend::nl::session::{NetlinkError, Nft};
use crate::backend::nl::wire;
use crate::plan::{AddrSet, TableLayout};

fn key(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn text(a: IpAddr) -> String {
    crate::render::iptables::addr_text(a)
}

pub use crate::backend::api::MemberOutcome as Outcome;

/// Adds (`add`) or removes the members `addrs` of sets `sets` (each address goes to the set of
/// its family) with comment `comment`, in table `table`.
pub fn change(
    table: &TableLayout,
    members: &[(AddrSet, IpAddr)],
    comment: &str,
    add: bool,
) -> Result<Vec<(IpAddr, Outcome)>, NetlinkError> {
    super::check_capability()?;
    let mut nl = Nft::open()?;
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let generation = nl.generation()?;
        let mut outcomes = Vec::new();
        let mut foreign = Vec::new();
        let mut w = Writer::new(Some(generation));
        for (set, addr) in members {
            let live = nl.set_elements(table.nft_name, set.name).map_err(|e| {
                NetlinkError::Missing(format!(
                    "set inet {} {} cannot be read ({e}): its rules' apply makes it",
                    table.nft_name, set.name
                ))
            })?;
            let k = key(*addr);
            let found = live.iter().find(|(lk, _, _)| *lk == k);
            let theirs = found.map(|(_, _, u)| wire::comment_of(u));
            let elem = |comment: Option<&str>| {
                let mut l = wire::List::default();
                l.element(
                    &k,
                    0,
                    &comment.map(wire::element_comment).unwrap_or_default(),
                );
                wire::set_elements(table.nft_name, set.name, None, l)
            };
            let line = |verb: &str| {
                Named::Text(
                    format!(
                        "{verb} element inet {} {} {{ {} }}",
                        table.nft_name,
                        set.name,
                        text(*addr)
                    )
                    .into(),
                )
            };
            let inet = wire::INET;
            match (add, theirs) {
                (_, Some(None)) => foreign.push(format!(
                    "element {} of set inet {} {} (no comment: not made by meshtables or upstream's agent)",
                    text(*addr),
                    table.nft_name,
                    set.name
                )),
                (true, Some(Some(c))) if c == comment => outcomes.push((*addr, Outcome::Kept)),
                (true, Some(Some(c))) => {
                    let del = NfTablesMessage::DeleteSetElement(elem(None));
                    w.put("set element deletion", line("delete"), inet, del);
                    let new = NfTablesMessage::NewSetElement(elem(Some(comment)));
                    w.put("set element", line("add"), inet, new);
                    outcomes.push((*addr, Outcome::TookOver(c)));
                }
                (true, None) => {
                    let new = NfTablesMessage::NewSetElement(elem(Some(comment)));
                    w.put("set element", line("add"), inet, new);
                    outcomes.push((*addr, Outcome::Added));
                }
                (false, Some(Some(c))) if c == comment => {
                    let del = NfTablesMessage::DeleteSetElement(elem(None));
                    w.put("set element deletion", line("delete"), inet, del);
                    outcomes.push((*addr, Outcome::Removed));
                }
                (false, Some(Some(c))) => outcomes.push((*addr, Outcome::LeftOthers(c))),
                (false, None) => outcomes.push((*addr, Outcome::Absent)),
            }
        }
        if !foreign.is_empty() {
            return Err(NetlinkError::NotOurs(foreign));
        }
        if w.count() == 0 {
            return Ok(outcomes);
        }
        match nl.commit(w.finish()) {
            Err(NetlinkError::Rejected { source, .. })
                if source.raw_os_error() == Some(Errno::ERESTART as i32) =>
            {
                continue;
            }
            Ok(_) => return Ok(outcomes),
            Err(e) => return Err(e),
        }
    }
    Err(NetlinkError::KeptChanging(ATTEMPTS))
}
