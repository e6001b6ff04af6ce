"""`mcasim sweep`: spec validation, the sequential and Ray engines, faults (kill, retry, resume)."""
import csv
import json
import os
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest

from sim.cli import main
from sim.sweep.spec import SpecError, load_spec, parse_spec
from tests.conftest import TEST_BACKEND

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "sweeps" / "digits_smoke.toml"
FIELDS = ("test_accuracy", "loss", "total_pulses", "total_refreshes", "events")


@pytest.fixture(autouse=True)
def _one_blas_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MCASIM_SWEEP_FAULT", raising=False)


def have_ray() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows(out: Path) -> dict:
    with open(out / "results.csv") as f:
        return {r["trial"]: r for r in csv.DictReader(f)}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def metrics(run: Path) -> list:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path):
    sa, sb = summary(a), summary(b)
    for k in FIELDS:
        assert sa[k] == sb[k], k
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb)
    for ra, rb in zip(ma, mb):
        for k in ("loss", "train_accuracy", "test_accuracy", "pulses", "refreshes"):
            assert ra[k] == rb[k], (ra["epoch"], k)


# --- specs -------------------------------------------------------------------------------------------

def test_grid_zip_search_expansion(tmp_path):
    base = write(tmp_path / "base.toml", "[train]\nepochs = 3\nseed = 7\n")
    s = load_spec(write(tmp_path / "g.toml", """
[sweep]
dataset = "digits"
config = "base.toml"
seeds = [0, 1]
[[axis]]
key = "train.lr"
values = [0.1, 0.2, 0.3]
[[axis]]
name = "noise"
set = ["synapse.read_noise=true", ["synapse.read_noise=false", "synapse.drift=false"]]
"""))
    assert len(s.trials) == 3 * 2 * 2
    t = s.trials[0]
    assert t.id == "lr=0.1_read_noise=true_seed0" and t.epochs == 3 and t.seed == 0
    assert t.config == str(base.resolve())
    assert t.knobs == {"lr": "0.1", "noise": "read_noise=true"} and t.values["lr"] == 0.1
    a = t.argv(tmp_path / "r")
    assert a[:2] == ["train", "mlp"] and a[a.index("--seed") + 1] == "0"
    assert "train.lr=0.1" in a and "--epochs" not in a   # the config's epochs, as `mcasim train` would
    assert s.trials[3].sets[-2:] == ["synapse.read_noise=false", "synapse.drift=false"]

    z = load_spec(write(tmp_path / "z.toml", """
[sweep]
dataset = "digits"
combine = "zip"
epochs = 1
[[axis]]
key = "train.lr"
values = [0.1, 0.2]
[[axis]]
key = "train.batch_size"
values = [5, 10]
"""))
    assert [t.id for t in z.trials] == ["lr=0.1_batch_size=5_seed0", "lr=0.2_batch_size=10_seed0"]

    text = """
[sweep]
dataset = "digits"
epochs = 2
[search]
samples = 5
seed = 3
params = {"train.lr" = {low = 0.01, high = 1.0, scale = "log"}, "train.batch_size" = {low = 5, high = 20}}
"""
    r1, r2 = load_spec(write(tmp_path / "r.toml", text)), load_spec(write(tmp_path / "r2.toml", text))
    assert [t.sets for t in r1.trials] == [t.sets for t in r2.trials]   # deterministic samples
    lrs = [float(t.knobs["train.lr"]) for t in r1.trials]
    assert len(set(lrs)) == 5 and all(0.01 <= x <= 1.0 for x in lrs)
    assert all(5 <= int(t.knobs["train.batch_size"]) <= 20 for t in r1.trials)


