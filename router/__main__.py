"""``python -m taskrouter``: the ``taskrouter`` command."""

from taskrouter.services.cli import main

main()
