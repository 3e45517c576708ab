//! One function per operation: a validated request in, the kernel's state changed, a reply out. Every
//! operation first checks what it can without a change (kinds, ownership, masters, addresses in use);
//! a failure part-way undoes what this request changed (see [`crate::configure`], and docs/design.md's
//! "All or nothing" for where that stops). This module dispatches and owns the tap's life (create,
//! destroy, leftovers); configuring a link is `configure`'s, which never calls back here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libc::{IFF_MULTI_QUEUE, IFF_TUN_EXCL};
use nix::errno::Errno;
use vmpriv_protocol::validate::{ValidConfig, ValidOp};
use vmpriv_protocol::wire::{Status, Unsupported};
use vmpriv_protocol::{Error, Invalid, Response, TapInfo, ValidRequest};

use crate::configure::{
    Batch, Ctx, NetNs, Plan, SetAside, check_config, configure, configure_checked, kernel, reset, tap_info,
};
use crate::lookup::{self, IFLA_GROUP, Link, Lookups};
use crate::netlink::{IfIndex, Msg, NLM_F_ACK, RTM_DELLINK};
use crate::startup::impossible;
use crate::tap::{
    IFF_TAP, OrKernel, SLOTS_MAX, create_marked, delete_link, find_bridge, kernel_io, link_name, mark,
    opened_tun, own, quiet_and_mac, set_u32, take_tun_fds, tap_flags,
};
use crate::{sys, sys_session};

const TUN_TYPE_MASK: u16 = 0x000f;

/// The uid a link's name marks, if it is a mark (exactly as [`mark`] writes it).
pub(crate) fn marked_uid(link: &Link) -> Option<u32> {
    let name = link.name.as_deref()?;
    let (uid, slot) = name.strip_prefix("vp")?.split_once('-')?;
    let uid = u32::from_str_radix(uid, 16).ok()?;
    let slot = u32::from_str_radix(slot, 16).ok()?;
    (mark(uid, slot) == name && slot < SLOTS_MAX).then_some(uid)
}

/// A reply and the fds that go with it.
pub(crate) struct Outcome {
    /// The reply.
    pub(crate) response: Response,
    /// Tap queue fds (after `CreateTap`).
    pub(crate) fds: Vec<OwnedFd>,
    /// What the audit line names.
    pub(crate) target: String,
}

/// Runs a validated request (the caller drops it, closing its fds, before it replies).
pub(crate) fn execute(ctx: &mut Ctx, valid: &ValidRequest<OwnedFd>) -> Result<Outcome, Error> {
    let tap_fd = |i| {
        valid
            .fd(i)
            .unwrap_or_else(|| impossible("a validated fd index out of range"))
    };
    match valid.op() {
        ValidOp::Hello => Ok(plain(
            Response::Hello {
                version: vmpriv_protocol::wire::VERSION,
            },
            "-",
        )),
        ValidOp::Status { quota } => {
            let in_use = u32::try_from(caller_taps(ctx)?.len()).unwrap_or(u32::MAX);
            let status = Status {
                uid: ctx.caller.uid,
                user: ctx.caller.user.clone(),
                quota: *quota,
                in_use,
            };
            Ok(plain(Response::Status(status), "-"))
        }
        ValidOp::SwitchExists { switch } => {
            let bridge = find_bridge(ctx, switch)?;
            let response = Response::Switch {
                name: switch.to_string(),
                ifindex: bridge.index.get(),
                mtu: bridge.mtu.unwrap_or(0),
            };
            Ok(plain(response, switch.as_str()))
        }
        ValidOp::CreateTap {
            queues,
            vnet_hdr,
            quota,
            config,
        } => create_tap(ctx, *queues, *vnet_hdr, *quota, config),
        ValidOp::Configure { tap, config } => {
            let link = resolve_tap(ctx, tap_fd(*tap).as_fd())?;
            // A tap on no switch that comes up is a local tap: that needs the local grant, also when
            // it got there by a Reset that detached it from its switch.
            let local = link.master.is_none() && config.switch().is_none() && config.vrf().is_none();
            if local && config.up() == Some(true) && !ctx.policy.permits_local(&ctx.caller, None) {
                log::info!("uid={} may not have a local tap up", ctx.caller.uid);
                return Err(Error::Denied);
            }
            let info = configure(ctx, &link, config)?;
            Ok(plain(Response::Tap(info), &link_name(&link)))
        }
        ValidOp::DestroyTaps {
            more, groups_in_use, ..
        } => destroy_taps(ctx, valid.fds(), *more, groups_in_use).map(|response| plain(response, "-")),
        ValidOp::RemoveLeftovers => {
            remove_leftovers(ctx).map(|count| plain(Response::Removed { count }, "-"))
        }
        ValidOp::Reset { tap, policy_prefixes } => {
            let link = resolve_tap(ctx, tap_fd(*tap).as_fd())?;
            reset(ctx, &link, *policy_prefixes)?;
            Ok(plain(Response::Tap(tap_info(&link)), &link_name(&link)))
        }
    }
}

