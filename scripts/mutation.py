"""Mutation testing of the modules that decide who is told what: one small change at a time, the tests run.

    make mutation                       (or: .venv/bin/python scripts/mutation.py [--modules plan,ledger]
                                         [--jobs 2] [--sample N --seed S] [--list] [--resume [--survivors]])

A mutant is the source with one operator changed (== to !=, < to <=, and to or, continue to break, a
`not` dropped, a number off by one, True to False, + to -, min to max, a call statement removed). Each is
written into a private copy of the checkout and the module's tests run there as they run in CI: real
subprocesses, real servers, the simulation; the first failing test kills it. A mutant no test kills is
a survivor: either a test is missing, or the mutant is equivalent (it changes nothing a test could see),
which `scripts/mutation_equivalent.txt` records with the reason. mutmut cannot be used here: most tests
run `python -m mailer` in a subprocess, where its in-process trampolines do not reach.

Each result is also appended to scripts/mutation_results/<module>.partial.jsonl as it comes (committed: a
run stopped half-way, on this machine or another, keeps what it found); `--resume` then skips every mutant
already killed (or timed out) in that file or in <module>.json whose source file is byte for byte the one it
was killed in (its sha256 is kept with it), and runs the rest: survivors again (a test may have been added
since), and those never run.

Writes scripts/mutation_results/<module>.json and prints, per module, mutants, killed, equivalent, survived,
and the kill rate of the non-equivalent ones; every survivor with file:line and what was changed.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
OUT = ROOT / "build" / "mutation"  # the private copies of the checkout, while a run goes
# Each mutant's outcome, with the sha256 of the file it ran on: kept in the repository, so a later run (on another
# machine) resumes from them, and a result counts only for the very source it was found on.
RESULTS = ROOT / "scripts" / "mutation_results"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.txt"
SIM = {"SIM_HISTORIES": "60", "SIM_KILL_HISTORIES": "4", "SIM_WORKERS": "1"}

# Each module: its source files, and its tests, fastest first (the first failure stops the run).
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "plan": (
        ["mailer/run/plan.py", "mailer/programme/revisions.py"],
        [
            "tests/run/test_plan.py",
            "tests/run/test_drafts.py",
            "tests/test_seams.py",
            "tests/test_lifecycle.py",
            "tests/test_simulation.py",
        ],
    ),
    "ledger": (
        [
            "mailer/record/ledger.py",
            "mailer/record/journal.py",
            "mailer/record/state.py",
            "mailer/record/rows.py",
            "mailer/record/legacy.py",
        ],
        [  # (the order only decides how soon a mutant dies: the faults' migrations kill many that the seams do not)
            "tests/record/test_ledger.py",
            "tests/record/test_journal.py",
            "tests/test_faults.py",
            "tests/run/test_dispatch.py",
            "tests/test_seams.py",
            "tests/deliver/test_send.py",
            "tests/test_lifecycle.py",
            "tests/test_simulation.py",
        ],
    ),
    "recipients": (
        ["mailer/audience/recipients.py"],
        [
            "tests/audience/test_recipients.py",
            "tests/test_input_safety.py",
            "tests/test_lifecycle.py",
            "tests/record/test_subscribers.py",
        ],
    ),
    "dispatch": (
        ["mailer/run/dispatch.py", "mailer/run/due_recipients.py", "mailer/run/request.py"],
        [
            "tests/run/test_due_recipients.py",  # (the roster's parse-once cache: only these see it)
            "tests/run/test_dispatch.py",
            "tests/run/test_digest.py",  # (a digest's run and several series go through dispatch too)
            "tests/run/test_series.py",
            "tests/run/test_preferences.py",
            "tests/test_seams.py",
            "tests/test_lifecycle.py",
            "tests/test_faults.py",
            "tests/deliver/test_send.py",
            "tests/test_simulation.py",
        ],
    ),
}

_SWAP: dict[type, type] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}


@dataclass
class Mutant:
    module: str
    file: str
    line: int
    what: str
    index: int  # the n-th mutation point of the file, in ast.walk order
    outcome: str = ""  # killed, survived, timeout, equivalent
    killer: str = ""
    seconds: float = 0.0
    source: str = ""  # sha256 of the unmutated file the outcome was found on

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


def _points(tree: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """Every mutation point: (node, description, how to mutate)."""
    out: list[tuple[ast.AST, str, object]] = []
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _SWAP:
                    out.append((node, f"{type(op).__name__} -> {_SWAP[type(op)].__name__}", ("ops", i)))
        elif isinstance(node, (ast.BoolOp, ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAP:
            out.append((node, f"{type(node.op).__name__} -> {_SWAP[type(node.op)].__name__}", ("op", None)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append((node, "not dropped", ("not", None)))
        elif isinstance(node, (ast.Continue, ast.Break)):
            out.append(
                (
                    node,
                    f"{type(node).__name__.lower()} -> {'break' if isinstance(node, ast.Continue) else 'continue'}",
                    ("loop", None),
                )
            )
        elif isinstance(node, ast.Constant) and id(node) not in docstrings:
            if isinstance(node.value, bool):
                out.append((node, f"{node.value} -> {not node.value}", ("bool", None)))
            elif isinstance(node.value, int):
                out.append((node, f"{node.value} -> {node.value + 1}", ("int", None)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            out.append((node, f"{node.func.id} -> {'max' if node.func.id == 'min' else 'min'}", ("minmax", None)))
        elif isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await)):
            out.append((node, f"statement removed: {ast.unparse(node)[:60]}", ("drop", None)))
    return out


def _mutated(source: str, index: int) -> str:
    """The source with mutation point ``index`` changed; -1: the source as ast.unparse writes it, unchanged."""
    tree = ast.parse(source)
    if index < 0:
        return ast.unparse(tree) + "\n"
    node, _, (kind, i) = _points(tree)[index]  # type: ignore[misc]
    if kind == "ops":
        node.ops[i] = _SWAP[type(node.ops[i])]()  # type: ignore[attr-defined]
    elif kind == "op":
        node.op = _SWAP[type(node.op)]()  # type: ignore[attr-defined]
    elif kind == "loop":
        replacement: ast.stmt = ast.Break() if isinstance(node, ast.Continue) else ast.Continue()
        _replace(tree, node, replacement)
    elif kind == "not":
        _replace(tree, node, node.operand)  # type: ignore[attr-defined]
    elif kind == "bool":
        node.value = not node.value  # type: ignore[attr-defined]
    elif kind == "int":
        node.value = node.value + 1  # type: ignore[attr-defined]
    elif kind == "minmax":
        node.func.id = "max" if node.func.id == "min" else "min"  # type: ignore[attr-defined]
    elif kind == "drop":
        _replace(tree, node, ast.Pass())
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, name, copy.copy(new))
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[id(v) for v in value].index(id(old))] = copy.copy(new)
                return
    raise AssertionError("mutation point not found")


def _sha(file: str) -> str:
    return hashlib.sha256((ROOT / file).read_bytes()).hexdigest()


def mutants(module: str) -> list[Mutant]:
    files, _ = MODULES[module]
    out = []
    for file in files:
        sha = _sha(file)
        for index, (node, what, _) in enumerate(_points(ast.parse((ROOT / file).read_text()))):
            out.append(Mutant(module, file, getattr(node, "lineno", 0), what, index, source=sha))  # (one line, one key)
    return out


def _earlier(module: str) -> dict[tuple[str, int, str, str], Mutant]:
    """The latest outcome of each mutant in earlier runs, by (file, index, what, sha256 of the file then)."""
    found: list[dict[str, object]] = []
    whole, partial = RESULTS / f"{module}.json", RESULTS / f"{module}.partial.jsonl"
    if whole.exists():
        found += json.loads(whole.read_text())
    if partial.exists():
        found += [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    out = {}
    for row in found:
        m = Mutant(**row)  # type: ignore[arg-type]
        if m.outcome in ("killed", "timeout", "survived") and m.source:
            out[(m.file, m.index, m.what, m.source)] = m
    return out


def _equivalent() -> dict[str, str]:
    """`file:line: what` -> why no test can tell the mutant apart, from scripts/mutation_equivalent.txt."""
    known = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                where, _, why = line.partition("  # ")
                known[where.strip()] = why.strip()
    return known


def _copy_of_checkout(base: Path) -> Path:
    """A private copy of the committed tree plus the working changes of the files under test."""
    target = base / "tree"
    files = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            (target / name).symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target / name)
    for shared in (".venv", "node_modules"):
        if (ROOT / shared).exists():
            (target / shared).symlink_to(ROOT / shared)
    return target


def _run(tree: Path, tests: list[str], timeout: float) -> tuple[str, str]:
    env = {**os.environ, **SIM, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env["PATH"] = f"{tree / '.venv' / 'bin'}:{env['PATH']}"
    try:
        done = subprocess.run(
            [str(PY), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", ""
    if done.returncode == 0:
        return "survived", ""
    failed = next((line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")), "")
    return "killed", failed or f"exit {done.returncode}"


def _worker(args: tuple[list[Mutant], float, str]) -> list[Mutant]:
    batch, timeout, base = args
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        tree = _copy_of_checkout(Path(scratch))
        for m in batch:
            _, tests = MODULES[m.module]
            path = tree / m.file
            original = path.read_text()
            path.write_text(_mutated(original, m.index))
            start = time.monotonic()
            m.outcome, m.killer = _run(tree, tests, timeout)
            m.seconds = round(time.monotonic() - start, 1)
            path.write_text(original)
            print(f"{m.outcome:9} {m.where}  {m.killer}", flush=True)
            if m.index >= 0:
                with open(RESULTS / f"{m.module}.partial.jsonl", "a") as log:  # one short line: one write
                    log.write(json.dumps(asdict(m)) + "\n")
    return batch


def _baseline(module: str, timeout: float) -> str:
    """'' when the module's tests pass with all its files as ast.unparse writes them, else what failed."""
    files, tests = MODULES[module]
    with tempfile.TemporaryDirectory(dir=OUT) as scratch:
        tree = _copy_of_checkout(Path(scratch))
        for file in files:
            (tree / file).write_text(_mutated((tree / file).read_text(), -1))
        outcome, killer = _run(tree, tests, timeout)
    return "" if outcome == "survived" else f"{outcome}: {killer}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=0, help="test only this many mutants per module, at random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant; longer counts as killed")
    parser.add_argument(
        "--list", action="store_true", help="list the mutants (with their index in the file), run nothing"
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip mutants already killed on the same source by an earlier run"
    )
    parser.add_argument(
        "--report", action="store_true", help="run nothing: the table from earlier runs' results on this source"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="with --resume: run again only the earlier survivors (a test added for them), not the mutants never run",
    )
    parser.add_argument(
        "--retry-timeouts",
        action="store_true",
        help="with --resume: run earlier timeouts again as survivors are (on a loaded machine a slow survivor times "
        "out; give a longer --timeout)",
    )
    args = parser.parse_args()
    again = ("survived", "timeout") if args.retry_timeouts else ("survived",)
    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(143)
    )  # stopped: the private copies are removed (workers inherit it)
    known = _equivalent()
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    for module in args.modules.split(","):
        todo = mutants(module)
        if args.sample:
            todo = sorted(random.Random(args.seed).sample(todo, min(args.sample, len(todo))), key=lambda m: m.index)
        if args.list:
            print("\n".join(f"{m.where}  (#{m.index})" for m in todo))
            continue
        earlier = _earlier(module) if args.resume or args.report else {}
        for i, m in enumerate(todo):
            before = earlier.get((m.file, m.index, m.what, m.source))
            why = known.get(m.where.strip()) or known.get(f"{m.where.strip()} (#{m.index})")
            if why:  # (a statement cut at 60 characters may end in a space)
                m.outcome, m.killer = "equivalent", why
            elif before and (args.report or before.outcome not in again):  # a survivor runs again on --resume
                todo[i] = before
        if args.report:
            _table(module, todo, rows)
            continue
        if not args.resume:
            (RESULTS / f"{module}.partial.jsonl").unlink(missing_ok=True)
        run = [m for m in todo if not m.outcome]
        if args.survivors:
            run = [m for m in run if (b := earlier.get((m.file, m.index, m.what, m.source))) and b.outcome in again]
        print(f"{module}: {len(todo)} mutants, {len(todo) - len(run)} decided before, {len(run)} to run", flush=True)
        failed = _baseline(module, args.timeout) if run else ""
        if failed:
            print(f"error: the unmutated {module} (as unparsed) fails its tests ({failed}); fix that first")
            return 1
        batches = [run[i :: args.jobs] for i in range(args.jobs)]
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            results = {
                (m.file, m.index): m
                for batch in pool.map(_worker, [(b, args.timeout, str(OUT)) for b in batches if b])
                for m in batch
            }
        todo = [results.get((m.file, m.index), m) for m in todo]
        (RESULTS / f"{module}.json").write_text(json.dumps([asdict(m) for m in todo], indent=1) + "\n")
        _table(module, todo, rows)
    if rows:
        print("\n| module | mutants | killed | timed out | equivalent | survived | not run | killed of non-eq. run |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))
    return 0


def _table(module: str, todo: list[Mutant], rows: list[str]) -> None:
    counts = {k: sum(m.outcome == k for m in todo) for k in ("killed", "timeout", "survived", "equivalent", "")}
    live = len(todo) - counts["equivalent"] - counts[""]
    rate = (counts["killed"] + counts["timeout"]) / live if live else 1.0
    rows.append(
        f"| {module} | {len(todo)} | {counts['killed']} | {counts['timeout']} | {counts['equivalent']} | "
        f"{counts['survived']} | {counts['']} | {rate:.1%} |"
    )
    for m in todo:
        if m.outcome == "survived":
            print(f"SURVIVED {m.where}")


if __name__ == "__main__":
    sys.exit(main())
