//! The validator: a pure function from (decoded request, fds carried, caller, policy) to a
//! [`ValidRequest`] or the error to reply. Syntax is checked first (so a malformed name is `Invalid`
//! whatever the policy says), then policy (`Denied`). The helper never acts on anything else.

use crate::addr::{Inet4Pair, Inet6Pair, Slot, local_inet, local_inet6};
use crate::name::{Description, GroupName, IfName, NameError};
use crate::policy::{Caller, Policy, RDOMAIN_MAX};
use crate::wire::{Error, FdIndex, IfConfig, Invalid, MAX_DESTROY, MAX_QUEUES, Request};

/// A routing domain the caller may use, and the VRF device that implements it. Only the validator
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrf {
    rdomain: u32,
    device: IfName,
}

impl Vrf {
    /// vmd's rdomain number, 1..=255.
    pub fn rdomain(&self) -> u32 {
        self.rdomain
    }
    /// The admin-created VRF device the policy maps it to.
    pub fn device(&self) -> &IfName {
        &self.device
    }
}

/// An interface group the caller may use, and its `IFLA_GROUP` number. Only the validator makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfGroup {
    name: GroupName,
    number: u32,
}

impl IfGroup {
    /// The policy's name for it.
    pub fn name(&self) -> &GroupName {
        &self.name
    }
    /// The kernel's number for it.
    pub fn number(&self) -> u32 {
        self.number
    }
}

/// A validated [`IfConfig`]: every name checked, every grant checked, addresses computed. Its fields
/// are private: only the validator makes one, so an operation that takes one acts on nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig {
    description: Option<Description>,
    switch: Option<IfName>,
    vrf: Option<Vrf>,
    group: Option<IfGroup>,
    up: Option<bool>,
    inet: Option<Inet4Pair>,
    inet6: Option<Inet6Pair>,
    slot: Option<Slot>,
}

impl ValidConfig {
    /// Description to set.
    pub fn description(&self) -> Option<&Description> {
        self.description.as_ref()
    }
    /// Granted switch to attach to.
    pub fn switch(&self) -> Option<&IfName> {
        self.switch.as_ref()
    }
    /// Granted VRF to enslave to (never set together with `switch`).
    pub fn vrf(&self) -> Option<&Vrf> {
        self.vrf.as_ref()
    }
    /// Granted interface group.
    pub fn group(&self) -> Option<&IfGroup> {
        self.group.as_ref()
    }
    /// Up or down.
    pub fn up(&self) -> Option<bool> {
        self.up
    }
    /// Host side of the (vm, nic) /31, computed from the policy's prefix.
    pub fn inet(&self) -> Option<Inet4Pair> {
        self.inet
    }
    /// Host side of the (vm, nic) /96, computed from the policy's prefixes.
    pub fn inet6(&self) -> Option<Inet6Pair> {
        self.inet6
    }
    /// The (vm, nic) whose local addresses are asked for, if any.
    pub fn slot(&self) -> Option<Slot> {
        self.slot
    }
}

/// What the helper may do, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidOp {
    /// Answer the handshake.
    Hello,
    /// Report the quota and the taps in use (the rules are public: `vmpriv whoami` reads them).
    Status {
        /// The caller's live-tap limit.
        quota: u32,
    },
    /// Create a tap, check the quota, configure it.
    CreateTap {
        /// 1..=8.
        queues: u8,
        /// `IFF_VNET_HDR`.
        vnet_hdr: bool,
        /// The caller's live-tap limit: a create takes one of its slots that no tap holds in the kernel.
        quota: u32,
        /// Applied before the fds are handed over.
        config: ValidConfig,
    },
    /// Configure the passed tap.
    Configure {
        /// Which fd of the message.
        tap: FdIndex,
        /// What to set.
        config: ValidConfig,
    },
    /// Report a granted switch.
    SwitchExists {
        /// The granted name.
        switch: IfName,
    },
    /// Remove the caller's own taps that no fd holds any more (made persistent through their fds).
    RemoveLeftovers,
    /// Delete the taps passed as fds (every fd of the message), in one batch.
    DestroyTaps {
        /// How many fds, 1..=MAX_DESTROY.
        count: u8,
        /// Further messages follow in this batch: set these taps aside, delete nothing yet.
        more: bool,
        /// The interface group numbers the policy defines: the batch group must be none of them.
        groups_in_use: Vec<u32>,
    },
    /// Undo configuration on the passed tap.
    Reset {
        /// Which fd of the message.
        tap: FdIndex,
        /// The local prefixes whose addresses are removed.
        policy_prefixes: (crate::addr::Inet4Prefix, crate::addr::Inet6Prefix),
    },
}

