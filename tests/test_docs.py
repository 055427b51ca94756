"""Documentation that runs: every Python example of README.md and docs/*.md is executed.

One test per Markdown file: its ```python blocks run in order, in one namespace, in a fresh
folder (where `docs/` of the repository is visible, for the shipped example image). An HTML
comment on the line before a block changes how the test runs it, invisibly to a reader:

- `<!-- docs-test: replace "OLD" "NEW" -->` (or 'OLD' 'NEW', for text with double quotes):
  run the block with OLD replaced by NEW, the
  documented switch to a smaller setting (fewer epochs, fewer images) for the long examples;
  several may precede one block.
- `<!-- docs-test: serving -->`: TensorFlow Serving's REST and gRPC APIs are served for the
  block by in-process stand-ins (tests/export/helpers.py), backed by the SavedModel folder
  the file's earlier blocks exported (the variable `path`); "localhost:8500" and port 8501
  are replaced by the stand-ins' addresses.

The whole-README examples take minutes at their documented settings; the README says
which takes how long on a 2-core CPU.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

from tests.helpers import ROOT

FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
DOCUMENTS = [os.path.relpath(p, ROOT) for p in
             [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs",
                                                                              "*.md")))]]


def python_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(code, directives) of every ```python block, the directives being those of the HTML
    comments on the lines just before it."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").split("\n")
        directives = []
        while before and DIRECTIVE.search(before[-1]):
            directives.insert(0, DIRECTIVE.search(before[-1]).group(1))
            before.pop()
        blocks.append((match.group(1), directives))
    return blocks


def _apply(code: str, directives: list[str], replacements: dict[str, str]) -> str:
    for directive in directives:
        if directive.startswith("replace"):
            old, new = (m[1] for m in re.findall(r"""(["'])(.*?)\1""", directive))
            if old not in code:
                raise AssertionError(f"docs-test: {old!r} is not in the block it replaces in")
            code = code.replace(old, new)
    for old, new in replacements.items():
        code = code.replace(old, new)
    return code


def documents_with_code() -> list[str]:
    out = []
    for doc in DOCUMENTS:
        with open(os.path.join(ROOT, doc)) as f:
            if python_blocks(f.read()):
                out.append(doc)
    return out


def test_the_directives_are_the_known_ones():
    for doc in DOCUMENTS:
        with open(os.path.join(ROOT, doc)) as f:
            for _, directives in python_blocks(f.read()):
                for directive in directives:
                    assert directive.split()[0] in ("replace", "serving"), (doc, directive)


@pytest.mark.parametrize("document", documents_with_code())
def test_every_python_example_runs(document, tmp_path, monkeypatch):
    with open(os.path.join(ROOT, document)) as f:
        blocks = python_blocks(f.read())
    os.symlink(os.path.join(ROOT, "docs"), tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for index, (code, directives) in enumerate(blocks):
        servers = None
        replacements = {}
        if "serving" in directives:
            from tests.export.helpers import serve_export

            servers = serve_export(namespace["path"])
            replacements = {"localhost:8500": f"localhost:{servers.grpc_port}",
                            "port=8501": f"port={servers.rest_port}"}
        try:
            exec(compile(_apply(code, directives, replacements),  # noqa: S102
                         f"{document}, python block {index + 1}", "exec"), namespace)
        finally:
            if servers is not None:
                servers.stop()