fn plain(response: Response, target: &str) -> Outcome {
    Outcome {
        response,
        fds: Vec::new(),
        target: target.to_owned(),
    }
}

/// Live taps the caller owns, found in the kernel by their marks: no database to fall out of step,
/// and a tap the caller re-owned or made persistent with its fd (neither needs privilege) still counts.
fn caller_taps(ctx: &mut Ctx) -> Result<Vec<Link>, Error> {
    let uid = ctx.caller.uid;
    let mut taps = Vec::new();
    ctx.nl
        .dump_links(Some("tun"), &mut |l| {
            if marked_uid(l) == Some(uid) {
                taps.push(l.clone());
            }
        })
        .or_kernel()?;
    Ok(taps)
}

/// Deletes the caller's marked taps that no fd holds (it made them persistent and closed them), so a
/// quota filled by accident is freed without root. Each tap is checked again by its index right
/// before its delete. "Held" is read from the queue count (multi-queue) or the carrier, which the
/// holder can turn off itself (`TUNSETCARRIER`): then only its own tap goes.
fn remove_leftovers(ctx: &mut Ctx) -> Result<u32, Error> {
    let uid = ctx.caller.uid;
    let mut removed = 0u32;
    for index in caller_taps(ctx)?
        .iter()
        .filter(|l| !l.held_by_fds())
        .map(|l| l.index)
    {
        // Checked again right before the delete, by the index the dump gave (indices are allocated
        // cyclically, not reused at once): still this caller's mark, still held by no fd.
        match lookup::get_link(&mut ctx.nl, Some(index), None) {
            Ok(l) if marked_uid(&l) == Some(uid) && !l.held_by_fds() => {}
            Ok(_) | Err(Errno::ENODEV) => continue,
            Err(e) => return Err(kernel(e)),
        }
        match delete_link(&mut ctx.nl, index) {
            Ok(()) => removed = removed.saturating_add(1),
            Err(Errno::ENODEV) => {} // gone meanwhile
            Err(e) => return Err(kernel(e)),
        }
    }
    Ok(removed)
}

/// Deletes the taps passed as `fds` in one kernel batch (`RTM_DELLINK` by interface group goes through
/// `unregister_netdevice_many`: one RCU grace period for all, not one each). Every fd must name one of
/// the caller's taps, or nothing changes. The batch borrows an interface group that is this helper's
/// own ([`batch_group`]), and deletes by group only if, right before, the group holds nothing but the
/// batch's taps; else it deletes them one by one. The taps' own groups do not matter any more: they are
/// being deleted.
fn destroy_taps(
    ctx: &mut Ctx,
    fds: &[OwnedFd],
    more: bool,
    groups_in_use: &[u32],
) -> Result<Response, Error> {
    let mut taps = Vec::with_capacity(fds.len());
    for fd in fds {
        let link = resolve_tap(ctx, fd.as_fd())?;
        let staged = ctx
            .batch
            .as_ref()
            .is_some_and(|b| b.taps.iter().any(|t| t.index == link.index));
        if !staged && !taps.iter().any(|l: &Link| l.index == link.index) {
            taps.push(link);
        }
    }
    let group = match &ctx.batch {
        Some(b) => b.group,
        None => batch_group(groups_in_use)?,
    };
    let mut moved: Vec<SetAside> = Vec::with_capacity(taps.len());
    for link in &taps {
        if let Err(e) = set_u32(&mut ctx.nl, link.index, IFLA_GROUP, group) {
            // Put back the groups this request changed: it changes nothing when it fails.
            put_back(ctx, &moved);
            return Err(kernel(e));
        }
        moved.push(SetAside {
            index: link.index,
            group: link.group,
        });
    }
    let batch = ctx.batch.get_or_insert(Batch {
        group,
        taps: Vec::new(),
    });
    batch.taps.extend(moved);
    let count = u32::try_from(batch.taps.len()).unwrap_or(u32::MAX);
    if more {
        return Ok(Response::Staged { count });
    }
    let mut ours: Vec<IfIndex> = batch.taps.iter().map(|t| t.index).collect();
    ours.sort_unstable();
    let r = delete_batch(ctx, group, &ours);
    if let Err(e) = r {
        abandon_batch(ctx);
        return Err(kernel(e));
    }
    ctx.batch = None;
    Ok(Response::Removed { count })
}

