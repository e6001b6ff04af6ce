"""The GAN task and its image-quality metric: LeakyReLU and loss gradients, the Fréchet distance
(NumPy-only square root), the metric's ranking (real < blurred < noisy < random noise) and coverage
(a collapsed generator), short fp32/PCM GAN runs (event counts of both networks, grids, energy,
sampling), exact resume, the generator-only ablation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_model.backend import make_backend
from sim import quality
from sim.config import ConfigError, config_from_dict
from sim.nn import Dense, FP32Weights, Sequential
from sim.nn.gan_layers import LeakyReLU, bce_with_logits

from tests.conftest import central_difference, to_host

H_FD = 1e-6   # finite-difference step (float64)


def _numeric(f, arr, idx, h=H_FD):
    return central_difference(f, arr, idx, h)


# --- layers and losses -------------------------------------------------------------------------------
def test_leaky_relu_and_bce_gradients_match_finite_differences():
    """dLoss/dx through Dense -> LeakyReLU -> Dense -> BCE(logit, t) (the G step's input gradient;
    t = 0.9: D's smoothed real label)."""
    be = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    xp = be.xp
    rng = np.random.default_rng(0)
    net = Sequential([Dense("fc1", FP32Weights(rng.normal(0, 0.5, (7, 5)), be), xp),
                      LeakyReLU("act1", xp, 0.2),
                      Dense("fc2", FP32Weights(rng.normal(0, 0.5, (1, 7)), be), xp)])
    x = xp.asarray(rng.normal(size=(4, 5)).astype(np.float64))
    for L in net.layers:                       # float64 for the finite differences
        if hasattr(L, "store"):
            L.store.w = L.store.w.astype(np.float64)
            L.b.value = xp.asarray(rng.normal(0, 0.1, L.b.value.shape))
    for target in (0.0, 1.0, 0.9):
        loss, d = bce_with_logits(xp, net.forward(x), target)
        dx = net.backward(d, need_dx=True)
        num = np.zeros(x.shape)
        for idx in np.ndindex(x.shape):
            num[idx] = _numeric(lambda: bce_with_logits(xp, net.forward(x), target)[0], x, idx)
        np.testing.assert_allclose(to_host(dx), num, rtol=1e-5, atol=1e-8)
        # the G step's input gradient through D (no parameter gradients) is the same
        from sim.tasks.gan import input_gradient
        net.forward(x)
        np.testing.assert_array_equal(to_host(input_gradient(net, d)), to_host(dx))
    # large logits: no overflow, loss ~ |logit|
    loss, d = bce_with_logits(xp, xp.asarray([[1000.0], [-1000.0]]), 1.0)
    assert np.isfinite(loss) and abs(loss - 1000.0) < 1e-6
    assert float(d[0, 0]) == 0.0 and float(d[1, 0]) == -1.0


def test_class_bias_equals_one_hot_rows_and_gradients_match_finite_differences():
    """ClassBias: Dense(x) + E[c] equals a Dense fed [x, onehot(c)] with E^T as its label columns;
    dL/dE and dL/dx of Dense -> ClassBias -> LeakyReLU -> Dense -> BCE match central differences."""
    from sim.nn.gan_layers import ClassBias
    be = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    xp = be.xp
    rng = np.random.default_rng(1)
    K, F_in, H = 4, 5, 6
    w = rng.normal(0, 0.5, (H, F_in + K))
    x_host = rng.normal(size=(7, F_in))
    x = xp.asarray(x_host)
    c_host = np.array([0, 3, 1, 3, 2, 0, 3])
    c = xp.asarray(c_host)
    rows = Dense("fc", FP32Weights(w, be), xp)
    rows.store.w = rows.store.w.astype(np.float64)
    fc = Dense("fc1", FP32Weights(w[:, :F_in], be), xp)
    fc.store.w = fc.store.w.astype(np.float64)
    cb = ClassBias("cls1", xp, K, H, dtype="float64")
    cb.e.value[...] = rows.store.w[:, F_in:].T          # the label columns of the one-hot-row layer
    cb.labels = c
    onehot = (c_host[:, None] == np.arange(K)).astype(np.float64)
    np.testing.assert_allclose(to_host(cb.forward(fc.forward(x))),
                               to_host(rows.forward(xp.asarray(np.concatenate([x_host, onehot], 1)))), atol=1e-12)
    net = Sequential([fc, cb, LeakyReLU("act", xp, 0.2), Dense("fc2", FP32Weights(rng.normal(0, 0.5, (1, H)), be), xp)])
    net.layers[-1].store.w = net.layers[-1].store.w.astype(np.float64)

    def loss_of():
        return bce_with_logits(xp, net.forward(x), 1.0)[0]
    _, d = bce_with_logits(xp, net.forward(x), 1.0)
    dx = net.backward(d, need_dx=True)
    num = np.zeros(cb.e.value.shape)
    for idx in np.ndindex(num.shape):
        num[idx] = _numeric(loss_of, cb.e.value, idx)
    e_grad = to_host(cb.e.grad)
    np.testing.assert_allclose(e_grad, num, rtol=1e-5, atol=1e-8)
    assert np.all(e_grad[[k for k in range(K) if k not in c_host]] == 0)     # absent classes: no gradient
    numx = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        numx[idx] = _numeric(loss_of, x, idx)
    np.testing.assert_allclose(to_host(dx), numx, rtol=1e-5, atol=1e-8)
    cb.labels = c[:3]
    with pytest.raises(ValueError, match="set labels"):
        cb.forward(fc.forward(x))


# --- Fréchet distance -------------------------------------------------------------------------------
def test_frechet_distance_numpy_sqrt_matches_the_definition():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, c1 = quality.gaussian_stats(a)
    mu2, c2 = quality.gaussian_stats(b)
    # definition via the eigen-decomposition of c1 c2 (real, non-negative eigenvalues)
    ev = np.linalg.eigvals(c1 @ c2)
    ref = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(ev.real.clip(0)).sum())
    assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    assert quality.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-8)
    # 1-D check: (m1 - m2)^2 + (s1 - s2)^2
    assert quality.frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(1.0 + 1.0)


