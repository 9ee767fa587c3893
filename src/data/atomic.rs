//! Atomic file replacement: write a hidden temp file in the target's folder, sync, rename.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp path beside `path`: `.NAME.tmp-PID-N`, hidden (so `*.png` globs skip it) and unique
/// per process and call (threads may write several files at once).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one:
/// the data goes to a temp file in the same folder, is synced, then renamed over `path`.
/// On failure the temp file is removed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if path.file_name().is_none() {
        return Err(Error::file(path, "not a file path"));
    }
    let tmp = temp_path(path);
    let result = write_synced(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            Error::file(
                path,
                format!("cannot move {} into place: {e}", tmp.display()),
            )
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_synced(tmp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        File::create(tmp).map_err(|e| Error::file(tmp, format!("cannot create: {e}")))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::file(tmp, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("medsyn-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
        // A missing folder is an error naming the temp file; nothing is left behind.
        let err = write_atomic(dir.join("missing/b.txt"), b"x").unwrap_err();
        assert!(err.message().contains("missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_paths_are_unique_and_hidden() {
        let a = temp_path(Path::new("/x/img.png"));
        let b = temp_path(Path::new("/x/img.png"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x")));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".img.png.tmp-"));
    }
}
