#!/usr/bin/env bash
# Kill the main job with SIGKILL at random moments, run it to the end, and compare its report
# with an uninterrupted run's: the statistics must be identical (docs/reliability.md).
#
#   scripts/chaos.sh [WORKDIR] [KILLS]      (default: a new temporary folder, 3 kills)
#
# Each run gets its own empty checkpoint store under WORKDIR, so both start cold. Kill times are
# drawn uniformly between 5% and 95% of the uninterrupted run's duration (seeded by $CHAOS_SEED).
set -uo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
KILLS="${2:-3}"
mkdir -p "$WORK"
bash scripts/setup.sh

run_main() {  # run_main STORE REPORT: the main job in its own session, pid in $pid (kill -9 -$pid takes all of it)
  ADVCLAIMS_CACHE="$1" setsid bash scripts/main.sh "$2" >>"$WORK/log.txt" 2>&1 &
  pid=$!
}

start=$(date +%s)
run_main "$WORK/store-clean" "$WORK/report-clean"; wait "$pid"
duration=$(( $(date +%s) - start ))
echo "chaos: uninterrupted run took ${duration}s" | tee -a "$WORK/log.txt"

RANDOM=${CHAOS_SEED:-20261121}
for i in $(seq 1 "$KILLS"); do
  delay=$(( duration * (5 + RANDOM % 91) / 100 ))
  run_main "$WORK/store-chaos" "$WORK/report-chaos"
  sleep "$delay"
  kill -KILL -- "-$pid" 2>/dev/null && echo "chaos: kill $i after ${delay}s" | tee -a "$WORK/log.txt" \
    || echo "chaos: run $i had already finished after ${delay}s" | tee -a "$WORK/log.txt"
  wait "$pid" 2>/dev/null
  sleep 1
done
start=$(date +%s)
run_main "$WORK/store-chaos" "$WORK/report-chaos"; wait "$pid"
echo "chaos: final run took $(( $(date +%s) - start ))s" | tee -a "$WORK/log.txt"

.venv/bin/python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
from advclaims.verdict import report
work = Path(sys.argv[1])
clean, chaos = (report.measured(json.loads((work / f"report-{k}" / "report.json").read_text())) for k in ("clean", "chaos"))
differ = sorted(k for k in clean.keys() | chaos.keys() if clean.get(k) != chaos.get(k))
print(f"chaos: {len(clean)} claim instances uninterrupted, {len(chaos)} after the kills; differing: {differ or 'none'}")
sys.exit(1 if differ or not clean else 0)
PY