def test_coverage_histogram():
    cov = quality.coverage(np.array([0] * 90 + [1] * 10), 10)
    assert cov["classes_covered"] == 2 and cov["coverage_min"] == 0.0
    assert cov["hist"][0] == pytest.approx(0.9)
    cov = quality.coverage(np.arange(1000) % 10, 10)
    assert cov["classes_covered"] == 10 and cov["coverage_min"] == pytest.approx(0.1)


# --- the metric on MNIST (a quickly trained classifier) ----------------------------------------------
@pytest.fixture(scope="module")
def mnist(request):
    from tests.conftest import dataset_root
    import os
    root = dataset_root()
    if root is None or not root.is_dir():
        msg = "datasets not found: set MCASIM_DATA or place ../shared/data beside the checkout"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from sim.data.mnist import load_mnist
    return load_mnist(root, download=False)


@pytest.fixture(scope="module")
def quick_clf(mnist, tmp_path_factory):
    """A small seeded classifier (120 steps, ~95 %): enough to rank image sets; saved like the real one."""
    clf, acc = quality.train_classifier(mnist.x_train[:8000], mnist.y_train[:8000], mnist.x_test[:1000],
                                        mnist.y_test[:1000], max_steps=120)
    assert acc > 0.85
    path = tmp_path_factory.mktemp("clf") / "quick.npz"
    clf.save(path, {"test_accuracy": acc, "command": "tests/test_gan.py quick_clf"})
    return path


def box_blur(x, k=3):
    img = x.reshape(-1, 28, 28)
    p = k // 2
    pad = np.pad(img, ((0, 0), (p, p), (p, p)))
    out = sum(pad[:, i:i + 28, j:j + 28] for i in range(k) for j in range(k)) / (k * k)
    return out.reshape(x.shape).astype(np.float32)


