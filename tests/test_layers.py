"""Import boundaries of `engine` and `fcwork`, read from the source with `ast` (nothing is imported).

Every import counts, at module level or inside a function: a function-level import still ties
two modules together, it only hides the tie until the function runs. Seen: `import a.b.c`,
`from a.b import c` (c a submodule or a name in a.b), relative imports. Not seen: dynamic
imports (`importlib.import_module(f"...")`, `python -m engine.train`).

What is checked, each in its own test with a readable list of what is wrong:
- no import cycle between modules (each cycle reported as a path, with file:line per edge);
- `engine` imports neither `fcwork` nor a presentation library (textual, rich): it returns
  values, raises typed errors and writes events; the TUI and the CLI show them;
- a lower engine layer never imports a higher one (ENGINE_LAYERS below);
- a pane imports no CLI module and no other pane; a widget imports no pane and no CLI module;
- `fcwork` starts without torch and sentencepiece (and its CLI without textual).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "fcwork")

# The engine's layers, lowest first: a module may import its own layer and lower ones, never a
# higher one. A module's rank is that of the longest name here that is it or a package above it
# ("engine" itself names only engine/__init__.py, so a new engine.X without a rank is reported).
# - core: errors, atomic writes, profiles, the workspace layout, the mix (engine.mix, being added),
#   and the model's shape (engine.model.config: a leaf the profile layer reads);
# - data: sources, corpus, tokenizer, shards, sampler;
# - model: the decoder, budgets, Hugging Face names, generation;
# - jobs: run folders, events, control requests, the queue, the supervisor;
# - eval: held-out bits per byte, probes, samples (the trainer calls into it);
# - train: the trainer subprocess and its components;
# - export: Hugging Face, GGUF, MLX;
# - lmeval: standard benchmarks (lm-evaluation-harness) on the Hugging Face export.
ENGINE_LAYERS = {
    "engine": 0,
    "engine.errors": 0,
    "engine.atomic": 0,
    "engine.profile": 0,
    "engine.workspace": 0,
    "engine.mix": 0,
    "engine.compat": 0,
    "engine.templates": 0,
    "engine.model.config": 0,
    "engine.data": 1,
    "engine.model": 2,
    "engine.jobs": 3,
    "engine.eval": 4,
    "engine.train": 5,
    "engine.export": 6,
    "engine.lmeval": 7,
}
LAYER_NAMES = ("core", "data", "model", "jobs", "eval", "train", "export", "lmeval")

# Top-level packages the engine never imports (checked: the engine uses no rich today).
ENGINE_BANNED = ("fcwork", "textual", "rich")
# The CLI side of fcwork: commands, the parser, and the rich views and bars they print with.
CLI_MODULES = ("fcwork.cli", "fcwork.commands", "fcwork.live", "fcwork.progress")
# What any pane may import from fcwork.panes.
PANE_SHARED = ("fcwork.panes", "fcwork.panes.base")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # ours: the most specific module of ours it names; else the dotted name as written
    path: str  # file of the import, relative to the root scanned
    line: int
    in_function: bool

    def where(self) -> str:
        return f"{self.path}:{self.line}" + (" (in a function)" if self.in_function else "")


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under `root`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (None: not ours)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[Import]:
    """Every import statement of one file, resolved to module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    found: list[Import] = []

    def add(name: str, node: ast.AST, in_function: bool) -> None:
        target = _ours(name, modules) or name
        if target != module:
            found.append(Import(module, target, rel, node.lineno, in_function))

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, in_function)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = package[:len(package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if alias.name != "*" and sub in modules else base, node, in_function)
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


@cache
def scan(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> tuple[dict[str, Path], tuple[Import, ...]]:
    modules = module_files(root, packages)
    found = [imp for name, path in modules.items() for imp in imports_of(name, path, modules, root)]
    return modules, tuple(found)


def _edges(modules: dict[str, Path], found: tuple[Import, ...]) -> dict[str, dict[str, Import]]:
    """Our module -> {our module it imports -> the first such import}."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in found:
        if imp.target in modules:
            graph[imp.source].setdefault(imp.target, imp)
    return graph


def _components(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    out.append(sorted(members))
    return out


def find_cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """For every module on a cycle, the shortest cycle through it (each cycle once, starting at its
    smallest name), so a tangle of several modules shows each of its loops."""
    cycles = []
    for members in _components(graph):
        inside = set(members)
        for start in members:
            prev = {start: None}
            queue = deque([start])
            path = None
            while queue and path is None:
                node = queue.popleft()
                for child in sorted(graph[node]):
                    if child not in inside:
                        continue
                    if child == start:
                        path = [node]
                        while prev[path[-1]] is not None:
                            path.append(prev[path[-1]])
                        path.reverse()
                        break
                    if child not in prev:
                        prev[child] = node
                        queue.append(child)
            i = path.index(min(path))
            cycle = path[i:] + path[:i]
            if cycle not in cycles:
                cycles.append(cycle)
    return sorted(cycles)


def engine_rank(module: str) -> int | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in ENGINE_LAYERS and (name != "engine" or module == "engine"):
            return ENGINE_LAYERS[name]
    return None


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n" + "\n".join("  " + p for p in problems)


# -- the scanner itself ------------------------------------------------------------------


def test_scanner_sees_every_import_form(tmp_path):
    files = {
        "pkg/__init__.py": "from . import low\n",
        "pkg/low.py": "import os.path\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "from ..low import thing\nfrom pkg import sub\n",
        "pkg/high.py": ("import pkg.sub.mod as m\nfrom pkg.sub import mod, VALUE\nclass C:\n    import json\n"
                        "def f():\n    from .sub.mod import g\n    return lambda: __import__('x')\n"),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules, found = scan.__wrapped__(tmp_path, ("pkg",))
    assert set(modules) == {"pkg", "pkg.low", "pkg.sub", "pkg.sub.mod", "pkg.high"}
    got = {(i.source, i.target, i.line, i.in_function) for i in found}
    assert got == {
        ("pkg", "pkg.low", 1, False),
        ("pkg.low", "os.path", 1, False),
        ("pkg.sub.mod", "pkg.low", 1, False),
        ("pkg.sub.mod", "pkg.sub", 2, False),
        ("pkg.high", "pkg.sub.mod", 1, False),
        ("pkg.high", "pkg.sub.mod", 2, False),  # a submodule named in a from-import
        ("pkg.high", "pkg.sub", 2, False),  # a plain name of pkg.sub
        ("pkg.high", "json", 4, False),  # a class body runs at import time
        ("pkg.high", "pkg.sub.mod", 6, True),
    }
    graph = _edges(modules, found)
    graph["pkg.low"]["pkg.high"] = found[0]
    assert find_cycles(graph) == [["pkg.high", "pkg.sub.mod", "pkg.low"]]


def test_the_scan_covers_both_packages():
    modules, found = scan()
    assert {"engine.jobs.queue", "engine.train.trainer", "fcwork.app", "fcwork.panes.eval"} <= set(modules)
    assert len(found) > 200


# -- the rules ---------------------------------------------------------------------------


def test_no_import_cycles():
    modules, found = scan()
    graph = _edges(modules, found)
    problems = []
    for cycle in find_cycles(graph):
        steps = list(zip(cycle, cycle[1:] + cycle[:1]))
        problems.append(" -> ".join(cycle + cycle[:1]) + "".join(
            f"\n      {graph[a][b].where()}: {a} imports {b}" for a, b in steps))
    assert not problems, _report("import cycles (function-level imports count too)", problems)


def test_engine_imports_neither_fcwork_nor_a_presentation_library():
    _, found = scan()
    problems = [f"{i.where()}: {i.source} imports {i.target}" for i in found
                if _under(i.source, ("engine",)) and i.target.split(".")[0] in ENGINE_BANNED]
    assert not problems, _report(f"engine imports of {', '.join(ENGINE_BANNED)}", problems)


def test_lower_engine_layers_never_import_higher_ones():
    modules, found = scan()
    problems = [f"{m}: no rank in ENGINE_LAYERS (tests/test_layers.py): give it one"
                for m in modules if _under(m, ("engine",)) and engine_rank(m) is None]
    for i in found:
        if not (_under(i.source, ("engine",)) and _under(i.target, ("engine",))):
            continue
        low, high = engine_rank(i.source), engine_rank(i.target)
        if low is not None and high is not None and high > low:
            problems.append(f"{i.where()}: {i.source} ({LAYER_NAMES[low]}) imports {i.target} ({LAYER_NAMES[high]})")
    assert not problems, _report("engine layer violations", problems)


def test_panes_import_no_commands_and_no_other_pane():
    _, found = scan()
    problems = []
    for i in found:
        if _under(i.source, ("fcwork.panes",)) and i.source not in PANE_SHARED:
            if _under(i.target, CLI_MODULES):
                problems.append(f"{i.where()}: pane {i.source} imports the CLI's {i.target}")
            elif _under(i.target, ("fcwork.panes",)) and i.target not in PANE_SHARED:
                problems.append(f"{i.where()}: pane {i.source} imports another pane, {i.target}")
        elif _under(i.source, ("fcwork.widgets",)) and _under(i.target, CLI_MODULES + ("fcwork.panes",)):
            problems.append(f"{i.where()}: widget {i.source} imports {i.target}")
    assert not problems, _report("panes or widgets reaching into commands or panes "
                                 "(shared helpers belong in fcwork/format.py or a widget)", problems)


def test_fcwork_starts_without_torch_or_sentencepiece():
    """`fcwork` and `fcwork CMD` start fast: the CLI (with every subcommand registered) loads
    neither torch, sentencepiece, lm_eval nor textual; the app adds textual, still none of the others."""
    code = textwrap.dedent("""
        import json, sys
        import fcwork.cli
        fcwork.cli.build_parser()
        cli = sorted(m for m in ("torch", "sentencepiece", "textual", "lm_eval") if m in sys.modules)
        import fcwork.app
        app = sorted(m for m in ("torch", "sentencepiece", "lm_eval") if m in sys.modules)
        print(json.dumps({"fcwork.cli and its subcommands": cli, "fcwork.app": app}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {k: [] for k in loaded}, f"loaded at start-up: {loaded}"
