#!/bin/sh
# Regenerates the Python gRPC stubs in gen/ from the protos in api/proto,
# with grpc_tools.protoc (Debian: apt-get install python3-grpc-tools
# python3-grpcio; elsewhere: pip install grpcio grpcio-tools).
#
#   examples/python/generate.sh            # rewrites examples/python/gen
#   examples/python/generate.sh OUTDIR     # writes them to OUTDIR instead
#
# PYTHON names the interpreter (default python3). The Go test of this
# directory regenerates them into a temporary directory and fails when the
# committed ones differ.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
python=${PYTHON:-python3}
mkdir -p "$out"
if [ -z "${1:-}" ]; then
  rm -rf "$out/ordinal" "$out/spec" "$out/layotto"
fi
cd "$root"
# Paths relative to api/proto, sorted, so the output does not depend on the
# directory order of the file system.
protos=$(cd api/proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
# shellcheck disable=SC2086 # one word per proto file
"$python" -m grpc_tools.protoc -I api/proto \
  --python_out="$out" --grpc_python_out="$out" $protos
