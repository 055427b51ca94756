"""The evaluation's cache: each attack's per-example results, keyed by everything they depend on.

A rerun of an evaluation with the same model, inputs and settings reads an attack's results
back instead of running it again, so an interrupted evaluation resumes where it stopped. The
key holds a hash of the model's weights (whatever name the model is given) and a version of
the attack's code (`code_version`): a changed model, or an attack fixed since, is run again.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import sys
import types
import zipfile

import numpy as np

from adt_tf.core.files import atomic_path

#: Bumped when the meaning of a cached result changes (old entries are then ignored).
CACHE_VERSION = 2

_PACKAGE = "adt_tf"


def weights_id(classifier) -> str | None:
    """A hash of a Keras classifier's weights (None for objects without `get_weights`)."""
    if not hasattr(classifier, "get_weights"):
        return None
    digest = hashlib.sha256()
    for w in classifier.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:20]


def _package_modules(module_name: str, seen: set[str]) -> None:
    """Adds `module_name` and every package module its namespace refers to (transitively)."""
    if module_name in seen or module_name not in sys.modules:
        return
    seen.add(module_name)
    for value in vars(sys.modules[module_name]).values():
        name = value.__name__ if isinstance(value, types.ModuleType) else \
            getattr(value, "__module__", None)
        if isinstance(name, str) and (name == _PACKAGE or name.startswith(_PACKAGE + ".")):
            _package_modules(name, seen)


def code_digest(source: str) -> str:
    """A hash of what a module's source *does*: its syntax tree without the import
    statements and the docstrings (comments and layout are not in the tree). A module moved
    to another package, its imports rewritten, its comments or documentation edited, keeps
    its digest; a change to any statement changes it."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body
                 if not isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    text = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(text.encode()).hexdigest()


def code_version(function) -> str:
    """A hash of the code of the module defining `function` and of every module of the
    package it uses, directly or through others (the attack's code, as the cache sees it):
    the modules' `code_digest`s, sorted, so that neither the modules' names nor their
    imports, comments or docstrings enter it (the layers' move renamed every module and
    rewrote its imports without changing an attack)."""
    seen: set[str] = set()
    _package_modules(function.__module__, seen)
    digests = []
    for name in seen:
        try:
            digests.append(code_digest(inspect.getsource(sys.modules[name])))
        except (OSError, TypeError, SyntaxError):  # no source (a frozen install): the name
            digests.append(name)
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:20]


def array_id(*arrays) -> str:
    """A hash of the bytes of some arrays (the inputs, the labels)."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:20]


def cache_file(cache_dir: str, name: str, key: dict) -> str:
    """The file of attack `name` under `key` (any JSON-serialisable description)."""
    text = json.dumps(dict(key, cache_version=CACHE_VERSION), sort_keys=True, default=str)
    return os.path.join(cache_dir, f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz")


def load_cached(path: str, mask: np.ndarray):
    """(correct [N], seconds) stored at `path` for the same attacked inputs `mask`, else None.
    An entry that cannot be read (torn by a crash of another writer, a full disk) is
    recomputed: None, with a warning naming the file."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as data:
            if not np.array_equal(data["evaluated"], mask):
                return None  # earlier attacks changed the inputs this one runs on
            return data["correct"].copy(), float(data["seconds"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        print(f"warning: the cached attack results {path} cannot be read "
              f"({type(err).__name__}: {err}); the attack is run again.", file=sys.stderr)
        return None


def store(path: str, correct: np.ndarray, mask: np.ndarray, seconds: float) -> None:
    """Writes an attack's results atomically (a reader never sees half a file), under a
    temporary name of its own (two processes storing into one cache never share one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, correct=correct, evaluated=mask, seconds=seconds)


__all__ = ["CACHE_VERSION", "array_id", "cache_file", "code_version", "load_cached", "store",
           "weights_id"]