def test_metric_ranks_real_blurred_noisy_random_and_detects_collapse(mnist, quick_clf):
    clf = quality.FDClassifier.load(quick_clf)
    meta = json.loads(quality.meta_path(quick_clf).read_text())
    assert meta["weights_sha256"] == quality.weights_digest(clf.arrays())
    ref, real = mnist.x_test[:2000], mnist.x_test[2000:4000]
    m = quality.FDMetric(clf, ref)
    rng = np.random.default_rng(0)
    noisy = np.clip(real + rng.normal(0, 0.5, real.shape), 0, 1).astype(np.float32)
    rand = rng.random(real.shape, dtype=np.float32)
    fd = {name: m(x)["fd"] for name, x in (("real", real), ("blurred", box_blur(real)), ("noisy", noisy),
                                           ("random", rand))}
    assert fd["real"] < fd["blurred"] < fd["noisy"] < fd["random"], fd
    # a collapsed generator: every sample the same class
    ones = mnist.x_test[4000:][mnist.y_test[4000:] == 1][:500]
    q_real, q_col = m(real), m(ones)
    assert q_real["classes_covered"] == 10 and q_real["coverage_min"] > 0.05
    assert q_col["classes_covered"] <= 2 and q_col["coverage_min"] < 0.01
    assert q_col["fd"] > q_real["fd"]
    # the saved file round-trips exactly and a corrupted one is refused
    again = quality.FDClassifier.load(quick_clf)
    np.testing.assert_array_equal(again.features(real[:50]), clf.features(real[:50]))


def test_corrupt_classifier_file_is_refused(quick_clf, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(quick_clf.read_bytes()[:-10] + b"0123456789")
    quality.meta_path(bad).write_text(quality.meta_path(quick_clf).read_text())
    with pytest.raises(RuntimeError, match="SHA-256"):
        quality.FDClassifier.load(bad)


# --- the GAN task ------------------------------------------------------------------------------------
def gan_cfg(mode, clf_path, **over):
    d = {"train": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "optimizer": "adam", "adam_beta1": 0.5, "seed": 3,
                   "train_subset": 192, "test_subset": 300, "eval_batch": 100, **over.pop("train", {})},
         "model": {"arch": "gan"},
         "synapse": {"mode": mode, "w_max": 0.5, "epsilon_uS": 0.5, **over.pop("synapse", {})},
         "gan": {"latent_dim": 8, "generator": [16], "discriminator": [16], "eval_samples": 200,
                 "fd_classifier": str(clf_path), **over.pop("gan", {})},
         **over}
    return config_from_dict(d)


def run_gan(tmp_path, cfg, ds, epochs=None):
    from sim.train import Trainer
    tmp_path.mkdir(parents=True, exist_ok=True)
    if epochs is not None:
        cfg.train.epochs = epochs
    tr = Trainer(cfg, ds, make_backend("numpy", cfg.train.seed), tmp_path, progress=False)
    tr.run()
    return tr


def test_gan_config_checks(quick_clf):
    with pytest.raises(ConfigError, match="gan.leaky_slope"):
        gan_cfg("fp32", quick_clf, gan={"leaky_slope": 0.0})
    with pytest.raises(ConfigError, match="gan.eval_samples"):
        gan_cfg("fp32", quick_clf, gan={"eval_samples": 1})
    with pytest.raises(ConfigError, match=r"gan.d_dropout must be in \[0, 1\), got 1.0"):
        gan_cfg("fp32", quick_clf, gan={"d_dropout": 1.0})
    with pytest.raises(ConfigError, match=r"gan.real_label must be in \(0.5, 1\], got 0.4"):
        gan_cfg("fp32", quick_clf, gan={"real_label": 0.4})
    with pytest.raises(ConfigError, match="w_max"):       # 4 weight layers: G 2, D 2
        gan_cfg("pcm", quick_clf, synapse={"w_max": [0.5, 0.5, 0.5]})


