//! The classifier loads on this kernel, with room to spare: the verifier
//! walks every path of a program up to a million instructions, and an
//! older kernel's walk is longer than a newer one's (6.1 refused the
//! classifier before it was split into global functions). The kernel
//! matrix runs this on 6.1, 6.12 and the host; the figure each prints is
//! the one in `docs/dpu-offload.md`.

use plexus_dpu_offload::datapath::{Datapath, VERIFIER_LIMIT};
use plexus_testkit::BpfFs;

#[test]
fn the_classifier_loads_with_half_the_verifier_budget_to_spare() {
    let bpf = BpfFs::new().unwrap();
    let dp = Datapath::load(&bpf.pin_dir()).unwrap_or_else(|e| {
        panic!(
            "Linux {}: the classifier does not load: {e}",
            plexus_testkit::kernel_release()
        )
    });
    let n = dp
        .verified_insns()
        .unwrap()
        .expect("verified_insns is reported since Linux 5.16");
    eprintln!(
        "Linux {}: the verifier processed {n} instructions (limit {VERIFIER_LIMIT}, margin {:.1}x)",
        plexus_testkit::kernel_release(),
        f64::from(VERIFIER_LIMIT) / f64::from(n)
    );
    assert!(
        n <= VERIFIER_LIMIT / 2,
        "{n} instructions: less than half the budget left"
    );
    // A second load reuses the pinned program: nothing is verified again.
    drop(dp);
    let again = Datapath::load(&bpf.pin_dir()).unwrap();
    assert_eq!(again.verified_insns().unwrap(), Some(n));
}