/// A request that passed validation, holding the fds its message carried: as many as it needs, and
/// the one it names among them. Only [`validate`] builds one. (`F` is the helper's `OwnedFd`; the
/// checks, which have no fds, use `()`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest<F> {
    op: ValidOp,
    fds: Vec<F>,
}

impl<F> ValidRequest<F> {
    /// What to do.
    pub fn op(&self) -> &ValidOp {
        &self.op
    }
    /// Every fd of the message.
    pub fn fds(&self) -> &[F] {
        &self.fds
    }
    /// The fd `i` names (validated in range).
    pub fn fd(&self, i: FdIndex) -> Option<&F> {
        self.fds.get(usize::from(i.0))
    }
}

/// Checks `req`, which arrived with `fds`, from `caller`, against `policy`. On a refusal the fds are
/// dropped (closed) here.
pub fn validate<F>(
    req: &Request,
    fds: Vec<F>,
    caller: &Caller,
    policy: &Policy,
) -> Result<ValidRequest<F>, Error> {
    let invalid = Error::Invalid;
    let nfds = fds.len();
    let expected = req.fds_expected();
    if nfds != expected {
        let got = u8::try_from(nfds).unwrap_or(u8::MAX);
        return Err(invalid(Invalid::FdCount {
            expected: u8::try_from(expected).unwrap_or(u8::MAX),
            got,
        }));
    }
    if let Some(FdIndex(i)) = req.tap()
        && usize::from(i) >= nfds
    {
        return Err(invalid(Invalid::FdIndex));
    }
    let op = match req {
        Request::Hello => ValidOp::Hello,
        Request::Status => ValidOp::Status {
            quota: policy.quota_for(caller),
        },
        Request::CreateTap {
            queues,
            vnet_hdr,
            config,
        } => {
            if !(1..=MAX_QUEUES).contains(queues) {
                return Err(invalid(Invalid::Queues));
            }
            let config = config_of(config, caller, policy)?;
            // No grant, no tap: a tap on no switch is a local tap, which needs its own grant.
            if config.switch.is_none() && !policy.permits_local(caller, None) {
                return Err(Error::Denied);
            }
            ValidOp::CreateTap {
                queues: *queues,
                vnet_hdr: *vnet_hdr,
                quota: policy.quota_for(caller),
                config,
            }
        }
        Request::Configure { tap, config } => ValidOp::Configure {
            tap: *tap,
            config: config_of(config, caller, policy)?,
        },
        Request::SwitchExists { switch } => {
            let switch = IfName::new(switch).map_err(|e| invalid(Invalid::SwitchName(e)))?;
            if !policy.permits_switch(caller, &switch) {
                return Err(Error::Denied);
            }
            ValidOp::SwitchExists { switch }
        }
        Request::Reset { tap } => ValidOp::Reset {
            tap: *tap,
            policy_prefixes: (policy.inet, policy.inet6),
        },
        Request::RemoveLeftovers => ValidOp::RemoveLeftovers,
        Request::DestroyTaps { count, more } => {
            if *count == 0 || *count > MAX_DESTROY {
                return Err(invalid(Invalid::FdCount {
                    expected: (*count).clamp(1, MAX_DESTROY),
                    got: *count,
                }));
            }
            ValidOp::DestroyTaps {
                count: *count,
                more: *more,
                groups_in_use: policy.ifgroups.iter().map(|&(_, n)| n).collect(),
            }
        }
    };
    Ok(ValidRequest { op, fds })
}

