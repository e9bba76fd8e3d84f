"""``taskrouter janitor``: the router's duties in a process of their own.

Every worker's main process runs them already (``backends/duties.py``); a janitor of its
own is for a deployment that wants them to go on while no worker runs, or on a machine
of its own. It imports neither engine: due jobs it finds are left due for their engine's
workers, which send them.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

from taskrouter.backends.duties import Duties
from taskrouter.settings import SCHEDULE_POLL


def run_forever(duties: Duties) -> None:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        duties.tick()
        time.sleep(SCHEDULE_POLL)
