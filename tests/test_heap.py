"""The steady heap: set once per process on glibc, the user's allocator choice respected, the free memory
handed back when the outermost training ends, and no page faults left in a training step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from shrinkviz.core import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

PROBE = """
import json, resource, torch, torch.nn.functional as F
from shrinkviz.core.heap import heap_state, steady_heap
from shrinkviz.models import create_model
torch.set_num_threads(1)
model = create_model("resnet20", input_shape=(3, 32, 32), seed=0).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (64,))
def step():
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
with steady_heap():
    for _ in range(6):
        step()
    counts = []
    for _ in range(9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = sorted(counts)[4]  # the median step: a one-off growth of the heap is not a step's cost
print(json.dumps({"state": heap_state(), "faults_per_step": faults}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in heap.USER_VARIABLES and k != "SHRINKVIZ_HEAP"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_a_training_step_faults_no_pages_in_once_the_heap_is_held():
    held, default = _probe(), _probe(SHRINKVIZ_HEAP="default")
    assert held["state"] == "held"
    assert held["faults_per_step"] < 50
    assert (
        default["faults_per_step"] > 500
    )  # glibc's own thresholds: thousands (freed activations re-faulted)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
@pytest.mark.parametrize(
    "env, state",
    [
        ({"SHRINKVIZ_HEAP": "default"}, "glibc defaults kept: SHRINKVIZ_HEAP=default"),
        ({"MALLOC_TRIM_THRESHOLD_": "65536"}, "user's setting kept"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}, "user's setting kept"),
    ],  # fmt: skip
)
def test_the_users_allocator_choice_is_left_alone(env, state):
    assert _probe(**env)["state"] == state


def test_only_the_outermost_exit_hands_memory_back(monkeypatch):
    trims, thresholds = [], []

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(pad)

        def mallopt(self, param, value):
            thresholds.append(value)
            return 1

    monkeypatch.setattr(heap, "_state", "held")
    monkeypatch.setattr(heap, "_libc", FakeLibc())
    with heap.steady_heap():
        with heap.steady_heap():
            pass
        assert trims == []
    assert trims == [0]
    assert thresholds == [heap.TRAINING_TRIM_THRESHOLD, heap.TRIM_THRESHOLD]  # raised while training only
    with pytest.raises(RuntimeError), heap.steady_heap():
        raise RuntimeError("a failed epoch")
    assert trims == [0, 0] and heap._depth == 0
