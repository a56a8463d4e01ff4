//! One nfnetlink connection to nf_tables: dumps (tables, chains, rules, sets, elements), the
//! ruleset's generation, and committing a batch with the kernel's verdict on it, the first
//! refused message named. Its errors say what to do about them (a missing capability, no
//! nf_tables in the kernel).

use std::io;

use netlink_packet_netfilter::nftables::{
    ChainMessage, GenMessage, NfTablesMessage, RuleMessage, TableMessage,
};
use nix::errno::Errno;

use super::batch;
use super::expr::LowerError;
use super::transport::{Reply, Transport};
use super::wire;

/// Errors of netlink work on nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "meshtables needs CAP_NET_ADMIN to program netfilter: add it to the container's securityContext (capabilities: {{add: [\"NET_ADMIN\"]}}, runAsUser: 0); with --native-nftables, NET_RAW is not needed"
    )]
    NoCapability,
    #[error(
        "the kernel has no nf_tables: the nf_tables (or nfnetlink) module is not loaded and could not be loaded on demand (check that module loading works on the node, or load it: modprobe nf_tables)"
    )]
    NoNfTables,
    #[error("netlink: {context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("kernel rejected {what} '{text}': {source}{more}")]
    Rejected {
        what: &'static str,
        text: String,
        source: io::Error,
        more: String,
    },
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("the live nftables rules differ from the requested ones: {}", .0.join("; "))]
    NotInPlace(Vec<String>),
    /// Something an operation needs is not there (what, and what to do).
    #[error("{0}")]
    Missing(String),
    /// Something in a table of ours that we did not make: left alone, nothing changed.
    #[error("not ours, left in place (nothing was changed): {}", .0.join("; "))]
    NotOurs(Vec<String>),
    /// The ruleset changed between our read and our commit (another writer): the kernel
    /// refused the batch whole. Read again and retry.
    #[error("the nftables ruleset kept changing while meshtables tried to commit ({0} attempts)")]
    KeptChanging(usize),
}

pub fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { context, source }
}

/// Fails with the securityContext advice when CAP_NET_ADMIN is not effective.
pub fn check_capability() -> Result<(), NetlinkError> {
    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    ) {
        Ok(true) => Ok(()),
        _ => Err(NetlinkError::NoCapability),
    }
}

/// An nfnetlink connection.
pub struct Nft {
    t: Transport,
}

impl Nft {
    pub fn open() -> Result<Nft, NetlinkError> {
        let t = Transport::netfilter().map_err(|e| {
            // No nfnetlink at all: the netfilter modules are absent and were not loaded.
            if e.raw_os_error() == Some(Errno::EPROTONOSUPPORT as i32) {
                NetlinkError::NoNfTables
            } else {
                NetlinkError::Io {
                    context: "opening socket",
                    source: e,
                }
            }
        })?;
        let mut nft = Nft { t };
        nft.await_nf_tables()?;
        Ok(nft)
    }

    /// Waits (briefly) for nf_tables to be there. nfnetlink answers EINVAL for a subsystem
    /// that is not registered, after asking for the module; a module another process's
    /// request is still loading counts as loaded for a second modprobe (busybox's and kmod's
    /// alike), so the first nf_tables users on a fresh node can see EINVAL for a few
    /// milliseconds (seen under qemu, two trials at once). Still EINVAL after the retries:
    /// nf_tables is missing and could not be loaded.
    fn await_nf_tables(&mut self) -> Result<(), NetlinkError> {
        const TRIES: u32 = 10;
        const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
        let context = "reading the ruleset generation";
        for attempt in 1..=TRIES {
            let request = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
            match self
                .t
                .get(wire::request(request))
                .map_err(io_err(context))?
            {
                Ok(_) => return Ok(()),
                Err(Errno::EINVAL) if attempt < TRIES => std::thread::sleep(PAUSE),
                Err(Errno::EINVAL) => return Err(NetlinkError::NoNfTables),
                Err(e) => {
                    return Err(NetlinkError::Io {
                        context,
                        source: e.into(),
                    });
                }
            }
        }
        Err(NetlinkError::NoNfTables)
    }

    /// Every `inet` object of one kind (the dump `request` asks for), parsed, in the
    /// kernel's order. (A message the crate cannot parse is left out: only another program's
    /// objects can be one, and a missing rule of ours reads as a difference.)
    pub fn dump(
        &mut self,
        request: NfTablesMessage,
        context: &'static str,
    ) -> Result<Vec<NfTablesMessage>, NetlinkError> {
        let tables = matches!(request, NfTablesMessage::GetTable(_));
        match self
            .t
            .dump(wire::request(request))
            .map_err(io_err(context))?
        {
            Ok(msgs) => Ok(msgs
                .iter()
                .filter_map(|m| wire::parse(m))
                .filter(|(family, _)| *family == wire::INET)
                .map(|(_, m)| m)
                .collect()),
            // nfnetlink answers EINVAL for a subsystem that is not registered: nf_tables is
            // missing and the kernel could not load it.
            Err(Errno::EINVAL) if tables => Err(NetlinkError::NoNfTables),
            Err(e) => Err(NetlinkError::Io {
                context,
                source: e.into(),
            }),
        }
    }

