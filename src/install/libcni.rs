//! Which file of a CNI configuration directory is the runtime's network, and whether it loads,
//! as the runtimes decide it. Pure: the caller lists the directory and reads the files (see
//! [`Entry`]); this returns, per file and per libcni version, the network libcni loads or why
//! it does not, and the file each runtime uses.
//!
//! Modelled from the sources the runtimes ship (mirrors of containernetworking/cni at v1.1.2,
//! in podman 4.x, CRI-O's ocicni 0.4.1-0.4.2 and containerd 1.7's go-cni up to 1.1.9, and at
//! v1.3.0, in go-cni 1.1.13 and ocicni 0.5; containerd/go-cni `opts.go`; cri-o/ocicni
//! `pkg/ocicni/ocicni.go`): `libcni.ConfFiles` (the listing), `ConfListFromFile` /
//! `NetworkConfFromFile` (a `.conflist`), `ConfFromFile` + `ConfListFromConf` (a `.conf` or
//! `.json`), go-cni's `loadFromConfDir` (containerd: the first file, which must load) and
//! ocicni's `loadNetworks` (CRI-O: the first file that loads and validates), and 1.3.0's
//! `cniVersions`. JSON is decoded by Go's rules (`gojson`).
//!
//! Not modelled: libcni 1.2.x (go-cni 1.1.10-1.1.12: 1.3.0's `cniVersions` and string
//! bools without `loadOnlyInlinedPlugins`, 1.1.2's required `plugins`, no subdirectory);
//! containerd's `max_conf_num` above 1 and CRI-O's `cni_default_network`; a 1.3.0
//! subdirectory plugin whose numbers overflow float64, which loads and fails every ADD.
//!
//! Confirmed against real libcni 1.1.x (tests marked "podman 4.3.1" or "containerd 1.6.20"):
//! podman 4.3.1's CNI backend (libcni v1.1.2, Go 1.19; `podman --network-backend cni
//! --network-config-dir D network ls` loads every `.conflist` of D with `ConfListFromFile`
//! and prints libcni's error for each that fails) agreed on the verdict and libcni's message
//! for 37 hand-written files and 4900 generated ones; containerd 1.6.20 (Debian's build, Go
//! 1.19; libcni's conf.go and types.go are the same from v1.1.0 to v1.1.2), with its CRI
//! `conf_dir` on a scratch directory and its reload errors read from the log, agreed on 15
//! directories (`.conf`/`.json` conversion, the first file failing). libcni 1.3.0 was not
//! available to run: its rules are from the source only.

use std::io::ErrorKind;

use super::gojson::{self, GoJsonError, KeyOrder, NetConfError, Node};

/// The libcni versions the runtimes ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Libcni {
    V1_1_2,
    V1_3_0,
}

impl Libcni {
    pub const ALL: [Libcni; 2] = [Libcni::V1_1_2, Libcni::V1_3_0];

    /// The Go struct this libcni decodes a plugin's configuration into.
    fn plugin_struct(self) -> gojson::Struct {
        match self {
            Libcni::V1_1_2 => gojson::Struct::NetConf,
            Libcni::V1_3_0 => gojson::Struct::PluginConf,
        }
    }

    /// `version.Current()`: the highest specification version this libcni implements.
    fn current(self) -> Version {
        match self {
            Libcni::V1_1_2 => (1, 0, 0),
            Libcni::V1_3_0 => (1, 1, 0),
        }
    }
}

/// The runtimes whose choice of file is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// go-cni `loadFromConfDir` with CRI's default `max_conf_num` = 1.
    Containerd,
    /// ocicni `loadNetworks` with no fixed default network name (CRI-O's default).
    CriO,
}

/// One entry of a directory, as the caller read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name's bytes.
    pub name: Vec<u8>,
    /// `DirEntry.IsDir()`: the lstat type is a directory. A symlink, even to a directory, is
    /// not (libcni lists it and fails to read it).
    pub is_dir: bool,
    /// What `os.ReadFile(<dir>/<name>)` gives (through symlinks). Only the entries libcni lists
    /// are consulted: those whose name ends in `.conf`, `.conflist` or `.json`.
    pub file: FileRead,
    /// What `os.ReadDir(<dir>/<name>)` gives (through symlinks). Consulted only under libcni
    /// 1.3.0, for the entry named like a `.conflist`'s network, where 1.3.0 looks for more
    /// plugins (`<dir>/<name>/*.conf`); `NotRead` there makes the verdict unknown, saying so.
    pub dir: DirRead,
}

