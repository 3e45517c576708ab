//! Session mode: one request per SOCK_SEQPACKET datagram, one reply each, until EOF (docs/protocol.md).
//!
//! Every fd a message carried is closed when the request is done, whatever happened. A refused request
//! keeps the session; a malformed frame, another version or no `Hello` first ends it after its reply.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use vmpriv_protocol::wire::{self, FrameError, MAX_FRAME};
use vmpriv_protocol::{Error, Invalid, Request, Response, validate};

use crate::configure::Ctx;
use crate::ops;
use crate::{sys, sys_session};

/// Sends one reply with its fds.
fn send(sock: &OwnedFd, response: &Response, fds: &[OwnedFd]) -> Result<(), Errno> {
    let frame = wire::encode(response).map_err(|_| Errno::EMSGSIZE)?;
    sys::send_datagram(sock, &frame, fds)
}

/// Logs why a request was refused and replies with `e`.
fn refuse(sock: &OwnedFd, uid: u32, op: &str, why: &dyn std::fmt::Display, e: Error) -> Result<(), Errno> {
    log::info!("uid={uid} op={op} decision=refused ({why})");
    send(sock, &Response::Error(e), &[])
}

/// Serves requests until EOF or a frame that ends the session (which gets its reply first). A
/// `DestroyTaps` batch still set aside then is abandoned: its taps go back as they were.
pub(crate) fn serve(ctx: &mut Ctx, sock: &OwnedFd) -> Result<(), Errno> {
    let r = serve_requests(ctx, sock);
    crate::ops::abandon_batch(ctx);
    r
}

fn serve_requests(ctx: &mut Ctx, sock: &OwnedFd) -> Result<(), Errno> {
    let mut greeted = false;
    loop {
        let dgram = sys_session::recv_datagram(sock, MAX_FRAME)?;
        if dgram.bytes.is_empty() && dgram.fds.is_empty() && !dgram.malformed {
            return Ok(()); // EOF
        }
        let uid = ctx.caller.uid;
        let req = match (dgram.malformed, wire::decode::<Request>(&dgram.bytes)) {
            (false, Ok(req)) => req,
            (_, Err(FrameError::Version(v))) => {
                let e = Error::Version {
                    supported: wire::VERSION,
                };
                return refuse(sock, uid, "?", &format_args!("protocol version {v}"), e);
            }
            (malformed, decoded) => {
                let what = if malformed {
                    "truncated or foreign control data".to_owned()
                } else {
                    format!("{:?}", decoded.err())
                };
                let why = format!("malformed frame: {what}, {} fd(s)", dgram.fds.len());
                return refuse(sock, uid, "?", &why, Error::Invalid(Invalid::Malformed));
            }
        };
        if !greeted && req != Request::Hello {
            let e = Error::Invalid(Invalid::NoHello);
            return refuse(sock, uid, req.op(), &"no Hello first", e);
        }
        greeted = true;
        // The caller's fds (the valid request's) close before the reply goes out: once it has the
        // reply, we hold none.
        let outcome =
            validate(&req, dgram.fds, &ctx.caller, &ctx.policy).and_then(|valid| ops::execute(ctx, &valid));
        match outcome {
            Ok(out) => {
                log::info!("uid={uid} op={} target={} decision=done", req.op(), out.target);
                send(sock, &out.response, &out.fds)?;
            }
            Err(e) => refuse(sock, uid, req.op(), &e, e)?,
        }
        // The outcome's fds close here: the caller has its own copies.
    }
}
