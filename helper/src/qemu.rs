//! QEMU and libvirt `helper=` mode (qemu-bridge-helper's contract): create a tap, attach it to the
//! bridge the policy grants, set it up, send exactly one byte with exactly one SCM_RIGHTS fd on the
//! stream socket, exit 0. Any failure sends nothing and exits non-zero: QEMU treats exit 0 without an
//! fd as success and would then use its own stdin as the tap.

use std::os::fd::OwnedFd;

use vmpriv_protocol::wire::Unsupported;
use vmpriv_protocol::{Error, IfConfig, Request, Response, validate};

use crate::configure::Ctx;
use crate::ops;
use crate::startup::StartError;
use crate::sys;

/// Creates the tap for `bridge` and hands its fd to QEMU on `sock`.
pub(crate) fn serve(ctx: &mut Ctx, sock: &OwnedFd, bridge: &str, vnet_hdr: bool) -> Result<(), StartError> {
    let uid = ctx.caller.uid;
    let outcome = create(ctx, bridge, vnet_hdr).or_else(|e| match e {
        // "vnet_hdr when asked and supported": QEMU works without it, only slower.
        Error::Unsupported(Unsupported::VnetHdr) if vnet_hdr => create(ctx, bridge, false),
        e => Err(e),
    });
    let (name, fd) = match outcome {
        Ok(v) => v,
        Err(e) => {
            log::info!("uid={uid} op=qemu-bridge target={bridge} decision=refused ({e})");
            // What to do next, for the user who reads this in QEMU's or virsh's output.
            let hint = match e {
                Error::Denied | Error::Quota { .. } => "; see /etc/vmpriv/policy.conf and `vmpriv whoami`",
                _ => "",
            };
            return Err(StartError::Refused(format!(
                "cannot give a tap on bridge {bridge}: {e}{hint}"
            )));
        }
    };
    sys::send_datagram(sock, &[0], std::slice::from_ref(&fd)).map_err(|e| StartError::Session(e.into()))?;
    log::info!("uid={uid} op=qemu-bridge target={name} bridge={bridge} decision=done");
    Ok(())
}

fn create(ctx: &mut Ctx, bridge: &str, vnet_hdr: bool) -> Result<(String, OwnedFd), Error> {
    let req = Request::CreateTap {
        queues: 1,
        vnet_hdr,
        config: IfConfig {
            switch: Some(bridge.to_owned()),
            up: Some(true),
            ..IfConfig::default()
        },
    };
    let valid = validate(&req, 0, &ctx.caller, &ctx.policy)?;
    let out = ops::execute(ctx, &valid, &[])?;
    let Response::Tap(info) = out.response else {
        return Err(Error::Kernel { errno: libc::EPROTO });
    };
    let fd = out
        .fds
        .into_iter()
        .next()
        .ok_or(Error::Kernel { errno: libc::EPROTO })?;
    Ok((info.ifname, fd))
}
