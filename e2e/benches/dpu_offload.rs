//! `make bench`: dpu-offload's front end and flower encoder, in process.
//!
//! 1. Flower requests encoded per second: a 10k-flow table (five flow
//!    shapes: L2, 5-tuple, VLAN push, MAC rewrite + mirror, goto) compiled
//!    to `RTM_NEWTFILTER` bytes, flow by flow (keys, actions, cookie,
//!    netlink framing), against a baseline measured in the same run:
//!    copying the same finished requests (the floor any encoder pays to
//!    produce that many bytes). Target ≥ 1M requests/s.
//! 2. Flow file parse + compile of 10k flows: median time, against parsing
//!    alone.
//!
//! No kernel is involved: this kernel has no flower, and sending is
//! measured where it exists (part 2's install benchmark).

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    flower::{self, Policy, PortMap},
    parse::parse_flows,
};
use plexus_e2e::bench::{flow_table, median, ms, table};

const FLOWS: usize = 10_000;
const RUNS: usize = 21;

fn ports() -> PortMap {
    let mut p = PortMap::new();
    for (i, n) in ["rep0", "rep1", "rep2", "rep3", "up0", "mon0"]
        .iter()
        .enumerate()
    {
        p.insert(n, i as u32 + 2);
    }
    p
}

fn main() {
    plexus_e2e::bench::node_env();
    let text = flow_table(FLOWS, 0, &["rep0", "rep1", "rep2", "rep3"]);
    let ports = ports();
    let flows = parse_flows(&text).expect("the generated table parses");
    let compiled = flower::compile(&flows, &ports, Policy::PreferHw).expect("and compiles");
    let finished: Vec<Vec<u8>> = compiled
        .iter()
        .map(|c| c.filter().add_request().encode(1))
        .collect();
    let total_bytes: usize = finished.iter().map(Vec::len).sum();

    let mut encode = Vec::new();
    let mut copy = Vec::new();
    let mut parse = Vec::new();
    let mut parse_compile = Vec::new();
    for _ in 0..RUNS {
        // Ours: flow -> flower options -> TCA_OPTIONS -> nlmsg, per flow.
        let t = Instant::now();
        for (i, (f, c)) in flows.iter().zip(&compiled).enumerate() {
            let options =
                flower::encode_options(f, &ports, Policy::PreferHw, &c.cookie.to_bytes()).unwrap();
            let mut filter = c.filter_header();
            filter.options = Some(options);
            black_box(filter.add_request().encode(i as u32));
        }
        encode.push(t.elapsed());
        // Baseline: the same bytes, copied.
        let t = Instant::now();
        for r in &finished {
            black_box(r.clone());
        }
        copy.push(t.elapsed());

        let t = Instant::now();
        black_box(parse_flows(black_box(&text)).unwrap());
        parse.push(t.elapsed());
        let t = Instant::now();
        let f = parse_flows(black_box(&text)).unwrap();
        black_box(flower::compile(&f, &ports, Policy::PreferHw).unwrap());
        parse_compile.push(t.elapsed());
    }
    let rate = |d: Duration| FLOWS as f64 / d.as_secs_f64();
    let (enc, cp) = (median(&mut encode), median(&mut copy));
    let (pa, pc) = (median(&mut parse), median(&mut parse_compile));
    print!(
        "{}",
        table(
            &format!(
                "dpu-offload: {FLOWS} flows, {} KiB of requests",
                total_bytes / 1024
            ),
            &mut [
                ("encode 10k flower requests (ours)", encode),
                ("copy the same 10k requests (baseline)", copy),
                ("parse 10k flows (baseline)", parse),
                ("parse + compile 10k flows", parse_compile),
            ]
        )
    );
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!(
        "| flower requests encoded per second | {:.2} M/s | ≥ 1 M/s: {} |",
        rate(enc) / 1e6,
        if rate(enc) >= 1e6 { "met" } else { "MISSED" }
    );
    println!(
        "| encode / copy | {:.1}× | |",
        enc.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "| parse + compile of 10k flows, median | {:.1} ms | |",
        ms(pc)
    );
    println!(
        "| (parse + compile) / parse | {:.2}× | |",
        pc.as_secs_f64() / pa.as_secs_f64()
    );
}
