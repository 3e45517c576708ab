//! The policy file, `/etc/vmpriv/policy.conf`: who may use which switch, interface group and routing
//! domain, how many live taps each user may hold, and the local address prefixes (vmpriv.conf(5)).
//!
//! Fail closed: any unknown keyword, bad name, wrong token count, duplicate definition or relative
//! include fails the whole file with `file:line: reason` (qemu-bridge-helper kept the rules read before
//! an error, so a typo could silently remove a `deny`). Any matching `deny` beats any `allow`; with no
//! matching rule the answer is no.
//!
//! This module parses text only; reading files (and checking who owns them) is the helper's job,
//! through the `read_include` callback.

use std::fmt;

use crate::name::{GroupName, IfName};
use crate::prefix::{Inet4Prefix, Inet6Prefix};

/// Where the helper reads its policy; a setuid caller can never choose another path.
pub const POLICY_PATH: &str = "/etc/vmpriv/policy.conf";
/// The live-tap limit of a caller that no `quota` line names.
pub const DEFAULT_QUOTA: u32 = 16;
/// `quota … unlimited`: as many taps as a mark has slots, 65,536 (the helper's `SLOTS_MAX`: four hex
/// digits keep `vpUID-SLOT` within 15 bytes). A create looks its slot up by name and counts nothing.
pub const UNLIMITED: u32 = u32::MAX;
/// The largest quota a line may give: beyond it, fd and netlink costs dominate and a typo is likelier.
pub const QUOTA_MAX: u32 = 4096;
/// How many files deep `include` may nest, the policy file first: three levels of includes (no loops).
pub const INCLUDE_DEPTH_MAX: usize = 4;
/// vmd's rdomain range; 0 is the default table and needs no line.
pub const RDOMAIN_MAX: u32 = 255;
/// What may follow a rule's subject.
const RESOURCES: &str = "`switch`, `ifgroup`, `rdomain` or `local`";

/// Who asked: the real ids (setuid) or the socket peer's (socket-activated), and their names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// The uid.
    pub uid: u32,
    /// The user name of `uid`, if it has one; a nameless uid matches only `user *`.
    pub user: Option<String>,
    /// The primary gid: the helper takes it on its privilege drop and checks it after.
    pub gid: u32,
    /// The supplementary gids, without `gid`.
    pub supplementary: Vec<u32>,
    /// Names of the gids that have one.
    pub groups: Vec<String>,
}

/// Who a rule or quota line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `user NAME`
    User(String),
    /// `group NAME`
    Group(String),
    /// `user *` or `group *`: every caller.
    Anyone,
}

impl Subject {
    pub fn matches(&self, caller: &Caller) -> bool {
        match self {
            Subject::User(name) => caller.user.as_deref() == Some(name.as_str()),
            Subject::Group(name) => caller.groups.iter().any(|g| g == name),
            Subject::Anyone => true,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(n) => write!(f, "user {n}"),
            Subject::Group(n) => write!(f, "group {n}"),
            Subject::Anyone => f.write_str("user *"),
        }
    }
}

/// `*` or one exact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern<T> {
    /// `*`
    Any,
    /// One value, compared byte for byte.
    Exact(T),
}

impl<T: PartialEq> Pattern<T> {
    fn matches(&self, value: &T) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(v) => v == value,
        }
    }
}

/// The VM slots a `local` rule covers: `vm FIRST-LAST` (or `vm N`), or every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmRange {
    /// First slot covered.
    pub first: u32,
    /// Last slot covered (inclusive).
    pub last: u32,
}

impl VmRange {
    /// Every slot.
    pub const ANY: VmRange = VmRange {
        first: 0,
        last: u32::MAX,
    };

    fn contains(self, vm: u32) -> bool {
        (self.first..=self.last).contains(&vm)
    }
}

/// What a rule grants or denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `switch NAME|*`: attach taps to this bridge.
    Switch(Pattern<IfName>),
    /// `ifgroup NAME|*`: put taps in this interface group.
    IfGroup(Pattern<GroupName>),
    /// `rdomain N|*`: put taps in this routing domain.
    Rdomain(Pattern<u32>),
    /// `local [vm FIRST-LAST]`: taps on no switch, and the local addresses of these VM slots.
    Local(VmRange),
}

/// One `allow` or `deny` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `allow` (true) or `deny` (false).
    pub allow: bool,
    /// Who it is about.
    pub subject: Subject,
    /// What it is about.
    pub resource: Resource,
}

/// One `quota` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Who it limits.
    pub subject: Subject,
    /// Live taps owned by each matching user, at most.
    pub limit: u32,
}

/// A parsed policy file (with its includes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `allow`/`deny` lines in file order (order does not change their meaning).
    pub rules: Vec<Rule>,
    /// `quota` lines.
    pub quotas: Vec<Quota>,
    /// `ifgroup NAME NUMBER` definitions.
    pub ifgroups: Vec<(GroupName, u32)>,
    /// `rdomain N VRF` definitions.
    pub rdomains: Vec<(u32, IfName)>,
    /// `local prefix`, default 100.64.0.0/10.
    pub inet: Inet4Prefix,
    /// `local inet6 prefix`, default fd00::/8.
    pub inet6: Inet6Prefix,
}

impl Default for Policy {
    /// The empty policy: denies everything.
    fn default() -> Self {
        Policy {
            rules: Vec::new(),
            quotas: Vec::new(),
            ifgroups: Vec::new(),
            rdomains: Vec::new(),
            inet: Inet4Prefix::DEFAULT,
            inet6: Inet6Prefix::DEFAULT,
        }
    }
}

