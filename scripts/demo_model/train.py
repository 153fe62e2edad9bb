"""Train the bundled demo model from scratch: tokenizer, stage 1 (instructions), stage 2 (alignment).

    python scripts/train_demo_model.py                 # full recipe into models/demo (~38 min, 2 threads)
    python scripts/train_demo_model.py --smoke --out /tmp/demo   # a few steps, for tests
    python scripts/train_demo_model.py --device cuda --train-seed 0 --out DIR   # on a GPU: 4.7 min on an H200 (three seeds at once)

The model is a ``Gemma3ForCausalLM`` (local + global layers through ``layer_types``, GQA, q/k
norms, tied embeddings) with its own byte-level BPE tokenizer and Gemma's chat format. Training is
plain supervised fine-tuning with loss on the answer tokens: stage 1 on harmless and borderline
requests, general text and (``--lexicon``, on by default) dictionary word knowledge with requests
generated from it (``demo_model.lexicon``); stage 2 adds harmful requests answered with refusals, mixed with
``--replay`` (default 2.25) times as many replayed stage-1 examples, (``--align-lookalikes``) everyday
idioms built on harmful words, answered, and (``--align-mirrors``) their harmful counterparts, refused.
Nothing here is shaped around any pruning method.
``--stage1-cache DIR`` keeps the state after stage 1, so a stage-2 change is tried in minutes. The defaults
are the shipped recipe (8 layers, hidden 320, bf16 autocast, 2 threads, 2800 + 720 steps, look-alikes and
mirrors on, replay 2.25) and the training seed ``select_demo_seed.py`` chose (``models/demo/seed_selection.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm import tqdm

from . import lexicon as demo_lexicon
from .corpus import build_corpus, general_text, held_out_prompts, write_prompt_files

ROOT = Path(__file__).resolve().parents[2]
SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
PAD, EOS, BOS, SOT, EOT = range(5)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] | trim + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ (first if loop.first else '') + message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

MODEL_CONFIG = dict(
    vocab_size=4096, hidden_size=320, intermediate_size=896, num_hidden_layers=8, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, query_pre_attn_scalar=64, sliding_window=64, max_position_embeddings=1024,
    layer_types=["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 3 + ["full_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    bos_token_id=BOS, eos_token_id=[EOS, EOT], pad_token_id=PAD, tie_word_embeddings=True,
)
SMOKE_CONFIG = dict(MODEL_CONFIG, hidden_size=64, intermediate_size=128, num_hidden_layers=4, head_dim=16,
                    query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"] * 2)


def chat_text(prompt: str, answer: str | None = None) -> str:
    head = f"<bos><start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
    return head if answer is None else head + f"{answer}<end_of_turn>\n"


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS)])
    return tok


def save_tokenizer(tok: Tokenizer, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], "model_max_length": 1024,
        "padding_side": "left", "add_bos_token": False, "chat_template": CHAT_TEMPLATE,
    }, indent=2))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def encode_example(tok: Tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt: loss on the answer and its end-of-turn only)."""
    head = tok.encode(chat_text(prompt), add_special_tokens=False).ids
    tail = tok.encode(f"{answer}<end_of_turn>\n", add_special_tokens=False).ids
    return head + tail, [-100] * len(head) + tail


def encode_text(tok: Tokenizer, text: str) -> tuple[list[int], list[int]]:
    ids = tok.encode(text, add_special_tokens=True).ids + [EOS]
    return ids, [-100] + ids[1:]


