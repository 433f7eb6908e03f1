//! SR-IOV VF attributes as the PF driver keeps them (`IFLA_VFINFO_LIST`).
//!
//! Owns reading every VF's settings from the PF (`RTM_GETLINK` with
//! `IFLA_EXT_MASK = RTEXT_FILTER_VF`) into plain [`VfConfig`]s, and writing
//! one setting at a time (`RTM_NEWLINK` on the PF with `IFLA_VFINFO_LIST` >
//! `IFLA_VF_INFO` > one `IFLA_VF_*`), byte-for-byte as
//! `ip link set dev PF vf N ...` does.
//!
//! It must not find PFs or VF indexes (sysfs does, see `sriov.md` §2) and
//! does not move VF netdevs (that is [`crate::link`]). The kernel passes
//! these calls to the PF driver's `ndo_set_vf_*`; a link without VFs
//! (veth) answers `EOPNOTSUPP` or `EINVAL` to writes and lists no VFs.

use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        LinkAttribute, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate,
        VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
    },
};

use crate::{
    Netlink, Op, Request,
    attr::{self, Attr},
    error::{Error, Result},
    link::MacAddr,
};

const RTM_NEWLINK: u16 = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_VFINFO_LIST: u16 = 22;
const IFLA_VF_INFO: u16 = 1;
const IFLA_VF_MAC: u16 = 1;
const IFLA_VF_VLAN: u16 = 2;
const IFLA_VF_TX_RATE: u16 = 3;
const IFLA_VF_SPOOFCHK: u16 = 4;
const IFLA_VF_LINK_STATE: u16 = 5;
const IFLA_VF_RATE: u16 = 6;
const IFLA_VF_TRUST: u16 = 9;
const IFLA_VF_VLAN_LIST: u16 = 12;
const IFLA_VF_VLAN_INFO: u16 = 1;
const ETH_P_8021AD: u16 = 0x88a8;

/// VLAN tag protocol of a VF's port VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VlanProto {
    /// 802.1Q (`0x8100`), the default.
    #[default]
    Dot1Q,
    /// 802.1ad / QinQ (`0x88a8`).
    Dot1Ad,
}

/// `IFLA_VF_LINK_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VfLinkMode {
    /// Follow the PF's link (`auto`, 0).
    #[default]
    Auto,
    /// Always up (`enable`, 1).
    Enable,
    /// Always down (`disable`, 2).
    Disable,
}

/// One VF's settings as the PF reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfConfig {
    /// VF number on the PF.
    pub vf: u32,
    /// Administrative MAC (all zero when unset).
    pub mac: MacAddr,
    /// Port VLAN (0 = none).
    pub vlan: u32,
    /// 802.1p priority of the port VLAN.
    pub qos: u32,
    /// Port VLAN protocol.
    pub vlan_proto: VlanProto,
    /// Minimum TX rate in Mbit/s (0 = none).
    pub min_tx_rate: u32,
    /// Maximum TX rate in Mbit/s (0 = unlimited).
    pub max_tx_rate: u32,
    /// MAC spoof checking; `None` if the driver does not report it (-1).
    pub spoofchk: Option<bool>,
    /// Trusted VF; `None` if the driver does not report it (-1).
    pub trust: Option<bool>,
    /// Link state mode.
    pub link_state: VfLinkMode,
}

/// One write, as `ip link set dev PF vf N <setting>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfSetting {
    /// `mac XX:..` (`IFLA_VF_MAC`).
    Mac(MacAddr),
    /// `vlan ID [qos Q] [proto 802.1Q|802.1ad]`; `id: 0` removes the VLAN.
    Vlan {
        /// 0..=4095.
        id: u16,
        /// 0..=7.
        qos: u8,
        /// Tag protocol.
        proto: VlanProto,
    },
    /// `min_tx_rate N max_tx_rate M` in Mbit/s (`IFLA_VF_RATE`).
    Rate {
        /// Guaranteed rate, 0 for none.
        min_mbps: u32,
        /// Ceiling, 0 for unlimited.
        max_mbps: u32,
    },
    /// `spoofchk on|off`.
    SpoofCheck(bool),
    /// `trust on|off`.
    Trust(bool),
    /// `state auto|enable|disable`.
    LinkState(VfLinkMode),
}

