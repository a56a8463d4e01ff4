//! The configuration directory as the runtime sees it, read once per pass: every file with
//! an extension the runtime loads, in the runtime's order (bytes of the name), each resolved
//! as the host resolves links, read without blocking, and judged: a network the runtime
//! would load, a file it would not load (and why), or one this installer cannot judge the way
//! the runtime would (too large, a link out of sight, unreadable), which makes the installer
//! not ready rather than guess.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::conflist;
use super::files::{self, Seen};

/// What the runtime makes of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It loads as a network; `list` when it is a `.conflist`-style list (else a single
    /// plugin the runtime turns into a list of one); `version` the chain's CNI version.
    Network { list: bool, version: Option<String> },
    /// The runtime would not load it, for this reason.
    NotANetwork(String),
    /// This installer cannot tell what the runtime makes of it.
    Unjudgeable(String),
}

/// One configuration file.
#[derive(Debug)]
pub struct File {
    pub name: OsString,
    /// Where it really is (links followed as the host follows them), in this process's view.
    pub path: PathBuf,
    pub seen: Option<Seen>,
    pub verdict: Verdict,
}

impl File {
    pub fn display(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    pub fn bytes(&self) -> &[u8] {
        self.seen
            .as_ref()
            .map(|s| s.bytes.as_slice())
            .unwrap_or(&[])
    }

    pub fn is_network(&self) -> bool {
        matches!(self.verdict, Verdict::Network { .. })
    }
}

/// The directory's configuration files, in the runtime's order.
#[derive(Debug)]
pub struct Survey {
    pub files: Vec<File>,
}

impl Survey {
    /// Reads `dir` (mounted here) whose host path is `host_dir`.
    pub fn read(dir: &Path, host_dir: &Path) -> std::io::Result<Survey> {
        let mut names: Vec<OsString> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            // libcni skips directories (by the entry's own type: a link to one is not skipped).
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name();
            if conflist::is_config_name(&name.to_string_lossy()) {
                names.push(name);
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let files = names
            .into_iter()
            .map(|name| match files::resolve(dir, host_dir, &name) {
                Err(why) => File {
                    path: dir.join(&name),
                    name,
                    seen: None,
                    verdict: Verdict::Unjudgeable(why),
                },
                Ok(path) => {
                    let (seen, verdict) = match files::see(&path) {
                        Ok(seen) => {
                            let v = judge(&name, &seen.bytes);
                            (Some(seen), v)
                        }
                        Err(e) => (None, unreadable(&e)),
                    };
                    File {
                        name,
                        path,
                        seen,
                        verdict,
                    }
                }
            })
            .collect();
        Ok(Survey { files })
    }

    /// The network the runtime uses: the first file that loads.
    pub fn network(&self) -> Option<&File> {
        self.files.iter().find(|f| f.is_network())
    }

    /// A file before the network (or anywhere, without one) that cannot be judged: the
    /// runtime might be using it.
    pub fn blocker(&self) -> Option<&File> {
        self.files
            .iter()
            .take_while(|f| !f.is_network())
            .find(|f| matches!(f.verdict, Verdict::Unjudgeable(_)))
    }

    pub fn get(&self, name: &OsString) -> Option<&File> {
        self.files.iter().find(|f| &f.name == name)
    }
}

fn unreadable(e: &std::io::Error) -> Verdict {
    match e.kind() {
        // Vanished between the listing and the read: the runtime would not find it either.
        std::io::ErrorKind::NotFound => Verdict::NotANetwork("it is gone".into()),
        _ => Verdict::Unjudgeable(format!("cannot be read as the runtime reads it: {e}")),
    }
}

/// What the runtime makes of a file's content.
fn judge(name: &OsString, bytes: &[u8]) -> Verdict {
    let list_by_name = name.as_bytes().ends_with(b".conflist");
    match conflist::validate(bytes) {
        Err(e) => Verdict::NotANetwork(e.to_string()),
        Ok(()) => {
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            Verdict::Network {
                list: list_by_name || conflist::is_list(bytes),
                version: v
                    .get("cniVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            }
        }
    }
}
