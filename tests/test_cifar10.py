"""CIFAR-10 loader (binary and python versions, checksums, errors) and the seeded augmentation.

The full data set is read once (the ``cifar`` fixture, cached for the module: ~15-25 s, mostly xz
decoding); the tests on real content rebuild the official batch bytes from that cached copy instead
of decompressing the files again. The format and error tests use small synthetic files in tmp_path.
"""
import gzip
import lzma
import os
import pickle
import struct

import numpy as np
import pytest

import sim.data.cifar10 as c10
from sim.data import DatasetCorruptError, DatasetError, load_dataset
from sim.data.cifar10 import CIFAR10_BATCHES, CIFAR10_SHA256, augment, load_cifar10
from sim.data.common import sha256

N = c10.RECORDS


# ---------------------------------------------------------------- the real files, read once

@pytest.fixture(scope="module")
def _cache():
    d = {}
    yield d
    d.clear()


@pytest.fixture
def cifar(data_root, _cache):
    """The full CIFAR-10 from the real files, loaded once per module (reads the full data)."""
    if "ds" not in _cache:
        _cache["ds"] = load_cifar10(data_root)
    return _cache["ds"]


def _batch_records(ds, stem):
    """(labels, pixels) uint8 of one official batch, rebuilt from the normalised dataset."""
    if stem == "test_batch":
        x, y = ds.x_test, ds.y_test
    else:
        i = int(stem[-1]) - 1
        x, y = ds.x_train[i * N:(i + 1) * N], ds.y_train[i * N:(i + 1) * N]
    mean, std = (np.asarray(ds.notes[k], dtype=np.float32) for k in ("mean", "std"))
    u = np.rint((x * std + mean) * 255).astype(np.uint8)               # exact: errors ~1e-4 << 0.5
    return y.astype(np.uint8), np.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(N, 3072)


def _batch_bytes(labels, pixels):
    rec = np.empty((N, 3073), dtype=np.uint8)
    rec[:, 0], rec[:, 1:] = labels, pixels
    return rec.tobytes()


def _open_any(path):
    return {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)(path, "rb")


