//! devlink (generic netlink family `devlink`): reading a device's
//! parameters, as `devlink dev param show pci/<BDF> name <NAME>` does.
//!
//! Owns the `DEVLINK_CMD_PARAM_GET` request and the decoding of its reply
//! (include/uapi/linux/devlink.h; the reply's layout is
//! net/devlink/param.c `devlink_nl_param_fill`). The SR-IOV device plugin
//! reads mlx5's `enable_rdma` with it.
//! It must not decide what a parameter means.

use crate::{
    attr::{self, Attr, AttrWriter},
    error::{Error, Op, Result},
    genl,
    socket::{Netlink, Request},
};

/// `DEVLINK_GENL_NAME`.
pub const FAMILY: &str = "devlink";
/// The `genlmsghdr` version: iproute2's `devlink` sends 0 (the kernel does
/// not check it; `DEVLINK_GENL_VERSION` is 1), and so do we, byte for byte.
const VERSION: u8 = 0;
/// `DEVLINK_CMD_PARAM_GET`.
const CMD_PARAM_GET: u8 = 38;

const ATTR_BUS_NAME: u16 = 1;
const ATTR_DEV_NAME: u16 = 2;
const ATTR_PARAM: u16 = 80;
const ATTR_PARAM_NAME: u16 = 81;
const ATTR_PARAM_GENERIC: u16 = 82;
const ATTR_PARAM_TYPE: u16 = 83;
const ATTR_PARAM_VALUES_LIST: u16 = 84;
const ATTR_PARAM_VALUE: u16 = 85;
const ATTR_PARAM_VALUE_DATA: u16 = 86;
const ATTR_PARAM_VALUE_CMODE: u16 = 87;

/// `enum devlink_param_type`: the `NLA_*` type of the value.
const TYPE_U8: u8 = 1;
const TYPE_U16: u8 = 2;
const TYPE_U32: u8 = 3;
const TYPE_U64: u8 = 4;
const TYPE_STRING: u8 = 5;
const TYPE_BOOL: u8 = 6;

/// `enum devlink_param_cmode`: when a value takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmode {
    /// Now.
    Runtime,
    /// At the next driver (re)load: mlx5's `enable_rdma`.
    Driverinit,
    /// Stored in the device's flash.
    Permanent,
    /// A mode newer than this code.
    Other(u8),
}

impl From<u8> for Cmode {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Runtime,
            1 => Self::Driverinit,
            2 => Self::Permanent,
            v => Self::Other(v),
        }
    }
}

/// A parameter's value in one configuration mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `DEVLINK_PARAM_TYPE_U8`.
    U8(u8),
    /// `DEVLINK_PARAM_TYPE_U16`.
    U16(u16),
    /// `DEVLINK_PARAM_TYPE_U32`.
    U32(u32),
    /// `DEVLINK_PARAM_TYPE_U64`.
    U64(u64),
    /// `DEVLINK_PARAM_TYPE_STRING`.
    Str(String),
    /// `DEVLINK_PARAM_TYPE_BOOL`: true when the data attribute (a flag)
    /// is present.
    Bool(bool),
}

/// One device parameter, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Its name (`enable_rdma`).
    pub name: String,
    /// A generic parameter (documented in devlink-params.rst) rather than
    /// a driver's own.
    pub generic: bool,
    /// Its value in each configuration mode the driver supports.
    pub values: Vec<(Cmode, Value)>,
}

impl Param {
    /// The value in `cmode`, if the driver supports that mode.
    pub fn value(&self, cmode: Cmode) -> Option<&Value> {
        self.values
            .iter()
            .find(|(c, _)| *c == cmode)
            .map(|(_, v)| v)
    }
}

/// The `DEVLINK_CMD_PARAM_GET` request for parameter `name` of devlink
/// instance `bus`/`dev` (`pci`/`0000:3b:00.2`), for family `family`.
pub fn param_get_request(family: u16, bus: &str, dev: &str, name: &str) -> Request {
    let mut a = AttrWriter::new();
    a.put_str(ATTR_BUS_NAME, bus)
        .put_str(ATTR_DEV_NAME, dev)
        .put_str(ATTR_PARAM_NAME, name);
    genl::request(
        family,
        CMD_PARAM_GET,
        VERSION,
        &a,
        Op::new(
            format!("read devlink parameter {name} of {bus}/{dev}"),
            "devlink device",
        ),
    )
}

