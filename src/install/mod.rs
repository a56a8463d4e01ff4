//! `meshtables cni-install`: the long-running process of a DaemonSet that installs the CNI
//! plugin on its node and keeps it installed (`deploy/`).
//!
//! On start it copies its own binary into the runtime's plugin directory as `meshtables-cni`
//! (skipped when identical), writes the plugin's kubeconfig from its service account, and puts
//! the plugin last in the primary network's chain (`conflist`), waiting for the primary's file
//! if there is none yet. Then it watches (inotify) the configuration directory, where a primary
//! plugin such as Calico or Cilium rewrites its file, and puts the entry back within a second;
//! and the service account directory, rewriting the kubeconfig when the token rotates. An HTTP
//! endpoint answers 200 while the chain holds the plugin, 503 otherwise (the pod's readiness).
//! On SIGTERM (with `--uninstall`, the default) it takes the entry out, restoring the file
//! byte for byte from a backup when no one else wrote it since (a converted `.conf` comes back
//! as it was), and removes the binary and the kubeconfig; unless another installer runs on
//! the node (a rolling upgrade), which keeps everything installed.

pub mod conflist;
mod files;
pub mod gojson;
mod kubeconfig;
pub mod libcni;
mod watch;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{ConfigError, EnvSource, Resolver};
use crate::flags::Flags;
use crate::flags::install as f;
use crate::logging;

/// The installer's settings (`flags::install`), resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub host_conf_dir: PathBuf,
    pub conf_name: Option<String>,
    pub kubeconfig_name: String,
    pub sa_dir: PathBuf,
    pub kubernetes: bool,
    pub exclude_namespaces: Vec<String>,
    pub native_nftables: bool,
    pub compact: bool,
    pub plugin_settings: Map<String, Value>,
    pub uninstall: bool,
    pub readiness_port: u16,
    pub log_level: crate::logging::Level,
    pub log_as_json: bool,
}

/// Resolves the settings (command line, then env, then defaults), each value checked.
pub fn settings(flags: &Flags, env: &dyn EnvSource) -> Result<Settings, ConfigError> {
    let r = Resolver::new(flags, env);
    let name = r.get(&f::CNI_CONF_NAME)?;
    Ok(Settings {
        bin_dir: r.get(&f::CNI_BIN_DIR)?,
        conf_dir: r.get(&f::CNI_CONF_DIR)?,
        host_conf_dir: r.get(&f::HOST_CNI_CONF_DIR)?,
        conf_name: (!name.trim().is_empty()).then(|| name.trim().to_string()),
        kubeconfig_name: r.get(&f::KUBECONFIG_NAME)?,
        sa_dir: r.get(&f::SERVICE_ACCOUNT_DIR)?,
        kubernetes: r.get(&f::KUBERNETES)?,
        exclude_namespaces: r.get(&f::EXCLUDE_NAMESPACES)?,
        native_nftables: r.get(&f::NATIVE_NFTABLES)?,
        compact: r.get(&f::COMPACT)?,
        plugin_settings: r.get(&f::PLUGIN_SETTINGS)?,
        uninstall: r.get(&f::UNINSTALL)?,
        readiness_port: r.get(&f::READINESS_PORT)?.get(),
        log_level: r.get(&f::LOG_LEVEL)?,
        log_as_json: r.get(&f::LOG_AS_JSON)?,
    })
}

