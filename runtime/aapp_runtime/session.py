"""``Session``: load an exported model dir and generate text on ONNX Runtime.

Generation is a prefill of the whole prompt followed by one-token decode steps. The KV cache never
leaves the device (IOBinding of ``OrtValue``s; on CUDA it stays in GPU memory and only the
last-position logits are copied to the host), in one of two layouts:

- ``"buffer"`` (graphs exported with ``--attention gqa``, the default): one buffer per layer and
  kind of ``[1, kv, capacity, head_dim]`` bound as both ``past_key_values.*`` and ``present.*``;
  GroupQueryAttention writes the new keys and values in place and attends over the valid length
  only, so a step costs no copy of the cache. The capacity starts at the prompt + 512 tokens and
  doubles when full (one copy), never past prompt + ``max_new_tokens``;
- ``"concat"`` (any graph): ``present.*`` of one step, ``[1, kv, T, head_dim]``, are fed back as the
  next step's ``past_key_values.*``; the attention op copies the cache into a longer one each step.

Pruned generation (``method="pp"`` or ``"aapp"`` at a sparsity the export built): the level's
prefill graph runs the probe and decides, per layer, the kept heads and channels, and returns the
kept weights as contiguous tensors (``OrtValue``s left on the device); the level's decode graph is
bound to them once and runs every decode step on them, with the same KV buffers. No per-step
gather, no Python loop over layers. Batch 1 per request (a ``Session`` generates one request at a
time). ``method="dense"`` or sparsity 0 runs the dense graph.

aapp-adaptive (``adaptive_path``; None: ``Session.default_adaptive_path``, "dense-prefill" on a model
dir exported with the split prefill, else "restart"). ``"restart"`` runs the level's prefill, which reads the
risk gate before its first pruned layer and the confirmation gate at its end, and starts a flagged
request again on the dense graph. ``"dense-prefill"`` runs the split prefill a model dir exported with
it has (``pruning.split_prefill``): the head (embedding, the unpruned layers, the risk gate), then
either the level's pruned tail (gate below the threshold: AAPP's request, nothing repeated) or the
dense tail, which computes every unit and also picks the decode's kept units from its own
activations. After the dense tail the dense model's greedy first token decides: the refusal's
(``split_prefill.refusal_token``) keeps the request dense; any other decodes at the level on the
dense prompt's K/V (gathered to the kept heads). With a buffer cache the parts write their K/V in
place: the head into the level's buffers (its layers are not pruned), the pruned tail into the
level's, the dense tail into a dense cache sharing the head's buffers and its K/V gathered to the
decode's kept heads into the level's; no K/V goes through the host.

Every graph's session reads the same memory-mapped weights (``weights.SharedWeights``): loading the
pruned graphs adds no copy of the model.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from .binding import Binding
from .chat import TextCodec
from .errors import InputError, ModelDirError
from .manifest import Manifest
from .memory import return_large_blocks_to_os
from . import tensors
from .providers import open_session
from .thread_pool import THREAD_POOLS
from .generation import Chunk, Generation, GenerationParams, GenerationResult, model_defaults, resolve_params, stop_prefix
from .sampling import Sampler
from .weights import SharedWeights

if TYPE_CHECKING:
    from .conversation import Conversation

METHODS = ("dense", "pp", "aapp", "aapp-adaptive")  # aapp_export.choices.RUNTIME_METHODS (a test keeps them equal)
MAX_SPARSITY = 0.9  # aapp_export.choices.MAX_SPARSITY
# aapp_export.choices.ADAPTIVE_THRESHOLD: aapp-adaptive runs dense from this gate on where the calibration
# recorded no threshold of its own (``Session.adaptive_threshold``)
ADAPTIVE_THRESHOLD = 0.5
ADAPTIVE_PATHS = ("restart", "dense-prefill")  # aapp_export.choices.ADAPTIVE_PATHS
CONFIRM_THRESHOLD = 0.5  # aapp_export.choices.CONFIRM_THRESHOLD: ... when the level's confirmation gate agrees


def adaptive_flags(extras: dict[str, Any], threshold: float) -> bool:
    """aapp-adaptive: whether a request the level's AAPP prefill ran goes to dense: its risk gate reaches
    ``threshold`` and, when the level's graph emits one, its confirmation gate ``CONFIRM_THRESHOLD``."""
    if float(tensors.as_float32(extras["risk_gate"])[0]) < threshold:
        return False
    return "confirm_gate" not in extras or float(tensors.as_float32(extras["confirm_gate"])[0]) >= CONFIRM_THRESHOLD

Prompt = str | Sequence[dict[str, Any]] | Sequence[int]


def _prompt_positions(n: int) -> dict[str, np.ndarray]:
    """``attention_mask`` and ``position_ids`` of an ``n``-token prompt on an empty cache."""
    return {"attention_mask": np.ones((1, n), np.int64), "position_ids": np.arange(n, dtype=np.int64)[None, :]}


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} is not valid Unicode ({exc.reason} at character {exc.start}): pass text "
                         "decoded from UTF-8") from exc


def _message(m: dict[str, Any], j: int) -> dict[str, Any]:
    """A chat message with string content (OpenAI-style content parts: the text parts joined)."""
    role, content = m.get("role"), m.get("content")
    if not isinstance(role, str):
        raise InputError(f"message {j} has no string 'role': pass {{'role': 'user', 'content': '...'}}")
    if isinstance(content, list):
        kinds = {p.get("type") if isinstance(p, dict) else type(p).__name__ for p in content}
        if kinds - {"text"} or not all(isinstance(p.get("text"), str) for p in content):
            raise InputError(f"message {j}: content parts of type {sorted(map(str, kinds - {'text'}))} are not "
                             "supported; this model reads text parts ({'type': 'text', 'text': '...'}) only")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise InputError(f"message {j}: 'content' is {type(content).__name__}, not a string or a list of text parts")
    _check_text(content, f"message {j}")
    return {**m, "content": content}


class _State:
    """One generation's progress, filled by ``Session._steps``."""

    def __init__(self, prompt_tokens: int, cached_tokens: int = 0, clipped: int | None = None) -> None:
        self.tokens: list[int] = []
        self.prefill_ms = 0.0
        self.decode_ms: list[float] = []
        self.finish_reason = "length"
        self.text = ""
        self.risk_gate: float | None = None
        self.confirm_gate: float | None = None  # aapp-adaptive: the level's confirmation gate, when it has one
        self.ran_dense = False  # aapp-adaptive: the gates sent the request to the dense graph
        self.dense_prefill: bool | None = None  # aapp-adaptive's dense-prefill path: the prompt ran the dense tail
        self.prompt_tokens, self.cached_tokens, self.clipped = prompt_tokens, cached_tokens, clipped
        self.fed: list[int] = []  # ids whose keys and values are in the cache, in order


