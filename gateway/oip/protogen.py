"""Regenerate the gRPC modules of the Open Inference Protocol from ``grpc_predict_v2.proto``.

    python -m gateway.oip.protogen

writes ``grpc_predict_v2_pb2.py``, ``grpc_predict_v2_pb2_grpc.py`` and their typed stubs
(``.pyi``) beside this file. The generated modules are committed, so that the ``grpc`` extra
needs only ``grpcio`` and ``protobuf`` at run time; this generator needs the dev extra
(``grpcio-tools`` for protoc, ``mypy-protobuf`` for the stubs), and
``tests/test_oip_grpc_codec.py`` checks that the committed files are what it writes.

One change is made to protoc's output: the messages are registered in a descriptor pool of
their own instead of protobuf's default pool. The proto's package is ``inference``, as the
protocol requires (it names the gRPC methods, ``/inference.GRPCInferenceService/ModelInfer``),
and Triton's client (``tritonclient.grpc``) registers a different file that defines the same
message names in the default pool: both in one process (a test, or a server that also calls
Triton) would fail with "duplicate symbol 'inference.ServerLiveRequest'". The wire format does
not depend on the pool.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "generate", "main"]

#: The proto, copied unchanged from KServe (see grpc_predict_v2.LICENSE).
PROTO = Path(__file__).with_name("grpc_predict_v2.proto")
#: The files :func:`generate` writes, beside the proto.
GENERATED = (
    "grpc_predict_v2_pb2.py",
    "grpc_predict_v2_pb2.pyi",
    "grpc_predict_v2_pb2_grpc.py",
    "grpc_predict_v2_pb2_grpc.pyi",
)
# The proto is compiled as gateway/oip/grpc_predict_v2.proto below a temporary root, so that the
# generated grpc module imports its messages as `from gateway.oip import grpc_predict_v2_pb2`.
_PACKAGE_DIR = Path("gateway", "oip")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_POOL.AddSerializedFile("
_POOL_LINE = (
    "# A pool of its own: tritonclient registers the same message names in the default pool\n"
    "# (see gateway/oip/protogen.py).\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
)


def generate() -> dict[str, str]:
    """Run protoc (grpcio-tools, mypy-protobuf) on the proto; the generated files by name."""
    from grpc_tools import protoc  # dev-only: imported here so the package never needs it

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / _PACKAGE_DIR).mkdir(parents=True)
        shutil.copyfile(PROTO, root / _PACKAGE_DIR / PROTO.name)
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={root}",
                f"--grpc_python_out={root}",
                f"--mypy_out={root}",
                f"--mypy_grpc_out={root}",
                str(root / _PACKAGE_DIR / PROTO.name),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status} (see its output above)")
        files = {name: (root / _PACKAGE_DIR / name).read_text("utf-8") for name in GENERATED}
    messages = files["grpc_predict_v2_pb2.py"]
    if messages.count(_DEFAULT_POOL) != 1:
        raise RuntimeError("protoc's output changed: no single default-pool registration found")
    messages = messages.replace(_DEFAULT_POOL, _OWN_POOL)
    files["grpc_predict_v2_pb2.py"] = messages.replace(
        "\nDESCRIPTOR = ", f"\n{_POOL_LINE}DESCRIPTOR = "
    )
    return files


def main() -> None:
    """Write the generated files beside the proto."""
    for name, text in generate().items():
        PROTO.with_name(name).write_text(text, "utf-8")
        print(f"wrote {PROTO.with_name(name)}")


if __name__ == "__main__":
    main()
