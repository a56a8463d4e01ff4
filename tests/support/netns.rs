//! Named throwaway network namespaces (`ip netns add`) that look like a pod (lo up, eth0 with
//! 10.244.1.5/24 and fd00:244::5/64), so that many meshtables processes can be pointed at one
//! with `--network-namespace`, and a reader of its whole netfilter and routing state in a
//! normalized text form that two runs can compare.

use std::process::{Command, Output};

/// A namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Netns {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        // The process id, a counter, and (for test processes that are PID 1 of PID
        // namespaces of their own, which share /run/netns) the clock's microseconds.
        let name = format!(
            "mt-{tag}-{}-{}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            if std::process::id() == 1 {
                format!(
                    "-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_micros())
                        .unwrap_or(0)
                )
            } else {
                String::new()
            }
        );
        let setup = format!(
            "ip netns add {name} && ip -n {name} link set lo up && \
             ip -n {name} link add eth0 type veth peer name veth0 && \
             ip -n {name} addr add 10.244.1.5/24 dev eth0 && \
             ip -n {name} addr add fd00:244::5/64 dev eth0 nodad && ip -n {name} link set eth0 up"
        );
        let o = sh(&setup);
        assert!(
            o.status.success(),
            "{setup}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `cmd args` inside the namespace.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }

    /// Everything netfilter holds in this namespace, as text (nft view, plus both iptables
    /// variants' save output without counters or comments).
    pub fn netfilter(&self) -> String {
        let mut s =
            String::from_utf8_lossy(&self.run("nft", &["list", "ruleset"]).stdout).into_owned();
        for save in [
            "iptables-legacy-save",
            "ip6tables-legacy-save",
            "iptables-nft-save",
            "ip6tables-nft-save",
        ] {
            for l in String::from_utf8_lossy(&self.run(save, &[]).stdout).lines() {
                // Chain headers carry packet counters (`:OUTPUT ACCEPT [0:0]`): not state.
                if !l.starts_with('#') {
                    s.push_str(l.split(" [").next().unwrap_or(""));
                    s.push('\n');
                }
            }
        }
        s
    }

    /// Runs `script` with sh inside the namespace.
    pub fn exec(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("ip netns exec runs")
    }

    /// Everything of netfilter and policy routing a run could change, normalized (see
    /// `normalize_save`): both iptables variants and families, the `inet` nftables tables,
    /// policy rules, routing table `table`, and `::6` on lo.
    pub fn state(&self, table: u32) -> State {
        let script = format!(
            "for v in legacy nft; do for b in iptables ip6tables; do \
               echo \"== $b-$v\"; $b-$v-save 2>/dev/null; done; done; \
             echo '== nft'; nft list tables inet | while read -r _ fam t; do nft list table $fam $t; done; \
             echo '== rules'; ip -4 rule; ip -6 rule; \
             echo '== routes'; ip -4 route show table {table}; ip -6 route show table {table}; \
             echo '== lo'; ip -6 addr show dev lo | grep -o 'inet6 ::6/128' || true"
        );
        let o = self.exec(&script);
        State::parse(&String::from_utf8_lossy(&o.stdout))
    }
}

