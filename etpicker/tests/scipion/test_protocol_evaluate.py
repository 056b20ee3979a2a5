"""The evaluation protocol on hand-made picks and references whose counts are known."""
import json
import os
import subprocess
import sys

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject
from tomo.objects import SetOfCoordinates3D
from tomo.protocols.protocol_import_coordinates_from_scipion import (
    ProtImportCoordinates3DFromScipion)

from etpicker import convert
from etpicker.core import io
from etpicker.protocols import EtPickerProtEvaluate
from etpicker.core.metrics import read_curve

from scipion_helpers import (import_coordinates, import_tomograms, new_protocol, output,
                             write_importer_txt, write_mrc)

VOXEL_SIZE = 10.0  # Å
SHAPE = (16, 32, 32)  # z, y, x
# Reference particles (x, y, z voxels) per class and tomogram.
REFERENCE = {"A": {"t1": [[5, 5, 5], [20, 20, 8]], "t2": [[10, 10, 10], [25, 25, 4]]},
             "B": {"t1": [[25, 8, 4], [8, 25, 12]]}}
# Picks (x, y, z, score). With a 30 Å (3 voxel) tolerance:
#   A: t1 5,5,5 hit (0.5 away); t1 20,20,8 hit (2.5 away); t1 28,28,12 false;
#      t2 10,10,10 missed (the pick is 3.5 away, a false positive); t2 25,25,4 hit.
#   B: t1 25,8,4 hit; t1 8,25,12 missed; t2 10,10,10 false for class B but it sits on
#      reference A's particle, which the class-agnostic matching counts as found.
#   t3 has no reference coordinates (but is among the reference's tomograms): its pick
#   is not scored.
PICKS = {"A": {"t1": [[5.5, 5, 5, 0.9], [20, 22.5, 8, 0.8], [28, 28, 12, 0.3]],
               "t2": [[10, 10, 13.5, 0.6], [25, 25, 4, 0.7]], "t3": [[16, 16, 8, 0.95]]},
         "B": {"t1": [[25, 8, 4, 0.75]], "t2": [[10, 10, 10, 0.5]]}}
EXPECTED_30 = {"A": (3, 2, 1), "B": (1, 1, 1), "all": (5, 2, 1)}  # tp, fp, fn
EXPECTED_40 = {"A": (4, 1, 0), "B": (1, 1, 1), "all": (5, 2, 1)}


