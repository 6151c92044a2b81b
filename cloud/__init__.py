"""The tail service: ``splitwire cloud`` serves the tail halves of plans to many edge sessions.

    config = CloudConfig(listen="127.0.0.1:0", plans=(Path("plans/resnet18"),))
    async with create_server(config) as server:
        ...  # edges connect to server.address

See :mod:`splitwire.cloud.server` for the lifecycle, :mod:`splitwire.cloud.session` for what
each kind of bad input gets, :mod:`splitwire.cloud.batcher` for dynamic batching.
"""

from splitwire.lazy import lazy_exports

# Names are imported on first use (PEP 562): `splitwire --help` must not pay for torch or grpc.
_LOCATIONS = {
    "CloudConfig": "splitwire.cloud.config",
    "CloudError": "splitwire.cloud.errors",
    "CloudServer": "splitwire.cloud.server",
    "ConfigError": "splitwire.cloud.errors",
    "FrameRefused": "splitwire.cloud.errors",
    "SessionEnded": "splitwire.cloud.errors",
    "TlsConfig": "splitwire.cloud.config",
    "create_server": "splitwire.cloud.server",
    "serve": "splitwire.cloud.server",
}
__all__ = sorted(_LOCATIONS)

__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