impl Policy {
    /// Whether `caller` may use `resource`: no matching deny, and at least one matching allow.
    fn permits(&self, caller: &Caller, wanted: impl Fn(&Resource) -> bool) -> bool {
        let mut allowed = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| wanted(&r.resource) && r.subject.matches(caller))
        {
            if !rule.allow {
                return false;
            }
            allowed = true;
        }
        allowed
    }

    /// May `caller` attach taps to `switch`? Compares the validated name byte for byte.
    pub fn permits_switch(&self, caller: &Caller, switch: &IfName) -> bool {
        self.permits(caller, |r| matches!(r, Resource::Switch(p) if p.matches(switch)))
    }

    /// May `caller` put taps in interface group `group`?
    pub fn permits_ifgroup(&self, caller: &Caller, group: &GroupName) -> bool {
        self.permits(caller, |r| matches!(r, Resource::IfGroup(p) if p.matches(group)))
    }

    /// May `caller` put taps in routing domain `rdomain`?
    pub fn permits_rdomain(&self, caller: &Caller, rdomain: u32) -> bool {
        self.permits(
            caller,
            |r| matches!(r, Resource::Rdomain(p) if p.matches(&rdomain)),
        )
    }

    /// May `caller` have a local tap (one on no switch), and with `vm`, that VM slot's addresses?
    /// Without `vm`: some `allow … local` rule matches and no `deny … local` covering every slot does.
    /// With `vm`: an allow whose range holds it, and no deny whose range holds it.
    pub fn permits_local(&self, caller: &Caller, vm: Option<u32>) -> bool {
        let mut allowed = false;
        for rule in self.rules.iter().filter(|r| r.subject.matches(caller)) {
            let Resource::Local(range) = rule.resource else {
                continue;
            };
            match (rule.allow, vm) {
                (true, None) => allowed = true,
                (true, Some(v)) => allowed |= range.contains(v),
                (false, None) if range == VmRange::ANY => return false,
                (false, Some(v)) if range.contains(v) => return false,
                (false, _) => {}
            }
        }
        allowed
    }

    /// Whether the policy grants `caller` any tap at all, after its `deny` lines: a switch it may
    /// attach to, or a local tap. No grant, no tap: a caller without one has quota 0 and the helper
    /// opens nothing for it.
    pub fn grants_taps(&self, caller: &Caller) -> bool {
        let mine = || self.rules.iter().filter(|r| r.subject.matches(caller));
        let all_switches_denied = mine().any(|r| !r.allow && r.resource == Resource::Switch(Pattern::Any));
        let a_switch = mine().any(|r| match &r.resource {
            Resource::Switch(Pattern::Exact(name)) => r.allow && self.permits_switch(caller, name),
            // Other names than the ones denied one by one remain.
            Resource::Switch(Pattern::Any) => r.allow && !all_switches_denied,
            _ => false,
        });
        a_switch || self.permits_local(caller, None)
    }

    /// The number behind an `ifgroup` name.
    pub fn ifgroup_number(&self, group: &GroupName) -> Option<u32> {
        self.ifgroups.iter().find(|(g, _)| g == group).map(|&(_, n)| n)
    }

    /// The VRF device behind a routing domain.
    pub fn rdomain_vrf(&self, rdomain: u32) -> Option<&IfName> {
        self.rdomains.iter().find(|(n, _)| *n == rdomain).map(|(_, v)| v)
    }

    /// The live-tap limit of `caller`: 0 if the policy grants it no tap; else its `quota user` line;
    /// else the largest of its `quota group` lines; else the `*` line; else [`DEFAULT_QUOTA`].
    pub fn quota_for(&self, caller: &Caller) -> u32 {
        if !self.grants_taps(caller) {
            return 0;
        }
        let of = |pick: &dyn Fn(&Subject) -> bool| {
            self.quotas
                .iter()
                .filter(|q| pick(&q.subject) && q.subject.matches(caller))
                .map(|q| q.limit)
                .max()
        };
        of(&|s| matches!(s, Subject::User(_)))
            .or_else(|| of(&|s| matches!(s, Subject::Group(_))))
            .or_else(|| of(&|s| matches!(s, Subject::Anyone)))
            .unwrap_or(DEFAULT_QUOTA)
    }
}

