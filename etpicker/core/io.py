"""Files the core reads and writes: MRC tomograms and the coordinate CSV (the one codec
of `class,x,y,z[,score]`). The model folder has its own module (model_folder).

Torch-free on purpose, so that Scipion-side code and the benchmarks share the CSV codec.
"""
import csv
from collections import Counter
import math
import mmap
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from .errors import InputError
from .settings import voxel_sizes_agree

COORD_COLUMNS = ("class", "x", "y", "z")


@dataclass
class Tomogram:
    path: Path
    stem: str
    data: np.ndarray  # read-only memory map, indexed [z, y, x]
    voxel_size: float | None  # Å; None when the header gives none (0, as many tools write)


@dataclass
class Coords:
    names: np.ndarray  # class name per particle (str)
    xyz: np.ndarray  # float64 n×3, voxel units, 0-based, x fastest
    score: np.ndarray = None  # float64 n, or None when the file has no score column

    def __post_init__(self):
        self.names = np.asarray(self.names, dtype=str).reshape(-1)
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        if len(self.names) != len(self.xyz) or (self.score is not None and len(self.score) != len(self.xyz)):
            raise ValueError("Coords: names, xyz and score must have the same length")

    def __len__(self):
        return len(self.xyz)

    def subset(self, mask):
        """The particles selected by a boolean mask or index array."""
        score = None if self.score is None else self.score[mask]
        return Coords(self.names[mask], self.xyz[mask], score)


def open_tomogram(path, voxel_size=None) -> Tomogram:
    """A tomogram through a memory map. `voxel_size` (Å), when the caller knows it better than
    the header (Scipion's sampling rate), replaces the header's sizes unchecked."""
    path = Path(path)
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            data = mrc.data
            sizes = [float(mrc.voxel_size[axis]) for axis in "xyz"]
    except FileNotFoundError:
        raise InputError(f"{path}: no such tomogram file") from None
    except (ValueError, OSError) as error:
        raise InputError(f"{path}: not a readable MRC file ({error})") from None
    # Closing the mrcfile object leaves the numpy memory map usable (it owns its mmap).
    if data is None or data.ndim != 3:
        shape = "no data" if data is None else f"shape {data.shape}"
        raise InputError(f"{path}: a tomogram must be a 3D volume, found {shape}")
    if voxel_size is None:
        voxel_size = _cubic_voxel_size(path, sizes)
    return Tomogram(path=path, stem=path.stem, data=data, voxel_size=voxel_size)


def _cubic_voxel_size(path, sizes):
    """The one voxel size of a header's x, y, z sizes (Å), None when it gives none. Axes
    given as 0 are ignored; different sizes are an error, because labels, tiles and
    distances are all measured in voxels as if they were cubes."""
    known = [size for size in sizes if math.isfinite(size) and size > 0]
    if not known:
        return None
    if not voxel_sizes_agree(known):
        x, y, z = (f"{size:g}" for size in sizes)
        raise InputError(f"{path}: voxels are not cubic ({x} x {y} x {z} Å in x, y, z); "
                         "resample the tomogram to the same voxel size on every axis")
    return known[0]


def release_pages(array):
    """Let the OS drop the pages of a memory-mapped array that this process has read. They
    stay in the page cache, but stop counting towards the process's memory, so reading a
    whole tomogram tile by tile costs one batch of tiles, not the tomogram's size."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def write_volume(path, array, voxel_size=1.0):
    """Write a 3D array as MRC. float64 is stored as float32 (MRC has no float64); uint8
    labels are stored as mode 0 (8-bit) when they fit, as mrcfile would widen them to 16 bits.
    A voxel size of None (unknown) is written as 0, as headers say it."""
    array = np.asarray(array)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.uint8 and (array.size == 0 or array.max() < 128):
        array = array.view(np.int8)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(array)
        mrc.voxel_size = float(voxel_size or 0.0)


def _parse_float(text, path, line, column):
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}, line {line}: column '{column}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{path}, line {line}: column '{column}' is not finite: {text!r}")
    return value


def repeated(values):
    """The values that occur more than once, sorted (names that would overwrite each other)."""
    counts = Counter(values)
    return sorted(value for value, count in counts.items() if count > 1)


def sorted_names(names):
    """Class names in their default order: numbers by value (2 before 10), then text."""
    return sorted(names, key=lambda name: (0, int(name), "") if name.isdigit() else (1, 0, name))


def read_coords(path) -> Coords:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets start UTF-8 CSVs with a BOM
    except OSError as error:
        raise InputError(f"{path}: cannot read coordinates ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 CSV") from None
    rows = [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{path}: empty coordinate file, expected a header 'class,x,y,z[,score]'")
    header = [cell.strip().lower() for cell in rows[0]]
    missing = [name for name in COORD_COLUMNS if name not in header]
    if missing:
        raise InputError(f"{path}, line 1: missing column(s) {', '.join(missing)}; "
                         f"expected a header 'class,x,y,z[,score]'")
    has_score = "score" in header
    wanted = list(COORD_COLUMNS) + (["score"] if has_score else [])
    where = {name: header.index(name) for name in wanted}
    names, xyz, score = [], [], []
    line = 1
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise InputError(f"{path}, line {line}: expected {len(header)} values, found {len(row)}")
        name = row[where["class"]].strip()
        if not name:
            raise InputError(f"{path}, line {line}: empty class name")
        names.append(name)
        xyz.append([_parse_float(row[where[axis]].strip(), path, line, axis) for axis in "xyz"])
        if has_score:
            score.append(_parse_float(row[where["score"]].strip(), path, line, "score"))
    return Coords(np.array(names, dtype=str), np.array(xyz, dtype=np.float64).reshape(-1, 3),
                  np.array(score, dtype=np.float64) if has_score else None)


def write_coords(path, coords: Coords):
    path = Path(path)
    has_score = coords.score is not None
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(COORD_COLUMNS) + (["score"] if has_score else []))
        for i in range(len(coords)):
            row = [coords.names[i]] + [f"{value:.3f}" for value in coords.xyz[i]]
            if has_score:
                row.append(f"{coords.score[i]:.4f}")
            writer.writerow(row)


def check_inside(xyz, shape_zyx, path):
    """Raise InputError when a centre lies outside the volume. A centre inside the
    outermost voxels (-0.5 .. size-0.5 on each axis) counts as inside."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    size_xyz = np.array(shape_zyx[::-1], dtype=np.float64)
    outside = np.any((xyz < -0.5) | (xyz > size_xyz - 0.5), axis=1)
    if outside.any():
        first = xyz[np.argmax(outside)]
        raise InputError(f"{path}: {int(outside.sum())} of {len(xyz)} centres fall outside the tomogram "
                         f"(x,y,z size {int(size_xyz[0])},{int(size_xyz[1])},{int(size_xyz[2])}), "
                         f"e.g. x={first[0]:g}, y={first[1]:g}, z={first[2]:g}")
