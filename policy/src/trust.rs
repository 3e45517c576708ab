//! Whether a policy file may be trusted: the file and every directory from `/` down to it owned by
//! root and not writable by group or others, reached without following a symlink, a regular file of at
//! most [`POLICY_MAX`] bytes (sudo's rule for sudoers, applied to the whole path).
//!
//! Only the decision lives here; the caller does the I/O: it opens each component with `O_NOFOLLOW`
//! (directories with `O_DIRECTORY`) from the fd of the one before, `fstat`s the opened fd and asks
//! these functions. The helper (which reads the policy) and `vmpriv check-policy` (which tells the admin
//! whether the helper will) share them, so the two cannot disagree.

/// The largest policy file the helper reads: a policy is a few hundred lines.
pub const POLICY_MAX: u64 = 1 << 20;

/// `S_IFMT`, `S_IFDIR`, `S_IFREG`: the file-type bits of `st_mode`, the same on every Linux.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// What `fstat` says about one opened path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `st_uid`.
    pub uid: u32,
    /// `st_mode`, file-type bits included.
    pub mode: u32,
}

/// Why a policy file is not trusted. Each names the component at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("is a directory")]
    IsDirectory,
    #[error("contains `.` or `..`")]
    Dots,
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error("not a regular file")]
    NotRegular,
    #[error("{0} is not owned by root")]
    NotRoot(String),
    #[error("{0} is writable by group or others")]
    Writable(String),
    #[error("larger than 1 MiB")]
    TooLarge,
}