/// Deletes the links `ours` (sorted), all in `group`: by group when a dump right before shows nothing
/// else there, else one by one. Only a process with CAP_NET_ADMIN can put a link in a group, and no
/// vmpriv helper uses another live helper's group; what can be there is root's doing, or the taps a
/// killed helper of the same pid set aside, which are not this caller's to delete.
fn delete_batch(ctx: &mut Ctx, group: u32, ours: &[IfIndex]) -> Result<(), Errno> {
    let mut foreign = Vec::new();
    ctx.nl.dump_links(None, &mut |l| {
        if l.group == group && ours.binary_search(&l.index).is_err() {
            foreign.push(l.index);
        }
    })?;
    if foreign.is_empty() {
        return ctx.nl.request(|seq| {
            Msg::new(RTM_DELLINK, NLM_F_ACK, seq)
                .ifinfomsg(0, 0, 0)
                .attr_u32(IFLA_GROUP, group)
        });
    }
    log::warn!(
        "uid={} batch group {group:#x} also holds ifindex {foreign:?}; deleting the batch one by one",
        ctx.caller.uid
    );
    for &index in ours {
        match delete_link(&mut ctx.nl, index) {
            Ok(()) | Err(Errno::ENODEV) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn put_back(ctx: &mut Ctx, taps: &[SetAside]) {
    for t in taps {
        let _ = set_u32(&mut ctx.nl, t.index, IFLA_GROUP, t.group);
    }
}

/// A batch that will not be deleted (the session ended, or its delete failed): its taps go back to
/// the groups they had. A tap gone meanwhile (its holder closed it) is no error.
pub(crate) fn abandon_batch(ctx: &mut Ctx) {
    if let Some(b) = ctx.batch.take() {
        put_back(ctx, &b.taps);
    }
}

/// Batch groups have the high bit set: never 0, and above the small numbers admins give groups.
const BATCH_GROUP_HIGH_BIT: u32 = 0x8000_0000;
/// Pids are below 2^22 (`PID_MAX_LIMIT`); the nine bits above them pick another number for the same
/// pid when the policy uses the first.
const PID_BITS: u32 = 22;

/// This helper's batch group: the high bit, our pid, and the first of 512 prefixes that is none of the
/// policy's `ifgroup` numbers (callers reach those through `SetGroup`). Two live helpers have two
/// pids, so no other batch uses our number while we live; no caller can choose it.
fn batch_group(in_use: &[u32]) -> Result<u32, Error> {
    let pid = std::process::id();
    (0..1u32 << (31 - PID_BITS))
        .map(|k| BATCH_GROUP_HIGH_BIT | k << PID_BITS | pid)
        .find(|g| !in_use.contains(g))
        .ok_or(Error::Kernel { errno: libc::EBUSY })
}

/// A passed fd names a tap only if it is the tun character device, attached in tap mode, to a device in
/// our network namespace, marked as the caller's. Its name comes from the fd (TUNGETIFF), its ifindex from
/// the kernel's reply; the caller's words name nothing.
fn resolve_tap(ctx: &mut Ctx, fd: BorrowedFd<'_>) -> Result<Link, Error> {
    let not_a_tap = Error::Invalid(Invalid::NotATap);
    let tun = sys::TunFd::check(fd)
        .map_err(|e| kernel_io(&e))?
        .ok_or(not_a_tap)?;
    let (name, flags) = sys_session::tun_get_iff(tun).map_err(|_| not_a_tap)?; // EBADFD: not attached
    if flags & TUN_TYPE_MASK != IFF_TAP {
        return Err(not_a_tap);
    }
    // TUNGETIFF gives a name, which means something only in the tap's own namespace.
    let ns = sys_session::tun_get_netns(tun).map_err(|e| kernel_io(&e))?;
    let ns = std::fs::File::from(ns).metadata().map_err(|e| kernel_io(&e))?;
    if NetNs::of(&ns) != ctx.netns {
        log::info!(
            "uid={} tap {name} lives in another network namespace",
            ctx.caller.uid
        );
        return Err(Error::Denied);
    }
    let link = match lookup::get_link(&mut ctx.nl, None, Some(&name)) {
        Ok(l) => l,
        Err(Errno::ENODEV) => return Err(Error::Denied),
        Err(e) => return Err(kernel(e)),
    };
    // The tun owner is the fd holder's word (TUNSETOWNER needs no privilege); the mark is ours.
    let marked = marked_uid(&link);
    if !link.is_tap() || marked != Some(ctx.caller.uid) {
        log::info!(
            "uid={} tap {name} carries the mark of uid {marked:?}, not the caller's",
            ctx.caller.uid
        );
        return Err(Error::Denied);
    }
    Ok(link)
}

/// A new, non-persistent tap owned by the caller and marked with one of its quota slots, with a 0xFE
/// MAC, the switch's MTU and IPv6 autoconfiguration off, configured as asked; its fds go back to the
/// caller. If anything fails the tap is deleted and the tun fds it never used go back to the pool.
fn create_tap(
    ctx: &mut Ctx,
    queues: u8,
    vnet_hdr: bool,
    quota: u32,
    config: &ValidConfig,
) -> Result<Outcome, Error> {
    // Authorization before the first kernel object: switch, VRF, addresses; the quota slot is taken
    // by the create itself (`create_marked`), which fails with nothing made when none is free.
    let plan = check_config(ctx, None, config)?;
    let mut fds = take_tun_fds(ctx, usize::from(queues))?;
    let mut attached = 0usize;
    let mut created = None;
    let made = make_tap(
        ctx,
        &mut fds,
        &mut attached,
        &mut created,
        (vnet_hdr, quota),
        &plan,
    );
    match made {
        Ok((name, info)) => Ok(Outcome {
            response: Response::Tap(info),
            fds,
            target: name,
        }),
        Err(e) => {
            if let Some(index) = created {
                // Delete it outright: dropping our fds alone would leave it alive if another fd
                // holds a queue of it.
                match delete_link(&mut ctx.nl, index) {
                    Ok(()) | Err(Errno::ENODEV) => {}
                    Err(d) => log::error!("cannot delete the failed tap ifindex {index}: {d}"),
                }
            }
            // fds that were never attached are as good as new: back to the pool.
            ctx.tun_pool.extend(fds.drain(attached.min(fds.len())..));
            Err(e)
        }
    }
}

fn make_tap(
    ctx: &mut Ctx,
    fds: &mut [OwnedFd],
    attached: &mut usize,
    created: &mut Option<IfIndex>,
    (vnet_hdr, quota): (bool, u32),
    plan: &Plan<'_>,
) -> Result<(String, TapInfo), Error> {
    let queues = fds.len();
    let Some((first, rest)) = fds.split_first() else {
        impossible("a tap with no queue")
    };
    let first = opened_tun(first)?;
    let (mut flags, features) = tap_flags(ctx, first, vnet_hdr)?;
    if queues > 1 {
        if features & IFF_MULTI_QUEUE.cast_unsigned() == 0 {
            return Err(Error::Unsupported(Unsupported::MultiQueue));
        }
        flags |= IFF_MULTI_QUEUE;
    }
    let name = create_marked(ctx, first, flags, quota)?;
    *attached = 1;
    own(ctx, first)?;
    let link = lookup::get_link(&mut ctx.nl, None, Some(&name)).or_kernel()?;
    *created = Some(link.index);
    if queues > 1 {
        // Until TUNSETOWNER a multi-queue tap with no owner takes a queue from anyone who can open
        // /dev/net/tun (where the device is 0666). (A single-queue tap refuses a second fd.) A queue
        // still attached now is refused; one that came and went may have left settings behind: a
        // group is refused (it cannot be unset), everything else is put back.
        let tun = link.tun.as_ref();
        let held = tun.and_then(|t| t.queues);
        if held != Some(1) || tun.is_some_and(|t| t.group.is_some()) {
            log::warn!(
                "uid={} tap {name}: another process attached a queue before it was owned ({held:?} \
                 queues, group {:?})",
                ctx.caller.uid,
                tun.and_then(|t| t.group)
            );
            return Err(Error::Kernel { errno: libc::EBUSY });
        }
        sys_session::tun_reset_shared_state(first).map_err(|e| kernel_io(&e))?;
    }
    for q in rest {
        let got = sys::tun_set_iff_named(opened_tun(q)?, &name, flags & !IFF_TUN_EXCL)
            .map_err(|e| kernel_io(&e))?;
        *attached = attached.saturating_add(1);
        if got != name {
            impossible(&format!("a queue of {name} attached to {got}"));
        }
    }
    let mac = quiet_and_mac(ctx, first, &name)?;
    let mut info = configure_checked(ctx, &link, plan)?;
    info.mac = mac;
    Ok((name, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_group_is_the_pids_own_and_none_of_the_policys() {
        let first = BATCH_GROUP_HIGH_BIT | std::process::id();
        assert_eq!(batch_group(&[]).unwrap(), first);
        assert_eq!(batch_group(&[first, 42]).unwrap(), first | 1 << PID_BITS);
        let taken: Vec<u32> = (0..511).map(|k| first | k << PID_BITS).collect();
        assert_eq!(batch_group(&taken).unwrap(), first | 511 << PID_BITS);
        let every: Vec<u32> = (0..512).map(|k| first | k << PID_BITS).collect();
        assert!(batch_group(&every).is_err());
    }
}
