"""Exactly once at every seam: whole histories against the invariants of tests/simulation.py.

``make test`` plays SIM_HISTORIES histories (default 200) from SIM_SEED (default 1) and prints both. ``make soak``
plays as many as SIM_SECONDS allows. A failure is shrunk to a minimal history and printed with its seed; paste it
below as a regression test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulation import SimRecorder, Violation, folders, history, run_history, shrink
from tests.smtp_server import Server, start_server


@pytest.fixture(scope="module")
def world_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, SimRecorder]]:
    recorder = SimRecorder()
    server = start_server(tmp_path_factory.mktemp("sim-server"), recorder=recorder)
    yield server, recorder
    server.controller.stop()


def _play(base: Path, server: Server, recorder: SimRecorder, seed: int) -> tuple[int, str | None]:
    """Play one history; on a violation return the shrunk history and the violation."""
    pinned, ops = history(seed)
    fresh = folders(base / f"seed-{seed}")
    try:
        run_history(next(fresh), server, recorder, ops, pinned=pinned, tag=f"s{seed}")
    except Violation as first:
        attempt, signature = 0, first.signature

        def fails(candidate: list) -> bool:  # type: ignore[type-arg]
            nonlocal attempt
            attempt += 1
            try:
                run_history(next(fresh), server, recorder, candidate, pinned=pinned, tag=f"s{seed}m{attempt}")
            except Violation as err:
                return err.signature == signature
            return False

        minimal = shrink(fails, ops)
        try:
            run_history(next(fresh), server, recorder, minimal, pinned=pinned, tag=f"s{seed}final")
            why = str(first)
        except Violation as err:
            why = str(err)
        shown = f"minimal history ({len(minimal)} of {len(ops)}): {minimal!r}"
        return len(ops), f"seed {seed} (pinned={pinned}): {why}\n{shown}"
    finally:
        shutil.rmtree(base / f"seed-{seed}", ignore_errors=True)
    return len(ops), None


def test_histories(
    tmp_path: Path, world_server: tuple[Server, SimRecorder], capsys: pytest.CaptureFixture[str]
) -> None:
    count = int(os.environ.get("SIM_HISTORIES", "200"))
    seed = int(os.environ.get("SIM_SEED", "1"))
    server, recorder = world_server
    steps = 0
    for n in range(seed, seed + count):
        length, failure = _play(tmp_path, server, recorder, n)
        steps += length
        assert failure is None, failure
    with capsys.disabled():
        print(f"\nsimulation: {count} histories, {steps} steps, seeds {seed}..{seed + count - 1}: no violation")


@pytest.mark.skipif("SIM_SECONDS" not in os.environ, reason="the soak runs only with SIM_SECONDS set (make soak)")
def test_soak(tmp_path: Path, world_server: tuple[Server, SimRecorder], capsys: pytest.CaptureFixture[str]) -> None:
    deadline = time.monotonic() + float(os.environ["SIM_SECONDS"])
    seed = int(os.environ.get("SIM_SEED", "100000"))
    server, recorder = world_server
    histories = steps = 0
    failures: list[str] = []
    while time.monotonic() < deadline:
        length, failure = _play(tmp_path, server, recorder, seed + histories)
        histories += 1
        steps += length
        if failure is not None:
            failures.append(failure)
            if len(failures) >= 3:
                break
    with capsys.disabled():
        seeds = f"seeds {seed}..{seed + histories - 1}"
        print(f"\nsoak: {histories} histories, {steps} steps, {seeds}, {len(failures)} failing")
        for failure in failures:
            print(failure)
    assert not failures
