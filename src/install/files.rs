//! Files the installer shares with the runtime and the primary plugin, and how it changes
//! them without losing anyone's write.
//!
//! - Every write is whole: a temporary file in the same directory, written, synced, then
//!   renamed into place, the directory synced. A runtime never reads half a configuration or
//!   executes half a binary.
//! - Temporary names are `.<target>.meshtables-tmp-<installer id>-<n>`: unique across the
//!   node's installers whatever their PID namespaces (the id is the installer's presence,
//!   `presence.rs`), dot files with no extension a runtime loads, and recognisable, so the
//!   leftovers of a killed installer (whose id is no longer alive) are removed.
//! - A shared file is replaced only if it still holds what was read ([`replace`]): the bytes
//!   are compared just before, and the rename is an exchange (`RENAME_EXCHANGE`), so the file
//!   displaced is known: if it is not the one read (the primary renamed its own new version in
//!   between), it is put back at once. A writer that rewrites in place (truncate, write: Go's
//!   `os.WriteFile`) and opened the file before our rename writes into the file we displaced;
//!   [`Seen::overtaken`] sees that write afterwards, so the caller can take it as the primary's
//!   newest. The other writer's last write wins.
//! - New files never replace existing ones ([`create_new`]: `link`), and removal compares
//!   before it unlinks ([`remove`]).

use std::cell::Cell;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

/// The largest configuration file the installer judges (real ones are a few kilobytes). The
/// runtimes read any size, so a bigger file before the network makes the installer "not
/// ready", saying so, rather than guess; the file is never read whole (the DaemonSet's memory
/// limit would kill the installer first).
pub const MAX_CONF: u64 = 1 << 20;

const TMP_MARK: &str = ".meshtables-tmp-";
/// The temporary file of a replacement: after the exchange it holds what was displaced, so a
/// killed installer's one may hold the primary's newest write (`remove_leftovers`).
const SWAP_MARK: &str = ".meshtables-swap-";

/// The longest file name Linux filesystems take.
const NAME_MAX: usize = 255;

/// `.<name><suffix>`, or, when that is longer than a file name may be, `.<the name's first
/// bytes>-<FNV-1a hash of the name><suffix>`: the same for every installer version.
pub fn dot_name(name: &[u8], suffix: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    let mut out = b".".to_vec();
    if 1 + name.len() + suffix.len() <= NAME_MAX {
        out.extend_from_slice(name);
    } else {
        let hash = name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let keep = NAME_MAX
            .saturating_sub(1 + 17 + suffix.len())
            .min(name.len());
        out.extend_from_slice(&name[..keep]);
        out.extend_from_slice(format!("-{hash:016x}").as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    std::ffi::OsStr::from_bytes(&out).to_os_string()
}

/// Temporary names for one installer.
#[derive(Debug)]
pub struct Temps {
    id: u64,
    n: Cell<u64>,
}

impl Temps {
    pub fn new(id: u64) -> Temps {
        Temps {
            id,
            n: Cell::new(0),
        }
    }

    /// A fresh temporary path beside `target`.
    pub fn beside(&self, target: &Path) -> PathBuf {
        self.marked(target, TMP_MARK)
    }

    /// A fresh temporary path beside `target` for a replacement (see `SWAP_MARK`).
    fn swap_beside(&self, target: &Path) -> PathBuf {
        self.marked(target, SWAP_MARK)
    }

    fn marked(&self, target: &Path, mark: &str) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let name = target.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let n = self.n.get();
        self.n.set(n + 1);
        dir_of(target).join(dot_name(name, &format!("{mark}{}-{n}", self.id)))
    }

    /// The installer id in a temporary name of ours, if `name` is one.
    pub fn owner(name: &str) -> Option<u64> {
        let at = name.rfind(TMP_MARK).map(|i| i + TMP_MARK.len());
        let at = at.or_else(|| name.rfind(SWAP_MARK).map(|i| i + SWAP_MARK.len()))?;
        let (id, n) = name[at..].split_once('-')?;
        n.parse::<u64>().ok()?;
        id.parse().ok()
    }

    /// For a replacement's temporary name: the file it replaced (`None` for a hashed name).
    fn swap_target(name: &str) -> Option<&str> {
        let stem = name.strip_prefix('.')?;
        let at = stem.rfind(SWAP_MARK)?;
        let target = &stem[..at];
        (!target.is_empty()).then_some(target)
    }

    /// Whether `name` is a temporary file of this installer.
    pub fn is_mine(&self, name: &str) -> bool {
        Temps::owner(name) == Some(self.id)
    }
}

fn dir_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir_of(p))?.sync_all()
}

