"""Export a checkpoint to a model dir: ONNX graph + external weights, tokenizer, chat template, manifest.

Everything is written into a temporary sibling directory that is renamed over the target only at
the end, so a crash never leaves a half-written model dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx

from aapp_runtime.manifest import write_manifest

from . import __version__
from .checkpoint import ResolvedCheckpoint, WeightReader, resolve_checkpoint
from .choices import CALIBRATION_DTYPES
from .errors import CheckpointError, ExportError, InputError
from .families import ModelSpec, load_model_spec, load_text_config
from .graph.builder import OPSET, TORCH_DTYPES, WeightStore
from .placement import resolve_device
from .plan import ExportPlan, choose_calibration_dtype, plan_export
from .precision import SOURCE_DTYPES, DtypeChoice, choose_export_dtype, fp16_problem
from .outdir import check_replaceable, remove_stale_leftovers, replace_dir, resolve_target, terminate_as_exception
from .graph.decoder import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, DecoderOptions, build_decoder
from .probe import PROBE_MAX_TOKENS
from .pruned_export import DEFAULT_LEVELS, export_levels
from .validate import validate_checkpoint
from .static_export import check_static as _check_static
from .static_export import static_dims, static_layer_units, static_section

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass(frozen=True)
class CalibrationOptions:
    """Prompt files for PP history statistics and alignment-circuit identification (None: the
    model card's files, else the demo card's generic English sets)."""

    harmful: Path | None = None
    harmless: Path | None = None
    text: Path | None = None
    budget: float | None = None  # None: chosen by the causal check among choices.BUDGETS
    scorer: str | None = None
    dtype: str = "auto"  # weights during calibration: fp32, bf16, or auto (cuda: bf16; cpu: fp32 when it fits)
    device: str = "auto"  # where calibration runs: cpu, cuda (device_map="auto"), auto (cuda when torch sees one)
    check_prompts: int = 48  # harmful prompts of the causal check (its time grows with them; the peak does not)
    check: Path | None = None  # held-out harmful prompts of the causal check (None: the card's)
    check_harmless: Path | None = None  # held-out harmless prompts: the choices weigh over-refusal (None: the card's)
    use_cache: bool = True  # look the calibration up in, and store it to, calibration.calibration_cache_dir's entry


@dataclass(frozen=True)
class ExportOptions:
    dtype: str = "auto"  # fp32 | fp16 | bf16 | auto (precision.choose_export_dtype: the checkpoint's, where it runs)
    last_logits_only: bool = True
    attention: str = "gqa"  # "gqa" (com.microsoft.GroupQueryAttention) or "onnx" (standard Attention op)
    allow_pickle: bool = False
    check: bool = True
    calibration: CalibrationOptions | None = None  # None: no calibration (the CLI calibrates by default)
    levels: tuple[float, ...] = DEFAULT_LEVELS  # sparsity levels of the pruned graphs (needs calibration)
    probe_max_tokens: int = PROBE_MAX_TOKENS  # the probe's budget for long prompts (0: ceil(ratio * T) always)
    static: tuple[str, float] | None = None  # (method, sparsity): a smaller dense model with fixed kept units
    force: bool = False  # replace --out even when it holds files the export did not write


def split_out(out: str | Path) -> tuple[Path, str]:
    """``--out`` is ``DIR/model.onnx`` (or just ``DIR``): the model dir and the graph file name."""
    out = Path(out)
    if out.suffix == ".onnx":
        return out.parent, out.name
    return out, "model.onnx"


def _special_token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(src: Path) -> str | None:
    """The chat template of a checkpoint, wherever transformers put it."""
    jinja = src / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        f = src / name
        if f.is_file():
            template = json.loads(f.read_text()).get("chat_template")
            if isinstance(template, list):  # named templates: take "default"
                template = next((t["template"] for t in template if t.get("name") == "default"), None)
            if template:
                return template
    return None


def _copy_tokenizer(src: Path, dst: Path) -> dict[str, Any]:
    """Tokenizer files and chat template into the model dir; returns the manifest's tokenizer entry."""
    if not (src / "tokenizer.json").is_file():
        try:  # e.g. only a sentencepiece tokenizer.model: let transformers convert it
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{src} has no tokenizer.json and transformers could not convert its tokenizer "
                                  f"({exc}); add tokenizer.json to the checkpoint") from exc
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copyfile(src / name, dst / name)
    entry: dict[str, Any] = {"file": "tokenizer.json", "chat_template": None, "special_tokens": {}}
    template = _chat_template(src)
    if template:
        (dst / "chat_template.jinja").write_text(template)
        entry["chat_template"] = "chat_template.jinja"
    cfg_file = dst / "tokenizer_config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            text = _special_token_text(cfg.get(key))
            if text is not None:
                entry["special_tokens"][key] = text
    return entry


