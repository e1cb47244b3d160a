"""A site's own images as an ImageFolder tree, checked against the declared label space.

    root/train/<class>/*.png and root/test/<class>/*.png   (or root/<class>/* : 80/20 split)

Every site must map the same class name to the same label, so the label space comes from
the configuration (``data.classes = "normal,drusen,cnv"``: label i is the i-th name), not
from the folder names a site happens to have. Refused, with the names or files listed:
a folder that is not a declared class, a declared class with no folder or no images, a
split without a class the other split has, images with different channel counts or sizes
(nothing is converted or resized silently).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .root import DatasetCorruptError, DatasetNotFoundError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = ("L", "1")


class LabelSpaceError(DatasetCorruptError):
    """A site's class folders do not match the declared label space (``data.classes``)."""

    def __init__(self, root: Path, problem: str) -> None:
        self.path = str(root)
        self.dataset = "folder"
        self.looked_at = [self.path]
        RuntimeError.__init__(self, f"dataset 'folder' at {root}: {problem}")


def _list(names: list[str] | set[str], limit: int = 8) -> str:
    items = sorted(names)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(repr(n) for n in items[:limit]) + more


def class_folders(root: Path, declared: tuple[str, ...]) -> tuple[list[Path], tuple[str, ...]]:
    """The split folders and the label space, checked (declared order, else sorted names)."""
    has_split = (root / "train").is_dir()
    parts = [p for p in ([root / "train", root / "test"] if has_split else [root]) if p.is_dir()]
    found = [{e.name for e in p.iterdir() if e.is_dir()} for p in parts]
    if not parts or not any(found):
        hint = (
            f"put images at {root}/train/<class>/*.png and {root}/test/<class>/*.png "
            f"(or {root}/<class>/*.png for an automatic 80/20 split)"
        )
        raise DatasetNotFoundError("folder", [root / "train", root / "test", root], hint,
                                   can_download=False)  # fmt: skip
    classes = declared or tuple(sorted(set().union(*found)))
    for part, names in zip(parts, found, strict=True):
        unknown, missing = names - set(classes), set(classes) - names
        if unknown or missing:
            raise LabelSpaceError(
                part,
                (f"folders {_list(unknown)} are not declared classes; " if unknown else "")
                + (f"declared classes {_list(missing)} have no folder; " if missing else "")
                + f"the label space is {', '.join(classes)} (data.classes"
                + (")" if declared else ", from the folder names: declare it in the config)"),
            )
    return parts, classes


def image_files(parts: list[Path], classes: tuple[str, ...]) -> list[list[tuple[Path, int]]]:
    """(file, label) per split; an empty class folder is an error naming it."""
    out = []
    for part in parts:
        files = []
        for label, c in enumerate(classes):
            these = [
                f for f in sorted((part / c).rglob("*"))
                if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
            ]  # fmt: skip
            if not these:
                raise LabelSpaceError(part / c, f"class {c!r} has no images ({IMG_EXTENSIONS})")
            files += [(f, label) for f in these]
        out.append(files)
    return out


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as exc:
        raise DatasetCorruptError("folder", path, f"not a readable image: {exc}") from exc


def check_uniform(files: list[Path]) -> tuple[bool, tuple[int, int]]:
    """(grayscale?, (width, height)) shared by every image, else an error listing the odd
    ones out (the minority kind, a few file names each)."""
    headers = {f: _header(f) for f in files}
    kinds = Counter("gray" if m in GRAY_MODES else "colour" for m, _ in headers.values())
    sizes = Counter(size for _, size in headers.values())
    for what, counts, key in (
        ("channel counts", kinds, lambda f: "gray" if headers[f][0] in GRAY_MODES else "colour"),
        ("sizes", sizes, lambda f: headers[f][1]),
    ):
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            odd = [f for f in files if key(f) != common]
            example = ", ".join(str(f) for f in odd[:5])
            raise DatasetCorruptError(
                "folder",
                odd[0],
                f"images have mixed {what} ({dict(counts)}); most are {common}, these are not: "
                f"{example}{' ...' if len(odd) > 5 else ''}. Convert them to one kind first",
            )
    mode, size = next(iter(headers.values()))
    return mode in GRAY_MODES, size


def read_images(
    files: list[tuple[Path, int]], gray: bool, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Images of one split as uint8 (N, C, H, W), and their labels."""
    from PIL import Image

    out = np.zeros((len(files), 1 if gray else 3, size[1], size[0]), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as raw:
                arr = np.asarray(raw.convert("L" if gray else "RGB"))
        except Exception as exc:
            raise DatasetCorruptError("folder", path, f"not a readable image: {exc}") from exc
        out[i] = arr[None] if gray else np.transpose(arr, (2, 0, 1))
    return out, np.array([label for _, label in files], dtype=np.int64)
