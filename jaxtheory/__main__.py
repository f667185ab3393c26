"""``python -m jaxtheory``: the command line (see :mod:`jaxtheory.cli`)."""

from jaxtheory.cli import main

main()
