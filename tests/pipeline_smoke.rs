//! The pipeline bench (`make bench`) with tiny sizes: every scenario and the report run end to
//! end against the emulators, so the bench cannot rot between benchmark runs. Figures are
//! printed, never asserted (speed is measured in the bench, not in tests); what is asserted is
//! that every record arrived (the harness checks the destination) and the report holds every
//! figure the bench publishes.

use ferry_e2e::pipeline_bench::{main_with, Args};

fn main() {
    let report = main_with(Args {
        events: 2,
        per_event: 50,
        naive_records: 20,
        scenarios: [
            "loopback",
            "rtt60",
            "naive",
            "outage2",
            "scaleout",
            "sustained",
        ]
        .map(String::from)
        .to_vec(),
        outage_rate: 100,
        outage_per_event: 25,
        outage_keys: 50,
        outage_lead_s: 2,
        scale_records: 100,
        scale_per_event: 25,
        scale_workers: vec![1, 2],
        sustained_rate: 100,
        sustained_s: 3,
        sustained_keys: 200,
        tick_s: 2,
        ..Default::default()
    });
    // None: this process was one of the harness's children.
    let Some(report) = report else { return };
    for scenario in ["loopback", "rtt60", "naive"] {
        let s = &report["scenarios"][scenario];
        for figure in [
            "records_per_s",
            "cpu_us_per_record",
            "peak_rss_mib",
            "sqs_requests_per_1000_records",
        ] {
            let v = s[figure].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{scenario}: {figure} = {v}");
        }
    }
    assert_eq!(report["scenarios"]["loopback"]["records"], 100);
    let outage = &report["scenarios"]["outage2"];
    assert!(
        outage["backlog_peak_messages"].as_u64() > Some(0),
        "{outage}"
    );
    assert!(
        outage["converge_s"].as_f64().is_some_and(f64::is_finite),
        "{outage}"
    );
    assert!(report["ferry_vs_naive"]["throughput_ferry_over_naive"].is_f64());
    let scale = &report["scenarios"]["scaleout"]["runs"];
    assert!(scale[1]["ratio_to_one"].is_f64(), "{scale}");
    let sustained = &report["scenarios"]["sustained"];
    assert!(sustained["lag_p99_ms"].is_u64(), "{sustained}");
    assert_eq!(sustained["converged"], true);
    println!("pipeline smoke: ok");
}
