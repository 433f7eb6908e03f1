//! Generic netlink: the `genlmsghdr` and family lookup through the
//! controller (`nlctrl`), for families such as [`crate::devlink`].
//!
//! Owns: the 4-byte `genlmsghdr` (`cmd`, `version`, reserved) in front of
//! the attributes, and resolving a family name to the message type the
//! kernel gave it at boot (it differs between kernels and boots).
//! It must not know any family's commands beyond the controller's.

use netlink_packet_core::NLM_F_ACK;

use crate::{
    attr::{self, AttrWriter},
    error::{Error, Op, Result},
    socket::{Netlink, Request},
};

/// `GENL_ID_CTRL`: the controller's fixed message type.
const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The controller's version, as libmnl and iproute2 send it.
const CTRL_VERSION: u8 = 1;
/// `GENL_HDRLEN`.
pub const GENL_HDRLEN: usize = 4;

/// A generic netlink "do" request: `family` (the resolved message type),
/// `cmd`/`version` in the `genlmsghdr`, then `attrs`. It asks for an ACK,
/// so the reply, if any, is collected before it.
pub fn request(family: u16, cmd: u8, version: u8, attrs: &AttrWriter, op: Op) -> Request {
    let mut payload = Vec::with_capacity(GENL_HDRLEN + attrs.as_bytes().len());
    payload.extend_from_slice(&[cmd, version, 0, 0]);
    payload.extend_from_slice(attrs.as_bytes());
    Request::raw(family, payload, NLM_F_ACK, op)
}

/// The attributes of a generic netlink reply (its payload less the
/// `genlmsghdr`).
///
/// # Errors
/// The payload is shorter than the header or its attributes are malformed.
pub fn reply_attrs<'a>(payload: &'a [u8], op: &Op) -> Result<Vec<attr::Attr<'a>>> {
    let body = payload
        .get(GENL_HDRLEN..)
        .ok_or_else(|| Error::bad_reply(op, "generic netlink reply without its header"))?;
    attr::parse(body).map_err(|r| Error::bad_reply(op, r))
}

/// The controller request that resolves family `name`.
pub fn get_family_request(name: &str) -> Request {
    let mut a = AttrWriter::new();
    a.put_str(CTRL_ATTR_FAMILY_NAME, name);
    request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        CTRL_VERSION,
        &a,
        Op::new(format!("resolve generic netlink family {name}"), "family"),
    )
}

/// The message type of generic netlink family `name`, or `None` when this
/// kernel does not have it (built without it, or its module not loaded).
///
/// # Errors
/// The socket fails or the controller's reply is malformed.
pub fn family_id(nl: &mut Netlink, name: &str) -> Result<Option<u16>> {
    let req = get_family_request(name);
    let replies = match nl.execute_raw(&req) {
        Ok(r) => r,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    for m in &replies {
        let attrs = reply_attrs(&m.payload, req.op())?;
        if let Some(id) = attr::find(&attrs, CTRL_ATTR_FAMILY_ID).and_then(|a| a.u16()) {
            return Ok(Some(id));
        }
    }
    Err(Error::bad_reply(
        req.op(),
        "no CTRL_ATTR_FAMILY_ID in the reply",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_family_is_what_iproute2_sends() {
        // genlmsghdr {cmd 3, version 1}, CTRL_ATTR_FAMILY_NAME "devlink\0":
        // what iproute2's `devlink` sends first (strace on Debian's 6.1).
        #[rustfmt::skip]
        let want = [
            32, 0, 0, 0, 0x10, 0, 0x05, 0, 7, 0, 0, 0, 0, 0, 0, 0,
            3, 1, 0, 0,
            12, 0, 2, 0, b'd', b'e', b'v', b'l', b'i', b'n', b'k', 0,
        ];
        assert_eq!(get_family_request("devlink").encode(7), want);
    }

    #[test]
    fn reply_attrs_skip_the_header_and_reject_short_payloads() {
        let op = Op::new("x", "family");
        let a = reply_attrs(&[1, 1, 0, 0, 6, 0, 1, 0, 0x14, 0, 0, 0], &op).unwrap();
        assert_eq!(
            attr::find(&a, CTRL_ATTR_FAMILY_ID).unwrap().u16(),
            Some(0x14)
        );
        assert!(reply_attrs(&[1, 1], &op).is_err());
    }
}
