#!/usr/bin/env bash
# Weir against the Apache Flink baseline (bench/flink/run.sh) on the workloads of
# bench/WORKLOADS.md.
#
# usage: bench/compare.sh [--write]
#
# Builds weir in release, then for every workload and parallelism runs Weir and
# Flink back to back, checks that both produced the same rows (outputs= and
# checksum=), and prints a markdown table of events/s (wall), events per
# CPU-second, and the Weir/Flink ratio of events per CPU-second. A second,
# per-event ratio subtracts each engine's fixed cost per job, measured by a
# short run of FIXED_EVENTS events of the same workload and parallelism (for
# Flink: mini-cluster start-up and JIT warm-up). Then measures Weir's peak RSS
# on orders-window over MEMORY_EVENTS events at parallelism 1.
# Each workload with a pipeline file (examples/workloads/WORKLOAD.yaml, what a
# StreamJob on the stock image runs) also runs through `weir bench --pipeline`
# in the same loop, for a second table: the pipeline against Flink and against
# the Rust API (same number of rows required; the checksums of pipeline rows
# differ by design where a row's fields are ordered otherwise).
# With --write, also regenerates its section of docs/benchmarks.md (between the
# `<!-- BEGIN compare.sh -->` and `<!-- END compare.sh -->` markers; the rest of
# the file, such as bench/checkpoints.sh's section, is kept).
#
# Environment (defaults in brackets):
#   WORKLOADS      [orders-window orders-dedup q0 q1 q2 q5 q7]
#                  (orders-sliding also runs, but Flink takes about 12 CPU-minutes
#                  per run of 10 M events: its own section compares it at 2 M)
#   PARALLELISMS   [1 2]
#   EVENTS         [10000000]
#   FIXED_EVENTS   [100000]     (0 skips the short runs and the per-event ratio)
#   MEMORY_EVENTS  [50000000]   (0 skips the memory run)
#
# Exits non-zero if any run failed or any Weir/Flink result pair differs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
flink=$repo/bench/flink/run.sh
weir=$repo/target/release/weir

WORKLOADS=${WORKLOADS:-orders-window orders-dedup q0 q1 q2 q5 q7}
PARALLELISMS=${PARALLELISMS:-1 2}
EVENTS=${EVENTS:-10000000}
FIXED_EVENTS=${FIXED_EVENTS:-100000}
MEMORY_EVENTS=${MEMORY_EVENTS:-50000000}
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
write=$(write_flag "$@")

# Workloads where Weir should reach 10x Flink's events per CPU-second at p=1.
TEN_X_WORKLOADS="orders-window q1 q5 q7"
# Workloads where parallelism 2 should run at least 1.7x the events per second of 1 (issue 17).
SCALING_WORKLOADS="orders-window orders-dedup q5 q7"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

log() { echo "compare: $*" >&2; }


# report_line FILE: the engine's `query=...` report line from its stdout.
report_line() { grep -m1 '^query=' "$1" || true; }

# status LINE: whether an engine printed its report line.
status() { if [ -n "$1" ]; then echo reported; else echo "no report"; fi; }

# per_cpu_s EVENTS CPU_MS: events per CPU-second (cpu_ms clamped to at least 1).
per_cpu_s() { awk -v n="$1" -v ms="$2" 'BEGIN { if (ms < 1) ms = 1; printf "%.0f", n / (ms / 1000) }'; }

# millions N: N formatted as millions with two decimals.
millions() { awk -v x="$1" 'BEGIN { printf "%.2f M", x / 1e6 }'; }

# per_event_cpu_s EVENTS CPU_MS FIXED_EVENTS FIXED_CPU_MS: events per CPU-second of the
# events beyond the short run, i.e. with the short run's CPU time (the fixed cost) taken
# off; "n/a" when noise makes the difference not positive.
per_event_cpu_s() {
  awk -v n="$1" -v ms="$2" -v fn="$3" -v fms="$4" \
    'BEGIN { d = ms - fms; if (d <= 0 || n <= fn) print "n/a"; else printf "%.0f", (n - fn) / (d / 1000) }'
}

# ratio_or_na A B: A/B with two decimals, or n/a when either is.
ratio_or_na() { if [ "$1" = n/a ] || [ "$2" = n/a ]; then echo n/a; else ratio "$1" "$2"; fi; }

