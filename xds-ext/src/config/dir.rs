//! A config directory as the store and the watcher see it: the files that
//! hold config, each with the stat of what it resolves to, and a warning for
//! every entry skipped that someone may have meant as config.
//!
//! Symlinks are followed (a mounted ConfigMap is `key -> ..data/key`, and
//! `..data` a symlink to a timestamped directory); dot-entries are skipped,
//! so that layout is read once, through the visible names. What cannot be
//! followed (a loop, a broken link), a directory named like a file, and
//! FIFOs, sockets or devices named like config are named in a warning and
//! never opened (reading a FIFO would block the load).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::problem::{Problem, Severity};

/// Deepest directory nesting read under a config directory.
pub const MAX_DIR_DEPTH: usize = 8;

/// What `stat` says about a file's content, through any symlinks: when
/// none of it changed, neither did the content (but see [`Stamp::is_racy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// A file changed this recently may change again within the same tick of
/// the file system's clock without its stamp changing (the "racy git"
/// problem): such a read is checked again by content. Linux file times move
/// in clock ticks of at most 10 ms; the watcher's debounce leaves 100 ms.
pub const RACY_WINDOW: Duration = Duration::from_millis(50);

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether a read at `read_at` may have missed a write in the same tick.
    /// ctime, unlike mtime, cannot be set back by the writer.
    pub fn is_racy(&self, read_at: SystemTime) -> bool {
        let changed = |(secs, nanos): (i64, i64)| {
            let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else { return None };
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        };
        let latest = changed(self.mtime).max(changed(self.ctime));
        match latest.map(|t| read_at.duration_since(t)) {
            Some(Ok(age)) => age < RACY_WINDOW,
            // In the future, or before the epoch: trust nothing.
            _ => true,
        }
    }
}

/// A config file found under the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The visible path (a ConfigMap key's symlink, not its target).
    pub path: PathBuf,
    pub stamp: Stamp,
}

/// One pass over a config directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Sorted by path.
    pub files: Vec<Found>,
    /// What was skipped, and why (warnings naming the path).
    pub skipped: Vec<Problem>,
}

/// Lists the config files (`*.yaml`, `*.yml`, `*.json`) under `dir`. An
/// error (a directory that cannot be listed, named in it) means the scan
/// is incomplete, so nothing it found can be trusted to be all there is.
pub fn scan(dir: &Path) -> Result<Scan, Problem> {
    let mut walk = Walk { scan: Scan::default(), seen: HashMap::new(), ancestors: Vec::new() };
    walk.dir(dir, 0)?;
    walk.scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(walk.scan)
}

pub fn is_config_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

struct Walk {
    scan: Scan,
    /// Every directory read, by (dev, inode): a second way into one is not read again.
    seen: HashMap<(u64, u64), PathBuf>,
    /// The directories being read, outermost first: a way back into one is a loop.
    ancestors: Vec<(u64, u64)>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, depth: usize) -> Result<(), Problem> {
        let listing = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot read directory: {e}")))?;
        let meta = std::fs::metadata(dir).map_err(|e| error(dir, format!("cannot read directory: {e}")))?;
        let id = (meta.dev(), meta.ino());
        self.seen.insert(id, dir.to_path_buf());
        self.ancestors.push(id);
        let mut entries: Vec<PathBuf> = listing.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            if !hidden {
                self.entry(path, depth)?;
            }
        }
        self.ancestors.pop();
        Ok(())
    }

    fn entry(&mut self, path: PathBuf, depth: usize) -> Result<(), Problem> {
        // Gone since the listing: the next change event brings the next scan.
        let Ok(link) = std::fs::symlink_metadata(&path) else { return Ok(()) };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if link.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
                let why = if e.raw_os_error() == Some(libc::ELOOP) {
                    format!("a symlink loop (-> {target}): skipped")
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    format!("a broken symlink (-> {target}, which does not exist): skipped")
                } else {
                    format!("cannot follow the symlink (-> {target}): {e}: skipped")
                };
                self.skip(&path, why);
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let id = (meta.dev(), meta.ino());
            if is_config_file(&path) {
                // `docker run -v ./missing.yaml:/config/x.yaml` makes such a directory.
                self.skip(&path, "a directory, not a file: the files inside it are read".into());
            }
            if self.ancestors.contains(&id) {
                let to = self.seen.get(&id).map(|p| p.display().to_string()).unwrap_or_default();
                self.skip(&path, format!("a symlink loop: it leads back to {to}: skipped"));
            } else if let Some(first) = self.seen.get(&id) {
                let first = first.display().to_string();
                self.skip(&path, format!("the same directory as {first}, which is read: skipped"));
            } else if depth >= MAX_DIR_DEPTH {
                self.skip(&path, format!("more than {MAX_DIR_DEPTH} directories deep: skipped"));
            } else {
                self.dir(&path, depth + 1)?;
            }
        } else if is_config_file(&path) {
            if kind.is_file() {
                self.scan.files.push(Found { path, stamp: Stamp::of(&meta) });
            } else {
                let what = if kind.is_fifo() {
                    "a FIFO"
                } else if kind.is_socket() {
                    "a socket"
                } else {
                    "a device"
                };
                self.skip(&path, format!("not a regular file ({what}): skipped"));
            }
        }
        Ok(())
    }

    fn skip(&mut self, path: &Path, message: String) {
        self.scan.skipped.push(Problem { severity: Severity::Warning, ..error(path, message) });
    }
}

