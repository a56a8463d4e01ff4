//! The installer's failures.

use std::path::{Path, PathBuf};

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
    Kubeconfig(#[from] super::kubeconfig::KubeconfigError),
    #[error("{0}")]
    Watch(String),
    #[error("the node agent did not start: {0}")]
    Agent(String),
}

pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}
