"""Helpers shared by the tests: small dataset files written on the fly."""

import errno
import gzip
import os
import random
import struct

import numpy as np
import pytest

from dietsnn.errors import UserError

FMNIST = "/usr/share/datasets/fashion-mnist"


def write_idx(folder, n_train=50, n_test=20, size=28, corrupt=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        img_raw = struct.pack(">4B3I", 0, 0, 8, 3, n, size, size) + imgs.tobytes()
        lab_raw = struct.pack(">4B1I", 0, 0, 8, 1, n) + labels.tobytes()
        if corrupt == "magic" and prefix == "train":
            img_raw = b"\x00\x00\x09\x03" + img_raw[4:]
        if corrupt == "count" and prefix == "t10k":
            lab_raw = struct.pack(">4B1I", 0, 0, 8, 1, n - 1) + labels[:-1].tobytes()
        for name, raw in ((f"{prefix}-images-idx3-ubyte.gz", img_raw),
                          (f"{prefix}-labels-idx1-ubyte.gz", lab_raw)):
            blob = gzip.compress(raw)
            if corrupt == "truncated" and name.startswith("train-images"):
                blob = blob[: len(blob) // 2]
            (folder / name).write_bytes(blob)
    return folder


def has_fmnist() -> bool:
    return os.path.isfile(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")) or bool(
        os.environ.get("DIETSNN_DATA"))


needs_fmnist = pytest.mark.skipif(not has_fmnist(), reason="Fashion-MNIST not installed")


def simulate_full_disk(monkeypatch) -> None:
    """Every write to a file opened with `os.fdopen` (atomic_write's temporary file) fails as on
    a full disk."""
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real(fd, mode)))


def mutations(raw: bytes, flips: int, truncations: int, hot: int | None = None, seed: int = 14):
    """Truncations at spread positions, then single-bit flips (half of them in the first `hot`
    bytes, where the headers are); the same cases on every run (seeded)."""
    rng = random.Random(seed)
    n = len(raw)
    for k in sorted({0, 1, n - 1, *(rng.randrange(n) for _ in range(truncations))}):
        yield f"truncated at {k}", raw[:k]
    for _ in range(flips):
        limit = hot if hot and rng.random() < 0.5 else n
        pos, bit = rng.randrange(min(limit, n)), 1 << rng.randrange(8)
        b = bytearray(raw)
        b[pos] ^= bit
        yield f"bit {bit} flipped at {pos}", bytes(b)


def must_load_or_refuse(fn, case: str):
    """`fn()`, or None where it raised a UserError/ValueError with a one-line message; any other
    exception fails the test."""
    try:
        return fn()
    except (UserError, ValueError) as e:
        msg = str(e)
        assert msg and "\n" not in msg, (case, msg)
        return None


def one_line_error(capsys, argv: list[str], match: str, code: int = 2) -> str:
    """Run the CLI in process: it must exit with `code` and print exactly one stderr line that
    contains `match` and no traceback. Returns that line."""
    from dietsnn.cli import main

    assert main(argv) == code
    err = capsys.readouterr().err
    assert match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def on_engine(fn, *args, engine: str, **kwargs):
    """`fn(*args, **kwargs)` with the neuron engine `engine` in effect."""
    from dietsnn.functional.engine import scope

    with scope(engine):
        return fn(*args, **kwargs)