    /// The elements of set `set` of our `inet` table `table` (key, flags, user data), in the
    /// kernel's order.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<wire::LiveElement>, NetlinkError> {
        let request = wire::get_set_elements(table, set);
        Ok(self
            .dump(request, "listing set elements")?
            .iter()
            .flat_map(wire::live_elements)
            .collect())
    }

    /// The sets of our `inet` table `table`, as dumped.
    pub fn sets(&mut self, table: &str) -> Result<Vec<NfTablesMessage>, NetlinkError> {
        self.dump(wire::get_sets(table), "listing sets")
    }

    /// The names of the `inet` tables (a dump: no transaction, no RCU wait).
    pub fn table_names(&mut self) -> Result<Vec<String>, NetlinkError> {
        let request = NfTablesMessage::GetTable(TableMessage { attributes: vec![] });
        Ok(self
            .dump(request, "listing tables")?
            .iter()
            .filter_map(|m| wire::table_name(m).map(str::to_string))
            .collect())
    }

    /// Our tables' chains and rules, as dumped.
    pub fn chains_and_rules(
        &mut self,
    ) -> Result<(Vec<NfTablesMessage>, Vec<NfTablesMessage>), NetlinkError> {
        let chains = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
        let rules = NfTablesMessage::GetRule(RuleMessage { attributes: vec![] });
        Ok((
            self.dump(chains, "listing chains")?,
            self.dump(rules, "listing rules")?,
        ))
    }

    /// The ruleset's generation: it changes with every committed transaction, by anyone.
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let context = "reading the ruleset generation";
        let request = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
        let replies = self
            .t
            .get(wire::request(request))
            .map_err(io_err(context))?
            .map_err(|e| NetlinkError::Io {
                context,
                source: e.into(),
            })?;
        replies
            .iter()
            .filter_map(|m| wire::parse(m))
            .find_map(|(_, m)| wire::generation(&m))
            .ok_or_else(|| NetlinkError::Io {
                context,
                source: io::Error::other("no generation in the kernel's answer"),
            })
    }

    /// Sends a finished batch and reads the kernel's verdict; returns how many data messages
    /// went.
    pub fn commit(&mut self, batch: batch::Finished) -> Result<usize, NetlinkError> {
        let count = batch.names.len();
        crate::logging::debug_with(|| {
            format!(
                "sending {count} messages in one batch of {} bytes",
                batch.wire.len()
            )
        });
        self.t.expect_replies(count);
        self.t
            .send(&batch.wire)
            .map_err(io_err("sending the batch"))?;
        let replies = self
            .t
            .queued_replies()
            .map_err(io_err("reading the kernel's replies"))?;
        let describe = |i: usize| batch.names.get(i).map(|(w, n)| (*w, n.describe()));
        batch_verdict(&replies, batch.first, batch.last, &describe).map(|()| count)
    }
}

/// The kernel's verdict on a batch whose data messages are numbered `first..=last`: the first
/// error (by sequence number) names its message; no error and the last message's ACK is
/// success.
fn batch_verdict(
    replies: &[Reply],
    first: u32,
    last: u32,
    describe: &dyn Fn(usize) -> Option<(&'static str, String)>,
) -> Result<(), NetlinkError> {
    let mut errors: Vec<(u32, Errno)> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Status {
                seq,
                errno: Some(e),
            } => Some((*seq, *e)),
            _ => None,
        })
        .collect();
    errors.sort_by_key(|(seq, _)| *seq);
    if let Some((seq, errno)) = errors.first().copied() {
        let (what, text) = seq
            .checked_sub(first)
            .and_then(|i| describe(i as usize))
            .unwrap_or(("batch", "nftables transaction".to_string()));
        let more = match errors.len() {
            1 => String::new(),
            n => format!(" (and {} more errors in the same batch)", n - 1),
        };
        return Err(NetlinkError::Rejected {
            what,
            text,
            source: errno.into(),
            more,
        });
    }
    let acked = replies
        .iter()
        .any(|r| matches!(r, Reply::Status { seq, errno: None } if *seq == last));
    if !acked {
        return Err(NetlinkError::Io {
            context: "committing the batch",
            source: io::Error::other("the kernel did not acknowledge the batch"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_names_its_message_and_the_last_ack_commits() {
        let describe = |i: usize| Some(("rule", format!("rule {i}")));
        let ok = [Reply::Status {
            seq: 12,
            errno: None,
        }];
        assert!(batch_verdict(&ok, 10, 12, &describe).is_ok());
        assert!(batch_verdict(&[], 10, 12, &describe).is_err(), "no ACK");
        let failed = [
            Reply::Status {
                seq: 12,
                errno: Some(Errno::ENOENT),
            },
            Reply::Status {
                seq: 11,
                errno: Some(Errno::EOPNOTSUPP),
            },
        ];
        let e = batch_verdict(&failed, 10, 12, &describe)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("kernel rejected rule 'rule 1'"), "{e}");
        assert!(e.contains("(and 1 more errors"), "{e}");
    }
}
