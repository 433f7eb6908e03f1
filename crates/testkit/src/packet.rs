//! Raw frames in and out of an interface (`AF_PACKET`), for tests that
//! send exact bytes and check exactly what arrives, VLAN tag included.
//!
//! Open the socket inside the namespace that holds the interface
//! (`NetNs::run(|| RawSocket::open("eth0"))`): a socket belongs to the
//! namespace it was created in, wherever it is used afterwards.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `struct tpacket_auxdata` (`linux/if_packet.h`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

const SOL_PACKET: i32 = 263;
const PACKET_AUXDATA: i32 = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const PACKET_OUTGOING: u8 = 4;

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The outer VLAN tag the kernel held as metadata: (TPID, TCI).
    pub tag: Option<(u16, u16)>,
    /// The frame bytes without that tag.
    pub data: Vec<u8>,
}

/// An `AF_PACKET` raw socket bound to one interface, non-blocking.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens and binds a socket to `ifname` in the calling thread's netns.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let name = CString::new(ifname)?;
        // SAFETY: plain libc calls on values we own; errors are checked.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let on: i32 = 1;
            if libc::setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_AUXDATA,
                (&on as *const i32).cast(),
                4,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            if libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(Self { fd, ifindex })
        }
    }

    /// Sends one frame as is (a VLAN tag in it stays in the bytes).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; the buffer outlives the call.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Every frame received so far (not the ones this host sent out).
    pub fn drain(&self) -> io::Result<Vec<Frame>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let mut cmsg = [0u64; 16];
            // SAFETY: every pointer in msghdr points at a live local buffer
            // of the stated length.
            let (n, sll, aux) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cmsg.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&cmsg);
                let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        return Ok(out);
                    }
                    return Err(e);
                }
                let mut aux = None;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                        aux = Some(std::ptr::read_unaligned(
                            libc::CMSG_DATA(c).cast::<AuxData>(),
                        ));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                (n as usize, sll, aux)
            };
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let tag = aux
                .filter(|a| a.status & TP_STATUS_VLAN_VALID != 0)
                .map(|a| {
                    let tpid = if a.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        a.vlan_tpid
                    } else {
                        0x8100
                    };
                    (tpid, a.vlan_tci)
                });
            out.push(Frame {
                tag,
                data: buf[..n].to_vec(),
            });
        }
    }
}

/// Runs the calling thread on CPU `cpu` only. A frame sent into a veth is
/// processed by the receive path on the sender's CPU, so a sender pinned
/// to one CPU keeps per-CPU state (counters, caches) in one place and
/// shares that CPU with the softirq work its frames cause.
///
/// # Panics
/// When the kernel refuses the affinity (no such CPU).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity(CPU {cpu}): {}",
            io::Error::last_os_error()
        );
    }
}
