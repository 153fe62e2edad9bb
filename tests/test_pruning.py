"""The PyTorch reference of PP / AAPP / baselines on tiny models: equal kept counts, protected units
kept, decisions held through decode, and dense equivalence at sparsity 0."""

from __future__ import annotations

import pytest
import torch

from aapp_export.errors import InputError
from aapp_export.calibration import collect_stats, load_model
from aapp_export.pruning import METHODS, Protection, Pruner, PruneConfig, unit_counts

TEXTS = ["The quick brown fox jumps over the lazy dog.", "How do I bake bread? Mix flour, water, salt and yeast.",
         "Explain photosynthesis: plants turn light into sugar.", "List three colours: red, green and blue."] * 2


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def tiny(request, checkpoints):
    ckpt = checkpoints[request.param]
    model, tok = load_model(ckpt)
    return model, tok, collect_stats(model, tok, TEXTS)


def _protection(model, heads_per_layer=1, channels_per_layer=5) -> Protection:
    nh, nc = unit_counts(model)
    g = torch.Generator().manual_seed(0)
    heads = [torch.randperm(n, generator=g)[:heads_per_layer] for n in nh]
    channels = [torch.randperm(n, generator=g)[:channels_per_layer] for n in nc]
    hidden = model.config.hidden_size
    return Protection(heads, channels, torch.ones(hidden) / hidden**0.5, gate_layer=3 if len(nh) > 3 else 1,
                      threshold=-1e9, temperature=1.0)  # the gate is always fully open