# agreement TAG RESULT...: "yes" when every run's RESULT (its text after the
# engine's name, "weir outputs=... checksum=...") is the same; otherwise logs
# the results and prints the mismatch marker, which the caller counts.
agreement() {
  local tag=$1 first=${2#* } r
  for r in "${@:3}"; do
    if [ "${r#* }" != "$first" ]; then
      log "!!!!!!!! MISMATCH on $tag: $(IFS=';'; echo "${*:2}")"
      echo "**MISMATCH**"
      return
    fi
  done
  echo yes
}

# pipeline_row WORKLOAD P WEIR_OUTPUTS FLINK_OUTPUTS WEIR_CPU FLINK_CPU: runs the workload's
# pipeline file, if it has one, and adds its row to prows and presults.
pipeline_row() {
  local w=$1 p=$2 file=$repo/examples/workloads/$1.yaml tag=$1-p$2 pl p_out same p_cpu
  [ -f "$file" ] || return 0
  log "$tag: weir, pipeline file"
  pl=$("$weir" bench --pipeline "$file" --events "$EVENTS" --parallelism "$p" 2>"$logs/$tag.pipeline.err" \
    | grep -m1 '^query=' || true)
  if [ -z "$pl" ]; then
    log "$tag: pipeline FAILED"; tail -n 20 "$logs/$tag.pipeline.err" >&2
    failures=$((failures + 1))
    prows+=("| $w | $p | **FAILED** | | | | | |")
    return 0
  fi
  log "  pipeline: $pl"
  p_out=$(field outputs "$pl")
  same=$(agreement "$tag" "pipeline outputs=$p_out" "weir outputs=$3" "flink outputs=$4")
  [ "$same" = yes ] || mismatches=$((mismatches + 1))
  p_cpu=$(per_cpu_s "$EVENTS" "$(field cpu_ms "$pl")")
  prows+=("| $w | $p | $(millions "$(field events_per_s "$pl")") | $(millions "$p_cpu") | $(millions "$6") \
| **$(ratio "$p_cpu" "$6")x** | $(millions "$5") | $(ratio "$5" "$p_cpu")x | $same |")
  presults+=("$w $p $(ratio "$p_cpu" "$6") $(ratio "$5" "$p_cpu")")
}

log "building weir (release)"
(cd "$repo" && cargo build --release --quiet -p weir-cli)

started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)

rows=()       # markdown table rows, one per (workload, parallelism)
prows=()      # the same for pipeline files
results=()    # "workload parallelism weir/flink-per-cpu-ratio events/s", for the target checks
presults=()   # "workload parallelism pipeline/flink-per-cpu-ratio rust-api/pipeline", likewise
failures=0
mismatches=0

