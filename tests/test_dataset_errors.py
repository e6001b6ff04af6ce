"""Bad dataset files: truncated, corrupted and wrong-shape files of every supported dataset give a
one-line error naming the file (small generated files in tmp dirs; checksums off where the point is
the parser, on where it is the checksum)."""
import gzip
import lzma
import pickle
import struct

import numpy as np
import pytest

from sim.cli import main
from sim.data import DatasetError, load_dataset, load_mnist
from sim.data.cifar10 import CIFAR10_BATCHES, PIXELS, RECORDS, load_cifar10
from sim.data.ptb import load_ptb_char

MNIST = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx(arr: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """An IDX file of ``arr`` (uint8)."""
    return bytes([0, 0, dtype_code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def flip_middle(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def assert_names(exc_info, path):
    msg = str(exc_info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg


# --- MNIST (IDX, raw or .gz) ---------------------------------------------------------------------------
def mnist_files(tmp_path, gz=True, **replace):
    """A small valid MNIST set (20 train, 10 test images) in tmp_path/mnist; ``replace`` maps a key of
    MNIST to the bytes (decompressed) of that file instead."""
    rng = np.random.default_rng(0)
    content = {"train_images": idx(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)),
               "train_labels": idx(rng.integers(0, 10, 20, dtype=np.uint8)),
               "test_images": idx(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)),
               "test_labels": idx(rng.integers(0, 10, 10, dtype=np.uint8))}
    content.update(replace)
    folder = tmp_path / "mnist"
    folder.mkdir(exist_ok=True)
    paths = {}
    for key, data in content.items():
        p = folder / (MNIST[key] + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths[key] = p
    return paths


def test_generated_mnist_loads(tmp_path):
    mnist_files(tmp_path)
    ds = load_mnist(tmp_path, download=False, verify=False)
    assert ds.x_train.shape == (20, 784) and ds.y_test.shape == (10,)


@pytest.mark.parametrize("damage", ["truncated_raw", "truncated_gz", "corrupt_gz", "flipped_gz_crc", "empty",
                                    "not_idx", "float_idx", "short_header"])
def test_truncated_or_corrupt_mnist_file_is_named(tmp_path, damage):
    paths = mnist_files(tmp_path, gz=damage not in ("truncated_raw", "empty", "not_idx", "float_idx",
                                                   "short_header"))
    bad = paths["train_labels"]
    data = bad.read_bytes()
    if damage == "truncated_raw":
        bad.write_bytes(data[:-3])
    elif damage == "truncated_gz":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt_gz":
        bad.write_bytes(data[:10] + flip_middle(data[10:-8]) + data[-8:])
    elif damage == "flipped_gz_crc":
        bad.write_bytes(data[:-8] + bytes(8))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "not_idx":
        bad.write_bytes(b"GIF89a" + bytes(100))
    elif damage == "float_idx":
        bad.write_bytes(idx(np.zeros(20, np.uint8), dtype_code=0x0D))
    elif damage == "short_header":
        bad.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError) as err:
        load_mnist(tmp_path, download=False, verify=False)
    assert_names(err, bad)


@pytest.mark.parametrize("key, arr", [
    ("train_images", np.zeros((20, 28, 27), np.uint8)),      # wrong image size
    ("test_images", np.zeros((10, 784), np.uint8)),          # flat images
    ("train_labels", np.zeros((20, 1), np.uint8)),           # 2-D labels
    ("train_labels", np.zeros(19, np.uint8)),                # fewer labels than images
    ("test_labels", np.full(10, 12, np.uint8)),              # label out of range
])
def test_wrong_shape_mnist_file_is_named(tmp_path, key, arr):
    paths = mnist_files(tmp_path, **{key: idx(arr)})
    with pytest.raises(DatasetError) as err:
        load_mnist(tmp_path, download=False, verify=False)
    assert_names(err, paths[key])


def test_generated_mnist_fails_the_checksum_naming_the_file(tmp_path):
    paths = mnist_files(tmp_path)
    with pytest.raises(DatasetError, match="SHA-256") as err:
        load_mnist(tmp_path, download=False)
    assert_names(err, paths["train_images"])


def test_corrupt_mnist_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    paths = mnist_files(tmp_path)
    paths["train_images"].write_bytes(paths["train_images"].read_bytes()[:30])   # the first file read
    rc = main(["train", "mlp", "--dataset", "mnist", "--data-dir", str(tmp_path), "--synapse", "fp32",
               "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(paths["train_images"]) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --- CIFAR-10 (binary and python versions) ---------------------------------------------------------------------
def cifar_set(tmp_path, fmt, first: bytes, compress=None):
    """Six batch files; ``data_batch_1`` (the one read first) holds ``first``, the others placeholders."""
    folder = tmp_path / ("cifar-10-batches-bin" if fmt == "binary" else "cifar-10-batches-py")
    folder.mkdir()
    ext = ".bin" if fmt == "binary" else ""
    suffix = {"xz": ".xz", "gz": ".gz", None: ""}[compress]
    for s in CIFAR10_BATCHES[1:]:
        (folder / (s + ext)).write_bytes(b"placeholder")
    bad = folder / ("data_batch_1" + ext + suffix)
    data = {"xz": lzma.compress, "gz": gzip.compress, None: lambda b: b}[compress](first)
    bad.write_bytes(data)
    return bad


def _py_batch(data, labels, protocol=2):
    return pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=protocol)


@pytest.mark.parametrize("case", ["bin_truncated", "bin_one_record_short", "bin_xz_truncated", "bin_gz_corrupt",
                                  "bin_empty", "py_truncated_pickle", "py_garbage", "py_wrong_shape",
                                  "py_wrong_dtype", "py_no_labels", "py_labels_short", "py_not_a_dict",
                                  "py_gz_truncated"])
def test_bad_cifar10_file_is_named(tmp_path, case):
    ok = np.zeros((RECORDS, PIXELS), np.uint8)
    labels = [0] * RECORDS
    if case == "bin_truncated":
        bad = cifar_set(tmp_path, "binary", bytes(3073 * 100))
    elif case == "bin_one_record_short":
        bad = cifar_set(tmp_path, "binary", bytes(3073 * RECORDS - 1))
    elif case == "bin_xz_truncated":
        bad = cifar_set(tmp_path, "binary", bytes(range(256)) * 500, "xz")
        bad.write_bytes(bad.read_bytes()[:-20])
    elif case == "bin_gz_corrupt":
        bad = cifar_set(tmp_path, "binary", np.random.default_rng(1).bytes(20000), "gz")
        bad.write_bytes(flip_middle(bad.read_bytes()))
    elif case == "bin_empty":
        bad = cifar_set(tmp_path, "binary", b"")
    elif case == "py_truncated_pickle":
        bad = cifar_set(tmp_path, "python", _py_batch(ok, labels)[:5000])
    elif case == "py_garbage":
        bad = cifar_set(tmp_path, "python", b"\x80\x02garbage")
    elif case == "py_wrong_shape":
        bad = cifar_set(tmp_path, "python", _py_batch(np.zeros((RECORDS, 32, 32, 3), np.uint8), labels))
    elif case == "py_wrong_dtype":
        bad = cifar_set(tmp_path, "python", _py_batch(ok.astype(np.float32), labels))
    elif case == "py_no_labels":
        bad = cifar_set(tmp_path, "python", pickle.dumps({b"data": ok}, protocol=2))
    elif case == "py_labels_short":
        bad = cifar_set(tmp_path, "python", _py_batch(ok, labels[:-1]))
    elif case == "py_not_a_dict":
        bad = cifar_set(tmp_path, "python", pickle.dumps([ok, labels], protocol=2))
    elif case == "py_gz_truncated":
        bad = cifar_set(tmp_path, "python", _py_batch(ok, labels), "gz")
        bad.write_bytes(bad.read_bytes()[:3000])
    with pytest.raises(DatasetError) as err:
        load_cifar10(tmp_path, verify=False)
    assert_names(err, bad)


# --- Penn Treebank characters ----------------------------------------------------------------------------------
PTB_TEXT = {"train": " a b _ c\n a _ b b\n c c _ a\n", "valid": " b _ a\n", "test": " c _ b\n a\n"}


def ptb_files(tmp_path, gz=True, **replace):
    folder = tmp_path / "ptb"
    folder.mkdir(exist_ok=True)
    paths = {}
    for split, text in {**PTB_TEXT, **replace}.items():
        data = text if isinstance(text, bytes) else text.encode()
        p = folder / (f"ptb.char.{split}.txt" + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths[split] = p
    return paths


def test_generated_ptb_loads(tmp_path):
    ptb_files(tmp_path)
    c = load_ptb_char(tmp_path, verify=False)
    assert c.n_symbols == 5 and len(c.valid) == 4


@pytest.mark.parametrize("case", ["truncated_gz", "corrupt_gz", "binary", "multi_char_tokens", "empty_valid",
                                  "blank_test", "unknown_symbol", "empty_train"])
def test_bad_ptb_file_is_named(tmp_path, case):
    split = {"empty_valid": "valid", "blank_test": "test", "unknown_symbol": "test"}.get(case, "train")
    replace = {"binary": b"\x00\xff\xfe" * 10, "multi_char_tokens": " the cat\n", "empty_valid": "",
               "blank_test": "\n \n", "unknown_symbol": " a z\n", "empty_train": ""}
    paths = ptb_files(tmp_path, **({split: replace[case]} if case in replace else {}))
    bad = paths[split]
    if case == "truncated_gz":
        bad.write_bytes(bad.read_bytes()[:20])
    elif case == "corrupt_gz":
        bad.write_bytes(bad.read_bytes()[:-8] + bytes(8))
    with pytest.raises(DatasetError) as err:
        load_ptb_char(tmp_path, verify=False)
    assert_names(err, bad)


def test_generated_ptb_fails_the_checksum_naming_the_file(tmp_path):
    paths = ptb_files(tmp_path)
    with pytest.raises(DatasetError, match="SHA-256") as err:
        load_dataset("ptb-char", tmp_path)
    assert_names(err, paths["train"])
