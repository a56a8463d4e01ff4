//! The vocabulary between the policy walk and its dialects: a `Rule` as the walk states it
//! (matches in upstream's iptables order), and the `Sink` a dialect implements to receive
//! rules with their family fan-out. A leaf of `plan`: the walk and both dialects import it,
//! it imports neither.

use super::types::{Chain, MarkWords, Match, Proto, Table, Target};
use crate::values::Family;

/// Where a rule goes in its chain, as upstream writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Append,
    /// Insert before the rule at this 0-based position (xtables writes it 1-based).
    Insert(u32),
}

/// How upstream's nftables generator spells a rule differently from its iptables one: only
/// the order and presence of matches differ, never their meaning (one exception,
/// `nft::DROP_INVALID`), and the words of a masked mark. Applied in this order: xtables'
/// bare protocol modules (`-m tcp`, which nft has no word for) go, then `drop_proto`,
/// `order`, `prepend_tcp`.
#[derive(Debug, PartialEq, Eq)]
pub struct NftSpelling {
    /// Add `meta l4proto tcp` first.
    pub prepend_tcp: bool,
    /// Leave out the protocol match that a port match of the same protocol implies (`udp
    /// dport 53`, where iptables needs `-p udp --dport 53`).
    pub drop_proto: bool,
    /// The matches in nft order, as indexes into the list left after `drop_proto`.
    pub order: Option<&'static [usize]>,
    /// How a masked mark match is worded.
    pub mark_words: MarkWords,
    /// Whether the rule has a `counter` (all but Istio ambient's jumps).
    pub counter: bool,
}

impl NftSpelling {
    /// The same matches in the same order as the iptables rule.
    pub const AS_IPTABLES: NftSpelling = NftSpelling {
        prepend_tcp: false,
        drop_proto: false,
        order: None,
        mark_words: MarkWords::And,
        counter: true,
    };

    /// The matches of a rule as the nft dialect spells them. A spelling never drops a match
    /// it was not made for: when its order does not name every match left after
    /// `drop_proto` exactly once (a rule given one match more or less), the matches keep
    /// the iptables order (`fits` says whether it would; a test holds every spelling of
    /// every golden configuration to it).
    pub fn apply(&self, mut m: Vec<Match>) -> Vec<Match> {
        m.retain(|x| !matches!(x, Match::L4Module { .. }));
        if self.drop_proto
            && let Some(i) = implied_proto(&m)
        {
            m.remove(i);
        }
        if let Some(order) = self.order
            && permutes(order, m.len())
        {
            m = order.iter().filter_map(|i| m.get(*i).cloned()).collect();
        }
        if self.prepend_tcp {
            m.insert(0, Match::Proto { proto: Proto::Tcp });
        }
        m
    }

    /// Whether this spelling's order fits a rule of these matches (names each of them once).
    pub fn fits(&self, m: &[Match]) -> bool {
        let kept: Vec<Match> = m
            .iter()
            .filter(|x| !matches!(x, Match::L4Module { .. }))
            .cloned()
            .collect();
        let dropped = usize::from(self.drop_proto && implied_proto(&kept).is_some());
        self.order.is_none_or(|o| permutes(o, kept.len() - dropped))
    }
}

/// The position of the first protocol match that a port match of the same protocol implies.
fn implied_proto(m: &[Match]) -> Option<usize> {
    m.iter().position(|x| match x {
        Match::Proto { proto } => m.iter().any(|y| match y {
            Match::Dport { proto: p, .. }
            | Match::Sport { proto: p, .. }
            | Match::DportsIn { proto: p, .. }
            | Match::DportsNotIn { proto: p, .. } => p == proto,
            _ => false,
        }),
        _ => false,
    })
}

/// Whether `order` names each of `0..n` exactly once.
fn permutes(order: &[usize], n: usize) -> bool {
    let mut seen = vec![false; n];
    order.len() == n
        && order.iter().all(|i| {
            seen.get_mut(*i)
                .is_some_and(|s| !std::mem::replace(s, true))
        })
}

/// One rule of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: Chain,
    pub at: At,
    /// In upstream's iptables order.
    pub matches: Vec<Match>,
    pub target: Target,
    pub nft: &'static NftSpelling,
}

/// An appended rule spelled alike in both dialects.
pub fn rule(table: Table, chain: Chain, matches: Vec<Match>, target: Target) -> Rule {
    Rule {
        table,
        chain,
        at: At::Append,
        matches,
        target,
        nft: &NftSpelling::AS_IPTABLES,
    }
}

impl Rule {
    /// Inserted at 0-based `position` instead of appended.
    pub fn insert(mut self, position: u32) -> Rule {
        self.at = At::Insert(position);
        self
    }
    /// Spelled `spelling` by the nft dialect.
    pub fn nft(mut self, spelling: &'static NftSpelling) -> Rule {
        self.nft = spelling;
        self
    }
}

/// Where the walk sends rules; a dialect decides what "both families" means for it.
pub trait Sink {
    /// A rule for every programmed family.
    fn both(&mut self, r: Rule);
    /// A rule for one family (nothing when that family is off).
    fn family(&mut self, f: Family, r: Rule);
    /// A rule whose text differs per family (upstream's "versioned" rules).
    fn versioned(&mut self, v4: Rule, v6: Rule);
    /// A rule that upstream's iptables generator adds per family where `when[family]` holds,
    /// and its nft generator once when it holds for any programmed family (one `inet` chain
    /// serves both).
    fn where_any(&mut self, when: [bool; 2], r: Rule);
}
