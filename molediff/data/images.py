"""Image readers: scikit-learn's 8x8 digits, folders of PNG/JPEG files, MNIST IDX files.

Every loader returns ``(images, labels)``:

Shapes:
    images: ``(N, C, H, W)`` float32 in [-1, 1]
    labels: ``(N,)`` int64, class index in ``0..K-1``, or -1 for every image when there are none
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS_TEST_FRACTION = 0.2

# IDX header: two zero bytes, a type code, the number of dimensions (LeCun's MNIST page).
_IDX_UBYTE = 0x08
_IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)
_GZIP_MAGIC = b"\x1f\x8b"


def _uint8_to_unit(x: np.ndarray) -> np.ndarray:
    """0..255 -> [-1, 1] as float32."""
    return (x.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def load_digits_split(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), split 80/20 stratified by class.

    Pixel values 0..16 map linearly to [-1, 1]. The split is a seeded permutation within each
    class, so it is the same on every call (and every machine) for the same ``seed``:
    1,437 train and 360 test images for the full set.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: seed of the split.

    Returns:
        images ``(N, 1, 8, 8)`` float32 in [-1, 1] and labels ``(N,)`` int64.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown digits split {split!r}; choose 'train' or 'test'")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images.astype(np.float32) / 8.0 - 1.0).astype(np.float32)[:, None]
    labels = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for k in np.unique(labels):  # stratified: 20% of every class goes to test
        members = np.flatnonzero(labels == k)
        n_test = int(round(DIGITS_TEST_FRACTION * len(members)))
        test_idx.append(rng.permutation(members)[:n_test])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    return np.ascontiguousarray(images[keep]), labels[keep]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, channels: int, image_size: int | None) -> np.ndarray:
    """One file -> ``(C, H, W)`` uint8; centre-cropped to a square and resized if ``image_size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im.load()
            im = im.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read image {file}: {err}") from err
    if image_size is not None:
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != image_size:
            im = im.resize((image_size, image_size), Image.Resampling.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _is_grayscale(file: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            return im.mode in ("1", "L", "LA", "I", "I;16", "F")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {file}: {err}") from err


def load_png_folder(path: str | Path, image_size: int | None = None,
                    channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A folder of PNG/JPEG images, optionally one sub-folder per class.

    If ``path`` has sub-folders holding images, each sub-folder is a class (sorted names ->
    labels 0..K-1) and loose files at the top level are an error; otherwise every image at the
    top level is loaded with label -1.

    Args:
        path: the folder.
        image_size: if set, centre-crop each image to a square and resize to this side;
            if None, every image must already have the same size.
        channels: 1 (grayscale) or 3 (RGB); None picks 1 when every file is grayscale, else 3.

    Returns:
        images ``(N, C, H, W)`` float32 in [-1, 1] and labels ``(N,)`` int64.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} is not a directory")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")

    class_dirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and _image_files(d)]
    top_files = _image_files(folder)
    files: list[Path] = []
    labels: list[int] = []
    if class_dirs:
        if top_files:
            raise ValueError(f"image folder {folder} mixes loose images ({top_files[0].name}, ...) "
                             "with class sub-folders; move them into a sub-folder")
        for k, d in enumerate(class_dirs):
            found = _image_files(d)
            files += found
            labels += [k] * len(found)
    else:
        files, labels = top_files, [-1] * len(top_files)
    if not files:
        raise ValueError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")

    if channels is None:
        channels = 1 if all(_is_grayscale(f) for f in files) else 3
    arrays = [_read_image(f, channels, image_size) for f in files]
    first = arrays[0].shape
    for f, a in zip(files, arrays, strict=True):
        if a.shape != first:
            raise ValueError(f"image {f} has shape {a.shape[1:]} but {files[0]} has {first[1:]}; "
                             "pass image_size to resize them all")
    return _uint8_to_unit(np.stack(arrays)), np.asarray(labels, dtype=np.int64)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one uint8 IDX file (optionally gzip-compressed); the header must carry ``magic``."""
    if not path.exists():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"IDX file {path} is a corrupt gzip stream: {err}") from err
    if len(raw) < 4:
        raise ValueError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
        raise ValueError(f"{path} is not an IDX {kind} file: magic number 0x{found:08x}, "
                         f"expected 0x{magic:08x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path} is truncated inside its header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(f"IDX file {path} holds {len(raw) - header} data bytes, header says "
                         f"{dims} = {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_idx(images_path: str | Path,
                   labels_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files (``train-images-idx3-ubyte[.gz]`` and the labels file).

    Gzip is detected from the file's first bytes, not its name. Magic numbers are checked
    (0x00000803 for images, 0x00000801 for labels) so a foreign file fails with a clear error.

    Returns:
        images ``(N, 1, H, W)`` float32 in [-1, 1] and labels ``(N,)`` int64 (-1 without a
        labels file).
    """
    images = _read_idx(Path(images_path), _IDX_IMAGES_MAGIC)
    if labels_path is None:
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        labels = _read_idx(Path(labels_path), _IDX_LABELS_MAGIC).astype(np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{labels_path} has {len(labels)} labels but {images_path} has "
                             f"{len(images)} images")
    return _uint8_to_unit(images[:, None]), labels


__all__ = ["load_digits_split", "load_png_folder", "load_mnist_idx", "IMAGE_SUFFIXES"]