/// Request builders: pure, golden-tested against iproute2.
pub mod req {
    use netlink_packet_route::link::{LinkExtentMask, LinkMessage};

    use super::*;

    /// `ip -d link show dev PF`: `RTM_GETLINK` with family `AF_PACKET`,
    /// `IFLA_IFNAME`, then `IFLA_EXT_MASK = RTEXT_FILTER_VF`.
    pub fn list(pf: &str) -> Request {
        let mut m = LinkMessage::default();
        m.header.interface_family = netlink_packet_route::AddressFamily::Packet;
        m.attributes = vec![
            LinkAttribute::IfName(pf.to_owned()),
            LinkAttribute::ExtMask(vec![LinkExtentMask::Vf]),
        ];
        Request::new(
            RouteNetlinkMessage::GetLink(m),
            0,
            Op::new(format!("read VFs of {pf}"), "interface"),
        )
    }

    /// `ip link set dev PF vf N ...`.
    ///
    /// For a VLAN, iproute2 sends the legacy `IFLA_VF_VLAN` when the protocol
    /// is 802.1Q (which every driver understands) and `IFLA_VF_VLAN_LIST` >
    /// `IFLA_VF_VLAN_INFO` (with the `__be16` protocol) only for 802.1ad; the
    /// kernel treats both the same way (`do_setvfinfo` calls
    /// `ndo_set_vf_vlan` with `ETH_P_8021Q` for the legacy one). We do the
    /// same.
    pub fn set(pf_index: u32, vf: u32, setting: &VfSetting) -> Request {
        let info = match *setting {
            VfSetting::Mac(mac) => VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
            VfSetting::Vlan {
                id,
                qos,
                proto: VlanProto::Dot1Q,
            } => VfInfo::Vlan(VfInfoVlan::new(vf, u32::from(id), u32::from(qos))),
            VfSetting::Vlan {
                id,
                qos,
                proto: VlanProto::Dot1Ad,
            } => VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                vf,
                u32::from(id),
                u32::from(qos),
                VlanProtocol::Ieee8021Ad,
            ))]),
            VfSetting::Rate { min_mbps, max_mbps } => {
                VfInfo::Rate(VfInfoRate::new(vf, min_mbps, max_mbps))
            }
            VfSetting::SpoofCheck(on) => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)),
            VfSetting::Trust(on) => VfInfo::Trust(VfInfoTrust::new(vf, on)),
            VfSetting::LinkState(mode) => VfInfo::LinkState(VfInfoLinkState::new(
                vf,
                match mode {
                    VfLinkMode::Auto => VfLinkState::Auto,
                    VfLinkMode::Enable => VfLinkState::Enable,
                    VfLinkMode::Disable => VfLinkState::Disable,
                },
            )),
        };
        let mut m = LinkMessage::default();
        m.header.index = pf_index;
        m.attributes = vec![LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])])];
        Request::new(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK,
            Op::new(
                format!("set VF {vf} {} on PF ifindex {pf_index}", describe(setting)),
                "interface",
            ),
        )
    }

    fn describe(s: &VfSetting) -> String {
        match s {
            VfSetting::Mac(m) => format!("mac {m}"),
            VfSetting::Vlan { id, qos, proto } => format!("vlan {id} qos {qos} proto {proto:?}"),
            VfSetting::Rate { min_mbps, max_mbps } => {
                format!("min_tx_rate {min_mbps} max_tx_rate {max_mbps}")
            }
            VfSetting::SpoofCheck(on) => format!("spoofchk {}", on_off(*on)),
            VfSetting::Trust(on) => format!("trust {}", on_off(*on)),
            VfSetting::LinkState(m) => format!("state {m:?}").to_lowercase(),
        }
    }

    fn on_off(b: bool) -> &'static str {
        if b { "on" } else { "off" }
    }
}

/// Every VF's settings on `pf` (by name). A link without VFs (no
/// `IFLA_VFINFO_LIST` in the reply, e.g. a veth) yields an empty list.
pub fn list(nl: &mut Netlink, pf: &str) -> Result<Vec<VfConfig>> {
    let r = req::list(pf);
    let replies = nl.execute_raw(&r)?;
    let reply = replies
        .first()
        .ok_or_else(|| Error::bad_reply(r.op(), "no reply"))?;
    if reply.msg_type != RTM_NEWLINK {
        let msg = format!("expected RTM_NEWLINK, got message type {}", reply.msg_type);
        return Err(Error::bad_reply(r.op(), msg));
    }
    parse_vfinfo_list(&reply.payload).map_err(|e| Error::bad_reply(r.op(), e))
}

