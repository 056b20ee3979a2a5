"""Every viewer renders headless to a PNG that is not blank, from real runs."""
import os

import numpy as np
from matplotlib.image import imread
from pwem.viewers import EmPlotter
from pyworkflow.object import Pointer
from pyworkflow.tests import BaseTest, setupTestProject
from tomo.objects import SetOfCoordinates3D
from tomo.protocols.protocol_import_coordinates_from_scipion import (
    ProtImportCoordinates3DFromScipion)

from etpicker import convert
from etpicker.core import io, simulate
from etpicker.protocols import (EtPickerProtEvaluate, EtPickerProtLabels, EtPickerProtPick,
                                EtPickerProtTrain)
from etpicker.viewers import (EtPickerEvaluationViewer, EtPickerLabelsViewer,
                              EtPickerPicksViewer, EtPickerTrainingViewer)

from etpicker.viewers.viewer_base import NO_TOMOGRAM
from scipion_helpers import (import_coordinates, import_tomograms, new_protocol, output,
                             write_importer_txt)

VOXEL_SIZE = 10.0
SHAPE = (32, 64, 64)
CLASSES = ["large", "medium"]
# Seconds of training on a CPU: enough for a model that picks something.
TRAINING = dict(patch=32, epochs=2, batch=2, seed=0, diameters="90", valFraction=0.3,
                useGpu=False)


