//! Shadowing under `prefer-hw`: a flow the NIC refused stays in software,
//! but a packet the NIC itself matches never reaches software. So a
//! higher-priority flow left in software loses every packet that an
//! overlapping lower-priority flow in hardware matches: the two tables,
//! hardware and software, disagree with the flow table.
//!
//! Pure decisions over where flows landed; the installer acts on them
//! (keeping such lower flows out of hardware, or refusing the table) and
//! `dump-flows` reports what it finds in the kernel.

use crate::flow::Match;

/// One flower flow as it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// Its port (ifindex).
    pub port: u32,
    /// Its table (tc chain).
    pub chain: u32,
    /// Its OpenFlow priority.
    pub priority: u16,
    /// Its match.
    pub matches: Match,
    /// Whether the NIC holds it.
    pub in_hw: bool,
}

fn shadows(hw: &Landed, sw: &Landed) -> bool {
    hw.port == sw.port
        && hw.chain == sw.chain
        && hw.priority < sw.priority
        && hw.in_hw
        && !sw.in_hw
        && hw.matches.overlaps(&sw.matches)
}

/// For each flow, the flow that shadows it: the highest-priority
/// overlapping flow of its port and table, below it, held by the NIC while
/// it is not.
#[must_use]
pub fn shadowed_by(flows: &[Landed]) -> Vec<Option<usize>> {
    flows
        .iter()
        .map(|f| {
            flows
                .iter()
                .enumerate()
                .filter(|(_, g)| shadows(g, f))
                .max_by_key(|(_, g)| g.priority)
                .map(|(i, _)| i)
        })
        .collect()
}

/// The higher-priority flow that `g` would shadow if the NIC held it: an
/// overlapping flow of its port and table, above it, not in hardware.
/// `None` when `g` may go to hardware.
#[must_use]
pub fn must_stay_in_software(flows: &[Landed], g: usize) -> Option<usize> {
    let held = Landed {
        in_hw: true,
        ..flows[g].clone()
    };
    flows
        .iter()
        .enumerate()
        .filter(|(i, f)| *i != g && shadows(&held, f))
        .max_by_key(|(_, f)| f.priority)
        .map(|(i, _)| i)
}

/// The order in which to settle where flows go: per port and table,
/// highest priority first, so that every flow that can shadow one is
/// settled after it.
#[must_use]
pub fn settle_order(flows: &[Landed]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..flows.len()).collect();
    order.sort_by_key(|&i| {
        let f = &flows[i];
        (f.port, f.chain, std::cmp::Reverse(f.priority), i)
    });
    order
}

/// Where a flow goes while settling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Out of hardware (`sw-only`): it would shadow a higher flow.
    Demote,
    /// Back to `prefer-hw`: nothing above needs it out of hardware any more.
    Restore,
}

/// Why settling stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum SettleError<E> {
    /// Refusing: flow `shadowed` would lose packets to flow `by`.
    Shadowed {
        /// The higher flow left in software.
        shadowed: usize,
        /// The lower flow the NIC holds.
        by: usize,
    },
    /// Moving a flow failed.
    Move(E),
}