/// Applies one VF setting through the PF.
pub fn set(nl: &mut Netlink, pf_index: u32, vf: u32, setting: &VfSetting) -> Result<()> {
    nl.execute_raw(&req::set(pf_index, vf, setting)).map(drop)
}

/// Parses the `IFLA_VFINFO_LIST` of an `RTM_NEWLINK` payload (`ifinfomsg` +
/// attributes). Decoded here rather than through netlink-packet-route,
/// which turns the driver's "not reported" (-1) spoofchk/trust into `true`.
pub fn parse_vfinfo_list(payload: &[u8]) -> Result<Vec<VfConfig>, String> {
    let attrs = payload
        .get(IFINFOMSG_LEN..)
        .ok_or("RTM_NEWLINK shorter than ifinfomsg")?;
    let attrs = attr::parse(attrs)?;
    let Some(list) = attr::find(&attrs, IFLA_VFINFO_LIST) else {
        return Ok(Vec::new());
    };
    list.nested()?
        .iter()
        .filter(|a| a.kind == IFLA_VF_INFO)
        .map(|info| parse_vf_info(&info.nested()?))
        .collect()
}

/// The `u32` fields of one of the fixed `struct ifla_vf_*`; each starts with
/// `__u32 vf`.
fn words<const N: usize>(a: &Attr<'_>) -> Result<[u32; N], String> {
    let mut out = [0u32; N];
    for (i, w) in out.iter_mut().enumerate() {
        let b = a
            .value
            .get(i * 4..i * 4 + 4)
            .ok_or_else(|| format!("IFLA_VF attribute {} too short", a.kind))?;
        *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(out)
}

fn parse_vf_info(attrs: &[Attr<'_>]) -> Result<VfConfig, String> {
    let mut vf = VfConfig {
        vf: u32::MAX,
        mac: MacAddr::default(),
        vlan: 0,
        qos: 0,
        vlan_proto: VlanProto::Dot1Q,
        min_tx_rate: 0,
        max_tx_rate: 0,
        spoofchk: None,
        trust: None,
        link_state: VfLinkMode::Auto,
    };
    let setting = |v: u32| (v != u32::MAX).then_some(v != 0);
    for a in attrs {
        match a.kind {
            IFLA_VF_MAC => {
                let [n] = words::<1>(a)?;
                vf.vf = n;
                let mac = a.value.get(4..10).ok_or("IFLA_VF_MAC too short")?;
                vf.mac = MacAddr(mac.try_into().map_err(|_| "IFLA_VF_MAC too short")?);
            }
            IFLA_VF_VLAN => {
                let [n, vlan, qos] = words::<3>(a)?;
                (vf.vf, vf.vlan, vf.qos) = (n, vlan, qos);
            }
            IFLA_VF_VLAN_LIST => {
                // struct ifla_vf_vlan_info { vf, vlan, qos; __be16 proto }
                if let Some(info) = attr::find(&a.nested()?, IFLA_VF_VLAN_INFO) {
                    let [n, vlan, qos] = words::<3>(&info)?;
                    let p = info
                        .value
                        .get(12..14)
                        .ok_or("IFLA_VF_VLAN_INFO too short")?;
                    (vf.vf, vf.vlan, vf.qos) = (n, vlan, qos);
                    vf.vlan_proto = if u16::from_be_bytes([p[0], p[1]]) == ETH_P_8021AD {
                        VlanProto::Dot1Ad
                    } else {
                        VlanProto::Dot1Q
                    };
                }
            }
            IFLA_VF_TX_RATE => {
                // Legacy max rate; IFLA_VF_RATE, when present, wins below.
                let [_, rate] = words::<2>(a)?;
                if vf.max_tx_rate == 0 {
                    vf.max_tx_rate = rate;
                }
            }
            IFLA_VF_RATE => {
                let [_, min, max] = words::<3>(a)?;
                (vf.min_tx_rate, vf.max_tx_rate) = (min, max);
            }
            IFLA_VF_SPOOFCHK => vf.spoofchk = setting(words::<2>(a)?[1]),
            IFLA_VF_TRUST => vf.trust = setting(words::<2>(a)?[1]),
            IFLA_VF_LINK_STATE => {
                vf.link_state = match words::<2>(a)?[1] {
                    1 => VfLinkMode::Enable,
                    2 => VfLinkMode::Disable,
                    _ => VfLinkMode::Auto,
                };
            }
            _ => {}
        }
    }
    if vf.vf == u32::MAX {
        return Err("IFLA_VF_INFO without IFLA_VF_MAC".into());
    }
    Ok(vf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWLINK` payload with one VF, laid out as the kernel's
    /// `rtnl_fill_vfinfo` writes it (most attributes; stats left out).
    #[test]
    fn parses_a_kernel_style_vfinfo_list() {
        let mut vf = attr::AttrWriter::new();
        // struct ifla_vf_mac { __u32 vf; __u8 mac[32]; }
        let mac = [
            2u32.to_ne_bytes().to_vec(),
            vec![2, 0, 0, 0, 0, 0xaa],
            vec![0; 26],
        ]
        .concat();
        vf.put(IFLA_VF_MAC, &mac);
        vf.put(IFLA_VF_VLAN, &[2u32, 100, 5].map(u32::to_ne_bytes).concat());
        vf.nest(IFLA_VF_VLAN_LIST, |w| {
            let mut v = [2u32, 100, 5].map(u32::to_ne_bytes).concat();
            v.extend_from_slice(&ETH_P_8021AD.to_be_bytes());
            v.extend_from_slice(&[0, 0]);
            w.put(IFLA_VF_VLAN_INFO, &v);
        });
        vf.put(
            IFLA_VF_RATE,
            &[2u32, 10, 1000].map(u32::to_ne_bytes).concat(),
        );
        vf.put(
            IFLA_VF_TX_RATE,
            &[2u32, 1000].map(u32::to_ne_bytes).concat(),
        );
        vf.put(IFLA_VF_SPOOFCHK, &[2u32, 1].map(u32::to_ne_bytes).concat());
        vf.put(
            IFLA_VF_LINK_STATE,
            &[2u32, 2].map(u32::to_ne_bytes).concat(),
        );
        vf.put(
            IFLA_VF_TRUST,
            &[2u32, u32::MAX].map(u32::to_ne_bytes).concat(),
        );
        let mut top = attr::AttrWriter::new();
        top.put_str(3, "pf0").nest(IFLA_VFINFO_LIST, |w| {
            w.put(IFLA_VF_INFO, vf.as_bytes());
        });
        let payload = [vec![0u8; IFINFOMSG_LEN], top.into_bytes()].concat();

        // Every truncation is an error or a shorter list, never a panic.
        for n in 0..payload.len() {
            let _ = parse_vfinfo_list(&payload[..n]);
        }
        let vfs = parse_vfinfo_list(&payload).unwrap();
        assert_eq!(
            vfs,
            vec![VfConfig {
                vf: 2,
                mac: MacAddr([2, 0, 0, 0, 0, 0xaa]),
                vlan: 100,
                qos: 5,
                vlan_proto: VlanProto::Dot1Ad,
                min_tx_rate: 10,
                max_tx_rate: 1000,
                spoofchk: Some(true),
                trust: None,
                link_state: VfLinkMode::Disable,
            }]
        );
    }

    #[test]
    fn no_list_is_empty_and_garbage_is_an_error() {
        let payload = [vec![0u8; IFINFOMSG_LEN], vec![8, 0, 3, 0, b'v', b'e', 0, 0]].concat();
        assert_eq!(parse_vfinfo_list(&payload).unwrap(), vec![]);
        assert!(parse_vfinfo_list(&[0; 4]).is_err());
        // A VF_INFO with a truncated IFLA_VF_MAC.
        let mut top = attr::AttrWriter::new();
        top.nest(IFLA_VFINFO_LIST, |w| {
            w.nest(IFLA_VF_INFO, |w| {
                w.put(IFLA_VF_MAC, &[1, 0]);
            });
        });
        let payload = [vec![0u8; IFINFOMSG_LEN], top.into_bytes()].concat();
        assert!(parse_vfinfo_list(&payload).is_err());
    }
}