def batches(items: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random, bucket: int = 32):
    """Endless shuffled batches, padded on the right. Each run of ``bucket`` batches is drawn from examples
    sorted by length (then the batches are shuffled), so short chat turns are not padded to a long text."""
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        groups = []
        for c in range(0, len(order), batch_size * bucket):
            part = sorted(order[c:c + batch_size * bucket], key=lambda j: len(items[j][0]))
            groups += [part[i:i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size)]
        rng.shuffle(groups)
        for group in groups:
            chunk = [items[j] for j in group]
            n = max(len(ids) for ids, _ in chunk)
            ids = torch.full((batch_size, n), PAD)
            labels = torch.full((batch_size, n), -100)
            mask = torch.zeros((batch_size, n), dtype=torch.long)
            for r, (x, y) in enumerate(chunk):
                ids[r, :len(x)], labels[r, :len(y)], mask[r, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            yield ids, labels, mask


def layer_types(n_layers: int, every: int) -> list[str]:
    """Gemma 3's local/global mix: every ``every``-th layer (and the last) attends globally, the rest slide."""
    return ["full_attention" if (i + 1) % every == 0 or i == n_layers - 1 else "sliding_attention" for i in range(n_layers)]


def run_stage(model, data, steps: int, lr: float, batch_size: int, rng: random.Random, desc: str,
              bf16: bool = False, device: str = "cpu") -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    losses = []
    model.train()
    it = batches(data, batch_size, rng)
    bar = tqdm(range(steps), desc=desc, unit="step")
    for _ in bar:
        ids, labels, mask = (t.to(device) for t in next(it))
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):  # fp32 master weights and optimizer
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses


def stage1_key(s1: list[tuple[list[int], list[int]]], config: dict, args: argparse.Namespace) -> str:
    """Hash of everything stage 1 depends on: its encoded examples, the model config and its hyperparameters."""
    key = [config, args.train_seed, args.stage1_steps, args.lr, args.batch_size, args.threads, args.bf16,
           torch.__version__] + ([args.device] if args.device != "cpu" else [])  # CPU keys as before
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for ids, labels in s1:
        h.update(json.dumps([ids, labels]).encode())
    return h.hexdigest()[:16]


