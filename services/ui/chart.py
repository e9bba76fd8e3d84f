"""The overview's chart: submitted, succeeded and failed per minute, drawn as SVG on the
server (no script, no library). Pure: minutes in, shapes out; the template draws them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .render import clock
from .throughput import Minute

WIDTH, HEIGHT = 1100, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28
SERIES = ("submitted", "succeeded", "failed")


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    paths: list[str]  # polyline point lists; a gap (no samples) splits the line
    dots: list[tuple[float, float, str]]  # x, y, tooltip (the last point of a run)
    total: int | None


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    empty: bool
    columns: list[tuple[float, float, str]]  # x, width, tooltip: one hover area per minute


def nice_top(peak: int) -> int:
    """A round upper bound for the y axis at or above ``peak``: 4 ticks of 1, 2 or 5 x 10^k."""
    top, magnitude = max(peak, 4), 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude * 4 >= top:
                return step * magnitude * 4
        magnitude *= 10


@dataclass(frozen=True, slots=True)
class _Scale:
    left: float
    right: float
    upper: float
    lower: float
    n: int  # intervals on the x axis
    top: int  # the y axis' upper bound

    def x(self, i: int) -> float:
        return round(self.left + (self.right - self.left) * i / self.n, 1)

    def y(self, v: int) -> float:
        return round(self.lower - (self.lower - self.upper) * v / self.top, 1)


def build(minutes: Sequence[Minute]) -> Chart:
    values = {name: [getattr(m, name) for m in minutes] for name in SERIES}
    peak = max([v for vs in values.values() for v in vs if v is not None] or [0])
    scale = _Scale(
        LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM, max(1, len(minutes) - 1), nice_top(peak)
    )
    lines = [_line(name, values[name], minutes, scale) for name in SERIES]
    last = len(minutes) - 1
    x_ticks = [
        Tick(scale.x(i), scale.lower + 16, clock(m.start_ms))
        for i, m in enumerate(minutes)
        if i % 10 == 0 or i == last
    ]
    top = scale.top
    y_ticks = [Tick(scale.left - 6, scale.y(top * k // 4), f"{top * k // 4:,}") for k in range(5)]
    step = (scale.right - scale.left) / scale.n
    columns = [(scale.x(i) - step / 2, step, _tooltip(m)) for i, m in enumerate(minutes)]
    plot = (scale.left, scale.upper, scale.right, scale.lower)
    return Chart(WIDTH, HEIGHT, lines, x_ticks, y_ticks, plot, peak == 0, columns)


def _line(name: str, values: list[int | None], minutes: Sequence[Minute], scale: _Scale) -> Line:
    runs: list[list[tuple[float, float]]] = [[]]
    dots = []
    for i, v in enumerate(values):
        if v is None:  # no samples: the line has a gap here
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((scale.x(i), scale.y(v)))
        if v:
            dots.append((scale.x(i), scale.y(v), f"{clock(minutes[i].start_ms)} UTC: {v} {name}"))
    paths = [" ".join(f"{px},{py}" for px, py in run) for run in runs if len(run) > 1]
    # A run of one minute is drawn as its dot only.
    dots += [(run[0][0], run[0][1], "") for run in runs if len(run) == 1]
    known = [v for v in values if v is not None]
    return Line(name, paths, dots, sum(known) if known else None)


def _tooltip(m: Minute) -> str:
    done = "no samples" if m.succeeded is None else f"{m.succeeded} succeeded, {m.failed} failed"
    return f"{clock(m.start_ms)} UTC: {m.submitted} submitted, {done}"