/// The content of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    Bytes(Vec<u8>),
    /// More than the caller reads. The runtime reads any size; this model does not judge it.
    TooLarge {
        size: u64,
    },
    /// Not a regular file: not read (a FIFO would block the runtime's read).
    NotRegular,
    /// What the runtime reads is out of the caller's sight (a link to a path the caller has
    /// not mounted); the reason.
    Unseen(String),
    /// The read failed.
    Error(ErrorKind),
}

/// The listing of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirRead {
    /// The caller did not list it.
    NotRead,
    /// Its entries (their own `dir` is never consulted).
    Entries(Vec<Entry>),
    /// Listing failed. `NotFound` is Go's `os.IsNotExist` (no such directory: no plugins from
    /// it); any other kind (a regular file gives `NotADirectory`) fails the load. For a FIFO
    /// pass `NotRead`: Go's open of it blocks.
    Error(ErrorKind),
}

/// A loaded network, as the runtime will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The list's `name`; CRI-O calls a network with an empty one after its file.
    pub name: String,
    /// The list's `cniVersion` as this libcni computed it. libcni injects it into every
    /// plugin's configuration (`buildOneConfig`), so each plugin receives exactly this
    /// string; empty means 0.1.0 ([`Network::spec_version`]).
    pub cni_version: String,
    /// The chain, in order; never empty.
    pub plugins: Vec<Plugin>,
}

impl Network {
    /// The specification version the plugins are asked to speak: libcni sends `cniVersion`
    /// as computed, and an empty one means 0.1.0 (`validatePlugin`, and
    /// `version.ConfigDecoder` in every Go plugin).
    pub fn spec_version(&self) -> &str {
        if self.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.cni_version
        }
    }
}

/// A plugin of a loaded chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The binary libcni runs (the `type` as the plugin's own configuration decodes).
    pub plugin_type: String,
    /// `None` for a plugin written in the file; the file name for one libcni 1.3.0 appended
    /// from the network's subdirectory.
    pub from_file: Option<Vec<u8>>,
}

/// Whether a file loads under one libcni version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    Loads(Network),
    Fails(LoadError),
    Unknown(Unknown),
}

/// Why libcni does not load a file (its wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("error reading the file: {0}")]
    Read(ErrorKind),
    #[error("error parsing configuration list: {0}")]
    Json(GoJsonError),
    #[error(
        "error parsing configuration list: json: cannot unmarshal {0} into Go value of type map[string]interface {{}}"
    )]
    ListNotAnObject(&'static str),
    #[error("error parsing configuration list: no name")]
    NoName,
    #[error("error parsing configuration list: invalid name type {0}")]
    NameType(&'static str),
    #[error("error parsing configuration list: invalid cniVersion type {0}")]
    VersionType(&'static str),
    #[error("error parsing configuration list: invalid type for cniVersions: {0}")]
    VersionsType(&'static str),
    #[error("error parsing configuration list: invalid type for cniVersions index {index}: {kind}")]
    VersionsEntryType { index: usize, kind: &'static str },
    #[error(
        "error parsing configuration list: invalid cniVersions entry {value} at index {index}: {why}"
    )]
    VersionsEntry {
        index: usize,
        value: String,
        why: String,
    },
    #[error("error parsing configuration list: invalid cniVersion {value}: {why}")]
    VersionInvalid { value: String, why: String },
    #[error("error parsing configuration list: invalid {key} type {kind}")]
    BoolType {
        key: &'static str,
        kind: &'static str,
    },
    #[error("error parsing configuration list: invalid value {value:?} for {key}")]
    BoolValue { key: &'static str, value: String },
    #[error("error parsing configuration list: no 'plugins' key")]
    NoPluginsKey,
    #[error(
        "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key"
    )]
    InlinedWithoutPlugins,
    #[error("error parsing configuration list: invalid 'plugins' type {0}")]
    PluginsType(&'static str),
    #[error("error parsing configuration list: no plugins in list")]
    PluginsEmpty,
    #[error("failed to parse plugin config {index}: {error}")]
    Plugin { index: usize, error: PluginError },
    /// A `.conf`/`.json`: `ConfFromFile`.
    #[error("{0}")]
    Conf(PluginError),
    /// A `.conf`/`.json` that `ConfFromFile` read, refused by `ConfListFromConf`'s decode into
    /// a map.
    #[error("failed to convert CNI config file to CNI config list: {0}")]
    ConfMap(GoJsonError),
    /// ... or by its re-marshalled plugin.
    #[error(
        "failed to convert CNI config file to CNI config list: failed to parse plugin config 0: {0}"
    )]
    ConfPlugin(PluginError),
    /// 1.3.0: listing `<dir>/<name>` failed (not "does not exist").
    #[error("failed to read plugin config files in {path}: {kind}")]
    Subdir { path: String, kind: ErrorKind },
    /// 1.3.0: a `<dir>/<name>/*.conf` file.
    #[error("plugin config file {}: {error}", String::from_utf8_lossy(.file))]
    SubdirPlugin {
        file: Vec<u8>,
        error: Box<LoadError>,
    },
    /// 1.3.0: no plugin inline and none in the subdirectory.
    #[error("no plugin configs found")]
    NoPluginConfigs,
}

