//! File outputs written whole or not at all (annotated PNGs, the summary JSON): a full disk must not leave a
//! half-written file where a complete one is expected.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` whole or not at all: into a temporary file beside it (`.NAME.tmp`), renamed over
/// `path` once complete. A failed write removes the temporary file, so a full disk leaves nothing behind.
pub fn write_whole_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.flush()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        // The temporary file may not exist (create failed): nothing else to clean up.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_file_replaces_the_old_one_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        std::fs::write(&path, "old").unwrap();
        write_whole_file(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_leaves_no_file_behind() {
        // A path in a missing folder: the temporary file cannot be made, and nothing may appear.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("frame.png");
        assert!(write_whole_file(&path, b"png").is_err());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
