//! `zeroboot-wasm bench --json` gives every figure, from a real (short) run.

mod common;

use serde_json::Value;

#[test]
fn bench_json_reports_every_figure() {
    let out = common::bin().args(["bench", "--tasks", "30", "--json"]).output().expect("run bench");
    assert!(out.status.success(), "bench failed: {}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench prints JSON");
    for key in ["floor", "in_process", "cold_process", "on_demand", "pool"] {
        let f = &v[key];
        for field in ["p50_us", "p99_us", "p999_us", "max_us", "per_s"] {
            let x = f[field].as_f64().unwrap_or(-1.0);
            assert!(x > 0.0, "{key}.{field} = {x}");
        }
        assert!(f["p50_us"].as_f64() <= f["p99_us"].as_f64(), "{key}: p50 > p99");
    }
    for key in ["floor", "cold_process", "on_demand", "pool"] {
        assert!(v[key]["per_s_concurrent"].as_f64().unwrap_or(0.0) > 0.0, "{key} concurrent");
    }
    assert!(v["marginal_private_dirty_kb"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["marginal_pss_kb"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["zygote"]["mappings"].as_u64().unwrap() > 0);
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    // No assertion on the figures themselves: timing targets are checked by running the
    // benchmark on a quiet machine, not by tests on a shared one.
}
