"""Built-in source `science-docs`: docstrings of installed scientific packages, plus worked problems.

numpy (and scipy, sympy, pandas, mpmath when installed) and the stdlib's numeric modules are
walked module by module, importing each public module lazily, so only as much is imported as
the budget needs. One document per docstring of at least MIN_DOC_CHARS characters; worked
problems with computed numbers (science_prose) are mixed in for variety and keep the source
going once the docstrings run out.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import pkgutil
import random
import warnings
from typing import Iterator

from engine.data.builtin.science_prose import worked_problem

MIN_DOC_CHARS = 200
PACKAGES = ("numpy", "scipy", "sympy", "pandas", "mpmath")
STDLIB_MODULES = ("math", "cmath", "statistics", "fractions", "decimal", "random", "numbers")
# Test suites and build tooling hold no reference text worth learning from.
SKIP_PARTS = frozenset({"tests", "test", "testing", "conftest", "setup", "benchmarks", "distutils", "f2py"})
PROSE_SHARE = 0.3  # fraction of characters that are worked problems while docstrings last


def _public_modules(package: str) -> list[str]:
    """The package and its public submodules, found on disk without importing them; sorted."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    names = [package]
    roots = list(spec.submodule_search_locations or [])
    stack = [(package, root) for root in roots]
    while stack:
        prefix, path = stack.pop()
        for info in pkgutil.iter_modules([path]):
            if info.name.startswith("_") or info.name in SKIP_PARTS or "test" in info.name:
                continue
            full = f"{prefix}.{info.name}"
            names.append(full)
            if info.ispkg:
                stack.append((full, os.path.join(path, info.name)))
    return sorted(set(names))


def _import_quietly(name: str):
    """Import a module with its warnings and prints suppressed; None if it fails in any way."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException as exc:  # a broken optional module must not stop the corpus build
            if isinstance(exc, KeyboardInterrupt):
                raise
            return None


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except Exception:  # no signature (TypeError, ValueError), or its machinery raises anything at all
        return ""


def _doc(obj) -> str | None:
    """The object's own cleaned docstring if long enough; None when it only inherits its type's."""
    try:
        doc = obj.__doc__
        if not inspect.isclass(obj) and not inspect.ismodule(obj) and doc is type(obj).__doc__:
            return None
    except Exception:
        return None
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc)
    if len(doc) < MIN_DOC_CHARS or "\x00" in doc:
        return None
    return doc


def _belongs(obj, root: str) -> bool:
    mod = getattr(obj, "__module__", None)
    if not isinstance(mod, str):
        return False
    return mod == root or mod.startswith(root + ".") or mod == "_" + root


def module_docs(module, root: str, seen: set) -> Iterator[str]:
    """Documents for a module: its own docstring, then its public functions, classes and methods."""
    name = module.__name__
    doc = _doc(module)
    if doc is not None and id(module) not in seen:
        seen.add(id(module))
        yield f"Module {name}\n\n{doc}"
    try:
        members = sorted(vars(module).items())
    except TypeError:
        return
    for attr, obj in members:
        if attr.startswith("_") or id(obj) in seen:
            continue
        if not (inspect.isclass(obj) or callable(obj)) or not _belongs(obj, root):
            continue
        seen.add(id(obj))
        qualname = getattr(obj, "__qualname__", attr)
        if isinstance(qualname, str) and "<" not in qualname:
            qualname = f"{obj.__module__}.{qualname}"
        else:  # made inside a function (`<locals>`): the name it is reached by reads better
            qualname = f"{name}.{attr}"
        doc = _doc(obj)
        if doc is not None:
            sig = "" if doc.lstrip().startswith(attr + "(") else _signature(obj)
            yield f"{qualname}{sig}\n\n{doc}"
        if inspect.isclass(obj):
            for meth_name, meth in sorted(vars(obj).items()):
                if meth_name.startswith("_") or id(meth) in seen:
                    continue
                seen.add(id(meth))
                target = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
                if not (inspect.isroutine(target) or isinstance(target, property)):
                    continue
                mdoc = _doc(target)
                if mdoc is not None:
                    yield f"{qualname}.{meth_name}\n\n{mdoc}"


def _package_docs(modules: list[str], root: str, seen: set, texts: set) -> Iterator[str]:
    for mod_name in modules:
        module = _import_quietly(mod_name)
        if module is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for text in module_docs(module, root, seen):
                key = hash(text)
                if key not in texts:
                    texts.add(key)
                    yield text


def docstring_docs(seed: int) -> Iterator[str]:
    """Docstring documents of every available package, interleaved, in a seed-shuffled module order."""
    rng = random.Random(seed)
    seen: set = set()
    texts: set = set()
    streams = []
    for package in PACKAGES:
        modules = _public_modules(package)
        if modules:
            rng.shuffle(modules)
            streams.append(_package_docs(modules, package, seen, texts))
    stdlib = list(STDLIB_MODULES)
    rng.shuffle(stdlib)
    streams.extend(_package_docs([m], m, seen, texts) for m in stdlib)
    while streams:
        for stream in list(streams):
            try:
                yield next(stream)
            except StopIteration:
                streams.remove(stream)


def generate(seed: int) -> Iterator[str]:
    """Yield docstrings and worked problems without end, deterministic for `seed` on one install."""
    rng = random.Random(seed + 1)
    doc_chars = prose_chars = 0
    for text in docstring_docs(seed):
        yield text
        doc_chars += len(text)
        while prose_chars < doc_chars * PROSE_SHARE / (1 - PROSE_SHARE):
            prose = worked_problem(rng).as_text()
            prose_chars += len(prose)
            yield prose
    while True:
        yield worked_problem(rng).as_text()
