"""The one place where Scipion objects and the core's files meet.

Core coordinates (docs/DESIGN.md) are CSV rows ``class,x,y,z[,score]`` in 0-based
voxels of the tomogram, x fastest; in Scipion they are ``BOTTOM_LEFT_CORNER``
positions in voxels of the coordinate set's sampling rate.
"""
import os
import re

import numpy as np
from pwem.emlib.image import ImageHandler
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import Coordinate3D

from .constants import OUTPUT_COORDINATES_PREFIX
from .core import io  # torch-free: the coordinate CSV codec shared with the core

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
    """``{tsId: ([(x, y, z), ...], [score, ...])}``: BOTTOM_LEFT_CORNER voxel positions at
    the set's sampling rate and their scores (None where a coordinate has none), read in
    one flat pass."""
    precedents = {tomo.getTsId(): tomo for tomo in tomogramsList(coordSet.getPrecedents())}
    found = {}
    for coord in coordSet.iterItems(orderBy="id"):
        tsId = coord.getTomoId()
        coord.setVolume(precedents[tsId])
        positions, scores = found.setdefault(tsId, ([], []))
        positions.append(coord.getPosition(BOTTOM_LEFT_CORNER))
        scores.append(coord.getScore())
    return found


def coordsPerTomogram(namedSets, tomograms):
    """Core ``Coords`` per tsId of ``tomograms``, in voxels of each tomogram (scaled from
    each set's sampling rate).

    namedSets: [(class name, SetOfCoordinates3D)]. Scores are kept when every
    coordinate has one; tomograms without coordinates get empty Coords.
    """
    perClass = [(name, coordSet.getSamplingRate(), readCoordinates(coordSet))
                for name, coordSet in namedSets]
    result = {}
    for tomo in tomograms:
        tsId = tomo.getTsId()
        names, xyz, scores = [], [], []
        for name, coordRate, byTomogram in perClass:
            positions, classScores = byTomogram.get(tsId, ([], []))
            scale = coordRate / tomo.getSamplingRate()
            names += [name] * len(positions)
            xyz += [[v * scale for v in position] for position in positions]
            scores += classScores
        hasScores = all(s is not None for s in scores)
        result[tsId] = io.Coords(np.array(names, dtype=str), np.array(xyz, float).reshape(-1, 3),
                                 np.array(scores, float) if hasScores else None)
    return result


def writeTomogramCsvs(folder, tomograms, coordSets, names):
    """One core CSV per tomogram (``<folder>/<tsId>.csv``, no scores) with the coordinates
    of every class, scaled from each set's sampling rate to the tomogram's.

    Returns ``{tsId: csv path}``.
    """
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for tsId, coords in coordsPerTomogram(list(zip(names, coordSets)), tomograms).items():
        paths[tsId] = os.path.join(folder, "%s.csv" % tsId)
        io.write_coords(paths[tsId], io.Coords(coords.names, coords.xyz))
    return paths


def coordinatesFromCsv(path, tomo, classNames):
    """Yield ``(class index, Coordinate3D)`` for each pick of a core CSV on ``tomo``.

    groupId is the 1-based class index in ``classNames``; positions are the CSV's
    BOTTOM_LEFT_CORNER voxels of ``tomo``.
    """
    picks = io.read_coords(path)
    for i, (name, (x, y, z)) in enumerate(zip(picks.names, picks.xyz)):
        index = classNames.index(str(name))
        coord = Coordinate3D()
        coord.setVolume(tomo)
        coord.setPosition(float(x), float(y), float(z), BOTTOM_LEFT_CORNER)
        coord.setTomoId(tomo.getTsId())
        coord.setGroupId(index + 1)
        if picks.score is not None:
            coord.setScore(float(picks.score[i]))
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