def test_metric_and_mode_follow_the_task(tmp_path):
    """Each network's own per-epoch figure is the default metric, with its direction."""
    cases = {("gan", None): ("fd", "min"), ("gan", "classes_covered"): ("classes_covered", "max"),
             ("lstm", None): ("valid_bpc", "min"), ("cnn", None): ("test_accuracy", "max"),
             ("mlp", "pulses"): ("pulses", "min")}
    for (arch, metric), want in cases.items():
        body = f'[sweep]\narch = "{arch}"\ndataset = "digits"\n' + (f'metric = "{metric}"\n' if metric else "")
        spec = parse_spec(tomllib.loads(body), tmp_path / "s.toml")
        assert (spec.metric, spec.mode) == want, (arch, metric)


@pytest.mark.parametrize("body, message", [
    ('[sweep]\ndataset = "digits"\nseeds = [0]\nfoo = 1\n', "unknown key foo in [sweep]"),
    ('[sweep]\ndataset = "digits"\n[[axis]]\nkey = "train.lr"\nvalues = []\n', "axis 'lr' is empty"),
    ('[sweep]\ndataset = "digits"\n[[axis]]\nkey = "synapse.refresh_threshold"\nvalues = [0.5, 1.5]\n',
     "synapse.refresh_threshold must be in (0, 1], got 1.5"),
    ('[sweep]\ndataset = "digits"\nset = ["synapse.colour=3"]\n', "unknown key synapse.colour"),
    ('[sweep]\ndataset = "digits"\n[[axis]]\nname = "x"\nset = ["train.lr"]\n', "--set expects SECTION.KEY=VALUE"),
    ('[sweep]\ndataset = "digits"\n[[axis]]\nkey = "train.lr"\nvalues = [0.1]\nvalue = 2\n', "unknown key value"),
    ('[sweep]\ndataset = "cifar100"\n', "cifar100"),
    ('[sweep]\ndataset = "digits"\nmetric = "fd"\n', "sweep.metric for mlp runs must be one of"),
    ('[sweep]\narch = "rnn"\ndataset = "digits"\n', "sweep.arch must be one of"),
])
def test_bad_spec_fails_before_any_trial(tmp_path, capsys, body, message):
    spec = write(tmp_path / "bad.toml", body)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--engine", "local"]) == 2
    err = capsys.readouterr().err
    assert "mcasim sweep: error:" in err and message in err, err
    assert not out.exists()   # nothing started


def _readme_runs() -> set:
    """(config, sorted --set overrides, seed) of every run in the README's MLP tables."""
    text = (REPO / "README.md").read_text()
    runs = set()
    for cmd in re.findall(r"`(mcasim train mlp --dataset mnist [^`]*)`", text):
        a = shlex.split(cmd)
        cfg = Path(a[a.index("--config") + 1]).name
        seed = int(a[a.index("--seed") + 1]) if "--seed" in a else 0
        sets = tuple(sorted(a[i + 1] for i, x in enumerate(a) if x == "--set"))
        runs.add((cfg, sets, seed))
    return runs


def _readme_cnn_runs() -> set:
    """(config, sorted --set overrides, seed) of every 30-epoch CNN run the README quotes."""
    text = (REPO / "README.md").read_text()
    runs = set()
    for cmd in re.findall(r"`(mcasim train cnn --dataset cifar10 [^`]*)`", text):
        a = shlex.split(cmd)
        if "--epochs" in a and a[a.index("--epochs") + 1] != "30":
            continue                     # a short run (e.g. the PyTorch section's 2-epoch comparison)
        cfg = Path(a[a.index("--config") + 1]).name
        seed = int(a[a.index("--seed") + 1]) if "--seed" in a else 0
        sets = tuple(sorted(a[i + 1] for i, x in enumerate(a) if x == "--set"))
        runs.add((cfg, sets, seed))
    return runs


def test_shipped_cnn_spec_remakes_the_readme_cnn_tables():
    readme = _readme_cnn_runs()
    assert len(readme) == 7, readme
    made = set()
    for name in ("cnn_cifar10_seeds", "cnn_cifar10_fused"):
        for t in load_spec(REPO / "configs" / "sweeps" / f"{name}.toml").trials:
            assert t.pass_seed and t.epochs == 30 and t.dataset == "cifar10"
            made.add((Path(t.config).name, tuple(sorted(t.sets)), t.seed))
    assert made == readme