for w in $WORKLOADS; do
  for p in $PARALLELISMS; do
    tag=$w-p$p
    log "$tag: weir"
    "$weir" bench "$w" --events "$EVENTS" --parallelism "$p" >"$logs/$tag.weir" 2>"$logs/$tag.weir.err" \
      || { log "$tag: weir FAILED"; tail -n 20 "$logs/$tag.weir.err" >&2; }
    log "$tag: flink"
    "$flink" "$w" "$EVENTS" "$p" >"$logs/$tag.flink" 2>"$logs/$tag.flink.err" \
      || { log "$tag: flink FAILED"; tail -n 20 "$logs/$tag.flink.err" >&2; }

    wl=$(report_line "$logs/$tag.weir")
    fl=$(report_line "$logs/$tag.flink")
    if [ -z "$wl" ] || [ -z "$fl" ]; then
      failures=$((failures + 1))
      rows+=("| $w | $p | **FAILED** (weir: $(status "$wl"), flink: $(status "$fl")) | | | | | | | | | |")
      continue
    fi
    log "  weir:  $wl"
    log "  flink: $fl"

    w_out=$(field outputs "$wl"); w_sum=$(field checksum "$wl")
    f_out=$(field outputs "$fl"); f_sum=$(field checksum "$fl")
    same=$(agreement "$tag" "weir outputs=$w_out checksum=$w_sum" "flink outputs=$f_out checksum=$f_sum")
    [ "$same" = yes ] || mismatches=$((mismatches + 1))

    # Wall figure: the engine's own events_per_s (events / net_ms of the job).
    w_cpu=$(per_cpu_s "$EVENTS" "$(field cpu_ms "$wl")")
    f_cpu=$(per_cpu_s "$EVENTS" "$(field cpu_ms "$fl")")
    r=$(ratio "$w_cpu" "$f_cpu")

    # Per event: both engines again over FIXED_EVENTS events; their CPU time there is
    # (almost all) the fixed cost of a job, taken off the long run's.
    f_fixed=n/a; w_marg=n/a; f_marg=n/a
    if [ "$FIXED_EVENTS" -gt 0 ]; then
      log "$tag: weir and flink, $FIXED_EVENTS events (fixed cost)"
      wfl=$("$weir" bench "$w" --events "$FIXED_EVENTS" --parallelism "$p" 2>/dev/null | grep -m1 '^query=' || true)
      ffl=$("$flink" "$w" "$FIXED_EVENTS" "$p" 2>"$logs/$tag.flink-fixed.err" | grep -m1 '^query=' || true)
      log "  weir:  $wfl"
      log "  flink: $ffl"
      if [ -n "$wfl" ] && [ -n "$ffl" ]; then
        f_fixed=$(awk -v ms="$(field cpu_ms "$ffl")" 'BEGIN { printf "%.1f", ms / 1000 }')
        w_marg=$(per_event_cpu_s "$EVENTS" "$(field cpu_ms "$wl")" "$FIXED_EVENTS" "$(field cpu_ms "$wfl")")
        f_marg=$(per_event_cpu_s "$EVENTS" "$(field cpu_ms "$fl")" "$FIXED_EVENTS" "$(field cpu_ms "$ffl")")
      else
        log "$tag: a short run FAILED"; tail -n 5 "$logs/$tag.flink-fixed.err" >&2
      fi
    fi
    pipeline_row "$w" "$p" "$w_out" "$f_out" "$w_cpu" "$f_cpu"

    r_marg=$(ratio_or_na "$w_marg" "$f_marg")
    [ "$r_marg" = n/a ] || r_marg="${r_marg}x"
    [ "$f_marg" = n/a ] || f_marg=$(millions "$f_marg")
    rows+=("| $w | $p | $w_out | $(millions "$(field events_per_s "$wl")") | $(millions "$(field events_per_s "$fl")") \
| $(millions "$w_cpu") | $(millions "$f_cpu") | **${r}x** | $f_fixed | $f_marg | $r_marg | $same |")
    results+=("$w $p $r $(field events_per_s "$wl")")
  done
done

memory="Skipped (MEMORY_EVENTS=0)."
if [ "$MEMORY_EVENTS" -gt 0 ]; then
  log "memory: weir orders-window, $MEMORY_EVENTS events, parallelism 1"
  if "$weir" bench orders-window --events "$MEMORY_EVENTS" --parallelism 1 >"$logs/mem.out" 2>"$logs/mem.err"; then
    rss=$(sed -n 's/^peak_rss_kib=//p' "$logs/mem.err")
    memory="Weir, orders-window, $MEMORY_EVENTS events, parallelism 1: peak RSS **$((rss / 1024)) MiB** ($rss KiB, getrusage ru_maxrss). Report: \`$(report_line "$logs/mem.out")\`"
  else
    failures=$((failures + 1))
    memory="Weir, orders-window, $MEMORY_EVENTS events, parallelism 1: **FAILED** ($(tail -n 1 "$logs/mem.err"))"
  fi
  log "$memory"
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Target checks, computed from the rows above.
targets=()
below_flink=0
for res in "${results[@]}"; do
  read -r w p r _ <<<"$res"
  if [ "$p" = 1 ] && [[ " $TEN_X_WORKLOADS " == *" $w "* ]]; then
    ok=$(awk -v r="$r" 'BEGIN { print (r >= 10) ? "met" : "**MISSED**" }')
    targets+=("- $w, p=1: Weir/Flink events per CPU-second = ${r}x, target >= 10x: $ok")
  fi
  if awk -v r="$r" 'BEGIN { exit !(r < 1) }'; then
    targets+=("- $w, p=$p: Weir/Flink events per CPU-second = ${r}x, target >= 1x: **MISSED**")
    below_flink=$((below_flink + 1))
  fi
