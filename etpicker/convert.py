"""The one place where Scipion objects and the core's files meet.

Core coordinates (docs/DESIGN.md) are CSV rows ``class,x,y,z[,score]`` in 0-based
voxels of the tomogram, x fastest; in Scipion they are ``BOTTOM_LEFT_CORNER``
positions in voxels of the coordinate set's sampling rate.
"""
import csv
import json
import os
import re

from pwem.emlib.image import ImageHandler
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import Coordinate3D

from .constants import MODEL_CONFIG, OUTPUT_COORDINATES_PREFIX

# Files mrcfile reads whatever their extension (MRC under another name).
MRC_EXTENSIONS = (".mrc", ".mrcs", ".rec", ".map", ".st", ".ali")


def className(coordSet, producer=None, index=0, outputName=""):
    """Name of the class a coordinate set stands for: its own label, else the class in
    its output name (``outputCoordinates_<class>``, as etpicker's pick names them), else
    the label of the run that produced it, else ``class<index+1>``."""
    fromOutput = (outputName[len(OUTPUT_COORDINATES_PREFIX):]
                  if outputName.startswith(OUTPUT_COORDINATES_PREFIX) else "")
    for candidate in (coordSet.getObjLabel(), fromOutput,
                      producer.getObjLabel() if producer else ""):
        if candidate and candidate.strip():
            return candidate.strip()
    return "class%d" % (index + 1)


def classNames(pointers):
    """Unique class names for a list of pointers to SetOfCoordinates3D, in order."""
    names = []
    for index, pointer in enumerate(pointers):
        name = className(pointer.get(), pointer.getObjValue(), index, pointer.getExtended() or "")
        unique, n = name, 2
        while unique in names:
            unique, n = "%s_%d" % (name, n), n + 1
        names.append(unique)
    return names


def safeName(name):
    """``name`` reduced to characters allowed in an attribute / file name."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def tomogramsList(tomoSet):
    """Detached copies of a set's tomograms (iterating the set while querying
    another set that shares its database silently stops the outer loop)."""
    return [tomo.clone() for tomo in tomoSet.iterItems(orderBy="id")]


def readCoordinates(coordSet):
    """``{tsId: [(x, y, z), ...]}``: BOTTOM_LEFT_CORNER voxel positions at the set's
    sampling rate, read in one flat pass."""
    precedents = {tomo.getTsId(): tomo for tomo in tomogramsList(coordSet.getPrecedents())}
    positions = {}
    for coord in coordSet.iterItems(orderBy="id"):
        tsId = coord.getTomoId()
        coord.setVolume(precedents[tsId])
        positions.setdefault(tsId, []).append(coord.getPosition(BOTTOM_LEFT_CORNER))
    return positions


def writeCoordinatesCsv(path, rows):
    """Write core CSV rows ``(class, x, y, z)``; an empty list writes only the header."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "x", "y", "z"])
        for name, x, y, z in rows:
            writer.writerow([name, "%.3f" % x, "%.3f" % y, "%.3f" % z])


def writeTomogramCsvs(folder, tomograms, coordSets, names):
    """One core CSV per tomogram (``<folder>/<tsId>.csv``) with the coordinates of
    every class, scaled from each set's sampling rate to the tomogram's.

    Returns ``{tsId: csv path}``.
    """
    os.makedirs(folder, exist_ok=True)
    perClass = [(name, coordSet.getSamplingRate(), readCoordinates(coordSet))
                for name, coordSet in zip(names, coordSets)]
    paths = {}
    for tomo in tomograms:
        tsId = tomo.getTsId()
        rows = []
        for name, coordRate, positions in perClass:
            scale = coordRate / tomo.getSamplingRate()
            rows += [(name, x * scale, y * scale, z * scale)
                     for x, y, z in positions.get(tsId, [])]
        paths[tsId] = os.path.join(folder, "%s.csv" % tsId)
        writeCoordinatesCsv(paths[tsId], rows)
    return paths


def readCoreCsv(path):
    """Rows of a core CSV as ``(class, x, y, z, score or None)``."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return [(row["class"], float(row["x"]), float(row["y"]), float(row["z"]),
                 float(row["score"]) if row.get("score") not in (None, "") else None)
                for row in reader]


def coordinatesFromCsv(path, tomo, classNames):
    """Yield ``(class index, Coordinate3D)`` for each pick of a core CSV on ``tomo``.

    groupId is the 1-based class index in ``classNames``; positions are the CSV's
    BOTTOM_LEFT_CORNER voxels of ``tomo``.
    """
    for name, x, y, z, score in readCoreCsv(path):
        index = classNames.index(name)
        coord = Coordinate3D()
        coord.setVolume(tomo)
        coord.setPosition(x, y, z, BOTTOM_LEFT_CORNER)
        coord.setTomoId(tomo.getTsId())
        coord.setGroupId(index + 1)
        if score is not None:
            coord.setScore(score)
        yield index, coord


def tomogramPath(tomo, folder):
    """A path named ``<folder>/<tsId>.mrc`` that the core can read for ``tomo``.

    The core names its outputs after the tomogram's file stem, so every tomogram
    gets its tsId as stem: MRC files are linked, other formats converted.
    """
    os.makedirs(folder, exist_ok=True)
    source = os.path.abspath(tomo.getFileName())
    target = os.path.join(folder, "%s.mrc" % tomo.getTsId())
    if os.path.lexists(target):
        os.remove(target)
    if source.lower().endswith(MRC_EXTENSIONS):
        os.symlink(source, target)
    else:
        ImageHandler().convert(tomo.getFileName(), target)
    return target


def readModelConfig(modelDir):
    """The parsed config.json of a model folder (plain JSON: no torch needed)."""
    with open(os.path.join(modelDir, MODEL_CONFIG)) as handle:
        return json.load(handle)
