//! Files the installer writes where a runtime reads them: always whole (a temporary file in the
//! same directory, written, synced, renamed over the target, the directory synced), so a
//! runtime never reads half a configuration or executes half a binary. Temporary names start
//! with a dot, which no runtime loads.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically with mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.meshtables-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The mode of an existing file (a rewritten configuration keeps its permissions).
pub fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Reads a regular file of at most 1 MiB (never a FIFO; see `host::read_bounded`).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::host::read_bounded(path, crate::host::MAX_FILE)
}

/// The configuration files of `dir` (regular files the runtime would read), with contents.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !super::conflist::is_config_name(&name) {
            continue;
        }
        // A file that vanished or cannot be read is not a candidate (reported by the caller
        // only if it was the primary).
        if let Ok(bytes) = read(&e.path()) {
            out.push((name, bytes));
        }
    }
    Ok(out)
}

/// Copies the running binary to `dest` unless `dest` already holds the same bytes; returns
/// whether it wrote. The binary is read from /proc/self/exe, so the copy is what runs.
pub fn install_binary(dest: &Path) -> std::io::Result<bool> {
    let me = std::fs::read("/proc/self/exe")?;
    if std::fs::read(dest).is_ok_and(|there| there == me) {
        return Ok(false);
    }
    write_atomic(dest, &me, 0o755)?;
    Ok(true)
}
