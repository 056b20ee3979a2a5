"""The whole Scipion path on synthetic data: tomo's importers -> weak labels -> train ->
pick -> downstream tomo/pwem protocols, sharing one small model trained on the CPU."""
import json
import os
import shutil
import time

import mrcfile
import numpy as np
from pwem.protocols import ProtSetFilter
from pyworkflow.object import Pointer
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.protocols import ProtExportCoordinates3D

from etpicker import convert
from etpicker.protocols import EtPickerProtLabels, EtPickerProtTrain, EtPickerProtPick
from etpicker.core.model_folder import HISTORY_NAME, read_history
from scipion_helpers import (output, new_protocol, run_core, read_core_csv, write_importer_txt,
                             import_tomograms, import_coordinates, f1_score)

VOXEL_SIZE = 10.0  # Å, the simulator's
SHAPE = (48, 96, 96)  # z, y, x
LABEL_CLASSES = ["large", "medium"]  # two simulated classes, to check multi-class labels
CLASSES = ["particle"]  # what is trained and picked: every simulated particle, one class
TRAIN_STEMS = ["tomo_000", "tomo_001"]
TEST_STEM = "tomo_002"
SNR = 4.0  # clean enough for a tiny model trained in a couple of minutes on a CPU
TOLERANCE = 4.0  # voxels, about half a particle radius
TRAINING = dict(patch=32, widths="8,16,24,32", epochs=10, batch=4, learningRate=5e-3, seed=0,
                diameters="110", valFraction=0.25, useGpu=False)


def epochs_in(history_file):
    """The epoch numbers a training history lists."""
    return [row["epoch"] for row in read_history(history_file)]


