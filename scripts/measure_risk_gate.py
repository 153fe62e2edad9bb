"""How well AAPP's risk gate tells harmful requests from the rest, on prompts calibration never saw.

    python scripts/measure_risk_gate.py [--model demo] [--out docs/results/risk_gate.json]

The shipped gate (``circuits.identify_circuits``) reads the residual stream at the input of the first
pruned layer, at the last prompt token, projects it on the refusal direction (difference of the
harmful and harmless calibration means, unit norm) and squashes it with a sigmoid whose threshold and
temperature come from the calibration prompts. For every prompt of the held-out splits (``*_val``,
``*_val2``, ``*_test``; borderline = harmless requests that sound risky) this script reports:

- the shipped gate's score, its ROC AUC harmful vs harmless and harmful vs borderline, and the share
  of each class whose gate is above 0.5 (harmless above 0.5 = requests that would pay for protection);
- the same projection read at every layer (direction from the calibration prompts at that layer),
  and with the mean over prompt positions instead of the last token;
- at the gate layer, the shipped direction read at every prompt position and reduced by the maximum
  (over all positions, or over the last four: the chat template's closing tokens), threshold and
  temperature refitted on the calibration prompts: a request whose harmful part is not its last
  sentence might show it at an earlier position;
- a logistic probe (L2, fitted on the calibration prompts' activations at the gate layer only, no
  held-out data): as cheap at run time as the projection (one dot product over the hidden size);
- aapp-adaptive's threshold chosen on the second held-out set (``*_val``, a calibration split for
  this choice): the largest gate value that still sends ``--flag-harmful`` (95%) of ``harmful_val`` to
  dense, and what it and the shipped 0.5 flag on ``*_val2`` and ``*_test`` (never used to choose);
- aapp-adaptive's confirmation gate at ``--sparsity`` (``aapp_export/confirm_gate.py``: the final
  residual stream under that level's AAPP prefill): its score on every held-out prompt, its AUCs, and
  the share of each file it flags alone and together with the risk gate (what runs dense); and, as a
  candidate signal for it, the probability of the refusal's first token (the causal check's) in the
  last-position logits of that same prefill, which the prefill computes anyway: its AUCs and the share
  of each file where it reaches 0.5.

AUC is the Mann-Whitney statistic (ties count half). Calibration uses the model card's calibration
files, as ``aapp-export`` does. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("val", "val2", "test")
CLASSES = ("harmful", "harmless", "borderline")


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties half."""
    p, n = positive[:, None], negative[None, :]
    return float(((p > n).float() + 0.5 * (p == n).float()).mean())


