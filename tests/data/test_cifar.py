"""CIFAR loader: real batch format (Python 2 cPickle and numpy 2 pickles), tar.gz, validation,
download with MD5, and refusal of pickles that would run code."""

import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.request

import numpy as np
import pytest
import torch

from dietsnn import data
from dietsnn.data import DATASETS, cifar
from dietsnn.errors import UserError


def py2_pickle(obj) -> bytes:
    """Protocol-2 stream as Python 2 cPickle wrote the CIFAR batches (str = SHORT_BINSTRING /
    BINSTRING, numpy 1 global names), for dicts of bytes keys, int lists and uint8 arrays."""
    out = bytearray(b"\x80\x02")

    def s(b: bytes):
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def i(n: int):
        out.extend(b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n))

    def dump(o):
        if isinstance(o, bytes):
            s(o)
        elif isinstance(o, int):
            i(o)
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                dump(v)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                dump(k)
                dump(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.ndim == 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            out.extend(b"K\x00\x85U\x01b\x87R(K\x01")
            i(o.shape[0])
            i(o.shape[1])
            out.extend(b"\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
                       b"J\xff\xff\xff\xffK\x00tb\x89")
            s(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    dump(obj)
    return bytes(out + b".")


def batch(n: int, classes: int, key: bytes, seed: int, py2: bool = True) -> tuple[bytes, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, classes, n)]
    d = {b"batch_label": b"training batch", key: y, b"data": x, b"filenames": [b"a.png"] * n}
    return (py2_pickle(d) if py2 else pickle.dumps(d, protocol=4)), x, y


def write_cifar(root, name: str, n: int = 4, py2: bool = True, archive: bool = False):
    """Write a tiny CIFAR-10/100 in the official layout; return the expected tensors."""
    layout = cifar.LAYOUTS[name]
    classes = DATASETS[name].num_classes
    files, xs, ys = {}, [], []
    for j, f in enumerate((*layout.train, layout.test)):
        raw, x, y = batch(n + j, classes, layout.label_key, j, py2)
        files[f], _ = raw, xs.append(x)
        ys.append(y)
    if archive:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / layout.archive, "w:gz") as tar:
            for f, raw in files.items():
                ti = tarfile.TarInfo(f"{layout.folder}/{f}")
                ti.size = len(raw)
                tar.addfile(ti, io.BytesIO(raw))
    else:
        (root / layout.folder).mkdir(parents=True, exist_ok=True)
        for f, raw in files.items():
            (root / layout.folder / f).write_bytes(raw)
    tx = np.concatenate(xs[:-1]).reshape(-1, 3, 32, 32)
    ty = sum(ys[:-1], [])
    return tx, ty, xs[-1].reshape(-1, 3, 32, 32), ys[-1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("DIETSNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar, "search_dirs", lambda name, d: [
        p for p in data.search_dirs(name, d) if not str(p).startswith("/usr/share")])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("py2,archive", [(True, False), (False, False), (True, True)])
def test_load_folder_and_archive(tmp_path, name, py2, archive):
    tx, ty, sx, sy = write_cifar(tmp_path / "d", name, py2=py2, archive=archive)
    got = cifar.load_cifar(DATASETS[name], tmp_path / "d", download=False)
    assert got[0].dtype == torch.uint8 and got[0].shape == (len(ty), 3, 32, 32)
    assert got[1].dtype == torch.int64 and got[3].dtype == torch.int64
    assert torch.equal(got[0], torch.from_numpy(tx)) and got[1].tolist() == ty
    assert torch.equal(got[2], torch.from_numpy(sx)) and got[3].tolist() == sy


def test_found_via_env_and_cache(tmp_path, monkeypatch):
    write_cifar(tmp_path / "env", "cifar10")
    monkeypatch.setenv("DIETSNN_DATA", str(tmp_path / "env"))
    assert len(cifar.load_cifar(DATASETS["cifar10"], download=False)[2]) == 9
    monkeypatch.delenv("DIETSNN_DATA")
    write_cifar(tmp_path / "cache" / "dietsnn" / "cifar10", "cifar10", archive=True)
    assert len(cifar.load_cifar(DATASETS["cifar10"], download=False)[2]) == 9


