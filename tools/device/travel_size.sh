#!/usr/bin/env bash
# travel_size.sh CARRY...: what one device call would send (git-listed files of the working tree, i.e. tracked
# + untracked-not-ignored, plus the carried paths) against the tool's 64 MiB; exit 1 when over.
set -euo pipefail
tree_bytes=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true; } \
  | awk '{s+=$1} END {print s+0}')
carry_bytes=$(du -sb "$@" | awk '{s+=$1} END {print s+0}')
total=$(( tree_bytes + carry_bytes ))
echo "would travel: tree $(( tree_bytes / 1048576 )) MiB + carry $(( carry_bytes / 1048576 )) MiB = $(( total / 1048576 )) MiB (limit 64 MiB)"
(( total <= 64 * 1048576 ))
