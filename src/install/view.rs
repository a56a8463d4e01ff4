//! The configuration directory as the runtime sees it, read once per pass: every entry listed
//! as libcni lists it, each file resolved as the host resolves links and read without
//! blocking, then judged by the models of libcni 1.1.2 and 1.3.0 and of the runtimes
//! (`libcni`, with Go's JSON in `gojson`). The network is the file CRI-O uses under both
//! libcni versions (the first that loads); containerd uses the same one, or, when the first
//! file does not load, none at all (it starts no pod, so no pod starts unintercepted). When a
//! file the choice depends on cannot be judged as the runtime judges it (too large, a link
//! out of sight, a FIFO, a file the two libcni versions load differently), there is no choice:
//! the installer is not ready, and says why, rather than guess.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{self, Seen};
use super::libcni::{self, Choice, DirRead, Entry, FileRead, Libcni, Load, Runtime};

/// What the runtime makes of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It loads as a network; `list` for a `.conflist` (else a single plugin the runtime turns
    /// into a list of one); `versions` the CNI versions the plugins are asked to speak (one,
    /// or two when libcni 1.3.0 reads `cniVersions` differently from 1.1.2).
    Network { list: bool, versions: Vec<String> },
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
}

/// The directory's configuration files, in the runtime's order, and its network.
#[derive(Debug)]
pub struct Survey {
    pub files: Vec<File>,
    /// Index of the network in `files`, `None` without one; why there is no telling.
    pick: Result<Option<usize>, String>,
}

/// How many bytes of configuration one survey reads in all (the installer runs with a memory
/// limit; a file past the budget is "too large to judge", which blocks the choice only if it
/// comes before the network).
const BUDGET: u64 = 8 << 20;

/// One entry as read: what the model needs, and what the installer keeps to write.
struct Read {
    entry: Entry,
    path: PathBuf,
    seen: Option<Seen>,
}

impl Survey {
    /// Reads `dir` (mounted here) whose host path is `host_dir`.
    pub fn read(dir: &Path, host_dir: &Path) -> std::io::Result<Survey> {
        let mut entries: Vec<(OsString, bool)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            entries.push((e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())));
        }
        // In the runtime's order, so that the read budget goes to the files that decide.
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut budget = BUDGET;
        let reads: Vec<Read> = entries
            .iter()
            .map(|(name, is_dir)| read_entry(dir, host_dir, name, *is_dir, true, &mut budget))
            .collect();
        let listing: Vec<Entry> = reads.iter().map(|r| r.entry.clone()).collect();
        let view = libcni::view(&listing);
        let pick = pick(&view);
        let mut reads: Vec<Option<Read>> = reads.into_iter().map(Some).collect();
        let mut files = Vec::new();
        let mut picked = None;
        for fv in &view.files {
            let Some(r) = reads.get_mut(fv.index).and_then(Option::take) else {
                continue;
            };
            if pick.as_ref().ok() == Some(&Some(fv.index)) {
                picked = Some(files.len());
            }
            files.push(File {
                name: OsString::from(OsStr::from_bytes(&fv.name)),
                path: r.path,
                seen: r.seen,
                verdict: verdict(fv),
            });
        }
        Ok(Survey {
            files,
            pick: pick.map(|p| p.and(picked)),
        })
    }

    /// The network the runtime uses.
    pub fn network(&self) -> Option<&File> {
        self.pick
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .and_then(|i| self.files.get(i))
    }

    /// Why there is no telling which network the runtime uses, if there is none.
    pub fn blocker(&self) -> Option<&str> {
        self.pick.as_ref().err().map(String::as_str)
    }

    pub fn get(&self, name: &OsString) -> Option<&File> {
        self.files.iter().find(|f| &f.name == name)
    }
}

/// The file CRI-O uses under both libcni versions, checked against containerd's choice.
fn pick(view: &libcni::DirView) -> Result<Option<usize>, String> {
    // Our own plugin's version is checked on the chosen network (`install::chosen`); the
    // binaries of other plugins are the primary plugin's to install.
    let ok = |_: &str, _: &str| Ok(());
    let name = |f: &libcni::FileView| String::from_utf8_lossy(&f.name).into_owned();
    let mut picks = Vec::new();
    for lib in Libcni::ALL {
        match view.choice(Runtime::CriO, lib, &ok) {
            Choice::Uses { file, .. } => picks.push(Some(file.index)),
            Choice::NoNetwork { .. } => picks.push(None),
            Choice::Unknown { file, why } => return Err(format!("{}: {why}", name(file))),
        }
        if let Choice::Uses { file, .. } = view.choice(Runtime::Containerd, lib, &ok)
            && picks.last() != Some(&Some(file.index))
        {
            return Err(format!(
                "containerd would use {} and CRI-O another file",
                name(file)
            ));
        }
    }
    match picks.as_slice() {
        [a, b] if a == b => Ok(*a),
        _ => {
            let named = |p: &Option<usize>| {
                p.and_then(|i| view.files.iter().find(|f| f.index == i))
                    .map(name)
                    .unwrap_or_else(|| "no file".into())
            };
            Err(format!(
                "libcni 1.1.2 would use {} and libcni 1.3.0 {}: the runtimes on this node may differ",
                named(&picks[0]),
                named(&picks[1])
            ))
        }
    }
}