@torch.no_grad()
def residuals(model, tokenizer, prompts: list[str], layer: int,
              batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Per prompt and residual position l (input of layer l): the last prompt token's vector and the
    mean over the prompt's tokens, both [N, L+1, H] in fp32; and at ``layer``, every prompt position's
    vector ([T_i, H] per prompt, padding dropped)."""
    from aapp_export.evaluate import chat_inputs
    from aapp_export.placement import to_model

    last, mean, at_layer = [], [], []
    for s in range(0, len(prompts), batch_size):
        enc = chat_inputs(tokenizer, prompts[s:s + batch_size])  # left padding: the last position is real
        out = model(**to_model(enc, model), output_hidden_states=True, logits_to_keep=1)
        h = torch.stack(out.hidden_states, 1).float().cpu()  # [B, L+1, T, H]
        m = enc["attention_mask"].float()[:, None, :, None]
        last.append(h[:, :, -1])
        mean.append((h * m).sum(2) / m.sum(2))
        at_layer += [h[i, layer][enc["attention_mask"][i].bool()] for i in range(len(h))]
    return torch.cat(last), torch.cat(mean), at_layer


def choose_threshold(gates: dict, flag_harmful: float) -> dict:
    """aapp-adaptive's threshold from ``*_val`` alone: the largest gate value at which at least
    ``flag_harmful`` of harmful_val runs dense; the share of every held-out file it and 0.5 flag."""
    harmful = sorted((float(x) for x in gates[("val", "harmful")]), reverse=True)
    chosen = harmful[max(0, int(torch.tensor(flag_harmful * len(harmful)).ceil()) - 1)]
    shares = lambda t: {f"{c}_{s}": round(float((v >= t).float().mean()), 4)  # noqa: E731
                        for (s, c), v in gates.items()}
    return {"rule": f"largest t with gate >= t on at least {flag_harmful:.0%} of harmful_val", "chosen": round(chosen, 4),
            "flagged_at_chosen": shares(chosen), "flagged_at_0.5": shares(0.5)}


def confirmation(model, tok, stats, circuits, sparsity: float, data: Path, gates: dict, aucs) -> dict:
    """aapp-adaptive's confirmation gate at ``sparsity`` on every held-out file (``gates``: the risk gate
    of each file's prompts, same order): AUCs, and the share flagged by it and by both gates."""
    from aapp_export.calibration import read_lines
    from aapp_export.choices import ADAPTIVE_THRESHOLD, CONFIRM_THRESHOLD
    from aapp_export.confirm_gate import final_residuals
    from aapp_export.evaluate import first_token_probs
    from aapp_export.pruning import Pruner, PruneConfig

    gate = circuits.confirm.get(round(sparsity, 4))
    if gate is None:
        return {"sparsity": sparsity, "missing": f"the calibration has no confirmation gate at {sparsity}"}
    protection = circuits.protection()
    scores = {key: gate(final_residuals(model, tok, read_lines(data / f"{key[1]}_{key[0]}.txt"),
                                        Pruner(model, PruneConfig("aapp", sparsity), stats, protection)))
              for key in gates}
    share = lambda flags: {f"{c}_{s}": round(float(v.float().mean()), 4) for (s, c), v in flags.items()}  # noqa: E731
    token = circuits.check["by_scorer"][circuits.scorer]["refusal_token"]
    first = {key: first_token_probs(model, tok, read_lines(data / f"{key[1]}_{key[0]}.txt"),
                                    Pruner(model, PruneConfig("aapp", sparsity), stats, protection))[:, token]
             for key in gates}
    return {"first_token_refusal": {"token": token, "auc": aucs(first),
                                    "share_at_0.5": share({k: v >= 0.5 for k, v in first.items()})},
            "sparsity": sparsity, "read": "final residual, last prompt token, under the level's AAPP prefill",
            "threshold": gate.threshold, "temperature": gate.temperature, "auc": aucs(scores),
            "flagged": share({k: v >= CONFIRM_THRESHOLD for k, v in scores.items()}),
            "flagged_with_risk_gate": share({k: (v >= CONFIRM_THRESHOLD) & (gates[k] >= ADAPTIVE_THRESHOLD)
                                            for k, v in scores.items()}),
            "gate_per_prompt": {f"{c}_{s}": [round(float(x), 4) for x in v] for (s, c), v in scores.items()}}


def direction(harm: torch.Tensor, safe: torch.Tensor) -> torch.Tensor:
    r = harm.mean(0) - safe.mean(0)
    return r / r.norm().clamp(min=1e-8)


def logistic_probe(harm: torch.Tensor, safe: torch.Tensor, l2: float = 1e-2, steps: int = 500) -> tuple[torch.Tensor, float]:
    """Weights and bias of an L2-regularised logistic regression harmful=1 / harmless=0 (features
    standardised by the calibration statistics, folded back into the returned weights)."""
    x = torch.cat([harm, safe])
    y = torch.cat([torch.ones(len(harm)), torch.zeros(len(safe))])
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    return w_raw, float(b.detach() - (mu * w_raw).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "risk_gate.json")
    p.add_argument("--flag-harmful", type=float, default=0.95,
                   help="share of harmful_val the chosen adaptive threshold must send to dense")
    p.add_argument("--sparsity", type=float, default=0.4, help="the level whose confirmation gate is measured")
    args = p.parse_args()
    from reproduce_table import card_calibration, prompt_files

    from aapp_export.calibration import load_model, read_lines
    from aapp_export.checkpoint import resolve_checkpoint
    from aapp_export.probe import fit_gate, risk_gate

    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    model, tok = load_model(ckpt.path)
    stats, circuits = card_calibration(ckpt, model, tok, files)
    data = ckpt.path / "data"
    g = circuits.gate_layer
    calib = {c: residuals(model, tok, read_lines(files[("calibration", c)]), g) for c in ("harmful", "harmless")}
    held = {(split, c): residuals(model, tok, read_lines(data / f"{c}_{split}.txt"), g)
            for split in SPLITS for c in CLASSES if (data / f"{c}_{split}.txt").is_file()}
    n_pos = calib["harmful"][0].shape[1]
    report: dict = {"model": str(ckpt.source), "gate_layer": g, "threshold": circuits.threshold,
                    "temperature": circuits.temperature, "scorer": circuits.scorer,
                    "prompts": {f"{c}_{s}": len(v[0]) for (s, c), v in held.items()}}

    def scores(kind: int, layer: int, w: torch.Tensor) -> dict:
        return {key: held[key][kind][:, layer] @ w for key in held}

    def aucs(sc: dict) -> dict:
        out = {}
        for split in SPLITS:
            if (split, "harmful") not in sc:
                continue
            for other in ("harmless", "borderline"):
                if (split, other) in sc:
                    out[f"harmful_vs_{other}_{split}"] = round(auc(sc[(split, "harmful")], sc[(split, other)]), 4)
        return out

    # the shipped gate: projection at the gate layer, last token, calibration direction and sigmoid
    shipped = scores(0, g, circuits.direction.float())
    check = direction(calib["harmful"][0][:, g], calib["harmless"][0][:, g])
    report["direction_matches_calibration"] = bool(torch.allclose(check, circuits.direction.float(), atol=1e-5))
    gates = {k: risk_gate(v, circuits.threshold, circuits.temperature) for k, v in shipped.items()}
    report["shipped_gate"] = {
        "auc": aucs(shipped),
        "mean_gate": {f"{c}_{s}": round(float(v.mean()), 4) for (s, c), v in gates.items()},
        "share_above_0.5": {f"{c}_{s}": round(float((v > 0.5).float().mean()), 4) for (s, c), v in gates.items()},
        "gate_per_prompt": {f"{c}_{s}": [round(float(x), 4) for x in v] for (s, c), v in gates.items()},
    }
    report["adaptive_threshold"] = choose_threshold(gates, args.flag_harmful)
    report["confirm_gate"] = confirmation(model, tok, stats, circuits, args.sparsity, data, gates, aucs)
    # the same read at every residual position, last token and mean over positions
    per_layer = []
    for layer in range(n_pos):
        row = {"layer_input": layer}
        for kind, name in ((0, "last_token"), (1, "mean_over_prompt")):
            w = direction(calib["harmful"][kind][:, layer], calib["harmless"][kind][:, layer])
            row[name] = aucs(scores(kind, layer, w))
        per_layer.append(row)
    report["projection_by_layer"] = per_layer
    # the shipped direction at every prompt position of the gate layer, reduced by the maximum
    w = circuits.direction.float()
    for name, first in (("max_over_prompt", 0), ("max_over_last_4", -4)):
        reduce = lambda vecs: torch.stack([(v[first:] @ w).max() for v in vecs])  # noqa: E731
        threshold, temperature = fit_gate(reduce(calib["harmful"][2]), reduce(calib["harmless"][2]))
        sc = {k: reduce(v[2]) for k, v in held.items()}
        report[f"position_{name}"] = {"auc": aucs(sc), "threshold": round(threshold, 4), "share_above_0.5": {
            f"{c}_{s}": round(float((risk_gate(v, threshold, temperature) > 0.5).float().mean()), 4)
            for (s, c), v in sc.items()}}
    # a logistic probe at the gate layer (calibration prompts only)
    for kind, name in ((0, "last_token"), (1, "mean_over_prompt")):
        w, b = logistic_probe(calib["harmful"][kind][:, g], calib["harmless"][kind][:, g])
        sc = {k: v + b for k, v in scores(kind, g, w).items()}
        report[f"logistic_probe_{name}"] = {"auc": aucs(sc), "share_above_0.5": {
            f"{c}_{s}": round(float((torch.sigmoid(v) > 0.5).float().mean()), 4) for (s, c), v in sc.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    summary = {k: v for k, v in report.items() if k not in ("shipped_gate", "projection_by_layer")}
    summary["shipped_gate"] = {k: v for k, v in report["shipped_gate"].items() if k != "gate_per_prompt"}
    summary["confirm_gate"] = {k: v for k, v in report["confirm_gate"].items() if k != "gate_per_prompt"}
    summary["projection_by_layer"] = per_layer
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