/// Why a policy line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyErrorKind {
    #[error("unknown keyword `{0}`")]
    UnknownKeyword(String),
    #[error("expected {0}")]
    Expected(&'static str),
    #[error("unknown word `{0}`: expected {1}")]
    Unexpected(String, &'static str),
    #[error("unexpected `{0}` at the end of the line")]
    Trailing(String),
    #[error("bad user or group name `{0}`")]
    BadPrincipal(String),
    #[error("bad switch name `{0}`: {1}")]
    BadSwitch(String, crate::name::NameError),
    #[error("bad interface group name `{0}`: {1}")]
    BadGroup(String, crate::name::NameError),
    #[error("bad VRF device name `{0}`: {1}")]
    BadVrf(String, crate::name::NameError),
    #[error("bad number `{0}`")]
    BadNumber(String),
    #[error("bad VM range `{0}`: FIRST-LAST with FIRST at most LAST")]
    VmRange(String),
    #[error("rdomain must be 1 to 255 (0 is the default table)")]
    RdomainRange,
    #[error("quota must be 0 to 4096")]
    QuotaRange,
    #[error("interface group number 0 is the kernel's default group")]
    GroupZero,
    #[error("bad prefix `{0}`: {1}")]
    BadPrefix(String, crate::prefix::AddrError),
    #[error("{0} is defined twice")]
    Duplicate(String),
    #[error("`{0}` is not defined by an `{1}` line")]
    Undefined(String, &'static str),
    #[error("include path `{0}` is not absolute")]
    RelativeInclude(String),
    #[error("includes nest deeper than 3 levels below the policy file")]
    IncludeDepth,
    #[error("cannot include `{0}`: {1}")]
    IncludeUnreadable(String, String),
    #[error("the line is not valid UTF-8 or contains a control character")]
    BadText,
}

/// A policy error with its place: printed as `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
pub struct PolicyError {
    /// The file the line is in.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

/// Parses the policy `text` read from `file`. `read_include` is called with the absolute path of each
/// `include` line and returns that file's text, or why it could not (the helper checks ownership there).
pub fn parse(
    file: &str,
    text: &str,
    read_include: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Policy, PolicyError> {
    let mut parser = Parser::default();
    parser.file(file, text, read_include, 0)?;
    parser.finish()
}

/// Parses a policy that has no includes (an include line is then an error).
pub fn parse_str(file: &str, text: &str) -> Result<Policy, PolicyError> {
    parse(file, text, &mut |_| {
        Err("includes are not available here".to_owned())
    })
}

#[derive(Default)]
struct Parser {
    policy: Policy,
    inet_seen: bool,
    inet6_seen: bool,
    /// Names used by rules, checked against definitions once every file is read.
    uses: Vec<(String, usize, Use)>,
}

enum Use {
    IfGroup(GroupName),
    Rdomain(u32),
}

impl Parser {
    fn file(
        &mut self,
        file: &str,
        text: &str,
        read_include: &mut dyn FnMut(&str) -> Result<String, String>,
        depth: usize,
    ) -> Result<(), PolicyError> {
        for (i, line) in text.split('\n').enumerate() {
            let at = |kind| PolicyError {
                file: file.to_owned(),
                line: i + 1,
                kind,
            };
            // A CR (CRLF line ends) is a control character too: one rule for every byte of a line.
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(at(PolicyErrorKind::BadText));
            }
            let line = line.split_once('#').map_or(line, |(code, _)| code);
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            if keyword == "include" {
                let path = one(&mut words, "an absolute path after `include`").map_err(at)?;
                if !path.starts_with('/') {
                    return Err(at(PolicyErrorKind::RelativeInclude(path.to_owned())));
                }
                if depth + 1 >= INCLUDE_DEPTH_MAX {
                    return Err(at(PolicyErrorKind::IncludeDepth));
                }
                let text = read_include(path)
                    .map_err(|why| at(PolicyErrorKind::IncludeUnreadable(path.to_owned(), why)))?;
                self.file(path, &text, read_include, depth + 1)?;
                continue;
            }
            self.line(keyword, &mut words, file, i + 1).map_err(at)?;
        }
        Ok(())
    }

    fn line<'a>(
        &mut self,
        keyword: &str,
        words: &mut impl Iterator<Item = &'a str>,
        file: &str,
        line: usize,
    ) -> Result<(), PolicyErrorKind> {
        match keyword {
            "allow" | "deny" => {
                let subject = subject(words)?;
                let kind = one(words, RESOURCES)?;
                let resource = if kind == "local" {
                    Resource::Local(match words.next() {
                        None => VmRange::ANY,
                        Some("vm") => vm_range(one(words, "a VM slot or range FIRST-LAST after `vm`")?)?,
                        Some(w) => return Err(PolicyErrorKind::Trailing(w.to_owned())),
                    })
                } else {
                    match (kind, one(words, "a name, a number or `*`")?) {
                        ("switch", "*") => Resource::Switch(Pattern::Any),
                        ("switch", v) => Resource::Switch(Pattern::Exact(
                            IfName::new(v).map_err(|e| PolicyErrorKind::BadSwitch(v.to_owned(), e))?,
                        )),
                        ("ifgroup", "*") => Resource::IfGroup(Pattern::Any),
                        ("ifgroup", v) => {
                            let g =
                                GroupName::new(v).map_err(|e| PolicyErrorKind::BadGroup(v.to_owned(), e))?;
                            self.uses.push((file.to_owned(), line, Use::IfGroup(g.clone())));
                            Resource::IfGroup(Pattern::Exact(g))
                        }
                        ("rdomain", "*") => Resource::Rdomain(Pattern::Any),
                        ("rdomain", v) => {
                            let n = rdomain(v)?;
                            self.uses.push((file.to_owned(), line, Use::Rdomain(n)));
                            Resource::Rdomain(Pattern::Exact(n))
                        }
                        (k, _) => return Err(PolicyErrorKind::Unexpected(k.to_owned(), RESOURCES)),
                    }
                };
                end(words)?;
                self.policy.rules.push(Rule {
                    allow: keyword == "allow",
                    subject,
                    resource,
                });
            }
            "quota" => {
                let subject = subject(words)?;
                let limit = match one(words, "a number of taps or `unlimited`")? {
                    "unlimited" => UNLIMITED,
                    n => number(n)?,
                };
                if limit > QUOTA_MAX && limit != UNLIMITED {
                    return Err(PolicyErrorKind::QuotaRange);
                }
                end(words)?;
                if self.policy.quotas.iter().any(|q| q.subject == subject) {
                    return Err(PolicyErrorKind::Duplicate(format!("quota {subject}")));
                }
                self.policy.quotas.push(Quota { subject, limit });
            }
            "ifgroup" => {
                let v = one(words, "an interface group name")?;
                let name = GroupName::new(v).map_err(|e| PolicyErrorKind::BadGroup(v.to_owned(), e))?;
                let n = number(one(words, "an interface group number")?)?;
                if n == 0 {
                    return Err(PolicyErrorKind::GroupZero);
                }
                end(words)?;
                if self.policy.ifgroups.iter().any(|(g, m)| *g == name || *m == n) {
                    return Err(PolicyErrorKind::Duplicate(format!(
                        "ifgroup {name} or number {n}"
                    )));
                }
                self.policy.ifgroups.push((name, n));
            }
            "rdomain" => {
                let n = rdomain(one(words, "a routing domain number")?)?;
                let v = one(words, "a VRF device name")?;
                let vrf = IfName::new(v).map_err(|e| PolicyErrorKind::BadVrf(v.to_owned(), e))?;
                end(words)?;
                if self.policy.rdomains.iter().any(|(m, d)| *m == n || *d == vrf) {
                    return Err(PolicyErrorKind::Duplicate(format!("rdomain {n} or VRF {vrf}")));
                }
                self.policy.rdomains.push((n, vrf));
            }
            "local" => match one(words, "`prefix` or `inet6 prefix`")? {
                "prefix" => {
                    let v = one(words, "an IPv4 prefix such as 100.64.0.0/10")?;
                    end(words)?;
                    if std::mem::replace(&mut self.inet_seen, true) {
                        return Err(PolicyErrorKind::Duplicate("local prefix".to_owned()));
                    }
                    self.policy.inet = v
                        .parse()
                        .map_err(|e| PolicyErrorKind::BadPrefix(v.to_owned(), e))?;
                }
                "inet6" => {
                    if one(words, "`prefix` after `local inet6`")? != "prefix" {
                        return Err(PolicyErrorKind::Expected("`prefix` after `local inet6`"));
                    }
                    let v = one(words, "an IPv6 prefix such as fd00::/8")?;
                    end(words)?;
                    if std::mem::replace(&mut self.inet6_seen, true) {
                        return Err(PolicyErrorKind::Duplicate("local inet6 prefix".to_owned()));
                    }
                    self.policy.inet6 = v
                        .parse()
                        .map_err(|e| PolicyErrorKind::BadPrefix(v.to_owned(), e))?;
                }
                _ => {
                    return Err(PolicyErrorKind::Expected(
                        "`prefix` or `inet6 prefix` after `local`",
                    ));
                }
            },
            other => return Err(PolicyErrorKind::UnknownKeyword(other.to_owned())),
        }
        Ok(())
    }

    /// A rule naming an undefined group or rdomain is an error: it could never match anything, so it is
    /// almost certainly a typo that would silently deny (or, for a deny, silently not deny).
    fn finish(self) -> Result<Policy, PolicyError> {
        for (file, line, used) in &self.uses {
            let kind = match used {
                Use::IfGroup(g) if self.policy.ifgroup_number(g).is_none() => {
                    PolicyErrorKind::Undefined(g.to_string(), "ifgroup NAME NUMBER")
                }
                Use::Rdomain(n) if self.policy.rdomain_vrf(*n).is_none() => {
                    PolicyErrorKind::Undefined(n.to_string(), "rdomain N VRF")
                }
                _ => continue,
            };
            return Err(PolicyError {
                file: file.clone(),
                line: *line,
                kind,
            });
        }
        Ok(self.policy)
    }
}

fn one<'a>(
    words: &mut impl Iterator<Item = &'a str>,
    what: &'static str,
) -> Result<&'a str, PolicyErrorKind> {
    words.next().ok_or(PolicyErrorKind::Expected(what))
}