/// Why a plugin's configuration does not load (`ConfFromBytes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("error parsing configuration: {0}")]
    Json(GoJsonError),
    #[error("error parsing configuration: {0}")]
    Decode(NetConfError),
    #[error("error parsing configuration: missing 'type'")]
    MissingType,
}

/// What this model cannot judge; the installer is then not ready, for this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("{} is {size} bytes, larger than is read to judge it", String::from_utf8_lossy(.file))]
    TooLarge { file: Vec<u8>, size: u64 },
    #[error("{} is not a regular file (not read)", String::from_utf8_lossy(.file))]
    NotRegular { file: Vec<u8> },
    #[error("{why}")]
    Unseen { why: String },
    #[error("libcni 1.3.0 looks for plugins in the subdirectory {path:?}, which was not listed")]
    SubdirNotRead { path: String },
    #[error("libcni 1.3.0 looks for plugins in <dir>/{name:?}, outside the directory listed")]
    SubdirOutside { name: String },
    #[error(
        "cniVersions holds {spellings:?} for the same version; which one libcni picks depends on its sort"
    )]
    VersionTie { spellings: Vec<String> },
}

/// A file libcni lists, and how each libcni version loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
    /// Its position in the listing given to [`view`].
    pub index: usize,
    pub name: Vec<u8>,
    /// `.conflist` (a list) or `.conf`/`.json` (one plugin).
    pub is_list: bool,
    pub v1_1_2: Load,
    pub v1_3_0: Load,
}

/// A file's verdict across the two libcni versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Both load it, with the same name and chain. The versions may differ (1.3.0 reads
    /// `cniVersions`): a plugin must serve both.
    Loads {
        v1_1_2: &'a Network,
        v1_3_0: &'a Network,
    },
    /// Neither loads it.
    Fails {
        v1_1_2: &'a LoadError,
        v1_3_0: &'a LoadError,
    },
    /// One loads it and the other does not, or their chains differ.
    Disagree {
        why: &'static str,
        v1_1_2: &'a Load,
        v1_3_0: &'a Load,
    },
    Unknown(&'a Unknown),
}

impl FileView {
    pub fn load(&self, lib: Libcni) -> &Load {
        match lib {
            Libcni::V1_1_2 => &self.v1_1_2,
            Libcni::V1_3_0 => &self.v1_3_0,
        }
    }

    pub fn verdict(&self) -> Verdict<'_> {
        let (a, b) = (&self.v1_1_2, &self.v1_3_0);
        match (a, b) {
            (Load::Unknown(u), _) | (_, Load::Unknown(u)) => Verdict::Unknown(u),
            (Load::Fails(x), Load::Fails(y)) => Verdict::Fails {
                v1_1_2: x,
                v1_3_0: y,
            },
            (Load::Loads(x), Load::Loads(y)) if x.name == y.name && x.plugins == y.plugins => {
                Verdict::Loads {
                    v1_1_2: x,
                    v1_3_0: y,
                }
            }
            (Load::Loads(_), Load::Loads(_)) => Verdict::Disagree {
                why: "libcni 1.3.0 runs another chain (plugins from the network's subdirectory)",
                v1_1_2: a,
                v1_3_0: b,
            },
            (Load::Loads(_), Load::Fails(_)) => Verdict::Disagree {
                why: "libcni 1.1.2 loads it and 1.3.0 does not",
                v1_1_2: a,
                v1_3_0: b,
            },
            (Load::Fails(_), Load::Loads(_)) => Verdict::Disagree {
                why: "libcni 1.3.0 loads it and 1.1.2 does not",
                v1_1_2: a,
                v1_3_0: b,
            },
        }
    }
}