def load_stage1(model, rng: random.Random, folder: Path) -> dict | None:
    """Restore the weights and RNG states saved after stage 1 and return the rest of the record (``losses``,
    ``minutes`` and ``machine`` of the run that trained it); None if ``folder`` holds none."""
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng_state__"))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:  # the tied lm_head is the only key not stored
        raise ValueError(f"{folder}: stage-1 state does not fit the model (missing {missing}, unexpected "
                         f"{unexpected}); delete the folder and train stage 1 again")
    version, internal, gauss = state["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    model.eval()
    return {"losses": state["losses"], "minutes": state.get("minutes"), "machine": state.get("machine")}


def save_stage1(model, rng: random.Random, losses: list[float], minutes: float, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tensors["__torch_rng_state__"] = torch.get_rng_state()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "state.json").write_text(json.dumps({"python_rng": rng.getstate(), "losses": losses,
                                                   "minutes": round(minutes, 2), "machine": machine()}))


def machine() -> dict:
    """What the training ran on, so the card's training time says on what: CPU, cores, load averages."""
    from aapp_export.bench import cpu_name

    record = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--seed", type=int, default=0, help="corpus and held-out splits")
    ap.add_argument("--train-seed", type=int, default=2,
                    help="weights init and batch order only, same corpus and held-out files; default 2, the seed "
                         "select_demo_seed.py chose for the bundled model (models/demo/seed_selection.json)")
    ap.add_argument("--stage1-steps", type=int, default=2800)
    ap.add_argument("--stage2-steps", type=int, default=720)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--stage2-lr", type=float, default=None, help="peak learning rate of stage 2 (default: --lr / 2)")
    ap.add_argument("--replay", type=float, default=2.25, help="replayed stage-1 examples per harmful one in stage 2")
    ap.add_argument("--align-lookalikes", type=float, default=1.0,
                    help="share (0 to 1) of the everyday idioms built on harmful words (kill the power, beat eggs, "
                         "bath bombs: demo_model.corpus.ALIGN_LOOKALIKE_*) that stage 2 answers beside the refusals")
    ap.add_argument("--align-harmful", action=argparse.BooleanOptionalAction, default=False,
                    help="the alignment stage's own wider harmful requests (demo_model.corpus.ALIGN_HARMFUL: theft, account "
                         "hacking, extremism, abuse...) refused beside the others")
    ap.add_argument("--align-mirrors", action=argparse.BooleanOptionalAction, default=True,
                    help="the look-alikes' harmful counterparts (demo_model.corpus.ALIGN_MIRRORS: 'donate to a charity safely' "
                         "-> 'keep the money people donate to a charity') refused beside the others")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (the recipe's 2; the stage-1 cache and bit-identical reruns need the same)")
    ap.add_argument("--hidden-size", type=int, default=MODEL_CONFIG["hidden_size"])
    ap.add_argument("--intermediate-size", type=int, default=MODEL_CONFIG["intermediate_size"])
    ap.add_argument("--layers", type=int, default=MODEL_CONFIG["num_hidden_layers"])
    ap.add_argument("--heads", type=int, default=MODEL_CONFIG["num_attention_heads"],
                    help="query heads per layer (a multiple of the 2 KV heads)")
    ap.add_argument("--global-every", type=int, default=4,
                    help="every N-th layer (and the last) is a global attention layer, the others sliding-window")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="bf16 autocast for the forward and backward passes (fp32 weights and optimizer state)")
    ap.add_argument("--lexicon", action=argparse.BooleanOptionalAction, default=True,
                    help="word knowledge from models/demo/lexicon/wordnet.tsv: its glosses as text and requests "
                         "generated by word class in stage 1 (demo_model.lexicon)")
    ap.add_argument("--stage1-cache", type=Path, default=None,
                    help="folder to keep the state after stage 1 in (fp32 weights and RNG states, keyed by a hash of "
                         "the stage-1 data, config and hyperparameters); a later run with the same key starts stage 2 "
                         "from it and gives the same checkpoint bit for bit, so stage-2 changes cost minutes, not 40")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the steps run: the recipe's CPU (bit-identical reruns on one machine), or a GPU "
                         "(its bf16 autocast; same recipe, other rounding, so other bits: for machines whose CPU "
                         "has no bf16 units, where a seed takes hours)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps (tests)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device cuda: torch {torch.__version__} sees no CUDA device; train with --device cpu")
    if args.smoke:
        args.stage1_steps, args.stage2_steps, args.batch_size = 3, 2, 4

    train_seed = args.train_seed
    torch.manual_seed(train_seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(train_seed)  # batch order and replay sampling
    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    counts = write_prompt_files(out / "data", seed=args.seed)
    corpus = build_corpus(args.seed)
    text_train, _ = general_text(args.seed)
    stage1 = corpus["harmless_train"] + corpus["borderline_train"]
    harmful = corpus["harmful_train"]
    lexicon_record = None
    if args.lexicon:
        lexicon = demo_lexicon.load_lexicon()
        held_out = demo_lexicon.held_out_words(held_out_prompts(corpus))
        lex_rng = random.Random(args.seed + 11)
        generated = demo_lexicon.lexicon_requests(lexicon, lex_rng, held_out)
        stage1 = stage1 + [e for e in generated if e.kind != "harmful"]
        harmful = harmful + [e for e in generated if e.kind == "harmful"]
        knowledge = demo_lexicon.knowledge_text(lexicon, lex_rng)
        text_train = text_train + knowledge
        lexicon_record = {"file": str(demo_lexicon.LEXICON.relative_to(ROOT)), "words": len(lexicon),
                          "knowledge_lines": len(knowledge), "requests": len(generated),
                          "refused_requests": sum(e.kind == "harmful" for e in generated),
                          "held_out_words": len(held_out)}

    # The tokenizer is trained on stage 1's text and the core harmful requests with their refusals; the
    # alignment stage's own additions (--align-harmful, --align-lookalikes) are tokenized with it, so they
    # leave stage 1 (and its --stage1-cache) as it was. Trained on stage 1's text alone, harmful words split
    # into pieces harmless words share, and the model over-refused ("make a paper boat"): on train seed 0
    # 21.7% of harmless_val instead of 5.0% (first-token AUROC harmful vs harmless_val 0.89 vs 0.99).
    tok_texts = [chat_text(e.prompt, e.answer) for e in stage1 + harmful] + text_train
    cfg_kw = SMOKE_CONFIG if args.smoke else dict(
        MODEL_CONFIG, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        layer_types=layer_types(args.layers, args.global_every))
    tok = train_tokenizer(tok_texts, 512 if args.smoke else cfg_kw["vocab_size"])
    save_tokenizer(tok, out)

    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    config = Gemma3TextConfig(**dict(cfg_kw, vocab_size=tok.get_vocab_size()))
    model = Gemma3ForCausalLM(config).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, tokenizer: {tok.get_vocab_size()} tokens", file=sys.stderr)

    s1 = [encode_example(tok, e.prompt, e.answer) for e in stage1] + [encode_text(tok, t) for t in text_train]
    cache = args.stage1_cache / stage1_key(s1, cfg_kw, args) if args.stage1_cache else None
    t_stage1 = time.time()
    saved = load_stage1(model, rng, cache) if cache else None
    restored = saved is not None
    if not restored:
        loss1 = run_stage(model, s1, args.stage1_steps, args.lr, args.batch_size, rng, "stage 1 (instructions)",
                          args.bf16, args.device)
        stage1_minutes, stage1_machine = (time.time() - t_stage1) / 60, machine()
        if cache:
            save_stage1(model, rng, loss1, stage1_minutes, cache)
    else:
        loss1, stage1_minutes, stage1_machine = saved["losses"], saved["minutes"], saved["machine"]
        print(f"stage 1: restored from {cache}", file=sys.stderr)
    t_stage1_end = time.time()
    n_replay, order = round(args.replay * len(harmful)), []
    while len(order) < n_replay:  # shuffled passes over stage 1
        order += rng.sample(range(len(s1)), len(s1))
    replay = [s1[i] for i in order[:n_replay]]
    lookalikes = corpus["borderline_align"] if args.align_lookalikes > 0 else []
    if 0 < args.align_lookalikes < 1:
        lookalikes = rng.sample(lookalikes, round(args.align_lookalikes * len(lookalikes)))
    align_harmful = corpus["harmful_align"] if args.align_harmful else []
    mirrors = corpus["harmful_mirror"] if args.align_mirrors else []
    s2 = [encode_example(tok, e.prompt, e.answer) for e in harmful + align_harmful + mirrors + lookalikes] + replay
    lr2 = args.lr / 2 if args.stage2_lr is None else args.stage2_lr
    loss2 = run_stage(model, s2, args.stage2_steps, lr2, args.batch_size, rng, "stage 2 (alignment)", args.bf16,
                      args.device)

    model = model.to("cpu", torch.bfloat16)
    model.save_pretrained(str(out))
    GenerationConfig(bos_token_id=BOS, eos_token_id=[EOS, EOT], pad_token_id=PAD, do_sample=False,
                     max_new_tokens=48).save_pretrained(str(out))
    minutes = (time.time() - t0) / 60  # this run; the whole recipe counts stage 1 as long as training it took
    total = None if stage1_minutes is None else minutes - (t_stage1_end - t_stage1) / 60 + stage1_minutes
    record = {
        "seed": args.seed, "train_seed": train_seed, "parameters": n_params, "vocab_size": tok.get_vocab_size(), "config": cfg_kw,
        "stage1": {"steps": args.stage1_steps, "lr": args.lr, "examples": len(s1), "final_loss": sum(loss1[-20:]) / max(1, len(loss1[-20:])),
                   "minutes": None if stage1_minutes is None else round(stage1_minutes, 1), "machine": stage1_machine},
        "stage2": {"steps": args.stage2_steps, "lr": lr2, "examples": len(s2), "harmful": len(harmful), "replay_per_harmful": args.replay,
                   "lookalikes": len(lookalikes), "align_harmful": len(align_harmful), "mirrors": len(mirrors),
                   "final_loss": sum(loss2[-20:]) / max(1, len(loss2[-20:]))},
        "batch_size": args.batch_size, "optimizer": "AdamW(betas=(0.9,0.95), wd=0.1), warmup 5% + cosine, clip 1.0",
        "lexicon": lexicon_record, "threads": args.threads, "bf16_autocast": args.bf16, "device": args.device,
        "machine_at_end": machine(),
        "stage1_restored_from": str(cache) if cache and restored else None, "training_minutes": None if total is None else round(total, 1),
        "this_run_minutes": round(minutes, 1), "prompt_files": counts,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("parameters", "training_minutes", "stage1", "stage2")}, indent=1))
    return 0

