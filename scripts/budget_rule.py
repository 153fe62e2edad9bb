"""Which budget rule transfers between disjoint check splits? The calibration keeps a protected fraction
by its causal check; this script asks, from the check results alone (never val2), how each candidate rule
would have chosen and how its choice fares on prompts it did not see. Issue 21.

    python scripts/budget_rule.py [--stability FILE ...] [--out DIR]

Each ``--stability`` file is ``scripts/calibration_stability.py``'s report for one checkpoint (default:
the shipped model's ``docs/results/calibration_stability.json`` and every
``docs/results/seeds/*/calibration_stability.json`` measured with the present calibration, the ones
with strict refusal and over-refusal per budget; older reports are listed as skipped). A report holds,
for the calibration on all prompts and on halves A and B (disjoint calibration and check prompts), the
sufficiency check of the chosen scorer at every budget: AAPP at 0.4 on the check prompts, marker and
strict refusal and over-refusal on the harmless check prompts; ``net`` = strict - over-refusal, the
calibration's criterion.

Rules:

- ``best``: the calibration's own (``circuits.choose_budget``): 5% unless another budget's net is higher,
  then the best. Reports before 2026-12-07 lack the first-token probability, its last tie-break: where
  the recomputed choice ties with the recorded one on every other key, the recorded one stands; any
  other difference is printed.
- ``one-se``: the smallest budget whose net is within one standard error of the best net (binomial
  errors of strict refusal and over-refusal, each on the half's number of check prompts). A larger
  protected set displaces more of PP's own choice, so a larger budget is kept only for a gain the
  check can tell from noise.
- ``fixed-F``: always F, for each F of ``choices.BUDGETS``.

Transfer: the budget a rule chooses on half A is read on half B (B's own protected set at that budget)
and vice versa; per rule the mean held-out net and the mean regret (the held-out half's best net less
the net it got). Prints markdown; ``--out DIR`` writes ``budget_rule.json`` and ``budget_rule.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from pooled_reports import default_reports, read_reports, write_outputs

from aapp_export.choices import BUDGETS
from aapp_export.circuits import choose_budget, sufficiency_rank

RULES = ("best", "one-se", *(f"fixed-{b:g}" for b in sorted(BUDGETS)))


class BudgetRuleError(Exception):
    """A stability report that cannot be read."""


def checks_of(report: dict, run: str) -> dict[str, dict[str, float]] | None:
    """``{str(budget): check}`` of one calibration run (``all``, ``A`` or ``B``) of a stability report, or
    None if the report predates strict refusal and over-refusal per budget. Reports before 2026-12-07 lack
    the first-token probability: it reads 0.0 there, so it breaks no tie (``tied_record``)."""
    strict, over = report.get("by_budget_strict", {}).get(run), report.get("by_budget_over_refusal", {}).get(run)
    if not strict or not over or any(over.get(b) is None for b in strict):
        return None
    prob = report.get("by_budget_refusal_token_prob", {}).get(run) or {}
    return {b: {"refusal": report["by_budget"][run][b], "strict_refusal": strict[b], "over_refusal": over[b],
                "net": round(strict[b] - over[b], 4), "refusal_token_prob": prob.get(b, 0.0)} for b in strict}


def standard_error(check: dict[str, float], n: int) -> float:
    """Binomial standard error of ``net`` (strict refusal less over-refusal, independent) on ``n`` prompts each."""
    s, o = check["strict_refusal"], check["over_refusal"]
    return math.sqrt((s * (1 - s) + o * (1 - o)) / n)


def choose(rule: str, checks: dict[str, dict[str, float]], n: int) -> float:
    """The budget ``rule`` keeps from one run's checks (``n`` check prompts)."""
    if rule == "best":
        return choose_budget(checks)
    if rule == "one-se":
        top = max(checks.values(), key=lambda c: c["net"])
        floor = top["net"] - standard_error(top, n)
        return min(float(b) for b, c in checks.items() if c["net"] >= floor)
    if rule.startswith("fixed-"):
        return float(rule.removeprefix("fixed-"))
    raise BudgetRuleError(f"rule {rule}: not one of {', '.join(RULES)}")


