"""``Binding``: an ONNX Runtime IOBinding whose outputs come back by name.

``IOBinding.get_outputs()`` lists a binding's outputs in the order their names were first bound
(rebinding a name keeps its place), whether ONNX Runtime allocates them (``bind_output``) or writes
into a given buffer (``bind_ortvalue_output``). Reading them by position couples every caller to the
order some other function bound them in; this records the names as they are bound and returns a
``{name: OrtValue}``.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort


class Binding:
    """One graph run's inputs and outputs (reusable: bind once, ``run`` many times)."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.session = sess
        self.io = sess.io_binding()
        self.names: list[str] = []  # outputs, in ONNX Runtime's order

    def input(self, name: str, value: Any) -> None:
        """Bind an ``OrtValue`` (wherever it lives) or a host array (copied to the session's device)."""
        if isinstance(value, ort.OrtValue):
            self.io.bind_ortvalue_input(name, value)
        else:
            self.io.bind_cpu_input(name, value)

    def output(self, name: str, device: str = "cpu", value: ort.OrtValue | None = None) -> None:
        """Let ONNX Runtime allocate ``name`` on ``device``, or write it into ``value``."""
        if value is None:
            self.io.bind_output(name, device)
        else:
            self.io.bind_ortvalue_output(name, value)
        if name not in self.names:
            self.names.append(name)

    def run(self, options: ort.RunOptions | None = None) -> dict[str, ort.OrtValue]:
        """Run the session on this binding; its outputs by name."""
        self.session.run_with_iobinding(self.io, options)
        return dict(zip(self.names, self.io.get_outputs(), strict=True))