def test_shipped_specs_remake_the_readme_tables():
    readme = _readme_runs()
    assert len(readme) >= 12, readme
    made = set()
    for name in ("mlp_mnist_seeds", "mlp_mnist_ablation", "mlp_mnist_fused"):
        s = load_spec(REPO / "configs" / "sweeps" / f"{name}.toml")
        for t in s.trials:
            assert t.pass_seed and t.epochs == 20 and t.dataset == "mnist"
            made.add((Path(t.config).name, tuple(sorted(t.sets)), t.seed))
    assert made == readme
    for p in sorted((REPO / "configs" / "sweeps").glob("*.toml")):
        assert load_spec(p).trials, p   # every shipped spec is valid


def test_shipped_gan_specs_make_the_readme_gan_tables():
    """Every run of the README's faithful-config GAN tables (issue 26: the 30-epoch table and the
    15-epoch devices-per-side table) is a trial of gan_mnist_faithful.toml or gan_pcm_devices.toml."""
    text = (REPO / "README.md").read_text()
    faithful = {"gan_mnist_fp32.toml", "gan_mnist_pcm.toml", "gan_mnist_ideal.toml"}
    readme = set()
    for cmd in re.findall(r"`(mcasim train gan --dataset mnist [^`]*)`", text):
        a = shlex.split(cmd)
        cfg = Path(a[a.index("--config") + 1]).name
        if cfg not in faithful:
            continue                     # the cheap config's table and the ablation
        seed = int(a[a.index("--seed") + 1]) if "--seed" in a else 0
        epochs = int(a[a.index("--epochs") + 1]) if "--epochs" in a else 30
        readme.add((cfg, tuple(sorted(a[i + 1] for i, x in enumerate(a) if x == "--set")), seed, epochs))
    made = set()
    for name in ("gan_mnist_faithful", "gan_pcm_devices"):
        for t in load_spec(REPO / "configs" / "sweeps" / f"{name}.toml").trials:
            assert t.pass_seed and t.dataset == "mnist"
            made.add((Path(t.config).name, tuple(sorted(t.sets)), t.seed, t.epochs))
    assert {("gan_mnist_pcm.toml", (), 0, 30), ("gan_mnist_pcm.toml", (), 1, 30),
            ("gan_mnist_pcm.toml", ("synapse.devices_per_side=32",), 0, 15)} <= readme
    assert readme <= made, readme - made


# --- running ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The CI sweep (digits, 4 trials, 2 seeds) one after another, without Ray."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main(["sweep", str(SMOKE), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    return out


def test_local_sweep_results(local_sweep, capsys):
    out = local_sweep
    r = rows(out)
    assert sorted(r) == ["lr=0.1_seed0", "lr=0.1_seed1", "lr=0.2_seed0", "lr=0.2_seed1"]
    for tid, row in r.items():
        run = out / "trials" / tid
        s = summary(run)
        assert row["status"] == "done" and s["epochs"] == 2
        assert float(row["final_test_accuracy"]) == s["test_accuracy"] == metrics(run)[-1]["test_accuracy"]
        assert int(row["total_pulses"]) == s["total_pulses"] > 0
        assert float(row["energy_cm_nJ_per_image"]) > 0
        for f in ("config.toml", "checkpoint.npz", "accuracy.png"):
            assert (run / f).is_file()
        # the summary's command is the plain `mcasim train` command of the run
        assert "--resume" not in s["command"] and f"--seed {s['seed']}" in s["command"]
    assert r["lr=0.1_seed0"]["lr"] == "0.1" and r["lr=0.2_seed1"]["seed"] == "1"
    md = (out / "results.md").read_text()
    assert "Mean ± std over seeds per point" in md and " ± " in md
    assert (out / "results.png").stat().st_size > 1000
    # ordinary run folders: other commands work on them
    runs = sorted(str(p) for p in (out / "trials").iterdir())
    assert main(["report", *runs, "--stats"]) == 0
    assert "mean ± std of 4" in capsys.readouterr().out
    assert main(["energy", runs[0]]) == 0


