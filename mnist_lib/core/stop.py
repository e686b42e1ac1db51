"""Stop signals: every catchable signal whose default action ends the process is handled as Ctrl-C is.

    with stop_signals() as received:      # the CLI's main, each sweep worker
        ...                               # a stop signal raises KeyboardInterrupt here
    received                              # [15]: which one (the exit status is 128 + it)

Handled (STOP_SIGNALS): SIGTERM (kill, timeout, SLURM, docker stop), SIGHUP (a closed
terminal, a dropped SSH session), SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM,
SIGPROF, SIGXCPU (a CPU-time limit), SIGIO, SIGPWR, SIGSTKFLT, the real-time signals,
and SIGBREAK on Windows. Each raises KeyboardInterrupt, so every loop and record
treats it as Ctrl-C: the records say "interrupted". The first one also ignores the
rest, so that closing the records is not cut short.

Not handled: SIGKILL and SIGSTOP (cannot be caught); SIGINT (Ctrl-C: Python raises
KeyboardInterrupt already); SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS (sent for a
faulting instruction, which a handler in Python cannot get past); SIGABRT (abort()
ends the process after any handler); SIGPIPE and SIGXFSZ (Python ignores both: the
write fails with an OSError, and the record says "failed" with it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

ENDS_BY_DEFAULT = ("SIGHUP", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGIO",
                   "SIGPWR", "SIGSTKFLT", "SIGBREAK")  # fmt: skip
REAL_TIME = range(signal.SIGRTMIN, signal.SIGRTMAX + 1) if hasattr(signal, "SIGRTMIN") else range(0)
STOP_SIGNALS = tuple(sorted({getattr(signal, name) for name in ENDS_BY_DEFAULT if hasattr(signal, name)} | set(REAL_TIME)))


def signal_name(signum: int) -> str:
    """SIGTERM, SIGHUP, ..., SIGRTMIN+3."""
    if signum in REAL_TIME and signum != REAL_TIME.start:
        return f"SIGRTMIN+{signum - REAL_TIME.start}"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Inside the block, a stop signal raises KeyboardInterrupt; yields the list of those received (the first decides).

    Outside the main thread (a notebook's worker thread) signals cannot be handled: nothing changes there.
    """
    received: list[int] = []

    def on_stop(signum, frame) -> None:
        received.append(signum)
        for sig in STOP_SIGNALS:  # the records are being closed; a second signal must not cut that short
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_stop) for sig in STOP_SIGNALS} if main else {}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
