//! What both helpers' argv parsers share: the info flags, the fd and policy arguments, the refusal of
//! an unknown argument. Each helper's `args.rs` defines its own `ArgError` with these variants (and
//! its own); this module names it relative to its own parent, so that `checks/` can compile both
//! parsers side by side.

use super::args::ArgError;

/// `--help`, `-h`, `--version`, `-V`: what argv may hold, alone, for help or the version.
pub(crate) fn is_info_flag(arg: &str) -> bool {
    matches!(arg, "--help" | "-h" | "--version" | "-V")
}

/// Characters of an unknown argument repeated in the refusal: enough to recognise it, never a flood.
const UNKNOWN_SHOWN: usize = 64;

/// The refusal of an unknown argument.
pub(crate) fn unknown(arg: &str) -> ArgError {
    ArgError::Unknown(arg.chars().take(UNKNOWN_SHOWN).collect())
}

/// `--policy PATH` or `--policy=PATH`, once.
pub(crate) fn set_policy(policy: &mut Option<String>, p: &str) -> Result<(), ArgError> {
    // Absolute only: `--policy --br=x` must not read `--br=x` as a path (found by fuzzing).
    if !p.starts_with('/') {
        return Err(ArgError::BadPolicy);
    }
    if policy.replace(p.to_owned()).is_some() {
        return Err(ArgError::Repeated("--policy"));
    }
    Ok(())
}

/// `--fd=N`'s value.
pub(crate) fn parse_fd(v: &str) -> Result<i32, ArgError> {
    // Plain decimal only ("+3", " 3", "0x3" are refused); 0–2 are stdio, never the socket.
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArgError::BadFd);
    }
    match v.parse::<i32>() {
        Ok(n) if n >= 3 => Ok(n),
        _ => Err(ArgError::BadFd),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fd;

    #[test]
    fn fds_have_at_most_nine_digits() {
        assert_eq!(parse_fd("123456789").ok(), Some(123_456_789));
        assert!(
            parse_fd("1234567890").is_err(),
            "ten digits, although i32 holds it"
        );
        assert!(parse_fd("0000000003").is_err());
        assert_eq!(parse_fd("000000003").ok(), Some(3));
    }
}
