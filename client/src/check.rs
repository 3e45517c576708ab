//! `vmpriv check-policy`'s reading of a draft: every syntax error in one run, not only the first.
//! The helper's parser stops at the first error (a policy with an error is refused whole); here the
//! line in error is set aside and the file parsed again, so each later line is still judged as the
//! helper judges it. Errors of a known shape get a hint: a file saved with CRLF line ends, and
//! qemu-bridge-helper's `allow br0` lines pasted from `bridge.conf`.

use std::collections::{BTreeMap, BTreeSet};

use vmpriv_protocol::policy::{self, Policy, PolicyError, PolicyErrorKind};

/// At most this many errors are listed (a file that is no policy at all would list every line).
pub const MAX_ERRORS: usize = 20;

/// Parses `text`, read from `path`, as the helper does (`read_include` reads each include), and
/// returns the policy, or every error as one line `file:line: reason`, a hint appended where one
/// applies.
///
/// ```
/// let text = "allow user alice swtich br0\r\nallow br0\nallow user bob switch br1\n";
/// let errors = vmpriv_client::check::syntax("p", text, &mut |_| Err("no includes".into())).unwrap_err();
/// assert_eq!(errors.len(), 3);
/// assert!(errors[0].starts_with("p:1: the line ends in a carriage return"));
/// assert!(errors[1].starts_with("p:1: unknown word `swtich`"));
/// assert!(errors[2].contains("vmpriv import-bridge-conf"));
/// ```
pub fn syntax(
    path: &str,
    text: &str,
    read_include: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Policy, Vec<String>> {
    // Per file: the lines set aside (1-based), and whether its CRs are stripped (reported once).
    let mut set_aside: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut crlf: BTreeSet<String> = BTreeSet::new();
    // Every file's text as read, for the hints.
    let mut texts = BTreeMap::from([(path.to_owned(), text.to_owned())]);
    let mut errors = Vec::new();
    loop {
        let result = {
            let view = |file: &str, text: &str| adjusted(text, set_aside.get(file), crlf.contains(file));
            let mut include = |p: &str| {
                let t = read_include(p)?;
                let shown = view(p, &t);
                texts.insert(p.to_owned(), t);
                Ok(shown)
            };
            policy::parse(path, &view(path, text), &mut include)
        };
        let e = match result {
            Ok(p) if errors.is_empty() => return Ok(p),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let line = texts
            .get(&e.file)
            .and_then(|t| t.split('\n').nth(e.line.saturating_sub(1)))
            .unwrap_or("");
        if e.kind == PolicyErrorKind::BadText && is_crlf(line) && crlf.insert(e.file.clone()) {
            let t = texts.get(&e.file).map_or("", String::as_str);
            let n = t.split('\n').filter(|l| is_crlf(l)).count();
            errors.push(format!(
                "{}:{}: the line ends in a carriage return, as {n} of the file's lines do (CRLF line \
                 ends, as Windows editors save them): the helper refuses them; convert the file with \
                 `sed -i 's/\\r$//' {}`",
                e.file, e.line, e.file
            ));
        } else {
            errors.push(describe(&e, line));
            if !set_aside.entry(e.file.clone()).or_default().insert(e.line) {
                return Err(errors);
            }
        }
        if errors.len() >= MAX_ERRORS {
            errors.push(format!("(stopped after {MAX_ERRORS} errors)"));
            return Err(errors);
        }
    }
}

/// A line that is fine but for the CR of a CRLF line end.
fn is_crlf(line: &str) -> bool {
    line.strip_suffix('\r')
        .is_some_and(|l| !l.chars().any(|c| c.is_control() && c != '\t'))
}

/// The text the parser is given: the lines set aside left empty (so numbering stays), and with
/// `strip_cr`, each line's final CR removed.
fn adjusted(text: &str, set_aside: Option<&BTreeSet<usize>>, strip_cr: bool) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| match set_aside {
            Some(s) if s.contains(&(i + 1)) => "",
            _ if strip_cr => l.strip_suffix('\r').unwrap_or(l),
            _ => l,
        })
        .collect();
    lines.join("\n")
}

