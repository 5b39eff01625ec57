"""Mutation testing of the modules that decide who is told what: one small change at a time, the tests run.

    make mutation                       (or: .venv/bin/python scripts/mutation.py [--modules plan,ledger]
                                         [--jobs 2] [--sample N --seed S] [--list])

A mutant is the source with one operator changed (== to !=, < to <=, and to or, continue to break, a
`not` dropped, a number off by one, True to False, + to -, min to max, a call statement removed). Each is
written into a private copy of the checkout and the module's tests run there as they run in CI: real
subprocesses, real servers, the simulation; the first failing test kills it. A mutant no test kills is
a survivor: either a test is missing, or the mutant is equivalent (it changes nothing a test could see),
which `scripts/mutation_equivalent.txt` records with the reason. mutmut cannot be used here: most tests
run `python -m mailer` in a subprocess, where its in-process trampolines do not reach.

Writes build/mutation/<module>.json and prints, per module, mutants, killed, equivalent, survived, and the
kill rate of the non-equivalent ones; every survivor with file:line and what was changed.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
OUT = ROOT / "build" / "mutation"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.txt"
SIM = {"SIM_HISTORIES": "60", "SIM_KILL_HISTORIES": "4", "SIM_WORKERS": "1"}

# Each module: its source files, and its tests, fastest first (the first failure stops the run).
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "plan": (
        ["mailer/run/plan.py", "mailer/programme/revisions.py"],
        ["tests/run/test_plan.py", "tests/test_seams.py", "tests/test_lifecycle.py", "tests/test_simulation.py"],
    ),
    "ledger": (
        ["mailer/record/ledger.py", "mailer/record/state.py", "mailer/record/rows.py"],
        [
            "tests/record/test_ledger.py",
            "tests/test_seams.py",
            "tests/test_lifecycle.py",
            "tests/deliver/test_send.py",
            "tests/test_faults.py",
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


def mutants(module: str) -> list[Mutant]:
    files, _ = MODULES[module]
    out = []
    for file in files:
        for index, (node, what, _) in enumerate(_points(ast.parse((ROOT / file).read_text()))):
            out.append(Mutant(module, file, getattr(node, "lineno", 0), what, index))  # (one line, one key)
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
    return batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=0, help="test only this many mutants per module, at random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant; longer counts as killed")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    args = parser.parse_args()
    known = _equivalent()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for module in args.modules.split(","):
        todo = mutants(module)
        if args.sample:
            todo = sorted(random.Random(args.seed).sample(todo, min(args.sample, len(todo))), key=lambda m: m.index)
        if args.list:
            print("\n".join(m.where for m in todo))
            continue
        for m in todo:
            if m.where.strip() in known:  # (a statement cut at 60 characters may end in a space)
                m.outcome, m.killer = "equivalent", known[m.where.strip()]
        files, _ = MODULES[module]
        baseline = [Mutant(module, f, 0, "baseline: the source as unparsed, unchanged", -1) for f in files]
        for m in _worker((baseline, args.timeout, str(OUT))):
            if m.outcome != "survived":
                print(f"error: the unmutated {m.file} fails its tests ({m.outcome}: {m.killer}); fix that first")
                return 1
        run = [m for m in todo if m.outcome != "equivalent"]
        batches = [run[i :: args.jobs] for i in range(args.jobs)]
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            results = {
                (m.file, m.index): m
                for batch in pool.map(_worker, [(b, args.timeout, str(OUT)) for b in batches if b])
                for m in batch
            }
        todo = [results.get((m.file, m.index), m) for m in todo]
        (OUT / f"{module}.json").write_text(json.dumps([asdict(m) for m in todo], indent=1) + "\n")
        counts = {k: sum(m.outcome == k for m in todo) for k in ("killed", "timeout", "survived", "equivalent")}
        live = len(todo) - counts["equivalent"]
        rate = (counts["killed"] + counts["timeout"]) / live if live else 1.0
        rows.append(
            f"| {module} | {len(todo)} | {counts['killed']} | {counts['timeout']} | {counts['equivalent']} | "
            f"{counts['survived']} | {rate:.1%} |"
        )
        for m in todo:
            if m.outcome == "survived":
                print(f"SURVIVED {m.where}")
    if rows:
        print("\n| module | mutants | killed | timed out | equivalent | survived | killed of non-equivalent |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
