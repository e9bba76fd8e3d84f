"""A workflow drawn as a graph: one box per member, an arrow from each member to those
that wait for it, columns by depth (a chain runs left to right, a group stacks, a chord's
header fans into its body). Pure layout over the members and their ``wf_next`` links."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskrouter.backends.errors import engine_errors
from taskrouter.backends.store import JobStore
from taskrouter.job import Job

BOX_W, BOX_H = 190, 48
GAP_X, GAP_Y = 64, 14
PAD = 12
MAX_DRAWN = 300  # members; a larger workflow is listed, not drawn


@dataclass(frozen=True, slots=True)
class Box:
    job_id: str
    task: str
    label: str
    state: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Edge:
    path: str
    state: str  # the state of the member it comes from


@dataclass(frozen=True, slots=True)
class Graph:
    width: float
    height: float
    boxes: list[Box]
    edges: list[Edge]
    box_w: int = BOX_W
    box_h: int = BOX_H


def links(store: JobStore, ids: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    """Each member's label and the members that wait for it (its ``wf_next``)."""
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(store.keys.job(job_id), ["wf_label", "wf_next"])
        replies = pipe.execute() if ids else []
    out = {}
    for job_id, (label, after) in zip(ids, replies, strict=True):
        try:
            waiting = [str(i) for i in json.loads(after)] if after else []
        except ValueError:
            waiting = []
        out[job_id] = (label or "", waiting)
    return out


def layout(jobs: Sequence[Job], links_of: Mapping[str, tuple[str, list[str]]]) -> Graph | None:
    """Boxes and arrows for ``jobs`` (in workflow order); None when too many to draw."""
    if not jobs or len(jobs) > MAX_DRAWN:
        return None
    order = {job.id: i for i, job in enumerate(jobs)}
    deps: dict[str, list[str]] = {job.id: [] for job in jobs}
    for job in jobs:
        for nxt in links_of.get(job.id, ("", []))[1]:
            if nxt in deps:
                deps[nxt].append(job.id)
    depth: dict[str, int] = {}
    for job in jobs:  # members come in plan order: every dependency before its dependents
        depth[job.id] = 1 + max((depth.get(d, 0) for d in deps[job.id]), default=-1)
    columns: dict[int, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: (depth[j.id], order[j.id])):
        columns.setdefault(depth[job.id], []).append(job)
    tallest = max(len(col) for col in columns.values())
    height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y
    place: dict[str, tuple[float, float]] = {}
    boxes = []
    for col, members in columns.items():
        used = len(members) * BOX_H + (len(members) - 1) * GAP_Y
        top = (height - used) / 2
        for row, job in enumerate(members):
            x, y = PAD + col * (BOX_W + GAP_X), top + row * (BOX_H + GAP_Y)
            place[job.id] = (x, y)
            label = links_of.get(job.id, ("", []))[0]
            boxes.append(Box(job.id, job.task, label, job.state or "expired", x, y))
    states = {job.id: job.state for job in jobs}
    edges = []
    for job in jobs:
        for dep in deps[job.id]:
            (x1, y1), (x2, y2) = place[dep], place[job.id]
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
            mid = (sx + ex) / 2
            path = (
                f"M{sx:.1f},{sy:.1f} C{mid:.1f},{sy:.1f} {mid:.1f},{ey:.1f} {ex - 6:.1f},{ey:.1f}"
            )
            edges.append(Edge(path, states[dep] or "expired"))
    width = PAD * 2 + len(columns) * BOX_W + (len(columns) - 1) * GAP_X
    return Graph(width, height, boxes, edges)
