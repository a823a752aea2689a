//! `zeroboot-wasm bench --json` gives every figure, from a real (short) run; without the
//! test-support binary beside it, the `cold_process` row is left out and the table says so.

mod common;

use serde_json::Value;

#[test]
fn bench_json_reports_every_figure() {
    let out = common::bin().args(["bench", "--tasks", "30", "--json"]).output().expect("run bench");
    assert!(out.status.success(), "bench failed: {}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench prints JSON");
    // With the `testkit` feature, Cargo built `zeroboot-testkit` next to `zeroboot-wasm`, and
    // the bench runs it as the cold runner. (Without it, a stale copy may or may not be there.)
    let mut rows = vec!["floor", "in_process", "on_demand", "pool"];
    if cfg!(feature = "testkit") {
        rows.push("cold_process");
    }
    for key in rows.iter().copied() {
        let f = &v[key];
        for field in ["p50_us", "p99_us", "p999_us", "max_us", "per_s"] {
            let x = f[field].as_f64().unwrap_or(-1.0);
            assert!(x > 0.0, "{key}.{field} = {x}");
        }
        assert!(f["p50_us"].as_f64() <= f["p99_us"].as_f64(), "{key}: p50 > p99");
    }
    for key in rows.iter().copied().filter(|&k| k != "in_process") {
        assert!(v[key]["per_s_concurrent"].as_f64().unwrap_or(0.0) > 0.0, "{key} concurrent");
    }
    assert!(v["marginal_private_dirty_kb"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["marginal_pss_kb"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["memory_guest"].as_str().unwrap().contains("wait"), "{v}");
    assert!(v["zygote"]["mappings"].as_u64().unwrap() > 0);
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    // No assertion on the figures themselves: timing targets are checked by running the
    // benchmark on a quiet machine, not by tests on a shared one.
}

#[test]
fn bench_without_the_cold_runner_says_so_and_fakes_nothing() {
    // A hard link of the binary in a directory of its own: nothing next to it. (A link, not a
    // copy: a file just written may still be open in a sibling test's fork, and exec would
    // fail with ETXTBSY.)
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let lone = dir.path().join("zeroboot-wasm");
    std::fs::hard_link(env!("CARGO_BIN_EXE_zeroboot-wasm"), &lone).expect("link the binary");
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&lone)
        .env("ZEROBOOT_WASM_CACHE_DIR", cache.path())
        .args(["bench", "--tasks", "10"])
        .output()
        .expect("run bench");
    assert!(out.status.success(), "bench failed: {}", common::stderr(&out));
    let table = common::stdout(&out);
    let row = table.lines().find(|l| l.starts_with("cold_process")).expect("a cold_process line");
    assert!(row.contains("not measured") && row.contains("zeroboot-testkit"), "{table}");
    assert!(!table.contains("cold_process / on_demand"), "a ratio to a missing row: {table}");
    assert!(table.lines().any(|l| l.starts_with("pool ")), "{table}");
}