fn verdict(fv: &libcni::FileView) -> Verdict {
    match fv.verdict() {
        libcni::Verdict::Loads { v1_1_2, v1_3_0 } => {
            let mut versions = vec![v1_1_2.spec_version().to_string()];
            if v1_3_0.spec_version() != v1_1_2.spec_version() {
                versions.push(v1_3_0.spec_version().to_string());
            }
            Verdict::Network {
                list: fv.is_list,
                versions,
            }
        }
        libcni::Verdict::Fails { v1_1_2, v1_3_0 } => {
            let (a, b) = (v1_1_2.to_string(), v1_3_0.to_string());
            Verdict::NotANetwork(if a == b {
                a
            } else {
                format!("libcni 1.1.2: {a}; 1.3.0: {b}")
            })
        }
        libcni::Verdict::Disagree {
            why,
            v1_1_2,
            v1_3_0,
        } => {
            let said = |l: &Load| match l {
                Load::Loads(n) => format!("loads {:?}", n.name),
                Load::Fails(e) => e.to_string(),
                Load::Unknown(u) => u.to_string(),
            };
            Verdict::Unjudgeable(format!(
                "{why} (1.1.2: {}; 1.3.0: {})",
                said(v1_1_2),
                said(v1_3_0)
            ))
        }
        libcni::Verdict::Unknown(u) => Verdict::Unjudgeable(u.to_string()),
    }
}

/// One directory entry, read as the runtime reads it: the file through links (only for the
/// names libcni lists), and, for a directory (libcni 1.3.0 reads `<dir>/<network name>/*.conf`),
/// its `.conf` files one level down.
fn read_entry(
    dir: &Path,
    host_dir: &Path,
    name: &OsStr,
    is_dir: bool,
    top: bool,
    budget: &mut u64,
) -> Read {
    let listed = super::conflist::is_config_name(&name.to_string_lossy());
    let resolved = files::resolve(dir, host_dir, name);
    let path = resolved.clone().unwrap_or_else(|_| dir.join(name));
    let meta = std::fs::metadata(&path);
    let (file, seen) = match (&resolved, &meta) {
        _ if !listed => (FileRead::NotRegular, None),
        (Err(why), _) => (FileRead::Unseen(why.clone()), None),
        (Ok(_), Err(e)) => (FileRead::Error(e.kind()), None),
        (Ok(_), Ok(m)) if m.is_dir() => (FileRead::Error(ErrorKind::IsADirectory), None),
        (Ok(_), Ok(m)) if m.len() > *budget => (FileRead::TooLarge { size: m.len() }, None),
        (Ok(p), Ok(_)) => match files::see(p) {
            Ok(seen) => {
                *budget = budget.saturating_sub(seen.bytes.len() as u64);
                (FileRead::Bytes(seen.bytes.clone()), Some(seen))
            }
            Err(e) if e.kind() == ErrorKind::FileTooLarge => (
                FileRead::TooLarge {
                    size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                },
                None,
            ),
            Err(e) if e.kind() == ErrorKind::InvalidInput => (FileRead::NotRegular, None),
            Err(e) => (FileRead::Error(e.kind()), None),
        },
    };
    let dir_read = match &meta {
        _ if !top => DirRead::NotRead,
        Err(e) => DirRead::Error(e.kind()),
        Ok(m) if m.is_dir() => list_subdir(&path, dir, host_dir, budget),
        Ok(m) if m.is_file() => DirRead::Error(ErrorKind::NotADirectory),
        // A FIFO or socket: Go's open would block or fail; not listed.
        Ok(_) => DirRead::NotRead,
    };
    Read {
        entry: Entry {
            name: name.as_bytes().to_vec(),
            is_dir,
            file,
            dir: dir_read,
        },
        path,
        seen,
    }
}

fn list_subdir(path: &Path, dir: &Path, host_dir: &Path, budget: &mut u64) -> DirRead {
    let Ok(entries) = std::fs::read_dir(path) else {
        return DirRead::NotRead;
    };
    // The subdirectory's files resolve as files of that directory, in the host's view.
    let rel = path.strip_prefix(dir).unwrap_or(Path::new(""));
    let (sub, host_sub) = (dir.join(rel), host_dir.join(rel));
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        out.push(read_entry(&sub, &host_sub, &e.file_name(), is_dir, false, budget).entry);
    }
    DirRead::Entries(out)
}
