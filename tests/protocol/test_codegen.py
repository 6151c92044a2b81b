"""The checked-in stubs are what the checked-in .proto generates (run `make proto` if not)."""

from __future__ import annotations

from pathlib import Path

from splitwire.protocol import codegen


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    for generated in codegen.generate(tmp_path):
        checked_in = codegen.PACKAGE_DIR / generated.name
        assert checked_in.read_bytes() == generated.read_bytes(), (
            f"{checked_in.name} is stale against splitwire.proto: run `make proto`"
        )


def test_stubs_import_and_expose_the_session_service() -> None:
    from splitwire.protocol import splitwire_pb2, splitwire_pb2_grpc

    service = splitwire_pb2.DESCRIPTOR.services_by_name["SplitSession"]
    method = service.methods_by_name["Session"]
    assert method.client_streaming and method.server_streaming
    assert hasattr(splitwire_pb2_grpc, "SplitSessionStub")