/// The files of a configuration directory as libcni lists them, in the runtimes' order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirView {
    pub files: Vec<FileView>,
}

/// Why a runtime passes over a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip<'a> {
    Fails(&'a LoadError),
    /// CRI-O: `ValidateNetworkList` refused the loaded chain.
    Invalid(String),
}

/// The file a runtime uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    Uses {
        file: &'a FileView,
        network: &'a Network,
        /// Files before it that CRI-O passed over.
        skipped: Vec<(&'a FileView, Skip<'a>)>,
    },
    /// No network: no file, or (containerd) the first does not load, or (CRI-O) none does.
    NoNetwork {
        skipped: Vec<(&'a FileView, Skip<'a>)>,
    },
    /// The runtime's choice depends on a file this model cannot judge.
    Unknown {
        file: &'a FileView,
        why: &'a Unknown,
    },
}

/// The primary network across the runtimes and libcni versions modelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary<'a> {
    /// Every runtime, under either libcni, uses this file with the same chain.
    Agreed {
        file: &'a FileView,
        v1_1_2: &'a Network,
        v1_3_0: &'a Network,
    },
    /// None has a network.
    NoNetwork,
    /// They choose differently, or a choice cannot be judged: each one, to report.
    Unsure {
        choices: Vec<(Runtime, Libcni, Choice<'a>)>,
    },
}

/// The extensions libcni's callers list (`ConfFiles(dir, [".conf", ".conflist", ".json"])`).
const EXTENSIONS: [&[u8]; 3] = [b".conf", b".conflist", b".json"];

/// `filepath.Ext`: from the last dot of the last path element; empty without one.
fn ext(name: &[u8]) -> &[u8] {
    for (i, &c) in name.iter().enumerate().rev() {
        match c {
            b'/' => break,
            b'.' => return &name[i..],
            _ => {}
        }
    }
    b""
}

/// `ConfFiles(dir, exts)` in `sort.Strings` order: entries that are not directories by
/// lstat, whose extension is exactly one of `exts`, bytewise by name (the paths share the
/// directory's prefix). os.ReadDir's own order is also by name, for the 1.3.0 subdirectory.
fn conf_files<'e>(listing: &'e [Entry], exts: &[&[u8]]) -> Vec<(usize, &'e Entry)> {
    let mut files: Vec<(usize, &Entry)> = listing
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.is_dir && exts.contains(&ext(&e.name)))
        .collect();
    files.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    files
}

/// The directory as libcni sees it: every file the runtimes list, loaded by both versions.
pub fn view(listing: &[Entry]) -> DirView {
    let files = conf_files(listing, &EXTENSIONS)
        .into_iter()
        .map(|(index, e)| {
            let is_list = ext(&e.name) == b".conflist";
            let load = |lib| match &e.file {
                FileRead::Bytes(bytes) if is_list => load_list(bytes, listing, lib),
                FileRead::Bytes(bytes) => load_conf(bytes, lib),
                FileRead::TooLarge { size } => Load::Unknown(Unknown::TooLarge {
                    file: e.name.clone(),
                    size: *size,
                }),
                FileRead::NotRegular => Load::Unknown(Unknown::NotRegular {
                    file: e.name.clone(),
                }),
                FileRead::Unseen(why) => Load::Unknown(Unknown::Unseen { why: why.clone() }),
                FileRead::Error(kind) => Load::Fails(LoadError::Read(*kind)),
            };
            FileView {
                index,
                name: e.name.clone(),
                is_list,
                v1_1_2: load(Libcni::V1_1_2),
                v1_3_0: load(Libcni::V1_3_0),
            }
        })
        .collect();
    DirView { files }
}

