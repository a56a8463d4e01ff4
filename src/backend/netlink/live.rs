//! What of ours the kernel holds now: which of the scheme's tables exist, and whether an
//! interrupted iptables run's guard is up (a dump: no transaction).

use crate::backend::nl::guard;
use crate::backend::nl::session::{NetlinkError, Nft};
use crate::plan::Scheme;

/// What of ours the kernel holds: which of our tables, and whether a guard is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// The names of the scheme's tables that exist.
    pub tables: Vec<&'static str>,
    pub guard: bool,
}

/// Which of the scheme's `inet` tables exist, and whether a guard is up.
pub fn our_tables(nl: &mut Nft, scheme: &Scheme) -> Result<Existing, NetlinkError> {
    let names = nl.table_names()?;
    let guard = guard::NAME;
    Ok(Existing {
        tables: scheme
            .tables
            .iter()
            .map(|t| t.nft_name)
            .filter(|t| names.iter().any(|n| n == t))
            .collect(),
        guard: names.iter().any(|n| n == guard),
    })
}