/// Failures of a running installer.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the plugin entry these settings make is one the plugin refuses: {0}")]
    Entry(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::KubeconfigError),
    #[error("{0}")]
    Watch(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// The plugin's entry these settings make: the plugin's `type` and `name`, the chosen
/// settings, and the `kubernetes` section. Checked by the plugin's own configuration parser,
/// so a key it would refuse stops the installer instead of every pod's ADD.
pub fn entry(s: &Settings) -> Result<Map<String, Value>, InstallError> {
    let mut e = Map::new();
    e.insert("type".into(), conflist::TYPE.into());
    e.insert("name".into(), conflist::TYPE.into());
    if s.native_nftables {
        e.insert("native-nftables".into(), true.into());
    }
    if s.compact {
        e.insert("compact".into(), true.into());
    }
    for (k, v) in &s.plugin_settings {
        e.insert(k.clone(), v.clone());
    }
    if s.kubernetes {
        let kubeconfig = s.host_conf_dir.join(&s.kubeconfig_name);
        e.insert(
            "kubernetes".into(),
            serde_json::json!({
                "kubeconfig": kubeconfig.display().to_string(),
                "exclude-namespaces": s.exclude_namespaces,
            }),
        );
    }
    let mut check = e.clone();
    check.insert("cniVersion".into(), "1.0.0".into());
    let bytes = serde_json::to_vec(&check).unwrap_or_default();
    let refused =
        |err: crate::cni::CniError| InstallError::Entry(format!("{}: {}", err.msg, err.details));
    let conf = crate::cni::conf::parse(&bytes).map_err(refused)?;
    crate::cni::validate_settings(&conf).map_err(refused)?;
    Ok(e)
}

/// The backup of a configuration file as it was before an installer first wrote it:
/// `.<file name>.meshtables-cni-backup` beside it. Its extension is none a runtime reads (a
/// runtime loads dot files with a CNI extension too, and the first by name wins). On disk, so
/// that whichever installer uninstalls (after an upgrade, not the one that wrote) can put the
/// file back byte for byte.
const BACKUP_SUFFIX: &str = ".meshtables-cni-backup";

fn backup_name(orig: &str) -> String {
    format!(".{orig}{BACKUP_SUFFIX}")
}

/// The installer's state.
pub struct Installer {
    s: Settings,
    entry: Map<String, Value>,
    kubeconfig: Option<Vec<u8>>,
    /// The plugin binary as last checked: inode, size, modification time.
    binary_seen: Option<(u64, u64, i64, i64)>,
}

impl Installer {
    pub fn new(s: Settings) -> Result<Installer, InstallError> {
        let entry = entry(&s)?;
        Ok(Installer {
            s,
            entry,
            kubeconfig: None,
            binary_seen: None,
        })
    }

    fn binary(&self) -> PathBuf {
        self.s.bin_dir.join(conflist::TYPE)
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.s.conf_dir.join(&self.s.kubeconfig_name)
    }

    /// Copies the binary into the plugin directory unless it holds the same bytes. Checked
    /// every second: a file unchanged since the last check (inode, size, mtime) is not read.
    pub fn install_binary(&mut self) -> Result<(), InstallError> {
        use std::os::unix::fs::MetadataExt;
        let dest = self.binary();
        let stamp = |m: std::fs::Metadata| (m.ino(), m.len(), m.mtime(), m.mtime_nsec());
        let now = std::fs::metadata(&dest).ok().map(stamp);
        if now.is_some() && now == self.binary_seen {
            return Ok(());
        }
        if files::install_binary(&dest).map_err(io("copying the plugin to", &dest))? {
            logging::info(&format!("installed {}", dest.display()));
        }
        self.binary_seen = std::fs::metadata(&dest).ok().map(stamp);
        Ok(())
    }

    /// Writes the kubeconfig when its content changed (a rotated token).
    pub fn refresh_kubeconfig(&mut self, env: &dyn EnvSource) -> Result<(), InstallError> {
        if !self.s.kubernetes {
            return Ok(());
        }
        let bytes = kubeconfig::make(&self.s.sa_dir, env)?;
        let path = self.kubeconfig_path();
        if files::read(&path).is_ok_and(|b| b == bytes) {
            self.kubeconfig = Some(bytes);
            return Ok(());
        }
        files::write_atomic(&path, &bytes, 0o600).map_err(io("writing", &path))?;
        logging::info(&format!("wrote the plugin's kubeconfig {}", path.display()));
        self.kubeconfig = Some(bytes);
        Ok(())
    }

    /// The primary configuration file: the named one (or its `.conf`/`.conflist` twin), else
    /// the lexically first valid one. Files skipped for their content are reported.
    fn primary(&self) -> Result<Option<(PathBuf, Vec<u8>)>, InstallError> {
        let dir = &self.s.conf_dir;
        if let Some(name) = &self.s.conf_name {
            let twin = name
                .strip_suffix(".conf")
                .map(|b| format!("{b}.conflist"))
                .or_else(|| name.strip_suffix(".conflist").map(|b| format!("{b}.conf")));
            for n in std::iter::once(name.clone()).chain(twin) {
                let p = dir.join(&n);
                if let Ok(bytes) = files::read(&p) {
                    return match conflist::validate(&bytes) {
                        Ok(()) => Ok(Some((p, bytes))),
                        Err(e) => {
                            logging::warn(&format!("{}: {e}; not touching it", p.display()));
                            Ok(None)
                        }
                    };
                }
            }
            return Ok(None);
        }
        let all = files::config_files(dir).map_err(io("reading", dir))?;
        let (found, skipped) = conflist::primary(&all);
        for (name, why) in skipped {
            logging::warn(&format!(
                "{}: {why}; not touching it",
                dir.join(name).display()
            ));
        }
        Ok(found.map(|(n, b)| (dir.join(n), b.clone())))
    }

    /// Makes the primary's chain end with our entry; returns whether it does (the readiness).
    pub fn reconcile(&mut self) -> Result<bool, InstallError> {
        let Some((path, bytes)) = self.primary()? else {
            return Ok(false);
        };
        let new = match conflist::insert(&bytes, &self.entry) {
            Ok(None) => return Ok(true),
            Ok(Some(new)) => new,
            Err(e) => {
                logging::warn(&format!("{}: {e}; not touching it", path.display()));
                return Ok(false);
            }
        };
        let mode = files::mode_of(&path).unwrap_or(0o644);
        // A single plugin (`.conf`, or `.json`) becomes a list: written as `.conflist`
        // beside it, then the old file removed (in between the runtime still reads the old
        // one: it sorts first).
        let converting = !bytes_is_list(&bytes);
        let target = if converting {
            path.with_extension("conflist")
        } else {
            path.clone()
        };
        // The backup first: a kill after it leaves the file as it was, and a rerun rewrites
        // the backup from the same bytes.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.drop_backups();
        let backup = self.s.conf_dir.join(backup_name(&name));
        files::write_atomic(&backup, &bytes, 0o600).map_err(io("writing", &backup))?;
        files::write_atomic(&target, &new, mode).map_err(io("writing", &target))?;
        if target != path {
            std::fs::remove_file(&path).map_err(io("removing the converted", &path))?;
        }
        logging::info(&format!(
            "put {} last in the chain of {}",
            conflist::TYPE,
            target.display()
        ));
        Ok(true)
    }

    /// The backups in the configuration directory: (original file name, its bytes).
    fn backups(&self) -> Vec<(String, Vec<u8>)> {
        let Ok(dir) = std::fs::read_dir(&self.s.conf_dir) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let orig = name.strip_prefix('.')?.strip_suffix(BACKUP_SUFFIX)?;
                if orig.is_empty() {
                    return None;
                }
                let orig = orig.to_string();
                Some((orig, files::read(&e.path()).ok()?))
            })
            .collect()
    }

    fn drop_backups(&self) {
        for (orig, _) in self.backups() {
            let _ = std::fs::remove_file(self.s.conf_dir.join(backup_name(&orig)));
        }
    }

    /// Takes our entry out of the chain, and removes the binary and the kubeconfig. The file
    /// comes back byte for byte when it still holds what we wrote; otherwise (the primary
    /// rewrote it, keeping us) only our entry goes. Every failure is reported.
    pub fn uninstall(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Err(e) = self.take_entry_out() {
            failures.push(e.to_string());
        }
        for path in [self.binary(), self.kubeconfig_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => logging::info(&format!("removed {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("removing {}: {e}", path.display())),
            }
        }
        failures
    }

    /// The file comes back from its backup when it holds exactly what an installer made of
    /// that backup (our entry added, a `.conf` turned into a `.conflist`); else only our entry
    /// is taken out of the primary.
    fn take_entry_out(&mut self) -> Result<(), InstallError> {
        for (orig_name, before) in self.backups() {
            let orig = self.s.conf_dir.join(&orig_name);
            let target = if bytes_is_list(&before) {
                orig.clone()
            } else {
                orig.with_extension("conflist")
            };
            let ours = conflist::insert(&before, &self.entry).ok().flatten();
            let now = files::read(&target).ok();
            let untouched = now.is_some() && now == ours;
            if untouched {
                let mode = files::mode_of(&target).unwrap_or(0o644);
                files::write_atomic(&orig, &before, mode).map_err(io("restoring", &orig))?;
                if target != orig {
                    std::fs::remove_file(&target).map_err(io("removing", &target))?;
                }
                logging::info(&format!("restored {}", orig.display()));
            }
            let backup = self.s.conf_dir.join(backup_name(&orig_name));
            let _ = std::fs::remove_file(&backup);
            if untouched {
                return Ok(());
            }
        }
        // The primary rewrote the file since (keeping us): take only our entry out.
        let Some((path, bytes)) = self.primary()? else {
            return Ok(());
        };
        if let Ok(Some(without)) = conflist::remove(&bytes) {
            let mode = files::mode_of(&path).unwrap_or(0o644);
            files::write_atomic(&path, &without, mode).map_err(io("writing", &path))?;
            logging::info(&format!(
                "took {} out of {}",
                conflist::TYPE,
                path.display()
            ));
        }
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }
}

/// Whether a configuration is already a list (a `.json` may be either).
fn bytes_is_list(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.get("plugins").is_some())
}

/// Runs the installer until SIGTERM or SIGINT.
pub fn run(s: Settings, env: &dyn EnvSource) -> Result<(), InstallError> {
    let mut inst = Installer::new(s)?;
    inst.install_binary()?;
    inst.refresh_kubeconfig(env)?;
    watch::serve(&mut inst, env)
}
