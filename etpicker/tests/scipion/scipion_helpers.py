"""Shared set-up for the Scipion tests: synthetic data in, through tomo's importers.

Not a test module (no TestCase here), so importing it does not run tests twice.
"""
import os
import subprocess
import sys

import mrcfile
import numpy as np
from tomo.protocols import ProtImportTomograms, ProtImportCoordinates3D

from etpicker.core import io
from etpicker.protocols.protocol_base import linkInputs


def output(protocol, name):
    """``(protocol, output name)``: how ``new_protocol`` links inputs."""
    return protocol, name


def new_protocol(test, protocol_class, inputs=None, **params):
    """``test.newProtocol`` with its pointer inputs naming the outputs they point to
    (downstream runs need the name): ``inputs={attr: output(...) or [output(...), ...]}``."""
    prot = test.newProtocol(protocol_class, **params)
    linkInputs(prot, inputs or {})
    return prot


def write_mrc(path, volume, voxel_size):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(volume, np.float32))
        mrc.voxel_size = voxel_size


def run_core(*args):
    """Run ``python -m etpicker.core`` here and return its stdout (fails loudly)."""
    result = subprocess.run([sys.executable, "-m", "etpicker.core", *map(str, args)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def read_core_csv(path):
    """``{class: n×3 x,y,z}`` from a core CSV."""
    coords = io.read_coords(path)
    return {name: coords.xyz[coords.names == name] for name in sorted(set(coords.names))}


def write_importer_txt(folder, stem, xyz):
    """tomo's txt import format: one ``x y z`` line (BOTTOM_LEFT_CORNER voxels) per particle."""
    os.makedirs(folder, exist_ok=True)
    np.savetxt(os.path.join(folder, "%s.txt" % stem), np.asarray(xyz).reshape(-1, 3),
               fmt="%.3f")


def import_tomograms(test, folder, sampling_rate, label="tomograms", pattern="*.mrc"):
    prot = test.newProtocol(ProtImportTomograms, filesPath=folder, filesPattern=pattern,
                            samplingRate=sampling_rate)
    prot.setObjLabel(label)
    test.launchProtocol(prot)
    return prot


def import_coordinates(test, folder, tomograms_prot, label, box_size=20, sampling_rate=None):
    """Import ``folder/<tomogram stem>.txt``; the run label names the class."""
    prot = new_protocol(test, ProtImportCoordinates3D,
                        {"importTomograms": output(tomograms_prot, "Tomograms")},
                        importFrom=0, filesPath=folder, filesPattern="*.txt",
                        boxSize=box_size, samplingRate=sampling_rate)
    prot.setObjLabel(label)
    test.launchProtocol(prot)
    return prot


def match_count(pred_xyz, gt_xyz, tolerance):
    """One-to-one matches within ``tolerance`` voxels (greedy on distance)."""
    if len(pred_xyz) == 0 or len(gt_xyz) == 0:
        return 0
    distances = np.linalg.norm(pred_xyz[:, None, :] - gt_xyz[None, :, :], axis=-1)
    pairs = sorted(zip(*np.nonzero(distances <= tolerance)), key=lambda p: distances[p])
    used_pred, used_gt = set(), set()
    for i, j in pairs:
        if i not in used_pred and j not in used_gt:
            used_pred.add(i)
            used_gt.add(j)
    return len(used_pred)


def f1_score(pred_xyz, gt_xyz, tolerance):
    tp = match_count(np.asarray(pred_xyz).reshape(-1, 3), np.asarray(gt_xyz).reshape(-1, 3),
                     tolerance)
    return 2 * tp / (len(pred_xyz) + len(gt_xyz)) if len(pred_xyz) + len(gt_xyz) else 1.0
