"""Rounds: the same specs (float and quantized) run again and again on chosen rows of one input set,
in one locked agent session.

An adaptive evaluation runs the suite in rounds, each on the rows of the cells not yet decided.
``open_rounds`` opens the session once (connect, push the agent, verify, lock), checks every spec and
pushes its model and input set once; each ``Rounds.run(rows)`` then pushes only a small rows file
(the store already holds the rest: a push is the existence check alone, nothing is hashed again on
either side), lets the agent run each spec on those rows, pulls and verifies the run directories into
``ROOT/<label>/round-<k>/`` and drops the device's copies. The lock is held from the first round to
the end of the ``with``; the session, lock and connection are released on exit, also on an error or
Ctrl-C, and every round pulled by then stays on disk. ``results.merge_rounds`` joins a label's
rounds into one run directory.

    with open_rounds(device, [float_spec, quant_spec], outdir / "rounds") as rounds:
        first = rounds.run(np.arange(0, 1000, 10))          # [float RunResult, quant RunResult]
        later = rounds.run(np.array([3, 7, 11]))
    merged = merge_rounds([first[0], later[0]], outdir / "runs" / "float")

A label may skip rows (``run(rows, skip={"float": rows_known})``: the float outputs a host cache holds
already): it runs only the round's other rows, and a label with nothing left to run is not run at all —
its place in the round is None. ``run(None, folders=…)`` runs every row of the set without a rows file,
into the folders given (a fixed-n evaluation in the same locked session).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeq.devices.inventory import Device
from edgeq.devices.run import ProgressFn, RunSpec, _run_one, checked_rows, prepare, preflight, tidy_device_store
from edgeq.devices.session import OpenSession, open_session
from edgeq.devices.transport.base import Transfer
from edgeq.errors import ConfigError
from edgeq.files import ensure_writable_dir, sha256_file
from edgeq.results import RunResult


@dataclass(frozen=True)
class RoundInputs:
    """A round's own input set, from a suite built lazily: ``path`` holds exactly the suite ``rows``
    (ascending), ``tags`` are their per-sample tags (category, severity, ...), and ``suite`` is what the
    pulled runs name as their inputs (the suite's ``path`` — where the rows run are joined — and ``sha256``,
    its identity): each run is a run over the suite (``rows.relabel_rows``), so rounds merge and the float
    cache reads them like rows of one input set."""

    path: Path
    rows: np.ndarray
    tags: dict
    suite: dict


class Round(list):
    """One round's results, a RunResult per spec in the specs' order, and what the round cost.

    ``device_s``: the timed inference of every run (the sum of their latencies, every pass);
    ``agent_s``: the agent's wall time over the runs (model loads, warmup, reading inputs, writing
    outputs included); ``wall_s``: the round on the host, pushes and pulls included; ``transfers``:
    the round's pushes (``skipped`` when the store had the file).
    """

    def __init__(self, index: int, rows: np.ndarray, results: list[RunResult | None], wall_s: float,
                 transfers: list[Transfer], ran: dict | None = None):
        super().__init__(results)
        self.index, self.rows, self.wall_s, self.transfers = index, rows, wall_s, transfers
        ran_runs = [r for r in results if r is not None]  # a label that skipped every row has None here
        self.device_s = sum(float(np.asarray(r.latency_ns, dtype=np.float64).sum()) for r in ran_runs) / 1e9
        self.agent_s = sum(float(r.meta.get("finished", 0.0)) - float(r.meta.get("started", 0.0))
                           for r in ran_runs)
        self.ran = ran if ran is not None else {}  # label → the rows it ran (fewer than ``rows`` when it skipped some)

    def costs(self) -> dict:
        found = {"round": self.index, "rows": int(len(self.rows)), "device_s": self.device_s, "agent_s": self.agent_s,
                 "wall_s": self.wall_s}
        skipped = {label: int(len(self.rows) - len(rows)) for label, rows in self.ran.items()
                   if len(rows) < len(self.rows)}
        if skipped:
            found["rows_skipped"] = skipped
        return found


class Rounds:
    """Rounds over one open session; made by ``open_rounds``, valid inside its ``with``."""

    def __init__(self, device: Device, opened: OpenSession, prepared: list, root: Path,
                 progress: ProgressFn | None, events: Callable[[str, dict], None] | None):
        self.device, self.opened, self.prepared, self.root = device, opened, prepared, root
        self.progress, self.events = progress, events
        self.samples = prepared[0].set_samples
        self.done: list[Round] = []
        self.count = 0  # rounds begun (a failed round's folder number is not used again)
        self.closed = False

    @property
    def device_s(self) -> float:
        """Timed inference over every round so far: what a planner's budget counts."""
        return sum(r.device_s for r in self.done)

    def folder(self, label: str, index: int) -> Path:
        return self.root / label / f"round-{index}"

    def run(self, rows, skip: dict | None = None, folders: dict | None = None,
            inputs: RoundInputs | None = None) -> Round:
        """Every spec on ``rows`` of the input set (sorted ascending, unique, in range; checked here by the
        agent's rule, ConfigError otherwise; None: every row, without a rows file): returns the pulled,
        verified results, one per spec.

        ``skip``: label → rows that label need not run (e.g. float outputs a cache holds); the label runs
        the round's other rows only, and is not run at all when none are left (its result is then None).
        ``folders``: label → the run directory to pull into (default ``ROOT/<label>/round-<k>``; a given
        folder may exist already and is replaced, as a fixed-n run's is). ``inputs``: the round's own input
        set (``rows`` are then suite rows, exactly the ones it holds): pushed now, dropped from the device
        after the round, and every run pulled is relabelled a run over the suite."""
        if self.closed:
            raise ConfigError("these rounds are closed: open new ones")
        every = rows is None
        if inputs is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if every or not np.array_equal(rows, inputs.rows):
                raise ConfigError(f"{inputs.path}: a round's own input set holds exactly the round's rows")
        else:
            rows = np.arange(self.samples, dtype=np.int64) if every else checked_rows(rows, self.samples)
        skip, folders = dict(skip or {}), dict(folders or {})
        labels = {item.spec.label for item in self.prepared}
        unknown = sorted((set(skip) | set(folders)) - labels)
        if unknown:
            raise ConfigError(f"no spec of these rounds is labelled {', '.join(map(repr, unknown))}")
        self.count += 1
        index, started = self.count, time.perf_counter()
        deployer, session = self.opened.deployer, self.opened.session
        before = len(deployer.transfers)
        used = []
        if inputs is not None:  # pushed once for every spec: their own pushes are then the store's existence check
            remote, digest = deployer.push(inputs.path)
            used.append(remote)
        results, ran = [], {}
        for item in self.prepared:
            label = item.spec.label
            mine = rows if label not in skip else np.setdiff1d(rows, np.asarray(skip[label], dtype=np.int64))
            ran[label] = mine
            if not len(mine):
                results.append(None)  # nothing of this round left for this label: it is not run
                continue
            given = label in folders
            rundir = Path(folders[label]) if given else self.folder(label, index)
            rundir.mkdir(parents=True, exist_ok=given)
            take = None if (every or inputs is not None) and len(mine) == len(rows) else mine
            if inputs is not None:
                item = dataclasses.replace(item, spec=dataclasses.replace(item.spec, inputs=inputs.path),
                                           set_samples=len(rows), tags=inputs.tags,
                                           known={**item.known, inputs.path: digest}, suite=dict(inputs.suite, rows=rows))
                take = None if take is None else np.searchsorted(rows, mine)
            results.append(_run_one(self.device, deployer, session, dataclasses.replace(item, rundir=rundir, rows=take),
                                    self.progress, self.events))
        pulled = [r for r in results if r is not None]
        tidy_device_store(self.device, deployer, session, [r.run["remote_dir"] for r in pulled],
                          [r.run["rows"]["remote"] for r in pulled if r.run.get("rows")] + used)
        done = Round(index, rows, results, time.perf_counter() - started, deployer.transfers[before:], ran)
        self.done.append(done)
        return done

    @property
    def digests(self) -> dict:
        """Local path → sha256 of every model and input set these rounds pushed (each hashed once, at open)."""
        return dict(self.prepared[0].known) if self.prepared else {}