def test_local_sweep_started_again_skips_finished(local_sweep, capsys):
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (local_sweep / "trials").iterdir()}
    assert main(["sweep", str(SMOKE), "--out", str(local_sweep), "--engine", "local"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished in an earlier session: skipped") == 4
    assert before == {p.name: (p / "summary.json").stat().st_mtime_ns for p in (local_sweep / "trials").iterdir()}


def _kill_spec(tmp_path, retries):
    # the trials run in child processes, which tests/conftest.py does not patch: they get the
    # backend under test by name (the uninterrupted reference asks for "numpy", which the
    # conftest turns into CuPy under MCASIM_TEST_BACKEND=cupy)
    # batch 2 makes an epoch long enough (~1 s) for the kill to land inside epoch 2
    return write(tmp_path / f"kill{retries}.toml", f"""
[sweep]
dataset = "digits"
seeds = [4]
epochs = 3
backend = "{TEST_BACKEND}"
retries = {retries}
set = ["model.hidden=[16]", "train.batch_size=2", "synapse.mode=pcm"]
[[axis]]
key = "train.lr"
values = [0.05, 0.1]
""")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The killed trial, run by plain `mcasim train` without interruption."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "mlp", "--dataset", "digits", "--seed", "4", "--set", "model.hidden=[16]", "--set",
                 "train.batch_size=2", "--set", "synapse.mode=pcm", "--set", "train.lr=0.05", "--epochs", "3",
                 "--backend", "numpy", "--quiet", "--out", str(out)]) == 0
    return out


