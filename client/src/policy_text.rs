//! The policy as `vmpriv check-policy` prints it: canonical text that parses back to the same policy,
//! and a summary of what it grants, and the rules as policy lines. The helper never prints a policy,
//! so this lives here rather than in the trusted policy crate.

use std::fmt::Write as _;

use vmpriv_protocol::policy::{DEFAULT_QUOTA, Pattern, Policy, Resource, Rule, Subject, UNLIMITED, VmRange};

/// A rule as its policy line: `allow user alice switch br0`.
pub fn rule_line(r: &Rule) -> String {
    let verb = if r.allow { "allow" } else { "deny" };
    format!("{verb} {} {}", r.subject, resource(&r.resource))
}

/// What a rule is about, as written after its subject: `switch br0`, `local vm 1-9`.
pub fn resource(r: &Resource) -> String {
    fn pattern<T: std::fmt::Display>(p: &Pattern<T>) -> String {
        match p {
            Pattern::Any => "*".to_owned(),
            Pattern::Exact(v) => v.to_string(),
        }
    }
    match r {
        Resource::Switch(p) => format!("switch {}", pattern(p)),
        Resource::IfGroup(p) => format!("ifgroup {}", pattern(p)),
        Resource::Rdomain(p) => format!("rdomain {}", pattern(p)),
        Resource::Local(v) if *v == VmRange::ANY => "local".to_owned(),
        Resource::Local(v) if v.first == v.last => format!("local vm {}", v.first),
        Resource::Local(v) => format!("local vm {}-{}", v.first, v.last),
    }
}

/// The policy in canonical form, ending with its grants as comments: what `vmpriv check-policy`
/// prints, and text that parses back to the same policy.
///
/// ```
/// let p = vmpriv_protocol::policy::parse_str("p", "allow user alice switch br0\n").unwrap();
/// let text = vmpriv_client::policy_text::canonical(&p);
/// assert_eq!(vmpriv_protocol::policy::parse_str("p", &text).unwrap(), p);
/// ```
pub fn canonical(p: &Policy) -> String {
    let mut f = String::new();
    // Writing into a String cannot fail.
    let _ = write_canonical(&mut f, p);
    f
}

fn write_canonical(f: &mut String, p: &Policy) -> std::fmt::Result {
    writeln!(f, "local prefix {}", p.inet)?;
    writeln!(f, "local inet6 prefix {}", p.inet6)?;
    for (name, number) in &p.ifgroups {
        writeln!(f, "ifgroup {name} {number}")?;
    }
    for (rdomain, vrf) in &p.rdomains {
        writeln!(f, "rdomain {rdomain} {vrf}")?;
    }
    for q in &p.quotas {
        if q.limit == UNLIMITED {
            writeln!(f, "quota {} unlimited", q.subject)?;
        } else {
            writeln!(f, "quota {} {}", q.subject, q.limit)?;
        }
    }
    if !p.quotas.iter().any(|q| q.subject == Subject::Anyone) {
        writeln!(
            f,
            "# quota user * {DEFAULT_QUOTA}  (built-in default, for callers granted a tap)"
        )?;
    }
    for r in &p.rules {
        writeln!(f, "{}", rule_line(r))?;
    }
    writeln!(
        f,
        "# What this grants (any matching deny overrides; no grant, no tap):"
    )?;
    for line in grants_summary(p) {
        writeln!(f, "#   {line}")?;
    }
    Ok(())
}

/// One line per subject that some `allow` names: what it may use. The last line says what every
/// other caller gets (nothing, unless `user *` is granted something).
///
/// ```
/// let p = vmpriv_protocol::policy::parse_str("p", "").unwrap();
/// assert_eq!(vmpriv_client::policy_text::grants_summary(&p), ["every other caller: nothing"]);
/// ```
pub fn grants_summary(p: &Policy) -> Vec<String> {
    let mut subjects: Vec<&Subject> = Vec::new();
    for r in p.rules.iter().filter(|r| r.allow) {
        if !subjects.contains(&&r.subject) {
            subjects.push(&r.subject);
        }
    }
    let mut lines: Vec<String> = subjects
        .iter()
        .map(|s| {
            let what: Vec<String> = p
                .rules
                .iter()
                .filter(|r| r.allow && r.subject == **s)
                .map(|r| resource(&r.resource))
                .collect();
            let taps = p.rules.iter().any(|r| {
                r.allow && r.subject == **s && matches!(r.resource, Resource::Switch(_) | Resource::Local(_))
            });
            let note = if taps {
                ""
            } else {
                " (no switch or local grant: no tap)"
            };
            format!("{s}: {}{note}", what.join(", "))
        })
        .collect();
    if !subjects.contains(&&Subject::Anyone) {
        lines.push("every other caller: nothing".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmpriv_protocol::policy::parse_str;

    fn round_trips(text: &str) -> Policy {
        let p = parse_str("p", text).unwrap();
        let shown = canonical(&p);
        assert_eq!(parse_str("shown", &shown).unwrap(), p, "{shown}");
        p
    }

    #[test]
    fn canonical_text_round_trips() {
        round_trips(
            "local prefix 10.0.0.0/16\nifgroup vms 42\nrdomain 1 vrf-blue\nquota group kvm 4\n\
             allow group kvm switch br0\ndeny user * ifgroup vms\nallow user bob rdomain 1\n",
        );
        // `unlimited` prints back.
        round_trips(
            "quota user * 3\nquota group kvm 5\nquota group big 9\nquota user alice 1\nquota user zero 0\n\
             quota group ops unlimited\nallow user * switch br0\n",
        );
    }

    #[test]
    fn grants_are_summarised_per_subject() {
        assert_eq!(
            grants_summary(&round_trips("# nothing\n\n")),
            ["every other caller: nothing"]
        );
        let p = round_trips(
            "allow user alice local vm 1-10\nallow group kvm local\ndeny user mallory local vm 5\n\
             allow user bob local vm 7\nallow user carol switch br0\n",
        );
        assert_eq!(
            grants_summary(&p),
            [
                "user alice: local vm 1-10",
                "group kvm: local",
                "user bob: local vm 7",
                "user carol: switch br0",
                "every other caller: nothing"
            ]
        );
    }
}
