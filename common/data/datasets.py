"""Load image datasets into float tensors, once per process.

``load_dataset(name, root=..., download=...)`` returns a :class:`Dataset` whose images are
float32 in [0, 1] shaped (N, C, H, W) with int64 labels. Files are read in place from the
data root (never written to); downloads go to ``<cache>/data`` (see :mod:`.root`).

Supported names: ``digits`` (scikit-learn, always offline), ``digits-mnist`` (the public
proxy on which DP settings are chosen: digits drawn as MNIST, offline), ``mnist``, ``fashion-mnist``
(IDX files, gzipped or not), ``svhn`` (.mat), ``cifar10`` (python pickles), the MedMNIST 2D
``.npz`` sets (``retinamnist``, ``bloodmnist``, ...) and ``folder`` (an ImageFolder tree).
CIFAR batches are Python pickles: only point the loader at files you trust.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import folder
from .root import (
    DatasetCorruptError,
    DatasetNotFoundError,
    cached_data_dir,
    download_dir,
    resolve_data_root,
)
from .types import Dataset, Split

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# MedMNIST v2 2D single-label sets and their number of classes (chestmnist is multi-label).
MEDMNIST_CLASSES = {
    "pathmnist": 9, "dermamnist": 7, "octmnist": 4, "pneumoniamnist": 2, "retinamnist": 5,
    "breastmnist": 2, "bloodmnist": 8, "tissuemnist": 8, "organamnist": 11,
    "organcmnist": 11, "organsmnist": 11,
}  # fmt: skip
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLIT_SEED = 0

_cache: dict[tuple[str, str, tuple[str, ...]], Dataset] = {}
_lock = threading.Lock()


def known_datasets() -> tuple[str, ...]:
    """Every name :func:`load_dataset` accepts."""
    return (
        "digits",
        "digits-mnist",
        "mnist",
        "fashion-mnist",
        "svhn",
        "cifar10",
        "folder",
        *MEDMNIST_CLASSES,
    )


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    classes: tuple[str, ...] = (),
) -> Dataset:
    """The dataset ``name``, loaded once per process per (name, data root).

    ``root`` defaults to :func:`resolve_data_root`; ``download`` allows fetching missing
    files into the cache. ``classes`` is the declared label space (``data.classes``): a
    ``folder`` dataset's labels follow it, any other dataset must have exactly these class
    names. Raises :class:`DatasetNotFoundError` (missing files),
    :class:`DatasetCorruptError` (unreadable files) or ``ValueError`` (unknown name).
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in known_datasets():
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(known_datasets())}")
    base = resolve_data_root(str(root) if root else None)
    # only a folder's labels follow the declared classes; another dataset is loaded once
    # and its names checked against them below
    cache_key = (
        key,
        "" if key.startswith("digits") else str(base.resolve()),
        classes if key == "folder" else (),
    )
    with _lock:
        if cache_key not in _cache:
            if key == "folder":
                _cache[cache_key] = _load_folder(key, base, download, classes)
            else:
                _cache[cache_key] = _LOADERS.get(key, _load_medmnist)(key, base, download)
        ds = _cache[cache_key]
    if classes and tuple(ds.class_names) != classes:
        raise folder.LabelSpaceError(
            base,
            f"dataset {key!r} has classes {', '.join(ds.class_names)}, not the declared "
            f"data.classes {', '.join(classes)}",
        )
    return ds


def clear_cache() -> None:
    """Forget every loaded dataset (tests; freeing memory)."""
    with _lock:
        _cache.clear()


def make_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
) -> Dataset:
    """Build a Dataset from uint8 (N, C, H, W) images (or floats in [0, 1]) and labels."""

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xf = torch.from_numpy(np.array(x, dtype=np.float32))  # a fresh, writable copy
        if x.dtype == np.uint8:
            xf.div_(255.0)
        return Split.from_tensors(xf, torch.from_numpy(np.asarray(y, dtype=np.int64)))

    return Dataset(name, split(*train), split(*test), len(class_names), class_names)


