"""The root of splitwire's exception tree.

Every error a user can cause (a bad spec string, a corrupt frame, an unknown model) derives from
:class:`SplitwireError`, so the command line can print its message without a traceback and exit
with a meaningful code. Each package roots its own tree here::

    SplitwireError
    ├── splitwire.protocol.errors.CodecError        (wire format, codec, chunking)
    └── splitwire.partitioner.errors.PartitionerError (model specs, capture, plans)
"""


class SplitwireError(Exception):
    """An error caused by input (a spec, a file, a frame), reported without a traceback.

    ``exit_code`` is what the command line exits with: 2 for bad input (the Unix convention for
    usage errors), subclasses may choose others.
    """

    exit_code: int = 2
