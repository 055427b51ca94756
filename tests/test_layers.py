"""The package's layers (`.importlinter`): a module imports only from its own layer and
the layers below it, and the library imports none of the commands, the exporter or the
benchmarks. Checked with import-linter, as a contributor runs it (`lint-imports`)."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys

from tests.helpers import ROOT, command_env


def test_the_import_contracts_are_kept():
    command = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([command], cwd=ROOT,
                          capture_output=True, text=True, env=command_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_subpackage_of_the_library_has_its_layer():
    """A new subpackage must be placed in the layers, or the contract says nothing of it."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, ".importlinter"))
    layers = set()
    for line in config["importlinter:contract:layers"]["layers"].split():
        layers.update(name for name in line.split("|") if name)
    package = os.path.join(ROOT, "adt_tf")
    subpackages = {name for name in os.listdir(package)
                   if os.path.isfile(os.path.join(package, name, "__init__.py"))}
    assert subpackages == layers
