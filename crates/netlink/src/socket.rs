//! The one netlink socket type (`NETLINK_ROUTE`, or `NETLINK_GENERIC` for
//! [`crate::genl`]) and the request/reply protocol.
//!
//! Owns: opening the socket (in the caller's netns or in another one), socket
//! options, sequence numbers, sending one request and collecting its replies
//! (single reply, ACK, multipart dump until `NLMSG_DONE`, `NLM_F_ECHO`
//! copies), and turning `NLMSG_ERROR` / a failed `NLMSG_DONE` with its
//! extended-ack message into an [`Error`].
//!
//! It must not know what any message means: the per-family modules build
//! [`Request`]s and read the replies. It is synchronous and single-threaded
//! by design (short-lived CNI plugins, one request in flight).

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_GENERIC, NETLINK_ROUTE},
};

use crate::{
    attr,
    error::{Error, Op, Result},
};

const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG` in the TLVs after an `NLMSG_ERROR`/`NLMSG_DONE`.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Receive buffer we start with; the kernel's dump skbs are at most 32 KiB,
/// but one message (a PF with many VFs) can be larger, so we peek first.
const INITIAL_RECV_BUF: usize = 64 * 1024;
/// Socket receive buffer (`SO_RCVBUF`), as iproute2 sets it.
const SO_RCVBUF_SIZE: usize = 1024 * 1024;
/// A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is retried
/// this many times before we give up.
const DUMP_RETRIES: usize = 5;

/// One message to send: a typed rtnetlink message or pre-encoded bytes, the
/// `NLM_F_*` flags (`NLM_F_REQUEST` is always added) and what it does, for
/// error messages.
#[derive(Debug, Clone)]
pub struct Request {
    body: Body,
    flags: u16,
    op: Op,
}

#[derive(Debug, Clone)]
enum Body {
    Route(RouteNetlinkMessage),
    Raw { msg_type: u16, payload: Vec<u8> },
}

impl Request {
    /// A request carrying a `netlink-packet-route` message.
    pub fn new(message: RouteNetlinkMessage, flags: u16, op: Op) -> Self {
        Self {
            body: Body::Route(message),
            flags,
            op,
        }
    }

    /// A request whose payload (everything after the 16-byte `nlmsghdr`) the
    /// caller encoded, e.g. a `tcmsg` followed by hand-built tc attributes.
    pub fn raw(msg_type: u16, payload: Vec<u8>, flags: u16, op: Op) -> Self {
        Self {
            body: Body::Raw { msg_type, payload },
            flags,
            op,
        }
    }

    /// Adds `NLM_F_*` flags (e.g. `NLM_F_ECHO`).
    #[must_use]
    pub fn with_flags(mut self, flags: u16) -> Self {
        self.flags |= flags;
        self
    }

    /// The `NLM_F_*` flags as sent.
    pub fn flags(&self) -> u16 {
        self.flags | NLM_F_REQUEST
    }

    /// What the request does.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The `nlmsg_type`.
    pub fn msg_type(&self) -> u16 {
        match &self.body {
            Body::Route(m) => netlink_packet_core::NetlinkSerializable::message_type(m),
            Body::Raw { msg_type, .. } => *msg_type,
        }
    }

    /// The whole message as sent, with `nlmsg_seq = seq` and `nlmsg_pid = 0`
    /// (the kernel fills in the sender's port id itself).
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = self.flags();
        header.sequence_number = seq;
        match &self.body {
            Body::Route(m) => {
                let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(m.clone()));
                msg.finalize();
                let mut buf = vec![0; msg.buffer_len()];
                msg.serialize(&mut buf);
                buf
            }
            Body::Raw { msg_type, payload } => {
                let len = u32::try_from(NLMSG_HDRLEN + payload.len())
                    .expect("netlink message over 4 GiB");
                let mut buf = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
                buf.extend_from_slice(&len.to_ne_bytes());
                buf.extend_from_slice(&msg_type.to_ne_bytes());
                buf.extend_from_slice(&header.flags.to_ne_bytes());
                buf.extend_from_slice(&seq.to_ne_bytes());
                buf.extend_from_slice(&0u32.to_ne_bytes());
                buf.extend_from_slice(payload);
                buf
            }
        }
    }
}

/// One reply message, undecoded: the header fields that matter and the
/// payload after the `nlmsghdr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// `nlmsg_type` (`RTM_NEWLINK`, `RTM_NEWTFILTER`, ...).
    pub msg_type: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// Everything after the header (`ifinfomsg`/`tcmsg`/... and attributes).
    pub payload: Vec<u8>,
}

