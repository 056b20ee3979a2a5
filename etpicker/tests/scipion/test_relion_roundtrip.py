"""Our picks reach RELION 5 intact: reliontomo's own writer, then its own reader."""
import os

import numpy as np
from emtable import Table
from pyworkflow.tests import BaseTest, setupTestProject
from reliontomo.constants import IN_PARTICLES_STAR, PARTICLES_TABLE
from reliontomo.convert.convert50_tomo import Reader, Writer
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import SetOfCoordinates3D
from tomo.protocols import ProtImportTomograms

from etpicker import convert
from etpicker.core import io, simulate

VOXEL_SIZE = 10.0
CLASSES = ["small", "large"]


class TestRelionRoundTrip(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        data = cls.proj.getTmpPath("data")
        simulate.write_dataset(data, n_tomos=2, shape=(32, 48, 64), voxel_size=VOXEL_SIZE,
                               log=lambda message: None)
        importer = cls.newProtocol(ProtImportTomograms, filesPath=os.path.abspath(data),
                                   filesPattern="*.mrc", samplingRate=VOXEL_SIZE)
        cls.launchProtocol(importer)
        cls.tomograms = importer.Tomograms

    def _picks(self):
        """A picked SetOfCoordinates3D made from core CSVs as the pick protocol makes it:
        sub-voxel positions near every border, two classes, scores."""
        rng = np.random.default_rng(3)
        coords = SetOfCoordinates3D.create(self.proj.getTmpPath(), template="picks%s.sqlite")
        coords.setSamplingRate(VOXEL_SIZE)
        coords.setPrecedents(self.tomograms)
        coords.setBoxSize(12)
        expected = {}
        for tomo in convert.tomogramsList(self.tomograms):
            x_size, y_size, z_size = tomo.getDim()
            xyz = rng.uniform(0, 1, (20, 3)) * [x_size - 1, y_size - 1, z_size - 1]
            xyz[:2] = [[0, 0, 0], [x_size - 1, y_size - 1, z_size - 1]]  # the corners
            names = rng.choice(CLASSES, len(xyz))
            path = self.proj.getTmpPath("%s.csv" % tomo.getTsId())
            io.write_coords(path, io.Coords(names, xyz, rng.uniform(0.1, 1, len(xyz))))
            for _, coord in convert.coordinatesFromCsv(path, tomo, CLASSES):
                coords.append(coord)
            expected[tomo.getTsId()] = io.read_coords(path).xyz
        coords.write()
        return coords, expected

    def test_positions_survive_relion5_star(self):
        picks, expected = self._picks()
        tomoDict = {tomo.getTsId(): tomo for tomo in convert.tomogramsList(self.tomograms)}
        outDir = self.proj.getTmpPath("relion")
        os.makedirs(outDir, exist_ok=True)
        Writer.coords2Star(picks, tomoDict, outDir)

        starFile = os.path.join(outDir, IN_PARTICLES_STAR)
        table = Table()
        table.read(starFile, tableName=PARTICLES_TABLE)
        self.assertEqual(len(table), sum(len(xyz) for xyz in expected.values()))
        readBack = SetOfCoordinates3D.create(self.proj.getTmpPath(), template="back%s.sqlite")
        readBack.setSamplingRate(VOXEL_SIZE)
        readBack.setPrecedents(self.tomograms)
        Reader(starFile, table).starFile2Coords3D(readBack, self.tomograms)
        readBack.write()

        positions = {}
        for coord in readBack.iterItems(orderBy="id"):
            coord.setVolume(tomoDict[coord.getTomoId()])
            positions.setdefault(coord.getTomoId(), []).append(
                coord.getPosition(BOTTOM_LEFT_CORNER))
        self.assertEqual(sorted(positions), sorted(expected))
        for tsId, xyz in expected.items():
            got = np.array(positions[tsId])
            # Same particles in the same order, within half a voxel on every axis.
            self.assertEqual(got.shape, xyz.shape)
            self.assertLess(np.abs(got - xyz).max(), 0.5, tsId)
