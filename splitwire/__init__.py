"""splitwire: edge-cloud split computing.

The distribution is organised by role, one package each: ``protocol`` (the wire), ``partitioner``
(the planner and model specs), ``edge`` and ``cloud`` (the two runtimes), ``benchmarks``. This
package holds only what they all share: the root of the error tree and the ``splitwire`` command.
"""

__version__ = "0.1.0"