def _write_hf_config(src: Path, dst: Path, kv_heads: list[int]) -> bool:
    """Write the checkpoint's text config as ``config.json``, so that Hugging Face tools that read one
    next to an ONNX decoder (optimum's ``ORTModelForCausalLM``) load the model dir. A text-only
    checkpoint's file is copied as it is; a multimodal Gemma 3's text tower is written out in full.
    It describes the source checkpoint (a static export's narrower layers are in the manifest); it is
    skipped (returns False) when the graph's layers have different KV head counts (a static MHA
    export), as no Hugging Face config could size such a cache."""
    if len(set(kv_heads)) != 1:
        return False
    raw = json.loads((src / "config.json").read_text())
    if "text_config" not in raw:
        shutil.copyfile(src / "config.json", dst / "config.json")
        return True
    text = load_text_config(src).to_dict()
    text["architectures"] = ["Gemma3ForCausalLM"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if text.get(key) is None and raw.get(key) is not None:
            text[key] = raw[key]
    (dst / "config.json").write_text(json.dumps(text, indent=2, sort_keys=True) + "\n")
    return True


def _eos_ids(src: Path, spec: ModelSpec) -> list[int]:
    ids = set(spec.eos_token_ids)
    gen = src / "generation_config.json"
    if gen.is_file():
        value = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(value if isinstance(value, list) else [value] if value is not None else [])
    return sorted(int(i) for i in ids)


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    return {"aapp_export": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _manifest_body(spec: ModelSpec, ckpt: ResolvedCheckpoint, opts: ExportOptions, graph_file: str,
                   tokenizer: dict[str, Any], eos: list[int]) -> dict[str, Any]:
    return {
        "family": spec.family,
        "source": ckpt.source,
        "dtype": opts.dtype,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "producer": _versions(),
        "dims": {
            "vocab_size": spec.vocab_size,
            "hidden_size": spec.hidden_size,
            "head_dim": spec.head_dim,
            "num_layers": spec.num_layers,
            "num_heads": [l.num_heads for l in spec.layers],
            "num_kv_heads": [l.num_kv_heads for l in spec.layers],
            "intermediate_size": [l.intermediate_size for l in spec.layers],
            "layer_types": [l.kind for l in spec.layers],
            "sliding_window": [l.sliding_window for l in spec.layers],
            "max_position_embeddings": spec.max_position_embeddings,
        },
        "graph": {
            "file": graph_file,
            "data_file": graph_file + ".data",
            "opset": OPSET,
            "last_logits_only": opts.last_logits_only,
            "attention": opts.attention,
            "input_ids": INPUT_IDS,
            "attention_mask": ATTENTION_MASK,
            "position_ids": POSITION_IDS,
            "logits": LOGITS,
            "past_key": "past_key_values.{i}.key",
            "past_value": "past_key_values.{i}.value",
            "present_key": "present.{i}.key",
            "present_value": "present.{i}.value",
        },
        "tokens": {"bos": spec.bos_token_id, "eos": eos, "pad": spec.pad_token_id},
        "tokenizer": tokenizer,
        "pruning": {"mode": "dense", "levels": {}},
        "calibration": None,
    }


def _plan(spec, options: ExportOptions, out_dir: Path, calibration_dtype: str | None,
          device: str = "cpu") -> ExportPlan:
    cal = options.calibration
    return plan_export(spec, SOURCE_DTYPES.get(spec.source_dtype, "fp32"), options.dtype, calibration_dtype,
                       cal.scorer if cal else None, out_dir, 0 if options.static else len(options.levels),
                       calibration_device=device)


def export_plan(model: str, out: str | Path, options: ExportOptions = ExportOptions()) -> ExportPlan:
    """What exporting ``model`` to ``out`` needs and whether this machine has it (``aapp-export --plan``);
    reads the config and tensor headers only. The dtypes are resolved as the export would (before
    calibration measures the activation range, which can still turn an ``auto`` fp16 into fp32)."""
    _check_options(options)
    out_dir, _ = split_out(out)
    ckpt = resolve_checkpoint(model)
    spec = load_model_spec(ckpt.path, WeightReader(ckpt.path, allow_pickle=options.allow_pickle))
    options, choice = _with_export_dtype(spec, options)
    plan = _resolved_plan(spec, options, resolve_target(out_dir))[0]
    plan.export_dtype_reason = choice.reason
    return plan


def _target(options: ExportOptions) -> str:
    """Where the exported model is meant to run: CUDA when calibration runs there (or, by default, when
    torch sees a GPU), else CPU."""
    return resolve_device(options.calibration.device if options.calibration else "auto")


def _check_options(options: ExportOptions) -> None:
    """The options' values, before anything is read or written."""
    if options.dtype not in ("auto", *TORCH_DTYPES):
        raise InputError(f"--dtype {options.dtype!r} is not one of auto, {', '.join(TORCH_DTYPES)}")
    if options.calibration is not None and options.calibration.check_prompts < 1:
        raise InputError(f"--check-prompts {options.calibration.check_prompts}: the causal check needs at least "
                         "one prompt")


def _with_export_dtype(spec, options: ExportOptions, activation_range: dict | None = None,
                       requested: str | None = None) -> tuple[ExportOptions, DtypeChoice]:
    choice = choose_export_dtype(requested or options.dtype, spec, _target(options), activation_range)
    return dataclasses.replace(options, dtype=choice.dtype), choice


def _resolved_plan(spec, options: ExportOptions, out_dir: Path) -> tuple[ExportPlan, str | None, str]:
    """The plan, the calibration dtype (None: no calibration) and device, resolved as the export runs them."""
    cal = options.calibration
    if cal is None:
        return _plan(spec, options, out_dir, None), None, "cpu"
    if cal.dtype not in CALIBRATION_DTYPES:
        raise InputError(f"--calib-dtype {cal.dtype!r} is not one of {', '.join(CALIBRATION_DTYPES)}")
    device = resolve_device(cal.device)
    dtype, plan = choose_calibration_dtype(cal.dtype, device, lambda d: _plan(spec, options, out_dir, d, device))
    return plan, dtype, device


def export_model(model: str, out: str | Path, options: ExportOptions = ExportOptions(),
                 log: Callable[[str], None] = print) -> Path:
    """Export ``model`` (alias, hub id or directory) to ``out`` (``DIR/model.onnx``); returns DIR."""
    _check_options(options)
    requested = options.dtype
    out_dir, graph_file = split_out(out)
    out_dir = resolve_target(out_dir)
    check_replaceable(out_dir, f"--out {out}", options.force)
    if options.static is not None:
        _check_static(options)
    ckpt = resolve_checkpoint(model)
    check_replaceable(out_dir, f"--out {out}", options.force, keep={"the checkpoint": ckpt.path})
    reader = WeightReader(ckpt.path, allow_pickle=options.allow_pickle)
    spec = load_model_spec(ckpt.path, reader)
    validate_checkpoint(spec, reader)
    options, dtype_choice = _with_export_dtype(spec, options)
    plan, calibration_dtype, calibration_device = _resolved_plan(spec, options, out_dir)
    problems = plan.problems()
    if problems:  # before anything is loaded or written
        raise ExportError(f"{ckpt.source} does not fit this machine: {'; '.join(problems)} (`aapp-export --plan` "
                          "prints the whole estimate)")
    if calibration_dtype is not None and options.calibration is not None:
        options = dataclasses.replace(options, calibration=dataclasses.replace(
            options.calibration, dtype=calibration_dtype, device=calibration_device))
    log(f"exporting {ckpt.source} ({spec.family}, {spec.num_layers} layers, hidden {spec.hidden_size}) "
        f"as {options.dtype} ({dtype_choice.reason}; model dir about {plan.model_dir / 1e9:.1f} GB) to "
        f"{out_dir / graph_file}" + (f"; calibrating in {calibration_dtype} on {calibration_device}"
                                     if calibration_dtype else ""))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_leftovers(out_dir.parent, out_dir.name):
        log(f"removed {stale}, left by an export whose process is gone")
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    store = WeightStore(tmp / (graph_file + ".data"))
    with terminate_as_exception():
        try:
            graph_path = tmp / graph_file
            metadata = {"aapp.family": spec.family, "aapp.source": ckpt.source,
                        "aapp.max_position_embeddings": str(spec.max_position_embeddings)}
            units = None
            # calibration first: one that cannot run costs no disk (and the static units need its statistics)
            calibration = _calibrate(ckpt, tmp, options.calibration, log, options.levels or DEFAULT_LEVELS) \
                if options.calibration else None
            if calibration is not None:  # its measured activation range can rule fp16 out
                options = _checked_dtype(spec, options, requested, calibration, out_dir, log)
            decoder_options = DecoderOptions(options.dtype, options.last_logits_only, options.attention)
            if options.static is not None:
                units = static_layer_units(spec, reader, tmp if calibration else None, *options.static)
            proto = build_decoder(spec, reader, graph_path, decoder_options, units, metadata=metadata, store=store)
            onnx.save(proto, str(graph_path))
            tokenizer = _copy_tokenizer(ckpt.path, tmp)
            _write_hf_config(ckpt.path, tmp, [l.num_kv_heads for l in spec.layers] if units is None
                             else static_dims(spec, units)["num_kv_heads"])
            body = _manifest_body(spec, ckpt, options, graph_file, tokenizer, _eos_ids(ckpt.path, spec))
            files = [graph_file, graph_file + ".data", "tokenizer.json"]
            if tokenizer["chat_template"]:
                files.append(tokenizer["chat_template"])
            if units is not None:
                body["dims"].update(static_dims(spec, units))
                body["pruning"] = static_section(spec, units, *options.static)
            if options.calibration is not None:
                body["calibration"] = calibration
                files += ["calibration.safetensors", "calibration.json"]
                if options.levels and units is None:
                    body["pruning"] = export_levels(spec, reader, store, decoder_options, tmp, body["calibration"],
                                                    options.levels, metadata, log,
                                                    probe_max_tokens=options.probe_max_tokens)
                    files += [f for level in body["pruning"]["levels"].values()
                              for f in (level["prefill"], level["decode"], level.get("tail"), level.get("dense_tail"))
                              if f]
                    if "split_prefill" in body["pruning"]:
                        files.append(body["pruning"]["split_prefill"]["head"])
            store.close()
            body["shared_weights"] = store.index_json()
            if options.check:
                for name in files:
                    if name.endswith(".onnx"):
                        onnx.checker.check_model(str(tmp / name))
            write_manifest(tmp, body, sorted(set(files) | {p.name for p in tmp.iterdir() if p.is_file()}))
            replace_dir(tmp, out_dir)
        except OSError as exc:  # a full or read-only disk, a busy target: one line, nothing left behind
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(f"--out {out}: {exc.strerror or exc} ({exc.filename or tmp}) while writing the export; "
                              f"nothing was left behind: free disk space, make {out_dir.parent} writable, or choose "
                              "another --out") from exc
        except BaseException:
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log(f"wrote {out_dir} ({sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6:.1f} MB)")
    return out_dir


def _checked_dtype(spec, options: ExportOptions, requested: str, calibration: dict, out_dir: Path,
                   log: Callable[[str], None]) -> ExportOptions:
    """The export dtype once calibration has measured the activation range: ``auto`` moves from fp16 to
    fp32 when the range is too close to fp16's limit (the disk is checked again); an explicit fp16 is
    kept with a warning."""
    ranges = calibration.get("activation_range")
    if requested == "auto":
        checked, choice = _with_export_dtype(spec, options, ranges, requested)
        if checked.dtype != options.dtype:
            log(f"export dtype {checked.dtype}, not {options.dtype}: {choice.reason}")
            problems = _resolved_plan(spec, checked, out_dir)[0].problems()
            disk = [p for p in problems if p.startswith("the model dir")]
            if disk:
                raise ExportError(f"{spec.family} export in {checked.dtype} does not fit: {disk[0]}")
        return checked
    if options.dtype == "fp16" and ranges is not None:
        problem = fp16_problem(spec, ranges)
        if problem is not None:
            log(f"warning: --dtype fp16 may overflow: {problem}; expect inf/NaN logits (the runtime stops on them); "
                "--dtype fp32 (CPU) or bf16 (CUDA) is safe")
    return options


def _calibrate(ckpt: ResolvedCheckpoint, out: Path, opts: CalibrationOptions, log: Callable[[str], None],
               levels: tuple[float, ...] = DEFAULT_LEVELS) -> dict:
    from .calibration import calibrate_checkpoint
    from .cards import default_prompt_file

    def pick(value: Path | None, key: str) -> Path:
        return Path(value) if value is not None else default_prompt_file(ckpt.card, ckpt.path, "calibration", key)

    files = {k: pick(getattr(opts, k), k) for k in ("harmful", "harmless", "text", "check", "check_harmless")}
    log(f"calibrating: history on {files['text'].name}, circuits on {files['harmful'].name} vs {files['harmless'].name}, "
        f"causal check on {files['check'].name if files['check'] else files['harmful'].name}"
        + (f" and {files['check_harmless'].name}" if files['check_harmless'] else ""))
    return calibrate_checkpoint(ckpt.path, out, budget=opts.budget, scorer=opts.scorer, dtype=opts.dtype,
                                device=resolve_device(opts.device), check_prompts=opts.check_prompts, log=log,
                                levels=levels, use_cache=opts.use_cache, **files)
