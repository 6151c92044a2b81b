"""The link emulator: ``splitwire netem`` carries loopback TCP connections across an emulated
link (rate, delay, jitter, loss as stalls, outages), since this machine's kernel has no netem
qdisc.

    splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 --link lte

    async with LinkEmulator(upstream="127.0.0.1:50051", link=parse_link("lte")) as em:
        ...  # connect to em.address; em.stats() says what the link did

Links and traces (with their outages) come from :mod:`splitwire.partitioner.link`, the same
specs and files the planner reads. See :mod:`splitwire.netem.emulator` for the model.

Errors: ``NetemError`` (a ``SplitwireError``) for a bad emulator setting; a bad link spec or
trace is the planner's ``LinkError``.
"""

from splitwire.lazy import lazy_exports

# Names are imported on first use (PEP 562): `splitwire --help` must not pay for them.
_LOCATIONS = {
    "LinkEmulator": "splitwire.netem.emulator",
    "NetemError": "splitwire.netem.emulator",
    "require_loopback": "splitwire.netem.emulator",
    "serve": "splitwire.netem.emulator",
}
__all__ = sorted(_LOCATIONS)

__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
