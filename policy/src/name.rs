//! Names that reach the kernel: interface names, interface-group names and descriptions.
//!
//! Each type can only be built by validation, so a value of it is proof that the rules held.
//! Nothing here truncates: a name the kernel would cut (CVE-2019-13164) is rejected instead.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `IFNAMSIZ` less the NUL terminator.
pub const IFNAME_MAX: usize = 15;
/// vmd's `IF_DESCRSIZE` (64) less the NUL terminator: descriptions are capped here, not cut.
pub const DESCRIPTION_MAX: usize = 63;

/// Why a name or a description was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than 15 bytes (it is rejected, never truncated)")]
    TooLong,
    #[error("the name is `.` or `..`")]
    Dot,
    #[error("the name contains `/`, `:`, whitespace, a control character or a non-ASCII byte")]
    BadChar,
    #[error("a group name must not end in a digit")]
    GroupEndsInDigit,
    #[error("the description is longer than 63 bytes")]
    DescriptionTooLong,
    #[error("the description contains a byte that is not printable ASCII")]
    DescriptionNotPrintable,
}

/// A Linux interface name that `dev_valid_name()` accepts, byte for byte as given.
///
/// We are a little stricter than the kernel: only printable ASCII, so that a name in a log line or a
/// policy file always reads as what it is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    /// Validates `name` without changing it.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_ifname(name)?;
        Ok(IfName(name.to_owned()))
    }

    /// The name, exactly as validated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_ifname(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > IFNAME_MAX {
        return Err(NameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dot);
    }
    // dev_valid_name() refuses '/', ':' and isspace(); NUL cannot be carried in ifr_name at all.
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
    {
        return Err(NameError::BadChar);
    }
    Ok(())
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An interface-group name, vmd's rule: an interface name that does not end in a digit, so that a
/// group name can never be read as a group number.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Validates `name` without changing it.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_ifname(name)?;
        if name.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
            return Err(NameError::GroupEndsInDigit);
        }
        Ok(GroupName(name.to_owned()))
    }

    /// The name, exactly as validated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An interface description (`IFLA_IFALIAS`): printable ASCII, at most 63 bytes. Empty clears it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Description(String);

impl Description {
    /// Validates `text` without changing it.
    pub fn new(text: &str) -> Result<Self, NameError> {
        if text.len() > DESCRIPTION_MAX {
            return Err(NameError::DescriptionTooLong);
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(NameError::DescriptionNotPrintable);
        }
        Ok(Description(text.to_owned()))
    }

    /// The text, exactly as validated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_name_rules() {
        for ok in ["br0", "tap0", "a", "x-y_z.1", "exactly15bytes!", "tap4294967296"] {
            assert_eq!(
                IfName::new(ok).map(|n| n.as_str().to_owned()),
                Ok(ok.to_owned()),
                "{ok}"
            );
        }
        assert_eq!(IfName::new(""), Err(NameError::Empty));
        assert_eq!(IfName::new("."), Err(NameError::Dot));
        assert_eq!(IfName::new(".."), Err(NameError::Dot));
        assert_eq!(IfName::new("..."), Ok(IfName("...".into())));
        for bad in [
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
            "caf\u{e9}",
            "\u{7f}x",
        ] {
            assert_eq!(IfName::new(bad), Err(NameError::BadChar), "{bad:?}");
        }
    }

    #[test]
    fn long_name_is_rejected_not_truncated() {
        assert_eq!(
            IfName::new("secretbridge123").unwrap().as_str(),
            "secretbridge123"
        );
        assert_eq!(IfName::new("secretbridge123X"), Err(NameError::TooLong));
        assert_eq!(IfName::new("bridge4294967295"), Err(NameError::TooLong));
        assert_eq!(IfName::new(&"b".repeat(200)), Err(NameError::TooLong));
    }

    #[test]
    fn group_names_follow_vmd() {
        assert!(GroupName::new("vms").is_ok());
        assert!(GroupName::new("tap-vms").is_ok());
        assert_eq!(GroupName::new("vms1"), Err(NameError::GroupEndsInDigit));
        assert_eq!(GroupName::new("42"), Err(NameError::GroupEndsInDigit));
        assert_eq!(GroupName::new(""), Err(NameError::Empty));
        assert_eq!(GroupName::new("averyverylonggroup"), Err(NameError::TooLong));
    }

    #[test]
    fn descriptions_are_bounded_printable_ascii() {
        assert!(Description::new("").is_ok());
        assert!(Description::new("vm1-if0-web server").is_ok());
        assert!(Description::new(&"d".repeat(63)).is_ok());
        assert_eq!(
            Description::new(&"d".repeat(64)),
            Err(NameError::DescriptionTooLong)
        );
        assert_eq!(
            Description::new("bell\x07"),
            Err(NameError::DescriptionNotPrintable)
        );
        assert_eq!(
            Description::new("new\nline"),
            Err(NameError::DescriptionNotPrintable)
        );
        assert_eq!(
            Description::new("caf\u{e9}"),
            Err(NameError::DescriptionNotPrintable)
        );
    }

    #[test]
    fn names_print_as_written() {
        let name = IfName::new("br-0").unwrap();
        assert_eq!(
            (name.to_string(), format!("{name:?}")),
            ("br-0".into(), "\"br-0\"".into())
        );
        let group = GroupName::new("vms").unwrap();
        assert_eq!(group.as_str(), "vms");
        assert_eq!(
            (group.to_string(), format!("{group:?}")),
            ("vms".into(), "\"vms\"".into())
        );
        let text = Description::new("vm 1 \"web\"").unwrap();
        assert_eq!(text.as_str(), "vm 1 \"web\"");
        assert_eq!(format!("{text:?}"), r#""vm 1 \"web\"""#);
    }
}