fn end<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<(), PolicyErrorKind> {
    match words.next() {
        None => Ok(()),
        Some(w) => Err(PolicyErrorKind::Trailing(w.to_owned())),
    }
}

fn subject<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<Subject, PolicyErrorKind> {
    let kind = one(words, "`user` or `group`")?;
    let name = one(words, "a user or group name, or `*`")?;
    if name == "*" && (kind == "user" || kind == "group") {
        return Ok(Subject::Anyone);
    }
    if !principal_ok(name) {
        return Err(PolicyErrorKind::BadPrincipal(name.to_owned()));
    }
    match kind {
        "user" => Ok(Subject::User(name.to_owned())),
        "group" => Ok(Subject::Group(name.to_owned())),
        _ => Err(PolicyErrorKind::Unexpected(kind.to_owned(), "`user` or `group`")),
    }
}

/// Portable user and group names (POSIX, plus what useradd accepts): 1–32 bytes of letters, digits,
/// `_`, `.`, `-`, not starting with `-`, optionally ending in `$` (Samba machine accounts).
fn principal_ok(name: &str) -> bool {
    let core = name.strip_suffix('$').unwrap_or(name);
    !core.is_empty()
        && name.len() <= 32
        && !core.starts_with('-')
        && core
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn number(v: &str) -> Result<u32, PolicyErrorKind> {
    // u32::from_str accepts a leading '+'; policy numbers are plain decimal digits.
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyErrorKind::BadNumber(v.to_owned()));
    }
    v.parse().map_err(|_| PolicyErrorKind::BadNumber(v.to_owned()))
}

