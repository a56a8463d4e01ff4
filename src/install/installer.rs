//! The installer's work on one node: the binary, the kubeconfig, and our entry in the chain
//! of the network the runtime uses (`chosen`), compared before every write (`files`), with the
//! node's other installers in mind (`presence`); and the uninstall.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::error::{InstallError, io};
use super::files::{self, Replaced, Seen, Temps};
use super::settings::{Settings, entry};
use super::view::{self, Survey, Verdict};
use super::{conflist, kubeconfig, presence};
use crate::logging::{self, Level};
use crate::profile::istio::config::EnvSource;

/// The backup of a configuration file as it was before an installer first wrote it:
/// `.<file name>.meshtables-cni-backup` beside it. Its extension is none a runtime reads (a
/// runtime loads dot files with a CNI extension too, and the first by name wins). On disk, so
/// that whichever installer uninstalls (after an upgrade, not the one that wrote) can put the
/// file back byte for byte. A backup never holds an entry of ours.
const BACKUP_SUFFIX: &str = ".meshtables-cni-backup";

fn backup_name(orig: &[u8]) -> OsString {
    files::dot_name(orig, BACKUP_SUFFIX)
}

/// How long a network file that stopped loading (its writer rewriting it in place) keeps our
/// entry before the installer moves to the next network the runtime would use.
const GRACE: Duration = Duration::from_secs(3);

/// How long a file we replaced is watched for a write that reached it after our rename.
const WATCH_FOR: Duration = Duration::from_secs(2);

/// Where the installer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The network's chain ends with our entry.
    Ready(String),
    /// Not (yet) installed, and why.
    NotReady(String),
    /// A newer installer owns the chain (an upgrade): this one writes nothing.
    StandingBy,
}

/// What one pass found.
#[derive(Debug)]
pub struct Pass {
    pub state: State,
    /// Another writer changed a file while we wrote it: read again shortly.
    pub again: bool,
    /// A write failed: retry no sooner than in a second.
    pub failed: bool,
}

/// A file we replaced, watched for a write that reached it after our rename.
struct Watched {
    name: OsString,
    path: PathBuf,
    before: Seen,
    wrote: Vec<u8>,
    until: Instant,
    /// The file whose backup holds what the primary wrote (the file itself, or the `.conf` a
    /// conversion removed): an adopted late write becomes the backup too.
    backup_of: OsString,
}

/// Messages logged once per change, by topic.
#[derive(Default)]
struct Notes(HashMap<&'static str, String>);

impl Notes {
    fn say(&mut self, topic: &'static str, level: Level, msg: String) {
        if self.0.get(topic) != Some(&msg) {
            logging::log(level, &msg);
            self.0.insert(topic, msg);
        }
    }

    fn clear(&mut self, topic: &'static str) {
        self.0.remove(topic);
    }
}

/// The network the chain goes into: the named file (or its `.conf`/`.conflist` twin), else the
/// first file the runtime loads. An error says why there is none to use.
pub fn chosen<'a>(survey: &'a Survey, s: &Settings) -> Result<&'a view::File, String> {
    if let Some(why) = survey.blocker() {
        return Err(format!("cannot tell which network the runtime uses: {why}"));
    }
    let file = match &s.conf_name {
        Some(name) => {
            let twin = name
                .strip_suffix(".conf")
                .map(|b| format!("{b}.conflist"))
                .or_else(|| name.strip_suffix(".conflist").map(|b| format!("{b}.conf")));
            std::iter::once(name.clone())
                .chain(twin)
                .find_map(|n| survey.get(&OsString::from(n)))
                .ok_or_else(|| format!("{name} (--cni-conf-name) does not exist yet"))?
        }
        None => survey.network().ok_or_else(|| {
            let why: Vec<String> = survey
                .files
                .iter()
                .map(|f| format!("{}: {}", f.display(), verdict_why(&f.verdict)))
                .collect();
            if why.is_empty() {
                "no network configuration yet (waiting for the primary plugin's file)".to_string()
            } else {
                format!("no file the runtime loads ({})", why.join("; "))
            }
        })?,
    };
    match &file.verdict {
        Verdict::Network { versions, .. } => {
            let supported = crate::cni::conf::SUPPORTED_VERSIONS;
            match versions.iter().find(|v| !supported.contains(&v.as_str())) {
                None => Ok(file),
                Some(v) => Err(format!(
                    "{} has cniVersion {v:?}, which meshtables-cni does not serve (it serves {}): every pod's ADD would fail, so the plugin is not put in this chain",
                    file.display(),
                    supported.join(", ")
                )),
            }
        }
        v => Err(format!("{}: {}", file.display(), verdict_why(v))),
    }
}