def tied_record(checks: dict[str, dict], recomputed: float, recorded: float | None) -> float:
    """The recorded choice where it ties with the recomputed one on every key the report keeps (the
    first-token probability, absent from older reports, broke the tie), else the recomputed one. Budgets key
    the checks as ``str(budget)``, as the calibration writes them."""
    if recorded is None or recorded == recomputed or str(recorded) not in checks:
        return recomputed
    same = sufficiency_rank(checks[str(recomputed)]) == sufficiency_rank(checks[str(recorded)])
    return recorded if same else recomputed


def study(reports: dict[str, dict]) -> dict:
    """Per report and rule: the choice on all, A and B, and the transfer between A and B; then per rule the
    means over every report and both directions."""
    per_report, skipped = {}, {}
    for name, report in reports.items():
        runs = {r: checks_of(report, r) for r in ("all", "A", "B")}
        if any(c is None for c in runs.values()):
            skipped[name] = ("no strict refusal and over-refusal per budget (an older calibration, or one "
                             "pinned with --budget)")
            continue
        n = report["check_prompts"]
        rows = {}
        for rule in RULES:
            if rule.startswith("fixed-") and not all(str(choose(rule, c, 1)) in c for c in runs.values()):
                continue  # a budget this report's check did not try
            chosen = {r: choose(rule, runs[r], n[r]) for r in runs}
            if rule == "best":  # a tie on what the report keeps: the calibration's recorded choice broke it
                chosen = {r: tied_record(runs[r], b, report.get("chosen_budget", {}).get(r)) for r, b in chosen.items()}
            held_out = []
            for seen, unseen in (("A", "B"), ("B", "A")):
                got = runs[unseen][str(chosen[seen])]["net"]
                best = max(c["net"] for c in runs[unseen].values())
                held_out.append({"chosen_on": seen, "read_on": unseen, "budget": chosen[seen], "net": got,
                                 "regret": round(best - got, 4)})
            rows[rule] = {"chosen": chosen, "halves_agree": chosen["A"] == chosen["B"], "held_out": held_out}
        recorded = report.get("chosen_budget", {})
        per_report[name] = {"rules": rows, "check_prompts": n,
                            "recorded_best": recorded,
                            "best_reproduces_recorded": all(rows["best"]["chosen"][r] == recorded[r]
                                                            for r in runs if r in recorded)}
    means = {}
    for rule in RULES:
        having = [r["rules"][rule] for r in per_report.values() if rule in r["rules"]]
        outs = [h for r in having for h in r["held_out"]]
        if outs:
            means[rule] = {"held_out_net": round(statistics.mean(h["net"] for h in outs), 4),
                           "held_out_regret": round(statistics.mean(h["regret"] for h in outs), 4),
                           "halves_agree": sum(r["halves_agree"] for r in having),
                           "reports": len(having), "transfers": len(outs)}
    return {"reports": per_report, "skipped": skipped, "means": means}


def markdown(result: dict) -> str:
    lines = ["| rule | " + " | ".join(f"{n}: all / A / B" for n in result["reports"])
             + " | halves agree | held-out net (mean) | held-out regret (mean) |",
             "|---" * (len(result["reports"]) + 4) + "|"]
    for rule, mean in result["means"].items():
        cells = ["{:.0%} / {:.0%} / {:.0%}".format(*(r["rules"][rule]["chosen"][k] for k in ("all", "A", "B")))
                 if rule in r["rules"] else "not checked" for r in result["reports"].values()]
        lines.append(f"| {rule} | " + " | ".join(cells)
                     + f" | {mean['halves_agree']} of {mean['reports']} | {mean['held_out_net']:.3f}"
                     + f" | {mean['held_out_regret']:.3f} |")
    for name, r in result["reports"].items():
        if not r["best_reproduces_recorded"]:
            lines.append(f"\n{name}: `best` recomputed {r['rules']['best']['chosen']} differs from the recorded "
                         f"{r['recorded_best']} (a first-token-probability tie-break the report does not keep).")
    for name, why in result["skipped"].items():
        lines.append(f"\nskipped {name}: {why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stability", type=Path, nargs="*", default=None,
                    help="calibration_stability.py reports (default: the shipped model's and every seed's)")
    ap.add_argument("--out", type=Path, default=None, help="write budget_rule.json and budget_rule.md here")
    args = ap.parse_args(argv)
    try:
        reports = read_reports(args.stability or default_reports("calibration_stability.json"),
                               "calibration_stability.py", BudgetRuleError)
        result = study(reports)
    except BudgetRuleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_outputs(result, markdown(result), args.out, "budget_rule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
