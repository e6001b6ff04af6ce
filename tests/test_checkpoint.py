"""Checkpoints (sim/checkpoint.py): exact round trips, no pickle on load, atomic writes, damage and fallback."""
import json
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gpu_model.backend import make_backend
from sim import checkpoint as ckpt
from sim.cli import main
from sim.config import config_from_dict
from sim.data import load_dataset
from sim.train import CHECKPOINT, CHECKPOINT_PREV, Trainer, load_checkpoint, restore_trainer

TIMING_KEYS = ("seconds", "eval_seconds")   # wall-clock figures: the only ones a rerun may change


def assert_identical(a, b, where="state"):
    """``a`` and ``b`` are the same structure: same types, same values, arrays bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{where}: values differ"
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def without_timing(state: dict) -> dict:
    st = dict(state)
    st["metrics"] = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in st["metrics"]]
    return st


def small_cfg(mode: str, epochs: int, **synapse):
    return config_from_dict({"train": {"epochs": epochs, "train_subset": 400, "test_subset": 200, "lr": 0.2,
                                       "seed": 3, "optimizer": "momentum"},
                             "model": {"arch": "mlp", "hidden": [16]},
                             "synapse": {"mode": mode, **synapse}})


RUNS = {
    "fp32": dict(mode="fp32"),
    "pcm_3dev_verified": dict(mode="pcm", devices_per_side=3, verified_update=True),
}


# --- the structure encoding -------------------------------------------------------------------------
def test_every_supported_type_reads_back_identically(tmp_path):
    st = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "fortran": np.asfortranarray(np.ones((3, 2))),
          "empty": np.zeros((0, 4), np.int16), "zero_d": np.array(7, np.int64), "bools": np.array([True, False]),
          "tuple": (1, 2.5, None, True, "x"), "list": [[], {}, ()], "pcg64": 2 ** 127 + 5, "neg": -2 ** 70,
          "int64_edge": [2 ** 63 - 1, -2 ** 63, 2 ** 63], "nan": float("nan"), "inf": -math.inf, "negzero": -0.0,
          "tiny": 5e-324, "int_keys": {3: np.zeros((2, 2), np.uint8), 4: None}, "tuple_key": {(1, "a"): 1},
          "np_scalars": [np.float64(1.5), np.int64(3), np.float32(0.1), np.bool_(True), np.uint8(200)],
          "unicode": "µS ✓", "nested": {"a": {"b": {"c": [1, (2, [3.0])]}}}}
    ckpt.save(tmp_path / "c.npz", st)
    back = ckpt.load(tmp_path / "c.npz")
    assert_identical(st, back)
    assert back["f32"].flags.writeable and back["fortran"].flags.f_contiguous
    # a valid .npz: NumPy reads its arrays without pickle
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert "manifest.json" in z.files and np.array_equal(z["a0"], st["f32"])


@pytest.mark.parametrize("bad, what", [
    (np.array([object()], dtype=object), "object array"),
    ({1, 2}, "builtins.set"),
    (type("Sub", (int,), {})(3), "Sub"),
    (complex(1, 2), "complex"),
])
def test_unsupported_values_are_refused_naming_where(tmp_path, bad, what):
    with pytest.raises(ckpt.CheckpointError, match=f"{what}.*state.task.x|state.task.x.*{what}"):
        ckpt.save(tmp_path / "c.npz", {"task": {"x": bad}})
    assert not (tmp_path / "c.npz").exists()


def test_loading_never_unpickles(tmp_path, monkeypatch):
    ckpt.save(tmp_path / "c.npz", {"a": np.ones(3), "b": [1, (2,)]})

    def refuse(*a, **k):
        raise AssertionError("checkpoint loading used pickle")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert ckpt.load(tmp_path / "c.npz")["b"] == [1, (2,)]


# --- atomic writes, the previous checkpoint ------------------------------------------------------------
def test_save_keeps_the_previous_checkpoint_and_ignores_a_stale_part_file(tmp_path):
    path = tmp_path / "checkpoint.npz"
    (tmp_path / "checkpoint.npz.part").write_bytes(b"half a checkpoint of a killed run")
    ckpt.save(path, {"epoch": 1})
    assert not ckpt.previous_path(path).exists()
    ckpt.save(path, {"epoch": 2})
    assert ckpt.load(path) == {"epoch": 2} and ckpt.load(ckpt.previous_path(path)) == {"epoch": 1}
    ckpt.save(path, {"epoch": 3})
    assert ckpt.load(ckpt.previous_path(path)) == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "checkpoint.prev.npz"]


def test_write_text_atomic_replaces_whole_files(tmp_path):
    p = tmp_path / "metrics.jsonl"
    ckpt.write_text_atomic(p, "a\n")
    ckpt.write_text_atomic(p, "a\nb\n")
    assert p.read_text() == "a\nb\n" and [x.name for x in tmp_path.iterdir()] == ["metrics.jsonl"]


# --- damaged files ---------------------------------------------------------------------------------------
def _saved(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save(path, {"w": np.arange(4096, dtype=np.float32), "n": 5})
    return path


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _member_offset(path, name):
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    return info.header_offset + 30 + len(info.filename)   # local header: 30 bytes + name (no extra field)


@pytest.mark.parametrize("damage", ["truncated", "truncated_to_zero", "array_byte", "manifest_byte",
                                    "not_a_zip", "no_manifest", "newer_version", "other_npz"])
def test_damaged_checkpoint_is_a_clear_error_naming_the_file(tmp_path, damage):
    path = _saved(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "truncated_to_zero":
        path.write_bytes(b"")
    elif damage == "array_byte":
        _flip(path, _member_offset(path, "a0.npy") + 1000)
    elif damage == "manifest_byte":
        _flip(path, _member_offset(path, "manifest.json") + 5)
    elif damage == "not_a_zip":
        path.write_bytes(pickle.dumps({"epoch": 1}))
    elif damage == "no_manifest":
        np.savez(path, w=np.ones(3))
    elif damage == "other_npz":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("manifest.json", json.dumps({"format": "something-else"}))
    elif damage == "newer_version":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("manifest.json", json.dumps({"format": ckpt.FORMAT_NAME, "version": ckpt.FORMAT_VERSION + 1,
                                                     "arrays": {}, "state": None}))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if damage == "newer_version":
        assert "newer mcasim" in msg


def test_load_or_previous_falls_back_only_on_request(tmp_path, capsys):
    path = tmp_path / "checkpoint.npz"
    ckpt.save(path, {"epoch": 1})
    ckpt.save(path, {"epoch": 2})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ckpt.CheckpointError, match="--fallback-checkpoint"):
        ckpt.load_or_previous(path, fallback=False)
    st, used = ckpt.load_or_previous(path, fallback=True)
    assert st == {"epoch": 1} and used == ckpt.previous_path(path)
    assert "using the previous checkpoint" in capsys.readouterr().err


# --- real trainer states -------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", list(RUNS))
def test_real_trainer_state_round_trips_exactly(tmp_path, run):
    tr = Trainer(small_cfg(epochs=1, **RUNS[run]), load_dataset("digits", None), make_backend("numpy", 0),
                 tmp_path, progress=False)
    tr.run()
    st = tr.state()
    ckpt.save(tmp_path / "again.npz", st)
    assert_identical(st, ckpt.load(tmp_path / "again.npz"))
    assert_identical(st, load_checkpoint(tmp_path))           # the file the run itself wrote
    if run != "fp32":   # 128-bit PCG64 states and multi-device arbiters are in it
        flat = json.dumps(ckpt.load(tmp_path / CHECKPOINT)["task"], default=lambda a: None)
        assert "arbiter" in flat and "feedback" in flat


@pytest.mark.parametrize("run", list(RUNS))
def test_resumed_training_equals_uninterrupted_bit_for_bit(tmp_path, run):
    ds, syn = load_dataset("digits", None), RUNS[run]
    full = Trainer(small_cfg(epochs=3, **syn), ds, make_backend("numpy", 0), tmp_path / "full", progress=False)
    (tmp_path / "full").mkdir()
    full.run()
    (tmp_path / "part").mkdir()
    Trainer(small_cfg(epochs=1, **syn), ds, make_backend("numpy", 0), tmp_path / "part", progress=False).run()
    again = restore_trainer(tmp_path / "part", small_cfg(epochs=3, **syn), make_backend("numpy", 0), ds)
    assert again.epoch == 1
    again.run()
    assert_identical(without_timing(full.state()), without_timing(again.state()))
    a, b = full.summary(), again.summary()
    for k in ("seconds_per_epoch", "total_train_seconds"):
        a.pop(k), b.pop(k)
    assert_identical(a, b, "summary")
    # the previous checkpoint is the epoch before
    assert load_checkpoint(tmp_path / "part")["epoch"] == 3
    assert ckpt.load(tmp_path / "part" / CHECKPOINT_PREV)["epoch"] == 2


# --- the CLI: fallback, metrics.jsonl, old pickles ---------------------------------------------------------
CLI = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy", "--seed", "5",
       "--set", "model.hidden=[16]", "--set", "train.lr=0.2", "--set", "train.train_subset=300"]


def _metrics(run):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _summary(run):
    s = json.loads((run / "summary.json").read_text())
    for k in ("seconds_per_epoch", "total_train_seconds", "command"):
        s.pop(k)
    return s


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(CLI + ["--epochs", "3", "--out", str(out)]) == 0
    return out


def test_corrupted_checkpoint_resumes_from_the_previous_on_request(tmp_path, reference_run, capsys):
    out = tmp_path / "run"
    assert main(CLI + ["--epochs", "2", "--out", str(out)]) == 0
    _flip(out / CHECKPOINT, (out / CHECKPOINT).stat().st_size // 2)
    capsys.readouterr()
    assert main(CLI + ["--epochs", "3", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(out / CHECKPOINT) in err and "--fallback-checkpoint" in err and len(err.splitlines()) == 1
    assert main(CLI + ["--epochs", "3", "--out", str(out), "--resume", "--fallback-checkpoint"]) == 0
    assert "using the previous checkpoint" in capsys.readouterr().err
    assert (out / "checkpoint.corrupt.npz").is_file()
    assert _metrics(out) == _metrics(reference_run) and _summary(out) == _summary(reference_run)


def test_resume_rewrites_metrics_without_duplicates_or_half_lines(tmp_path, reference_run):
    out = tmp_path / "run"
    assert main(CLI + ["--epochs", "2", "--out", str(out)]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines + lines[1:]) + "\n" + lines[0][:17])   # dup + half line
    assert main(CLI + ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3]
    assert _metrics(out) == _metrics(reference_run)


def test_fallback_flag_needs_resume(tmp_path, capsys):
    assert main(CLI + ["--epochs", "1", "--out", str(tmp_path / "r"), "--fallback-checkpoint"]) == 2
    assert "--fallback-checkpoint goes with --resume" in capsys.readouterr().err


def test_old_pickle_run_folder_is_a_clear_error_and_converts(tmp_path, reference_run, capsys):
    out = tmp_path / "old"
    assert main(CLI + ["--epochs", "2", "--out", str(out)]) == 0
    state = load_checkpoint(out)
    for name in (CHECKPOINT, CHECKPOINT_PREV):
        (out / name).unlink()
    with open(out / "checkpoint.pkl", "wb") as f:         # what mcasim wrote before the .npz checkpoints
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    capsys.readouterr()
    assert main(CLI + ["--epochs", "3", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pkl" in err and "python -m sim.checkpoint convert" in err
    assert ckpt.main(["convert", str(out)]) == 0
    assert main(CLI + ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert _metrics(out) == _metrics(reference_run) and _summary(out) == _summary(reference_run)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_converter_refuses_a_pickle_that_names_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "checkpoint.pkl", "wb") as f:
        pickle.dump({"format": 2, "task": _Evil()}, f)
    assert ckpt.main(["convert", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refused posix.system" in err or "refused nt.system" in err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / CHECKPOINT).exists()


def test_a_run_folder_in_use_is_refused(tmp_path, capsys):
    import subprocess
    import sys
    out = tmp_path / "run"
    assert main(CLI + ["--epochs", "1", "--out", str(out)]) == 0
    before = (out / CHECKPOINT).read_bytes()
    holder = subprocess.Popen(      # another process holds the folder, as a running training does
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from sim.cli.train import "
         "lock_run_folder; lock, _ = lock_run_folder(Path(sys.argv[1])); print(lock is not None, flush=True); "
         "time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "True"
        capsys.readouterr()
        assert main(CLI + ["--epochs", "2", "--out", str(out), "--resume"]) == 2
        assert f"run folder {out} is in use by another mcasim train (pid {holder.pid})" in capsys.readouterr().err
        assert (out / CHECKPOINT).read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    assert main(CLI + ["--epochs", "2", "--out", str(out), "--resume"]) == 0