done
[ "$below_flink" -gt 0 ] || targets+=("- every row: Weir/Flink events per CPU-second >= 1x: met")

# Issue 17's targets, from the same rows.
met_or_missed() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (x >= t) : (x <= t); print ok ? "met" : "**MISSED**" }'; }
for res in "${results[@]}"; do
  read -r w p r _ <<<"$res"
  targets+=("- $w, p=$p: Weir/Flink events per CPU-second = ${r}x, target >= 20x: $(met_or_missed "$r" ">=" 20)")
done
for res in "${presults[@]}"; do
  read -r w p r lead <<<"$res"
  [ "$p" = 1 ] || continue
  targets+=("- $w, p=1, pipeline file: pipeline/Flink events per CPU-second = ${r}x, target >= 20x: $(met_or_missed "$r" ">=" 20);\
 Rust API / pipeline = ${lead}x, target <= 1.5x: $(met_or_missed "$lead" "<=" 1.5)")
done
for w in $SCALING_WORKLOADS; do
  one=""; two=""
  for res in "${results[@]}"; do
    read -r rw rp _ eps <<<"$res"
    [ "$rw" = "$w" ] || continue
    [ "$rp" = 1 ] && one=$eps
    [ "$rp" = 2 ] && two=$eps
  done
  [ -n "$one" ] && [ -n "$two" ] || continue
  s=$(ratio "$two" "$one")
  targets+=("- $w: events per second at p=2 / p=1 = ${s}x, target >= 1.7x: $(met_or_missed "$s" ">=" 1.7)")
done

ptable() {
  echo "| workload | p | pipeline events/s | pipeline events/CPU-s | Flink events/CPU-s | pipeline/Flink (CPU) | Rust API events/CPU-s | Rust API / pipeline (CPU) | same number of rows |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${prows[@]}"
}

table() {
  echo "| workload | p | outputs | Weir events/s | Flink events/s | Weir events/CPU-s | Flink events/CPU-s | Weir/Flink (CPU) | Flink fixed CPU-s | Flink events/CPU-s, per event | Weir/Flink (CPU, per event) | same result |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
}

table
echo
[ "${#prows[@]}" -eq 0 ] || { ptable; echo; }
echo "$memory"
echo
printf '%s\n' "${targets[@]}"