fn error(path: &Path, message: String) -> Problem {
    Problem {
        file: path.to_path_buf(),
        line: 0,
        document: String::new(),
        field: String::new(),
        message,
        severity: Severity::Error,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn messages(scan: &Scan) -> Vec<String> {
        scan.skipped.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn what_cannot_be_read_as_config_is_named_in_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("good.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join("README.md"), "not config").unwrap();
        symlink("loop.yaml", root.join("loop.yaml")).unwrap();
        symlink("missing.yaml", root.join("broken.yaml")).unwrap();
        symlink(".", root.join("again")).unwrap();
        std::fs::create_dir(root.join("dir.yaml")).unwrap();
        std::fs::write(root.join("dir.yaml/inner.yaml"), "b: 2\n").unwrap();
        let fifo = std::ffi::CString::new(root.join("pipe.yaml").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path it is given.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let scan = scan(root).unwrap();
        let files: Vec<_> = scan.files.iter().map(|f| f.path.strip_prefix(root).unwrap().to_owned()).collect();
        assert_eq!(files, [PathBuf::from("dir.yaml/inner.yaml"), PathBuf::from("good.yaml")]);
        let shown = |name: &str| root.join(name).display().to_string();
        assert_eq!(
            messages(&scan),
            [
                format!("warning: {}: a symlink loop: it leads back to {}: skipped", shown("again"), root.display()),
                format!(
                    "warning: {}: a broken symlink (-> missing.yaml, which does not exist): skipped",
                    shown("broken.yaml")
                ),
                format!("warning: {}: a directory, not a file: the files inside it are read", shown("dir.yaml")),
                format!("warning: {}: a symlink loop (-> loop.yaml): skipped", shown("loop.yaml")),
                format!("warning: {}: not a regular file (a FIFO): skipped", shown("pipe.yaml")),
            ]
        );
    }

    #[test]
    fn a_configmap_swap_changes_the_stamp_and_an_unlistable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/vs.yaml"), "a: 1\n").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/vs.yaml", root.join("vs.yaml")).unwrap();
        let first = scan(root).unwrap();
        assert_eq!(first.files.len(), 1, "read once, through the visible name");
        assert_eq!(first, scan(root).unwrap());

        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/vs.yaml"), "a: 1\n").unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        let second = scan(root).unwrap();
        assert_eq!(second.files[0].path, first.files[0].path);
        assert_ne!(second.files[0].stamp, first.files[0].stamp, "same content, another file");

        let missing = scan(&root.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing: cannot read directory: No such file"), "{missing}");
    }

    #[test]
    fn a_file_changed_just_now_is_racy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1\n").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(dir.path().join("a.yaml")).unwrap());
        let now = SystemTime::now();
        assert!(stamp.is_racy(now));
        assert!(!stamp.is_racy(now + RACY_WINDOW + Duration::from_millis(20)));
    }
}