def test_pcm_gan_short_run_counts_both_networks_and_writes_outputs(mnist, quick_clf, tmp_path):
    from sim.energy import estimate_summary, load_table
    from sim.plots import plot_run
    cfg = gan_cfg("pcm", quick_clf)
    tr = run_gan(tmp_path / "pcm", cfg, mnist)
    task = tr.task
    assert set(task.networks) == {"generator", "discriminator"}
    stores = [L.store for L in task.store_layers()]
    assert [s.kind for s in stores] == ["analog"] * 4
    assert len({id(s.chi) for s in stores}) == 4                      # each its own chi
    rec = tr.metrics[-1]
    for k in ("fd", "coverage_min", "classes_covered", "g_loss", "d_loss", "d_accuracy", "loss"):
        assert k in rec and np.isfinite(rec[k]), k
    assert rec["loss"] == pytest.approx(rec["g_loss"] + rec["d_loss"])
    assert sum(r["pulses"] for r in tr.metrics) > 0
    # event counts: G forward B, D forward 2B (D step) + B (G step) per layer; backward vectors:
    # D step all D layers but the first (2B), G step every D layer (B), G all but its first (B)
    steps, B = 2 * 192 // 32, 32
    ev = tr.collect_events()
    assert ev["fwd_vectors"] == steps * (2 * B + 2 * 3 * B)
    assert ev["bwd_vectors"] == steps * (1 * 2 * B + 2 * B + 1 * B)
    assert ev["softmax_outputs"] == steps * 3 * B
    assert ev["chi_updates"] == steps * sum(int(np.prod(s.shape)) for s in stores)
    summary = tr.summary()
    assert summary["metric"] == "fd" and summary["best_fd"] == min(r["fd"] for r in tr.metrics)
    rep = estimate_summary(json.loads(json.dumps(summary)), load_table())
    assert rep.cm_total > 0 and rep.digital_total > 0
    plot_run(tmp_path / "pcm", tr)
    for f in ("samples_epoch001.png", "samples_epoch002.png", "gan_metrics.png", "fd_classifier.json"):
        assert (tmp_path / "pcm" / f).is_file(), f


@pytest.mark.parametrize("gan", [{}, {"d_dropout": 0.3, "real_label": 0.9}, {"conditioning": "cgan"},
                                 {"conditioning": "acgan", "clip_norm": 0.5},
                                 {"conditioning": "cgan", "label_input": "digital"},
                                 {"conditioning": "acgan", "label_input": "digital"}],
                         ids=["plain", "dropout_smoothing", "cgan", "acgan_clip", "cgan_digital", "acgan_digital"])
def test_gan_resume_equals_uninterrupted(mnist, quick_clf, tmp_path, gan):
    """PCM GAN, Adam state of both optimizers, latent streams (and D's dropout masks): 1 epoch +
    resume = 2 epochs."""
    from sim.train import Trainer, load_checkpoint
    full = run_gan(tmp_path / "full", gan_cfg("pcm", quick_clf, gan=dict(gan)), mnist)
    if gan:
        assert sum(type(L).__name__ == "Dropout" for L in full.task.D.layers) == int(gan.get("d_dropout", 0) > 0)
        plain = run_gan(tmp_path / "plain", gan_cfg("pcm", quick_clf), mnist, epochs=1)
        assert plain.metrics[0]["loss"] != full.metrics[0]["loss"]                     # the knobs act
    run_gan(tmp_path / "part", gan_cfg("pcm", quick_clf, gan=dict(gan)), mnist, epochs=1)
    again = Trainer(gan_cfg("pcm", quick_clf, gan=dict(gan)), mnist, make_backend("numpy", 3), tmp_path / "part",
                    progress=False)
    again.load_state(load_checkpoint(tmp_path / "part"))
    assert again.task.opt_g.t == again.task.opt_d.t == 6
    again.run()
    for a, b in zip(full.metrics, again.metrics):
        for k in ("loss", "d_accuracy", "fd", "coverage_min", "g_loss", "d_loss", "pulses", "refreshes"):
            assert a[k] == b[k], k
    for sa, sb in zip(full.task.analog_stores(), again.task.analog_stores()):
        np.testing.assert_array_equal(sa.chi, sb.chi)


def test_generator_only_ablation_and_sampling(mnist, quick_clf, tmp_path):
    from sim.cli import main
    cfg = gan_cfg("pcm", quick_clf, gan={"generator_only_pcm": True}, train={"epochs": 1})
    tr = run_gan(tmp_path / "g", cfg, mnist)
    assert [L.store.kind for L in tr.task.store_layers()] == ["analog", "analog", "fp32", "fp32"]
    # same seed: the fp32 discriminator starts from the weights of the fp32 run (one init stream)
    from sim.tasks import make_task
    be = make_backend("numpy", 3)
    t_g = make_task(gan_cfg("pcm", quick_clf, gan={"generator_only_pcm": True}), mnist, be)
    t_f = make_task(gan_cfg("fp32", quick_clf), mnist, be)
    for a, b in zip(t_g.D.store_layers(), t_f.D.store_layers()):
        np.testing.assert_array_equal(a.store.weights(), b.store.weights())
    # mcasim sample on a finished run folder
    (tmp_path / "g" / "config.toml").write_text(cfg.to_toml())
    (tmp_path / "g" / "summary.json").write_text(json.dumps({**tr.summary(), "dataset": "mnist"}))
    out = tmp_path / "grid.png"
    from tests.conftest import dataset_root
    assert main(["sample", str(tmp_path / "g"), "--out", str(out), "--n", "16", "--seed", "1",
                 "--data-dir", str(dataset_root()), "--backend", "numpy"]) == 0
    assert out.is_file()
    from matplotlib.image import imread
    img = imread(out)
    assert img.shape[0] == img.shape[1] == 2 * (4 * 30 + 2)          # 4x4 digits, 2-px frame, x2