/// Splits an absolute path into the directories below `/` and the file's own name. Empty components
/// (`//`) are skipped, as the kernel does.
pub fn split(path: &str) -> Result<(Vec<&str>, &str), TrustError> {
    if !path.starts_with('/') {
        return Err(TrustError::NotAbsolute);
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.split_last() {
        Some((last, dirs)) => Ok((dirs.to_vec(), last)),
        None => Err(TrustError::IsDirectory),
    }
}

/// A directory name to open next: never `.` or `..`, which would leave the path just checked.
pub fn check_dir_name(name: &str) -> Result<(), TrustError> {
    if name == "." || name == ".." {
        return Err(TrustError::Dots);
    }
    Ok(())
}

/// A directory on the way (`/` included, named `what`): a directory, root's, not group/other-writable.
pub fn check_dir(what: &str, st: Stat) -> Result<(), TrustError> {
    if st.mode & S_IFMT != S_IFDIR {
        return Err(TrustError::NotDirectory(what.to_owned()));
    }
    check_owner(what, st)
}

/// The policy file itself (named `what`): a regular file, root's, not group/other-writable.
pub fn check_file(what: &str, st: Stat) -> Result<(), TrustError> {
    if st.mode & S_IFMT != S_IFREG {
        return Err(TrustError::NotRegular);
    }
    check_owner(what, st)
}

/// The bytes read, when the caller read at most `POLICY_MAX + 1` of them.
pub fn check_size(len: u64) -> Result<(), TrustError> {
    if len > POLICY_MAX {
        return Err(TrustError::TooLarge);
    }
    Ok(())
}

fn check_owner(what: &str, st: Stat) -> Result<(), TrustError> {
    if st.uid != 0 {
        return Err(TrustError::NotRoot(what.to_owned()));
    }
    // Sticky or not: a world-writable directory (/tmp) lets others create the names we would open.
    if st.mode & 0o022 != 0 {
        return Err(TrustError::Writable(what.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: u32 = S_IFDIR;
    const REG: u32 = S_IFREG;
    const LNK: u32 = 0o120_000;

    fn st(uid: u32, mode: u32) -> Stat {
        Stat { uid, mode }
    }

    #[test]
    fn the_usual_install_is_trusted() {
        assert_eq!(
            split("/etc/vmpriv/policy.conf"),
            Ok((vec!["etc", "vmpriv"], "policy.conf"))
        );
        assert_eq!(check_dir("/", st(0, DIR | 0o755)), Ok(()));
        assert_eq!(check_dir("vmpriv", st(0, DIR | 0o700)), Ok(()));
        assert_eq!(check_file("policy.conf", st(0, REG | 0o644)), Ok(()));
        assert_eq!(check_file("policy.conf", st(0, REG | 0o400)), Ok(()));
        assert_eq!(check_size(POLICY_MAX), Ok(()));
    }

    #[test]
    fn a_group_or_other_writable_component_is_refused() {
        assert_eq!(
            check_file("policy.conf", st(0, REG | 0o664)),
            Err(TrustError::Writable("policy.conf".into()))
        );
        assert_eq!(
            check_file("policy.conf", st(0, REG | 0o646)),
            Err(TrustError::Writable("policy.conf".into()))
        );
        // /tmp and /var/tmp: the sticky bit does not make them safe.
        assert_eq!(
            check_dir("tmp", st(0, DIR | 0o1777)),
            Err(TrustError::Writable("tmp".into()))
        );
        assert_eq!(
            check_dir("vmpriv", st(0, DIR | 0o775)),
            Err(TrustError::Writable("vmpriv".into()))
        );
    }

    #[test]
    fn a_component_not_owned_by_root_is_refused() {
        assert_eq!(
            check_file("policy.conf", st(1000, REG | 0o644)),
            Err(TrustError::NotRoot("policy.conf".into()))
        );
        assert_eq!(
            check_dir("home", st(65534, DIR | 0o755)),
            Err(TrustError::NotRoot("home".into()))
        );
    }

    #[test]
    fn only_a_regular_file_under_directories() {
        assert_eq!(check_file("p", st(0, DIR | 0o755)), Err(TrustError::NotRegular));
        assert_eq!(check_file("p", st(0, LNK | 0o777)), Err(TrustError::NotRegular));
        // A device or a FIFO could block the helper's read.
        assert_eq!(
            check_file("p", st(0, 0o010_000 | 0o644)),
            Err(TrustError::NotRegular)
        );
        assert_eq!(
            check_file("p", st(0, 0o020_000 | 0o644)),
            Err(TrustError::NotRegular)
        );
        assert_eq!(
            check_dir("etc", st(0, REG | 0o644)),
            Err(TrustError::NotDirectory("etc".into()))
        );
    }

    #[test]
    fn paths_are_absolute_without_dots() {
        assert_eq!(split("etc/vmpriv/policy.conf"), Err(TrustError::NotAbsolute));
        assert_eq!(split(""), Err(TrustError::NotAbsolute));
        assert_eq!(split("/"), Err(TrustError::IsDirectory));
        assert_eq!(split("//"), Err(TrustError::IsDirectory));
        assert_eq!(split("//etc//p"), Ok((vec!["etc"], "p")));
        assert_eq!(check_dir_name(".."), Err(TrustError::Dots));
        assert_eq!(check_dir_name("."), Err(TrustError::Dots));
        assert_eq!(check_dir_name("..."), Ok(()));
        assert_eq!(check_size(POLICY_MAX + 1), Err(TrustError::TooLarge));
    }

    #[test]
    fn messages_name_the_component() {
        assert_eq!(
            TrustError::Writable("vmpriv".into()).to_string(),
            "vmpriv is writable by group or others"
        );
        assert_eq!(
            TrustError::NotRoot("p".into()).to_string(),
            "p is not owned by root"
        );
    }

    #[test]
    fn a_policy_of_up_to_one_mib_is_read() {
        // A few hundred lines are a few KiB; the bound is sudoers' rule of thumb, 1 MiB.
        assert_eq!(check_size(0), Ok(()));
        assert_eq!(check_size(64 * 1024), Ok(()));
        assert_eq!(check_size(1024 * 1024), Ok(()));
        assert_eq!(check_size(1024 * 1024 + 1), Err(TrustError::TooLarge));
    }
}