@contextlib.contextmanager
def open_rounds(device: Device, specs: list[RunSpec], rundir_root, *, wait_s: float = 0.0,
                progress: ProgressFn | None = None,
                events: Callable[[str, dict], None] | None = None) -> Iterator[Rounds]:
    """Open one locked agent session on ``device`` for rounds of ``specs`` (one input set, distinct labels).

    Every spec is checked (model, input set, options) and preflighted before the session's first push;
    models and the input set are pushed once, here. Rounds go to ``rundir_root/<label>/round-<k>/``; a
    root that already holds rounds is refused (a round never overwrites another's results).
    """
    root = Path(rundir_root)
    labels = [s.label for s in specs]
    if not specs or len(set(labels)) != len(labels):
        raise ConfigError(f"rounds need specs with distinct labels, got {labels}")
    if len({Path(s.inputs).resolve() for s in specs}) != 1:
        raise ConfigError("the specs of rounds run over one input set")
    for label in labels:
        if not label or label in (".", "..") or "/" in label or "\\" in label:
            raise ConfigError(f"label {label!r} cannot name a folder under {root}")
        if any((root / label).glob("round-*")):
            raise ConfigError(f"{root / label} already holds rounds: give rounds a new folder")
    ensure_writable_dir(root)
    prepared = [prepare(dataclasses.replace(s, rows=None, rows_file=None), root / s.label) for s in specs]
    digests: dict = {}
    for item in prepared:  # each file hashed once on the host, for every round
        for path in (item.spec.model, item.spec.inputs):
            if path not in digests:
                digests[path] = sha256_file(path)
        item.known = digests
    with open_session(device, lock=True, wait_s=wait_s) as opened:
        for item in prepared:
            preflight(device.name, opened.facts, item.info)
        for path, digest in digests.items():
            opened.deployer.push(path, sha256=digest)
        rounds = Rounds(device, opened, prepared, root, progress, events)
        try:
            yield rounds
        finally:
            rounds.closed = True


__all__ = ["Round", "RoundInputs", "Rounds", "open_rounds"]
