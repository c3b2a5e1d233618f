#!/usr/bin/env bash
# Builds (or tests) the Go scheduler example in GOPATH mode against Debian's Go packages.
#
#   examples/go-scheduler/build.sh OUT_DIR   build OUT_DIR/go-scheduler
#   examples/go-scheduler/build.sh --test    gofmt check, go vet and go test -v
#
# The Go code for protos/ is generated on every run with protoc, protoc-gen-go and
# protoc-gen-go-grpc (its import path comes from the proto's go_package) into a temporary
# GOPATH, next to a copy of this example, so it never goes stale and is never committed.
# Needs scripts/install-go-toolchain (Go 1.19, grpc-go 1.33, protobuf-go 1.5 API).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

mode=build
case "${1:-}" in
  --test) mode=test ;;
  "") echo "usage: $0 OUT_DIR | --test" >&2; exit 2 ;;
  *) out="$(mkdir -p "$1" && cd "$1" && pwd)" ;;
esac

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || {
    echo "build.sh: $tool not found; run scripts/install-go-toolchain" >&2
    exit 3
  }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/go-scheduler.XXXXXX")"
trap 'rm -rf "$work"' EXIT
gopath="$work/gopath"
mkdir -p "$gopath/src"
protoc -I "$root/protos" \
  --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  "$root/protos/datalayer/v1/datalayer.proto"
pkg="$gopath/src/github.com/llm-d-datalayer/datalayer/examples/go-scheduler"
mkdir -p "$pkg"
cp "$here"/*.go "$pkg/"

export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode"
unset GOFLAGS  # a -mod=... from the environment is an error in GOPATH mode
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="${TMPDIR:-/tmp}/go-scheduler-gocache"  # go refuses to build without one
fi
cd "$pkg"
if [ "$mode" = test ]; then
  unformatted="$(gofmt -l "$here"/*.go)"
  if [ -n "$unformatted" ]; then
    echo "build.sh: not gofmt-ed: $unformatted" >&2
    exit 1
  fi
  go vet .
  go test -v -count=1 .
else
  go build -o "$out/go-scheduler" .
  echo "$out/go-scheduler"
fi