impl DirView {
    /// The file `runtime` with `lib` uses. `validate(type, version)` is CRI-O's
    /// `ValidateNetworkList` for one plugin: whether the binary `type` exists in the plugin
    /// directory and lists `version` (never empty: libcni asks an empty version as "0.1.0")
    /// among its `VERSION` output's supported versions, exactly as strings. The caller runs
    /// the binaries, or answers from what it knows; containerd does not validate.
    pub fn choice(
        &self,
        runtime: Runtime,
        lib: Libcni,
        validate: &dyn Fn(&str, &str) -> Result<(), String>,
    ) -> Choice<'_> {
        let mut skipped = Vec::new();
        for file in &self.files {
            match file.load(lib) {
                Load::Unknown(why) => return Choice::Unknown { file, why },
                Load::Loads(network) => {
                    if runtime == Runtime::CriO
                        && let Err(e) = validate_list(network, validate)
                    {
                        skipped.push((file, Skip::Invalid(e)));
                        continue;
                    }
                    return Choice::Uses {
                        file,
                        network,
                        skipped,
                    };
                }
                Load::Fails(e) => {
                    skipped.push((file, Skip::Fails(e)));
                    // go-cni returns the first file's error: no network, no fallback.
                    if runtime == Runtime::Containerd {
                        break;
                    }
                }
            }
        }
        Choice::NoNetwork { skipped }
    }

    /// The file every modelled runtime uses under either libcni, if they agree.
    pub fn primary(&self, validate: &dyn Fn(&str, &str) -> Result<(), String>) -> Primary<'_> {
        let choices: Vec<(Runtime, Libcni, Choice<'_>)> = [Runtime::Containerd, Runtime::CriO]
            .into_iter()
            .flat_map(|r| Libcni::ALL.map(|l| (r, l)))
            .map(|(r, l)| (r, l, self.choice(r, l, validate)))
            .collect();
        if choices
            .iter()
            .all(|(_, _, c)| matches!(c, Choice::NoNetwork { .. }))
        {
            return Primary::NoNetwork;
        }
        let first = match choices.first() {
            Some((_, _, Choice::Uses { file, .. })) => Some(file.index),
            _ => None,
        };
        let same = choices
            .iter()
            .all(|(_, _, c)| matches!(c, Choice::Uses { file, .. } if Some(file.index) == first));
        if same
            && let Some(file) = self.files.iter().find(|f| Some(f.index) == first)
            && let Verdict::Loads { v1_1_2, v1_3_0 } = file.verdict()
        {
            return Primary::Agreed {
                file,
                v1_1_2,
                v1_3_0,
            };
        }
        Primary::Unsure { choices }
    }
}

/// `ValidateNetworkList`: every plugin, with the list's version ("0.1.0" when empty); the
/// errors of all of them.
fn validate_list(
    network: &Network,
    validate: &dyn Fn(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    let errors: Vec<String> = network
        .plugins
        .iter()
        .filter_map(|p| validate(&p.plugin_type, network.spec_version()).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("[{}]", errors.join(" ")))
    }
}

/// Go's `%T` of a value decoded into an `interface{}`.
fn go_type(n: &Node) -> &'static str {
    match n {
        Node::Null => "<nil>",
        Node::Bool(_) => "bool",
        Node::Number(_) => "float64",
        Node::String(_) => "string",
        Node::Array(_) => "[]interface {}",
        Node::Object(_) => "map[string]interface {}",
    }
}

/// `rawList[key]` of a decoded `map[string]interface{}`: the last member with that exact key.
fn get<'n>(members: &'n [(String, Node)], key: &str) -> Option<&'n Node> {
    members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A plugin of a list: `json.Marshal` of the decoded element, then `ConfFromBytes`.
fn list_plugin(elem: &Node, lib: Libcni) -> Result<Plugin, PluginError> {
    let conf = gojson::net_conf(elem, KeyOrder::Marshalled, lib.plugin_struct())
        .map_err(PluginError::Decode)?;
    if conf.plugin_type.is_empty() {
        return Err(PluginError::MissingType);
    }
    Ok(Plugin {
        plugin_type: conf.plugin_type,
        from_file: None,
    })
}

