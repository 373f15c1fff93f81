"""Ordered Prune-Quantize-Distill pipelines: validation of orders and epoch allocations, and for each of
the six orders (and the single techniques) a deployable artefact whose dtype and sparsity are what the
order implies."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.ao.nn.quantized as nnq

import shrinkviz as sv
from shrinkviz.data import Normalizer
from shrinkviz.loop.train import TrainConfig, evaluate
from shrinkviz.models import create_model
from shrinkviz.techniques.pipeline import ORDERS, allocate_epochs, parse_order, pipeline, weight_sparsity
from shrinkviz.techniques.quant import int8_weights, is_int8, is_qat

CFG = TrainConfig.preset("adam_fast").replace(batch_size=64, lr=1e-3)


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(train=192, val=64, test=96)


@pytest.fixture(scope="module")
def baseline(small):
    return sv.pretrained("tiny_cnn", small, epochs=3, progress=False)


def test_orders():
    assert sorted(ORDERS) == ["DPQ", "DQP", "PDQ", "PQD", "QDP", "QPD"]
    assert parse_order("qdp") == ("Q", "D", "P") and parse_order("D") == ("D",)
    for bad, message in [
        ("PXD", "unknown stage"),
        ("PPQ", "P repeated"),
        ("", "non-empty"),
        ("QDQP", "Q repeated"),
    ]:
        with pytest.raises(ValueError, match=f"order=.*{message}"):
            parse_order(bad)


def test_epoch_allocation():
    assert allocate_epochs("PQD") == (20, 40, 40)
    assert allocate_epochs("Q") == (100,) and allocate_epochs("D", 30) == (30,)
    assert allocate_epochs("QPD", (20, 40, 40), budget=100, scale=0.05) == (1, 2, 2)
    assert allocate_epochs("PQ", (3, 4)) == (3, 4)
    cases = [
        (("PQD", (20, 40)), {}, r"epochs=\(20, 40\): 2 counts for the 3 stages"),
        (("PQD", (20, 0, 40)), {}, r"epochs\[1\]=0 \(stage Q\)"),
        (("PQD", (20, -1, 40)), {}, r"epochs\[1\]=-1"),
        (("PQD", (20, 2.5, 40)), {}, r"epochs\[1\]=2.5"),
        (("PQD", (True, 40, 40)), {}, r"epochs\[0\]=True"),
        (("PQD", (20, 40, 40)), {"budget": 90}, r"sum to 100, not the budget=90"),
        (("PQD", (20, 40, 40)), {"budget": 0}, r"budget=0"),
        (("PQD", (20, 40, 40)), {"scale": 0}, r"scale=0"),
        (("PQD", 100), {}, r"epochs=100: an int is allowed only for a single-stage order"),
        (("PQ", None), {}, r"epochs=None"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            allocate_epochs(*args, **kwargs)


def test_pipeline_rejects_bad_input_before_training(baseline, small):
    before = copy.deepcopy(baseline.state_dict())
    with pytest.raises(ValueError, match="order='PQX'"):
        pipeline(baseline, small, "PQX", (1, 1, 1), progress=False)
    with pytest.raises(ValueError, match=r"epochs\[2\]=0"):
        pipeline(baseline, small, "PQD", (1, 1, 0), progress=False)
    with pytest.raises(TypeError, match="finetune=3"):
        pipeline(baseline, small, "P", 1, finetune=3, progress=False)
    with pytest.raises(ValueError, match="teacher gives 4 logits"):
        pipeline(
            baseline,
            small,
            "D",
            1,
            teacher=create_model("tiny_cnn", input_shape=(1, 8, 8), num_classes=4),
            progress=False,
        )
    for key, value in baseline.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_deploys_sparse_int8(order, baseline, small):
    before = copy.deepcopy(baseline.state_dict())
    res = pipeline(baseline, small, order, (1, 1, 1), compression=4.0, finetune=CFG, progress=False)
    # the artefact is a real INT8 model...
    assert res.quantized and is_int8(res.model) and not is_qat(res.model)
    layers = [m for m in res.model.modules() if isinstance(m, nnq.Conv2d | nnq.Linear)]
    assert layers and all(m.weight().dtype == torch.qint8 for m in layers)
    # ...holding exactly the pruned zeros, whatever stage P came at
    weights = int8_weights(res.model)
    assert len(res.masks) == 6  # every conv of tiny_cnn; the classifier is not pruned
    pruned = sum(int((~mask).sum()) for mask in res.masks.values())
    total = sum(mask.numel() for mask in res.masks.values())
    for name, mask in res.masks.items():
        assert int((weights[name.rpartition(".")[0]][~mask] != 0).sum()) == 0, name
    assert pruned / total > 0.7  # x4 over all parameters (BN, classifier included) = ~78% of conv weights
    assert res.metrics["sparsity"] >= pruned / total
    # stages ran in order with their epochs, forms and labels
    assert [r["stage"] for r in res.history] == list(order)
    assert [s["stage"] for s in res.stages] == list(order)
    q_at = order.index("Q")
    assert [s["form"] for s in res.stages] == ["fp32"] * q_at + ["fake-quant"] * (3 - q_at)
    p_at = order.index("P")
    assert all(s["sparsity"] == 0 for s in res.stages[:p_at])
    assert all(s["sparsity"] >= pruned / total for s in res.stages[p_at:])
    kd = [r["kd_loss"] for r in res.history]
    assert all(math.isfinite(v) == (stage == "D") for v, stage in zip(kd, order, strict=True))
    test = evaluate(res.model, small.test, Normalizer(small.mean, small.std))  # metrics are of the artefact
    assert (res.metrics["test_top1"], res.metrics["test_top5"]) == (test["top1"], test["top5"])
    assert set(res.history_frame()["position"]) == {1, 2, 3}
    for key, value in baseline.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key])


def test_single_technique_baselines(baseline, small):
    p = pipeline(baseline, small, "P", 2, compression=4.0, finetune=CFG, progress=False)
    assert not p.quantized and p.model.features[0].conv.weight.dtype == torch.float32
    assert p.masks and weight_sparsity(p.model) > 0.7
    q = pipeline(baseline, small, "Q", 2, finetune=CFG, progress=False)
    assert q.quantized and q.masks == {} and weight_sparsity(q.model) < 0.2
    d = pipeline(baseline, small, "D", 2, finetune=CFG, progress=False)
    assert not d.quantized and d.masks == {} and weight_sparsity(d.model) == 0
    assert all(math.isfinite(r["kd_loss"]) for r in d.history)
    assert [len(r.history) for r in (p, q, d)] == [2, 2, 2]


def test_top_level_verb(baseline, small):
    res = sv.pipeline(baseline, small, "Q", 1, finetune=CFG, progress=False)
    assert res.quantized and sv.pipeline.ORDERS == ORDERS


def test_the_plain_finetune_control_stage(baseline, small):
    """F trains like D without the teacher: PQF deploys the same sparse INT8 form as PQD, with no kd_loss."""
    res = pipeline(baseline, small, "PQF", (1, 1, 1), compression=4.0, finetune=CFG, progress=False)
    assert res.quantized and weight_sparsity(res.model) > 0.7
    assert [r["stage"] for r in res.history] == ["P", "Q", "F"]
    assert all("kd_loss" not in r or not math.isfinite(r.get("kd_loss", math.nan)) for r in res.history)
    with pytest.raises(ValueError, match="F repeated"):
        parse_order("PFF")


def test_equal_final_budget_allocation():
    from shrinkviz.techniques.pipeline import equal_final_epochs, final_form_epochs

    by_position = {o: final_form_epochs(o, (2, 4, 4)) for o in ORDERS}
    assert by_position == {"PQD": 8, "QPD": 8, "PDQ": 4, "QDP": 4, "DPQ": 4, "DQP": 4}  # the confound
    for order in (*ORDERS, "PQF"):
        epochs = equal_final_epochs(order, 10, 6)
        assert sum(epochs) == 10 and final_form_epochs(order, epochs) == 6 and min(epochs) >= 1
    assert equal_final_epochs("P", 5, 5) == (5,)
    with pytest.raises(ValueError, match="need >= 2 epochs"):
        equal_final_epochs("PDQ", 10, 9)  # one epoch cannot be split over P and D
    with pytest.raises(ValueError, match="total must equal final"):
        equal_final_epochs("Q", 10, 6)