/// `N` or `FIRST-LAST`, first ≤ last.
fn vm_range(v: &str) -> Result<VmRange, PolicyErrorKind> {
    let (first, last) = v.split_once('-').unwrap_or((v, v));
    let (first, last) = (number(first)?, number(last)?);
    if first > last {
        return Err(PolicyErrorKind::VmRange(v.to_owned()));
    }
    Ok(VmRange { first, last })
}

fn rdomain(v: &str) -> Result<u32, PolicyErrorKind> {
    let n = number(v)?;
    if n == 0 || n > RDOMAIN_MAX {
        return Err(PolicyErrorKind::RdomainRange);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, groups: &[&str]) -> Caller {
        Caller {
            uid: 1000,
            user: Some(user.to_owned()),
            gid: 1000,
            supplementary: vec![],
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn sw(name: &str) -> IfName {
        IfName::new(name).unwrap()
    }

    fn err(text: &str) -> (usize, PolicyErrorKind) {
        let e = parse_str("p.conf", text).unwrap_err();
        assert_eq!(e.file, "p.conf");
        (e.line, e.kind)
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = parse_str("p", "# nothing\n\n").unwrap();
        assert!(!p.permits_switch(&caller("alice", &["kvm"]), &sw("br0")));
        assert_eq!(p.inet, Inet4Prefix::DEFAULT);
        assert_eq!(p.inet6, Inet6Prefix::DEFAULT);
        // No grant, no tap: not even a quota.
        assert_eq!(p.quota_for(&caller("alice", &[])), 0);
        assert!(!p.permits_local(&caller("alice", &[]), None));
        assert!(!p.permits_local(&caller("alice", &[]), Some(1)));
    }

    #[test]
    fn local_grants_bind_vm_slots_to_callers() {
        let p = parse_str(
            "p",
            "allow user alice local vm 1-10\nallow group kvm local\ndeny user mallory local vm 5\n\
             allow user bob local vm 7\nallow user carol switch br0\n",
        )
        .unwrap();
        let alice = caller("alice", &[]);
        assert!(p.permits_local(&alice, None));
        assert!(p.permits_local(&alice, Some(1)) && p.permits_local(&alice, Some(10)));
        assert!(!p.permits_local(&alice, Some(0)) && !p.permits_local(&alice, Some(11)));
        let mallory = caller("mallory", &["kvm"]);
        assert!(p.permits_local(&mallory, Some(4)) && p.permits_local(&mallory, None));
        assert!(
            !p.permits_local(&mallory, Some(5)),
            "deny of a slot beats the group's allow"
        );
        assert!(p.permits_local(&caller("bob", &[]), Some(7)));
        assert!(!p.permits_local(&caller("bob", &[]), Some(8)));
        // A switch grant is not a local grant, and the quota follows any tap grant.
        let carol = caller("carol", &[]);
        assert!(!p.permits_local(&carol, None));
        assert_eq!(p.quota_for(&carol), DEFAULT_QUOTA);
        assert_eq!(p.quota_for(&caller("dave", &[])), 0);
        let q = parse_str("p", "allow group kvm local\ndeny user mallory local\n").unwrap();
        assert!(!q.permits_local(&mallory, None) && !q.permits_local(&mallory, Some(3)));
    }

    #[test]
    fn allow_by_user_and_by_group() {
        let p = parse_str("p", "allow user alice switch br0\nallow group kvm switch br1\n").unwrap();
        let alice = caller("alice", &[]);
        let bob = caller("bob", &["kvm"]);
        assert!(p.permits_switch(&alice, &sw("br0")));
        assert!(!p.permits_switch(&alice, &sw("br1")));
        assert!(p.permits_switch(&bob, &sw("br1")));
        assert!(!p.permits_switch(&bob, &sw("br0")));
    }

    #[test]
    fn deny_beats_allow_in_any_order() {
        for text in [
            "allow user * switch *\ndeny user mallory switch br0\n",
            "deny user mallory switch br0\nallow user * switch *\n",
            "deny group evil switch *\nallow user * switch br0\nallow user mallory switch br0\n",
        ] {
            let p = parse_str("p", text).unwrap();
            let mallory = caller("mallory", &["evil"]);
            assert!(!p.permits_switch(&mallory, &sw("br0")), "{text}");
            assert!(p.permits_switch(&caller("alice", &[]), &sw("br0")), "{text}");
        }
    }

    #[test]
    fn wildcards() {
        let p = parse_str("p", "allow user * switch br0\nallow user alice switch *\n").unwrap();
        assert!(p.permits_switch(&caller("anyone", &[]), &sw("br0")));
        assert!(!p.permits_switch(&caller("anyone", &[]), &sw("br1")));
        assert!(p.permits_switch(&caller("alice", &[]), &sw("br1")));
        let nameless = Caller {
            uid: 4242,
            ..Caller::default()
        };
        assert!(p.permits_switch(&nameless, &sw("br0")));
        assert!(!p.permits_switch(&nameless, &sw("br1")));
    }

    /// CVE-2019-13164: a long name whose first 15 bytes match a rule must not match it. Policy names
    /// are validated (no truncation) and compared whole.
    #[test]
    fn long_names_never_match_by_prefix() {
        let (line, kind) = err("allow user * switch *\ndeny user * switch secretbridge123X\n");
        assert_eq!(line, 2);
        assert!(matches!(
            kind,
            PolicyErrorKind::BadSwitch(_, crate::name::NameError::TooLong)
        ));
        let p = parse_str("p", "allow user * switch secretbridge123\n").unwrap();
        assert!(p.permits_switch(&caller("a", &[]), &sw("secretbridge123")));
        assert!(!p.permits_switch(&caller("a", &[]), &sw("secretbridge12")));
    }

    #[test]
    fn exact_principal_matching() {
        // lxc-user-nic's strncmp let `bob` match `bobby` (PR #3112).
        let p = parse_str("p", "allow user bob switch br\nquota user bob 2\n").unwrap();
        assert!(!p.permits_switch(&caller("bobby", &[]), &sw("br")));
        assert!(!p.permits_switch(&caller("bob", &[]), &sw("br0")));
        assert_eq!(p.quota_for(&caller("bobby", &[])), 0);
        assert_eq!(p.quota_for(&caller("bob", &[])), 2);
    }

    #[test]
    fn groups_the_caller_is_not_in_deny_deterministically() {
        let p = parse_str("p", "allow group kvm switch br0\n").unwrap();
        assert!(!p.permits_switch(&caller("a", &[]), &sw("br0")));
        let many: Vec<String> = (0..65536).map(|i| format!("g{i}")).collect();
        let c = Caller {
            groups: many,
            ..caller("a", &[])
        };
        assert!(!p.permits_switch(&c, &sw("br0")));
    }

    #[test]
    fn quotas_user_then_group_then_default() {
        let p = parse_str(
            "p",
            "quota user * 3\nquota group kvm 5\nquota group big 9\nquota user alice 1\nquota user zero 0\n\
             quota group ops unlimited\nallow user * switch br0\n",
        )
        .unwrap();
        assert_eq!(p.quota_for(&caller("alice", &["big"])), 1);
        assert_eq!(p.quota_for(&caller("bob", &["kvm", "big"])), 9);
        assert_eq!(p.quota_for(&caller("bob", &["kvm"])), 5);
        assert_eq!(p.quota_for(&caller("carol", &[])), 3);
        assert_eq!(p.quota_for(&caller("zero", &["big"])), 0);
        assert_eq!(p.quota_for(&caller("dave", &["kvm", "ops"])), UNLIMITED);
    }

    #[test]
    fn a_grant_every_deny_overrides_gives_no_taps() {
        let quota = |text: &str| parse_str("p", text).unwrap().quota_for(&caller("bob", &[]));
        // Every grant denied: nothing, so quota 0.
        for text in [
            "allow user * switch br0\ndeny user bob switch br0\n",
            "allow user * switch br0\nallow user * switch *\ndeny user bob switch *\n",
            "allow user * local\ndeny user bob local\n",
            "allow user * switch br0\nallow user * local\ndeny group * switch *\ndeny user * local\n",
        ] {
            assert_eq!(quota(text), 0, "{text}");
        }
        // Something left: the default quota.
        for text in [
            // Every switch name but br0.
            "allow user * switch *\ndeny user bob switch br0\n",
            // br1 is not denied.
            "allow user * switch br0\nallow user bob switch br1\ndeny user bob switch br0\n",
            // Slots 1-5 are denied, but a local tap without addresses is not.
            "allow user bob local vm 1-5\ndeny user bob local vm 1-5\n",
        ] {
            assert_eq!(quota(text), DEFAULT_QUOTA, "{text}");
        }
    }

    #[test]
    fn ifgroups_and_rdomains() {
        let p = parse_str(
            "p",
            "ifgroup vms 42\nifgroup dmz 7\nrdomain 1 vrf-blue\nallow user alice ifgroup vms\n\
             allow user alice rdomain 1\ndeny user alice ifgroup dmz\nallow user * ifgroup *\n",
        )
        .unwrap();
        let alice = caller("alice", &[]);
        let vms = GroupName::new("vms").unwrap();
        let dmz = GroupName::new("dmz").unwrap();
        assert!(p.permits_ifgroup(&alice, &vms));
        assert!(!p.permits_ifgroup(&alice, &dmz));
        assert!(p.permits_ifgroup(&caller("bob", &[]), &dmz));
        assert_eq!(p.ifgroup_number(&vms), Some(42));
        assert!(p.permits_rdomain(&alice, 1));
        assert!(!p.permits_rdomain(&alice, 2));
        assert!(!p.permits_rdomain(&caller("bob", &[]), 1));
        assert_eq!(p.rdomain_vrf(1).map(IfName::as_str), Some("vrf-blue"));
    }

    #[test]
    fn local_prefixes() {
        let p = parse_str(
            "p",
            "local prefix 10.0.0.0/16\nlocal inet6 prefix fd12:3456:789a:1::/64\n",
        )
        .unwrap();
        assert_eq!(p.inet.to_string(), "10.0.0.0/16");
        assert_eq!(p.inet6.to_string(), "fd12:3456:789a:1::/64");
    }

    #[test]
    fn comments_blank_lines_and_tabs() {
        let p = parse_str("p", "  # c\n\tallow\tuser alice  switch br0 # trailing\n\n").unwrap();
        assert_eq!(p.rules.len(), 1);
    }

    #[test]
    fn crlf_line_ends_are_refused_even_in_a_comment() {
        // A CR is a control character like any other: the helper reads a line exactly as written.
        let e = parse_str("p", "# c\r\nallow user alice switch br0\n").unwrap_err();
        assert_eq!((e.line, e.kind), (1, PolicyErrorKind::BadText));
    }

    #[test]
    fn every_error_class_names_file_and_line() {
        use PolicyErrorKind as K;
        type Case = (&'static str, usize, fn(&K) -> bool);
        let cases: &[Case] = &[
            (
                "\n\nalow user a switch b\n",
                3,
                |k| matches!(k, K::UnknownKeyword(w) if w == "alow"),
            ),
            ("allow user\n", 1, |k| matches!(k, K::Expected(_))),
            ("allow user a switch\n", 1, |k| matches!(k, K::Expected(_))),
            (
                "allow user a bridge br0\n",
                1,
                |k| matches!(k, K::Unexpected(w, _) if w == "bridge"),
            ),
            (
                "allow person a switch br0\n",
                1,
                |k| matches!(k, K::Unexpected(w, _) if w == "person"),
            ),
            (
                "allow user a swtich br0\n",
                1,
                |k| matches!(k, K::Unexpected(w, _) if w == "swtich"),
            ),
            ("allow user a switch br0\r\n", 1, |k| matches!(k, K::BadText)),
            (
                "allow user a switch br0 extra\n",
                1,
                |k| matches!(k, K::Trailing(w) if w == "extra"),
            ),
            ("allow user -x switch br0\n", 1, |k| {
                matches!(k, K::BadPrincipal(_))
            }),
            ("allow user a/b switch br0\n", 1, |k| {
                matches!(k, K::BadPrincipal(_))
            }),
            ("allow user a switch b:r\n", 1, |k| matches!(k, K::BadSwitch(..))),
            ("allow user a switch ..\n", 1, |k| matches!(k, K::BadSwitch(..))),
            ("ifgroup vms1 4\n", 1, |k| matches!(k, K::BadGroup(..))),
            ("ifgroup vms 0\n", 1, |k| matches!(k, K::GroupZero)),
            ("ifgroup vms +4\n", 1, |k| matches!(k, K::BadNumber(_))),
            ("ifgroup vms 99999999999\n", 1, |k| matches!(k, K::BadNumber(_))),
            ("ifgroup vms 4\nifgroup vms 5\n", 2, |k| {
                matches!(k, K::Duplicate(_))
            }),
            ("ifgroup vms 4\nifgroup web 4\n", 2, |k| {
                matches!(k, K::Duplicate(_))
            }),
            ("rdomain 0 vrf0\n", 1, |k| matches!(k, K::RdomainRange)),
            ("rdomain 256 vrf0\n", 1, |k| matches!(k, K::RdomainRange)),
            ("rdomain 1 vrf/0\n", 1, |k| matches!(k, K::BadVrf(..))),
            ("rdomain 1 a\nrdomain 1 b\n", 2, |k| matches!(k, K::Duplicate(_))),
            ("quota user a 5000\n", 1, |k| matches!(k, K::QuotaRange)),
            ("quota user a 1\nquota user a 2\n", 2, |k| {
                matches!(k, K::Duplicate(_))
            }),
            ("quota user a -1\n", 1, |k| matches!(k, K::BadNumber(_))),
            ("local prefix 10.0.0.0/24\n", 1, |k| matches!(k, K::BadPrefix(..))),
            ("local prefix 10.0.0.0/8\nlocal prefix 10.0.0.0/8\n", 2, |k| {
                matches!(k, K::Duplicate(_))
            }),
            ("local inet6 prefix fd00::1/64\n", 1, |k| {
                matches!(k, K::BadPrefix(..))
            }),
            ("local inet6 fd00::/64\n", 1, |k| matches!(k, K::Expected(_))),
            ("local inet prefix 10.0.0.0/8\n", 1, |k| {
                matches!(k, K::Expected(_))
            }),
            ("\nallow user a ifgroup vms\n", 2, |k| {
                matches!(k, K::Undefined(..))
            }),
            ("allow user a rdomain 3\n", 1, |k| matches!(k, K::Undefined(..))),
            ("include users.conf\n", 1, |k| matches!(k, K::RelativeInclude(_))),
            ("include /etc/vmpriv/users.conf\n", 1, |k| {
                matches!(k, K::IncludeUnreadable(..))
            }),
            ("allow user a switch br0\x07\n", 1, |k| matches!(k, K::BadText)),
            ("allow user a local vm 5-2\n", 1, |k| matches!(k, K::VmRange(_))),
            ("allow user a local vm\n", 1, |k| matches!(k, K::Expected(_))),
            ("allow user a local vm x\n", 1, |k| matches!(k, K::BadNumber(_))),
            ("allow user a local vm 1-2-3\n", 1, |k| {
                matches!(k, K::BadNumber(_))
            }),
            ("allow user a local 1-2\n", 1, |k| matches!(k, K::Trailing(_))),
            ("allow user a local vm 1 2\n", 1, |k| matches!(k, K::Trailing(_))),
        ];
        for (text, line, check) in cases {
            let (l, kind) = err(text);
            assert_eq!(l, *line, "{text:?}");
            assert!(check(&kind), "{text:?}: {kind:?}");
            let shown = PolicyError {
                file: "p.conf".into(),
                line: l,
                kind,
            }
            .to_string();
            assert!(shown.starts_with(&format!("p.conf:{line}: ")), "{shown}");
        }
    }

    #[test]
    fn an_error_after_good_lines_fails_the_whole_file() {
        // qemu-bridge-helper kept the lines before an error: a typo silently removed the deny.
        let e = parse_str("p", "allow user * switch *\ndeny usr mallory switch *\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p:2: unknown word `usr`: expected `user` or `group`"
        );
    }

    #[test]
    fn includes_are_absolute_bounded_and_errors_name_the_included_file() {
        let mut read = |path: &str| match path {
            "/etc/vmpriv/users.conf" => Ok("allow user alice switch br0\n".to_owned()),
            "/etc/vmpriv/bad.conf" => Ok("\nallow user alice swich br0\n".to_owned()),
            "/etc/vmpriv/loop.conf" => Ok("include /etc/vmpriv/loop.conf\n".to_owned()),
            _ => Err("No such file or directory".to_owned()),
        };
        let p = parse("main", "include /etc/vmpriv/users.conf\n", &mut read).unwrap();
        assert!(p.permits_switch(&caller("alice", &[]), &sw("br0")));
        let e = parse("main", "include /etc/vmpriv/bad.conf\n", &mut read).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("/etc/vmpriv/bad.conf", 2));
        let e = parse("main", "include /etc/vmpriv/loop.conf\n", &mut read).unwrap_err();
        assert_eq!(e.kind, PolicyErrorKind::IncludeDepth);
        let e = parse("main", "include /nope\n", &mut read).unwrap_err();
        assert_eq!(
            e.to_string(),
            "main:1: cannot include `/nope`: No such file or directory"
        );
    }

    #[test]
    fn includes_nest_three_deep_and_no_deeper() {
        // main includes /1, /1 includes /2, /2 includes /3: three levels below the main file.
        let chain = |last: &'static str| {
            move |path: &str| match path {
                "/1" => Ok("include /2\n".to_owned()),
                "/2" => Ok("include /3\n".to_owned()),
                "/3" => Ok(last.to_owned()),
                "/4" => Ok("allow user alice switch br0\n".to_owned()),
                _ => Err("No such file or directory".to_owned()),
            }
        };
        let p = parse(
            "main",
            "include /1\n",
            &mut chain("allow user alice switch br0\n"),
        )
        .unwrap();
        assert!(p.permits_switch(&caller("alice", &[]), &sw("br0")));
        let e = parse("main", "include /1\n", &mut chain("include /4\n")).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.kind),
            ("/3", 1, PolicyErrorKind::IncludeDepth)
        );
    }

    #[test]
    fn edges_of_every_number() {
        let alice = caller("alice", &[]);
        // The largest rdomain and quota are accepted, one more is not.
        let p = parse_str(
            "p",
            "rdomain 255 vrf-max\nallow user * rdomain 255\nallow user * local\nquota user * 4096\n",
        )
        .unwrap();
        assert_eq!(p.rdomain_vrf(255).map(IfName::as_str), Some("vrf-max"));
        assert!(p.permits_rdomain(&alice, 255));
        assert_eq!(p.quota_for(&alice), 4096);
        assert_eq!(err("rdomain 256 vrf-x\n"), (1, PolicyErrorKind::RdomainRange));
        assert_eq!(
            err("allow user * rdomain 256\n"),
            (1, PolicyErrorKind::RdomainRange)
        );
        assert_eq!(err("quota user * 4097\n"), (1, PolicyErrorKind::QuotaRange));
        // Ten digits are a number, eleven are not (even when the value would fit).
        let p = parse_str("p", "ifgroup big 4294967295\n").unwrap();
        assert_eq!(p.ifgroup_number(&GroupName::new("big").unwrap()), Some(u32::MAX));
        assert_eq!(
            err("ifgroup small 00000000001\n"),
            (1, PolicyErrorKind::BadNumber("00000000001".into()))
        );
    }

    #[test]
    fn any_rdomain_and_two_rdomain_lines() {
        let p = parse_str(
            "p",
            "rdomain 1 vrf-a\nrdomain 2 vrf-b\nallow user * rdomain *\ndeny user mallory rdomain 2\n",
        )
        .unwrap();
        assert_eq!(p.rdomain_vrf(1).map(IfName::as_str), Some("vrf-a"));
        assert_eq!(p.rdomain_vrf(2).map(IfName::as_str), Some("vrf-b"));
        assert!(p.permits_rdomain(&caller("alice", &[]), 2));
        assert!(p.permits_rdomain(&caller("alice", &[]), 7));
        assert!(!p.permits_rdomain(&caller("mallory", &[]), 2));
        let dup = |t| PolicyErrorKind::Duplicate(format!("rdomain {t}"));
        assert_eq!(
            err("rdomain 1 vrf-a\nrdomain 1 vrf-b\n"),
            (2, dup("1 or VRF vrf-b"))
        );
        assert_eq!(
            err("rdomain 1 vrf-a\nrdomain 2 vrf-a\n"),
            (2, dup("2 or VRF vrf-a"))
        );
    }

    #[test]
    fn principals_with_dots_dashes_and_underscores() {
        let p = parse_str(
            "p",
            "allow user a.b_c-d switch br0\nallow group x_y switch br1\nallow group x.y switch br2\n",
        )
        .unwrap();
        assert!(p.permits_switch(&caller("a.b_c-d", &[]), &sw("br0")));
        assert!(p.permits_switch(&caller("bob", &["x_y"]), &sw("br1")));
        assert!(p.permits_switch(&caller("bob", &["x.y"]), &sw("br2")));
    }

    #[test]
    fn subjects_print_as_written() {
        assert_eq!(Subject::User("alice".into()).to_string(), "user alice");
        assert_eq!(Subject::Group("kvm".into()).to_string(), "group kvm");
        assert_eq!(Subject::Anyone.to_string(), "user *");
        assert_eq!(
            err("quota group kvm 1\nquota group kvm 2\n"),
            (2, PolicyErrorKind::Duplicate("quota group kvm".into()))
        );
    }
}