/// `ConfListFromBytes` (1.1.2) / `NetworkConfFromBytes` (1.3.0): the network and whether
/// 1.3.0 goes on to the subdirectory (`loadOnlyInlinedPlugins` false).
fn list_from_bytes(
    bytes: &[u8],
    lib: Libcni,
) -> Result<(Network, bool), Result<LoadError, Unknown>> {
    let fail = |e| Err(Ok(e));
    let doc = gojson::parse(bytes).map_err(|e| Ok(LoadError::Json(e)))?;
    // json.Unmarshal into map[string]interface{}: an object (every number converted) or null.
    let empty = Vec::new();
    let members = match &doc {
        Node::Object(m) => {
            gojson::numbers_fit(&doc).map_err(|e| Ok(LoadError::Json(e)))?;
            m
        }
        Node::Null => &empty,
        other => return fail(LoadError::ListNotAnObject(other.kind())),
    };
    let name = match get(members, "name") {
        None => return fail(LoadError::NoName),
        Some(Node::String(s)) => s.clone(),
        Some(other) => return fail(LoadError::NameType(go_type(other))),
    };
    let mut cni_version = match get(members, "cniVersion") {
        None => String::new(),
        Some(Node::String(s)) => s.clone(),
        Some(other) => return fail(LoadError::VersionType(go_type(other))),
    };
    let mut only_inlined = false;
    match lib {
        Libcni::V1_1_2 => {
            if let Some(v) = get(members, "disableCheck")
                && !matches!(v, Node::Bool(_))
            {
                return fail(LoadError::BoolType {
                    key: "disableCheck",
                    kind: go_type(v),
                });
            }
        }
        Libcni::V1_3_0 => {
            if let Some(v) = get(members, "cniVersions") {
                cni_version = versions(v, cni_version, lib)?;
            }
            for key in ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] {
                let b = read_bool(members, key).map_err(Ok)?;
                if key == "loadOnlyInlinedPlugins" {
                    only_inlined = b;
                }
            }
        }
    }
    let mut network = Network {
        name,
        cni_version,
        plugins: Vec::new(),
    };
    let items = match get(members, "plugins") {
        None => {
            return match lib {
                Libcni::V1_1_2 => fail(LoadError::NoPluginsKey),
                Libcni::V1_3_0 if only_inlined => fail(LoadError::InlinedWithoutPlugins),
                Libcni::V1_3_0 => Ok((network, true)),
            };
        }
        Some(Node::Array(items)) => items,
        Some(other) => return fail(LoadError::PluginsType(go_type(other))),
    };
    if items.is_empty() {
        return fail(LoadError::PluginsEmpty);
    }
    for (index, elem) in items.iter().enumerate() {
        let p = list_plugin(elem, lib).map_err(|error| Ok(LoadError::Plugin { index, error }))?;
        network.plugins.push(p);
    }
    Ok((network, lib == Libcni::V1_3_0 && !only_inlined))
}

