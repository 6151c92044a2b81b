"""One module per benchmark's ``splitwire bench`` subcommand: its flags, their checks and the
printed report, each with ``register(benchmarks)``. They import their benchmark (and torch)
inside the handler, so ``splitwire --help`` stays fast; the measurements live one level up
(``splitwire.benchmarks.codec``, ...)."""
