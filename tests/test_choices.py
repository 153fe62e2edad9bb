"""Names and limits are defined once (``aapp_export.choices``): the CLIs offer exactly them, the
runtime (its own distribution) agrees with them, and every sparsity check says the same thing."""

from __future__ import annotations

import pytest

from aapp_export import choices
from aapp_export.errors import InputError


def _choices(parser, dest):
    return tuple(next(a for a in parser._actions if a.dest == dest).choices)


def test_clis_offer_the_shared_choices():
    from aapp_export.cli import eval as eval_cli
    from aapp_export.cli import export as export_cli

    export, evaluate = export_cli.build_parser(), eval_cli.build_parser()
    assert _choices(export, "dtype") == choices.EXPORT_DTYPES
    assert _choices(export, "attention") == choices.ATTENTION_KERNELS
    assert _choices(export, "calib_dtype") == choices.CALIBRATION_DTYPES
    assert _choices(export, "static") == choices.STATIC_METHODS
    assert _choices(export, "scorer") == _choices(evaluate, "scorer") == choices.SCORERS
    assert _choices(export, "device") == _choices(evaluate, "device") == choices.DEVICES
    assert _choices(evaluate, "method") == choices.METHODS
    assert export.get_default("probe_max_tokens") == evaluate.get_default("probe_max_tokens") == choices.PROBE_MAX_TOKENS


def test_the_runtime_agrees_with_the_exporter():
    from aapp_runtime import cli as run_cli
    from aapp_runtime import session

    assert session.METHODS == choices.RUNTIME_METHODS and session.MAX_SPARSITY == choices.MAX_SPARSITY
    assert session.ADAPTIVE_THRESHOLD == choices.ADAPTIVE_THRESHOLD
    assert session.CONFIRM_THRESHOLD == choices.CONFIRM_THRESHOLD
    assert _choices(run_cli.build_parser(), "method") == choices.RUNTIME_METHODS


@pytest.mark.parametrize("value", [-0.1, 0.95, float("nan"), True, "x", None])
def test_every_sparsity_check_is_the_same_one_line_error(value):
    from aapp_export.probe import kept_counts
    from aapp_export.pruning import PruneConfig

    for call in (lambda: choices.check_sparsity(value, "--sparsity"), lambda: PruneConfig("pp", value),
                 lambda: kept_counts([4, 4, 4, 4], value)):
        with pytest.raises(InputError) as info:
            call()
        assert "is outside [0, 0.9]" in str(info.value) and "\n" not in str(info.value)
    assert choices.check_sparsity(0.4, "x") == 0.4 and choices.check_sparsity(0, "x") == 0.0
    with pytest.raises(InputError, match=r"outside \(0, 0.9\]"):
        choices.check_sparsity(0, "--static wanda-sp --sparsity", zero=False)
