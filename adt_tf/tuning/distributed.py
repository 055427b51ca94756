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
- No process waits for a peer forever (`--oracle_timeout`, seconds, default keras-tuner's
  3600): a worker's call to the chief waits at most that long for it (`set_client_timeout`;
  a worker started before its chief waits for it that long), then the worker ends with a
  message and exit 3; the chief ends the same way when no worker has called it for that long
  while the search is not over (`watch_workers`: a worker killed, or cut off, in the middle
  of a trial), saying which trials are still assigned to which worker. Nothing is lost: the
  trials' files are kept, a restarted chief reloads them and a restarted worker gets its
  trial back. The timeout must exceed a trial's epoch (a worker calls the chief after every
  epoch) and the workers' start-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time

from adt_tf.core.files import write_json

CHIEF = "chief"
ROLES = ("single", "chief", "worker")
#: keras-tuner's own wait for the chief (oracle_client.TIMEOUT), adt-tune's default.
DEFAULT_TIMEOUT = 3600
#: The exit status of a chief or worker that lost its peers (restart it: the search resumes).
EXIT_PEER_LOST = 3
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
        check_port_free(host, port, address)
        tuner_id = CHIEF
    else:
        tuner_id = tuner_id or f"worker-{socket.gethostname()}"
        if CHIEF in tuner_id:
            raise ValueError(f"--tuner_id={tuner_id!r}: a worker's ID must not contain "
                             f"{CHIEF!r} (keras-tuner reads it as the chief's).")
    os.environ.update({ENV_ID: tuner_id, ENV_IP: host, ENV_PORT: str(port)})
    return Role(role, tuner_id, f"{host}:{port}")


def check_port_free(host: str, port: int, address: str) -> None:
    """Refuses a chief address whose port another process holds (another chief: gRPC binds
    with SO_REUSEPORT, so a second chief on the port would serve too and share the workers;
    or any other program: gRPC's bind then fails with a traceback). A plain bind, without
    port reuse, tells: ValueError naming --oracle_address."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                          socket.SOCK_STREAM)
    try:
        probe.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", port))
    except OSError as err:
        raise ValueError(f"--oracle_address={address}: port {port} is in use ({err.strerror}; "
                         "another chief or another program holds it): choose a free port, "
                         "or stop the other chief.") from None
    finally:
        probe.close()


def set_client_timeout(seconds: float) -> None:
    """How long each of a worker's calls waits for the chief (keras-tuner waits an hour:
    `keras_tuner.src.distribute.oracle_client.TIMEOUT`, read at every call)."""
    from keras_tuner.src.distribute import oracle_client

    oracle_client.TIMEOUT = float(seconds)


def peer_lost_message(role: Role, err: Exception, timeout: float) -> str:
    """What a worker says when its calls to the chief fail (a gRPC error)."""
    code = getattr(err, "code", lambda: None)()
    details = getattr(err, "details", lambda: str(err))()
    return (f"{role.tuner_id}: the chief at {role.address} did not answer "
            f"({getattr(code, 'name', code)}: {details}; each call waits up to "
            f"--oracle_timeout={timeout:g} s). Nothing is lost: restart the chief with the same "
            f"--directory, then this worker with --tuner_id={role.tuner_id}; it gets its "
            "unfinished trial back.")


class WorkerWatch:
    """The chief's watchdog: ends the chief when a worker that holds a running trial has not
    called it for `timeout` seconds, or no worker has called at all for that long (keras-
    tuner's chief would wait forever for a worker that died in the middle of a trial, while
    the other workers poll it, idle, for the trial that never ends).

    It wraps the oracle's methods that the chief's gRPC servicer calls to note, per worker,
    the time of its last call (`create_trial` names the worker; `update_trial` and
    `end_trial` name a trial, whose worker `ongoing_trials` gives), and checks once a second
    from a daemon thread. Then it prints which trials are assigned to which silent worker
    and ends the process with `EXIT_PEER_LOST` (`os._exit`: the chief's main thread is inside
    keras-tuner's serving loop). The oracle saves its state as trials progress, so a
    restarted chief reloads it and gives each worker its trial back.
    """

    CALLS = ("get_space", "update_space", "create_trial", "update_trial", "end_trial",
             "get_trial", "get_best_trials")

    def __init__(self, oracle, timeout: float, exit=os._exit, clock=time.monotonic):
        self.oracle, self.timeout, self._exit, self._clock = oracle, float(timeout), exit, clock
        self.last_call = clock()
        self.last_by_worker: dict[str, float] = {}
        self._stop = threading.Event()
        for name in self.CALLS:
            setattr(oracle, name, self._noting(name, getattr(oracle, name)))
        self._thread = threading.Thread(target=self._run, daemon=True, name="worker-watch")

    def _worker_of(self, name, args, kwargs):
        if name == "create_trial":
            return kwargs.get("tuner_id", args[0] if args else None)
        trial_id = None
        if name == "update_trial":
            trial_id = kwargs.get("trial_id", args[0] if args else None)
        elif name == "end_trial":
            trial = kwargs.get("trial", args[0] if args else None)
            trial_id = getattr(trial, "trial_id", None)
        for worker, trial in dict(self.oracle.ongoing_trials).items():
            if trial.trial_id == trial_id:
                return worker
        return None

    def _noting(self, name, method):
        def call(*args, **kwargs):
            worker = self._worker_of(name, args, kwargs)
            try:
                return method(*args, **kwargs)
            finally:
                self.last_call = self._clock()
                if worker is not None:
                    self.last_by_worker[worker] = self.last_call
        return call

    def start(self) -> WorkerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def lost(self) -> dict[str, str]:
        """{worker: its running trial} for the workers silent for longer than the timeout
        (every running trial's worker when no worker has called for that long)."""
        now = self._clock()
        ongoing = {w: t.trial_id for w, t in dict(self.oracle.ongoing_trials).items()}
        if now - self.last_call > self.timeout:
            return ongoing or {"(no worker)": "(none started)"}
        return {w: t for w, t in ongoing.items()
                if now - self.last_by_worker.get(w, self.last_call) > self.timeout}

    def message(self, lost: dict[str, str]) -> str:
        held = "; ".join(f"trial {t} assigned to {w}" for w, t in sorted(lost.items()))
        return (f"adt-tune (chief): no call for more than --oracle_timeout={self.timeout:g} s "
                f"({held}) and the search is not over. Nothing is lost: restart the chief "
                "with the same command and each worker with its --tuner_id; a worker gets its "
                "unfinished trial back.")

    def check(self) -> bool:
        """One check; True (after printing the message and exiting) if a peer is lost."""
        lost = self.lost()
        if lost:
            print(self.message(lost), file=sys.stderr, flush=True)
            self._exit(EXIT_PEER_LOST)
        return bool(lost)

    def _run(self):
        while not self._stop.wait(1.0):
            if self.check():
                return


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
    write_json(path, started, indent=1)


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


__all__ = ["CHIEF", "DEFAULT_TIMEOUT", "EXIT_PEER_LOST", "ROLES", "Role", "WorkerWatch",
           "configure", "current_role", "keep_running_trials", "peer_lost_message",
           "record_trial_start", "set_client_timeout", "trials_started"]