/// Decodes the attributes of a `DEVLINK_CMD_PARAM_GET` reply.
///
/// # Errors
/// The reply has no parameter, or a value of an unknown type or the
/// wrong size.
pub fn parse_param(attrs: &[Attr<'_>]) -> std::result::Result<Param, String> {
    let nest = attr::find(attrs, ATTR_PARAM).ok_or("no DEVLINK_ATTR_PARAM")?;
    let p = nest.nested()?;
    let name = attr::find(&p, ATTR_PARAM_NAME)
        .and_then(|a| a.str())
        .ok_or("no DEVLINK_ATTR_PARAM_NAME")?
        .to_owned();
    let kind = attr::find(&p, ATTR_PARAM_TYPE)
        .and_then(|a| a.u8())
        .ok_or("no DEVLINK_ATTR_PARAM_TYPE")?;
    let mut values = Vec::new();
    if let Some(list) = attr::find(&p, ATTR_PARAM_VALUES_LIST) {
        for v in list.nested()?.iter().filter(|a| a.kind == ATTR_PARAM_VALUE) {
            let v = v.nested()?;
            let cmode = attr::find(&v, ATTR_PARAM_VALUE_CMODE)
                .and_then(|a| a.u8())
                .ok_or("a value without DEVLINK_ATTR_PARAM_VALUE_CMODE")?;
            let data = attr::find(&v, ATTR_PARAM_VALUE_DATA);
            let value = decode(kind, data).ok_or_else(|| {
                format!("{name}: a value of type {kind} that does not decode: {data:?}")
            })?;
            values.push((Cmode::from(cmode), value));
        }
    }
    Ok(Param {
        name,
        generic: attr::find(&p, ATTR_PARAM_GENERIC).is_some(),
        values,
    })
}

fn decode(kind: u8, data: Option<Attr<'_>>) -> Option<Value> {
    if kind == TYPE_BOOL {
        return Some(Value::Bool(data.is_some()));
    }
    let d = data?;
    Some(match kind {
        TYPE_U8 => Value::U8(d.u8()?),
        TYPE_U16 => Value::U16(d.u16()?),
        TYPE_U32 => Value::U32(d.u32()?),
        TYPE_U64 => Value::U64(u64::from_ne_bytes(d.value.get(..8)?.try_into().ok()?)),
        TYPE_STRING => Value::Str(d.str()?.to_owned()),
        _ => return None,
    })
}

/// A socket for the devlink family.
#[derive(Debug)]
pub struct Devlink {
    nl: Netlink,
    family: u16,
}

impl Devlink {
    /// Opens a socket and resolves the family: `None` when this kernel has
    /// no devlink (built without `CONFIG_NET_DEVLINK`).
    ///
    /// # Errors
    /// The socket fails.
    pub fn open() -> Result<Option<Self>> {
        let mut nl = Netlink::generic()?;
        Ok(genl::family_id(&mut nl, FAMILY)?.map(|family| Self { nl, family }))
    }

    /// The family's message type on this kernel.
    pub fn family(&self) -> u16 {
        self.family
    }

    /// Parameter `name` of devlink instance `bus`/`dev`: `None` when there
    /// is no such instance (`ENODEV`: a VF of a driver without devlink, or
    /// no such device) or it has no such parameter (`EINVAL`, which is what
    /// `devlink_nl_param_get_doit` answers for an unknown name).
    ///
    /// # Errors
    /// Anything else the kernel refuses, or a reply that does not decode.
    pub fn param(&mut self, bus: &str, dev: &str, name: &str) -> Result<Option<Param>> {
        let req = param_get_request(self.family, bus, dev, name);
        let replies = match self.nl.execute_raw(&req) {
            Ok(r) => r,
            Err(e) if matches!(e.errno(), Some(libc::ENODEV | libc::EINVAL)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = replies
            .first()
            .ok_or_else(|| Error::bad_reply(req.op(), "no reply before the ACK"))?;
        let attrs = genl::reply_attrs(&m.payload, req.op())?;
        parse_param(&attrs)
            .map(Some)
            .map_err(|r| Error::bad_reply(req.op(), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::NLA_F_NESTED;

    /// A reply laid out as `devlink_nl_param_fill` lays it out.
    fn reply(kind: u8, values: &[(u8, Option<&[u8]>)]) -> Vec<u8> {
        let mut a = AttrWriter::new();
        a.put_str(ATTR_BUS_NAME, "pci")
            .put_str(ATTR_DEV_NAME, "0000:3b:00.2")
            .nest(ATTR_PARAM, |a| {
                a.put_str(ATTR_PARAM_NAME, "enable_rdma")
                    .put_flag(ATTR_PARAM_GENERIC)
                    .put_u8(ATTR_PARAM_TYPE, kind)
                    .nest(ATTR_PARAM_VALUES_LIST, |a| {
                        for (cmode, data) in values {
                            a.nest(ATTR_PARAM_VALUE, |a| {
                                a.put_u8(ATTR_PARAM_VALUE_CMODE, *cmode);
                                if let Some(d) = data {
                                    a.put(ATTR_PARAM_VALUE_DATA, d);
                                }
                            });
                        }
                    });
            });
        a.into_bytes()
    }

    #[test]
    fn param_get_is_what_iproute2_sends() {
        // `strace -xx devlink dev param show pci/0000:ff:1f.7 name
        // enable_rdma` on Debian's 6.1 (iproute2 6.1), after the header.
        #[rustfmt::skip]
        let payload = [
            0x26, 0, 0, 0,
            8, 0, 1, 0, b'p', b'c', b'i', 0,
            0x11, 0, 2, 0, b'0', b'0', b'0', b'0', b':', b'f', b'f', b':', b'1', b'f', b'.',
            b'7', 0, 0, 0, 0,
            0x10, 0, 0x51, 0, b'e', b'n', b'a', b'b', b'l', b'e', b'_', b'r', b'd', b'm',
            b'a', 0,
        ];
        let got = param_get_request(0x15, "pci", "0000:ff:1f.7", "enable_rdma").encode(9);
        assert_eq!(got[..4], 64u32.to_ne_bytes());
        assert_eq!(got[4..6], 0x15u16.to_ne_bytes());
        assert_eq!(got[6..8], 5u16.to_ne_bytes(), "NLM_F_REQUEST | NLM_F_ACK");
        assert_eq!(got[16..], payload);
    }

    #[test]
    fn a_bool_is_true_when_its_flag_is_there() {
        let on = reply(TYPE_BOOL, &[(1, Some(&[]))]);
        let p = parse_param(&attr::parse(&on).unwrap()).unwrap();
        assert_eq!(p.name, "enable_rdma");
        assert!(p.generic);
        assert_eq!(p.value(Cmode::Driverinit), Some(&Value::Bool(true)));
        assert_eq!(p.value(Cmode::Runtime), None);
        let off = reply(TYPE_BOOL, &[(1, None)]);
        let p = parse_param(&attr::parse(&off).unwrap()).unwrap();
        assert_eq!(p.value(Cmode::Driverinit), Some(&Value::Bool(false)));
    }

    #[test]
    fn numbers_and_strings_per_mode() {
        let r = reply(
            TYPE_U32,
            &[
                (0, Some(&7u32.to_ne_bytes())),
                (2, Some(&9u32.to_ne_bytes())),
            ],
        );
        let p = parse_param(&attr::parse(&r).unwrap()).unwrap();
        assert_eq!(
            p.values,
            [
                (Cmode::Runtime, Value::U32(7)),
                (Cmode::Permanent, Value::U32(9))
            ]
        );
        let r = reply(TYPE_STRING, &[(0, Some(b"flash\0"))]);
        let p = parse_param(&attr::parse(&r).unwrap()).unwrap();
        assert_eq!(p.values, [(Cmode::Runtime, Value::Str("flash".into()))]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        // A u32 value of two bytes, an unknown type, no parameter at all.
        for bad in [
            reply(TYPE_U32, &[(0, Some(&[1, 2]))]),
            reply(42, &[(0, Some(&[1]))]),
            AttrWriter::new()
                .put_str(ATTR_BUS_NAME, "pci")
                .as_bytes()
                .to_vec(),
        ] {
            assert!(parse_param(&attr::parse(&bad).unwrap()).is_err());
        }
        // The kernel nests without NLA_F_NESTED; with it, the same decode.
        let mut a = AttrWriter::new();
        a.nest(ATTR_PARAM | NLA_F_NESTED, |a| {
            a.put_str(ATTR_PARAM_NAME, "x")
                .put_u8(ATTR_PARAM_TYPE, TYPE_BOOL);
        });
        let p = parse_param(&attr::parse(a.as_bytes()).unwrap()).unwrap();
        assert!(p.values.is_empty());
    }
}
