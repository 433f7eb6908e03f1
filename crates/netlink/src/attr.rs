//! Raw netlink attributes (`struct nlattr` TLVs) for messages that
//! `netlink-packet-route` does not model, or models lossily.
//!
//! Owns the byte layout only: a 4-byte header (`nla_len` including the
//! header, `nla_type` with the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` bits),
//! the value, and padding to 4 bytes (`NLA_ALIGNTO`). Integers are written in
//! host order unless the method says `_be`; which one an attribute needs is
//! the kernel's policy for that attribute and the caller's business.
//! It must not know any attribute numbers.

/// `NLA_F_NESTED`: iproute2 sets it on some nests (`IFLA_PROP_LIST`), and
/// kernels check it on attributes added after 5.2 (`NLA_POLICY_NESTED`).
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
const NLA_HDRLEN: usize = 4;

pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Builds a run of attributes, e.g. the payload of `TCA_OPTIONS`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttrWriter {
    buf: Vec<u8>,
}

impl AttrWriter {
    /// An empty run.
    pub fn new() -> Self {
        Self::default()
    }

    /// A run appended to `buf` (e.g. after a fixed header), which it keeps.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    /// An empty run with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Appends one attribute with `value` and pads it to 4 bytes.
    ///
    /// # Panics
    /// If `value` is longer than an attribute can be (65531 bytes); no
    /// netlink attribute is that large.
    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + value.len()).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A `u8` attribute.
    pub fn put_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.put(kind, &[v])
    }

    /// A host-order `u16` attribute.
    pub fn put_u16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }

    /// A network-order `u16` attribute (`__be16`: ports, EtherTypes).
    pub fn put_u16_be(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    /// A host-order `u32` attribute.
    pub fn put_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }

    /// A network-order `u32` attribute (`__be32`).
    pub fn put_u32_be(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    /// A NUL-terminated string attribute (`NLA_STRING`/`NLA_NUL_STRING`).
    pub fn put_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + s.len() + 1).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A flag attribute (no value).
    pub fn put_flag(&mut self, kind: u16) -> &mut Self {
        self.put(kind, &[])
    }

    /// A nested attribute whose contents `f` writes. `kind` is used as is:
    /// add [`NLA_F_NESTED`] where the kernel or iproute2 does.
    ///
    /// Written in place: the header goes first and its length is filled
    /// in once `f` is done, so nesting costs no copy.
    ///
    /// # Panics
    /// If the contents exceed 64 KiB.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        f(self);
        let len = u16::try_from(self.buf.len() - start).expect("netlink attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The encoded bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// One decoded attribute, borrowing from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `nla_type` without the flag bits.
    pub kind: u16,
    /// Whether `NLA_F_NESTED` was set.
    pub nested: bool,
    /// The value, without padding.
    pub value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The value as a host-order `u32`, if it is at least 4 bytes.
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.value.get(..4)?.try_into().ok()?))
    }

    /// The value as a host-order `u16`.
    pub fn u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.value.get(..2)?.try_into().ok()?))
    }

    /// The value as a `u8`.
    pub fn u8(&self) -> Option<u8> {
        self.value.first().copied()
    }

    /// The value as a string, up to the first NUL.
    pub fn str(&self) -> Option<&'a str> {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(&self.value[..end]).ok()
    }

    /// The attributes nested in this one.
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, String> {
        parse(self.value)
    }
}

/// Decodes a run of attributes. A trailing partial header is an error, as is
/// an `nla_len` that runs past the buffer; nothing here panics on bad input.
pub fn parse(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < NLA_HDRLEN {
            return Err(format!(
                "{} stray bytes after the last attribute",
                buf.len()
            ));
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(format!(
                "attribute type {} claims {len} bytes, {} left",
                kind & NLA_TYPE_MASK,
                buf.len()
            ));
        }
        out.push(Attr {
            kind: kind & NLA_TYPE_MASK,
            nested: kind & NLA_F_NESTED != 0,
            value: &buf[NLA_HDRLEN..len],
        });
        buf = buf.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// The first attribute of `kind` in `attrs`.
pub fn find<'a>(attrs: &[Attr<'a>], kind: u16) -> Option<Attr<'a>> {
    attrs.iter().copied().find(|a| a.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding_and_nesting() {
        let mut w = AttrWriter::new();
        w.put_str(1, "u32").nest(2 | NLA_F_NESTED, |w| {
            w.put_u32(5, 7).put_u16_be(6, 0x0800);
        });
        #[rustfmt::skip]
        let want = [
            8, 0, 1, 0, b'u', b'3', b'2', 0,       // kind 1 "u32\0"
            20, 0, 2, 0x80,                        // kind 2 | NLA_F_NESTED
            8, 0, 5, 0, 7, 0, 0, 0,                //   kind 5 u32 7
            6, 0, 6, 0, 0x08, 0x00, 0, 0,          //   kind 6 be16 0x0800 + pad
        ];
        assert_eq!(w.as_bytes(), want);
        let attrs = parse(w.as_bytes()).unwrap();
        assert_eq!(attrs[0].str(), Some("u32"));
        assert!(attrs[1].nested);
        let inner = attrs[1].nested().unwrap();
        assert_eq!(find(&inner, 5).unwrap().u32(), Some(7));
        assert_eq!(find(&inner, 6).unwrap().value, [8, 0]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(parse(&[8, 0, 1]).is_err());
        assert!(parse(&[9, 0, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(parse(&[2, 0, 1, 0]).is_err());
        // The last attribute may omit its padding.
        assert_eq!(parse(&[5, 0, 1, 0, 9]).unwrap()[0].value, [9]);
    }
}