/// 1.3.0's `readBool`: absent is false; a bool; or a string that lower-cases to "true" or
/// "false" (`strings.ToLower` maps no non-ASCII letter onto those letters).
fn read_bool(members: &[(String, Node)], key: &'static str) -> Result<bool, LoadError> {
    match get(members, key) {
        None => Ok(false),
        Some(Node::Bool(b)) => Ok(*b),
        Some(Node::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Node::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(Node::String(s)) => Err(LoadError::BoolValue {
            key,
            value: s.clone(),
        }),
        Some(other) => Err(LoadError::BoolType {
            key,
            kind: go_type(other),
        }),
    }
}

type Version = (i64, i64, i64);

/// pkg/version `ParseVersion`: "" is 0.1.0; at most three dot-separated parts, each
/// `strconv.Atoi` (an optional sign, decimal digits, 64-bit; Rust's `i64` parse is the same
/// grammar); missing parts are 0.
fn parse_version(v: &str) -> Result<Version, String> {
    if v.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() >= 4 {
        return Err(format!("invalid version {v:?}: too many parts"));
    }
    let mut out = [0i64; 3];
    for (i, (p, what)) in parts.iter().zip(["major", "minor", "micro"]).enumerate() {
        out[i] = p
            .parse()
            .map_err(|_| format!("failed to convert {what} version part {p:?}"))?;
    }
    Ok((out[0], out[1], out[2]))
}

/// 1.3.0's `cniVersions`: the highest listed version not above `version.Current()`, with
/// `cniVersion` among them; `cniVersion` unchanged when none qualifies.
fn versions(
    v: &Node,
    cni_version: String,
    lib: Libcni,
) -> Result<String, Result<LoadError, Unknown>> {
    let Node::Array(items) = v else {
        // Go prints the type of its failed conversion's (nil) result.
        return Err(Ok(LoadError::VersionsType("[]interface {}")));
    };
    let current = lib.current();
    let mut vs: Vec<(Version, &str)> = Vec::new();
    for (index, rv) in items.iter().enumerate() {
        let Node::String(s) = rv else {
            return Err(Ok(LoadError::VersionsEntryType {
                index,
                kind: go_type(rv),
            }));
        };
        let parsed = parse_version(s).map_err(|why| {
            Ok(LoadError::VersionsEntry {
                index,
                value: s.clone(),
                why,
            })
        })?;
        if parsed <= current {
            vs.push((parsed, s));
        }
    }
    if !cni_version.is_empty() {
        let parsed = parse_version(&cni_version).map_err(|why| {
            Ok(LoadError::VersionInvalid {
                value: cni_version.clone(),
                why,
            })
        })?;
        if parsed <= current {
            vs.push((parsed, &cni_version));
        }
    }
    match highest(&vs) {
        Ok(Some(s)) => Ok(s.to_string()),
        Ok(None) => Ok(cni_version),
        Err(spellings) => Err(Err(Unknown::VersionTie { spellings })),
    }
}

/// The last element after `slices.SortFunc(vs, cmp)` with libcni's comparator (0 for the same
/// string, 1 when greater, else -1: two spellings of one version are each "less" than the
/// other). With one spelling of the highest version, any sort leaves it last. With several,
/// Go's pdqsort decides: up to 12 elements it is an insertion sort, done here; above, the
/// answer is refused.
fn highest<'s>(vs: &[(Version, &'s str)]) -> Result<Option<&'s str>, Vec<String>> {
    let Some(top) = vs.iter().map(|(v, _)| *v).max() else {
        return Ok(None);
    };
    let mut spellings: Vec<&str> = vs
        .iter()
        .filter(|(v, _)| *v == top)
        .map(|(_, s)| *s)
        .collect();
    spellings.dedup();
    spellings.sort_unstable();
    spellings.dedup();
    if spellings.len() == 1 {
        return Ok(Some(spellings[0]));
    }
    if vs.len() > 12 {
        return Err(spellings.into_iter().map(str::to_string).collect());
    }
    let cmp = |a: &(Version, &str), b: &(Version, &str)| -> i8 {
        if a.1 == b.1 {
            0
        } else if a.0 > b.0 {
            1
        } else {
            -1
        }
    };
    let mut data = vs.to_vec();
    for i in 1..data.len() {
        let mut j = i;
        while j > 0 && cmp(&data[j], &data[j - 1]) < 0 {
            data.swap(j, j - 1);
            j -= 1;
        }
    }
    Ok(data.last().map(|(_, s)| *s))
}

/// A `.conflist`: `ConfListFromFile`, which in 1.3.0 is `NetworkConfFromFile`.
fn load_list(bytes: &[u8], listing: &[Entry], lib: Libcni) -> Load {
    let (mut network, subdir) = match list_from_bytes(bytes, lib) {
        Ok(x) => x,
        Err(Ok(e)) => return Load::Fails(e),
        Err(Err(u)) => return Load::Unknown(u),
    };
    if subdir {
        match subdir_plugins(&network.name, listing, lib) {
            Ok(more) => network.plugins.extend(more),
            Err(Ok(e)) => return Load::Fails(e),
            Err(Err(u)) => return Load::Unknown(u),
        }
        if network.plugins.is_empty() {
            return Load::Fails(LoadError::NoPluginConfigs);
        }
    }
    Load::Loads(network)
}

