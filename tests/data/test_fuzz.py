"""The readers of IDX files and CIFAR batches on truncated and bit-flipped input (the
checkpoint reader's cases are in tests/test_checkpoint.py): every case loads valid data or
raises a UserError/ValueError with a one-line message; nothing else escapes, and a header that
promises more data than the file holds is refused before anything of that size is allocated."""

import gzip
import pickle
import struct

import numpy as np
import pytest
from helpers import must_load_or_refuse, mutations

from dietsnn.data import DATASETS, cifar, read_idx
from dietsnn.data.idx import load_idx_dataset
from dietsnn.errors import UserError


def idx_payload(n=6, size=5) -> bytes:
    imgs = np.arange(n * size * size, dtype=np.uint8)
    return struct.pack(">4B3I", 0, 0, 8, 3, n, size, size) + imgs.tobytes()


def test_idx_reader_on_damaged_payloads():
    raw = idx_payload()
    for case, bad in mutations(raw, flips=300, truncations=40, hot=16):
        a = must_load_or_refuse(lambda bad=bad: read_idx(bad, "f"), case)
        if a is not None:  # accepted: exactly the bytes the header promises
            assert a.dtype == np.uint8 and a.size == len(bad) - 4 - 4 * a.ndim, case


def test_an_idx_header_promising_1e12_items_is_refused_without_allocating():
    raw = struct.pack(">4B3I", 0, 0, 8, 3, 10**6, 10**3, 10**3) + b"\0" * 100
    with pytest.raises(UserError, match="header promises 1000000000016"):
        read_idx(raw, "f")


def test_idx_files_read_as_the_payload_says(tmp_path):
    """Plain and gzipped files give the bytes of `read_idx`; the digest is the payload's."""
    import hashlib

    from dietsnn.data import idx

    raw = idx_payload(n=7, size=9)
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    want = read_idx(raw, "f")
    for name in ("a", "a.gz"):
        np.testing.assert_array_equal(idx._read_file(tmp_path / name), want)
    assert idx._payload_sha256(tmp_path / "a.gz") == hashlib.sha256(raw).hexdigest()


def test_a_gz_header_promising_more_than_deflate_can_hold_is_refused(tmp_path, monkeypatch):
    """A .gz file of n bytes decompresses to at most 1032 n: a header that promises more is
    refused before the array is allocated."""
    from dietsnn.data import idx

    raw = struct.pack(">4B3I", 0, 0, 8, 3, 10**5, 100, 100) + b"\0" * 1000
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setattr(idx.np, "empty", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(UserError, match="header promises 1000000016"):
        idx._read_file(tmp_path / "bomb.gz")


def test_idx_files_damaged_on_disk(tmp_path):
    """Through the whole loader: gzip damage, then payload damage."""
    from helpers import write_idx

    good = write_idx(tmp_path / "good", n_train=12, n_test=4, size=28)
    name = "t10k-labels-idx1-ubyte.gz"
    blob = (good / name).read_bytes()
    payload = gzip.decompress(blob)
    cases = [*mutations(blob, flips=15, truncations=8),
             *((c, gzip.compress(p)) for c, p in mutations(payload, flips=25, truncations=5,
                                                          hot=9))]
    for i, (case, bad) in enumerate(cases):
        d = tmp_path / f"c{i}"
        d.mkdir()
        for f in good.iterdir():
            (d / f.name).write_bytes(bad if f.name == name else f.read_bytes())
        got = must_load_or_refuse(lambda d=d: load_idx_dataset(DATASETS["fashion-mnist"], d,
                                                               download=False), case)
        if got is not None:
            assert got[2].shape[0] == got[3].shape[0] and int(got[3].max()) < 10, case


def cifar_batch(n=3) -> bytes:
    x = np.arange(n * 3072, dtype=np.uint64).astype(np.uint8).reshape(n, 3072)
    d = {b"data": x, b"labels": [0, 9, 4][:n], b"batch_label": b"b"}
    return pickle.dumps(d, protocol=4)  # bytes as BINBYTES: only numpy globals


def test_cifar_batches_on_damaged_payloads():
    raw = cifar_batch()
    info = DATASETS["cifar10"]
    assert cifar.unpickle_batch(raw, "b")[b"labels"] == [0, 9, 4]  # the intact batch loads
    loaded = 0
    for case, bad in mutations(raw, flips=300, truncations=40, hot=300):
        got = must_load_or_refuse(
            lambda bad=bad: cifar.parse_batch(cifar.unpickle_batch(bad, "b"), b"labels",
                                              info.num_classes, "b"), case)
        if got is not None:
            x, y = got
            assert x.shape[1:] == (3, 32, 32) and len(x) == len(y), case
            assert int(y.min()) >= 0 and int(y.max()) < 10, case
            loaded += 1
    assert loaded > 10  # flips in the pixels leave a valid batch


def test_a_cifar_batch_claiming_a_huge_array_is_refused():
    raw = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=4)
    shape = b"K\x01M\x00\x0c\x86"  # the array's shape (1, 3072) as pickled
    huge = b"J" + (10**6).to_bytes(4, "little") + b"J" + (10**6).to_bytes(4, "little") + b"\x86"
    assert shape in raw
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        cifar.unpickle_batch(raw.replace(shape, huge), "b")


def test_the_mutations_do_damage():  # the fuzz cases are not all harmless
    refused = sum(must_load_or_refuse(lambda b=b: read_idx(b, "f"), c) is None
                  for c, b in mutations(idx_payload(), flips=50, truncations=10, hot=16))
    assert refused > 10