if $write; then
  doc=$repo/docs/benchmarks.md
  body=$logs/section.md
  flink_version=$(sed -n 's/^version=//p' "$flink")
  {
    echo "## Weir and Apache Flink"
    echo
    echo "Generated by \`bench/compare.sh --write\` on $started, Weir commit \`$commit\`$dirty."
    echo "Reproduce from the repository root with:"
    echo
    echo '```'
    echo "bench/compare.sh --write"
    echo '```'
    echo
    echo "### Method"
    echo
    echo "Each workload of \`bench/WORKLOADS.md\` runs on Weir (\`target/release/weir bench\`) and then,"
    echo "in the same script run, on Apache Flink $flink_version in a local mini-cluster (\`bench/flink/run.sh\`),"
    echo "over $EVENTS events at parallelism $(echo $PARALLELISMS | sed 's/ / and /g'). Both engines generate the events"
    echo "in process, discard output rows after folding them into an order-independent checksum, and print the"
    echo "number of rows and the checksum; the *same result* column says whether both agree."
    echo
    echo "- **events/s** is events divided by the job's wall time as each engine reports it (\`net_ms\`)."
    echo "- **events/CPU-s** is events divided by the CPU time (user + system, all threads) the process"
    echo "  spent during the job (\`cpu_ms\`; getrusage for Weir, the JVM's process CPU time for Flink)."
    echo "- **Weir/Flink (CPU)** is the ratio of the two events/CPU-s figures, whole jobs of $EVENTS events"
    echo "  against each other; it is the primary metric, because the machine is shared and wall time is noisy."
    echo "- **Flink fixed CPU-s** is Flink's \`cpu_ms\` for the same workload and parallelism over only"
    echo "  $FIXED_EVENTS events: what any Flink job costs before it does much work (mini-cluster start-up,"
    echo "  JIT warm-up)."
    echo "- **Flink events/CPU-s, per event** is $EVENTS - $FIXED_EVENTS events divided by the CPU time of the long"
    echo "  run minus that of the short run: Flink's steady-state rate, its fixed cost taken off."
    echo "- **Weir/Flink (CPU, per event)** is the ratio of the two engines' per-event rates, each computed"
    echo "  that way (Weir's short run costs a few milliseconds, so its figure barely moves). It answers"
    echo "  \"how much CPU does one more event cost\" rather than \"how much does this job cost\"; *n/a* when"
    echo "  noise made a difference of CPU times not positive."
    echo
    echo "### Machine"
    echo
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), \`nproc\` = $(nproc)"
    echo "- Load average (1, 5, 15 min): $load_before at the start, $load_after at the end"
    echo "- Kernel: $(uname -sr); $(rustc --version 2>/dev/null || echo 'rustc unknown'); $(java -version 2>&1 | head -n 1)"
    echo
    echo '`free -g`:'
    echo
    echo '```'
    free -g
    echo '```'
    echo
    echo "### Results"
    echo
    table
    echo
    if [ "${#prows[@]}" -gt 0 ]; then
      echo "### Pipeline files"
      echo
      echo "What every StreamJob on the stock image runs: each workload's pipeline file"
      echo "(\`examples/workloads/WORKLOAD.yaml\`, through \`weir bench --pipeline\`: its rows folded into a checksum"
      echo "instead of written to its sink, only the job timed), in the same loop as the rows above, against the"
      echo "same Flink run and the Rust API's run of the same workload and parallelism."
      echo
      ptable
      echo
    fi
    echo "### Memory"
    echo
    echo "$memory"
    echo
    echo "### Targets"
    echo
    echo "Weir's events per CPU-second (whole jobs, the *Weir/Flink (CPU)* column) at least 10x Flink's on"
    echo "$(echo $TEN_X_WORKLOADS | sed 's/ /, /g') at parallelism 1, and never below Flink's on any workload;"
    echo "then issue 17's: at least 20x Flink's on every workload at parallelism 1 and 2 through \`weir bench\`,"
    echo "pipeline files at least 20x Flink's at parallelism 1 and within 1.5x of the Rust API, and parallelism 2"
    echo "at least 1.7x the events per second of parallelism 1 on $(echo $SCALING_WORKLOADS | sed 's/ /, /g'):"
    echo
    printf '%s\n' "${targets[@]}"
    echo
    echo "### Notes"
    echo
    echo "- The machine is shared and may be busy with other work (see the load averages); wall-time"
    echo "  figures move with that load, CPU-time figures less so, but they are not immune (caches and cores"
    echo "  are shared): expect run-to-run differences of tens of percent on single rows."
    echo "- Both engines measure around their job's execution only: process start-up (for Flink, JVM"
    echo "  start-up and building the job graph) is excluded. Flink's \`cpu_ms\` spans \`env.execute()\`,"
    echo "  which includes starting the local mini-cluster; its \`net_ms\` is the job's net runtime."
    echo "  Flink's CPU time includes its JIT compiler and garbage-collector threads, which are part of"
    echo "  what running on the JVM costs."
    echo "- On cheap queries (q0, q1, q2) Flink's fixed cost is most of its CPU time at $EVENTS events, so"
    echo "  the whole-job ratios overstate the steady-state difference; the per-event columns take it off."
    echo "  The short run also carries some JIT warm-up that a longer run would amortise, and a single"
    echo "  short run is as noisy as any other, so the per-event ratios are estimates, not bounds."
    echo "- With $(nproc) cores, parallelism 2 leaves no core idle for either engine's auxiliary threads,"
    echo "  so p=2 wall times are noisier."
    echo "- Flink runs with \`-Xmx4g\` and default configuration (see \`bench/flink/run.sh\`)."
  } >"$body"
  write_section "$doc" compare.sh "$body"
  log "wrote $doc"
fi

if [ "$failures" -gt 0 ] || [ "$mismatches" -gt 0 ]; then
  log "$failures failed run(s), $mismatches MISMATCH(es)"
  [ "$mismatches" -eq 0 ] || echo "MISMATCH: $mismatches workload run(s) where Weir and Flink disagree" >&2
  exit 1
fi