/// Syntax of every field first, then the grants, so that the error a caller sees for a malformed name
/// never depends on the policy.
fn config_of(config: &IfConfig, caller: &Caller, policy: &Policy) -> Result<ValidConfig, Error> {
    let invalid = Error::Invalid;
    let description = checked(
        config.description.as_deref(),
        Description::new,
        Invalid::Description,
    )?;
    let switch = checked(config.switch.as_deref(), IfName::new, Invalid::SwitchName)?;
    let group = checked(config.group.as_deref(), GroupName::new, Invalid::Group)?;
    let rdomain = match config.rdomain {
        Some(n) if n > RDOMAIN_MAX => return Err(invalid(Invalid::Rdomain)),
        // rdomain 0 is the default table: nothing to do (and never IFLA_MASTER=0, which would detach
        // the tap from its switch).
        Some(0) | None => None,
        Some(n) => Some(n),
    };
    if rdomain.is_some() && switch.is_some() {
        return Err(invalid(Invalid::RdomainOnSwitchedTap));
    }
    let address = |e| invalid(Invalid::Address(e));
    let (inet, inet6) = match config.local {
        None => (None, None),
        Some(l) => (
            l.inet
                .then(|| local_inet(policy.inet, l.vm, l.nic).map_err(address))
                .transpose()?,
            l.inet6
                .then(|| local_inet6(policy.inet, policy.inet6, l.vm, l.nic).map_err(address))
                .transpose()?,
        ),
    };

    if let Some(s) = &switch
        && !policy.permits_switch(caller, s)
    {
        return Err(Error::Denied);
    }
    // A VM slot's addresses belong to whoever the policy gives that slot: one user cannot take another's.
    if let Some(l) = config.local
        && !policy.permits_local(caller, Some(l.vm))
    {
        return Err(Error::Denied);
    }
    let group = match group {
        None => None,
        Some(name) => match policy.ifgroup_number(&name) {
            Some(number) if policy.permits_ifgroup(caller, &name) => Some(IfGroup { name, number }),
            _ => return Err(Error::Denied),
        },
    };
    let vrf = match rdomain {
        None => None,
        Some(rdomain) => match policy.rdomain_vrf(rdomain) {
            Some(device) if policy.permits_rdomain(caller, rdomain) => Some(Vrf {
                rdomain,
                device: device.clone(),
            }),
            _ => return Err(Error::Denied),
        },
    };
    Ok(ValidConfig {
        description,
        switch,
        vrf,
        group,
        up: config.up,
        inet,
        inet6,
        slot: config
            .local
            .filter(|l| l.inet || l.inet6)
            .map(|l| Slot { vm: l.vm, nic: l.nic }),
    })
}