impl Netns {
    /// Deletes the namespace now (a pod going away before its DEL); dropping deletes it too.
    pub fn delete(&self) {
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

pub fn sh(script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh runs")
}

/// A namespace's state in sections (`iptables-legacy`, `nft`, `rules`, ...), each normalized.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub sections: Vec<(String, String)>,
}

/// Upstream's detection probe rule as `*-save` prints it.
const PROBE: &str = "-A INPUT -p 255 -j RETURN";

/// Sections that hold packet-marking or redirecting rules (as opposed to routing).
const RULE_SECTIONS: [&str; 5] = [
    "iptables-legacy",
    "ip6tables-legacy",
    "iptables-nft",
    "ip6tables-nft",
    "nft",
];

impl State {
    fn parse(text: &str) -> State {
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                sections.push((name.to_string(), String::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        for (name, body) in &mut sections {
            *body = if name.contains("tables-") {
                normalize_save(body)
            } else if name == "nft" {
                body.lines()
                    .map(|l| {
                        let l = l.trim();
                        match l.find("counter packets") {
                            Some(i) => format!("{}counter", &l[..i]),
                            None => l.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                body.clone()
            };
        }
        State { sections }
    }

    fn section(&self, name: &str) -> &str {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, b)| b.as_str())
    }

    /// Whether a detection probe rule (`-A INPUT -p 255 -j RETURN` in nat) is present.
    pub fn has_probe(&self) -> bool {
        self.sections
            .iter()
            .any(|(n, b)| n.contains("tables-") && b.lines().any(|l| l == PROBE))
    }

    /// This state without detection probe rules (a RETURN in nat INPUT: inert).
    pub fn without_probe(&self) -> State {
        let sections = self
            .sections
            .iter()
            .map(|(n, b)| {
                if !n.contains("tables-") {
                    return (n.clone(), b.clone());
                }
                let kept: String = b
                    .lines()
                    .filter(|l| *l != PROBE)
                    .map(|l| format!("{l}\n"))
                    .collect();
                (n.clone(), normalize_save(&kept))
            })
            .collect();
        State { sections }
    }

    /// Whether the fail-closed guard is up.
    pub fn guarded(&self) -> bool {
        self.section("nft").contains("table inet meshtables-guard")
    }

    /// Whether the rule sections equal `other`'s.
    pub fn same_rules(&self, other: &State) -> bool {
        RULE_SECTIONS
            .iter()
            .all(|s| self.section(s) == other.section(s))
    }

    /// Every routing line (policy rules, table routes, `::6`) of this state appears in
    /// `other`'s.
    pub fn routing_within(&self, other: &State) -> bool {
        ["rules", "routes", "lo"].iter().all(|s| {
            let theirs: Vec<&str> = other.section(s).lines().collect();
            self.section(s).lines().all(|l| theirs.contains(&l))
        })
    }

    /// A short description for reports.
    pub fn summary(&self) -> String {
        self.sections
            .iter()
            .map(|(n, b)| format!("{n}: {} lines", b.lines().count()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every section, each cut to its first 40 lines, for a failure message.
    pub fn brief(&self) -> String {
        self.sections
            .iter()
            .map(|(n, b)| {
                let lines: Vec<&str> = b.lines().collect();
                let more = lines.len().saturating_sub(40);
                let head = lines
                    .iter()
                    .take(40)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                let tail = if more > 0 {
                    format!("\n... ({more} more lines)")
                } else {
                    String::new()
                };
                format!("== {n}\n{head}{tail}\n")
            })
            .collect()
    }

    /// The text of every section, for a failure message.
    pub fn text(&self) -> String {
        self.sections
            .iter()
            .map(|(n, b)| format!("== {n}\n{b}"))
            .collect()
    }
}

/// `*-save` output without comments, counters and what holds nothing: a table with no rule
/// and no user chain, and the headers of empty built-in chains, are dropped (the binaries
/// create empty tables as a side effect of reading or writing; they match nothing).
pub fn normalize_save(text: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<String> = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('*') {
            table = vec![line.to_string()];
            keep = false;
        } else if line == "COMMIT" {
            if keep {
                table.push(line.to_string());
                out += &table.join("\n");
                out.push('\n');
            }
            table.clear();
        } else if let Some(rest) = line.strip_prefix(':') {
            let mut parts = rest.split_whitespace();
            let (name, policy) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if policy == "-" {
                keep = true;
                table.push(format!(":{name} -"));
            } else if policy != "ACCEPT" {
                keep = true;
                table.push(format!(":{name} {policy}"));
            }
        } else if !line.trim().is_empty() {
            keep = true;
            table.push(line.to_string());
        }
    }
    out
}