def test_data_load_uses_the_cifar_loader(tmp_path):
    write_cifar(tmp_path, "cifar10", n=10)
    s = data.load("cifar10", tmp_path, val_size=5)
    assert s.train_x.shape[1:] == (3, 32, 32) and s.train_x.dtype == torch.float32
    assert len(s.train_x) + len(s.val_x) == 10 + 11 + 12 + 13 + 14


def test_not_found_offline_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        cifar.load_cifar(DATASETS["cifar100"], tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and "cifar-100-python.tar.gz" in msg and "--data-dir" in msg


def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(UserError, match="download .* failed.*put cifar-10-python.tar.gz"):
        cifar.load_cifar(DATASETS["cifar10"])


def _serve(monkeypatch, payload: bytes, seen: list):
    def urlopen(url, timeout=None):
        seen.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_download_checks_md5(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src", "cifar10", archive=True)
    payload = (tmp_path / "src" / "cifar-10-python.tar.gz").read_bytes()
    seen: list = []
    _serve(monkeypatch, payload, seen)
    with pytest.raises(UserError, match="MD5"):  # the real MD5 does not match our tiny archive
        cifar.load_cifar(DATASETS["cifar10"])
    assert seen == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    cache = tmp_path / "cache" / "dietsnn" / "cifar10"
    assert not any(cache.iterdir())  # nothing half-written is left behind
    layout = cifar.LAYOUTS["cifar10"]
    fake = cifar.CifarLayout(*[hashlib.md5(payload).hexdigest() if f == "md5" else getattr(layout, f)
                               for f in layout.__dataclass_fields__])
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10", fake)
    got = cifar.load_cifar(DATASETS["cifar10"])
    assert len(got[0]) == 4 + 5 + 6 + 7 + 8 and (cache / "cifar-10-python.tar.gz").is_file()


@pytest.mark.parametrize("bad,msg", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"expected uint8 \[n, 3072\]"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 out of range"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "missing"),
])
def test_bad_batches_are_refused(tmp_path, bad, msg):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(py2_pickle(bad))
    with pytest.raises(UserError, match=msg) as e:
        cifar.load_cifar(DATASETS["cifar10"], tmp_path, download=False)
    assert "data_batch_3" in str(e.value)


def test_truncated_batch_and_archive(tmp_path):
    write_cifar(tmp_path / "a", "cifar10")
    f = tmp_path / "a" / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        cifar.load_cifar(DATASETS["cifar10"], tmp_path / "a", download=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="cannot read the archive"):
        cifar.load_cifar(DATASETS["cifar10"], tmp_path / "b", download=False)


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins

        return (builtins.eval, (self.code,))


@pytest.mark.parametrize("kind", ["system", "eval"])
@pytest.mark.parametrize("archive", [False, True])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, kind, archive):
    marker = tmp_path / "pwned"
    evil = _System(f"touch {marker}") if kind == "system" else _Eval(f"open({str(marker)!r}, 'w')")
    payload = pickle.dumps({b"data": evil, b"labels": [0]}, protocol=4)
    root = tmp_path / "d"
    write_cifar(root, "cifar10")
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(payload)
    if archive:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(root / "cifar-10-batches-py", "cifar-10-batches-py")
        (root / "cifar-10-batches-py" / "test_batch").unlink()  # only the archive is complete
    with pytest.raises(UserError) as e:
        cifar.load_cifar(DATASETS["cifar10"], root, download=False)
    msg = str(e.value)
    assert "refusing to unpickle global" in msg
    assert ("system" in msg) if kind == "system" else ("builtins.eval" in msg)
    assert not marker.exists()