/// The error as `file:line: reason`, with a hint for a line in qemu-bridge-helper's syntax.
fn describe(e: &PolicyError, line: &str) -> String {
    let code = line.split('#').next().unwrap_or("");
    let words: Vec<&str> = code.split_ascii_whitespace().collect();
    let bridge_conf = matches!(words.as_slice(), ["allow" | "deny", _]);
    if bridge_conf {
        format!(
            "{e}; `{}` is qemu-bridge-helper's bridge.conf syntax: `vmpriv import-bridge-conf \
             FILE` prints the policy lines for such a file",
            words.join(" ")
        )
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_includes(_: &str) -> Result<String, String> {
        Err("no includes here".to_owned())
    }

    #[test]
    fn a_good_policy_is_the_parsers() {
        let text = "allow user alice switch br0\n";
        let p = syntax("p", text, &mut no_includes).unwrap();
        assert_eq!(p, policy::parse_str("p", text).unwrap());
    }

    #[test]
    fn every_error_is_listed_with_its_line() {
        let text = "alow user a switch br0\nallow user a switch br0\nallow usr b switch br0\n\
                    quota user a 1\nquota user a 2\nallow user a ifgroup vms\n";
        let errors = syntax("p", text, &mut no_includes).unwrap_err();
        assert_eq!(
            errors,
            [
                "p:1: unknown keyword `alow`",
                "p:3: unknown word `usr`: expected `user` or `group`",
                "p:5: quota user a is defined twice",
                "p:6: `vms` is not defined by an `ifgroup NAME NUMBER` line",
            ]
        );
    }

    #[test]
    fn errors_in_an_include_name_the_include() {
        let mut read = |p: &str| match p {
            "/inc" => Ok("allow user a swich br0\nallow user b bridge br0\n".to_owned()),
            _ => Err("No such file or directory".to_owned()),
        };
        let text = "include /inc\ninclude /nope\nallow user c switch br0 extra\n";
        let errors = syntax("p", text, &mut read).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("/inc:1: unknown word `swich`"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("/inc:2: unknown word `bridge`"),
            "{errors:?}"
        );
        assert_eq!(
            errors[2],
            "p:2: cannot include `/nope`: No such file or directory"
        );
        assert_eq!(errors[3], "p:3: unexpected `extra` at the end of the line");
    }

    #[test]
    fn a_crlf_file_is_one_error_and_its_other_errors_still_show() {
        let text = "allow user a switch br0\r\nallow user b switch br0\r\nallow user c swtich br0\r\n";
        let errors = syntax("p", text, &mut no_includes).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("p:1: the line ends in a carriage return, as 3 of the file's lines do")
        );
        assert!(errors[0].ends_with("`sed -i 's/\\r$//' p`"), "{}", errors[0]);
        assert_eq!(
            errors[1],
            "p:3: unknown word `swtich`: expected `switch`, `ifgroup`, `rdomain` or `local`"
        );
    }

    #[test]
    fn a_control_character_other_than_cr_is_not_called_crlf() {
        let errors = syntax("p", "allow user a switch br0\x07\r\n", &mut no_includes).unwrap_err();
        assert_eq!(
            errors,
            ["p:1: the line is not valid UTF-8 or contains a control character"]
        );
    }

    #[test]
    fn bridge_conf_lines_point_to_import_bridge_conf() {
        let errors = syntax("p", "allow br0\ndeny all # no\nallow user a\n", &mut no_includes).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains(
            "`allow br0` is qemu-bridge-helper's bridge.conf syntax: `vmpriv import-bridge-conf FILE`"
        ));
        assert!(
            errors[1].contains("`deny all` is qemu-bridge-helper's"),
            "{}",
            errors[1]
        );
        assert!(!errors[2].contains("bridge.conf"), "{}", errors[2]);
    }

    #[test]
    fn a_file_of_nonsense_stops_after_max_errors() {
        let errors = syntax("p", &"nonsense\n".repeat(100), &mut no_includes).unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert_eq!(errors[MAX_ERRORS], "(stopped after 20 errors)");
    }
}