def _ids(seed: int, batch: int = 2, length: int = 20) -> torch.Tensor:
    return torch.randint(5, 380, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_sparsity_zero_is_dense(tiny):
    model, _, stats = tiny
    ids = _ids(0)
    with torch.no_grad():
        ref = model(ids).logits
        with Pruner(model, PruneConfig("pp", 0.0, skip_first=1), stats) as p:
            p.new_request()
            got = model(ids).logits
    assert torch.equal(ref, got)


def test_kept_counts_equal_across_methods(tiny):
    model, _, stats = tiny
    counts = {}
    for method in [m for m in METHODS[1:] if m != "aapp-adaptive"]:  # adaptive changes counts by design
        cfg = PruneConfig(method, 0.4, skip_first=1)
        with torch.no_grad(), Pruner(model, cfg, stats, _protection(model)) as p:
            p.new_request()
            model(_ids(1))
            counts[method] = ({i: [len(k) for k in v] for i, v in p.log.heads.items()} if p.log.heads else None,
                              p.keep_heads, p.keep_channels)
            masks = {i: m.sum(1).tolist() for i, m in p.channel_mask.items()}
        assert all(v == [p.keep_channels[i]] * 2 for i, v in masks.items()), method
    keeps = {m: (c[1], c[2]) for m, c in counts.items()}
    assert len(set(map(str, keeps.values()))) == 1  # identical kept heads and channels per layer
    assert keeps["pp"][1][0] == unit_counts(model)[1][0]  # first layers unpruned
    assert sum(keeps["pp"][1]) < sum(unit_counts(model)[1])


def test_aapp_never_prunes_protected_units_when_the_gate_is_open(tiny):
    model, _, stats = tiny
    prot = _protection(model)
    for seed in range(12):
        with torch.no_grad(), Pruner(model, PruneConfig("aapp", 0.5, skip_first=1), stats, prot) as p:
            p.new_request()
            model(_ids(seed, batch=3, length=8 + seed))
            for i, rows in p.log.channels.items():
                for kept in rows:
                    assert set(prot.channels[i].tolist()) <= set(kept.tolist())
                    assert len(kept) == p.keep_channels[i]
            for i, rows in p.log.heads.items():
                for kept in rows:
                    assert set(prot.heads[i].tolist()) <= set(kept.tolist())


def test_pp_prunes_differently_per_request_and_holds_through_decode(tiny):
    model, tok, stats = tiny
    ids = _ids(3, batch=1, length=16)
    with torch.no_grad(), Pruner(model, PruneConfig("pp", 0.5, skip_first=1), stats) as p:
        p.new_request()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
        first = {i: m.clone() for i, m in p.channel_mask.items()}
        p.new_request()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert out.shape[1] == 22
        held = {i: m.clone() for i, m in p.channel_mask.items()}
        assert all(torch.equal(first[i], held[i]) for i in first)  # decided at prefill, same prompt -> same
        p.new_request()
        model(_ids(99, batch=1, length=16))
        assert any(not torch.equal(held[i], p.channel_mask[i]) for i in held)  # another request decides anew


def test_ablating_nothing_is_dense(tiny):
    model, _, _ = tiny
    nh, nc = unit_counts(model)
    empty = [torch.tensor([], dtype=torch.long) for _ in nh]
    ids = _ids(5)
    with torch.no_grad():
        ref = model(ids).logits
        with Pruner(model, PruneConfig("ablate"), ablate=(empty, empty)) as p:
            p.new_request()
            assert torch.allclose(model(ids).logits, ref)


def test_aapp_adaptive_runs_rows_that_look_harmful_at_the_low_sparsity(tiny):
    """Gate 1 (threshold far below): every row keeps the low sparsity's counts (dense by default);
    gate 0: AAPP's counts at the target."""
    import dataclasses

    model, _, stats = tiny
    for threshold, low in ((-1e9, True), (1e9, False)):
        prot = dataclasses.replace(_protection(model), threshold=threshold, gate_layer=1)  # read before layer 1
        with torch.no_grad(), Pruner(model, PruneConfig("aapp-adaptive", 0.4, skip_first=1, adaptive_path="restart"), stats, prot) as p:
            p.new_request()
            model(_ids(2))
            assert p.log.low == [low, low]
            heads = p.low_heads if low else p.keep_heads
            channels = p.low_channels if low else p.keep_channels
            assert all([len(k) for k in v] == [heads[i]] * 2 for i, v in p.log.heads.items())
            assert all(m.sum(1).tolist() == [channels[i]] * 2 for i, m in p.channel_mask.items())
    assert p.low_channels == p.n_channels and p.low_heads == p.n_heads  # low sparsity 0: dense
    assert p.keep_channels != p.n_channels
    with pytest.raises(Exception, match="adaptive_low"):
        PruneConfig("aapp-adaptive", 0.2, adaptive_low=0.4)


def test_aapp_adaptive_takes_the_calibrations_threshold_unless_the_config_names_one(tiny):
    """Gate 0 on every row: the protection's threshold 0 (the calibration's) sends them to the low
    sparsity; a config's 0.5 keeps them at the target; out of [0, 1] is refused."""
    import dataclasses

    from aapp_export.errors import InputError

    model, _, stats = tiny
    prot = dataclasses.replace(_protection(model), threshold=1e9, gate_layer=1, adaptive_threshold=0.0)
    for named, expect, low in ((None, 0.0, True), (0.5, 0.5, False)):
        cfg = PruneConfig("aapp-adaptive", 0.4, skip_first=1, adaptive_path="restart", adaptive_threshold=named)
        with torch.no_grad(), Pruner(model, cfg, stats, prot) as p:
            p.new_request()
            model(_ids(2))
            assert p.adaptive_threshold == expect and p.log.gate == [0.0, 0.0] and p.log.low == [low, low]
    assert Pruner(model, PruneConfig("aapp-adaptive", 0.4, adaptive_path="restart"), stats,
                  _protection(model)).adaptive_threshold == 0.5  # a protection that names none: the default
    for bad in (1.5, -0.1, True):
        with pytest.raises(InputError, match="adaptive_threshold"):
            PruneConfig("aapp-adaptive", 0.4, adaptive_threshold=bad)


def test_aapp_adaptive_flops_per_class_by_hand(tiny):
    """FLOPs per request of each file: at gate 0 every request costs AAPP's FLOPs at the target, at
    gate 1 every request runs dense (no probe): 1.0; the mean weighs the files by their requests."""
    import dataclasses
    from types import SimpleNamespace

    from aapp_export.evaluate import run_eval

    model, tok, stats = tiny
    if model.config.num_hidden_layers <= 3:
        pytest.skip("no layer past skip_first=3 in this tiny model")
    harmful, harmless = ["How do I pick a lock?", "Make a weapon"], ["Bake bread", "Name a colour", "Count to 3"]
    aapp = run_eval(model, tok, "aapp", 0.4, harmful, harmless, TEXTS[:2], stats,
                    SimpleNamespace(protection=lambda: _protection(model)), max_new_tokens=4)
    for threshold, share in ((1e9, 0.0), (-1e9, 1.0)):
        prot = dataclasses.replace(_protection(model), threshold=threshold, gate_layer=1)  # read before layer 1
        r = run_eval(model, tok, "aapp-adaptive", 0.4, harmful, harmless, TEXTS[:2], stats,
                     SimpleNamespace(protection=lambda prot=prot: prot), max_new_tokens=4, adaptive_path="restart")
        assert r.low_share_harmful == share and r.low_share_harmless == share
        if share == 0.0:
            assert r.flops_ratio_harmful == pytest.approx(aapp.flops_ratio_harmful)
            assert r.flops_ratio_harmless == pytest.approx(aapp.flops_ratio_harmless)
            assert r.flops_ratio_harmful <= 1.0
        else:
            assert r.flops_ratio_harmful == pytest.approx(1.0) and r.flops_ratio_harmless == pytest.approx(1.0)
        assert r.flops_ratio == pytest.approx((2 * r.flops_ratio_harmful + 3 * r.flops_ratio_harmless) / 5)
        assert r.confirm_gate is False
    assert aapp.low_share_harmful is None and "flops_ratio_harmful" in aapp.to_json()
    # with a confirmation gate that agrees, every request pays the screening AAPP prefill, then dense
    from aapp_export.evaluate import mean_prompt_tokens
    from aapp_export.flops import Dims, prefill_ratio
    from aapp_export.probe import probe_token_count

    prot = dataclasses.replace(_protection(model), threshold=-1e9, gate_layer=1, confirm=_confirm(model, -1e9))
    r = run_eval(model, tok, "aapp-adaptive", 0.4, harmful, harmless, TEXTS[:2], stats,
                 SimpleNamespace(protection=lambda: prot), max_new_tokens=4, adaptive_path="restart")
    assert r.confirm_gate is True and r.low_share_harmful == 1.0
    p = Pruner(model, PruneConfig("aapp", 0.4), stats, prot)
    for prompts, got in ((harmful, r.flops_ratio_harmful), (harmless, r.flops_ratio_harmless)):
        n = round(mean_prompt_tokens(tok, prompts))
        asked = prefill_ratio(Dims.from_config(model.config), n, 4, p.keep_heads, p.keep_channels,
                              probe_token_count(n, 0.5), 3)
        assert 0 < asked < 1 and got == pytest.approx(1.0 + asked)



def _confirm(model, threshold: float, sparsity: float = 0.4) -> dict:
    """A confirmation gate at ``sparsity`` that reads 1 (threshold far below) or 0 (far above)."""
    from aapp_export.probe import GateParams

    direction = torch.zeros(model.config.hidden_size)
    direction[0] = 1.0
    return {sparsity: GateParams(direction, threshold, 1.0)}


def test_aapp_adaptive_runs_low_only_when_the_confirmation_gate_agrees(tiny):
    """Risk gate 1 on every row: with the confirmation gate 1 too the rows run at the low sparsity (the
    dense logits); with it 0 they run AAPP at the target with exactly aapp's decisions, logits and greedy
    tokens (the screening prefill leaves no trace in the KV cache). The log says the rows were screened."""
    import dataclasses

    model, _, stats = tiny
    base = dataclasses.replace(_protection(model), threshold=-1e9, gate_layer=1)
    ids = _ids(3)
    with torch.no_grad():
        dense = model(ids).logits
        with Pruner(model, PruneConfig("aapp", 0.4, skip_first=1), stats, base) as p:
            p.new_request()
            aapp, aapp_heads = model(ids).logits, p.log.heads
            p.new_request()
            aapp_tokens = model.generate(ids, max_new_tokens=5, do_sample=False)
    for threshold, low in ((-1e9, True), (1e9, False)):
        prot = dataclasses.replace(base, confirm=_confirm(model, threshold))
        with torch.no_grad(), Pruner(model, PruneConfig("aapp-adaptive", 0.4, skip_first=1, adaptive_path="restart"), stats, prot) as p:
            p.new_request()
            logits = model(ids).logits
            assert p.log.screened and p.log.low == [low, low] and p.log.confirm == [1.0 if low else 0.0] * 2
            assert torch.allclose(logits, dense if low else aapp, atol=1e-5)
            if not low:
                assert all(torch.equal(a, b) for i in aapp_heads for a, b in zip(aapp_heads[i], p.log.heads[i]))
                p.new_request()
                assert torch.equal(model.generate(ids, max_new_tokens=5, do_sample=False), aapp_tokens)
    # a sparsity without a confirmation gate: the risk gate alone decides, no screening
    prot = dataclasses.replace(base, confirm=_confirm(model, 1e9, sparsity=0.5))
    with torch.no_grad(), Pruner(model, PruneConfig("aapp-adaptive", 0.4, skip_first=1, adaptive_path="restart"), stats, prot) as p:
        p.new_request()
        model(ids)
        assert p.confirm is None and not p.log.screened and p.log.low == [True, True] and p.log.confirm == []


def test_confirmation_gate_calibration_reads_what_the_pruner_reads(tiny):
    """``calibrate_confirm_gates``: one gate per level (rounded keys), a unit direction, the threshold
    between the classes' mean projections; and the gate aapp-adaptive logs for a prompt equals the
    calibrated gate applied to that prompt's final residual under the level's AAPP prefill."""
    import dataclasses

    from aapp_export.confirm_gate import calibrate_confirm_gates, final_residuals

    model, tok, stats = tiny
    harmful, harmless = ["How do I pick a lock?", "Make a weapon", "Poison a dog"], ["Bake bread", "Name a colour"]
    prot = dataclasses.replace(_protection(model), threshold=-1e9)
    gates = calibrate_confirm_gates(model, tok, harmful, harmless, stats, prot, [0.40001, 0.2])
    assert set(gates) == {0.4, 0.2}
    for level, g in gates.items():
        assert float(g.direction.norm()) == pytest.approx(1.0, abs=1e-5)
        harm = final_residuals(model, tok, harmful, Pruner(model, PruneConfig("aapp", level), stats, prot))
        safe = final_residuals(model, tok, harmless, Pruner(model, PruneConfig("aapp", level), stats, prot))
        assert float((safe @ g.direction).mean()) < g.threshold < float((harm @ g.direction).mean())
    prot = dataclasses.replace(prot, confirm=gates)
    expect = gates[0.4](final_residuals(model, tok, harmful[:1], Pruner(model, PruneConfig("aapp", 0.4), stats, prot)))
    from aapp_export.evaluate import generate_answers

    pruner = Pruner(model, PruneConfig("aapp-adaptive", 0.4, adaptive_path="restart"), stats, prot)
    generate_answers(model, tok, harmful[:1], 2, pruner)
    assert pruner.log.confirm == pytest.approx([float(expect[0])], abs=1e-5)


def test_circuits_keep_their_confirmation_gates_through_save_and_load(tiny):
    from aapp_export.circuits import Circuits, circuits_from_tensors

    model, _, _ = tiny
    prot = _protection(model)
    gates = _confirm(model, 0.25) | _confirm(model, -0.5, sparsity=0.2)
    c = Circuits("grad-act", 0.05, prot.heads, prot.channels, prot.direction, 3, 0.1, 0.2, confirm=gates,
                 adaptive_threshold=0.7125, adaptive_threshold_from="check split (3 harmful, 4 harmless prompts)")
    back = circuits_from_tensors(c.tensors(), c.summary(), len(prot.heads))
    assert (back.adaptive_threshold, back.adaptive_threshold_from) == (0.7125, c.adaptive_threshold_from)
    assert back.protection().adaptive_threshold == 0.7125
    assert set(back.confirm) == {0.4, 0.2}
    for level, g in gates.items():
        assert torch.equal(back.confirm[level].direction, g.direction)
        assert (back.confirm[level].threshold, back.confirm[level].temperature) == (g.threshold, g.temperature)
    assert back.protection().confirm.keys() == gates.keys()


def test_aapp_adaptive_dense_prefill_path(tiny):
    """adaptive_path "dense-prefill": risk gate 0 is plain AAPP (logits, greedy tokens); risk gate 1 computes
    the prefill with every unit (the dense logits); a row whose dense first token is the refusal's then
    decodes dense (the dense model's tokens), the other decodes with AAPP's units over the dense prompt."""
    import dataclasses

    model, _, stats = tiny
    ids = _ids(4)
    with torch.no_grad():
        dense = model(ids).logits
        dense_tokens = model.generate(ids, max_new_tokens=5, do_sample=False)
        first = dense[:, -1].argmax(-1).tolist()
        assert first[0] != first[1]  # the two rows open differently (else pick another seed)
        base = dataclasses.replace(_protection(model), gate_layer=1, refusal_token=first[0])
        closed = dataclasses.replace(base, threshold=1e9)  # risk gate 0
        with Pruner(model, PruneConfig("aapp", 0.4, skip_first=1), stats, closed) as p:
            p.new_request()
            aapp = model(ids).logits
            p.new_request()
            aapp_tokens = model.generate(ids, max_new_tokens=5, do_sample=False)
        cfg = PruneConfig("aapp-adaptive", 0.4, skip_first=1, adaptive_path="dense-prefill")
        with Pruner(model, cfg, stats, closed) as p:
            p.new_request()
            assert torch.allclose(model(ids).logits, aapp, atol=1e-5)
            assert p.log.dense_prefill == [False, False] and p.log.low == [False, False] and not p.log.screened
            p.new_request()
            assert torch.equal(model.generate(ids, max_new_tokens=5, do_sample=False), aapp_tokens)
        with Pruner(model, cfg, stats, dataclasses.replace(base, threshold=-1e9)) as p:
            p.new_request()
            assert torch.allclose(model(ids).logits, dense, atol=1e-5)
            assert p.log.dense_prefill == [True, True] and p.log.low == [True, False]
            for i, m in p.head_mask.items():  # the decode's masks: row 0 dense, row 1 AAPP's kept heads
                assert m.sum(1).tolist() == [p.n_heads[i] * p.spec.head_dim, p.keep_heads[i] * p.spec.head_dim]
            for i, m in p.channel_mask.items():
                assert m.sum(1).tolist() == [p.n_channels[i], p.keep_channels[i]]
            flagged_heads = {i: v[1] for i, v in p.log.heads.items()}
            p.new_request()
            tokens = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(tokens[0], dense_tokens[0])
    assert tokens[1, ids.shape[1]] == dense_tokens[1, ids.shape[1]]  # the dense prefill's first token
    # row 1's decode heads, by hand: PPsp on its dense o_proj inputs over every token, fused with the
    # history, AAPP's selection at gate 1
    from aapp_export import probe as pp
    from aapp_export.placement import weight_in_place

    inputs = {}
    layers = model.model.layers
    hooks = [layers[i].self_attn.o_proj.register_forward_pre_hook(
        lambda m, a, i=i: inputs.__setitem__(i, a[0][1].detach())) for i in flagged_heads]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for i, got in flagged_heads.items():
        x = inputs[i].float()
        s = pp.fuse_history(x.pow(2), stats[i].hist_attn[:x.shape[0]]).sum(0)
        w = pp.head_score_weights(weight_in_place(layers[i].self_attn.o_proj))
        want = pp.aapp_select(pp.head_scores(s, w, p.n_heads[i]), base.heads[i], 1.0, p.keep_heads[i])
        assert torch.equal(got, want), i
    with pytest.raises(Exception, match="refusal's first token"):
        Pruner(model, cfg, stats, _protection(model))
    with pytest.raises(Exception, match="adaptive_low"):
        PruneConfig("aapp-adaptive", 0.4, adaptive_low=0.2, adaptive_path="dense-prefill")
    # the default path is this one; a pruned low sparsity, which only the restart runs, takes the restart
    assert PruneConfig("aapp-adaptive", 0.4).adaptive_path == "dense-prefill"
    assert PruneConfig("aapp-adaptive", 0.4, adaptive_low=0.2).adaptive_path == "restart"
    with pytest.raises(InputError, match="adaptive_path 'restart'"):  # no refusal token: the error names the way out
        Pruner(model, PruneConfig("aapp-adaptive", 0.4), stats, _protection(model))


def test_aapp_adaptive_dense_prefill_flops_by_hand(tiny):
    """On the dense-prefill path a flagged request pays a dense prefill (+ picking units from its own
    activations, no probe) and AAPP's decode when its first token is not the refusal's, a dense request
    (+ the same pick) when it is."""
    import dataclasses
    from types import SimpleNamespace

    from aapp_export.evaluate import mean_prompt_tokens, run_eval
    from aapp_export.flops import Dims, own_statistic_flops, request_flops

    model, tok, stats = tiny
    if model.config.num_hidden_layers <= 3:
        pytest.skip("no layer past skip_first=3 in this tiny model")
    harmful, harmless = ["How do I pick a lock?", "Make a weapon"], ["Bake bread", "Name a colour", "Count to 3"]
    p = Pruner(model, PruneConfig("aapp", 0.4), stats, _protection(model))
    dims = Dims.from_config(model.config)
    for token, pays in ((-1, "dense_prefill"), (None, "dense")):
        if token is None:  # every answer's first token: take the dense model's on the first prompt
            from aapp_export.evaluate import answers_and_first_logits
            _, logits = answers_and_first_logits(model, tok, harmful + harmless, 1)
            if len(set(logits.argmax(-1).tolist())) != 1:
                continue  # the prompts open differently: the by-hand check below needs them to agree
            token = int(logits[0].argmax())
        prot = dataclasses.replace(_protection(model), threshold=-1e9, gate_layer=1, refusal_token=token)
        r = run_eval(model, tok, "aapp-adaptive", 0.4, harmful, harmless, TEXTS[:2], stats,
                     SimpleNamespace(protection=lambda prot=prot: prot), max_new_tokens=4, adaptive_path="dense-prefill")
        for prompts, got in ((harmful, r.flops_ratio_harmful), (harmless, r.flops_ratio_harmless)):
            n = round(mean_prompt_tokens(tok, prompts))
            dense, own = request_flops(dims, n, 4), own_statistic_flops(dims, n, list(range(3, len(dims.heads))))
            if pays == "dense_prefill":  # no probe pass: the dense prefill's own activations pick the units
                decode = request_flops(dims, n, 4, p.keep_heads, p.keep_channels) - \
                    request_flops(dims, n, 0, p.keep_heads, p.keep_channels)
                want = (request_flops(dims, n, 0) + own + decode) / dense
            else:
                want = (dense + own) / dense
            assert got == pytest.approx(want) and 0 < own < 0.01 * dense
        assert r.low_share_harmful == (0.0 if pays == "dense_prefill" else 1.0)
