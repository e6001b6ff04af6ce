"""Data-parallel training of a converted model: torch.distributed (gloo), DDP, two processes on
this machine. Gradients are all-reduced, every rank's digital unit applies the same update, and
the replicas' devices, chi and random streams stay bit-identical (docs/torch.md, "DDP")."""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.numpy_only("CPU tensors on NumPy tiles")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
if sys.platform != "linux":
    pytest.skip("the DDP ranks are tested on Linux", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

torch.set_num_threads(1)     # one thread per rank (2 ranks on the test machine)

WORLD = 2
STEPS = 3
BATCH = 4                 # per rank
ENGINES = ("reference", "fused")
RUNS = ENGINES + ("reference-seed-per-rank",)


def _net():
    from torch import nn
    torch.manual_seed(0)                # the same initial weights on every rank (DDP also broadcasts)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _recording_allreduce(rec, bucket):
    """DDP's all-reduce (mean over the ranks), with the bucket recorded before and after."""
    buf = bucket.buffer()
    rec["before"].append(buf.clone().numpy())
    fut = dist.all_reduce(buf / WORLD, async_op=True).get_future()

    def done(f):
        t = f.value()[0]
        rec["after"].append(t.clone().numpy())
        return t

    return fut.then(done)


def _worker(rank, init, out):
    torch.set_num_threads(1)
    import mcasim.torch as mt
    from sim.config import config_from_dict
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    res = {}
    try:
        for run in RUNS:
            # full PCM; the same config (and so the same train.seed) on every rank, except the
            # last run, which seeds each rank's streams with its rank (what must not be done)
            engine = run.split("-")[0]
            seed = rank if run.endswith("per-rank") else 0
            cfg = config_from_dict({"synapse": {"mode": "pcm", "w_max": 1.0, "epsilon_uS": 0.5},
                                    "tile": {"engine": engine}, "train": {"seed": seed}})
            model = mt.convert_to_analog(_net(), cfg)
            ddp = DDP(model)
            r = {"grads": [], "before": [], "after": [], "pulses": []}
            ddp.register_comm_hook(r, _recording_allreduce)
            opt = mt.AnalogOptimizer(torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9))
            g = torch.Generator().manual_seed(1000 + rank)          # each rank its own data
            for _ in range(STEPS):
                x, y = torch.randn(BATCH, 2, 6, 6, generator=g), torch.randint(0, 3, (BATCH,), generator=g)
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
                r["grads"].append([p.grad.clone().numpy() for p in ddp.parameters()])
                opt.step()
                opt.zero_grad()
                r["pulses"].append(opt.last_pulses)
            r["state"] = [m.store.state_dict(m.backend) for m in mt.analog_modules(model)]
            r["weights"] = [m.store.weights().copy() for m in mt.analog_modules(model)]
            res[run] = r
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(res, f)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))
    return a == b


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(f"file://{d}/init", str(d)), nprocs=WORLD, start_method="spawn")
    out = []
    for r in range(WORLD):
        with open(d / f"rank{r}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_gradients_are_all_reduced(ranks, engine):
    """Each rank's own gradient (its data, its noisy reads) goes in, their mean comes out, the
    same on both ranks; the optimizer sees the reduced gradient."""
    r0, r1 = ranks[0][engine], ranks[1][engine]
    assert len(r0["before"]) == len(r0["after"]) >= STEPS
    for b0, b1, a0, a1 in zip(r0["before"], r1["before"], r0["after"], r1["after"]):
        assert not np.array_equal(b0, b1)                   # different data on the two ranks
        assert np.array_equal(a0, a1)                       # one reduced gradient
        # the mean of the two (float tolerance: (a + b) / 2 vs a / 2 + b / 2)
        np.testing.assert_allclose(a0, (b0 + b1) / WORLD, rtol=1e-5, atol=1e-7)
    for s in range(STEPS):
        assert all(np.array_equal(g0, g1) for g0, g1 in zip(r0["grads"][s], r1["grads"][s]))


@pytest.mark.parametrize("engine", ENGINES)
def test_replicas_stay_bit_identical(ranks, engine):
    """Devices, chi, the arbiters, every random stream's state and the weights: equal on both ranks
    after the steps, which sent pulses."""
    r0, r1 = ranks[0][engine], ranks[1][engine]
    assert r0["pulses"] == r1["pulses"] and sum(r0["pulses"]) > 0
    assert _same(r0["state"], r1["state"])
    assert _same(r0["weights"], r1["weights"])


def test_reference_engine_needs_the_same_seed_on_every_rank(ranks):
    """The reference engine draws from per-process streams seeded by train.seed: seeded per rank,
    the replicas' devices part at once (the same config on every rank keeps them together)."""
    r0, r1 = ranks[0]["reference-seed-per-rank"], ranks[1]["reference-seed-per-rank"]
    assert not _same(r0["state"], r1["state"])