def test_full_dataset_from_real_files(cifar, data_root):
    """Reads the full data (via the cached fixture): shapes, dtypes, class counts, normalisation."""
    ds = cifar
    assert ds.name == "cifar10" and ds.n_classes == 10 and len(ds.class_names) == 10
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_test.shape == (10_000, 32, 32, 3)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.input_shape == (32, 32, 3) and ds.n_features == 3072
    assert np.bincount(ds.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert ds.notes["format"] == "binary"
    np.testing.assert_allclose(ds.notes["mean"], [0.4914, 0.4822, 0.4465], atol=1e-4)
    np.testing.assert_allclose(ds.notes["std"], [0.2470, 0.2435, 0.2616], atol=1e-4)
    s1, s2 = np.zeros(3), np.zeros(3)
    for i in range(0, len(ds.x_train), 5000):   # float64 sums (float32 accumulation would drift)
        xc = ds.x_train[i:i + 5000].astype(np.float64)
        s1 += xc.sum(axis=(0, 1, 2))
        s2 += (xc * xc).sum(axis=(0, 1, 2))
    n = ds.x_train.size / 3
    np.testing.assert_allclose(s1 / n, 0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(s2 / n - (s1 / n) ** 2), 1, atol=1e-5)
    # first record of data_batch_1 (only its first 3,073 bytes are decompressed)
    path = c10._locate(data_root)[2]["data_batch_1"]
    with _open_any(path) as f:
        rec = np.frombuffer(f.read(3073), dtype=np.uint8)
    assert ds.y_train[0] == rec[0]
    planes = rec[1:].reshape(3, 32, 32)                      # R, G, B planes, row-major
    _, pixels = _batch_records(ds, "data_batch_1")
    assert np.array_equal(pixels[0].reshape(3, 32, 32), planes)
    assert ds.source == str(path.parent)


def test_python_version_loads_to_same_arrays(cifar, tmp_path):
    """Protocol-2 pickles written from the real batches: verified by content, identical arrays."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for stem in CIFAR10_BATCHES:
        labels, pixels = _batch_records(cifar, stem)
        assert sha256(_batch_bytes(labels, pixels)) == CIFAR10_SHA256[stem]   # byte-identical to the files
        d = {b"batch_label": f"batch {stem}".encode(), b"labels": labels.astype(int).tolist(),
             b"data": pixels, b"filenames": [f"img_{i}.png".encode() for i in range(N)]}
        blob = pickle.dumps(d, protocol=2)
        if stem == "test_batch":   # one compressed, as users may hold them
            (folder / "test_batch.gz").write_bytes(gzip.compress(blob, compresslevel=1))
        else:
            (folder / stem).write_bytes(blob)
    py = load_cifar10(tmp_path)
    assert py.notes["format"] == "python" and py.source == str(folder)
    assert py.notes["mean"] == cifar.notes["mean"] and py.notes["std"] == cifar.notes["std"]
    for k in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(py, k), getattr(cifar, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k


def test_one_byte_changed_is_a_checksum_error(cifar, tmp_path):
    labels, pixels = _batch_records(cifar, "data_batch_1")
    raw = bytearray(_batch_bytes(labels, pixels))
    raw[12345] ^= 0x01
    folder = _dummy_set(tmp_path / "cifar-10-batches-bin", ".bin")
    (folder / "data_batch_1.bin").write_bytes(bytes(raw))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1\.bin: SHA-256 .* does not match"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------- formats and errors, synthetic files

def _dummy_set(folder, ext, stems=CIFAR10_BATCHES):
    """A set of placeholder batch files (never valid: each test makes data_batch_1 the bad one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in stems:
        (folder / (s + ext)).write_bytes(b"placeholder")
    return folder


@pytest.mark.parametrize("suffix, compress", [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_truncated_compressed_file_is_named(tmp_path, suffix, compress):
    folder = _dummy_set(tmp_path / "cifar10", ".bin", CIFAR10_BATCHES[1:])
    blob = compress(bytes(range(256)) * 4000)
    bad = folder / ("data_batch_1.bin" + suffix)
    bad.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1\.bin" + suffix.replace(".", r"\.")) as ei:
        load_cifar10(tmp_path)
    assert "truncated or corrupt" in str(ei.value)


def test_wrong_size_bin_is_named(tmp_path):
    folder = _dummy_set(tmp_path / "cifar-10-batches-bin", ".bin")
    (folder / "data_batch_1.bin").write_bytes(bytes(3073 * 100))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1\.bin: 307,300 bytes .* expected 30,730,000"):
        load_cifar10(tmp_path)


def test_bad_label_is_named_even_without_verify(tmp_path):
    folder = _dummy_set(tmp_path / "cifar10", ".bin")
    raw = bytearray(c10.BATCH_BYTES)
    raw[3073 * 7] = 12
    (folder / "data_batch_1.bin").write_bytes(bytes(raw))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1\.bin: label 12 out of range"):
        load_cifar10(tmp_path, verify=False)


@pytest.mark.parametrize("sub, ext", [("cifar-10-batches-bin", ".bin"), ("cifar-10-batches-py", "")])
def test_missing_test_batch_is_incomplete(tmp_path, sub, ext):
    _dummy_set(tmp_path / sub, ext, CIFAR10_BATCHES[:5])
    with pytest.raises(DatasetError, match=r"incomplete, missing test_batch" + ext.replace(".", r"\.")):
        load_dataset("cifar10", tmp_path)


def test_not_found_lists_places_and_source(tmp_path, monkeypatch):
    monkeypatch.setattr(c10, "candidate_dirs", lambda d: [tmp_path])
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "batches.meta.txt").write_text("airplane\n")
    with pytest.raises(DatasetError, match="CIFAR-10 not found") as ei:
        load_cifar10(tmp_path)
    msg = str(ei.value)
    assert not isinstance(ei.value, DatasetCorruptError)
    assert str(tmp_path / "cifar-10-batches-py") in msg and str(tmp_path) in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "no download" in msg


def test_python_batch_of_wrong_shape_is_named(tmp_path):
    folder = _dummy_set(tmp_path / "cifar-10-batches-py", "")
    d = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    (folder / "data_batch_1").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1: b'data' must be a uint8 array"):
        load_cifar10(tmp_path)


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "eval", "codecs"])
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = {"os.system": _Evil(os.system, f"touch {marker}"),
               "eval": _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
               "codecs": _Evil(__import__("_codecs").encode, "abc", "rot13")}[kind]
    folder = _dummy_set(tmp_path / "cifar-10-batches-py", "")
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1: (refusing|not a readable)"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def _py2_pickle(d):
    """A pickle as Python 2 + NumPy 1.x writes it (byte strings as STRING, numpy.core names).

    Handles a dict of str keys to uint8 2-D arrays or lists of small ints, which is all needed here.
    """
    def s(b):
        return b"T" + struct.pack("<I", len(b)) + b
    out = [b"\x80\x02}("]
    for k, v in d.items():
        out.append(s(k.encode()))
        if isinstance(v, np.ndarray):
            out += [b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85", s(b"b"), b"\x87R(K\x01",
                    b"".join(b"J" + struct.pack("<i", n) for n in v.shape), b"\x86cnumpy\ndtype\n", s(b"u1"),
                    b"K\x00K\x01\x87R(K\x03", s(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89",
                    s(v.tobytes()), b"tb"]
        else:
            out += [b"](", b"".join(b"K" + bytes([n]) for n in v), b"e"]
    out.append(b"u.")
    return b"".join(out)


def test_python2_style_pickle_is_read():
    data = np.arange(24, dtype=np.uint8).reshape(4, 6)
    d = c10._unpickle(_py2_pickle({"data": data, "labels": [3, 1, 4, 1]}), "x")
    assert set(d) == {b"data", b"labels"}
    assert d[b"data"].dtype == np.uint8 and np.array_equal(d[b"data"], data)
    assert d[b"labels"] == [3, 1, 4, 1]
    d = c10._unpickle(pickle.dumps({b"labels": list(np.arange(3, dtype=np.int64))}, protocol=2), "x")
    assert d[b"labels"] == [0, 1, 2]   # NumPy scalars (numpy._core.multiarray.scalar) are allowed too


# ---------------------------------------------------------------- augmentation

def _windows(x, pad):
    """All (dy, dx, flip) windows of the zero-padded batch: dict -> (B, H, W, C)."""
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = xp[:, dy:dy + h, dx:dx + w]
            out[(dy, dx, False)], out[(dy, dx, True)] = win, win[:, :, ::-1]
    return out


def _match(x, y, pad):
    """The unique (dy, dx, flip) window of x that each image of y equals (asserts it exists)."""
    wins = _windows(x, pad)
    keys = list(wins)
    eq = np.stack([(wins[k] == y).all(axis=(1, 2, 3)) for k in keys])   # (K, B)
    assert (eq.sum(axis=0) == 1).all(), "an output image is not exactly one window of the padded input"
    return [keys[i] for i in eq.argmax(axis=0)]


def test_augment_is_seeded_and_gathers_windows():
    x = np.random.default_rng(0).normal(size=(40, 32, 32, 3)).astype(np.float32)
    a = augment(np, x, np.random.default_rng(7))
    b = augment(np, x, np.random.default_rng(7))
    c = augment(np, x, np.random.default_rng(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    _match(x, a, 4)
    # slow per-image reference with the documented draws (dy for the batch, then dx, then coins)
    rng = np.random.default_rng(7)
    dy, dx, coins = rng.integers(0, 9, 40), rng.integers(0, 9, 40), rng.random(40) < 0.5
    xp = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in (0, 1, 17, 39):
        ref = xp[i, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert np.array_equal(a[i], ref[:, ::-1] if coins[i] else ref), i


def test_augment_offsets_and_flip_statistics():
    x = np.random.default_rng(1).normal(size=(2000, 8, 8, 2))
    keys = _match(x, augment(np, x, np.random.default_rng(3), pad=2), 2)
    dys, dxs, flips = (np.array([k[j] for k in keys]) for j in range(3))
    assert set(dys) == set(dxs) == set(range(5))
    assert 0.45 < flips.mean() < 0.55
    keys = _match(x, augment(np, x, np.random.default_rng(3), pad=2, flip=False), 2)
    assert not any(k[2] for k in keys)


def test_augment_identity_and_flip_only():
    x = np.random.default_rng(2).normal(size=(50, 6, 7, 3)).astype(np.float32)
    rng = np.random.default_rng(0)
    assert augment(np, x, rng, pad=0, flip=False) is x
    assert rng.random() == np.random.default_rng(0).random()   # nothing drawn
    y = augment(np, x, np.random.default_rng(4), pad=0, flip=True)
    flipped = np.array([np.array_equal(y[i], x[i, :, ::-1]) for i in range(50)])
    same = np.array([np.array_equal(y[i], x[i]) for i in range(50)])
    assert (flipped ^ same).all() and 10 < flipped.sum() < 40
    with pytest.raises(ValueError):
        augment(np, x, rng, pad=-1)
