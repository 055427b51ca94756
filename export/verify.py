"""Verification of an export, in a fresh process, as a server would see it.

`verify_export` (called by the exporter before the version folder appears) writes the
verification images and the Keras classifier's probabilities to a scratch file, then runs, at
the same time:

- `python -m export.verify DIR DATA TOLERANCE`: a fresh interpreter that loads DIR with
  `tf.saved_model.load` (no Keras object, no code of ours in the graph) and checks the
  signatures' names, input and output names, dtypes and shapes; that `serving_default` gives
  the Keras probabilities (max abs difference <= tolerance); that `predict` agrees with it;
  that `serving_bytes` on PNG files of the images agrees with `serving_default` on their
  8-bit pixels; that `predict` rejects images in 0..255 with the range message.
- `saved_model_cli show --dir DIR --all` (shipped with TensorFlow), which must succeed and
  list the three signatures.

Both run on the CPU, and the exporter computes the Keras reference on the CPU too: the check
is that the export computes the classifier's function; a GPU's TF32 matmuls and fused
kernels would add differences above the 1e-5 tolerance that say nothing about the export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from adt_tf.artifacts import serving_contract as names
from adt_tf.data import as_unit_float

RESULT_PREFIX = "VERIFICATION_RESULT "
TOLERANCE = 1e-5


class VerificationError(RuntimeError):
    """The export does not behave like the Keras classifier, or does not load."""


def _spec(shape, dtype) -> dict[str, Any]:
    return {"dtype": dtype, "shape": None if shape is None else list(shape)}


def expected_signatures(input_shape, num_classes: int, has_class_names: bool) -> dict:
    """{signature: {"inputs": {name: spec}, "outputs": {name: spec}}}, None = unknown size."""
    h, w, c = input_shape
    outputs = {"probabilities": _spec([None, num_classes], "float32"),
               "logits": _spec([None, num_classes], "float32"),
               "classes": _spec([None], "int64")}
    if has_class_names:
        outputs["class_names"] = _spec([None], "string")
    return {
        names.DEFAULT_SIGNATURE: {"inputs": {names.IMAGES_INPUT: _spec([None, h, w, c],
                                                                       "float32")},
                                  "outputs": outputs},
        names.BYTES_SIGNATURE: {"inputs": {names.BYTES_INPUT: _spec([None], "string")},
                                "outputs": outputs},
        names.PREDICT_SIGNATURE: {"inputs": {names.IMAGES_INPUT: _spec(None, "float32")},
                                  "outputs": outputs},
    }


def _describe(function) -> dict[str, Any]:
    def spec(s):
        return _spec(None if s.shape.rank is None else s.shape.as_list(), s.dtype.name)

    return {"inputs": {k: spec(s) for k, s in function.structured_input_signature[1].items()},
            "outputs": {k: spec(s) for k, s in function.structured_outputs.items()}}


def check_saved_model(saved_model_dir: str, images: np.ndarray, probabilities: np.ndarray,
                      has_class_names: bool, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The checks themselves (run in the fresh process); returns a JSON-able result."""
    import tensorflow as tf

    problems: list[str] = []
    loaded = tf.saved_model.load(saved_model_dir)
    found = {k: _describe(f) for k, f in loaded.signatures.items()}
    expected = expected_signatures(images.shape[1:], probabilities.shape[1], has_class_names)
    if sorted(found) != sorted(expected):
        problems.append(f"signatures {sorted(found)}, expected {sorted(expected)}")
    for key in expected:
        if key in found and found[key] != expected[key]:
            problems.append(f"signature {key}: {found[key]}, expected {expected[key]}")
    result: dict[str, Any] = {"signatures": found, "num_images": int(len(images))}
    if problems:
        return {**result, "ok": False, "problems": problems}

    sigs = loaded.signatures
    served = sigs[names.DEFAULT_SIGNATURE](images=tf.constant(images))
    diff = float(np.max(np.abs(served["probabilities"].numpy() - probabilities)))
    result["max_abs_diff"] = diff
    if not diff <= tolerance:
        problems.append(f"serving_default probabilities differ from Keras's by {diff:.3g} "
                        f"> {tolerance:g}")
    if not np.array_equal(served["classes"].numpy(),
                          np.argmax(served["probabilities"].numpy(), axis=-1)):
        problems.append("classes is not the arg-max of probabilities")
    checked = sigs[names.PREDICT_SIGNATURE](images=tf.constant(images))["probabilities"]
    result["predict_max_abs_diff"] = float(np.max(np.abs(checked.numpy() - served[
        "probabilities"].numpy())))
    if not result["predict_max_abs_diff"] <= tolerance:
        problems.append(f"predict differs from serving_default by "
                        f"{result['predict_max_abs_diff']:.3g}")

    pixels = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    files = tf.constant([tf.io.encode_png(p).numpy() for p in pixels])
    from_bytes = sigs[names.BYTES_SIGNATURE](image_bytes=files)["probabilities"].numpy()
    from_pixels = sigs[names.DEFAULT_SIGNATURE](
        images=tf.constant(as_unit_float(pixels)))["probabilities"].numpy()
    result["bytes_max_abs_diff"] = float(np.max(np.abs(from_bytes - from_pixels)))
    if not result["bytes_max_abs_diff"] <= tolerance:
        problems.append(f"serving_bytes on PNG files differs from serving_default on their "
                        f"pixels by {result['bytes_max_abs_diff']:.3g}")
    try:
        sigs[names.PREDICT_SIGNATURE](images=tf.constant(pixels.astype(np.float32) + 1.0))
        problems.append("predict accepted images in 1..256 instead of rejecting them")
    except tf.errors.InvalidArgumentError as err:
        if "[0, 1]" not in err.message:
            problems.append(f"predict rejected images in 1..256 without the range message: "
                            f"{err.message[:200]}")
    return {**result, "ok": not problems, "problems": problems}


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _saved_model_cli() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.exists(beside):
        return [beside]
    found = shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