def test_killed_trial_is_retried_and_equals_uninterrupted(tmp_path, monkeypatch, uninterrupted):
    spec = _kill_spec(tmp_path, retries=1)
    out = tmp_path / "sweep"
    monkeypatch.setenv("MCASIM_SWEEP_FAULT", "lr=0.05_seed4:1")   # SIGKILL once epoch 1 is written
    assert main(["sweep", str(spec), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    run = out / "trials" / "lr=0.05_seed4"
    st = json.loads((run / "sweep_trial.json").read_text())
    assert st["status"] == "done" and st["attempts"] == 2
    assert st["errors"][0]["epochs_done"] < 3 and "SIGKILL" in st["errors"][0]["error"]   # killed mid-run
    log = (run / "sweep_train.log").read_text()
    assert "# attempt 2:" in log and "--resume" in log.split("# attempt 2:")[1]
    assert_same_run(run, uninterrupted)
    assert rows(out)["lr=0.05_seed4"]["attempts"] == "2"


def test_interrupted_sweep_goes_on_lists_failure_and_resumes(tmp_path, monkeypatch, capsys, uninterrupted):
    spec = _kill_spec(tmp_path, retries=0)
    out = tmp_path / "sweep"
    monkeypatch.setenv("MCASIM_SWEEP_FAULT", "lr=0.05_seed4:1")
    assert main(["sweep", str(spec), "--out", str(out), "--engine", "local", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "failed: lr=0.05_seed4: killed by SIGKILL after epoch 1" in err
    r = rows(out)
    assert r["lr=0.05_seed4"]["status"] == "failed" and r["lr=0.1_seed4"]["status"] == "done"  # went on
    assert "## Failures" in (out / "results.md").read_text()
    other = (out / "trials" / "lr=0.1_seed4" / "summary.json").stat().st_mtime_ns
    monkeypatch.delenv("MCASIM_SWEEP_FAULT")
    assert main(["sweep", str(spec), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    run = out / "trials" / "lr=0.05_seed4"
    assert "--resume" in (run / "sweep_train.log").read_text().split("# attempt 2:")[1]
    assert (out / "trials" / "lr=0.1_seed4" / "summary.json").stat().st_mtime_ns == other   # skipped
    assert_same_run(run, uninterrupted)


def test_changed_spec_does_not_reuse_folders(local_sweep, tmp_path, capsys):
    spec = write(tmp_path / "changed.toml", SMOKE.read_text().replace("epochs = 2", "epochs = 3"))
    assert main(["sweep", str(spec), "--out", str(local_sweep), "--engine", "local"]) == 2
    assert "was made by a different command" in capsys.readouterr().err


def test_without_ray_runs_one_after_another(tmp_path, monkeypatch, capsys):
    """The path taken when Ray is not installed, tested even where it is."""
    import sim.sweep.engines as engines
    monkeypatch.setattr(engines, "ray_available", lambda: False)
    spec = write(tmp_path / "one.toml", '[sweep]\ndataset = "digits"\nepochs = 1\nbackend = "numpy"\n'
                                        'set = ["model.hidden=[8]", "synapse.mode=fp32"]\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "a"), "--engine", "ray"]) == 2
    assert "Ray is not installed" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "Ray is not installed (pip install 'mcasim[sweep]'): running the 1 trial one after another" in err
    assert json.loads((tmp_path / "b" / "sweep.json").read_text())["engine"] == "local"
    assert rows(tmp_path / "b")["seed0"]["status"] == "done"


# --- Ray -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    if not have_ray():
        pytest.skip("Ray is not installed (pip install 'mcasim[sweep]')")
    import ray
    from sim.sweep.engines import init_ray
    os.environ["OMP_NUM_THREADS"] = "1"
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_sweep_equals_sequential(ray_session, local_sweep, tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "sweep"
    assert main(["sweep", str(SMOKE), "--out", str(out), "--engine", "ray", "--quiet"]) == 0
    a, b = rows(out), rows(local_sweep)
    assert sorted(a) == sorted(b)
    for tid in a:
        assert a[tid]["status"] == "done"
        assert_same_run(out / "trials" / tid, local_sweep / "trials" / tid)
    assert json.loads((out / "sweep.json").read_text())["engine"] == "ray"
    # a trial killed on a Ray worker is retried from its checkpoint, with the same result
    spec = _kill_spec(tmp_path, retries=1)
    monkeypatch.setenv("MCASIM_SWEEP_FAULT", "lr=0.05_seed4:1")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "kill"), "--engine", "ray", "--quiet"]) == 0
    run = tmp_path / "kill" / "trials" / "lr=0.05_seed4"
    assert json.loads((run / "sweep_trial.json").read_text())["attempts"] == 2
    assert_same_run(run, uninterrupted)


def test_ray_early_stopping_asha(ray_session, tmp_path):
    spec = write(tmp_path / "asha.toml", """
[sweep]
dataset = "digits"
epochs = 3
backend = "numpy"
set = ["model.hidden=[16]", "synapse.mode=pcm"]
[[axis]]
key = "train.lr"
values = [0.4, 0.2, 0.005, 0.002]   # the good ones first: they set the bar at each rung
[early_stop]
scheduler = "asha"
grace_epochs = 1
reduction_factor = 2
""")
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--engine", "ray", "--quiet", "--max-concurrent", "2"]) == 0
    r = rows(out)
    stopped = [t for t, row in r.items() if row["status"] == "stopped"]
    assert stopped, r
    for t in stopped:
        s = summary(out / "trials" / t)
        assert s["epochs"] < 3 and s.get("stopped_early") and int(r[t]["epochs"]) == s["epochs"]
        # lockstep: the child trained exactly the epochs the scheduler let it (no epoch ran past the
        # stop however short the epochs are)
        assert len((out / "trials" / t / "metrics.jsonl").read_text().splitlines()) == s["epochs"]
    assert r["lr=0.4_seed0"]["status"] == "done"
    shutil.rmtree(out / "_ray", ignore_errors=True)