/// Writes a new temporary file with `bytes` and `mode`, synced; returns its path and inode.
fn write_temp(
    target: &Path,
    bytes: &[u8],
    mode: u32,
    temps: &Temps,
) -> std::io::Result<(PathBuf, u64)> {
    write_new(temps.beside(target), bytes, mode)
}

fn write_new(tmp: PathBuf, bytes: &[u8], mode: u32) -> std::io::Result<(PathBuf, u64)> {
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The mode the caller asked for, whatever the umask made of it.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.sync_all()?;
        Ok(f.metadata()?.ino())
    })();
    match result {
        Ok(ino) => Ok((tmp, ino)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` whole (temporary file, rename), for files that are ours alone.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, temps: &Temps) -> std::io::Result<()> {
    let (tmp, _) = write_temp(path, bytes, mode, temps)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// A file as read: its bytes, and the open file they came from.
#[derive(Debug)]
pub struct Seen {
    pub bytes: Vec<u8>,
    file: std::fs::File,
    ino: u64,
    dev: u64,
}

impl Seen {
    /// What the file we read holds now, when it differs from what we read: a write that
    /// reached it after we read it (after we replaced it, an in-place writer's).
    pub fn overtaken(&self) -> Option<Vec<u8>> {
        let now = read_at(&self.file).ok()?;
        (now != self.bytes).then_some(now)
    }

    /// Another look at the same file: the bytes read, and a duplicate of its descriptor.
    pub fn try_clone(&self) -> std::io::Result<Seen> {
        Ok(Seen {
            bytes: self.bytes.clone(),
            file: self.file.try_clone()?,
            ino: self.ino,
            dev: self.dev,
        })
    }

    /// The file's identity (device, inode): two names of one file have the same.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The permission bits of the file read (a rewrite keeps them).
    pub fn mode(&self) -> u32 {
        self.file
            .metadata()
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o644)
    }
}

fn too_big() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!("larger than {MAX_CONF} bytes"),
    )
}

/// The whole content of `file`, from offset 0, at most `MAX_CONF` bytes.
fn read_at(file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() as u64 > MAX_CONF {
            return Err(too_big());
        }
    }
}

/// Reads a regular file (never blocking on a FIFO or device), at most `MAX_CONF` bytes.
pub fn see(path: &Path) -> std::io::Result<Seen> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_CONF {
        return Err(too_big());
    }
    let bytes = read_at(&file)?;
    Ok(Seen {
        bytes,
        file,
        ino: meta.ino(),
        dev: meta.dev(),
    })
}

/// Reads a small regular file of ours (a kubeconfig, a backup): at most 1 MiB.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::host::read_bounded(path, crate::host::MAX_FILE)
}

/// What [`replace`] did.
#[derive(Debug)]
pub enum Replaced {
    /// `path` holds the new bytes; what it held is `Seen` (watch it with `overtaken`).
    Yes,
    /// `path` no longer held what was read: nothing was changed; read it again.
    Changed,
}

fn ino_of(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Replaces `path`, which held `seen` when read, with `bytes`, unless it changed since.
pub fn replace(path: &Path, seen: &Seen, bytes: &[u8], temps: &Temps) -> std::io::Result<Replaced> {
    let (tmp, ours) = write_new(temps.swap_beside(path), bytes, seen.mode())?;
    let unchanged = ino_of(path) == Some(seen.ino) && seen.overtaken().is_none();
    if !unchanged {
        let _ = std::fs::remove_file(&tmp);
        return Ok(Replaced::Changed);
    }
    match renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {}
        // A filesystem without exchange: a plain rename (the compare above still holds).
        Err(nix::Error::EINVAL | nix::Error::ENOSYS | nix::Error::EOPNOTSUPP) => {
            if let Err(e) = std::fs::rename(&tmp, path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            sync_dir(path)?;
            return Ok(Replaced::Yes);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    }
    if ino_of(&tmp) == Some(seen.ino) {
        std::fs::remove_file(&tmp)?;
        sync_dir(path)?;
        return Ok(Replaced::Yes);
    }
    // Another writer renamed its file into place between the compare and the exchange: we
    // displaced its write. Put it back (exchange again) and drop our own file.
    let displaced = ino_of(&tmp);
    renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE)?;
    if ino_of(&tmp) != Some(ours) {
        // It renamed once more in between (our file went with that rename): its newest is
        // now beside us and its older one in place. One more exchange puts the newest back;
        // the older one, superseded by its own writer, is no one's file.
        renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE)?;
        if ino_of(&tmp) != displaced {
            return Err(std::io::Error::other(format!(
                "{} was renamed over three times while being replaced; left {} for inspection",
                path.display(),
                tmp.display()
            )));
        }
    }
    std::fs::remove_file(&tmp)?;
    Ok(Replaced::Changed)
}

/// Creates `path` with `bytes` unless something exists there; returns whether it did.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32, temps: &Temps) -> std::io::Result<bool> {
    let (tmp, _) = write_temp(path, bytes, mode, temps)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `path` if it still holds `seen`; returns whether it did. Whatever is there is
/// moved aside first (atomically), compared, and put back if it is not what was read.
pub fn remove(path: &Path, seen: &Seen, temps: &Temps) -> std::io::Result<bool> {
    let aside = temps.beside(path);
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    if ino_of(&aside) == Some(seen.ino) && seen.overtaken().is_none() {
        std::fs::remove_file(&aside)?;
        sync_dir(path)?;
        return Ok(true);
    }
    // Someone else's newer write: back where it was, unless an even newer one is there now.
    let _ = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    Ok(false)
}

/// Where a file of the configuration directory really is, as the host resolves it, in this
/// process's view. `dir` is the directory as mounted here, `host_dir` the same directory as the
/// host (and so the runtime) sees it. Every component is resolved as the host would resolve it
/// (a link to a directory on the way included); a path that leaves the directory is not
/// visible here (unless both views are the same), and is an error naming it.
pub fn resolve(dir: &Path, host_dir: &Path, name: &std::ffi::OsStr) -> Result<PathBuf, String> {
    let same_view = dir == host_dir;
    let outside = |p: &Path| {
        format!(
            "{} leads to {}, outside {} (not mounted here: link within the directory, or mount the target at the same path)",
            host_dir.join(name).display(),
            p.display(),
            host_dir.display()
        )
    };
    let view = |p: &Path| -> Result<PathBuf, String> {
        if same_view {
            return Ok(p.to_path_buf());
        }
        p.strip_prefix(host_dir)
            .map(|rest| dir.join(rest))
            .map_err(|_| outside(p))
    };
    // The host path resolved so far (a directory), and the components still to walk.
    let mut at = host_dir.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = vec![name.to_os_string()];
    let mut links = 0;
    while let Some(c) = rest.pop() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&c);
        let here = view(&next)?;
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(format!(
                        "{}: too many levels of symbolic links",
                        host_dir.join(name).display()
                    ));
                }
                let target =
                    std::fs::read_link(&here).map_err(|e| format!("{}: {e}", here.display()))?;
                if target.is_absolute() {
                    // Walk it from the directory when it points inside it; from / only when
                    // this process sees the host's paths.
                    match target.strip_prefix(host_dir) {
                        Ok(inside) if !same_view => {
                            at = host_dir.to_path_buf();
                            push_components(&mut rest, inside);
                        }
                        _ if same_view => {
                            at = PathBuf::from("/");
                            push_components(&mut rest, &target);
                        }
                        _ => return Err(outside(&target)),
                    }
                } else {
                    push_components(&mut rest, &target);
                }
            }
            Ok(_) => at = next,
            // Missing: nothing more to resolve; the rest is taken as it is.
            Err(_) => {
                at = next;
                while let Some(c) = rest.pop() {
                    at.push(c);
                }
            }
        }
    }
    view(&at)
}

/// Pushes `p`'s components onto the stack of components to walk (the first on top).
fn push_components(rest: &mut Vec<std::ffi::OsString>, p: &Path) {
    let parts: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            std::path::Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    rest.extend(parts.into_iter().rev());
}

/// Copies the running binary to `dest` unless `dest` already holds the same bytes; returns
/// whether it wrote. The binary is read from /proc/self/exe, so the copy is what runs.
pub fn install_binary(dest: &Path, temps: &Temps) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::fs::read("/proc/self/exe")?;
    if same_bytes(dest, &me) {
        if is_executable(dest) {
            return Ok(false);
        }
        // The right bytes that the runtime cannot run (a chmod, a restore from a backup).
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
        return Ok(true);
    }
    write_atomic(dest, &me, 0o755, temps)?;
    Ok(true)
}

/// Whether everyone may execute `path` (the runtime runs the plugin as root, but a mode
/// without the bits is not one the installer wrote).
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111)
}

/// Whether `path` is a regular file holding exactly `bytes`.
pub fn same_bytes(path: &Path, bytes: &[u8]) -> bool {
    see_any(path).is_ok_and(|b| b == bytes)
}

/// Reads a regular file of any size (the plugin binary), never blocking on a FIFO.
fn see_any(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// Removes the temporary files of installers that are no longer running (a kill between a
/// temporary file's creation and its rename), and old-style ones (`.<name>.meshtables-<pid>`)
/// a minute old. A killed installer's replacement file beside its target may hold what its
/// exchange displaced: when `newer(displaced, target)` says it is another writer's newer
/// write (the installer was killed before putting it back), it goes back in place instead.
/// Returns what it removed or put back.
pub fn remove_leftovers(
    dir: &Path,
    dead: impl Fn(u64) -> bool,
    newer: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = match Temps::owner(&name) {
            Some(id) => dead(id),
            None => is_old_style_temp(&name) && older_than_a_minute(&e.path()),
        };
        if !stale {
            continue;
        }
        if let Some(target) = Temps::swap_target(&name).map(|t| dir.join(t))
            && let (Ok(displaced), Ok(there)) = (read(&e.path()), read(&target))
            && newer(&displaced, &there)
            && renameat2(
                AT_FDCWD,
                &e.path(),
                AT_FDCWD,
                &target,
                RenameFlags::RENAME_EXCHANGE,
            )
            .is_ok()
        {
            removed.push(target);
        }
        if std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

fn is_old_style_temp(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".meshtables-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

fn older_than_a_minute(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() >= 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mt-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn temporary_names_carry_the_installer_and_no_config_extension() {
        let t = Temps::new(42);
        let p = t.beside(Path::new("/x/10-net.conflist"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with('.') && !super::super::conflist::is_config_name(name));
        assert_eq!(Temps::owner(name), Some(42));
        assert_ne!(t.beside(Path::new("/x/a")), t.beside(Path::new("/x/a")));
        assert_eq!(Temps::owner("10-net.conflist"), None);
    }

    #[test]
    fn replace_refuses_a_file_that_changed_since_it_was_read() {
        let d = dir("changed");
        let p = d.join("10-net.conflist");
        std::fs::write(&p, "one").unwrap();
        let seen = see(&p).unwrap();
        std::fs::write(d.join("new"), "two").unwrap();
        std::fs::rename(d.join("new"), &p).unwrap();
        let t = Temps::new(1);
        assert!(matches!(
            replace(&p, &seen, b"ours", &t).unwrap(),
            Replaced::Changed
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn replace_keeps_the_mode_and_sees_an_in_place_write_after_it() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("inplace");
        let p = d.join("10-net.conflist");
        std::fs::write(&p, "one").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        // The primary opened the file (O_TRUNC) before our rename, and writes after it.
        let seen = see(&p).unwrap();
        let mut writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let t = Temps::new(1);
        assert!(matches!(
            replace(&p, &seen, b"ours", &t).unwrap(),
            Replaced::Yes
        ));
        writer.set_len(0).unwrap();
        writer.write_all(b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ours");
        assert_eq!(seen.overtaken().as_deref(), Some(&b"two"[..]));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn create_new_never_replaces_and_remove_compares() {
        let d = dir("create");
        let p = d.join("10-net.conflist");
        let t = Temps::new(1);
        assert!(create_new(&p, b"a", 0o644, &t).unwrap());
        assert!(!create_new(&p, b"b", 0o644, &t).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"a");
        let seen = see(&p).unwrap();
        std::fs::write(d.join("n"), "c").unwrap();
        std::fs::rename(d.join("n"), &p).unwrap();
        assert!(!remove(&p, &seen, &t).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"c");
        let seen = see(&p).unwrap();
        assert!(remove(&p, &seen, &t).unwrap());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }

    #[test]
    fn links_resolve_as_the_host_sees_them() {
        let d = dir("links");
        let here = d.join("mnt");
        std::fs::create_dir_all(here.join("sub")).unwrap();
        let host = Path::new("/etc/cni/net.d");
        std::fs::write(here.join("sub/real.conflist"), "x").unwrap();
        std::os::unix::fs::symlink("sub/real.conflist", here.join("10-rel.conflist")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/cni/net.d/sub/real.conflist",
            here.join("20-abs.conflist"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/opt/calico/x.conflist", here.join("30-out.conflist")).unwrap();
        std::os::unix::fs::symlink("../x.conflist", here.join("40-up.conflist")).unwrap();
        let r = |n: &str| resolve(&here, host, std::ffi::OsStr::new(n));
        assert_eq!(
            r("10-rel.conflist").unwrap(),
            here.join("sub/real.conflist")
        );
        assert_eq!(
            r("20-abs.conflist").unwrap(),
            here.join("sub/real.conflist")
        );
        assert!(r("30-out.conflist").unwrap_err().contains("/opt/calico"));
        std::os::unix::fs::symlink("/opt/calico", here.join("calico")).unwrap();
        std::os::unix::fs::symlink("calico/x.conflist", here.join("50-via-dir.conflist")).unwrap();
        assert!(
            r("50-via-dir.conflist")
                .unwrap_err()
                .contains("/opt/calico")
        );
        assert!(r("40-up.conflist").unwrap_err().contains("outside"));
        assert_eq!(r("plain").unwrap(), here.join("plain"));
    }

    #[test]
    fn leftovers_of_dead_installers_go_and_live_ones_stay() {
        let d = dir("leftovers");
        let live = Temps::new(7).beside(&d.join("a.conflist"));
        let dead = Temps::new(8).beside(&d.join("a.conflist"));
        std::fs::write(&live, "").unwrap();
        std::fs::write(&dead, "").unwrap();
        std::fs::write(d.join("a.conflist"), "").unwrap();
        let removed = remove_leftovers(&d, |id| id == 8, &|_, _| false);
        assert_eq!(removed, [dead]);
        assert!(live.exists() && d.join("a.conflist").exists());
    }
}
