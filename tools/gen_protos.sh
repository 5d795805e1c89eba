#!/usr/bin/env bash
# Regenerate controlplane/pb from protos/controlplane/v1 into the directory given (default
# controlplane/pb). The generated modules import each other relatively, so the package can live
# under controlplane.pb whatever the proto package is called.
set -euo pipefail
out=${1:-controlplane/pb}
py=${PYTHON:-python}
mkdir -p "$out"
rm -f "$out"/*_pb2*.py "$out"/*_pb2*.pyi
"$py" -m grpc_tools.protoc -Iprotos/controlplane/v1 \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/controlplane/v1/*.proto
sed -i -E 's/^import ([a-z_0-9]+_pb2)/from . import \1/' "$out"/*_pb2*.py "$out"/*_pb2*.pyi
[ -f "$out/__init__.py" ] || echo '"""Generated protobuf and gRPC code (make protos). Do not edit."""' > "$out/__init__.py"