/// Settles a table so that no flow is shadowed, highest priority first per
/// port and table. `demoted[k]` says flow `k` is installed `sw-only` by an
/// earlier settle; `moved(k, how)` replaces flow `k`'s filter and returns
/// whether the NIC holds it now. Under `refuse`, a flow that would need
/// demoting stops the settle instead.
///
/// # Errors
/// [`SettleError::Shadowed`] under `refuse`; what `moved` returns.
pub fn settle<E>(
    landed: &mut [Landed],
    demoted: &mut [bool],
    refuse: bool,
    mut moved: impl FnMut(usize, Move) -> Result<bool, E>,
) -> Result<(), SettleError<E>> {
    for k in settle_order(landed) {
        let how = match (must_stay_in_software(landed, k), demoted[k]) {
            (Some(above), false) if landed[k].in_hw => {
                if refuse {
                    return Err(SettleError::Shadowed {
                        shadowed: above,
                        by: k,
                    });
                }
                Move::Demote
            }
            (None, true) => Move::Restore,
            _ => continue,
        };
        landed[k].in_hw = moved(k, how).map_err(SettleError::Move)?;
        demoted[k] = how == Move::Demote;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_flow;

    fn landed(text: &str, in_hw: bool) -> Landed {
        let f = parse_flow(text).unwrap();
        Landed {
            port: if f.in_port == "p1" { 1 } else { 2 },
            chain: f.table,
            priority: f.priority,
            matches: f.matches,
            in_hw,
        }
    }

    #[test]
    fn a_software_flow_above_an_overlapping_hardware_one_is_shadowed() {
        let flows = [
            // 0: the NIC refused it (say, a key it cannot match).
            landed("priority=200,in_port=p1,tcp,tp_dst=22,actions=drop", false),
            // 1: in hardware, overlaps 0: shadows it.
            landed("priority=100,in_port=p1,ip,actions=output:p2", true),
            // 2: in hardware, disjoint (udp).
            landed("priority=150,in_port=p1,udp,actions=output:p2", true),
            // 3: same match as 1 on another port.
            landed("priority=100,in_port=p2,ip,actions=output:p1", true),
            // 4: overlaps 0 but above it: not a shadow.
            landed(
                "priority=300,in_port=p1,ip,nw_dst=10.0.0.1,actions=drop",
                true,
            ),
            // 5: another table.
            landed("table=1,priority=50,in_port=p1,ip,actions=drop", true),
        ];
        assert_eq!(shadowed_by(&flows), [Some(1), None, None, None, None, None]);
        assert_eq!(must_stay_in_software(&flows, 1), Some(0));
        for g in [2, 3, 4, 5] {
            assert_eq!(must_stay_in_software(&flows, g), None, "{g}");
        }
        // Once 1 is kept out of hardware, nothing is shadowed.
        let mut fixed = flows.clone();
        fixed[1].in_hw = false;
        assert!(shadowed_by(&fixed).iter().all(Option::is_none));
        // The settle order puts 4, then 0, before the flows below them.
        let order = settle_order(&flows);
        let pos = |i| order.iter().position(|x| *x == i).unwrap();
        assert!(pos(4) < pos(0) && pos(0) < pos(2) && pos(2) < pos(1));
    }

    #[test]
    fn the_highest_shadow_is_named_and_equal_priorities_do_not_shadow() {
        let flows = [
            landed("priority=200,in_port=p1,ip,actions=drop", false),
            landed(
                "priority=100,in_port=p1,ip,nw_src=10.0.0.0/8,actions=drop",
                true,
            ),
            landed(
                "priority=150,in_port=p1,ip,nw_src=10.1.0.0/16,actions=drop",
                true,
            ),
            landed(
                "priority=200,in_port=p1,ip,nw_dst=10.0.0.1,actions=drop",
                true,
            ),
        ];
        assert_eq!(shadowed_by(&flows)[0], Some(2));
    }

    /// A NIC that holds every flow it is offered except those in `refuses`
    /// (say, keys it cannot match): `prefer-hw` leaves those in software.
    fn nic(refuses: &'static [usize]) -> impl FnMut(usize, Move) -> Result<bool, ()> {
        move |k, how| Ok(how == Move::Restore && !refuses.contains(&k))
    }

    fn table(refuses: &[usize]) -> Vec<Landed> {
        let text = [
            "priority=300,in_port=p1,tcp,tp_dst=22,actions=drop",
            "priority=200,in_port=p1,tcp,actions=output:p2",
            "priority=100,in_port=p1,ip,nw_dst=10.0.0.0/8,actions=output:p2",
            "priority=50,in_port=p1,udp,actions=output:p2",
            "priority=10,in_port=p1,actions=drop",
        ];
        text.iter()
            .enumerate()
            .map(|(i, t)| landed(t, !refuses.contains(&i)))
            .collect()
    }

    #[test]
    fn settling_demotes_the_chain_of_flows_below_a_refused_one_and_no_more() {
        // The NIC refused 0 (tcp/22 drop). 1 (all tcp) and 2 (ip to
        // 10/8) overlap it; 3 (udp) overlaps neither 0 nor 1, but 2 (udp
        // to 10/8), in software by then, so 3 must go too; 4 (everything)
        // overlaps all.
        let mut flows = table(&[0]);
        let mut demoted = vec![false; flows.len()];
        let mut moves = Vec::new();
        let mut hw = nic(&[0]);
        settle(&mut flows, &mut demoted, false, |k, how| {
            moves.push((k, how));
            hw(k, how)
        })
        .unwrap();
        assert_eq!(
            moves,
            [
                (1, Move::Demote),
                (2, Move::Demote),
                (3, Move::Demote),
                (4, Move::Demote)
            ]
        );
        assert!(shadowed_by(&flows).iter().all(Option::is_none));
        assert_eq!(demoted, [false, true, true, true, true]);

        // The next apply finds the NIC takes 0 after all (a firmware
        // update): everything goes back, highest first.
        flows[0].in_hw = true;
        let mut moves = Vec::new();
        let mut hw = nic(&[]);
        settle(&mut flows, &mut demoted, false, |k, how| {
            moves.push((k, how));
            hw(k, how)
        })
        .unwrap();
        assert_eq!(moves.len(), 4);
        assert!(moves.iter().all(|(_, how)| *how == Move::Restore));
        assert!(flows.iter().all(|f| f.in_hw));
        assert_eq!(demoted, [false; 5]);
    }

    #[test]
    fn settling_leaves_disjoint_flows_in_hardware() {
        // Only 3 (udp) refused: 4 (everything, below it) is demoted; 0..2
        // match tcp or ip to 10/8 and stay.
        let mut flows = table(&[3]);
        let mut demoted = vec![false; flows.len()];
        settle(&mut flows, &mut demoted, false, nic(&[3])).unwrap();
        assert_eq!(demoted, [false, false, false, false, true]);
        assert!(flows[..3].iter().all(|f| f.in_hw));
        // A restore the NIC refuses leaves the flow in software, and the
        // flows below it are settled against that.
        let mut flows = table(&[]);
        let mut demoted = vec![false, false, true, false, false];
        flows[2].in_hw = false;
        settle(&mut flows, &mut demoted, false, nic(&[2])).unwrap();
        assert!(!flows[2].in_hw);
        assert_eq!(demoted, [false, false, false, true, true]);
        assert!(shadowed_by(&flows).iter().all(Option::is_none));
    }

    #[test]
    fn refusing_names_the_shadowed_flow_and_the_one_below_and_moves_nothing() {
        let mut flows = table(&[0]);
        let mut demoted = vec![false; flows.len()];
        let r = settle(&mut flows, &mut demoted, true, |_, _| -> Result<bool, ()> {
            panic!("refuse moves nothing")
        });
        assert_eq!(r, Err(SettleError::Shadowed { shadowed: 0, by: 1 }));
        // A failed move stops the settle with its error.
        let r = settle(&mut flows, &mut demoted, false, |_, _| Err("EBUSY"));
        assert_eq!(r, Err(SettleError::Move("EBUSY")));
    }
}
