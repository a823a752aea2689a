#!/usr/bin/env bash
# Fuzzes what untrusted parties send (see fuzz/ and the README's "Fuzzing and property tests"):
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]
#
# Installs cargo-fuzz (pinned, into target/tools, once), builds every target on stable Rust
# (libFuzzer through libfuzzer-sys, `--sanitizer none`: no nightly needed), then runs each
# TARGET (default: all) for N seconds (default 600), one after another, from its seeds
# (fuzz/seeds/TARGET, read only) into a scratch corpus (target/fuzz/corpus/TARGET). Prints per
# target the executions, executions per second, coverage (libFuzzer's final `cov:` and `ft:`)
# and crashes; exits non-zero if any target crashed, hung or failed to run. A crashing input
# is left in target/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
ALL=(worker_line zygote_frames sandbox_frames http_body modules)
seconds=600
targets=()
while (($#)); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t (have: ${ALL[*]})" >&2; exit 2; }
done

tools="$PWD/target/tools"
if [[ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools" >&2
fi
# One build for every target (the instrumented runtime is shared); 16 codegen units keep the
# build short on a small machine at some cost in executions per second.
build_started=$SECONDS
"$tools/bin/cargo-fuzz" build --sanitizer none --codegen-units 16 >&2
echo "fuzz.sh: built in $((SECONDS - build_started)) s" >&2
host="$(rustc -vV | sed -n 's/^host: //p')"
bin="fuzz/target/$host/release"

failed=0
printf '%-16s %12s %9s %8s %8s  %s\n' target executions exec/s cov ft result
for t in "${targets[@]}"; do
    corpus="target/fuzz/corpus/$t" artifacts="target/fuzz/artifacts/$t"
    log="target/fuzz/$t.log"
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/*
    opts=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/")
    case "$t" in
        # A zygote forks only in a single-threaded process (libFuzzer's RSS watcher is a
        # thread), and its init deadline owns SIGALRM (libFuzzer's -timeout would share it);
        # the target checks each case's time itself.
        modules) opts+=(-rss_limit_mb=0 -timeout=0) ;;
        *) opts+=(-timeout=10 -rss_limit_mb=2048) ;;
    esac
    rc=0
    timeout --kill-after=10 $((seconds + 120)) \
        "$bin/$t" "${opts[@]}" "$corpus" "fuzz/seeds/$t" >"$log" 2>&1 || rc=$?
    final="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)"
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    runs="$(stat number_of_executed_units)" rate="$(stat average_exec_per_sec)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")"
    crashes="$(find "$artifacts" -type f | wc -l)"
    if ((rc == 124 || rc == 137)); then
        result="HUNG (no end after $((seconds + 120)) s; see $log)"
        failed=1
    elif ((rc != 0 || crashes > 0)); then
        result="CRASHED: $crashes input(s) in $artifacts/ (see $log)"
        failed=1
    else
        result="ok, 0 crashes"
    fi
    printf '%-16s %12s %9s %8s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
    if ((rc != 0 || crashes > 0)); then
        # What a CI log needs to reproduce a finding without its machine: the panic, and the
        # input as libFuzzer prints it (`Base64:`; decode it into a file and pass that file to
        # fuzz/target/<host>/release/TARGET to replay it).
        echo "--- $t ($log):" >&2
        grep -E -A3 'panicked at|ERROR: libFuzzer|^Base64:|Test unit written' "$log" | head -n 40 >&2 || true
    fi
done
exit "$failed"
