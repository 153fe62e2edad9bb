"""Do the exported pruned graphs decide what the PyTorch reference decides? (issue: exactly the reference's decisions)

``python scripts/pruned_agreement.py MODEL_DIR [--checkpoint models/demo] [--limit 100] [--sparsity 0.2,0.4,0.5]``

For the first ``--limit`` prompts of the card's ``harmful_test`` and ``harmless_test`` files, at each
sparsity and for ``pp`` and ``aapp``: the kept heads and channels per pruned layer from the model dir's
prefill graph (``Session.decisions``, ONNX Runtime, fp32, CPU) against ``pruning.Pruner`` on the
checkpoint with the model dir's own calibration (batch 1, the same chat-formatted ids). Mismatches are
listed (file, prompt, layer, the units only one side kept). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "demo")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--sparsity", default="0.2,0.4,0.5")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from aapp_runtime import Session

    from aapp_export.calibration import load_calibration, load_model, read_lines
    from aapp_export.evaluate import chat_inputs
    from aapp_export.pruning import Pruner, PruneConfig

    session = Session(args.model_dir, provider="cpu")
    model, tok = load_model(args.checkpoint)
    stats, circuits = load_calibration(args.model_dir, model.config.num_hidden_layers)
    files = {k: args.checkpoint / "data" / f"{k}_test.txt" for k in ("harmful", "harmless")}
    report: dict = {"model_dir": str(args.model_dir), "checkpoint": str(args.checkpoint), "limit": args.limit,
                    "runs": []}
    t0 = time.time()
    for sparsity in (float(x) for x in args.sparsity.split(",")):
        for method in ("pp", "aapp"):
            decisions = agree = 0
            mismatches = []
            for kind, path in files.items():
                for n, prompt in enumerate(read_lines(path)[: args.limit]):
                    ids = chat_inputs(tok, [prompt])["input_ids"]
                    got = session.decisions(ids[0].tolist(), sparsity=sparsity, method=method)
                    with torch.no_grad(), Pruner(model, PruneConfig(method, sparsity), stats,
                                                 circuits.protection()) as pruner:
                        pruner.new_request()
                        model(ids)
                    for unit in ("heads", "channels"):
                        log = getattr(pruner.log, unit)
                        for i, rows in log.items():
                            decisions += 1
                            ref, mine = rows[0].tolist(), got[unit][i]
                            if ref == mine:
                                agree += 1
                            else:
                                mismatches.append({"file": kind, "prompt": n, "layer": i, "unit": unit,
                                                   "only_reference": sorted(set(ref) - set(mine)),
                                                   "only_onnx": sorted(set(mine) - set(ref))})
            report["runs"].append({"sparsity": sparsity, "method": method, "decisions": decisions, "agree": agree,
                                   "agreement": round(agree / max(1, decisions), 5), "mismatches": mismatches[:20],
                                   "n_mismatches": len(mismatches)})
            print(f"sparsity {sparsity} {method}: {agree}/{decisions} (prompt, layer, kind) decisions equal",
                  file=sys.stderr)
    report["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
