//! An export's files on disk. Each is written under a temporary name of its own run,
//! `.NAME.PID.RANDOM.tmp` beside its final name (so two writers never write into one file),
//! fsynced, and renamed into place only when the caller says so (after it checked that it
//! still holds its lock). Temporary files that dead runs left are removed here. Knows nothing
//! of Redis or GraphQL.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file written under its temporary name, not yet in place; removed when dropped unpublished.
#[derive(Debug)]
pub struct Staged {
    temp: Option<PathBuf>,
    path: PathBuf,
}

impl Staged {
    /// Writes `bytes` under a fresh temporary name beside `path` and fsyncs them.
    pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<Staged> {
        if let Some(dir) = parent(path) {
            std::fs::create_dir_all(dir)?;
        }
        let temp = temp_path(path);
        let mut file = File::options().write(true).create_new(true).open(&temp)?;
        let staged = Staged { temp: Some(temp), path: path.to_path_buf() };
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(staged)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file into place and fsyncs its directory.
    pub fn publish(mut self) -> std::io::Result<()> {
        if let Some(temp) = &self.temp {
            std::fs::rename(temp, &self.path)?;
            self.temp = None;
        }
        File::open(parent(&self.path).unwrap_or(Path::new(".")))?.sync_all()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

/// `.NAME.PID.RANDOM.tmp` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut random = [0u8; 8];
    // Without randomness the time's nanoseconds still tell two runs of one process apart.
    if getrandom::fill(&mut random).is_err() {
        random = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default().to_le_bytes();
    }
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    path.with_file_name(format!(".{name}.{}.{random}.tmp", std::process::id()))
}

/// Whose temporary files [`remove_stale`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Every one of the file: the caller holds the lock of the file's export period, so no
    /// other run writes it now (on any host).
    All,
    /// Those of processes no longer running on this host (ad-hoc exports take no lock).
    OfDeadProcesses,
}

/// Removes the temporary files of `path` that dead runs left (and those of the older fixed
/// name, `.NAME.tmp`), and says how many.
pub fn remove_stale(path: &Path, which: Stale) -> std::io::Result<usize> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return Ok(0) };
    let dir = parent(path).unwrap_or(Path::new("."));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(middle) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.strip_suffix("tmp"))
        else {
            continue;
        };
        // `PID.RANDOM.`, or empty for the older fixed name; anything else is another file's
        // (`.NAME.manifest.json.PID.RANDOM.tmp` is the manifest's).
        let pid = if middle.is_empty() {
            None
        } else {
            let Some((pid, random)) = middle.strip_suffix('.').and_then(|m| m.split_once('.')) else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            Some(pid)
        };
        let stale = match which {
            Stale::All => true,
            Stale::OfDeadProcesses => {
                pid.is_none_or(|pid| pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists())
            }
        };
        if stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn each_write_has_a_temporary_name_of_its_own_and_publishes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/x_2026-01-01.csv");
        let first = Staged::write(&path, b"first").unwrap();
        let second = Staged::write(&path, b"second").unwrap();
        let temps = names(&dir.path().join("out"));
        assert_eq!(temps.len(), 2, "{temps:?}");
        assert!(temps.iter().all(|n| n.starts_with(".x_2026-01-01.csv.") && n.ends_with(".tmp")), "{temps:?}");
        assert!(!path.exists(), "nothing is under the final name before it is published");
        drop(first);
        second.publish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names(&dir.path().join("out")), ["x_2026-01-01.csv"], "a dropped write leaves nothing");
    }

    #[test]
    fn stale_temporary_files_are_removed_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let live = Staged::write(&path, b"live").unwrap();
        // A process that cannot exist (above the kernel's pid limit), and the older fixed name.
        std::fs::write(dir.path().join(".x.csv.4194999.00ff.tmp"), b"dead").unwrap();
        std::fs::write(dir.path().join(".x.csv.tmp"), b"old").unwrap();
        std::fs::write(dir.path().join(".y.csv.4194999.00ff.tmp"), b"another file's").unwrap();
        std::fs::write(dir.path().join(".x.csv.manifest.json.4194999.00ff.tmp"), b"the manifest's").unwrap();
        assert_eq!(remove_stale(&path, Stale::OfDeadProcesses).unwrap(), 2);
        assert_eq!(names(dir.path()).len(), 3, "this process's and the other files' stay");
        assert_eq!(remove_stale(&path, Stale::All).unwrap(), 1);
        assert!(live.publish().is_err(), "a write whose temporary file was removed is not published");
        assert_eq!(names(dir.path()), [".x.csv.manifest.json.4194999.00ff.tmp", ".y.csv.4194999.00ff.tmp"]);
        assert_eq!(remove_stale(&dir.path().join("missing/x.csv"), Stale::All).unwrap(), 0);
    }
}
