"""A search over many processes or machines with keras-tuner's own chief/worker mode.

keras-tuner runs a search distributed when three environment variables are set in every
process: `KERASTUNER_TUNER_ID` ("chief" for the one process that holds the oracle, a unique
name for each worker), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` (the address the
chief serves the oracle on over gRPC, and the workers reach). The chief trains nothing: it
hands out trials and records their results; each worker asks for a trial, trains it, reports
its metrics every epoch, and asks again until the oracle says the search is over.

What keras-tuner guarantees (keras-tuner 1.4; `keras_tuner.src.distribute`):
- A trial handed to a worker stays assigned to that worker's ID until it ends: a worker
  restarted with the same `KERASTUNER_TUNER_ID` is given that trial again (it is retried
  from its first epoch); no other worker takes it. A worker that never comes back leaves it
  unfinished, and the chief waits for it.
- Workers wait for the chief (gRPC `wait_for_ready`, up to an hour per call), so a chief
  restarted within that time is reached again.
- A chief restarted with the same directory reloads the oracle (`oracle.json` and every
  trial's `trial.json`): finished trials are kept; the trials that were running are put in
  a retry queue, for whichever worker asks first.

What adt-tune adds:
- `--tuning_role`, `--oracle_address` and `--tuner_id` set those variables (`configure`).
- A restarted chief keeps each running trial assigned to the worker that runs it
  (`keep_running_trials`) instead of queueing it for retry: the worker, still training or
  restarted with its ID, finishes it; with keras-tuner's retry queue another worker would
  take the same trial and train it a second time beside the first.
- Each worker records the trials it started in `<project>/workers/<tuner_id>.json`
  (`record_trial_start`), so who ran what can be checked after the search.
- Only the chief writes the search's files (search_config.json, the trial table,
  search.png, best_hyperparameters.json), once the last worker is done; a worker refuses
  `--overwrite`, which would delete the search the chief holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

CHIEF = "chief"
ROLES = ("single", "chief", "worker")
ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"


@dataclasses.dataclass(frozen=True)
class Role:
    """Which part of a search this process plays.

    Attributes:
        kind: "single" (the whole search in this process), "chief" or "worker".
        tuner_id: keras-tuner's ID of this process ("tuner0" for a single process).
        address: "host:port" of the chief's oracle (None for a single process).
    """

    kind: str
    tuner_id: str
    address: str | None = None

    @property
    def is_worker(self) -> bool:
        return self.kind == "worker"

    @property
    def writes_results(self) -> bool:
        """Whether this process writes the search's files (not a worker)."""
        return self.kind != "worker"


def current_role(environ=None) -> Role:
    """The role the keras-tuner variables of `environ` (default: os.environ) give."""
    env = os.environ if environ is None else environ
    if ENV_IP not in env:
        return Role("single", env.get(ENV_ID, "tuner0"))
    missing = [name for name in (ENV_PORT, ENV_ID) if name not in env]
    if missing:
        raise ValueError(f"{ENV_IP} is set but {' and '.join(missing)} not: a distributed "
                         "search needs all three (or --tuning_role, --oracle_address and "
                         "--tuner_id).")
    tuner_id = env[ENV_ID]
    kind = "chief" if CHIEF in tuner_id else "worker"  # keras-tuner's own test
    return Role(kind, tuner_id, f"{env[ENV_IP]}:{env[ENV_PORT]}")


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--oracle_address must be HOST:PORT (e.g. 10.0.0.5:8000), got "
                         f"{address!r}.")
    return host, int(port)


def configure(role: str, address: str | None = None, tuner_id: str | None = None) -> Role:
    """Sets keras-tuner's variables for `role` ("single", "chief" or "worker") in this
    process's environment and returns the role; "single" leaves the environment as it is
    (so variables set by a launcher still apply).

    Args:
        role: the part this process plays.
        address: the chief's "host:port" (required for "chief" and "worker"; the chief
            listens on it, so "0.0.0.0:PORT" listens on every interface).
        tuner_id: a worker's ID, unique within the search and the same when the worker is
            restarted (default: "worker-<hostname>", one worker per machine). A chief's
            is "chief".

    Raises:
        ValueError: an unknown role, a missing or malformed address, a worker ID that
            contains "chief" (keras-tuner would take it for the chief).
    """
    if role not in ROLES:
        raise ValueError(f"--tuning_role must be one of {', '.join(ROLES)}, got {role!r}.")
    if role == "single":
        return current_role()
    if not address:
        raise ValueError(f"--tuning_role={role} needs --oracle_address=HOST:PORT (the "
                         "chief's).")
    host, port = _parse_address(address)
    if role == "chief":
        tuner_id = CHIEF
    else:
        tuner_id = tuner_id or f"worker-{socket.gethostname()}"
        if CHIEF in tuner_id:
            raise ValueError(f"--tuner_id={tuner_id!r}: a worker's ID must not contain "
                             f"{CHIEF!r} (keras-tuner reads it as the chief's).")
    os.environ.update({ENV_ID: tuner_id, ENV_IP: host, ENV_PORT: str(port)})
    return Role(role, tuner_id, f"{host}:{port}")


def keep_running_trials(oracle) -> list[str]:
    """After a chief's oracle has reloaded: gives each trial that was running back to the
    worker that ran it (keras-tuner's `reload` puts them in the retry queue for any worker).

    Returns the IDs of the trials kept assigned.
    """
    path = os.path.join(oracle._project_dir, "oracle.json")  # noqa: SLF001 (keras-tuner's)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        running = json.load(f).get("ongoing_trials", {})
    kept = []
    for tuner_id, trial_id in running.items():
        trial = oracle.trials.get(trial_id)
        if trial is None or trial_id not in oracle._retry_queue:  # noqa: SLF001
            continue
        oracle._retry_queue.remove(trial_id)  # noqa: SLF001
        oracle.ongoing_trials[tuner_id] = trial
        kept.append(trial_id)
    return kept


def record_trial_start(project_dir: str, tuner_id: str, trial_id: str) -> None:
    """Appends (trial, time) to `<project_dir>/workers/<tuner_id>.json` (written atomically)."""
    folder = os.path.join(project_dir, "workers")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{tuner_id}.json")
    started = []
    if os.path.exists(path):
        with open(path) as f:
            started = json.load(f)
    started.append({"trial_id": trial_id, "started": time.time()})
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(started, f, indent=1)
    os.replace(tmp, path)


def trials_started(project_dir: str) -> dict[str, list[str]]:
    """{worker ID: the trial IDs it started, in order} from `record_trial_start`'s files."""
    folder = os.path.join(project_dir, "workers")
    out = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    out[name[:-5]] = [entry["trial_id"] for entry in json.load(f)]
    return out


__all__ = ["CHIEF", "ROLES", "Role", "configure", "current_role", "keep_running_trials",
           "record_trial_start", "trials_started"]