impl RawMessage {
    /// Decodes the payload with `netlink-packet-route`.
    pub fn parse(&self, op: &Op) -> Result<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.message_type = self.msg_type;
        header.flags = self.flags;
        RouteNetlinkMessage::deserialize(&header, &self.payload)
            .map_err(|e| Error::bad_reply(op, format!("message type {}: {e}", self.msg_type)))
    }
}

/// A `NETLINK_ROUTE` socket bound to the network namespace it was opened in.
///
/// Replies are matched to requests by sequence number; anything else that
/// arrives (a late reply to an abandoned request) is dropped.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Self::open().map_err(|e| Error::io("open rtnetlink socket", e))
    }

    /// Opens a `NETLINK_GENERIC` socket in the calling thread's network
    /// namespace, for the generic netlink families ([`crate::genl`]). The
    /// request/reply protocol is the same; only the message types differ.
    pub fn generic() -> Result<Self> {
        Self::open_protocol(NETLINK_GENERIC)
            .map_err(|e| Error::io("open generic netlink socket", e))
    }

    /// Opens a socket inside the network namespace at `path` (e.g.
    /// `/run/netns/pod1` or `/proc/<pid>/ns/net`).
    ///
    /// A netlink socket belongs to the netns it was created in for its whole
    /// life, whatever thread later uses it, so we create it on a short-lived
    /// thread that has `setns(2)`ed into `path`; the caller's threads never
    /// change namespace.
    pub fn in_netns(path: &Path) -> Result<Self> {
        let op = format!("open rtnetlink socket in netns {}", path.display());
        let ns = File::open(path).map_err(|e| Error::io(op.clone(), e))?;
        let opened = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) only reads the fd, which `ns` keeps open
                // for the duration of the call; it affects this thread only.
                let rc = unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Self::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        });
        opened.map_err(|e| Error::io(op, e))
    }

    fn open() -> io::Result<Self> {
        Self::open_protocol(NETLINK_ROUTE)
    }

    fn open_protocol(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        // Errors carry the kernel's explanation ("Unknown device type").
        socket.set_ext_ack(true)?;
        // Errors do not echo our whole request back.
        socket.set_cap_ack(true)?;
        // Dump requests are validated strictly and may filter (by ifindex for
        // addresses, by table for routes) instead of being silently widened.
        socket.set_netlink_get_strict_chk(true)?;
        socket.set_rx_buf_sz(SO_RCVBUF_SIZE)?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(INITIAL_RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` and returns its replies decoded.
    ///
    /// With `NLM_F_ACK` this waits for the ACK and returns any messages that
    /// came before it (the `NLM_F_ECHO` copy); a dump (`RTM_GET*` with
    /// `NLM_F_DUMP`) returns every part up to `NLMSG_DONE`; a plain `RTM_GET*`
    /// returns its one reply.
    pub fn execute(&mut self, req: &Request) -> Result<Vec<RouteNetlinkMessage>> {
        self.execute_raw(req)?
            .iter()
            .map(|m| m.parse(&req.op))
            .collect()
    }

    /// Like [`Self::execute`], with the replies left undecoded.
    pub fn execute_raw(&mut self, req: &Request) -> Result<Vec<RawMessage>> {
        self.send_raw(&req.encode(0), &req.op)
    }

    /// Sends one pre-encoded message (header included; its sequence number
    /// and port id are overwritten) and returns the replies undecoded.
    pub fn send_raw(&mut self, message: &[u8], op: &Op) -> Result<Vec<RawMessage>> {
        if message.len() < NLMSG_HDRLEN {
            return Err(Error::InvalidInput {
                op: op.desc().to_owned(),
                reason: format!("netlink message of {} bytes has no header", message.len()),
            });
        }
        let mut message = message.to_vec();
        for _ in 0..DUMP_RETRIES {
            let seq = self.next_seq();
            message[8..12].copy_from_slice(&seq.to_ne_bytes());
            message[12..16].copy_from_slice(&0u32.to_ne_bytes());
            match self.transact(&message, seq, op)? {
                Replies::Complete(r) => return Ok(r),
                Replies::Interrupted => {}
            }
        }
        Err(Error::bad_reply(
            op,
            format!("dump interrupted by concurrent changes {DUMP_RETRIES} times"),
        ))
    }

    /// `execute` for a typed message.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: Op,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.execute(&Request::new(message, flags, op))
    }

    /// Sends a typed message with `NLM_F_ACK` and waits for the ACK.
    pub fn request_ack(&mut self, message: RouteNetlinkMessage, flags: u16, op: Op) -> Result<()> {
        self.execute_raw(&Request::new(message, flags | NLM_F_ACK, op))
            .map(drop)
    }

    /// Dumps (`NLM_F_DUMP`) with a typed `RTM_GET*` message.
    pub fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        op: Op,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.execute(&Request::new(message, NLM_F_DUMP, op))
    }

    fn transact(&mut self, message: &[u8], seq: u32, op: &Op) -> Result<Replies> {
        let msg_type = u16::from_ne_bytes([message[4], message[5]]);
        let flags = u16::from_ne_bytes([message[6], message[7]]);
        // rtnetlink treats a message as a dump when it is an RTM_GET* (type
        // & 3 == 2) with any NLM_F_DUMP bit (net/core/rtnetlink.c,
        // rtnetlink_rcv_msg); the same bits mean REPLACE/EXCL on RTM_NEW*.
        let dump = msg_type & 3 == 2 && flags & NLM_F_DUMP != 0;
        let ack = flags & NLM_F_ACK != 0;

        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(message, &kernel, 0)
            .map_err(|e| Error::io(op.desc(), e))?;

        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv_datagram().map_err(|e| Error::io(op.desc(), e))?;
            let mut rest = &self.buf[..len];
            while !rest.is_empty() {
                let (hdr, payload, next) =
                    split_message(rest).map_err(|r| Error::bad_reply(op, r))?;
                rest = next;
                if hdr.seq != seq {
                    continue; // a reply to some earlier, abandoned request
                }
                interrupted |= hdr.flags & NLM_F_DUMP_INTR != 0;
                match hdr.msg_type {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => return Err(Error::bad_reply(op, "NLMSG_OVERRUN")),
                    NLMSG_ERROR => {
                        let (code, ext_ack) =
                            parse_error(payload, hdr.flags).map_err(|r| Error::bad_reply(op, r))?;
                        if code == 0 {
                            return Ok(Replies::Complete(out)); // the ACK
                        }
                        return Err(Error::from_errno(op, code.saturating_neg(), ext_ack));
                    }
                    NLMSG_DONE => {
                        // A dump that fails part-way reports the errno here.
                        let (code, ext_ack) = parse_done(payload, hdr.flags);
                        if code < 0 {
                            return Err(Error::from_errno(op, code.saturating_neg(), ext_ack));
                        }
                        if interrupted {
                            return Ok(Replies::Interrupted);
                        }
                        return Ok(Replies::Complete(out));
                    }
                    msg_type => {
                        let multi = hdr.flags & NLM_F_MULTIPART != 0;
                        out.push(RawMessage {
                            msg_type,
                            flags: hdr.flags,
                            payload: payload.to_vec(),
                        });
                        if !dump && !ack && !multi {
                            return Ok(Replies::Complete(out));
                        }
                    }
                }
            }
        }
    }

    /// Receives one datagram from the kernel into `self.buf`, however large.
    fn recv_datagram(&mut self) -> io::Result<usize> {
        loop {
            // Peek with an empty buffer: MSG_TRUNC makes recv return the real
            // datagram size, so a reply larger than our buffer is never cut.
            let mut probe: &mut [u8] = &mut [];
            let size = match self
                .socket
                .recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.buf.clear();
            self.buf.reserve(size.max(INITIAL_RECV_BUF));
            let (n, from) = match self.socket.recv_from(&mut self.buf, 0) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n > self.buf.len() {
                return Err(io::Error::other(format!("reply of {n} bytes truncated")));
            }
            // Only the kernel (port 0) answers requests; ignore anything else.
            if from.port_number() == 0 {
                return Ok(n);
            }
        }
    }
}

enum Replies {
    Complete(Vec<RawMessage>),
    Interrupted,
}

struct Header {
    msg_type: u16,
    flags: u16,
    seq: u32,
}

/// Splits the first message off a datagram: (header, payload, rest).
fn split_message(buf: &[u8]) -> std::result::Result<(Header, &[u8], &[u8]), String> {
    if buf.len() < NLMSG_HDRLEN {
        return Err(format!("{} stray bytes after the last message", buf.len()));
    }
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < NLMSG_HDRLEN || len > buf.len() {
        return Err(format!(
            "message claims {len} bytes, datagram has {}",
            buf.len()
        ));
    }
    let hdr = Header {
        msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
        flags: u16::from_ne_bytes([buf[6], buf[7]]),
        seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    let rest = buf.get(attr::align4(len)..).unwrap_or_default();
    Ok((hdr, &buf[NLMSG_HDRLEN..len], rest))
}

/// `struct nlmsgerr`: `int error`, the offending request's header (and its
/// payload unless `NLM_F_CAPPED`), then TLVs if `NLM_F_ACK_TLVS`.
fn parse_error(payload: &[u8], flags: u16) -> std::result::Result<(i32, Option<String>), String> {
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("NLMSG_ERROR without an error code")?;
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((code, None));
    }
    let orig = payload
        .get(4..4 + NLMSG_HDRLEN)
        .ok_or("NLMSG_ERROR without the request header")?;
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes([orig[0], orig[1], orig[2], orig[3]]) as usize
    };
    let tlvs = payload.get(4 + attr::align4(skip)..).unwrap_or_default();
    Ok((code, ext_ack_msg(tlvs)))
}

/// `NLMSG_DONE` carries `int error` (0 or -errno) and, for a failed dump,
/// TLVs.
fn parse_done(payload: &[u8], flags: u16) -> (i32, Option<String>) {
    let Some(b) = payload.get(..4) else {
        return (0, None);
    };
    let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let msg = if flags & NLM_F_ACK_TLVS != 0 {
        ext_ack_msg(&payload[4..])
    } else {
        None
    };
    (code, msg)
}

fn ext_ack_msg(tlvs: &[u8]) -> Option<String> {
    let attrs = attr::parse(tlvs).ok()?;
    let msg = attr::find(&attrs, NLMSGERR_ATTR_MSG)?.str()?;
    Some(msg.to_owned()).filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_with_ext_ack_capped() {
        #[rustfmt::skip]
        let payload = [
            0xef, 0xff, 0xff, 0xff,                         // error -17 (EEXIST)
            0x20, 0, 0, 0, 0x10, 0, 0x05, 0x06, 1, 0, 0, 0, // original nlmsghdr
            0, 0, 0, 0,
            0x0c, 0, 1, 0, b'b', b'u', b's', b'y', b'!', 0, 0, 0, // NLMSGERR_ATTR_MSG
        ];
        let (code, msg) = parse_error(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap();
        assert_eq!(code, -17);
        assert_eq!(msg.as_deref(), Some("busy!"));
        assert!(parse_error(&[1, 2], 0).is_err());
        assert!(parse_error(&payload[..8], NLM_F_ACK_TLVS).is_err());
    }

    #[test]
    fn split_rejects_bad_lengths() {
        assert!(split_message(&[0; 8]).is_err());
        let mut m = [0u8; 16];
        m[0] = 40;
        assert!(split_message(&m).is_err());
        m[0] = 16;
        let (h, p, rest) = split_message(&m).unwrap();
        assert_eq!((h.msg_type, p.len(), rest.len()), (0, 0, 0));
    }
}
