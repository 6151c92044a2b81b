"""``python -m splitwire`` is the ``splitwire`` command."""

from splitwire.cli import run

run()