class TestEvaluateProtocol(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        root = cls.proj.getTmpPath()
        tomoDir = os.path.join(root, "tomograms")
        os.makedirs(tomoDir)
        for stem in ("t1", "t2", "t3"):
            write_mrc(os.path.join(tomoDir, stem + ".mrc"), np.zeros(SHAPE), VOXEL_SIZE)
        cls.tomograms = import_tomograms(cls, tomoDir, VOXEL_SIZE)
        cls.reference = {}
        for name, perTomogram in REFERENCE.items():
            folder = os.path.join(root, "reference", name)
            for stem, xyz in perTomogram.items():
                write_importer_txt(folder, stem, xyz)
            cls.reference[name] = import_coordinates(cls, folder, cls.tomograms, label=name)
        cls.picks = {name: cls._importScoredPicks(name, perTomogram)
                     for name, perTomogram in PICKS.items()}
        # A's reference again, clicked on tomograms binned 2x (20 Å/voxel)
        folder = os.path.join(root, "reference", "A_binned")
        for stem, xyz in REFERENCE["A"].items():
            write_importer_txt(folder, stem, np.asarray(xyz, float) / 2)
        cls.binnedReference = import_coordinates(cls, folder, cls.tomograms, label="A",
                                                 sampling_rate=2 * VOXEL_SIZE)

    @classmethod
    def _importScoredPicks(cls, name, perTomogram):
        """Scored picks built as the pick protocol builds them (from core CSVs), entering
        the project through tomo's own Scipion-sqlite importer."""
        sqlite = cls.proj.getTmpPath("picks_%s.sqlite" % name)
        coords = SetOfCoordinates3D(filename=sqlite)
        coords.setSamplingRate(VOXEL_SIZE)
        for tomo in convert.tomogramsList(cls.tomograms.Tomograms):
            rows = np.array(perTomogram.get(tomo.getTsId(), []), float).reshape(-1, 4)
            path = cls.proj.getTmpPath("picks_%s_%s.csv" % (name, tomo.getTsId()))
            io.write_coords(path, io.Coords([name] * len(rows), rows[:, :3], rows[:, 3]))
            for _, coord in convert.coordinatesFromCsv(path, tomo, [name]):
                coords.append(coord)
        coords.write()
        importer = new_protocol(cls, ProtImportCoordinates3DFromScipion,
                                {"importTomograms": output(cls.tomograms, "Tomograms")},
                                sqliteFile=sqlite, boxSize=6, objLabel="%s picks" % name)
        cls.launchProtocol(importer)
        return importer

    def _evaluate(self, toleranceAngstrom):
        protocol = new_protocol(
            self, EtPickerProtEvaluate,
            {"inputPicks": [output(self.picks[n], "coordinates") for n in ("A", "B")],
             "inputReference": [output(self.reference[n], "outputCoordinates")
                                for n in ("A", "B")]},
            tolerance=toleranceAngstrom)
        self.assertEqual(protocol.validate(), [])
        self.launchProtocol(protocol)
        return protocol

    def _assertCounts(self, result, expected):
        got = {name: (v["tp"], v["fp"], v["fn"]) for name, v in result["classes"].items()}
        got["all"] = tuple(result["all"][k] for k in ("tp", "fp", "fn"))
        self.assertEqual(got, expected)

    def test_counts_and_scores_at_30_angstrom(self):
        protocol = self._evaluate(30.0)
        result = protocol.result()
        self._assertCounts(result, EXPECTED_30)
        a = result["classes"]["A"]
        self.assertAlmostEqual(a["precision"], 3 / 5)
        self.assertAlmostEqual(a["recall"], 3 / 4)
        self.assertAlmostEqual(a["f1"], 2 * 3 / (2 * 3 + 2 + 1))
        summary = "\n".join(protocol.summary())
        self.assertIn("A: precision 0.600, recall 0.750", summary)
        self.assertIn("Tolerance 30 Å (3.00 voxels)", summary)
        # The table file holds the same numbers.
        with open(protocol._getExtraPath("evaluation.csv")) as handle:
            lines = handle.read().splitlines()
        self.assertEqual(lines[0], "class,tp,fp,fn,precision,recall,f1")
        self.assertIn("all,5,2,1,0.7143,0.8333,0.7692", lines)

        # The core's command line on the protocol's own files agrees.
        jsonFile = self.proj.getTmpPath("core_evaluation.json")
        subprocess.run([sys.executable, "-m", "etpicker.core", "evaluate",
                        "--pred", protocol._getExtraPath("picks"),
                        "--gt", protocol._getExtraPath("reference"),
                        "--tolerance", "3", "--json", jsonFile], check=True,
                       capture_output=True)
        with open(jsonFile) as handle:
            core = json.load(handle)
        for key in ("tp", "fp", "fn", "precision", "recall", "f1"):
            self.assertAlmostEqual(core["all"][key], result["all"][key])
            for name in ("A", "B"):
                self.assertAlmostEqual(core["classes"][name][key], result["classes"][name][key])

        # Keeping only scores >= 0.7 drops A's two false picks and one true pick.
        curve = protocol.curveFile()
        self.assertIsNotNone(curve)
        a = read_curve(curve)["A"]
        row = list(a["threshold"]).index(0.7)
        self.assertEqual((a["tp"][row], a["fp"][row], a["fn"][row]), (3, 0, 1))

    def test_reference_at_another_sampling_rate_is_scaled_to_the_tomograms(self):
        protocol = new_protocol(
            self, EtPickerProtEvaluate,
            {"inputPicks": [output(self.picks["A"], "coordinates")],
             "inputReference": [output(self.binnedReference, "outputCoordinates")]},
            tolerance=30.0)
        self.launchProtocol(protocol)
        self._assertCounts(protocol.result(), {"A": EXPECTED_30["A"], "all": EXPECTED_30["A"]})

    def test_tolerance_is_converted_with_the_sampling_rate(self):
        # 40 Å = 4 voxels: the pick 3.5 voxels from A's particle on t2 now matches.
        self._assertCounts(self._evaluate(40.0).result(), EXPECTED_40)

    def test_validate_explains_mismatched_inputs(self):
        protocol = new_protocol(
            self, EtPickerProtEvaluate,
            {"inputPicks": [output(self.picks["A"], "coordinates")],
             "inputReference": [output(self.reference[n], "outputCoordinates")
                                for n in ("A", "B")]},
            tolerance=0)
        errors = protocol.validate()
        self.assertTrue(any("as many picked sets as reference sets" in e for e in errors), errors)
        self.assertTrue(any("tolerance must be a positive" in e for e in errors), errors)
