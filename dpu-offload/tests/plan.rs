//! The installer's diff, decided before anything is sent: what a re-apply
//! keeps, replaces in place, adds and deletes, and in which order. The installed side is what
//! the kernel would echo for filters the compiler produced (this kernel
//! has no flower to install them for real).

use plexus_dpu_offload::{
    dump::{self, InstalledFlow},
    flower::{self, CompiledFlow, Policy, PortMap},
    install::plan,
    parse::parse_flows,
};
use plexus_netlink::{
    AttrWriter, RawMessage,
    tc::{PARENT_INGRESS, RTM_NEWTFILTER, TcFilterEntry, filter_info, tcmsg},
};

fn ports() -> PortMap {
    let mut p = PortMap::new();
    for (n, i) in [("rep0", 2), ("rep1", 3), ("up0", 4)] {
        p.insert(n, i);
    }
    p
}

fn compile(text: &str, policy: Policy) -> Vec<CompiledFlow> {
    flower::compile(&parse_flows(text).unwrap(), &ports(), policy).unwrap()
}

/// The filters as the kernel would hold them after installing `compiled`.
fn install(compiled: &[CompiledFlow], first_handle: u32) -> Vec<InstalledFlow> {
    compiled
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut p = tcmsg(
                c.ifindex,
                first_handle + i as u32,
                PARENT_INGRESS,
                filter_info(c.prio, c.protocol),
            );
            let mut w = AttrWriter::new();
            if c.chain != 0 {
                w.put_u32(11, c.chain);
            }
            w.put_str(1, "flower");
            w.put(2, &c.options);
            p.extend_from_slice(w.as_bytes());
            let e = TcFilterEntry::from_raw(RawMessage {
                msg_type: RTM_NEWTFILTER,
                flags: 0,
                payload: p,
            })
            .unwrap();
            dump::decode(&e, &ports()).unwrap().unwrap()
        })
        .collect()
}

const TABLE: &str = "\
priority=100,in_port=rep0,ip,actions=output:up0
priority=100,in_port=rep0,arp,actions=output:up0
priority=200,in_port=up0,tcp,tp_dst=22,actions=drop
table=1,priority=100,in_port=up0,ip,actions=output:rep1
";

#[test]
fn the_same_table_again_changes_nothing() {
    let c = compile(TABLE, Policy::PreferHw);
    let installed = install(&c, 1);
    let p = plan(&c, &installed);
    assert_eq!(p.kept.len(), 4);
    assert!(
        p.to_add.is_empty() && p.early.is_empty() && p.late.is_empty(),
        "{p:?}"
    );
}

#[test]
fn changed_actions_are_replaced_in_place() {
    let installed = install(&compile(TABLE, Policy::PreferHw), 1);
    let c = compile(
        &TABLE.replace("tp_dst=22,actions=drop", "tp_dst=22,actions=output:rep1"),
        Policy::PreferHw,
    );
    let p = plan(&c, &installed);
    assert_eq!(p.kept.len(), 3);
    assert!(p.to_add.is_empty(), "{p:?}");
    assert_eq!(p.replaced.len(), 1);
    let (new, old) = p.replaced[0];
    assert_eq!(new.index, 2);
    assert_eq!(
        old.flow.to_string(),
        "table=0,priority=200,in_port=up0,tcp,tp_dst=22,actions=drop"
    );
    assert_eq!(old.handle, 3, "the handle the replace request carries");
    assert!(p.early.is_empty() && p.late.is_empty());
}

#[test]
fn a_changed_match_is_added_before_its_old_version_goes() {
    let installed = install(&compile(TABLE, Policy::PreferHw), 1);
    let c = compile(&TABLE.replace("tp_dst=22", "tp_dst=23"), Policy::PreferHw);
    let p = plan(&c, &installed);
    assert_eq!(p.kept.len(), 3);
    assert!(p.replaced.is_empty());
    assert_eq!(p.to_add.len(), 1);
    assert_eq!(p.to_add[0].index, 2);
    assert!(p.early.is_empty());
    assert_eq!(p.late.len(), 1);
    assert_eq!(
        p.late[0].flow.to_string(),
        "table=0,priority=200,in_port=up0,tcp,tp_dst=22,actions=drop"
    );
}

#[test]
fn a_flow_with_a_new_priority_moves_no_other() {
    let before = compile(TABLE, Policy::PreferHw);
    let installed = install(&before, 1);
    let c = compile(
        &format!("{TABLE}priority=300,in_port=rep0,arp,actions=drop\n"),
        Policy::PreferHw,
    );
    let p = plan(&c, &installed);
    assert_eq!(p.kept.len(), 4, "{p:?}");
    assert_eq!(p.to_add.len(), 1);
    assert!(p.replaced.is_empty() && p.early.is_empty() && p.late.is_empty());
    for (a, b) in before.iter().zip(&c) {
        assert_eq!(a.prio, b.prio, "a flow's preference moved");
    }
}

#[test]
fn removed_flows_and_crash_leftovers_are_deleted() {
    // A crashed run left a filter on rep1 that no table has now.
    let mut installed = install(&compile(TABLE, Policy::PreferHw), 1);
    installed.extend(install(
        &compile("priority=5,in_port=rep1,actions=drop", Policy::PreferHw),
        100,
    ));
    let c = compile(
        &TABLE.lines().take(3).collect::<Vec<_>>().join("\n"),
        Policy::PreferHw,
    );
    let p = plan(&c, &installed);
    assert_eq!(p.kept.len(), 3);
    assert!(p.to_add.is_empty());
    let mut gone: Vec<String> = p.late.iter().map(|f| f.flow.to_string()).collect();
    gone.sort();
    assert_eq!(
        gone,
        [
            "table=0,priority=5,in_port=rep1,actions=drop",
            "table=1,priority=100,in_port=up0,ip,actions=output:rep1",
        ]
    );
}

#[test]
fn a_preference_taken_by_another_protocol_is_freed_first() {
    // Filters of another Plexus version, at preferences where this one
    // puts other protocols: an arp filter where ip goes now.
    let mut installed = install(
        &compile(
            "priority=100,in_port=rep0,arp,actions=drop\n",
            Policy::PreferHw,
        ),
        1,
    );
    let ip_pref = flower::preference(100, 0x0800);
    installed[0].prio = ip_pref;
    let c = compile(
        "priority=100,in_port=rep0,ip,actions=drop\n",
        Policy::PreferHw,
    );
    assert_eq!(c[0].prio, ip_pref);
    let p = plan(&c, &installed);
    assert!(p.kept.is_empty() && p.replaced.is_empty());
    assert_eq!(p.to_add.len(), 1);
    assert_eq!(p.early.len(), 1, "{p:?}");
    assert!(p.late.is_empty());
}

#[test]
fn a_policy_change_replaces_every_filter_in_place() {
    let installed = install(&compile(TABLE, Policy::PreferHw), 1);
    let c = compile(TABLE, Policy::SwOnly);
    let p = plan(&c, &installed);
    assert!(p.kept.is_empty());
    assert_eq!(p.replaced.len(), 4);
    assert!(p.to_add.is_empty() && p.early.is_empty() && p.late.is_empty());
}
