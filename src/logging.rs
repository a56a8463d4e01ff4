//! A small stderr logger: upstream's `--log_output_level` syntax picks the level and
//! `--log_as_json` switches to JSON lines. stdout is never written here; it is reserved
//! for dry-run output.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity, ordered from most to least verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
    None = 4,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::None => "none",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// Parses `info`, `default:info` or `all:debug,ads:warn`; the `default`/`all` scope (or a bare
/// level) decides, other scopes are accepted and ignored. `None` if any part is malformed.
pub fn parse_level(s: &str) -> Option<Level> {
    let mut chosen = Level::Info;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scope, level) = match part.split_once(':') {
            Some((scope, level)) => (scope, level),
            None => ("default", part),
        };
        if scope.is_empty() {
            return None;
        }
        let level = match level {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "fatal" => Level::Error,
            "none" => Level::None,
            _ => return None,
        };
        if scope == "default" || scope == "all" {
            chosen = level;
        }
    }
    Some(chosen)
}

/// Sets the level and format; call once from main.
pub fn init(level: Level, json: bool) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
}

thread_local! {
    /// A floor for this thread on top of the process's level (`quieter`).
    static FLOOR: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Runs `work` with this thread's records below `floor` left out: the node agent's drift
/// pass checks every pod every few seconds, and "the rules are in place" per pod per pass
/// would bury what matters. Threads a namespace entry spawns carry it over (`floor`).
pub fn quieter<T>(floor: Level, work: impl FnOnce() -> T) -> T {
    let old = FLOOR.with(|f| f.replace(floor as u8));
    let out = work();
    FLOOR.with(|f| f.set(old));
    out
}

/// This thread's floor, for a thread that works on its behalf (`quieter` there too).
pub fn floor() -> Level {
    match FLOOR.with(std::cell::Cell::get) {
        0 => Level::Debug,
        1 => Level::Info,
        2 => Level::Warn,
        3 => Level::Error,
        _ => Level::None,
    }
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
        && level as u8 >= FLOOR.with(std::cell::Cell::get)
        && level != Level::None
}

/// `c`, or its escape when it is a control character (`\n`, `\u{1b}`).
trait EscapeControls {
    fn escape_default_controls(self) -> EscapedChar;
}

/// A character as written in a text record.
enum EscapedChar {
    Plain(Option<char>),
    Escaped(std::char::EscapeDefault),
}

impl Iterator for EscapedChar {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            EscapedChar::Plain(c) => c.take(),
            EscapedChar::Escaped(e) => e.next(),
        }
    }
}

impl EscapeControls for char {
    fn escape_default_controls(self) -> EscapedChar {
        if self.is_control() && self != '\t' {
            EscapedChar::Escaped(self.escape_default())
        } else {
            EscapedChar::Plain(Some(self))
        }
    }
}

/// Writes one record to stderr.
pub fn log(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    let now = rfc3339(SystemTime::now());
    let line = if JSON.load(Ordering::Relaxed) {
        serde_json::json!({"time": now, "level": level.name(), "msg": msg}).to_string()
    } else {
        // One record, one line: a newline or other control character in a message (a file
        // name from a directory others write) cannot forge a record of its own.
        let msg: String = msg
            .chars()
            .flat_map(char::escape_default_controls)
            .collect();
        format!("{now}\t{}\t{msg}", level.name())
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
/// Debug record whose text is only built when debug logging is on.
pub fn debug_with(msg: impl FnOnce() -> String) {
    if enabled(Level::Debug) {
        log(Level::Debug, &msg())
    }
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// `2026-11-22T02:35:35.123456Z` without a date crate (civil-from-days, Howard Hinnant).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levels() {
        assert_eq!(parse_level("default:info"), Some(Level::Info));
        assert_eq!(parse_level("debug"), Some(Level::Debug));
        assert_eq!(parse_level("ads:debug,default:warn"), Some(Level::Warn));
        assert_eq!(parse_level("default:loud"), None);
    }

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.000000Z");
    }
}
