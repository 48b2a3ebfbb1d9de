#!/usr/bin/env bash
# The folders are the architecture (docs/architecture.md, "Layers"): each may use only
# the layers below it. This fails on an import the wrong way, naming the file and line.
# It reads `crate::` paths in code (comment lines are skipped), so a `use` and a path
# written out in full are caught alike.
set -euo pipefail
cd "$(dirname "$0")/.."

# folder or file | the crate modules it must not use
rules=(
  "src/domain|ocpp actors api persistence startup cli config metrics telemetry stations payment security outbound"
  "src/ocpp|actors api persistence startup cli config metrics telemetry stations payment security outbound"
  "src/persistence|ocpp actors api startup cli stations payment security outbound telemetry"
  "src/actors|api persistence startup cli"
  "src/api|persistence startup cli"
  "src/stations.rs|actors api persistence startup cli"
  "src/payment.rs|actors api persistence startup cli"
  "src/security.rs|actors api persistence startup cli"
  "src/outbound.rs|actors api persistence startup cli"
)

wrong=0
for rule in "${rules[@]}"; do
  place=${rule%%|*}
  forbidden=${rule#*|}
  pattern="crate::($(tr ' ' '|' <<<"$forbidden"))\\b"
  found=$(grep -rnE --include='*.rs' "$pattern" "$place" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
  if [ -n "$found" ]; then
    printf 'layers: %s must not use crate::{%s}:\n%s\n' "$place" "${forbidden// /,}" "$found" >&2
    wrong=1
  fi
done
[ "$wrong" = 0 ] || { echo "layers: imports the wrong way (see docs/architecture.md)" >&2; exit 1; }
echo "layers: every import runs the right way"
