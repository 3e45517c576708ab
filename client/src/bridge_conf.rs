//! Translation of qemu-bridge-helper's `/etc/qemu/bridge.conf` into vmpriv policy lines.
//!
//! bridge.conf has `allow NAME`, `allow all`, `deny NAME`, `deny all` and `include PATH`; a deny beats
//! any allow, as in vmpriv. Its per-user control is file permissions: qemu-bridge-helper reads included
//! files as the calling user, so a file only a group can read grants only that group. The translation
//! makes that explicit: the rules of an included file apply to `user *` if others may read it, else to
//! `group GROUP` if its group may, else to `user OWNER`.

/// One ACL line of bridge.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclLine {
    /// `allow NAME|all` (`None` = all) or `deny NAME|all`.
    Rule {
        /// allow or deny.
        allow: bool,
        /// The bridge, or `None` for `all`.
        bridge: Option<String>,
    },
    /// `include PATH`.
    Include(String),
}

/// Parses bridge.conf text; errors name the line (qemu-bridge-helper would skip the rest of the file,
/// silently: we refuse instead).
pub fn parse(file: &str, text: &str) -> Result<Vec<AclLine>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |why: &str| format!("{file}:{}: {why}", i + 1);
        match words.as_slice() {
            [verb @ ("allow" | "deny"), name] => {
                let bridge = if *name == "all" {
                    None
                } else {
                    vmpriv_protocol::IfName::new(name)
                        .map_err(|e| at(&format!("bad bridge name `{name}`: {e}")))?;
                    Some((*name).to_owned())
                };
                out.push(AclLine::Rule {
                    allow: *verb == "allow",
                    bridge,
                });
            }
            ["include", path] if path.starts_with('/') => out.push(AclLine::Include((*path).to_owned())),
            ["include", path] => return Err(at(&format!("include `{path}` is relative"))),
            _ => return Err(at(&format!("cannot translate `{line}`"))),
        }
    }
    Ok(out)
}

/// The vmpriv lines for `rules`, all about `subject` (`user *`, `group kvm`, `user alice`).
pub fn translate(rules: &[AclLine], subject: &str) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| match r {
            AclLine::Rule { allow, bridge } => Some(format!(
                "{} {subject} switch {}",
                if *allow { "allow" } else { "deny" },
                bridge.as_deref().unwrap_or("*")
            )),
            AclLine::Include(_) => None,
        })
        .collect()
}

/// The subject an included file's rules apply to, from its mode, owner and group names.
pub fn subject_for_mode(mode: u32, owner: &str, group: &str) -> String {
    if mode & 0o004 != 0 {
        "user *".to_owned()
    } else if mode & 0o040 != 0 {
        format!("group {group}")
    } else {
        format!("user {owner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_rules_and_keeps_deny_semantics() {
        let rules = parse(
            "bridge.conf",
            "# comment\nallow br0\nallow all\ndeny virbr1 # no\ninclude /etc/qemu/kvm.conf\n",
        )
        .unwrap();
        assert_eq!(
            translate(&rules, "user *"),
            [
                "allow user * switch br0",
                "allow user * switch *",
                "deny user * switch virbr1"
            ]
        );
        assert_eq!(rules[3], AclLine::Include("/etc/qemu/kvm.conf".into()));
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        assert!(
            parse("b", "allow secretbridge123X\n")
                .unwrap_err()
                .starts_with("b:1: bad bridge name")
        );
        assert!(
            parse("b", "\ninclude kvm.conf\n")
                .unwrap_err()
                .starts_with("b:2: include")
        );
        assert!(parse("b", "permit br0\n").is_err());
    }

    #[test]
    fn include_permissions_become_subjects() {
        assert_eq!(subject_for_mode(0o644, "root", "kvm"), "user *");
        assert_eq!(subject_for_mode(0o640, "root", "kvm"), "group kvm");
        assert_eq!(subject_for_mode(0o600, "alice", "alice"), "user alice");
    }
}