fn verdict_why(v: &Verdict) -> String {
    match v {
        Verdict::Network { .. } => "a network".into(),
        Verdict::NotANetwork(why) => format!("the runtime does not load it ({why})"),
        Verdict::Unjudgeable(why) => format!("cannot be judged as the runtime judges it ({why})"),
    }
}

/// The installer's state.
pub struct Installer {
    s: Settings,
    entry: Map<String, Value>,
    /// `None` once it has left (at SIGTERM).
    presence: Option<presence::Presence>,
    temps: Temps,
    /// The plugin binary as last checked: inode, size, modification time.
    binary_seen: Option<(u64, u64, i64, i64)>,
    /// The file whose chain we last put the entry in, and since when it has not loaded.
    home: Option<OsString>,
    home_lost_at: Option<Instant>,
    watched: Vec<Watched>,
    /// Files we put the entry in through a link (their real paths): when a name stops
    /// leading to one (the primary swapped its link), the entry comes out of it.
    through_links: std::collections::BTreeSet<PathBuf>,
    /// The lock of installers before this one, held so that such an installer stopped during
    /// an upgrade leaves the plugin installed.
    legacy: Option<presence::Legacy>,
    notes: Notes,
    passes: u64,
}

impl Installer {
    /// Joins the node's installers and checks the settings' entry.
    pub fn new(s: Settings) -> Result<Installer, InstallError> {
        let entry = entry(&s)?;
        let presence = presence::Presence::join(&s.conf_dir).map_err(|e| {
            InstallError::Watch(format!(
                "announcing this installer in {}: {e}",
                s.conf_dir.display()
            ))
        })?;
        let temps = Temps::new(presence.id());
        let presence = Some(presence);
        let s_conf_dir = s.conf_dir.clone();
        Ok(Installer {
            s,
            entry,
            presence,
            temps,
            binary_seen: None,
            home: None,
            home_lost_at: None,
            watched: Vec::new(),
            through_links: std::collections::BTreeSet::new(),
            legacy: Some(presence::Legacy::hold(&s_conf_dir)),
            notes: Notes::default(),
            passes: 0,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// Whether `name` (in a watched directory) is one of this installer's temporary files:
    /// its own writes are not events to react to.
    pub fn is_own_temp(&self, name: &std::ffi::OsStr) -> bool {
        self.temps.is_mine(&name.to_string_lossy())
    }

    /// Whether files we replaced are still watched (the loop then wakes up more often).
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    fn binary(&self) -> PathBuf {
        self.s.bin_dir.join(conflist::TYPE)
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.s.conf_dir.join(&self.s.kubeconfig_name)
    }

    /// One pass: the binary, the kubeconfig, leftovers, then the chain. A newer installer on
    /// the node makes this one stand by (it writes nothing).
    pub fn pass(&mut self, env: &dyn EnvSource) -> Pass {
        self.passes += 1;
        if self.presence.as_ref().is_some_and(|p| p.newer_alive()) {
            self.watched.clear();
            self.home = None;
            return Pass {
                state: State::StandingBy,
                again: false,
                failed: false,
            };
        }
        let mut failed = false;
        if self.passes % 10 == 1 {
            self.remove_leftovers();
        }
        match self.install_binary() {
            Ok(()) => self.notes.clear("binary"),
            Err(e) => {
                failed = true;
                self.notes.say("binary", Level::Error, e.to_string());
            }
        }
        // The entry names the kubeconfig: no entry before the kubeconfig is in place.
        if let Err(e) = self.refresh_kubeconfig(env) {
            let msg = format!("the plugin's kubeconfig: {e}");
            self.notes.say("kubeconfig", Level::Error, msg.clone());
            return Pass {
                state: State::NotReady(msg),
                again: false,
                failed: true,
            };
        }
        self.notes.clear("kubeconfig");
        let (state, again) = match self.chain() {
            Ok(r) => r,
            Err(e) => {
                failed = true;
                (State::NotReady(e.to_string()), false)
            }
        };
        Pass {
            state,
            again,
            failed,
        }
    }

    /// Whether the configuration directory this installer works in was removed on the host
    /// (a new one made in its place is not what this process's mount shows): it must restart.
    pub fn directory_gone(&self) -> bool {
        self.presence.as_ref().is_some_and(|p| p.dir_gone())
    }

    /// Removes temporary files that installers no longer running left behind; what a killed
    /// installer's exchange displaced goes back in place if it is another writer's newer
    /// write.
    fn remove_leftovers(&mut self) {
        let Some(presence) = &self.presence else {
            return;
        };
        for dir in [&self.s.conf_dir, &self.s.bin_dir] {
            for p in files::remove_leftovers(dir, |id| !presence.alive(id), &displaced_is_newer) {
                logging::info(&format!(
                    "{}: put right after an installer that was killed mid-write",
                    p.display()
                ));
            }
        }
    }

    /// Copies the binary into the plugin directory unless it holds the same bytes. A file
    /// unchanged since the last check (inode, size, mtime) is not read again.
    fn install_binary(&mut self) -> Result<(), InstallError> {
        use std::os::unix::fs::MetadataExt;
        let dest = self.binary();
        let stamp = |m: std::fs::Metadata| (m.ino(), m.len(), m.mtime(), m.mode() as i64);
        let now = std::fs::metadata(&dest).ok().map(stamp);
        if now.is_some() && now == self.binary_seen {
            return Ok(());
        }
        if files::install_binary(&dest, &self.temps).map_err(io("copying the plugin to", &dest))? {
            logging::info(&format!("installed {}", dest.display()));
        }
        self.binary_seen = std::fs::metadata(&dest).ok().map(stamp);
        Ok(())
    }

    /// Makes the kubeconfig what the service account says now (a rotated token, a file
    /// removed or changed by someone else).
    fn refresh_kubeconfig(&mut self, env: &dyn EnvSource) -> Result<(), InstallError> {
        if !self.s.kubernetes {
            return Ok(());
        }
        let bytes = kubeconfig::make(&self.s.sa_dir, env)?;
        let path = self.kubeconfig_path();
        match files::read(&path) {
            Ok(there) if there == bytes => return Ok(()),
            // Another program's file of that name (istio-cni's, during a migration): a
            // conflict to report, not a file to overwrite.
            Ok(there) if !kubeconfig::is_ours(&there) => {
                return Err(InstallError::Watch(format!(
                    "{} exists and is not a kubeconfig this installer wrote: not overwriting it (set --kubeconfig-name to another name)",
                    path.display()
                )));
            }
            _ => {}
        }
        files::write_atomic(&path, &bytes, 0o600, &self.temps).map_err(io("writing", &path))?;
        logging::info(&format!("wrote the plugin's kubeconfig {}", path.display()));
        Ok(())
    }

    /// The chain: our entry last in the network the runtime uses, and in no other file.
    /// Returns the state, and whether to look again soon (a file changed under a write).
    fn chain(&mut self) -> Result<(State, bool), InstallError> {
        let survey = Survey::read(&self.s.conf_dir, &self.s.host_conf_dir)
            .map_err(io("reading", &self.s.conf_dir))?;
        let file = match chosen(&survey, &self.s) {
            Ok(f) => f,
            Err(why) => return Ok((State::NotReady(why), false)),
        };
        if let Some(waiting) = self.moving(&survey, file) {
            return Ok((State::NotReady(waiting), false));
        }
        let (state, again, target) = self.put_in(file)?;
        let identity = file.seen.as_ref().map(Seen::identity);
        // Our entry in no other file (a network the runtime no longer uses, after a new
        // lexically earlier one appeared; an older installer's), but the network under
        // another name is the network.
        for other in &survey.files {
            let alias = other.path == file.path
                || (identity.is_some() && other.seen.as_ref().map(Seen::identity) == identity);
            if other.name != file.name
                && !alias
                && Some(&other.name) != target.as_ref()
                && conflist::holds(other.bytes(), None)
            {
                self.take_out(other, &survey)?;
            }
        }
        if file.path != self.s.conf_dir.join(&file.name) {
            self.through_links.insert(file.path.clone());
        }
        self.forget_old_link_targets(&survey)?;
        if conflist::holds_istio_cni(file.bytes()) {
            self.notes.say(
                "istio-cni",
                Level::Warn,
                format!(
                    "the chain of {} also holds istio-cni: both plugins would program every pod; remove Istio's CNI plugin (uninstall the istio/cni chart, keep pilot.cni.enabled=true)",
                    file.display()
                ),
            );
        } else {
            self.notes.clear("istio-cni");
        }
        Ok((state, again))
    }

    /// The files we wrote through a link that no name leads to any more (the primary swapped
    /// its link to a new file): the entry comes out of them, so a swap back cannot bring back
    /// a chain naming a plugin that is gone.
    fn forget_old_link_targets(&mut self, survey: &Survey) -> Result<(), InstallError> {
        let current: std::collections::BTreeSet<&PathBuf> =
            survey.files.iter().map(|f| &f.path).collect();
        let gone: Vec<PathBuf> = self
            .through_links
            .iter()
            .filter(|p| !current.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if self.take_out_of(&path)? {
                self.through_links.remove(&path);
            }
        }
        Ok(())
    }

    /// Takes our entry out of a file no name of the directory leads to; returns whether it
    /// holds none now.
    fn take_out_of(&self, path: &Path) -> Result<bool, InstallError> {
        let Ok(seen) = files::see(path) else {
            return Ok(true);
        };
        let Ok(Some(without)) = conflist::remove(&seen.bytes) else {
            return Ok(true);
        };
        match files::replace(path, &seen, &without, &self.temps).map_err(io("writing", path))? {
            Replaced::Yes => {
                logging::info(&format!(
                    "took {} out of {}, which no name of the directory leads to any more",
                    conflist::TYPE,
                    path.display()
                ));
                Ok(true)
            }
            Replaced::Changed => Ok(false),
        }
    }

    /// Whether to wait before moving the entry: the file that holds it stopped loading (its
    /// writer rewriting it in place) less than `GRACE` ago. Returns why it waits.
    fn moving(&mut self, survey: &Survey, to: &view::File) -> Option<String> {
        let home = self.home.as_ref()?;
        if *home == to.name {
            self.home_lost_at = None;
            return None;
        }
        let h = survey.get(home)?;
        if !matches!(h.verdict, Verdict::NotANetwork(_)) {
            self.home_lost_at = None;
            return None;
        }
        let since = *self.home_lost_at.get_or_insert_with(Instant::now);
        (since.elapsed() < GRACE).then(|| {
            format!(
                "{} does not load right now ({}); waiting for its writer before moving to {}",
                h.display(),
                verdict_why(&h.verdict),
                to.display()
            )
        })
    }

    fn backup_path(&self, name: &[u8]) -> PathBuf {
        self.s.conf_dir.join(backup_name(name))
    }

    /// The backup of `name`, if there is one.
    fn backup_of(&self, name: &[u8]) -> Option<Vec<u8>> {
        files::read(&self.backup_path(name)).ok()
    }

    /// Keeps the backup of `file` true before we write into it: its bytes when it holds no
    /// entry of ours; when it holds one (an earlier installer's), the existing backup only if
    /// the file is exactly that backup plus that entry, else none (uninstall then takes out
    /// only our entry). A backup never holds an entry of ours.
    fn keep_backup(&self, name: &[u8], bytes: &[u8]) -> Result<(), InstallError> {
        let path = self.backup_path(name);
        let keep = match conflist::entry_of(bytes) {
            None => {
                if files::read(&path).ok().as_deref() != Some(bytes) {
                    files::write_atomic(&path, bytes, 0o600, &self.temps)
                        .map_err(io("writing", &path))?;
                }
                true
            }
            Some(e) => self
                .backup_of(name)
                .is_some_and(|b| with_entry(&b, &e).as_deref() == Some(bytes)),
        };
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// Puts our entry last in `file`'s chain. Returns the state, whether to look again soon,
    /// and the name of the file written when it is not `file` (a conversion's `.conflist`).
    fn put_in(
        &mut self,
        file: &view::File,
    ) -> Result<(State, bool, Option<OsString>), InstallError> {
        let bytes = file.bytes();
        let Some(seen) = &file.seen else {
            return Ok((
                State::NotReady(format!("{} is gone", file.display())),
                true,
                None,
            ));
        };
        let new = match conflist::insert(bytes, &self.entry) {
            Ok(None) => {
                self.home = Some(file.name.clone());
                return Ok((ready(file), false, None));
            }
            Ok(Some(new)) => new,
            Err(e) => {
                return Ok((
                    State::NotReady(format!("{}: {e}; not touching it", file.display())),
                    false,
                    None,
                ));
            }
        };
        if matches!(file.verdict, Verdict::Network { list: false, .. }) {
            return self.convert(file, seen, &new);
        }
        let name = file.name.as_bytes();
        self.keep_backup(name, bytes)?;
        match files::replace(&file.path, seen, &new, &self.temps)
            .map_err(io("writing", &file.path))?
        {
            Replaced::Changed => Ok((changed(file), true, None)),
            Replaced::Yes => {
                self.watch(&file.name, &file.path, seen, &new, &file.name);
                self.home = Some(file.name.clone());
                logging::info(&format!(
                    "put {} last in the chain of {}",
                    conflist::TYPE,
                    file.path.display()
                ));
                Ok((ready(file), false, None))
            }
        }
    }

    /// A single plugin (`.conf`, `.json`) becomes a list: `<name>.conflist` beside it holding
    /// it and us, created only if no such file exists (or it is our own earlier conversion of
    /// this file), then the single plugin removed if it is still what was converted.
    fn convert(
        &mut self,
        file: &view::File,
        seen: &Seen,
        new: &[u8],
    ) -> Result<(State, bool, Option<OsString>), InstallError> {
        let link = std::fs::symlink_metadata(self.s.conf_dir.join(&file.name))
            .is_ok_and(|m| m.file_type().is_symlink());
        if link {
            return Ok((
                State::NotReady(format!(
                    "{} is a single plugin behind a symbolic link: turning it into a list would replace the link; make the primary write a .conflist",
                    file.display()
                )),
                false,
                None,
            ));
        }
        let name = file.name.as_bytes();
        let stem = &name[..name.iter().rposition(|b| *b == b'.').unwrap_or(name.len())];
        let mut target_name = stem.to_vec();
        target_name.extend_from_slice(b".conflist");
        let target_name = OsString::from(std::ffi::OsStr::from_bytes(&target_name));
        let target = self.s.conf_dir.join(&target_name);
        match files::see(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.keep_backup(name, file.bytes())?;
                let mode = seen.mode();
                if !files::create_new(&target, new, mode, &self.temps)
                    .map_err(io("writing", &target))?
                {
                    return Ok((changed(file), true, Some(target_name)));
                }
            }
            Err(e) => return Err(io("reading", &target)(e)),
            Ok(there) => {
                let ours = conflist::entry_of(&there.bytes).and_then(|e| {
                    let b = self.backup_of(name)?;
                    Some(with_entry(&b, &e).as_deref() == Some(&there.bytes[..]))
                });
                if ours != Some(true) {
                    return Ok((
                        State::NotReady(format!(
                            "{} is a single plugin, and turning it into a list would replace {}, which exists and is not this installer's conversion of it: remove one of them",
                            file.display(),
                            target_name.to_string_lossy()
                        )),
                        false,
                        None,
                    ));
                }
                // Our earlier conversion, and the primary has rewritten its file since.
                self.write_backup(name, file.bytes())?;
                if let Replaced::Changed = files::replace(&target, &there, new, &self.temps)
                    .map_err(io("writing", &target))?
                {
                    return Ok((changed(file), true, Some(target_name)));
                }
            }
        }
        let removed =
            files::remove(&file.path, seen, &self.temps).map_err(io("removing", &file.path))?;
        if removed {
            // A primary that had its `.conf` open may still write it: that write goes into the
            // list (and becomes the `.conf`'s backup).
            self.watch(&target_name, &target, seen, new, &file.name);
        }
        logging::info(&format!(
            "put {} last in the chain of {}, converted from {}",
            conflist::TYPE,
            target.display(),
            file.display()
        ));
        self.home = Some(target_name.clone());
        if !removed {
            return Ok((changed(file), true, Some(target_name)));
        }
        Ok((
            State::Ready(format!(
                "the chain of {} holds meshtables-cni",
                target_name.to_string_lossy()
            )),
            false,
            Some(target_name),
        ))
    }

    fn write_backup(&self, name: &[u8], bytes: &[u8]) -> Result<(), InstallError> {
        let path = self.backup_path(name);
        files::write_atomic(&path, bytes, 0o600, &self.temps).map_err(io("writing", &path))
    }

    /// Watches `seen`, the file we replaced at `path` (or a conversion removed), for a write
    /// that reaches it after our rename; `backup_of` names the file whose backup such a write
    /// becomes.
    fn watch(
        &mut self,
        name: &OsString,
        path: &Path,
        seen: &Seen,
        wrote: &[u8],
        backup_of: &OsString,
    ) {
        if let Ok(before) = seen.try_clone() {
            self.watched.push(Watched {
                name: name.clone(),
                path: path.to_path_buf(),
                before,
                wrote: wrote.to_vec(),
                until: Instant::now() + WATCH_FOR,
                backup_of: backup_of.clone(),
            });
        }
    }

    /// A write that reached a file we replaced after our rename (a writer that rewrites in
    /// place and had it open) is the primary's newest: put it in place, with our entry, if
    /// the file still holds what we wrote. Returns whether it did.
    pub fn adopt_overtaken(&mut self) -> bool {
        let now = Instant::now();
        let mut adopted = false;
        let watched = std::mem::take(&mut self.watched);
        for w in watched {
            let Some(newer) = w.before.overtaken() else {
                if now < w.until {
                    self.watched.push(w);
                }
                continue;
            };
            let Ok(Some(new)) = conflist::insert(&newer, &self.entry) else {
                // Not a whole configuration yet: the writer is still at it.
                if now < w.until {
                    self.watched.push(w);
                }
                continue;
            };
            let Ok(current) = files::see(&w.path) else {
                continue;
            };
            if current.bytes != w.wrote {
                // Written again since: that write is newer still, and the next pass handles it.
                continue;
            }
            match files::replace(&w.path, &current, &new, &self.temps) {
                Ok(Replaced::Yes) => {
                    logging::info(&format!(
                        "{}: its writer wrote it again while we replaced it; kept that write, with {} last",
                        w.path.display(),
                        conflist::TYPE
                    ));
                    if let Err(e) = self.write_backup(w.backup_of.as_bytes(), &newer) {
                        logging::warn(&e.to_string());
                    }
                    self.watch(&w.name, &w.path, &current, &new, &w.backup_of);
                    adopted = true;
                }
                Ok(Replaced::Changed) => {}
                Err(e) => logging::warn(&format!("{}: {e}", w.path.display())),
            }
        }
        adopted
    }

    /// Takes our entry out of `file`: back to its backup byte for byte when it is exactly
    /// that backup plus our entry (a conversion of ours goes back to the single plugin), else
    /// only our entry goes.
    fn take_out(&self, file: &view::File, survey: &Survey) -> Result<bool, InstallError> {
        let (Some(seen), Some(e)) = (&file.seen, conflist::entry_of(file.bytes())) else {
            return Ok(true);
        };
        let name = file.name.as_bytes();
        // Our conversion of a single plugin: the `.conf`/`.json` comes back, the list goes.
        if let Some(stem) = name.strip_suffix(b".conflist") {
            for ext in [&b".conf"[..], b".json"] {
                let orig = [stem, ext].concat();
                let Some(b) = self.backup_of(&orig) else {
                    continue;
                };
                if with_entry(&b, &e).as_deref() != Some(file.bytes()) {
                    continue;
                }
                let orig_name = OsString::from(std::ffi::OsStr::from_bytes(&orig));
                let orig_path = self.s.conf_dir.join(&orig_name);
                if survey.get(&orig_name).is_none() {
                    files::create_new(&orig_path, &b, seen.mode(), &self.temps)
                        .map_err(io("restoring", &orig_path))?;
                }
                let gone = files::remove(&file.path, seen, &self.temps)
                    .map_err(io("removing", &file.path))?;
                if gone {
                    let _ = std::fs::remove_file(self.backup_path(&orig));
                    logging::info(&format!("restored {}", orig_path.display()));
                }
                return Ok(gone);
            }
        }
        let new = match self.backup_of(name) {
            Some(b) if with_entry(&b, &e).as_deref() == Some(file.bytes()) => b,
            _ => match conflist::remove(file.bytes()) {
                Ok(Some(without)) => without,
                _ => return Ok(true),
            },
        };
        match files::replace(&file.path, seen, &new, &self.temps)
            .map_err(io("writing", &file.path))?
        {
            Replaced::Yes => {
                let _ = std::fs::remove_file(self.backup_path(name));
                logging::info(&format!(
                    "took {} out of {}",
                    conflist::TYPE,
                    file.path.display()
                ));
                Ok(true)
            }
            Replaced::Changed => Ok(false),
        }
    }

    /// SIGTERM: uninstall, unless told not to or another installer runs on the node. Of
    /// installers stopped together, the last to leave uninstalls (`Presence::leave`).
    pub fn stop(&mut self) -> Result<(), InstallError> {
        if !self.s.uninstall {
            logging::info("stopping; leaving the plugin installed (--uninstall=false)");
            return Ok(());
        }
        let Some(presence) = self.presence.take() else {
            return Ok(());
        };
        let left = presence.leave(&self.s.conf_dir, Duration::from_secs(2));
        let Some((true, _guard)) = left else {
            logging::info(
                "stopping; another installer runs on this node (an upgrade): leaving the plugin installed",
            );
            return Ok(());
        };
        let failures = self.uninstall();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Watch(format!(
                "uninstall left things behind: {}",
                failures.join("; ")
            )))
        }
    }

    /// Takes our entry out of every file that holds it, then removes the kubeconfig, the
    /// binary and our backups. The binary goes only once no file holds the entry: a chain
    /// never names a missing plugin. Every failure is reported.
    pub fn uninstall(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut holding = Vec::new();
        for attempt in 0..5u64 {
            let survey = match Survey::read(&self.s.conf_dir, &self.s.host_conf_dir) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("reading {}: {e}", self.s.conf_dir.display()));
                    break;
                }
            };
            holding = survey
                .files
                .iter()
                .filter(|f| conflist::holds(f.bytes(), None))
                .map(|f| f.display())
                .collect();
            if holding.is_empty() {
                break;
            }
            for f in survey
                .files
                .iter()
                .filter(|f| conflist::holds(f.bytes(), None))
            {
                if let Err(e) = self.take_out(f, &survey) {
                    failures.push(e.to_string());
                }
            }
            // A file changed under us: read again, shortly.
            std::thread::sleep(Duration::from_millis(10 << attempt));
        }
        let links: Vec<PathBuf> = self.through_links.iter().cloned().collect();
        for path in links {
            if let Err(e) = self.take_out_of(&path) {
                failures.push(e.to_string());
            }
        }
        if !holding.is_empty() {
            failures.push(format!(
                "{} still hold meshtables-cni (rewritten while it was taken out): the binary and kubeconfig stay, so no chain names a missing plugin",
                holding.join(", ")
            ));
            return failures;
        }
        let kubeconfig = self.kubeconfig_path();
        let ours = files::read(&kubeconfig).is_ok_and(|b| kubeconfig::is_ours(&b));
        let mut paths = vec![self.binary()];
        if ours {
            paths.insert(0, kubeconfig);
        }
        for path in paths {
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => logging::info(&format!("removed {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("removing {}: {e}", path.display())),
            }
        }
        self.remove_backups();
        self.remove_leftovers_of_all();
        if let Some(legacy) = self.legacy.take() {
            legacy.release_and_remove(&self.s.conf_dir);
        }
        failures
    }

    /// At uninstall: the temporary files of every installer but running ones (this one has
    /// left), as `remove_leftovers` does.
    fn remove_leftovers_of_all(&self) {
        let probe = presence::Presence::observer(&self.s.conf_dir).ok();
        for dir in [&self.s.conf_dir, &self.s.bin_dir] {
            let dead = |id: u64| probe.as_ref().is_none_or(|p| !p.alive(id));
            for p in files::remove_leftovers(dir, dead, &displaced_is_newer) {
                logging::info(&format!("removed {}", p.display()));
            }
        }
    }

    /// Our backups whose file no longer holds an entry of ours (after uninstall: all).
    fn remove_backups(&self) {
        let Ok(dir) = std::fs::read_dir(&self.s.conf_dir) else {
            return;
        };
        for e in dir.filter_map(Result::ok) {
            let n = e.file_name();
            if n.as_bytes().starts_with(b".") && n.as_bytes().ends_with(BACKUP_SUFFIX.as_bytes()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// For a killed installer's replacement file: whether what it displaced is another writer's
/// newer write (the target holds our entry and the displaced file does not, and their chains
/// differ), to be put back rather than swept away.
fn displaced_is_newer(displaced: &[u8], target: &[u8]) -> bool {
    if !conflist::holds(target, None) || conflist::holds(displaced, None) {
        return false;
    }
    let chain = |b: &[u8]| {
        let without = conflist::remove(b)
            .ok()
            .flatten()
            .unwrap_or_else(|| b.to_vec());
        serde_json::from_slice::<Value>(&without).ok()
    };
    chain(displaced) != chain(target)
}

/// `bytes` (a backup, without our entry) with `entry` last, as the installer writes it.
fn with_entry(bytes: &[u8], entry: &Map<String, Value>) -> Option<Vec<u8>> {
    conflist::insert(bytes, entry).ok().flatten()
}

fn ready(file: &view::File) -> State {
    State::Ready(format!(
        "the chain of {} holds meshtables-cni",
        file.display()
    ))
}

fn changed(file: &view::File) -> State {
    State::NotReady(format!(
        "{} changed while being written: reading it again",
        file.display()
    ))
}
