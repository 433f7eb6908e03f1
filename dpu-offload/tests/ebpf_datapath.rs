//! The eBPF datapath on the real kernel: netns "VFs" wired to veth
//! "representors" in a switch namespace where nothing else forwards; the
//! classifier decides everything, and traffic proves each decision.

use plexus_dpu_offload::{
    datapath::{self, Datapath, Maps},
    ebpf, install,
    parse::parse_flows,
};
use plexus_netlink::Netlink;
use plexus_testkit::{BpfFs, NetNs};

/// A switch namespace with `n` representors `rep0..`, each the peer of
/// `eth0` in its own VF namespace with 10.9.0.(i+1)/24 and MAC
/// 02:00:00:00:00:0(i+1), and static neighbour entries for the others.
struct Rig {
    sw: NetNs,
    vfs: Vec<NetNs>,
    bpf: BpfFs,
}

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{:02x}", i + 1)
}

fn ip(i: usize) -> String {
    format!("10.9.0.{}", i + 1)
}

impl Rig {
    fn new(n: usize) -> Rig {
        let sw = NetNs::with_prefix("sw").unwrap();
        let mut vfs = Vec::new();
        for i in 0..n {
            let vf = NetNs::with_prefix("vf").unwrap();
            let rep = format!("rep{i}");
            sw.sh(
                "ip",
                &[
                    "link",
                    "add",
                    &rep,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    vf.name(),
                ],
            );
            sw.sh("ip", &["link", "set", &rep, "up"]);
            vf.sh("ip", &["link", "set", "eth0", "address", &mac(i)]);
            vf.sh(
                "ip",
                &["addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"],
            );
            vf.sh("ip", &["link", "set", "eth0", "up"]);
            vf.sh("ip", &["link", "set", "lo", "up"]);
            vfs.push(vf);
        }
        // Static neighbours: no ARP to wait for or to queue packets behind,
        // so every packet a test sends is one the classifier sees at once.
        for (i, vf) in vfs.iter().enumerate() {
            for j in (0..n).filter(|j| *j != i) {
                vf.sh(
                    "ip",
                    &[
                        "neigh",
                        "add",
                        &ip(j),
                        "lladdr",
                        &mac(j),
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ],
                );
            }
        }
        Rig {
            sw,
            vfs,
            bpf: BpfFs::new().unwrap(),
        }
    }

    fn apply(&self, text: &str) -> datapath::EbpfReport {
        let flows = parse_flows(text).unwrap();
        let dir = self.bpf.pin_dir();
        self.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            let ports = install::host_ports(&mut nl, &[]).unwrap();
            let table = ebpf::compile(&flows, &ports).unwrap();
            let mut dp = Datapath::load(&dir).unwrap();
            dp.apply(&mut nl, &table, &ports).unwrap()
        })
    }

    fn installed(&self) -> Vec<datapath::EbpfInstalled> {
        let dir = self.bpf.pin_dir();
        self.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            let ports = install::host_ports(&mut nl, &[]).unwrap();
            Maps::open(&dir)
                .unwrap()
                .unwrap()
                .installed(&ports)
                .unwrap()
        })
    }

    fn ping(&self, from: usize, to: usize, count: u32) -> bool {
        self.vfs[from]
            .exec(
                "ping",
                &[
                    "-c",
                    &count.to_string(),
                    "-i",
                    "0.05",
                    "-W",
                    "1",
                    "-q",
                    &ip(to),
                ],
            )
            .unwrap()
            .status
            .success()
    }
}

#[test]
fn redirect_flows_carry_pings_and_count_them() {
    let rig = Rig::new(3);
    assert!(!rig.ping(0, 1, 1), "nothing forwards before the flows");
    let report = rig.apply(
        "in_port=rep0,arp,actions=output:rep1\n\
         in_port=rep1,arp,actions=output:rep0\n\
         in_port=rep0,icmp,nw_dst=10.9.0.2,actions=output:rep1\n\
         in_port=rep1,icmp,nw_dst=10.9.0.1,actions=output:rep0\n",
    );
    assert_eq!(report.flows.len(), 4);
    assert!(rig.ping(0, 1, 3));
    assert!(!rig.ping(0, 2, 1), "no flow to rep2");
    let flows = rig.installed();
    let icmp: Vec<u64> = flows
        .iter()
        .filter(|f| f.flow.matches.nw_proto == Some(1))
        .map(|f| f.counters.packets)
        .collect();
    assert_eq!(icmp, vec![3, 3], "{flows:#?}");
}
