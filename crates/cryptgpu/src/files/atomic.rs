//! Atomic output files: written beside their destination under a temporary name, synced,
//! then renamed over it, so a reader sees the old file or the whole new one, never a part.
//!
//! Every temporary file being written is recorded in a process-wide registry, so that
//! [`remove_partial_files`], called from the Ctrl-C handler before the process exits, can
//! delete them and an interrupted run leaves no partial file behind.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// The temporary files being written, and whether the process is exiting.
struct Registry {
    /// Set by [`remove_partial_files`]: no new temporary file may be created after it.
    closed: bool,
    /// Temporary files created and not yet renamed or removed.
    partial: Vec<PathBuf>,
}

/// The process-wide registry of temporary files. It is locked only around single file
/// system calls (create, rename, remove), never while a caller's writer runs.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    closed: false,
    partial: Vec::new(),
});

/// Makes temporary names unique within the process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The registry, also when a thread panicked while holding it (its state stays valid: each
/// update is a single push or removal).
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `path` atomically: `write` fills a temporary file in the same directory
/// (`.{file_name}.partial-{pid}-{n}`), which is flushed, synced to disk and renamed over
/// `path`.
///
/// On any error (from `write`, the disk, or an interruption by [`remove_partial_files`])
/// the temporary file is removed and `path` is left as it was, absent or with its old
/// contents; the error names `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    write_atomically_as(path, false, write)
}

/// [`write_atomically`], the file readable and writable by its owner only (mode 0600 on
/// Unix, from its creation on): for private keys.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_as(path, true, |out| out.write_all(bytes))
}

/// [`write_atomically`] to a file readable and writable by its owner only (mode 0600 on
/// Unix): for a server's shares of an uploaded model, say.
pub fn write_private_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    write_atomically_as(path, true, write)
}

fn write_atomically_as(
    path: &Path,
    private: bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("cannot write {}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".partial-{}-{n}", std::process::id()));
    let temp = dir.join(temp_name);

    let file = create_registered(&temp, private).with_context(|| {
        format!(
            "cannot write {}: cannot create the temporary file {}",
            path.display(),
            temp.display()
        )
    })?;
    let filled = fill(file, write);
    finish(&temp, path, filled).with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`write_atomically`]).
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |out| out.write_all(bytes))
}

/// Removes every temporary file that [`write_atomically`] is writing, and makes any later
/// or unfinished atomic write fail instead of leaving a file behind: called when the
/// process is about to exit (the Ctrl-C handler).
///
/// Best effort: it never panics, tolerates a poisoned lock, ignores files that cannot be
/// removed, and gives up after about half a second if the registry stays locked.
pub fn remove_partial_files() {
    remove_registered(true, |_| true);
}