class TestEtPickerPipeline(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.data = os.path.abspath(cls.proj.getTmpPath("data"))
        run_core("simulate", "--out", cls.data, "--n-tomos", 3, "--shape", *SHAPE,
                 "--snr", SNR, "--seed", 7)
        # Headers that disagree with the import's sampling rate (common), even between their
        # axes: Scipion's rate rules.
        for stem in TRAIN_STEMS + [TEST_STEM]:
            with mrcfile.open(os.path.join(cls.data, stem + ".mrc"), "r+") as mrc:
                mrc.voxel_size = (1.0, 1.0, 2.0)
        cls.truth = {}
        for stem in TRAIN_STEMS + [TEST_STEM]:
            truth = read_core_csv(os.path.join(cls.data, stem + ".csv"))
            truth["particle"] = np.concatenate(list(truth.values()))
            cls.truth[stem] = truth
        for name in LABEL_CLASSES + CLASSES:
            for stem in TRAIN_STEMS:
                write_importer_txt(os.path.join(cls.data, name), stem, cls.truth[stem][name])

        cls.trainTomos = import_tomograms(cls, cls.data, VOXEL_SIZE, "training tomograms",
                                          pattern="tomo_00[01].mrc")
        cls.testTomos = import_tomograms(cls, cls.data, VOXEL_SIZE, "test tomogram",
                                         pattern=TEST_STEM + ".mrc")
        annotations = {name: output(import_coordinates(cls, os.path.join(cls.data, name),
                                                       cls.trainTomos, label=name),
                                    "outputCoordinates")
                       for name in LABEL_CLASSES + CLASSES}
        cls.annotations = annotations

        cls.labels = new_protocol(cls, EtPickerProtLabels,
                                  {"inputTomograms": output(cls.trainTomos, "Tomograms"),
                                   "inputCoordinates": [annotations[n] for n in LABEL_CLASSES]},
                                  diameters="90")
        cls.launchProtocol(cls.labels)
        cls.train = new_protocol(cls, EtPickerProtTrain,
                                 {"inputTomograms": output(cls.trainTomos, "Tomograms"),
                                  "inputCoordinates": [annotations[n] for n in CLASSES]},
                                 **TRAINING)
        cls.launchProtocol(cls.train)
        cls.pick = cls.pickRun(cls.testTomos)

    @classmethod
    def pickRun(cls, tomograms, trainRun=None):
        prot = new_protocol(cls, EtPickerProtPick,
                            {"inputTomograms": output(tomograms, "Tomograms"),
                             "inputModel": output(trainRun or cls.train, "outputModel")},
                            useGpu=False)
        cls.launchProtocol(prot)
        return prot

    def picks(self, prot, name):
        """``{tsId: (xyz BOTTOM_LEFT_CORNER voxels, scores, groupIds)}`` of one class output."""
        found = {}
        for coord in getattr(prot, "outputCoordinates_" + name).iterCoordinates():
            xyz, scores, groups = found.setdefault(coord.getTomoId(), ([], [], []))
            xyz.append(coord.getPosition(BOTTOM_LEFT_CORNER))
            scores.append(coord.getScore())
            groups.append(coord.getGroupId())
        return {tsId: tuple(np.array(v) for v in values) for tsId, values in found.items()}

    # --------------------------- weak labels and model -----------------------
    def test_weak_labels_mark_each_class_at_its_centres(self):
        masks = self.labels.outputLabels
        self.assertEqual(masks.getSize(), len(TRAIN_STEMS))
        for mask in masks:
            with mrcfile.open(mask.getFileName(), permissive=True) as mrc:
                volume = mrc.data
            self.assertEqual(volume.shape, SHAPE)
            for index, name in enumerate(LABEL_CLASSES, start=1):
                x, y, z = np.round(self.truth[mask.getTsId()][name][0]).astype(int)
                self.assertEqual(volume[z, y, x], index)
            self.assertGreater((volume == 0).mean(), 0.5)

    def test_model_knows_its_classes_voxel_size_and_history(self):
        model = self.train.outputModel
        self.assertEqual(model.getClasses(), CLASSES)
        self.assertAlmostEqual(model.getVoxelSize(), VOXEL_SIZE, places=3)
        self.assertEqual(model.getDiameters(), [11.0])  # 110 Å at 10 Å/voxel
        with open(model.getHistoryFile()) as handle:
            self.assertGreaterEqual(len(handle.readlines()), 2)

    def test_fine_tuning_starts_from_the_initial_model(self):
        tuned = new_protocol(self, EtPickerProtTrain,
                             {"inputTomograms": output(self.trainTomos, "Tomograms"),
                              "inputCoordinates": [self.annotations[n] for n in CLASSES],
                              "initModel": output(self.train, "outputModel")},
                             **dict(TRAINING, epochs=1))
        self.launchProtocol(tuned)
        with open(tuned.outputModel.getConfigFile()) as handle:
            training = json.load(handle)["training"]
        self.assertEqual(os.path.abspath(training["init_model"]),
                         os.path.abspath(self.train.outputModel.getPath()))
        # At this SNR one epoch from random weights already picks well (F1 0.91, measured),
        # so F1 cannot tell the two starts apart; the validation loss can: after one epoch
        # it is near where the initial model ended (measured 0.171 against 0.164), not near
        # the initial model's own first epoch (0.303).
        base, tuned_loss = ([row["val_loss"] for row in read_history(run.outputModel.getHistoryFile())]
                            for run in (self.train, tuned))
        self.assertLess(tuned_loss[0], (base[0] + base[-1]) / 2)
        picked = self.picks(self.pickRun(self.testTomos, tuned), "particle")[TEST_STEM][0]
        self.assertGreaterEqual(f1_score(picked, self.truth[TEST_STEM]["particle"], TOLERANCE), 0.8)

    def test_stopped_training_continues_from_its_checkpoint(self):
        epochs = 4
        prot = new_protocol(self, EtPickerProtTrain,
                            {"inputTomograms": output(self.trainTomos, "Tomograms"),
                             "inputCoordinates": [self.annotations[n] for n in CLASSES]},
                            **dict(TRAINING, epochs=epochs))
        self.proj.launchProtocol(prot, wait=False)
        history = os.path.join(prot._modelDir(), HISTORY_NAME)
        deadline = time.time() + 300
        while not (os.path.exists(history) and epochs_in(history)):  # one epoch done
            self.assertLess(time.time(), deadline, "no epoch finished in 5 minutes")
            time.sleep(0.5)
        self.proj.stopProtocol(prot)  # what the GUI's Stop does: kills the core too
        stopped_after = epochs_in(history)
        self.assertLess(stopped_after[-1], epochs)

        prot.runMode.set(MODE_RESUME)  # the GUI's "Continue"
        self.launchProtocol(prot)
        self.assertTrue(prot.isFinished())
        self.assertEqual(epochs_in(prot.outputModel.getHistoryFile()), list(range(1, epochs + 1)))
        with open(prot.getStdoutLog()) as handle:
            self.assertIn("resuming", handle.read())

    # --------------------------- picks ---------------------------------------
    def test_picks_find_the_particles_of_each_class(self):
        for index, name in enumerate(CLASSES, start=1):
            output_set = getattr(self.pick, "outputCoordinates_" + name)
            self.assertTrue(output_set.isStreamClosed())
            self.assertAlmostEqual(output_set.getSamplingRate(), VOXEL_SIZE)
            self.assertEqual(output_set.getBoxSize(), 20)  # the training coordinates' 200 Å
            self.assertEqual(output_set.getPrecedents().getSize(), 1)
            xyz, scores, groups = self.picks(self.pick, name)[TEST_STEM]
            self.assertTrue(np.all(groups == index))
            self.assertTrue(np.all(scores > 0))
            f1 = f1_score(xyz, self.truth[TEST_STEM][name], TOLERANCE)
            print("class %s: %d picks, %d true, F1 %.3f"
                  % (name, len(xyz), len(self.truth[TEST_STEM][name]), f1))
            self.assertGreaterEqual(f1, 0.8)

    def test_picking_trusts_the_sampling_rate_not_the_headers(self):
        # the headers say 1 Å/voxel (2 in z): no "rescale the tomogram" warning may scare the user
        with open(self.pick.getStdoutLog()) as handle:
            log = handle.read()
        self.assertIn("picked %s" % TEST_STEM, log)
        self.assertNotIn("Å/voxel", log)

    def test_picked_sets_are_named_after_their_class_downstream(self):
        # e.g. picks fed back into train to fine-tune keep their class, not the run's label
        picked = Pointer(self.pick, extended="outputCoordinates_particle")
        self.assertEqual(convert.classNames([picked]), ["particle"])

    def test_scipion_picks_equal_the_core_cli_picks(self):
        out = self.proj.getTmpPath("cli_picks")
        run_core("pick", "--model", self.train.outputModel.getPath(),
                 "--tomos", os.path.join(self.data, TEST_STEM + ".mrc"), "--out", out,
                 "--voxel-size", VOXEL_SIZE, "--device", "cpu")  # as Scipion states it: the headers are wrong
        cli = read_core_csv(os.path.join(out, TEST_STEM + ".csv"))
        for name in CLASSES:
            scipion_xyz = self.picks(self.pick, name)[TEST_STEM][0]
            np.testing.assert_allclose(sorted(map(tuple, scipion_xyz)),
                                       sorted(map(tuple, cli[name])), atol=1e-3)

    def test_a_corrupt_tomogram_fails_the_run_keeps_the_others_and_continue_retries_it(self):
        folder = self.proj.getTmpPath("three")
        os.makedirs(folder)
        for stem in ("tomo_001", TEST_STEM):
            os.symlink(os.path.join(self.data, stem + ".mrc"), os.path.join(folder, stem + ".mrc"))
        broken = os.path.join(folder, "tomo_broken.mrc")
        shutil.copy(os.path.join(self.data, TEST_STEM + ".mrc"), broken)
        three = import_tomograms(self, folder, VOXEL_SIZE, "three tomograms")
        with open(broken, "r+b") as handle:  # corrupt after import: the data is cut short
            handle.truncate(os.path.getsize(broken) // 3)

        prot = new_protocol(self, EtPickerProtPick,
                            {"inputTomograms": output(three, "Tomograms"),
                             "inputModel": output(self.train, "outputModel")}, useGpu=False)
        self.proj.launchProtocol(prot, wait=True)
        # The run fails, so that nothing downstream takes the picks as complete...
        self.assertTrue(prot.isFailed())
        self.assertIn("Picking failed on 1 of 3 tomogram(s): tomo_broken", prot.getErrorMessage())
        # ...but keeps the others' picks.
        first = {name: self.picks(prot, name) for name in CLASSES}
        for name in CLASSES:
            self.assertEqual(sorted(first[name]), ["tomo_001", TEST_STEM])
        self.assertTrue(any("tomo_broken" in line and "failed" in line
                            for line in prot.summary()), prot.summary())
        logs = ""
        for path in (prot.getStdoutLog(), prot.getStderrLog()):
            with open(path) as handle:
                logs += handle.read()
        self.assertIn("Picking FAILED on tomogram tomo_broken", logs)

        # Repaired, "Continue" picks only the failed tomogram.
        shutil.copy(os.path.join(self.data, TEST_STEM + ".mrc"), broken)
        prot.runMode.set(MODE_RESUME)
        self.launchProtocol(prot)
        self.assertTrue(prot.isFinished())
        self.assertFalse(any("failed" in line for line in prot.summary()), prot.summary())
        for name in CLASSES:
            picks = self.picks(prot, name)
            self.assertEqual(sorted(picks), sorted(["tomo_001", "tomo_broken", TEST_STEM]))
            for tsId in ("tomo_001", TEST_STEM):  # not picked twice
                np.testing.assert_array_equal(picks[tsId][0], first[name][tsId][0])
            np.testing.assert_allclose(sorted(map(tuple, picks["tomo_broken"][0])),
                                       sorted(map(tuple, picks[TEST_STEM][0])), atol=1e-3)

    # --------------------------- downstream protocols ------------------------
    def test_score_filter_keeps_the_high_scores(self):
        scores = np.concatenate([s for _, s, _ in self.picks(self.pick, "particle").values()])
        cut = float(np.median(scores))
        prot = new_protocol(self, ProtSetFilter,
                            {"inputSet": output(self.pick, "outputCoordinates_particle")},
                            formula="item._score.get() >= %r" % cut)
        self.launchProtocol(prot)
        # The filtered set keeps our output's name.
        kept = [c.getScore() for c in prot.outputCoordinates_particle.iterItems()]
        self.assertEqual(len(kept), int(np.sum(scores >= cut)))
        self.assertTrue(all(s >= cut for s in kept))

    def test_export_writes_the_picks_as_text(self):
        prot = new_protocol(self, ProtExportCoordinates3D,
                            {"inputCoordinates": output(self.pick, "outputCoordinates_particle")},
                            outputFormat=0)
        self.launchProtocol(prot)
        exported = [os.path.join(root, f) for root, _, files in os.walk(prot.getPath())
                    for f in files if f.endswith(".txt")]
        self.assertEqual(len(exported), 1, exported)
        rows = np.loadtxt(exported[0], ndmin=2)
        picked = self.picks(self.pick, "particle")[TEST_STEM][0]
        # The exporter writes whole voxels of BOTTOM_LEFT_CORNER positions.
        np.testing.assert_array_equal(sorted(map(tuple, rows)),
                                      sorted(map(tuple, picked.astype(int))))
