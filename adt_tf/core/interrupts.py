"""What a command line does when it is interrupted (Ctrl-C, SIGINT, or SIGTERM).

Every output of the project is written to a temporary name and renamed into place, and
training checkpoints every epoch, so an interrupt never leaves a half-written file; what the
user needs is one line saying what was kept and how to go on, not a traceback. The command
lines wrap their work in `interruptible`: SIGTERM (what `kill`, a cluster manager or a
container stop sends) is handled like SIGINT, and either ends the command with that line and
exit status 130 (128 + SIGINT, the shell's code for "interrupted").
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

#: The exit status of an interrupted command (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interruptible(command: str, kept: str):
    """Runs the body; on SIGINT or SIGTERM prints "<command>: interrupted (SIG...). <kept>"
    to stderr and exits with `EXIT_INTERRUPTED`.

    Args:
        command: the command's name ("adt-train").
        kept: what is kept and how to resume ("The completed epochs are in W/backup: rerun
            the same command to resume.").
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        yield
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        print(f"{command}: interrupted ({name}). {kept}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["EXIT_INTERRUPTED", "interruptible"]
