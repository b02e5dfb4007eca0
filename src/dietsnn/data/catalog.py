"""The datasets dietsnn knows (shape, statistics, augmentation, sources), where their files are
looked for, and one download-and-verify helper used by every format."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's shape and statistics, and its training augmentation (crop after padding,
    horizontal flip): none for the 28x28 sets, whose short default runs fit faster without it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    urls: tuple[str, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)  # of the decompressed payloads
    classes: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=0, flip=False,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetInfo(
        "mnist", 10, 1, 28, (0.1307,), (0.3081,), crop_padding=0, flip=False,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(i) for i in range(10)),
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4,
        flip=True, urls=("https://www.cs.toronto.edu/~kriz/",),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4,
        flip=True, urls=("https://www.cs.toronto.edu/~kriz/",),
    ),
    # class folders read lazily by dietsnn.imagenet; num_classes is set from the folders found
    "imagenet": DatasetInfo(
        "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), flip=True,
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dietsnn"


def search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where the files of dataset `name` are looked for, in order. An explicit `data_dir`
    (`--data-dir`) is the only place: `data_dir/name`, then `data_dir` itself. Otherwise
    `$DIETSNN_DATA` (the same two), `/usr/share/datasets/name`, then the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return [Path(data_dir) / name, Path(data_dir)]
    dirs: list[Path] = []
    d = os.environ.get("DIETSNN_DATA")
    if d:
        dirs += [Path(d) / name, Path(d)]
    dirs += [Path("/usr/share/datasets") / name, cache_dir() / name]
    return dirs


def missing_in_data_dir(name: str, data_dir: str | os.PathLike,
                        required: Sequence[str | Sequence[str]]) -> UserError:
    """The error for an explicit `data_dir` that does not hold dataset `name`: the folder is
    missing, or it lacks the files named in `required` (each a name or a tuple of alternatives,
    e.g. a file and its `.gz`). Reported for the candidate that holds more of them."""
    root = Path(data_dir)
    if not root.is_dir():
        return UserError(f"--data-dir {root}: no such directory; give the folder that holds "
                         f"{name}, or leave --data-dir out to use the default locations")

    def missing(d: Path) -> list[str]:
        alts = [(r,) if isinstance(r, str) else tuple(r) for r in required]
        return [" or ".join(a) for a in alts if not any((d / x).exists() for x in a)]

    cands = [d for d in (root / name, root) if d.is_dir()]
    where = min(cands, key=lambda d: len(missing(d)))
    lack = missing(where)
    shown = ", ".join(lack[:4]) + (f" and {len(lack) - 4} more" if len(lack) > 4 else "")
    return UserError(f"--data-dir {root}: {name} is incomplete, {where} lacks {shown}; "
                     "complete the folder or leave --data-dir out to use the default locations")


def download(urls: Sequence[str], target: Path, check: Callable[[Path], str | None],
             what: str, hint: str) -> Path:
    """Fetch `target` from the first of `urls` that answers, into a `.part` file that is renamed
    into place only if `check(part)` returns None; a string it returns (the mismatch) refuses
    the download."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    err: OSError | None = None
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as o:
                for chunk in iter(lambda r=r: r.read(1 << 20), b""):
                    o.write(chunk)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            err = e
            continue
        problem = check(tmp)
        if problem:
            tmp.unlink(missing_ok=True)
            raise UserError(f"{url}: {problem}; refusing the download")
        os.replace(tmp, target)
        return target
    raise UserError(f"{what} not found locally and the download of {urls[-1] if urls else what} "
                    f"failed ({err}); {hint}")
