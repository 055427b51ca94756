"""The docstring examples of the package (the command-line modules define absl flags at
import and hold no examples).

Self-contained examples (they build what they use) run as doctests, their printed output
checked. The others use inputs the reader supplies (a trained model, images, a dataset, hours
of training); those must at least name nothing undefined: every name an example reads is one it
defines, a name of its module, a builtin, a public name of the package (which the reader
imports), or one of `SUPPLIED`.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import importlib
import pkgutil
import textwrap

import pytest

import adt_tf

#: Modules whose examples run: they need no data, no trained model, and seconds at most.
RUNNABLE = ("adt_tf.core.registry", "adt_tf.core.files", "adt_tf.numerics.optimizers",
            "adt_tf.adt.generators", "adt_tf.threat.bijectors", "adt_tf.adt.distributions")

#: What examples may use without defining it: the reader's own inputs.
SUPPLIED = {"x", "y", "model", "classifier", "other_model", "target", "trainer", "tuner",
            "x_adv", "x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "train_ds",
            "reference", "x_flat", "grad_flat", "offset", "np", "tf", "tfp", "keras"}


def _modules() -> list[str]:
    names = [adt_tf.__name__]
    for info in pkgutil.walk_packages(adt_tf.__path__, adt_tf.__name__ + "."):
        names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _public_names() -> set[str]:
    names = set()
    for name in MODULES:
        names.update(getattr(importlib.import_module(name), "__all__", ()))
    return names


def _docstring_examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names read, names defined) by a block of example code."""
    read, defined = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
            defined.update(a.arg for a in node.args.args) if isinstance(
                node, ast.FunctionDef) else None
    return read, defined


def test_the_package_has_examples_to_check():
    found = {name: len(_docstring_examples(name)) for name in MODULES}
    assert sum(found.values()) >= 30, found
    assert all(found[name] for name in RUNNABLE), found


@pytest.mark.parametrize("module_name", MODULES)
def test_every_example_names_only_what_exists(module_name):
    public = _public_names()
    known = public | SUPPLIED | set(dir(builtins))
    for test in _docstring_examples(module_name):
        source = "\n".join(textwrap.dedent(e.source) for e in test.examples)
        read, defined = _names(source)
        unknown = read - defined - set(test.globs) - known
        assert not unknown, f"{test.name}: the example uses undefined {sorted(unknown)}"


@pytest.mark.parametrize("module_name", RUNNABLE)
def test_self_contained_examples_run_and_print_what_they_show(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _docstring_examples(module_name):
        result = runner.run(test, out=lambda text: None)
        assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} failed"
