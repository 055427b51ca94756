"""`models.config`: the TF Serving model-server configuration at the export base.

A text-format `tensorflow.serving.ModelServerConfig` listing every model exported under the
base, each with the folder TF Serving watches for numbered versions:

    model_config_list {
      config {
        name: "adt_cifar10"
        base_path: "/models/adt_cifar10"
        model_platform: "tensorflow"
      }
    }

Pass it with `tensorflow_model_server --model_config_file=...`. `base_path` is where the
server sees the model folder: by default `/models/<name>`, the official Docker container's
convention when the export base is mounted at /models.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from adt_tf.artifacts.serving_contract import MODELS_CONFIG

DEFAULT_SERVING_ROOT = "/models"


def read_models_config(path: str):
    """Parses a models.config file into a `ModelServerConfig` (ValueError if it is not one)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"{path} is not a ModelServerConfig text proto ({err}); fix or remove "
                         "it, it is not overwritten.") from err
    return config


@contextlib.contextmanager
def models_config_lock(export_base: str):
    """Holds an exclusive lock on `<export_base>/models.config` for the block: exports into
    one folder update it one after the other (read, add their model, rename), so none is
    lost (two exports racing between the read and the rename dropped one of the two). The
    lock is an `flock` on the export folder itself (models.config is replaced by a rename,
    so its own inode cannot carry a lock; no lock file clutters the folder TF Serving
    reads); the kernel releases it however the process ends."""
    os.makedirs(export_base, exist_ok=True)
    folder = os.open(export_base, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(folder, fcntl.LOCK_UN)
    finally:
        os.close(folder)


def check_serving_root(serving_root: str) -> str:
    """The folder the server sees the export base as: an absolute path."""
    if not serving_root or not serving_root.startswith("/"):
        raise ValueError(f"--serving_root must be the absolute path where the server sees "
                         f"--export_dir (e.g. /models, the official container's), got "
                         f"{serving_root!r}.")
    return serving_root


def prepare_models_config(export_base: str, model_name: str,
                          serving_root: str = DEFAULT_SERVING_ROOT) -> str:
    """Writes `<export_base>/models.config` with `model_name` added (or updated), the other
    models kept, to a temporary file beside it, and returns that file's path; nothing is
    published until `commit_models_config`. ValueError names the file if the present one is
    malformed or the folder is not writable."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    check_serving_root(serving_root)
    path = os.path.join(export_base, MODELS_CONFIG)
    if os.path.exists(path):
        config = read_models_config(path)
    else:
        config = model_server_config_pb2.ModelServerConfig()
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == model_name), None)
    if entry is None:
        entry = entries.add()
    entry.name = model_name
    entry.base_path = f"{serving_root.rstrip('/')}/{model_name}"
    entry.model_platform = "tensorflow"
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text_format.MessageToString(config))
    except OSError as err:
        raise ValueError(f"Cannot write {path} ({err.strerror}); nothing was exported.") from err
    return tmp


def commit_models_config(pending: str) -> str:
    """Publishes a file from `prepare_models_config` (an atomic rename). Returns the path."""
    path = pending.rsplit(".tmp-", 1)[0]
    os.replace(pending, path)
    return path


def update_models_config(export_base: str, model_name: str,
                         serving_root: str = DEFAULT_SERVING_ROOT) -> str:
    """Adds (or updates) `model_name` in `<export_base>/models.config`, keeping the other
    models listed there; written atomically, under the folder's lock. Returns the path."""
    with models_config_lock(export_base):
        return commit_models_config(prepare_models_config(export_base, model_name,
                                                          serving_root))


__all__ = ["DEFAULT_SERVING_ROOT", "check_serving_root", "commit_models_config",
           "models_config_lock", "prepare_models_config", "read_models_config",
           "update_models_config"]
