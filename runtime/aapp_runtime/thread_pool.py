"""How the runtime's ONNX Runtime sessions use the CPU's threads (``Session(thread_pool=...)``).

A model dir with pruned levels runs several sessions: dense, each level's prefill and decode, the
split prefill's parts; a request may run three of them in turn, and requests follow each other on
different ones. By default each session has its own intra-op pool whose workers spin for a while
after a run, and the next session's run then finds the cores taken: on this project's 2-core machine
a dense 512-token prefill right after an AAPP decode took 106-110 ms instead of 72-80
(docs/results/README.md, "Spinning threads between sessions"). Three settings:

- "auto" (the Python API's default): pools per session; when the model dir has pruned levels their
  workers stop spinning when a run returns (``session.force_spinning_stop``), which removes that
  penalty; the price is a wake-up per decode step (within the noise on the demo; a dense step 10%
  slower at the 120M shape, which is why a dense-only dir, one session, keeps the spinning).
- "session": pools per session with ONNX Runtime's spinning, whatever the dir.
- "shared" (the CLIs' default): one pool for the process (ONNX Runtime's global pool), whose workers
  spin between runs and take the next run of any session: no penalty and no wake-ups (on the demo
  as fast as "auto", within the noise). ONNX Runtime makes it once per process, sized by the first
  session asking (its ``threads``; None: one per core), and then refuses pools of their own to every
  session the process opens, an app's other models included: so it is opt-in for the Python API,
  and every session opened after it, whatever it asked, runs on it.
"""

from __future__ import annotations

import threading

import onnxruntime as ort

THREAD_POOLS = ("auto", "session", "shared")

_lock = threading.Lock()
_state: dict[str, object] = {}  # "threads": the shared pool's intra-op size (None: per core) or "foreign"


def shared_pool_threads() -> int | None | str:
    """The intra-op size of the process's shared pool (None: one per core); "unset" before one was
    made, "foreign" when other code in the process made it (found when a session could not open)."""
    with _lock:
        return _state.get("threads", "unset")  # type: ignore[return-value]


def configure(so: ort.SessionOptions, threads: int | None, thread_pool: str, several_graphs: bool) -> None:
    """Set ``so`` up for ``thread_pool`` (module docstring); ``several_graphs``: the model dir runs
    more than one session."""
    with _lock:
        if thread_pool == "shared" and "threads" not in _state:
            try:
                ort.set_global_thread_pool_sizes(threads or 0, 1)
                _state["threads"] = threads or None
            except Exception:  # noqa: BLE001 - ORT's Fail: other code in the process made the pools first
                _state["threads"] = "foreign"
        shared = "threads" in _state
    if shared:  # the pool's size was set when it was made: a session's own size would only draw a warning
        so.use_per_session_threads = False
        so.intra_op_num_threads = 0
    elif thread_pool == "auto" and several_graphs:
        so.add_session_config_entry("session.force_spinning_stop", "1")


def refused_own_pools(error: Exception) -> bool:
    """Whether ONNX Runtime refused a session pools of its own because the process has the shared one
    (made by other code); the caller retries on the shared pool."""
    if "use_per_session_threads must be false" not in str(error):
        return False
    with _lock:
        _state.setdefault("threads", "foreign")
    return True


__all__ = ["THREAD_POOLS", "configure", "refused_own_pools", "shared_pool_threads"]