/// An optional name field, validated by `new` when present; its error is the field's `Invalid`.
fn checked<T>(
    value: Option<&str>,
    new: fn(&str) -> Result<T, NameError>,
    invalid: fn(NameError) -> Invalid,
) -> Result<Option<T>, Error> {
    value.map(new).transpose().map_err(|e| Error::Invalid(invalid(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::AddrError;
    use crate::name::NameError;
    use crate::policy::parse_str;
    use crate::wire::LocalRequest;

    const POLICY: &str = "\
ifgroup vms 42
ifgroup dmz 7
rdomain 1 vrf-blue
allow user alice switch br0
allow user alice switch secretbridge123
allow group kvm switch br1
deny user mallory switch *
allow user * ifgroup vms
allow user alice rdomain 1
allow user alice local vm 1-10
allow group kvm local
quota user alice 2
";

    /// A `Configure` of the message's one tap.
    fn on_tap(config: IfConfig) -> Request {
        Request::Configure {
            tap: FdIndex(0),
            config,
        }
    }

    fn local(vm: u32, nic: u32, inet: bool, inet6: bool) -> IfConfig {
        IfConfig {
            local: Some(LocalRequest { vm, nic, inet, inet6 }),
            ..IfConfig::default()
        }
    }

    fn policy() -> Policy {
        parse_str("test", POLICY).unwrap()
    }

    fn alice() -> Caller {
        Caller {
            uid: 1000,
            user: Some("alice".into()),
            gid: 1000,
            supplementary: vec![],
            groups: vec!["alice".into()],
        }
    }

    fn mallory() -> Caller {
        Caller {
            uid: 1001,
            user: Some("mallory".into()),
            gid: 1001,
            supplementary: vec![36],
            groups: vec!["kvm".into()],
        }
    }

    fn check(req: &Request, caller: &Caller) -> Result<ValidOp, Error> {
        validate(req, vec![(); req.fds_expected()], caller, &policy()).map(|v| v.op().clone())
    }

    fn create(config: IfConfig) -> Request {
        Request::CreateTap {
            queues: 1,
            vnet_hdr: false,
            config,
        }
    }

    fn sw(s: &str) -> IfConfig {
        IfConfig {
            switch: Some(s.into()),
            ..IfConfig::default()
        }
    }

    #[test]
    fn create_tap_on_a_granted_switch() {
        let op = check(&create(sw("br0")), &alice()).unwrap();
        let ValidOp::CreateTap {
            queues: 1,
            vnet_hdr: false,
            quota: 2,
            config,
        } = op
        else {
            panic!("{op:?}")
        };
        assert_eq!(config.switch.unwrap().as_str(), "br0");
    }

    #[test]
    fn switch_not_granted_and_switch_absent_are_the_same_denied() {
        assert_eq!(check(&create(sw("br1")), &alice()), Err(Error::Denied));
        assert_eq!(check(&create(sw("nosuchbr")), &alice()), Err(Error::Denied));
        assert_eq!(
            check(&Request::SwitchExists { switch: "br1".into() }, &alice()),
            Err(Error::Denied)
        );
        assert_eq!(
            check(
                &Request::SwitchExists {
                    switch: "nosuchbr".into()
                },
                &alice()
            ),
            Err(Error::Denied)
        );
    }

    #[test]
    fn deny_beats_a_group_allow() {
        assert_eq!(check(&create(sw("br1")), &mallory()), Err(Error::Denied));
    }

    /// CVE-2019-13164: 16+ bytes whose first 15 match an allowed or denied switch.
    #[test]
    fn long_switch_name_is_rejected_not_truncated() {
        for name in [
            "secretbridge123X",
            "secretbridge123secretbridge123",
            &"b".repeat(200),
        ] {
            let e = Err(Error::Invalid(Invalid::SwitchName(NameError::TooLong)));
            assert_eq!(check(&create(sw(name)), &alice()), e);
            assert_eq!(check(&Request::SwitchExists { switch: name.into() }, &alice()), e);
            assert_eq!(check(&on_tap(sw(name)), &alice()), e);
        }
    }

    #[test]
    fn bad_names_are_invalid_before_any_policy_lookup() {
        for (name, err) in [
            ("", NameError::Empty),
            ("..", NameError::Dot),
            ("a/b", NameError::BadChar),
        ] {
            // mallory is denied every switch, yet the syntax error comes first.
            assert_eq!(
                check(&create(sw(name)), &mallory()),
                Err(Error::Invalid(Invalid::SwitchName(err)))
            );
        }
    }

    #[test]
    fn groups_come_from_the_policy_only() {
        let g = |name: &str| {
            create(IfConfig {
                group: Some(name.into()),
                ..IfConfig::default()
            })
        };
        let op = check(&g("vms"), &mallory()).unwrap();
        let ValidOp::CreateTap { config, .. } = op else {
            panic!()
        };
        assert_eq!(config.group().map(IfGroup::number), Some(42));
        assert_eq!(check(&g("dmz"), &alice()), Err(Error::Denied));
        assert_eq!(check(&g("nosuch"), &alice()), Err(Error::Denied));
        assert_eq!(
            check(&g("vms1"), &alice()),
            Err(Error::Invalid(Invalid::Group(NameError::GroupEndsInDigit)))
        );
        assert_eq!(
            check(&g("averylonggroupname"), &alice()),
            Err(Error::Invalid(Invalid::Group(NameError::TooLong)))
        );
        let set = on_tap(IfConfig {
            group: Some("dmz".into()),
            ..IfConfig::default()
        });
        assert_eq!(check(&set, &alice()), Err(Error::Denied));
    }

    #[test]
    fn rdomains_come_from_the_policy_only() {
        let r = |n: u32| {
            on_tap(IfConfig {
                rdomain: Some(n),
                ..IfConfig::default()
            })
        };
        let op = check(&r(1), &alice()).unwrap();
        let ValidOp::Configure { config, .. } = op else {
            panic!()
        };
        assert_eq!(
            config.vrf().map(|v| v.device().as_str().to_owned()),
            Some("vrf-blue".into())
        );
        assert_eq!(check(&r(1), &mallory()), Err(Error::Denied));
        assert_eq!(check(&r(2), &alice()), Err(Error::Denied));
        assert_eq!(check(&r(256), &alice()), Err(Error::Invalid(Invalid::Rdomain)));
        // rdomain 0: the default table, nothing to do.
        let ValidOp::Configure { config, .. } = check(&r(0), &mallory()).unwrap() else {
            panic!()
        };
        assert_eq!(
            config,
            config_of(&IfConfig::default(), &mallory(), &policy()).unwrap()
        );
        assert!(config.vrf().is_none());
    }

    #[test]
    fn rdomain_with_a_switch_is_refused() {
        let c = IfConfig {
            switch: Some("br0".into()),
            rdomain: Some(1),
            ..IfConfig::default()
        };
        assert_eq!(
            check(&create(c), &alice()),
            Err(Error::Invalid(Invalid::RdomainOnSwitchedTap))
        );
    }

    #[test]
    fn addresses_are_computed_never_taken() {
        let local = |vm, nic, inet6| local(vm, nic, true, inet6);
        let ValidOp::CreateTap { config, .. } = check(&create(local(2, 1, true)), &mallory()).unwrap() else {
            panic!()
        };
        assert_eq!(config.inet.unwrap().host().to_string(), "100.64.2.4");
        assert_eq!(config.inet6.unwrap().host().to_string(), "fd00::6440:205:0:1");
        let ValidOp::CreateTap { config, .. } = check(&create(local(2, 1, false)), &mallory()).unwrap()
        else {
            panic!()
        };
        assert!(config.inet6.is_none());
        let e = |a| Err(Error::Invalid(Invalid::Address(a)));
        assert_eq!(
            check(&create(local(1, 127, false)), &alice()),
            e(AddrError::NicOutOfRange)
        );
        assert_eq!(
            check(&create(local(16385, 0, false)), &alice()),
            e(AddrError::VmOutOfRange)
        );
        let single = on_tap(super::tests::local(16384, 0, false, true));
        assert_eq!(check(&single, &alice()), e(AddrError::VmOutOfRange));
        let single = on_tap(super::tests::local(1, 0, true, false));
        let ValidOp::Configure { config, .. } = check(&single, &alice()).unwrap() else {
            panic!()
        };
        assert_eq!(config.inet.unwrap().host().to_string(), "100.64.1.2");
        assert!(config.inet6.is_none());
        let single = on_tap(super::tests::local(1, 0, false, true));
        let ValidOp::Configure { config, .. } = check(&single, &alice()).unwrap() else {
            panic!()
        };
        assert!(config.inet.is_none() && config.inet6.is_some());
    }

    #[test]
    fn a_valid_request_holds_the_fds_it_was_checked_against() {
        let req = Request::Configure {
            tap: FdIndex(0),
            config: IfConfig::default(),
        };
        let v = validate(&req, vec!["tap"], &alice(), &policy()).unwrap();
        assert_eq!(v.fds(), ["tap"]);
        assert_eq!((v.fd(FdIndex(0)), v.fd(FdIndex(1))), (Some(&"tap"), None));
    }

    #[test]
    fn no_grant_no_tap_and_vm_slots_belong_to_their_grantee() {
        let local = |vm, nic| local(vm, nic, true, true);
        let stranger = Caller {
            uid: 4242,
            user: Some("stranger".into()),
            gid: 4242,
            supplementary: vec![],
            groups: vec![],
        };
        // Nothing names the stranger: no local tap, no addresses, no switch, quota 0.
        assert_eq!(check(&create(IfConfig::default()), &stranger), Err(Error::Denied));
        assert_eq!(check(&create(local(1, 0)), &stranger), Err(Error::Denied));
        let add = |vm| on_tap(super::tests::local(vm, 0, true, false));
        assert_eq!(check(&add(1), &stranger), Err(Error::Denied));
        assert_eq!(policy().quota_for(&stranger), 0);
        // alice holds slots 1-10 only; kvm members hold every slot.
        assert!(check(&create(local(10, 3)), &alice()).is_ok());
        assert_eq!(check(&create(local(11, 0)), &alice()), Err(Error::Denied));
        assert_eq!(check(&add(11), &alice()), Err(Error::Denied));
        let add6 = on_tap(super::tests::local(11, 0, false, true));
        assert_eq!(check(&add6, &alice()), Err(Error::Denied));
        assert!(check(&add6, &mallory()).is_ok());
        // A switched tap with local addresses needs both grants.
        let both = IfConfig {
            switch: Some("br0".into()),
            ..local(12, 0)
        };
        assert_eq!(check(&create(both), &alice()), Err(Error::Denied));
        assert!(check(&Request::RemoveLeftovers, &stranger).is_ok());
    }

    #[test]
    fn descriptions_are_checked() {
        let d = |t: &str| {
            on_tap(IfConfig {
                description: Some(t.into()),
                ..IfConfig::default()
            })
        };
        assert!(check(&d("vm1-if0-web"), &alice()).is_ok());
        assert_eq!(
            check(&d(&"x".repeat(64)), &alice()),
            Err(Error::Invalid(Invalid::Description(
                NameError::DescriptionTooLong
            )))
        );
        assert_eq!(
            check(&d("esc\x1b[2J"), &alice()),
            Err(Error::Invalid(Invalid::Description(
                NameError::DescriptionNotPrintable
            )))
        );
    }

    #[test]
    fn queue_counts() {
        for (q, ok) in [(0, false), (1, true), (8, true), (9, false), (255, false)] {
            let req = Request::CreateTap {
                queues: q,
                vnet_hdr: true,
                config: IfConfig::default(),
            };
            assert_eq!(check(&req, &alice()).is_ok(), ok, "queues {q}");
        }
    }

    #[test]
    fn fd_counts_and_indices() {
        let p = policy();
        let tap_req = on_tap(IfConfig {
            up: Some(true),
            ..IfConfig::default()
        });
        for n in [0, 2, 250] {
            let got = u8::try_from(n).unwrap();
            assert_eq!(
                validate(&tap_req, vec![(); n], &alice(), &p),
                Err(Error::Invalid(Invalid::FdCount { expected: 1, got }))
            );
        }
        assert_eq!(
            validate(&Request::Status, vec![()], &alice(), &p),
            Err(Error::Invalid(Invalid::FdCount { expected: 0, got: 1 }))
        );
        assert_eq!(
            validate(
                &Request::Configure {
                    tap: FdIndex(1),
                    config: IfConfig::default()
                },
                vec![()],
                &alice(),
                &p
            ),
            Err(Error::Invalid(Invalid::FdIndex))
        );
        assert_eq!(
            validate(&create(IfConfig::default()), vec![(); 1000], &alice(), &p),
            Err(Error::Invalid(Invalid::FdCount {
                expected: 0,
                got: 255
            }))
        );
    }

    #[test]
    fn every_single_operation_validates() {
        let t = FdIndex(0);
        let reqs = [
            Request::Hello,
            Request::Status,
            Request::Configure {
                tap: t,
                config: sw("br0"),
            },
            on_tap(IfConfig {
                up: Some(true),
                ..IfConfig::default()
            }),
            Request::Reset { tap: t },
            Request::SwitchExists { switch: "br0".into() },
        ];
        for r in reqs {
            assert!(check(&r, &alice()).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn status_gives_the_callers_quota() {
        let ValidOp::Status { quota } = check(&Request::Status, &alice()).unwrap() else {
            panic!()
        };
        assert_eq!(quota, 2);
    }

    /// What an operation reads of a validated config, through the accessors the helper uses, is
    /// what was asked and granted.
    #[test]
    fn a_valid_config_hands_out_what_was_validated() {
        let p = policy();
        let asked = IfConfig {
            description: Some("vm 3".into()),
            switch: Some("br0".into()),
            group: Some("vms".into()),
            up: Some(false),
            ..local(3, 1, true, true)
        };
        let Ok(ValidOp::Configure { config: c, .. }) = check(&on_tap(asked), &alice()) else {
            panic!()
        };
        assert_eq!(c.description().map(Description::as_str), Some("vm 3"));
        assert_eq!(c.switch().map(IfName::as_str), Some("br0"));
        assert_eq!(
            c.group().map(|g| (g.name().as_str(), g.number())),
            Some(("vms", 42))
        );
        assert_eq!(c.up(), Some(false));
        assert_eq!(c.inet(), Some(local_inet(p.inet, 3, 1).unwrap()));
        assert_eq!(c.inet6(), Some(local_inet6(p.inet, p.inet6, 3, 1).unwrap()));
        assert_eq!(c.slot(), Some(Slot { vm: 3, nic: 1 }));
        assert_eq!(c.vrf(), None);
        // The largest rdomain, and a slot claimed for one family alone or for none.
        let p = parse_str(
            "t",
            "rdomain 255 vrf-max\nallow user * rdomain 255\nallow user * local\n",
        )
        .unwrap();
        let valid = |config| match validate(&on_tap(config), vec![()], &alice(), &p).map(|v| v.op().clone()) {
            Ok(ValidOp::Configure { config, .. }) => config,
            other => panic!("{other:?}"),
        };
        let c = valid(IfConfig {
            rdomain: Some(255),
            up: Some(true),
            ..local(2, 0, true, false)
        });
        assert_eq!(
            c.vrf().map(|v| (v.rdomain(), v.device().as_str())),
            Some((255, "vrf-max"))
        );
        assert_eq!(
            (c.up(), c.slot(), c.inet6()),
            (Some(true), Some(Slot { vm: 2, nic: 0 }), None)
        );
        let c = valid(local(4, 2, false, true));
        assert_eq!(
            (c.up(), c.slot(), c.inet()),
            (None, Some(Slot { vm: 4, nic: 2 }), None)
        );
        assert_eq!(valid(local(4, 2, false, false)).slot(), None);
        assert_eq!(
            validate(
                &on_tap(IfConfig {
                    rdomain: Some(256),
                    ..IfConfig::default()
                }),
                vec![()],
                &alice(),
                &p
            ),
            Err(Error::Invalid(Invalid::Rdomain))
        );
    }

    #[test]
    fn destroy_takes_one_to_max_destroy_fds() {
        let p = policy();
        let destroy = |count| Request::DestroyTaps { count, more: false };
        for count in [1, MAX_DESTROY] {
            let op =
                validate(&destroy(count), vec![(); usize::from(count)], &alice(), &p).map(|v| v.op().clone());
            assert!(
                matches!(op, Ok(ValidOp::DestroyTaps { count: c, more: false, .. }) if c == count),
                "{count}: {op:?}"
            );
        }
        for (count, expected) in [(0, 1), (MAX_DESTROY + 1, MAX_DESTROY)] {
            assert_eq!(
                validate(&destroy(count), vec![(); usize::from(count)], &alice(), &p),
                Err(Error::Invalid(Invalid::FdCount { expected, got: count }))
            );
        }
    }
}