/// 1.3.0's `NetworkPluginConfsFromFiles(dir, name)`: `ConfFiles(filepath.Join(dir, name),
/// [".conf"])`, each file through `NetworkPluginConfFromBytes`. Join cleans lexically: an
/// empty name, "." or "x/.." is the directory itself, whose listing is at hand; a plain name
/// is that entry; anything else (deeper, or above the directory) is not judged.
fn subdir_plugins(
    name: &str,
    listing: &[Entry],
    lib: Libcni,
) -> Result<Vec<Plugin>, Result<LoadError, Unknown>> {
    if name.contains('\0') {
        // syscall.ByteSliceFromString: EINVAL, which is not "does not exist".
        return Err(Ok(LoadError::Subdir {
            path: name.to_string(),
            kind: ErrorKind::InvalidInput,
        }));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Err(Unknown::SubdirOutside {
                        name: name.to_string(),
                    }));
                }
            }
            p => parts.push(p),
        }
    }
    let entries: &[Entry] = match parts.as_slice() {
        [] => listing,
        [one] => match listing.iter().find(|e| e.name == one.as_bytes()) {
            None => return Ok(Vec::new()),
            Some(e) => match &e.dir {
                DirRead::Entries(entries) => entries,
                DirRead::Error(ErrorKind::NotFound) => return Ok(Vec::new()),
                DirRead::Error(kind) => {
                    return Err(Ok(LoadError::Subdir {
                        path: name.to_string(),
                        kind: *kind,
                    }));
                }
                DirRead::NotRead => {
                    return Err(Err(Unknown::SubdirNotRead {
                        path: name.to_string(),
                    }));
                }
            },
        },
        _ => {
            return Err(Err(Unknown::SubdirOutside {
                name: name.to_string(),
            }));
        }
    };
    let mut plugins = Vec::new();
    for (_, e) in conf_files(entries, &[b".conf"]) {
        let in_file = |error| {
            Err(Ok(LoadError::SubdirPlugin {
                file: e.name.clone(),
                error: Box::new(error),
            }))
        };
        let bytes = match &e.file {
            FileRead::Bytes(b) => b,
            FileRead::Error(kind) => return in_file(LoadError::Read(*kind)),
            FileRead::TooLarge { size } => {
                return Err(Err(Unknown::TooLarge {
                    file: e.name.clone(),
                    size: *size,
                }));
            }
            FileRead::NotRegular => {
                return Err(Err(Unknown::NotRegular {
                    file: e.name.clone(),
                }));
            }
            FileRead::Unseen(why) => return Err(Err(Unknown::Unseen { why: why.clone() })),
        };
        match conf_from_bytes(bytes, lib) {
            Ok((conf, _)) => plugins.push(Plugin {
                plugin_type: conf.plugin_type,
                from_file: Some(e.name.clone()),
            }),
            Err(error) => return in_file(LoadError::Conf(error)),
        }
    }
    Ok(plugins)
}

/// `ConfFromBytes` / `NetworkPluginConfFromBytes`: the document's own key order.
fn conf_from_bytes(bytes: &[u8], lib: Libcni) -> Result<(gojson::NetConf, Node), PluginError> {
    let doc = gojson::parse(bytes).map_err(PluginError::Json)?;
    let conf = gojson::net_conf(&doc, KeyOrder::Document, lib.plugin_struct())
        .map_err(PluginError::Decode)?;
    if conf.plugin_type.is_empty() {
        return Err(PluginError::MissingType);
    }
    Ok((conf, doc))
}

/// A `.conf` or `.json`: `ConfFromFile` (go-cni) or `NetworkPluginConfFromBytes` (ocicni), a
/// `type` required, then `ConfListFromConf`: the file decoded into a map (every number
/// converted), re-marshalled as the only plugin of a list named and versioned by the
/// struct's `name` and `cniVersion`, and loaded by `ConfListFromBytes` (not from a file, so
/// 1.3.0 reads no subdirectory for it). The plugin run is the re-marshalled one's `type`.
fn load_conf(bytes: &[u8], lib: Libcni) -> Load {
    let (conf, doc) = match conf_from_bytes(bytes, lib) {
        Ok(x) => x,
        Err(e) => return Load::Fails(LoadError::Conf(e)),
    };
    if let Err(e) = gojson::numbers_fit(&doc) {
        return Load::Fails(LoadError::ConfMap(e));
    }
    match list_plugin(&doc, lib) {
        Ok(plugin) => Load::Loads(Network {
            name: conf.name,
            cni_version: conf.cni_version,
            plugins: vec![plugin],
        }),
        Err(error) => Load::Fails(LoadError::ConfPlugin(error)),
    }
}

#[cfg(test)]
mod tests;