def test_conditional_gans_shapes_metrics_and_label_match(mnist, quick_clf, tmp_path):
    """gan.conditioning: the one-hot label adds 10 crossbar rows to G1 (and D1 for cgan, 10 class
    outputs to D3 for acgan); evaluation asks for
    every digit equally, and label_match reads whether the digit drawn is the digit asked for."""
    cfg = gan_cfg("pcm", quick_clf, gan={"conditioning": "cgan"}, train={"epochs": 1})
    tr = run_gan(tmp_path / "c", cfg, mnist)
    shapes = [L.store.shape for L in tr.task.store_layers()]
    assert shapes == [(16, 8 + 10), (784, 16), (16, 784 + 10), (1, 16)]
    ac = run_gan(tmp_path / "ac", gan_cfg("pcm", quick_clf, gan={"conditioning": "acgan"}, train={"epochs": 1}), mnist)
    assert [L.store.shape for L in ac.task.store_layers()] == [(16, 8 + 10), (784, 16), (16, 784), (1 + 10, 16)]
    assert 0.0 <= ac.metrics[-1]["label_match"] <= 1.0
    for cond, d_shape, bias_layers in (("acgan", (16, 784), ["g_cls1"]), ("cgan", (16, 784), ["g_cls1", "d_cls1"])):
        dig = run_gan(tmp_path / f"{cond}_dig", gan_cfg("pcm", quick_clf, train={"epochs": 1},
                                                       gan={"conditioning": cond, "label_input": "digital"}), mnist)
        assert [L.store.shape for L in dig.task.store_layers()][:3] == [(16, 8), (784, 16), d_shape]
        names = [L.name for net in (dig.task.G, dig.task.D) for L in net.layers if type(L).__name__ == "ClassBias"]
        assert names == bias_layers
        assert all(float(np.abs(L.e.value).sum()) > 0 for net in (dig.task.G, dig.task.D)
                   for L in net.layers if type(L).__name__ == "ClassBias")               # they learn
        assert 0.0 <= dig.metrics[-1]["label_match"] <= 1.0
    rec = tr.metrics[-1]
    assert 0.0 <= rec["label_match"] <= 1.0
    assert len(rec["class_hist"]) == 10 and sum(rec["class_hist"]) == pytest.approx(1.0, abs=1e-3)
    assert json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[-1])["label_match"] == rec["label_match"]
    # the metric itself: a "generator" that draws real test digits of the asked class scores high,
    # one that draws them for the wrong class (asked + 1) scores low; both cover all ten classes
    task = tr.task
    by_class = {c: mnist.x_test[:2000][mnist.y_test[:2000] == c].reshape(-1, 784) for c in range(10)}

    def fake_generate(offset):
        def gen(z, batch=None, labels=None):
            asked = task.balanced_labels(z.shape[0]) if labels is None else labels
            return np.stack([by_class[(c + offset) % 10][i // 10 % len(by_class[(c + offset) % 10])]
                             for i, c in enumerate(asked)]).astype(np.float32)
        return gen
    task.generate = fake_generate(0)
    good = task.evaluate()
    task.generate = fake_generate(1)
    wrong = task.evaluate()
    assert good["label_match"] > 0.8 and wrong["label_match"] < 0.2
    assert good["classes_covered"] == wrong["classes_covered"] == 10
    assert "label_match" not in run_gan(tmp_path / "u", gan_cfg("fp32", quick_clf, train={"epochs": 1}), mnist).metrics[-1]