class TestViewers(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        data = cls.proj.getTmpPath("data")
        simulate.write_dataset(data, n_tomos=1, shape=SHAPE, seed=5, voxel_size=VOXEL_SIZE,
                               log=lambda message: None)
        cls.truth = io.read_coords(os.path.join(data, "tomo_000.csv"))
        for name in CLASSES:
            write_importer_txt(os.path.join(data, name), "tomo_000",
                               cls.truth.xyz[cls.truth.names == name])
        cls.tomograms = import_tomograms(cls, data, VOXEL_SIZE)
        cls.annotations = [import_coordinates(cls, os.path.join(data, name), cls.tomograms,
                                              label=name, box_size=12) for name in CLASSES]
        annotated = [output(run, "outputCoordinates") for run in cls.annotations]
        tomograms = output(cls.tomograms, "Tomograms")

        cls.labels = new_protocol(cls, EtPickerProtLabels, {"inputTomograms": tomograms,
                                                            "inputCoordinates": annotated},
                                  diameters="90")
        cls.launchProtocol(cls.labels)
        cls.train = new_protocol(cls, EtPickerProtTrain, {"inputTomograms": tomograms,
                                                          "inputCoordinates": annotated},
                                 **TRAINING)
        cls.launchProtocol(cls.train)
        cls.pick = new_protocol(cls, EtPickerProtPick,
                                {"inputTomograms": tomograms,
                                 "inputModel": output(cls.train, "outputModel")}, useGpu=False)
        cls.launchProtocol(cls.pick)
        # Deterministic scored picks (the truth, shifted, plus false ones) for evaluation.
        cls.evaluate = new_protocol(
            cls, EtPickerProtEvaluate,
            {"inputPicks": [output(cls._scoredPicks(name), "coordinates") for name in CLASSES],
             "inputReference": annotated}, tolerance=30.0)
        cls.launchProtocol(cls.evaluate)

    @classmethod
    def _scoredPicks(cls, name):
        rng = np.random.default_rng(len(name))
        true = cls.truth.xyz[cls.truth.names == name] + 1.0
        false = rng.uniform(8, 24, (3, 3))
        xyz = np.vstack([true, false])
        scores = np.concatenate([rng.uniform(0.5, 1, len(true)), rng.uniform(0, 0.6, 3)])
        path = cls.proj.getTmpPath("picks_%s.csv" % name)
        io.write_coords(path, io.Coords([name] * len(xyz), xyz, scores))
        sqlite = cls.proj.getTmpPath("picks_%s.sqlite" % name)
        coords = SetOfCoordinates3D(filename=sqlite)
        coords.setSamplingRate(VOXEL_SIZE)
        tomo = convert.tomogramsList(cls.tomograms.Tomograms)[0]
        for _, coord in convert.coordinatesFromCsv(path, tomo, [name]):
            coords.append(coord)
        coords.write()
        importer = new_protocol(cls, ProtImportCoordinates3DFromScipion,
                                {"importTomograms": output(cls.tomograms, "Tomograms")},
                                sqliteFile=sqlite, boxSize=12)
        cls.launchProtocol(importer)
        return importer

    def _savePlotters(self, views, prefix):
        """Save each plotter's figure; return (paths, the other views' messages)."""
        paths, messages = [], []
        for index, view in enumerate(views):
            if isinstance(view, EmPlotter):
                paths.append(self.proj.getTmpPath("%s_%d.png" % (prefix, index)))
                view.figure.savefig(paths[-1], dpi=60)
            else:
                messages.append(view.getMessage())
        return paths, messages

    def _assertNotBlank(self, path):
        self.assertTrue(os.path.exists(path), path)
        self.assertGreater(imread(path)[..., :3].std(), 0.05, path)

    def test_training_curves_from_the_run_and_from_the_model(self):
        for target in (self.train, self.train.outputModel):
            viewer = EtPickerTrainingViewer(project=self.proj, protocol=self.train)
            views = viewer._visualize(target)
            paths, messages = self._savePlotters(views, "training")
            self.assertEqual((len(paths), messages), (1, []))
            self._assertNotBlank(paths[0])
            self.assertIn("2 epochs", views[0].figure.get_suptitle())

    def test_weak_labels_over_a_slice(self):
        viewer = EtPickerLabelsViewer(project=self.proj, protocol=self.labels)
        views = viewer._visualize(self.labels)
        paths, messages = self._savePlotters(views, "labels")
        self.assertEqual((len(paths), messages), (1, []))
        self._assertNotBlank(paths[0])
        legend = [t.get_text() for t in views[0].figure.legends[0].get_texts()]
        self.assertEqual([text.split(":")[0] for text in legend], CLASSES)

    def test_a_run_without_output_offers_a_tomogram_choice_and_says_why_nothing_shows(self):
        unrun = self.newProtocol(EtPickerProtLabels)
        self.proj.saveProtocol(unrun)
        viewer = EtPickerLabelsViewer(project=self.proj, protocol=unrun)
        views = viewer._visualize(unrun)
        # the GUI form selects choice 0 of this list at once
        self.assertEqual(viewer.getParam("tomogram").choices, [NO_TOMOGRAM])
        self.assertEqual(self._savePlotters(views, "unrun")[1], ["The run has no label volumes yet."])

    def test_picks_of_a_pick_run_with_a_reference(self):
        viewer = EtPickerPicksViewer(project=self.proj, protocol=self.pick)
        viewer.setProtocol(self.pick)
        for run in self.annotations:
            viewer.reference.append(Pointer(run, extended="outputCoordinates"))
        actions = viewer._getVisualizeDict()
        paths, messages = self._savePlotters(actions["displayPicks"](), "pick_slices")
        self.assertEqual((len(paths), messages), (1, []))
        self._assertNotBlank(paths[0])
        figure = self._figureOf(actions["displayPicks"]())
        labels = [t.get_text() for t in figure.legends[0].get_texts()]
        self.assertTrue(any(text.startswith("large reference") for text in labels), labels)
        # A slice typed outside the tomogram is said in a message (the GUI swallows errors).
        viewer.sliceZ.set(10_000)
        self.assertEqual(self._savePlotters(actions["displayPicks"](), "outside")[1],
                         ["Z slice 10000 is outside the tomogram (0-%d voxels)." % (SHAPE[0] - 1)])
        # Scores and the curve need picks: the tiny model may find none, then says so.
        for action in ("displayScores", "displayCurve"):
            paths, messages = self._savePlotters(actions[action](), action)
            self.assertEqual(len(paths) + len(messages), 1)
            for path in paths:
                self._assertNotBlank(path)
            for message in messages:
                self.assertIn("found no particles", message)

    def _figureOf(self, views):
        return next(v for v in views if isinstance(v, EmPlotter)).figure

    def test_evaluation_precision_recall_and_scores(self):
        viewer = EtPickerEvaluationViewer(project=self.proj, protocol=self.evaluate)
        views = viewer._visualize(self.evaluate)
        paths, messages = self._savePlotters(views, "evaluation")
        self.assertEqual((len(paths), messages), (2, []))
        for path in paths:
            self._assertNotBlank(path)
        self.assertIn("recall 1.000", views[0].figure.get_suptitle())  # every particle found

    def test_picks_and_reference_of_an_evaluation_run(self):
        viewer = EtPickerPicksViewer(project=self.proj, protocol=self.evaluate)
        views = viewer._visualize(self.evaluate)
        paths, messages = self._savePlotters(views, "evaluation_picks")
        self.assertEqual((len(paths), messages), (3, []))  # slices, scores, curve
        for path in paths:
            self._assertNotBlank(path)