def stratified_split(
    y: np.ndarray, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class train/test row indices (each sorted)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        k = round(len(rows) * test_fraction)
        test.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _candidates(*dirs: Path) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _load_digits(name: str, root: Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y)
    return make_dataset(name, (x[tr], y[tr]), (x[te], y[te]), DIGIT_NAMES)


PROXY_TRAIN_RECORDS = 60_000  # as many as MNIST's training split: the benchmarks' design
PROXY_TEST_DRAWS = 5  # each of digits' 359 test images drawn 5 times: a steadier score


def digits_as_mnist(
    records: int, *, seed: int = 0, test_draws: int = PROXY_TEST_DRAWS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A public proxy for MNIST that no site of any benchmark holds: scikit-learn's bundled
    ``digits`` (UCI optical recognition of handwritten digits: other writers, another
    scanner, 8 x 8), each resized to 20 x 20 and centred in a 28 x 28 box as MNIST's digits
    are, then moved as a hand would: rotated by up to 10 degrees, scaled by 0.9-1.1 and
    shifted by up to 2 pixels, drawn afresh per record (so no two records are the same
    image, as no two of MNIST's are). ``records`` training draws from digits' train split,
    ``test_draws`` draws of each image of its test split. DP settings are chosen on it
    (simulations/choose_ridge.py, simulations/choose_on_proxy.py), never on the sites'
    records or the test set. Returns train x, train y, test x, test y."""
    import torch.nn.functional as F

    ds = _load_digits("digits", Path("."), False)
    gen = torch.Generator().manual_seed(seed)

    def drawn(x: torch.Tensor) -> torch.Tensor:
        big = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
        box = F.pad(big.clamp(0, 1), (4, 4, 4, 4))
        n = len(box)
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
        scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
        move = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # 2 px in [-1, 1] units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1
        )
        out = torch.empty_like(box)
        for i in range(0, n, 8192):  # a 60,000-image grid at once would take 0.4 GB
            grid = F.affine_grid(
                theta[i : i + 8192], list(box[i : i + 8192].shape), align_corners=False
            )
            out[i : i + 8192] = F.grid_sample(box[i : i + 8192], grid, align_corners=False)
        return out.clamp(0, 1)

    rows = torch.randint(0, len(ds.train.y), (records,), generator=gen)
    test_x = ds.test.x.repeat(test_draws, 1, 1, 1)
    return drawn(ds.train.x[rows]), ds.train.y[rows], drawn(test_x), ds.test.y.repeat(test_draws)


def _load_digits_mnist(name: str, root: Path, download: bool) -> Dataset:
    tx, ty, vx, vy = digits_as_mnist(PROXY_TRAIN_RECORDS)
    train, test = Split.from_tensors(tx, ty), Split.from_tensors(vx, vy)
    return Dataset(name, train, test, len(DIGIT_NAMES), DIGIT_NAMES)


def read_idx(path: Path, dataset: str = "idx") -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array."""
    try:
        opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorruptError(dataset, path, f"cannot read: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetCorruptError(dataset, path, f"bad IDX magic {data[:4].hex() or 'empty'}")
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise DatasetCorruptError(dataset, path, "truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) - header != int(np.prod(dims)) * dtype.itemsize:
        raise DatasetCorruptError(dataset, path, f"size does not match IDX shape {dims}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _find_idx(folder: Path) -> list[Path] | None:
    found = []
    for stem in _IDX_FILES:
        hit = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _load_idx_set(name: str, root: Path, download: bool) -> Dataset:
    sub, tv_class, names = {
        "mnist": ("MNIST", "MNIST", DIGIT_NAMES),
        "fashion-mnist": ("FashionMNIST", "FashionMNIST", FASHION_NAMES),
    }[name]
    dirs = _candidates(root / sub / "raw", cached_data_dir() / sub / "raw")
    files = next((f for f in map(_find_idx, dirs) if f), None)
    looked = [d / f"{s}[.gz]" for d in dirs for s in _IDX_FILES]
    if files is None and download:
        _fetch(name, looked, lambda tvd, dest: getattr(tvd, tv_class)(dest, download=True))
        files = _find_idx(cached_data_dir() / sub / "raw")
    if files is None:
        raise DatasetNotFoundError(name, looked, f"put the four IDX files in {dirs[0]}")
    xtr, ytr, xte, yte = (read_idx(f, name) for f in files)
    shapes_ok = xtr.ndim == xte.ndim == 3 and len(xtr) == len(ytr) and len(xte) == len(yte)
    labels_ok = all(y.ndim == 1 and (not len(y) or y.max() < len(names)) for y in (ytr, yte))
    if not (shapes_ok and labels_ok) or xtr.dtype != np.uint8 or xte.dtype != np.uint8:
        raise DatasetCorruptError(name, files[0].parent, "image/label files do not match")
    return make_dataset(name, (xtr[:, None], ytr), (xte[:, None], yte), names)


def _fetch(name: str, looked: list[Path], fetch: Callable[[Any, str], Any]) -> None:
    """Run ``fetch(torchvision.datasets, <cache>/data)``; failures become not-found errors."""
    import torchvision.datasets as tvd

    try:
        fetch(tvd, str(download_dir()))
    except Exception as exc:  # network, checksum, ... : report as "not found"
        raise DatasetNotFoundError(name, looked, reason=f"download failed: {exc}") from exc


def _load_svhn(name: str, root: Path, download: bool) -> Dataset:
    dirs = _candidates(root / "SVHN", root / "svhn", cached_data_dir() / "svhn")
    wanted = ("train_32x32.mat", "test_32x32.mat")
    looked = [d / f for d in dirs for f in wanted]
    folder = next((d for d in dirs if all((d / f).is_file() for f in wanted)), None)
    if folder is None and download:

        def fetch(tvd: Any, dest: str) -> None:
            for split in ("train", "test"):
                tvd.SVHN(str(Path(dest) / "svhn"), split=split, download=True)

        _fetch(name, looked, fetch)
        folder = cached_data_dir() / "svhn"
    if folder is None:
        raise DatasetNotFoundError(name, looked, f"put {' and '.join(wanted)} in {dirs[0]}")
    train, test = (_read_svhn(folder / f) for f in wanted)
    return make_dataset(name, train, test, DIGIT_NAMES)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    except Exception as exc:
        raise DatasetCorruptError("svhn", path, f"cannot read .mat with X and y: {exc}") from exc
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DatasetCorruptError("svhn", path, f"X has shape {x.shape}, y has {len(y)} rows")
    y[y == 10] = 0  # SVHN stores digit 0 as label 10 (as torchvision maps it)
    if len(y) and not 0 <= y.min() <= y.max() <= 9:
        raise DatasetCorruptError("svhn", path, "labels outside 1..10")
    return np.transpose(x, (3, 2, 0, 1)), y


def _load_cifar10(name: str, root: Path, download: bool) -> Dataset:
    base = "cifar-10-batches-py"
    dirs = _candidates(root / base, root / "cifar10" / base, cached_data_dir() / base)
    wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    looked = [d / f for d in dirs for f in wanted]
    folder = next((d for d in dirs if all((d / f).is_file() for f in wanted)), None)
    if folder is None and download:
        _fetch(name, looked, lambda tvd, dest: tvd.CIFAR10(dest, download=True))
        folder = cached_data_dir() / base
    if folder is None:
        raise DatasetNotFoundError(name, looked, f"put the {base} batches in {dirs[0]}")
    parts = [_read_cifar(folder / f) for f in wanted]
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    names = CIFAR10_NAMES
    if (folder / "batches.meta").is_file():
        names = tuple(_unpickle(folder / "batches.meta").get("label_names", names))
    return make_dataset(name, train, parts[5], names)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise DatasetCorruptError("cifar10", path, f"cannot unpickle: {exc}") from exc
    if not isinstance(entry, dict):
        raise DatasetCorruptError("cifar10", path, "pickle does not hold a dict")
    return entry


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    try:
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry["labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise DatasetCorruptError("cifar10", path, f"bad batch contents: {exc!r}") from exc
    if len(x) != len(y) or (len(y) and not 0 <= y.min() <= y.max() <= 9):
        raise DatasetCorruptError("cifar10", path, f"{len(x)} images, {len(y)} labels (0..9)")
    return x, y


MEDMNIST_RECORD = "https://zenodo.org/records/10519652/files"  # MedMNIST v2 (28x28)
MEDMNIST_MD5 = {"retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4"}  # as medmnist 3.0 pins it


def _load_medmnist(name: str, root: Path, download: bool) -> Dataset:
    file = f"{name}.npz"
    looked = _candidates(
        root / "medmnist" / file, root / file, cached_data_dir() / "medmnist" / file
    )
    path = next((p for p in looked if p.is_file()), None)
    if path is None and download:
        try:
            import medmnist  # optional dependency
        except ImportError:
            medmnist = None
        dest = download_dir() / "medmnist"
        dest.mkdir(parents=True, exist_ok=True)
        if medmnist is not None:
            cls = getattr(medmnist, medmnist.INFO[name]["python_class"])
            _fetch(name, looked, lambda _, __: cls(split="test", root=str(dest), download=True))
        elif name in MEDMNIST_MD5:  # the published file, checked against its MD5
            url = f"{MEDMNIST_RECORD}/{file}?download=1"
            _fetch(
                name,
                looked,
                lambda tvd, _: tvd.utils.download_url(url, str(dest), file, MEDMNIST_MD5[name]),
            )
        path = dest / file if (dest / file).is_file() else None
    if path is None:
        hint = (
            f"download {file} (MedMNIST v2, https://zenodo.org/records/10519652) and put it "
            f"at {looked[0]}, or pip install medmnist and set data.download=true"
        )
        raise DatasetNotFoundError(name, looked, hint, can_download=False)
    k = MEDMNIST_CLASSES[name]
    train, test = (_read_npz(path, name, split, k) for split in ("train", "test"))
    return make_dataset(name, train, test, tuple(str(i) for i in range(k)))


def _read_npz(path: Path, name: str, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as npz:
            x, y = npz[f"{split}_images"], npz[f"{split}_labels"]
    except Exception as exc:
        raise DatasetCorruptError(
            name, path, f"cannot read {split}_images/labels: {exc!r}"
        ) from exc
    y = np.asarray(y).reshape(len(y), -1)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    else:
        raise DatasetCorruptError(name, path, f"{split}_images has shape {x.shape}")
    if y.shape[1] != 1 or len(y) != len(x):
        raise DatasetCorruptError(
            name, path, f"{split}_labels has shape {y.shape}, expected ({len(x)}, 1)"
        )
    if len(y) and not 0 <= y.min() <= y.max() < num_classes:
        raise DatasetCorruptError(
            name,
            path,
            f"{split}_labels run from {int(y.min())} to {int(y.max())}; {name} has "
            f"{num_classes} classes, so labels must be 0..{num_classes - 1}",
        )
    return x, y[:, 0].astype(np.int64)


def _load_folder(name: str, root: Path, download: bool, classes: tuple[str, ...] = ()) -> Dataset:
    """ImageFolder tree checked against the declared label space (:mod:`.folder`)."""
    parts, names = folder.class_folders(root, classes)
    files = folder.image_files(parts, names)
    gray, size = folder.check_uniform([f for part in files for f, _ in part])
    arrays = [folder.read_images(part, gray, size) for part in files]
    if len(arrays) == 2:
        return make_dataset(name, arrays[0], arrays[1], names)
    x, y = arrays[0]
    tr, te = stratified_split(y)
    return make_dataset(name, (x[tr], y[tr]), (x[te], y[te]), names)


_LOADERS: dict[str, Callable[[str, Path, bool], Dataset]] = {
    "digits": _load_digits,
    "digits-mnist": _load_digits_mnist,
    "mnist": _load_idx_set,
    "fashion-mnist": _load_idx_set,
    "svhn": _load_svhn,
    "cifar10": _load_cifar10,
}  # "folder" is loaded with the declared label space (load_dataset)