@dataclass
class _Graph:
    """One ONNX graph the generation runs: its session, its KV heads per layer, the inputs bound once
    per request (the pruned decode graph's kept weights) and the extra outputs it yields."""

    ort_session: ort.InferenceSession
    kv_heads: list[int]
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> OrtValue (on the device) or numpy (CPU)
    outputs: list[str] = field(default_factory=list)  # allocated by ONNX Runtime, returned by ``_run``
    written: dict[str, ort.OrtValue] = field(default_factory=dict)  # outputs written into given buffers


class _ConcatCache:
    """``present.*`` of one step become the ``past_key_values.*`` of the next (a new binding per step)."""

    def __init__(self, session: "Session", kv_heads: list[int]) -> None:
        self.s = session
        self.past = [(self._empty(h), self._empty(h)) for h in kv_heads]

    def _empty(self, kv_heads: int) -> ort.OrtValue:
        return tensors.empty((1, kv_heads, 0, self.s.head_dim), self.s.dtype, self.s.device)

    def bind_layers(self, b: Binding, layers: range) -> None:
        """Bind ``layers``' pasts and let ONNX Runtime allocate their presents (``update`` keeps them)."""
        for i in layers:
            for past, value, present in zip(self.s._past_names[i], self.past[i], self.s._present_names[i]):
                b.input(past, value)
                b.output(present, self.s.device)

    def binding(self, graph: _Graph, start: int, n: int) -> Binding:
        b = Binding(graph.ort_session)
        self.bind_layers(b, range(len(self.past)))
        self.s._bind_graph_io(b, graph)
        return b

    def update(self, outs: dict[str, ort.OrtValue], layers: range | None = None,
               names: Sequence[tuple[str, str]] | None = None) -> None:
        """Keep a run's presents (or the outputs ``names``, one key/value pair per layer) as ``layers``' K/V."""
        layers = range(len(self.past)) if layers is None else layers
        for i, (k, v) in zip(layers, self.s._present_names[layers.start:layers.stop] if names is None else names):
            self.past[i] = (outs[k], outs[v])

    def targets(self, layers: range, names: Sequence[tuple[str, str]]) -> dict[str, ort.OrtValue]:
        return {}  # no buffers: ``update`` keeps what ONNX Runtime allocated

    def share(self, other: "_ConcatCache", layers: range) -> None:
        """Start ``layers`` from ``other``'s keys and values (the split prefill's head, run once)."""
        for i in layers:
            self.past[i] = other.past[i]

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions (a conversation whose next prompt diverges there)."""
        if self.past and self.past[0][0].shape()[2] > n:
            self.past = [tuple(tensors.from_host(tensors.to_host(v)[:, :, :n], self.s.dtype, self.s.device)
                               for v in pair)
                         for pair in self.past]


class _BufferCache:
    """One ``[1, kv, capacity, head_dim]`` buffer per layer and kind, bound once as both the past input
    and the present output: GroupQueryAttention appends in place (its shared-buffer mode). The
    capacity starts at the prompt plus at most ``KV_BLOCK`` new tokens and doubles (one copy of the
    filled rows) when a step would pass it, up to ``limit``: a long ``max_new_tokens`` does not
    reserve the whole context up front. The prefill and decode graphs of a pruned request bind the
    same buffers (one binding per graph)."""

    KV_BLOCK = 512

    def __init__(self, session: "Session", kv_heads: list[int], prompt: int, limit: int) -> None:
        self.s = session
        self.kv_heads = kv_heads
        self.limit = limit
        self.buffers: list[ort.OrtValue] = []
        self._bindings: dict[int, tuple[int, Binding]] = {}
        self.capacity = 0
        self._allocate(min(limit, prompt + self.KV_BLOCK), filled=0)

    def _allocate(self, capacity: int, filled: int) -> None:
        s, old = self.s, self.buffers
        self.buffers = []
        self._bindings.clear()
        heads = [h for h in self.kv_heads for _ in range(2)]
        for j, h in enumerate(heads):
            shape = [1, h, capacity, s.head_dim]
            if filled:
                host = np.zeros(shape, tensors.HOST_DTYPES[s.dtype])
                host[:, :, :filled] = tensors.to_host(old[j])[:, :, :filled]
                buf = tensors.from_host(host, s.dtype, s.device)
            else:
                buf = tensors.empty(shape, s.dtype, s.device)
            self.buffers.append(buf)
        self.capacity = capacity

    def binding(self, graph: _Graph, start: int, n: int) -> Binding:
        if start + n > self.capacity:
            self._allocate(min(self.limit, max(start + n, 2 * self.capacity)), filled=min(start, self.capacity))
        # ORT keeps the logits it allocated for a binding's first run and refuses another shape later:
        # a graph with logits at every position gets a new binding when the run's length changes
        rows = 1 if self.s.last_logits_only else n
        rows_bound, b = self._bindings.get(id(graph), (None, None))
        if b is None or rows_bound != rows:
            b = Binding(graph.ort_session)
            self.bind_layers(b, range(len(self.kv_heads)))
            self.s._bind_graph_io(b, graph)
            self._bindings[id(graph)] = (rows, b)
        return b

    def bind_layers(self, b: Binding, layers: range) -> None:
        """Bind ``layers``' buffers as both their pasts and their presents (written in place)."""
        s = self.s
        for i in layers:
            for j, (past, present) in enumerate(zip(s._past_names[i], s._present_names[i])):
                b.input(past, self.buffers[2 * i + j])
                b.output(present, value=self.buffers[2 * i + j])

    def update(self, outs: dict[str, ort.OrtValue], layers: range | None = None,
               names: Sequence[tuple[str, str]] | None = None) -> None:
        pass  # written in place

    def targets(self, layers: range, names: Sequence[tuple[str, str]]) -> dict[str, ort.OrtValue]:
        """``layers``' buffers as the outputs ``names`` (one key/value pair per layer) of a run whose
        presents are as long as this cache's capacity: the split prefill's dense tail, whose
        ``present_kept.*`` gather the decode's KV heads from its in-place presents."""
        return {name: self.buffers[2 * i + j] for i, pair in zip(layers, names) for j, name in enumerate(pair)}

    def share(self, other: "_BufferCache", layers: range) -> None:
        """Use ``other``'s buffers for ``layers`` (the split prefill's head wrote them once for both caches)."""
        if other.capacity != self.capacity:
            raise ValueError(f"shared KV buffers of capacity {other.capacity} in a cache of {self.capacity}")
        for i in layers:
            self.buffers[2 * i:2 * i + 2] = other.buffers[2 * i:2 * i + 2]
        self._bindings.clear()

    def truncate(self, n: int) -> None:
        pass  # the next run writes from position n on and attends over its attention mask's length only


