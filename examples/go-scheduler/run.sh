#!/usr/bin/env bash
# Builds the example (see build.sh) into a temporary folder and runs it with these arguments:
#   examples/go-scheduler/run.sh -target localhost:9002 -selector app=vllm -picks 5
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(mktemp -d "${TMPDIR:-/tmp}/go-scheduler-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
"$here/build.sh" "$bin" >/dev/null
"$bin/go-scheduler" "$@"