/// Removes the registered temporary files that `select` picks; `close` also refuses new
/// temporary files from now on. Waits at most about 500 ms for the registry.
fn remove_registered(close: bool, select: impl Fn(&Path) -> bool) {
    let mut guard = None;
    for _ in 0..500 {
        match REGISTRY.try_lock() {
            Ok(locked) => guard = Some(locked),
            Err(TryLockError::Poisoned(poisoned)) => guard = Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        break;
    }
    let Some(mut registry) = guard else {
        return;
    };
    if close {
        registry.closed = true;
    }
    registry.partial.retain(|temp| {
        if select(temp) {
            let _ = fs::remove_file(temp);
            false
        } else {
            true
        }
    });
}

/// Creates `temp` (which must not exist) and registers it, both under the registry lock,
/// so that [`remove_partial_files`] either sees the file or runs before it exists and
/// then refuses it.
fn create_registered(temp: &Path, private: bool) -> io::Result<File> {
    let mut registry = registry();
    if registry.closed {
        return Err(interrupted());
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let file = options.open(temp)?;
    registry.partial.push(temp.to_owned());
    Ok(file)
}

/// Runs the caller's writer on `file` through a buffer, then flushes and syncs it.
fn fill(file: File, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    out.flush()?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Renames `temp` over `path` if it was filled and the process is not exiting, else
/// removes it; unregisters it either way.
fn finish(temp: &Path, path: &Path, filled: io::Result<()>) -> io::Result<()> {
    let mut registry = registry();
    let result = filled.and_then(|()| {
        if registry.closed {
            Err(interrupted())
        } else {
            fs::rename(temp, path)
        }
    });
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    registry.partial.retain(|p| p != temp);
    result
}

/// The error of a write cut short because the process is exiting.
fn interrupted() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "interrupted: the process is exiting",
    )
}

/// Syncs the directory so the rename itself survives a crash (best effort; Unix only,
/// elsewhere directories cannot be opened this way).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::test_dir;

    /// The `.partial` files left in `dir`.
    fn partial_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".partial"))
            .collect()
    }

    fn is_registered(temp_prefix: &str) -> bool {
        registry().partial.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(temp_prefix))
        })
    }

    #[test]
    fn writes_a_new_file_and_replaces_an_old_one() {
        let dir = test_dir("atomic-new");
        let path = dir.join("out.txt");
        write_bytes_atomically(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomically(&path, |out| {
            out.write_all(b"second")?;
            out.write_all(b" line")
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second line");
        assert!(partial_files(&dir).is_empty());
        assert!(!is_registered(".out.txt.partial"));
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_partial_file() {
        let dir = test_dir("atomic-fail");
        let path = dir.join("keep.csv");
        fs::write(&path, "old contents").unwrap();
        let err = write_atomically(&path, |out| {
            out.write_all(b"half of the new")?;
            Err(io::Error::other("the writer failed"))
        })
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("keep.csv"), "{message}");
        assert!(message.contains("the writer failed"), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old contents");
        assert!(partial_files(&dir).is_empty());
        assert!(!is_registered(".keep.csv.partial"));

        // No old file: none is created.
        let fresh = dir.join("fresh.csv");
        assert!(write_atomically(&fresh, |_| Err(io::Error::other("no"))).is_err());
        assert!(!fresh.exists());
        assert!(partial_files(&dir).is_empty());
    }

    #[test]
    fn the_temporary_file_sits_beside_the_target_while_writing() {
        let dir = test_dir("atomic-beside");
        let path = dir.join("p.json");
        write_atomically(&path, |out| {
            let partial = partial_files(&dir);
            assert_eq!(partial.len(), 1, "{partial:?}");
            let prefix = format!(".p.json.partial-{}-", std::process::id());
            assert!(partial[0].starts_with(&prefix), "{partial:?}");
            assert!(is_registered(".p.json.partial"));
            out.write_all(b"[]")
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[]");
    }

    #[test]
    fn removing_partial_files_mid_write_fails_the_write_cleanly() {
        let dir = test_dir("atomic-interrupt");
        let path = dir.join("big.npy");
        fs::write(&path, "previous").unwrap();
        let dir_for_select = dir.clone();
        let err = write_atomically(&path, |out| {
            out.write_all(b"partial data")?;
            // What the Ctrl-C handler does, limited to this test's directory so that
            // tests running beside it keep their files.
            remove_registered(false, |p| p.starts_with(&dir_for_select));
            assert!(partial_files(&dir_for_select).is_empty());
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("big.npy"), "{err:#}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "previous");
        assert!(partial_files(&dir).is_empty());
        assert!(!is_registered(".big.npy.partial"));
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = test_dir("atomic-missing");
        let path = dir.join("no such dir").join("out.csv");
        let err = write_bytes_atomically(&path, b"x").unwrap_err();
        assert!(format!("{err:#}").contains("out.csv"), "{err:#}");
        assert!(write_bytes_atomically(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn a_poisoned_registry_is_tolerated() {
        // Poison the lock from a panicking thread, then write and clean up as usual.
        let _ = thread::spawn(|| {
            let _guard = registry();
            panic!("poison the registry on purpose");
        })
        .join();
        let dir = test_dir("atomic-poison");
        let path = dir.join("after.txt");
        write_bytes_atomically(&path, b"ok").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ok");
        remove_registered(false, |p| p.starts_with(&dir));
    }
}