class Session:
    """An exported model on one execution provider.

    Thread safety: one ``Session`` may serve several threads at once. Each generation has its own KV
    cache, IO bindings and kept-weight buffers; ONNX Runtime runs the graphs of concurrent requests in
    parallel, each on the session's intra-op thread pool, so they share the cores (a request does not
    wait for another, it runs slower beside it). Opening a pruning level's sessions (first use) is
    serialized. A ``Generation`` or ``Conversation`` belongs to one consumer at a time.

    ``provider``: "auto" (CUDA when usable, else CPU; ``provider_reason`` says why), "cuda" (error
    when CUDA is unusable) or "cpu". ``kv_cache``: "auto" (a preallocated in-place buffer when the
    graph's attention supports it, else concatenation), "buffer" or "concat" (module docstring).
    ``share_weights``: None (default) maps the weights once for every graph when the model dir has
    pruned levels, else lets the dense session load and pre-pack its own copy (faster dense decode on
    CPU); True / False force either (False on a pruning-capable dir: fast dense, and a level's first
    use maps the weights beside the dense copy). ``thread_pool``: "auto" (default), "session" or
    "shared" (``thread_pool`` module: how the graphs' sessions share the CPU's threads; "shared" is
    imposed by ONNX Runtime on every session the process opens after it); ``Session.thread_pool``
    says which one the session got.
    """

    PREFILL_CHUNK = 512  # prompt tokens per dense prefill run: a cancel or a deadline waits at most one chunk

    def __init__(self, model_dir: str | Path, provider: str = "auto", *, threads: int | None = None,
                 verify: str = "fast", kv_cache: str = "auto", share_weights: bool | None = None,
                 thread_pool: str = "auto") -> None:
        self.manifest = Manifest.load(model_dir, verify=verify)
        m = self.manifest
        g = m.graph
        gqa = g.get("attention") == "gqa"  # GroupQueryAttention: appends in place to a shared past/present buffer
        if thread_pool not in THREAD_POOLS:
            raise InputError(f"thread_pool={thread_pool!r} is not one of {', '.join(THREAD_POOLS)}")
        if kv_cache not in ("auto", "buffer", "concat"):
            raise InputError(f"kv_cache={kv_cache!r} is not one of auto, buffer, concat")
        if kv_cache == "buffer" and not gqa:
            raise InputError(f"kv_cache='buffer' needs a graph exported with --attention gqa; {m.directory} uses "
                             f"{g.get('attention', 'onnx')!r} attention: pass kv_cache='concat' or re-export")
        self.kv_cache = ("buffer" if gqa else "concat") if kv_cache == "auto" else kv_cache
        return_large_blocks_to_os()
        # shared: every graph reads one memory map of the weights (what the pruned levels need to stay
        # within their memory budget), which ONNX Runtime cannot pre-pack; own: the dense session loads and
        # pre-packs its copy (dense decode measured 9-15% faster on CPU, 120M shape), the right choice without levels
        runnable = [e for e in (m.data.get("pruning") or {}).get("levels", {}).values()
                    if not m.absent() & {e.get("prefill"), e.get("decode")}]
        if share_weights is not None and not isinstance(share_weights, bool):
            raise InputError(f"share_weights={share_weights!r} is not True, False or None (None: share when the "
                             "model dir has pruned levels)")
        self.share_weights = bool(runnable) if share_weights is None else share_weights
        self.shared_weights: SharedWeights | None = None
        if self.share_weights:
            self.shared_weights = SharedWeights(m.directory, m.data.get("shared_weights") or {}, m.absent())
        self._pools = dict(thread_pool=thread_pool, several_graphs=bool(runnable))
        self.ort_session, choice = open_session(m.model_path, provider, threads, self.shared_weights, **self._pools)
        # what the graphs got: the process's shared pool (asked for, or imposed by ORT) or the setting asked
        self.thread_pool = thread_pool if self.ort_session.get_session_options().use_per_session_threads else "shared"
        self.provider, self.provider_reason = choice.name, choice.reason
        if self.provider == "cuda" and m.dtype == "fp32" and gqa:
            self.provider_reason += ("; GroupQueryAttention has no fp32 CUDA kernel, so ONNX Runtime places those "
                                     "nodes on CPU: export with --dtype fp16 (or --attention onnx) for CUDA")
        self.device = "cuda" if self.provider == "cuda" else "cpu"
        tok = m.data.get("tokenizer", {})
        self.codec = TextCodec(m.directory, tok.get("file", "tokenizer.json"), tok.get("chat_template"),
                               tok.get("special_tokens", {}))
        self.num_layers = int(m.dims["num_layers"])
        self.kv_heads = list(m.dims["num_kv_heads"])
        self.head_dim = int(m.dims["head_dim"])
        self.context_length = int(m.dims["max_position_embeddings"])
        self.eos_ids = set(m.tokens.get("eos", []))
        self.dtype = m.dtype if m.dtype in tensors.ELEMENT_TYPES else "fp32"  # of the graphs' KV cache and weights
        self.host_dtype = tensors.HOST_DTYPES[self.dtype]  # numpy dtype of host copies (bf16: raw uint16)
        self._past_names = [(g["past_key"].format(i=i), g["past_value"].format(i=i)) for i in range(self.num_layers)]
        self._present_names = [(g["present_key"].format(i=i), g["present_value"].format(i=i))
                               for i in range(self.num_layers)]
        self._logits_name = g["logits"]
        self.last_logits_only = bool(g.get("last_logits_only", True))  # else logits of every position
        self.threads = threads  # intra-op threads of every graph this session opens (None: ONNX Runtime's)
        self._check_io(self.ort_session, m.model_path, self.kv_heads)
        self._dense = _Graph(self.ort_session, self.kv_heads)
        # a prefill's arena chunks (a pruned one's include the kept-weight copies) are freed when it ends:
        # each session has its own arena, which would otherwise keep its largest run resident
        self._after_prefill = ort.RunOptions()
        self._after_prefill.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                                 "gpu:0" if self.device == "cuda" else "cpu:0")
        self.pruning: dict[str, Any] = m.data.get("pruning") or {}
        self._levels: dict[str, tuple[_Graph, _Graph]] = {}  # level key -> (prefill, decode), opened on first use
        self._splits: dict[str, _Graph] = {}  # split prefill part file -> its session, opened on first use
        self._kept_free: dict[str, dict[str, ort.OrtValue]] = {}
        self._kept_lock = threading.Lock()
        self._open_lock = threading.Lock()  # one thread opens a level's sessions, the others wait for them
        self.defaults = model_defaults(self._generation_config())

    def _generation_config(self) -> dict[str, Any]:
        path = self.manifest.directory / "generation_config.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirError(f"{path}: not readable JSON ({exc}); fix or delete it (it only holds the model's "
                                "default sampling settings)") from exc
        if not isinstance(data, dict):
            raise ModelDirError(f"{path}: not a JSON object; fix or delete it")
        return data

    def _check_io(self, sess: ort.InferenceSession, path: Path, kv_heads: list[int]) -> None:
        """The graph's KV inputs against the manifest's dims (a manifest edited or from another export)."""
        inputs = {i.name: i.shape for i in sess.get_inputs()}
        for i, (key, value) in enumerate(self._past_names):
            for name in (key, value):
                shape = inputs.get(name)
                if shape is None or len(shape) != 4 or shape[1] != kv_heads[i] or shape[3] != self.head_dim:
                    raise ModelDirError(f"{self.manifest.directory / 'aapp.json'}: layer {i} has {kv_heads[i]} KV heads "
                                        f"of {self.head_dim} but {path.name} takes {name} {shape}; the manifest does "
                                        "not belong to this graph: re-export the model")
        positions = sess.get_modelmeta().custom_metadata_map.get("aapp.max_position_embeddings")
        if positions is not None and positions.isdigit() and int(positions) != self.context_length:
            raise ModelDirError(f"{self.manifest.directory / 'aapp.json'}: max_position_embeddings "
                                f"{self.context_length} but {path.name} was built for {positions} positions; the "
                                "manifest does not belong to this graph: re-export the model")
        logits = {o.name: o.shape for o in sess.get_outputs()}.get(self._logits_name)
        vocab = int(self.manifest.dims["vocab_size"])
        if logits is None or (isinstance(logits[-1], int) and logits[-1] != vocab):
            raise ModelDirError(f"{self.manifest.directory / 'aapp.json'}: vocab_size {vocab} but {path.name} outputs "
                                f"{self._logits_name} {logits}; the manifest does not belong to this graph: re-export "
                                "the model")

    # -- inputs ---------------------------------------------------------------------------------
    def tokenize(self, prompt: Prompt, chat: bool | None = None) -> list[int]:
        """Token ids of a prompt: a string (chat-formatted when the model has a template, unless
        ``chat=False``), a list of chat messages (``content`` a string, or OpenAI-style parts whose
        ``text`` parts are joined), or a list of token ids (used as is)."""
        if chat is not None and not isinstance(chat, bool):
            raise InputError(f"chat={chat!r} is not True, False or None")
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InputError("the prompt is empty: pass some text, chat messages or token ids")
            _check_text(prompt, "the prompt")
            use_chat = self.codec.template is not None if chat is None else chat
            ids = (self.codec.encode_chat([{"role": "user", "content": prompt}]) if use_chat
                   else self.codec.encode(prompt))
        elif not isinstance(prompt, (list, tuple)):
            raise InputError(f"prompt of type {type(prompt).__name__} is not a string, a list of "
                             "{'role','content'} messages, or a list of token ids (bytes: decode them to str first)")
        elif len(prompt) == 0:
            raise InputError("the prompt is empty: pass some text, chat messages or token ids")
        elif all(isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)) for t in prompt):
            ids = [int(t) for t in prompt]
            vocab = int(self.manifest.dims["vocab_size"])
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise InputError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        elif all(isinstance(m, dict) for m in prompt):
            ids = self.codec.encode_chat([_message(m, j) for j, m in enumerate(prompt)])
        else:
            raise InputError("prompt must be a string, a list of {'role','content'} messages, or a list of token ids")
        if len(ids) >= self.context_length:
            raise InputError(f"the prompt has {len(ids)} tokens but the model's context is {self.context_length}: "
                             "shorten the prompt")
        return ids

    # -- pruning levels ---------------------------------------------------------------------------
    @property
    def levels(self) -> list[float]:
        """Sparsity levels whose pruned graphs this model dir has (empty: dense only)."""
        return sorted(float(v["sparsity"]) for v in self.pruning.get("levels", {}).values())

    def pruned_level(self, method: str, sparsity: float) -> tuple[str, dict[str, Any]] | None:
        """The pruned graphs a request with ``method`` at ``sparsity`` runs: ``(key, manifest entry)``, or
        None for dense. A method or sparsity this model dir cannot run raises the ``InputError`` that
        ``generate`` would, before any work (so a caller can check a whole job first)."""
        if not isinstance(method, str) or method not in METHODS:
            raise InputError(f"method={method!r} is not one of {', '.join(METHODS)}")
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) or \
                not 0 <= sparsity <= MAX_SPARSITY:
            raise InputError(f"sparsity={sparsity!r} is outside [0, {MAX_SPARSITY}]: pass a fraction such as 0.4")
        if method == "dense":
            if sparsity:
                raise InputError(f"method='dense' prunes nothing but sparsity={sparsity}: pass method='pp' or "
                                 "'aapp' to prune, or sparsity=0")
            return None
        if sparsity == 0:
            return None
        levels = self.pruning.get("levels") or {}
        if not levels:
            raise InputError(f"{self.manifest.directory} has no pruned graphs (exported before pruning support, or "
                             f"with --no-calibrate): method {method!r} needs a re-export with calibration, e.g. "
                             f"`aapp-export --model MODEL --out {self.manifest.directory}/model.onnx`")
        for key, entry in levels.items():
            if abs(float(entry["sparsity"]) - float(sparsity)) < 1e-6:
                return key, entry
        built = ", ".join(f"{v:g}" for v in self.levels)
        raise InputError(f"sparsity {sparsity} was not built into {self.manifest.directory} (built: {built}); pass one "
                         f"of those, or re-export with --levels {sparsity:g},...")

    def _level_graphs(self, key: str, entry: dict[str, Any]) -> tuple[_Graph, _Graph]:
        with self._open_lock:
            return self._open_level(key, entry)

    def _open_level(self, key: str, entry: dict[str, Any]) -> tuple[_Graph, _Graph]:
        if key not in self._levels:
            history = (self.pruning.get("history") or {}).get("file", "calibration.safetensors")
            missing = sorted(self.manifest.absent() & {entry["prefill"], entry["decode"], history})
            if missing:
                raise ModelDirError(f"{self.manifest.directory} was shipped without {', '.join(missing)}, which "
                                    f"sparsity {entry['sparsity']:g} needs: copy them from the export, or run "
                                    "method='dense'")
            if self.shared_weights is None:  # share_weights=False: the dense session keeps its own copy
                m = self.manifest
                self.shared_weights = SharedWeights(m.directory, m.data.get("shared_weights") or {}, m.absent())
            graphs = []
            for mode in ("prefill", "decode"):
                path = self.manifest.directory / entry[mode]
                # a prefill runs once per request: its idle threads must not spin beside the decode's
                sess, _ = open_session(path, self.provider, self.threads, self.shared_weights, spin=mode == "decode",
                                       **self._pools)
                self._check_io(sess, path, list(entry["kv_heads"]))
                graphs.append(_Graph(sess, list(entry["kv_heads"])))
            prefill, decode = graphs
            prefill.outputs = [o.name for o in prefill.ort_session.get_outputs()
                               if o.name in ("risk_gate", "confirm_gate")
                               or o.name.startswith(("kept_heads.", "kept_channels."))]
            self._levels[key] = (prefill, decode)
        return self._levels[key]

    def _request_graphs(self, level: tuple[str, dict[str, Any]], method: str) -> tuple[_Graph, _Graph]:
        """This request's prefill (told the method) and decode graphs (its kept weights are bound after prefill)."""
        prefill, decode = self._level_graphs(*level)
        aapp = np.asarray([1.0 if method in ("aapp", "aapp-adaptive") else 0.0], np.float32)
        # the kept weights: buffers outside the sessions' arenas, written by the prefill and read by every
        # decode step; the last finished request's set is reused by the next one at the same level
        with self._kept_lock:
            kept = self._kept_free.pop(level[0], None)
            self._kept_free.clear()  # at most one set held between requests
        if kept is None:
            kept = {i.name: tensors.empty(i.shape, self.dtype, self.device)
                    for i in decode.ort_session.get_inputs() if i.name.startswith("kept.")}
        return (_Graph(prefill.ort_session, prefill.kv_heads, {"aapp": aapp}, prefill.outputs, kept),
                _Graph(decode.ort_session, decode.kv_heads, dict(kept)))

    def _release(self, level: tuple[str, dict[str, Any]] | None, prefill: _Graph) -> None:
        """A pruned request is over: its kept-weight buffers may serve the next one."""
        if level is not None:
            with self._kept_lock:
                self._kept_free = {level[0]: prefill.written}

    # -- one graph run ------------------------------------------------------------------------------
    def _bind_graph_io(self, b: Binding, graph: _Graph) -> None:
        """Bind a graph's per-request inputs and its outputs besides the KV pairs: logits, ``graph.outputs``
        (allocated on the device) and ``graph.written`` (into the given buffers)."""
        for name, value in graph.inputs.items():
            b.input(name, value)
        b.output(self._logits_name, self.device)
        for name in graph.outputs:
            b.output(name, self.device)
        for name, value in graph.written.items():
            b.output(name, value=value)

    def _new_cache(self, kv_heads: list[int], prompt: int, max_new_tokens: int) -> "_ConcatCache | _BufferCache":
        if self.kv_cache == "buffer":
            return _BufferCache(self, kv_heads, prompt, prompt + max_new_tokens)
        return _ConcatCache(self, kv_heads)

    def _run(self, graph: _Graph, ids: list[int], start: int, cache: "_ConcatCache | _BufferCache",
             every_position: bool = False) -> tuple[np.ndarray, dict[str, ort.OrtValue]]:
        """Run ``ids`` at positions ``start..`` through ``cache``; returns last-position logits [V] (or the
        graph's logits of every position it outputs, [S or 1, V]) and the graph's extra outputs by name."""
        n = len(ids)
        b = cache.binding(graph, start, n)
        b.input("input_ids", np.asarray([ids], dtype=np.int64))
        b.input("attention_mask", np.ones((1, start + n), dtype=np.int64))
        b.input("position_ids", np.arange(start, start + n, dtype=np.int64)[None, :])
        outs = b.run(self._after_prefill if n > 1 else None)
        cache.update(outs)
        extras = {name: outs[name] for name in graph.outputs}
        logits = tensors.as_float32(outs[self._logits_name])[0]
        return (logits if every_position else logits[-1]).astype(np.float32, copy=False), extras

    def logits(self, token_ids: Sequence[int], *, sparsity: float = 0.0, method: str = "dense",
               every_position: bool = False, adaptive_threshold: float | None = None,
               adaptive_path: str | None = None) -> np.ndarray:
        """Logits of a prefill over ``token_ids`` (dense, or the pruned prefill of ``method`` at ``sparsity``):
        the last position's ``[vocab]``, or with ``every_position`` ``[len(token_ids), vocab]``, which needs
        a model exported with ``--all-logits``. aapp-adaptive: a prompt its gates flag gets the dense logits
        (``adaptive_path="dense-prefill"``: the risk gate alone, read by the split prefill's head)."""
        if every_position and self.last_logits_only:
            raise InputError(f"{self.manifest.directory} was exported with the last position's logits only: "
                             "re-export with --all-logits for every position's")
        level = self.pruned_level(method, sparsity)
        ids = self.tokenize(list(token_ids))
        threshold = self.adaptive_threshold if adaptive_threshold is None else adaptive_threshold
        adaptive_path = self.resolve_adaptive_path(adaptive_path)
        if method == "aapp-adaptive" and level is not None and adaptive_path == "dense-prefill":
            if not self.split_prefill:
                raise InputError(f"{self.manifest.directory} has no split prefill: pass adaptive_path='restart'")
            if float(tensors.as_float32(self._run_head(ids)["risk_gate"])[0]) >= threshold:
                return self.logits(ids, every_position=every_position)
            method = "aapp"  # below the gate: AAPP's prefill (the pruned tail computes the same logits)
        graph = self._dense if level is None else self._request_graphs(level, method)[0]
        try:
            logits, extras = self._run(graph, ids, 0, self._new_cache(graph.kv_heads, len(ids), 0), every_position)
        finally:
            self._release(level, graph)
        if method == "aapp-adaptive" and level is not None and adaptive_flags(extras, threshold):
            return self.logits(ids, every_position=every_position)  # the gates send this request to dense
        return logits

    def decisions(self, prompt: Prompt, *, sparsity: float, method: str = "aapp", chat: bool | None = None
                  ) -> dict[str, Any]:
        """What the pruned prefill decides for ``prompt``: kept query heads and MLP channels per pruned layer,
        the risk gate, and the last-position logits (for agreement checks against the reference)."""
        found = self.pruned_level(method, sparsity)
        if found is None:
            raise InputError("decisions() needs a pruned run: pass method='pp' or 'aapp' and a built sparsity > 0")
        ids = self.tokenize(prompt, chat)
        prefill, _ = self._request_graphs(found, method)
        try:
            logits, extras = self._run(prefill, ids, 0, self._new_cache(prefill.kv_heads, len(ids), 0))
        finally:
            self._release(found, prefill)
        layers = sorted(int(k.split(".")[1]) for k in extras if k.startswith("kept_heads."))
        return {"heads": {i: extras[f"kept_heads.{i}"].numpy().tolist() for i in layers},
                "channels": {i: extras[f"kept_channels.{i}"].numpy().tolist() for i in layers},
                "risk_gate": float(tensors.as_float32(extras["risk_gate"])[0]) if "risk_gate" in extras else None,
                "confirm_gate": float(tensors.as_float32(extras["confirm_gate"])[0]) if "confirm_gate" in extras
                else None,
                "logits": logits}

    # -- generation ------------------------------------------------------------------------------
    def params(self, **given: Any) -> GenerationParams:
        """Checked ``GenerationParams``: the arguments given (not None), else ``generation_config.json``'s
        defaults (``generation.model_defaults``), else greedy with 64 new tokens."""
        return resolve_params(self.defaults, **given)

    def _clip(self, prompt_tokens: int, max_new_tokens: int) -> tuple[int, int | None]:
        """``max_new_tokens`` within the context: (the count used, the count when it was lowered)."""
        room = self.context_length - prompt_tokens
        return (room, room) if max_new_tokens > room else (max_new_tokens, None)

    def _prefill(self, graph: _Graph, ids: list[int], start: int, cache: "_ConcatCache | _BufferCache",
                 gen: Generation) -> tuple[np.ndarray | None, dict[str, ort.OrtValue], str | None]:
        """Run ``ids`` from position ``start``: a dense or decode graph in chunks of ``PREFILL_CHUNK``
        tokens, checking ``gen`` between chunks; a pruned prefill graph in one run (its probe decides
        from the whole prompt). Returns (last logits or None when stopped, extra outputs, stop reason)."""
        pruned_prefill = bool(graph.outputs)
        step = len(ids) if pruned_prefill else self.PREFILL_CHUNK
        logits, extras = None, {}
        for i in range(0, len(ids), step):
            reason = gen.stop_reason()
            if reason:
                return None, extras, reason
            logits, extras = self._run(graph, ids[i:i + step], start + i, cache)
        return logits, extras, None

    def _steps(self, ids: list[int], params: GenerationParams, gen: Generation, state: _State,
               graph: _Graph, decode: _Graph, cache: "_ConcatCache | _BufferCache", cached: Sequence[int] = (),
               prefilled: tuple[np.ndarray, dict[str, ort.OrtValue]] | None = None, prefill_ms: float = 0.0
               ) -> Iterator[Chunk]:
        """Prefill ``ids`` after the ``cached`` ids whose keys and values the cache holds, with ``graph``,
        then decode with ``decode``; yields chunks, the last with the finish reason, usage and timings.
        ``prefilled``: the prefill's (logits, extra outputs) when it already ran into ``cache``;
        ``prefill_ms``: time spent before this call that counts as prefill."""
        sampler = Sampler(params)
        history = [*cached, *ids] if params.repetition_penalty != 1.0 else []  # the whole prompt
        start = len(cached)
        emitted, pending = "", []
        pos, step_ids = start, ids
        stop = params.stop
        for step in range(state.clipped if state.clipped is not None else params.max_new_tokens):
            t0 = time.perf_counter()
            if step == 0:
                logits, extras, reason = (*prefilled, None) if prefilled else self._prefill(graph, step_ids, pos,
                                                                                             cache, gen)
            else:
                reason = gen.stop_reason()
                if not reason:
                    logits, extras = self._run(graph, step_ids, pos, cache)
            if reason:
                state.finish_reason = reason
                break
            state.fed += step_ids
            if graph is not decode:  # the prefill decided and wrote the kept weights the decode graph reads
                state.risk_gate = float(tensors.as_float32(extras["risk_gate"])[0]) if "risk_gate" in extras else None
                graph = decode
            if not np.isfinite(logits).all():
                raise ModelDirError(f"{self.manifest.directory}: the model's logits are not finite (NaN or inf) at "
                                    f"step {step}; its weights are likely damaged: re-export from a good checkpoint "
                                    "(or, for fp16, export fp32)")
            token = sampler(logits, history)
            elapsed = (time.perf_counter() - t0) * 1000
            if step == 0:
                state.prefill_ms = elapsed + prefill_ms
            else:
                state.decode_ms.append(elapsed)
            pos += len(step_ids)
            step_ids = [token]
            if token in self.eos_ids and not params.ignore_eos:
                state.finish_reason = "eos"
                break
            state.tokens.append(token)
            pending.append(token)
            if history:
                history.append(token)
            text = self.codec.decode(state.tokens)
            hit = min((text.find(s) for s in stop if s in text), default=-1)
            if hit >= 0:
                state.text, state.finish_reason = text[:hit], "stop"
                break
            state.text = text
            safe = len(text) - stop_prefix(text, stop)  # a stop string may be starting: hold it back
            if not text.endswith("\ufffd") and safe > len(emitted):  # and half a UTF-8 character
                yield Chunk(text[len(emitted):safe], pending)
                emitted, pending = text[:safe], []
        # the end: what was held back is text after all (or was cut at the stop string)
        result = self._result(state)
        yield Chunk(state.text[len(emitted):], pending, state.finish_reason, result.usage, result.timings)

    def _adaptive_steps(self, ids: list[int], params: GenerationParams, gen: Generation, state: _State,
                        level: tuple[str, dict[str, Any]], n: int, threshold: float) -> Iterator[Chunk]:
        """aapp-adaptive: the level's AAPP prefill runs, computing the risk gate before its first pruned
        layer and (when the level has one) the confirmation gate on its final residual stream. Unless
        both flag it (``adaptive_flags``) the request goes on from that prefill at the level; else it
        starts again on the dense graph (the pruned prefill is the price of asking, which the reference
        and ``evaluate_onnx`` both count)."""
        graph, decode = self._request_graphs(level, "aapp-adaptive")
        try:
            t0 = time.perf_counter()
            cache = self._new_cache(graph.kv_heads, len(ids), n)
            logits, extras, reason = self._prefill(graph, ids, 0, cache, gen)
            spent = (time.perf_counter() - t0) * 1000
            if reason:
                state.finish_reason = reason
                yield Chunk("", [], reason, self._result(state).usage, self._result(state).timings)
                return
            state.risk_gate = float(tensors.as_float32(extras["risk_gate"])[0])
            if "confirm_gate" in extras:
                state.confirm_gate = float(tensors.as_float32(extras["confirm_gate"])[0])
            if not adaptive_flags(extras, threshold):
                yield from self._steps(ids, params, gen, state, graph, decode, cache, prefilled=(logits, extras),
                                       prefill_ms=spent)
                return
        finally:
            self._release(level, graph)
        state.ran_dense = True
        yield from self._steps(ids, params, gen, state, self._dense, self._dense,
                               self._new_cache(self._dense.kv_heads, len(ids), n), prefill_ms=spent)

    # -- aapp-adaptive's dense-prefill path: the split prefill --------------------------------------------
    @property
    def default_adaptive_path(self) -> str:
        """aapp-adaptive's path when a call names none: "dense-prefill" where the export wrote the split
        prefill and the model dir was shipped with its head (a flagged harmless request then costs a dense
        prefill, not a second request), else "restart"."""
        split = self.split_prefill
        return "dense-prefill" if split and split["head"] not in self.manifest.absent() else "restart"

    @property
    def adaptive_threshold(self) -> float:
        """aapp-adaptive's risk gate from which a request runs dense when a call names none: the calibration's
        (``pruning.risk_gate.adaptive_threshold``, read on its held-out check split), else ``ADAPTIVE_THRESHOLD``."""
        return float((self.pruning.get("risk_gate") or {}).get("adaptive_threshold", ADAPTIVE_THRESHOLD))

    def resolve_adaptive_path(self, name: str | None) -> str:
        """``name``, or the model dir's default when None; an unknown path is an InputError."""
        name = self.default_adaptive_path if name is None else name
        if name not in ADAPTIVE_PATHS:
            raise InputError(f"adaptive_path={name!r} is not one of {', '.join(ADAPTIVE_PATHS)}")
        return name

    @property
    def split_prefill(self) -> dict[str, Any] | None:
        """The manifest's split prefill (aapp-adaptive's dense-prefill path), or None when not exported."""
        return self.pruning.get("split_prefill")

    def _split_part(self, name: str) -> _Graph:
        """One part of the split prefill, opened on first use; its ``outputs``: all but its layers' presents."""
        with self._open_lock:
            if name not in self._splits:
                history = (self.pruning.get("history") or {}).get("file", "calibration.safetensors")
                missing = sorted(self.manifest.absent() & {name, history})
                if missing:
                    raise ModelDirError(f"{self.manifest.directory} was shipped without {', '.join(missing)}, which "
                                        "adaptive_path='dense-prefill' needs: copy them from the export, or pass "
                                        "adaptive_path='restart'")
                if self.shared_weights is None:
                    m = self.manifest
                    self.shared_weights = SharedWeights(m.directory, m.data.get("shared_weights") or {}, m.absent())
                sess, _ = open_session(self.manifest.directory / name, self.provider, self.threads,
                                       self.shared_weights, spin=False, **self._pools)
                presents = {n for pair in self._present_names for n in pair}
                self._splits[name] = _Graph(sess, [], outputs=[o.name for o in sess.get_outputs()
                                                               if o.name not in presents])
        return self._splits[name]

    def _run_part(self, part: _Graph, feeds: dict[str, Any], layers: range, cache: "_ConcatCache | _BufferCache",
                  written: dict[str, ort.OrtValue]) -> dict[str, ort.OrtValue]:
        """One part of the split prefill over the prompt: its layers' keys and values into ``cache`` (in place
        in a ``_BufferCache``), its other outputs by name (``written`` into the given buffers, the rest
        allocated on the device)."""
        b = Binding(part.ort_session)
        cache.bind_layers(b, layers)
        for name, value in feeds.items():
            b.input(name, value)
        unknown = written.keys() - set(part.outputs)
        if unknown:  # a kept-weight buffer the part does not write would hold another request's weights
            raise ModelDirError(f"a split prefill part of {self.manifest.directory} has no output "
                                f"{', '.join(sorted(unknown))}: re-export the model dir (its split prefill and "
                                "levels disagree)")
        for name in part.outputs:
            b.output(name, self.device, written.get(name))
        outs = b.run(self._after_prefill)
        cache.update(outs, layers)
        return outs

    def _run_head(self, ids: list[int], cache: "_ConcatCache | _BufferCache | None" = None
                  ) -> dict[str, ort.OrtValue]:
        """The split prefill's head over the prompt ``ids``: ``risk_gate`` and ``hidden_states``; the keys
        and values of its (unpruned) layers go into ``cache`` (None: a throwaway one)."""
        feeds = {"input_ids": np.asarray([ids], np.int64), **_prompt_positions(len(ids))}
        return self._run_part(self._split_part(self.split_prefill["head"]), feeds,
                              range(int(self.split_prefill["layers"])),
                              _ConcatCache(self, self.kv_heads) if cache is None else cache, {})

    def _dense_prefill_steps(self, ids: list[int], params: GenerationParams, gen: Generation, state: _State,
                             level: tuple[str, dict[str, Any]], n: int, threshold: float) -> Iterator[Chunk]:
        """aapp-adaptive, dense-prefill path (module docstring): head, then the pruned or the dense tail, then
        the decode the dense model's first token picks. Nothing runs twice. The head writes its layers'
        keys and values once into the level's cache (those layers are not pruned); a flagged request's
        dense tail writes the rest into a dense cache sharing the head's layers, and the decode's kept
        heads (``present_kept.*``) into the level's. No K/V goes through the host."""
        split, entry = self.split_prefill, level[1]
        k, level_kv = int(split["layers"]), list(entry["kv_heads"])
        if level_kv[:k] != self.kv_heads[:k]:
            raise ModelDirError(f"{self.manifest.directory}: level {level[0]} prunes KV heads below the split "
                                f"prefill's layer {k}: re-export the model dir (its split prefill and levels disagree)")
        prefill, decode = self._request_graphs(level, "aapp-adaptive")  # the kept-weight buffers and the decode
        try:
            t0 = time.perf_counter()
            reason = gen.stop_reason()
            if reason:
                state.finish_reason = reason
                yield Chunk("", [], reason, self._result(state).usage, self._result(state).timings)
                return
            cache = self._new_cache(level_kv, len(ids), n)
            head = self._run_head(ids, cache)
            state.risk_gate = float(tensors.as_float32(head["risk_gate"])[0])
            state.dense_prefill = state.risk_gate >= threshold
            feeds = {"hidden_states": head["hidden_states"], **_prompt_positions(len(ids))}
            tail_cache, written, rest = cache, dict(prefill.written), range(k, self.num_layers)
            kept = [(f"present_kept.{i}.key", f"present_kept.{i}.value") for i in rest]
            if state.dense_prefill:  # every head into a dense cache; the decode's kept heads into the level's
                tail_cache = self._new_cache(self.kv_heads, len(ids), n)
                tail_cache.share(cache, range(k))
                written.update(cache.targets(rest, kept))
            else:
                feeds["aapp"] = prefill.inputs["aapp"]
            tail = self._run_part(self._split_part(entry["dense_tail" if state.dense_prefill else "tail"]), feeds,
                                  rest, tail_cache, written)
            logits = tensors.as_float32(tail[self._logits_name])[0][-1].astype(np.float32, copy=False)
            refusing = state.dense_prefill and int(np.argmax(logits)) == int(split["refusal_token"])
            if refusing:  # the dense model opens its refusal: the request stays dense
                state.ran_dense = True
                cache, graph, decode = tail_cache, self._dense, self._dense
            else:
                if state.dense_prefill:  # the decode's kept heads, picked by the dense tail (a buffer: written)
                    cache.update(tail, rest, kept)
                graph = prefill
            # the decode below holds the request's one cache: a refusal frees the level's buffers of the
            # pruned layers (the dense tail's present_kept) and an answer the dense cache's
            gate = head["risk_gate"]
            del head, feeds, tail, written, tail_cache
            spent = (time.perf_counter() - t0) * 1000
            yield from self._steps(ids, params, gen, state, graph, decode, cache,
                                   prefilled=(logits, {"risk_gate": gate}), prefill_ms=spent)
        finally:
            self._release(level, prefill)

    def _result(self, state: _State, level: tuple[str, dict[str, Any]] | None = None, method: str = "dense"
                ) -> GenerationResult:
        pruned = level is not None and not state.ran_dense
        return GenerationResult(state.text, list(state.tokens), state.prompt_tokens, self.provider,
                                state.finish_reason, state.prefill_ms, list(state.decode_ms),
                                method if pruned or method == "aapp-adaptive" else "dense",
                                float(level[1]["sparsity"]) if pruned else 0.0,
                                float(level[1].get("kept_fraction", 1.0)) if pruned else 1.0, state.risk_gate,
                                state.clipped, state.cached_tokens, confirm_gate=state.confirm_gate,
                                dense_prefill=state.dense_prefill)

    def start(self, prompt: Prompt, max_new_tokens: int | None = None, *, temperature: float | None = None,
              top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
              repetition_penalty: float | None = None, stop: str | Sequence[str] | None = None,
              seed: int | None = None, chat: bool | None = None, ignore_eos: bool = False,
              sparsity: float = 0.0, method: str = "dense", timeout_s: float | None = None,
              adaptive_threshold: float | None = None, adaptive_path: str | None = None) -> Generation:
        """A ``Generation`` of ``prompt``, run as it is consumed: iterate it for ``Chunk``s, call
        ``result()``, ``cancel()`` it from any thread. Arguments left None take the model's
        ``generation_config.json`` defaults (``Session.defaults``); ``temperature=0`` is greedy.

        ``method``: "dense", "pp" (Probe Pruning), "aapp" (PP with the protected alignment units
        forced in by the risk gate) or "aapp-adaptive" (AAPP whose risk gate also picks the sparsity: a
        request whose gate reaches ``adaptive_threshold`` runs dense); ``sparsity``: a level the export
        built (``Session.levels``); 0 runs the dense graph whatever the method. ``adaptive_threshold``:
        aapp-adaptive's gate from which a request runs dense (None: the calibration's,
        ``Session.adaptive_threshold``);
        ``adaptive_path``: "restart" or "dense-prefill" (module docstring; the latter needs a model dir
        exported with the split prefill, ``Session.split_prefill``); None: ``Session.default_adaptive_path``.
        ``timeout_s``: a deadline from the first step;
        ``ignore_eos`` keeps going past end-of-sequence tokens (benchmarks, parity checks)."""
        level = self.pruned_level(method, sparsity)
        if adaptive_threshold is not None and (isinstance(adaptive_threshold, bool) or
                                               not isinstance(adaptive_threshold, (int, float)) or
                                               not 0 <= adaptive_threshold <= 1):
            raise InputError(f"adaptive_threshold={adaptive_threshold!r} is not a gate value in [0, 1]")
        threshold = self.adaptive_threshold if adaptive_threshold is None else float(adaptive_threshold)
        adaptive_path = self.resolve_adaptive_path(adaptive_path)
        if adaptive_path == "dense-prefill" and method == "aapp-adaptive" and level is not None \
                and not self.split_prefill:
            raise InputError(f"{self.manifest.directory} has no split prefill (exported before it, or without the "
                             "causal check's refusal token): pass adaptive_path='restart', or re-export")
        params = self.params(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_p=min_p, repetition_penalty=repetition_penalty, stop=stop, seed=seed,
                             ignore_eos=ignore_eos, timeout_s=timeout_s)
        ids = self.tokenize(prompt, chat)
        n, clipped = self._clip(len(ids), params.max_new_tokens)
        state = _State(len(ids), clipped=clipped)

        def run(gen: Generation) -> Iterator[Chunk]:
            if method == "aapp-adaptive" and level is not None:
                steps = self._dense_prefill_steps if adaptive_path == "dense-prefill" else self._adaptive_steps
                yield from steps(ids, params, gen, state, level, n, threshold)
                return
            graph, decode = (self._dense, self._dense) if level is None else self._request_graphs(level, method)
            try:
                yield from self._steps(ids, params, gen, state, graph, decode,
                                       self._new_cache(graph.kv_heads, len(ids), n))
            finally:
                self._release(level, graph)

        return Generation(run, params.timeout_s, lambda: self._result(state, level, method))

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None, **kwargs: Any) -> Iterator[Chunk]:
        """Yield ``Chunk``s as the text is generated (arguments as ``start``); their joined text equals
        ``generate(...).text`` for the same arguments, and the last chunk has the finish reason,
        usage and timings."""
        return iter(self.start(prompt, max_new_tokens, **kwargs))

    def generate(self, prompt: Prompt, max_new_tokens: int | None = None, **kwargs: Any) -> GenerationResult:
        """Generate up to ``max_new_tokens`` new tokens (arguments as ``start``)."""
        return self.start(prompt, max_new_tokens, **kwargs).result()

    def chat(self, messages: Sequence[dict[str, Any]] = (), *, sparsity: float = 0.0, method: str = "dense",
             overflow: str = "error") -> "Conversation":
        """A multi-turn conversation that keeps the KV cache of its turns (``conversation.Conversation``)."""
        from .conversation import Conversation

        return Conversation(self, messages, sparsity=sparsity, method=method, overflow=overflow)