#: The prefix of the verification's scratch folders in the system's temporary folder.
VERIFY_PREFIX = "adt_export_verify_"


def end_with_parent() -> None:
    """In a child process (`preexec_fn`): SIGKILL it when its parent dies (Linux's
    PR_SET_PDEATHSIG), so a killed adt-export leaves no verification running."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child ends when its pipes close
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_folders(parent: str, prefix: str) -> list[str]:
    """Removes the folders `<parent>/<prefix><pid>-...` whose process is gone (what a killed
    export left); returns their names."""
    import shutil

    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in os.listdir(parent):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def verify_export(saved_model_dir: str, images: np.ndarray, probabilities: np.ndarray,
                  has_class_names: bool, tolerance: float = TOLERANCE,
                  timeout: float = 600.0) -> dict[str, Any]:
    """Runs the checks in a fresh process and `saved_model_cli show --all`, concurrently.

    Returns:
        The result: `max_abs_diff` (serving_default vs Keras), `bytes_max_abs_diff`,
        `predict_max_abs_diff`, `signatures`, `saved_model_cli: "ok"`.

    Raises:
        VerificationError: listing every failed check (and the processes' error output).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH"))
                                        if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # On CPU: the comparison is about the function computed, not about the device's numerics
    # (TF32 matmuls and fused GPU kernels differ from Keras's eager call by more than 1e-5).
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    remove_stale_folders(tempfile.gettempdir(), VERIFY_PREFIX)
    with tempfile.TemporaryDirectory(prefix=f"{VERIFY_PREFIX}{os.getpid()}-") as scratch:
        data = os.path.join(scratch, "data.npz")
        np.savez(data, images=np.asarray(images, np.float32),
                 probabilities=np.asarray(probabilities, np.float32),
                 has_class_names=np.array(bool(has_class_names)))
        child = subprocess.Popen(
            [sys.executable, "-m", "export.verify", saved_model_dir, data, repr(tolerance)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=end_with_parent)
        cli = subprocess.Popen([*_saved_model_cli(), "show", "--dir", saved_model_dir, "--all"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=end_with_parent)
        try:
            out, err = child.communicate(timeout=timeout)
            cli_out, cli_err = cli.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            cli.kill()
            raise VerificationError(f"Verification of {saved_model_dir} timed out after "
                                    f"{timeout:.0f} s.") from exc
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not lines:
        raise VerificationError(f"Reloading {saved_model_dir} in a fresh process failed (exit "
                                f"{child.returncode}):\n{err[-3000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    problems = list(result.get("problems", []))
    if cli.returncode != 0:
        problems.append(f"saved_model_cli show --all failed (exit {cli.returncode}): "
                        f"{cli_err[-2000:]}")
    else:
        missing = [s for s in names.SIGNATURES if f"signature_def['{s}']" not in cli_out]
        if missing:
            problems.append(f"saved_model_cli show --all does not list {missing}")
    if problems:
        raise VerificationError(f"Export {saved_model_dir} failed verification:\n- "
                                + "\n- ".join(problems))
    result["saved_model_cli"] = "ok"
    result["tolerance"] = tolerance
    return result


def main(argv: list[str]) -> int:
    saved_model_dir, data_path, tolerance = argv[1], argv[2], float(argv[3])
    with np.load(data_path) as data:
        images, probabilities = data["images"], data["probabilities"]
        has_class_names = bool(data["has_class_names"])
    result = check_saved_model(saved_model_dir, images, probabilities, has_class_names,
                               tolerance)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
