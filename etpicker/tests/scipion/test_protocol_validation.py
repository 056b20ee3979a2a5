"""_validate and _warnings messages for bad or thin inputs, and the conversions
between Scipion and core files.

No network is trained here: tomograms are small random volumes and the model a
folder with a config.json (validation and conversion never load weights).
"""
import json
import os

import numpy as np
from pyworkflow.object import Pointer
from pyworkflow.tests import BaseTest, setupTestProject
from tomo.constants import BOTTOM_LEFT_CORNER

from etpicker import convert
from etpicker.core import io
from etpicker.core.settings import MIN_VAL_PARTICLES
from etpicker.protocols import (EtPickerProtLabels, EtPickerProtTrain, EtPickerProtPick,
                                EtPickerProtImportModel)
from etpicker.protocols.protocol_base import linkInputs
from scipion_helpers import (output, new_protocol, write_mrc, write_importer_txt, import_tomograms,
                             import_coordinates)

SHAPE = (24, 40, 48)  # z, y, x


def write_model_folder(folder, voxel_size=10.0, weights=True, classes=("ribosome",)):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump({"format": 1, "classes": list(classes), "diameters": [9] * len(classes), "widths": [4, 8, 8, 8],
                   "voxel_size": voxel_size, "label_type": "tball", "patch": 32, "pad": 4}, handle)
    if weights:
        open(os.path.join(folder, "weights.pt"), "wb").close()
    return folder


class TestEtPickerValidation(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        root = cls.proj.getTmpPath()
        rng = np.random.default_rng(0)
        cls.xyz = {"tomo_a": np.array([[10.0, 12.0, 5.0], [30.0, 20.0, 15.0]]),
                   "tomo_b": np.array([[40.0, 30.0, 20.0], [8.0, 8.0, 8.0]])}
        for stem in cls.xyz:
            write_mrc(os.path.join(root, "%s.mrc" % stem), rng.normal(size=SHAPE), 10.0)
            write_importer_txt(os.path.join(root, "ribosome"), stem, cls.xyz[stem])
        # 24 particles in one tomogram: enough to validate on
        grid = np.stack(np.meshgrid([6.0, 18, 30, 42], [8.0, 20, 32], [6.0, 16], indexing="ij"), -1)
        write_importer_txt(os.path.join(root, "many"), "tomo_a", grid.reshape(-1, 3))
        os.makedirs(os.path.join(root, "empty"))
        open(os.path.join(root, "empty", "tomo_a.txt"), "w").close()
        cls.tomos = import_tomograms(cls, root, 10.0, label="tomos 10A")
        cls.tomos20 = import_tomograms(cls, root, 20.0, label="tomos 20A")
        cls.ribosome = import_coordinates(cls, os.path.join(root, "ribosome"), cls.tomos,
                                          label="ribosome")
        cls.many = import_coordinates(cls, os.path.join(root, "many"), cls.tomos, label="many")
        cls.empty = import_coordinates(cls, os.path.join(root, "empty"), cls.tomos,
                                       label="nothing")
        cls.modelRun = cls.newProtocol(EtPickerProtImportModel,
                                       modelDir=write_model_folder(os.path.join(root, "model")))
        cls.launchProtocol(cls.modelRun)

    def _pick(self, tomograms, modelRun):
        return new_protocol(self, EtPickerProtPick,
                            {"inputTomograms": output(tomograms, "Tomograms"),
                             "inputModel": output(modelRun, "outputModel")})

    def _train(self, *coordRuns, **kwargs):
        return new_protocol(self, EtPickerProtTrain,
                            {"inputTomograms": output(self.tomos, "Tomograms"),
                             "inputCoordinates": [output(r, "outputCoordinates")
                                                  for r in coordRuns]}, **kwargs)

    # --------------------------- validation ----------------------------------
    def test_good_inputs_pass(self):
        self.assertEqual(self._pick(self.tomos, self.modelRun).validate(), [])
        self.assertEqual(self._train(self.ribosome, diameters="90").validate(), [])
        labels = new_protocol(self, EtPickerProtLabels,
                              {"inputTomograms": output(self.tomos, "Tomograms"),
                               "inputCoordinates": [output(self.ribosome, "outputCoordinates")]})
        self.assertEqual(labels.validate(), [])

    def test_thin_validation_is_warned_about_before_launch(self):
        # 4 ribosomes in all: the held-out fifth holds about 1 of them
        warnings = self._train(self.ribosome, diameters="90").warnings()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("about 1 particle(s) of ribosome (fewer than %d)" % MIN_VAL_PARTICLES, warnings[0])
        thin = self._train(self.ribosome, diameters="90")
        linkInputs(thin, {"valTomograms": output(self.tomos, "Tomograms"),
                          "valCoordinates": [output(self.ribosome, "outputCoordinates")]})
        self.assertIn("has 4 particle(s) of ribosome", thin.warnings()[0])
        enough = self._train(self.ribosome, diameters="90")
        linkInputs(enough, {"valTomograms": output(self.tomos, "Tomograms"),
                            "valCoordinates": [output(self.many, "outputCoordinates")]})
        self.assertEqual(enough.warnings(), [])

    def test_particles_too_large_for_the_network_are_warned_about_with_the_binning(self):
        # 600 Å at 10 Å/voxel: 60 voxels across, where the network was measured up to 32
        large = self._train(self.many, diameters="90", particleDiameters="600")
        sizes = [w for w in large.warnings() if w.startswith("Particles of 60 voxels")]
        self.assertEqual(len(sizes), 1, large.warnings())
        self.assertIn("bin the tomograms by 3 (to 30 Å/voxel)", sizes[0])
        # the default, the coordinates' box size (20 voxels here), is well within it
        self.assertFalse([w for w in self._train(self.many, diameters="90").warnings()
                          if w.startswith("Particles")])

    def test_tomograms_must_have_distinct_ids(self):
        # the same file name in two folders: tomo's importer gives both the tsId "x"
        root = os.path.join(self.proj.getTmpPath(), "dup")
        for folder in ("a", "b"):
            os.makedirs(os.path.join(root, folder))
            write_mrc(os.path.join(root, folder, "x.mrc"), np.zeros(SHAPE), 10.0)
        twins = import_tomograms(self, root, 10.0, label="twins", pattern="*/x.mrc")
        self.assertEqual([t.getTsId() for t in twins.Tomograms], ["x", "x"])
        errors = self._pick(twins, self.modelRun).validate()
        self.assertTrue(any("share the tomogram id" in e for e in errors), errors)

    def test_pick_settings_are_checked_with_their_units(self):
        pick = self._pick(self.tomos, self.modelRun)
        pick.threshold.set(1.5)
        pick.minDistance.set(0)
        errors = " ".join(pick.validate())
        self.assertIn("probability in (0, 1]", errors)
        self.assertIn("minimum distance must be positive (voxels)", errors)
        pick.threshold.set(1.0)  # the core's upper end: only voxels certain not to be background
        pick.minDistance.set(None)
        self.assertFalse([e for e in pick.validate() if "threshold" in e])

    def test_class_names_that_would_share_an_output_name_are_refused(self):
        folder = os.path.join(self.proj.getTmpPath(), "ribosome")
        runs = [import_coordinates(self, folder, self.tomos, label=label) for label in ("a-b", "a_b")]
        errors = self._train(*runs, diameters="90").validate()
        self.assertTrue(any("a-b, a_b differ only in characters" in e for e in errors), errors)

    def test_training_leaves_out_tomograms_without_annotations(self):
        # "many" annotates tomo_a only: tomo_b's particles must not be taught as background
        prot = self._train(self.many, diameters="90")
        self.proj.saveProtocol(prot)
        prot.makePathsAndClean()
        prot.convertInputStep()
        tomos = [os.path.basename(p) for p in prot._inputFiles("train", "tomos", ".mrc")]
        csvs = [os.path.basename(p) for p in prot._inputFiles("train", "coords", ".csv")]
        self.assertEqual((tomos, csvs), (["tomo_a.mrc"], ["tomo_a.csv"]))

    def test_the_annotations_question_reaches_the_core_command(self):
        commands = {}
        for answer in (True, False):
            prot = self._train(self.many, diameters="90", allAnnotated=answer)
            self.proj.saveProtocol(prot)
            prot.makePathsAndClean()
            prot.convertInputStep()
            prot._runCore = lambda subcommand, *args: commands.setdefault(answer, " ".join(args))
            prot.trainStep()
        self.assertIn("--annotations complete", commands[True])
        self.assertIn("--annotations partial", commands[False])
        self.assertTrue(EtPickerProtTrain().allAnnotated.get())  # the core's default: complete

    def test_voxel_size_mismatch_says_to_rescale_or_retrain(self):
        errors = self._pick(self.tomos20, self.modelRun).validate()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("20.000 Å/voxel", errors[0])
        self.assertIn("rescale (bin) the tomograms to 10.000 Å/voxel", errors[0])
        self.assertIn("train a model", errors[0])

    def test_empty_coordinates_are_refused(self):
        errors = self._train(self.ribosome, self.empty).validate()
        self.assertTrue(any("is empty" in e for e in errors), errors)

    def test_model_with_missing_weights_is_refused(self):
        modelRun = self.newProtocol(EtPickerProtImportModel, modelDir=write_model_folder(
            os.path.join(self.proj.getTmpPath(), "model_to_break")))
        self.launchProtocol(modelRun)
        os.remove(modelRun.outputModel.getWeightsFile())
        errors = self._pick(self.tomos, modelRun).validate()
        self.assertTrue(any("missing" in e and "weights.pt" in e for e in errors), errors)

    def test_import_model_checks_the_folder(self):
        broken = write_model_folder(os.path.join(self.proj.getTmpPath(), "no_weights"),
                                    weights=False)
        errors = self.newProtocol(EtPickerProtImportModel, modelDir=broken).validate()
        self.assertTrue(any("weights.pt" in e for e in errors), errors)
        with open(os.path.join(broken, "weights.pt"), "wb"):
            pass
        with open(os.path.join(broken, "config.json"), "w") as handle:
            handle.write("{not json")
        errors = self.newProtocol(EtPickerProtImportModel, modelDir=broken).validate()
        self.assertTrue(any("not a readable JSON file" in e for e in errors), errors)
        with open(os.path.join(broken, "config.json"), "w") as handle:
            json.dump({"classes": ["a"], "diameters": [9], "voxel_size": 10.0}, handle)
        errors = self.newProtocol(EtPickerProtImportModel, modelDir=broken).validate()
        self.assertTrue(any("missing widths, patch, pad" in e for e in errors), errors)
        # the values too, as the core checks them: a model Scipion accepts, the core picks with
        with open(os.path.join(broken, "config.json"), "w") as handle:
            json.dump({"classes": ["a"], "diameters": [9], "voxel_size": 10.0, "widths": [4, 8, 8, 8],
                       "patch": 20, "pad": 2}, handle)
        errors = self.newProtocol(EtPickerProtImportModel, modelDir=broken).validate()
        self.assertTrue(any("multiple of 8" in e for e in errors), errors)

    def test_picks_of_an_imported_model_get_twice_its_label_diameter_as_box(self):
        # An imported model does not know its training coordinates' box size.
        pick = self._pick(self.tomos, self.modelRun)
        self.assertEqual(pick._boxSizeAngstrom("ribosome"), 2 * 9 * 10.0)
        pick.boxSize.set(250.0)
        self.assertEqual(pick._boxSizeAngstrom("ribosome"), 250.0)

    def test_diameters_must_be_numbers_per_class(self):
        self.assertTrue(any("must be numbers" in e for e in
                            self._train(self.ribosome, diameters="big").validate()))
        self.assertTrue(any("under 3 voxels" in e for e in
                            self._train(self.ribosome, diameters="20").validate()))
        self.assertTrue(any("one per class" in e for e in
                            self._train(self.ribosome, diameters="90,90").validate()))

    def test_imported_model_shows_its_contents(self):
        model = self.modelRun.outputModel
        self.assertEqual(model.getClasses(), ["ribosome"])
        self.assertAlmostEqual(model.getVoxelSize(), 10.0)
        self.assertIn("ribosome", str(model))
        self.assertIn("10.00 Å", str(model))
        self.assertTrue(os.path.exists(model.getWeightsFile()))

    # --------------------------- conversion ----------------------------------
    def test_coordinates_reach_the_core_as_bottom_left_voxels(self):
        tomograms = convert.tomogramsList(self.tomos.Tomograms)
        folder = os.path.join(self.proj.getTmpPath(), "csv")
        paths = convert.writeTomogramCsvs(folder, tomograms,
                                          [self.ribosome.outputCoordinates], ["ribosome"])
        for stem, xyz in self.xyz.items():
            coords = io.read_coords(paths[stem])
            self.assertEqual(set(coords.names), {"ribosome"})
            got = np.array(sorted(map(tuple, coords.xyz)))
            np.testing.assert_allclose(got, np.array(sorted(map(tuple, xyz))), atol=1e-3)

    def test_coordinates_at_another_sampling_rate_are_scaled(self):
        # Coordinates given at 20 Å/voxel onto tomograms at 10 Å/voxel: positions double.
        binned = import_coordinates(self, os.path.join(self.proj.getTmpPath(), "ribosome"),
                                    self.tomos20, label="binned")
        folder = os.path.join(self.proj.getTmpPath(), "csv_scaled")
        paths = convert.writeTomogramCsvs(folder, convert.tomogramsList(self.tomos.Tomograms),
                                          [binned.outputCoordinates], ["ribosome"])
        got = np.array(sorted(map(tuple, io.read_coords(paths["tomo_a"]).xyz)))
        np.testing.assert_allclose(got, 2 * np.array(sorted(map(tuple, self.xyz["tomo_a"]))),
                                   atol=1e-3)

    def test_core_picks_become_coordinates_with_class_and_score(self):
        tomo = convert.tomogramsList(self.tomos.Tomograms)[0]
        path = os.path.join(self.proj.getTmpPath(), "picks.csv")
        with open(path, "w") as handle:
            handle.write("class,x,y,z,score\nb,1.5,2,3,0.9\na,4,5,6,0.25\n")
        picks = list(convert.coordinatesFromCsv(path, tomo, ["a", "b"]))
        self.assertEqual([index for index, _ in picks], [1, 0])
        coord = picks[0][1]
        self.assertEqual(coord.getPosition(BOTTOM_LEFT_CORNER), (1.5, 2.0, 3.0))
        self.assertEqual((coord.getGroupId(), coord.getScore(), coord.getTomoId()),
                         (2, 0.9, tomo.getTsId()))

    def test_each_class_of_the_core_picks_goes_to_its_own_output(self):
        modelRun = self.newProtocol(EtPickerProtImportModel, modelDir=write_model_folder(
            os.path.join(self.proj.getTmpPath(), "model_ab"), classes=("a", "b")))
        self.launchProtocol(modelRun)
        pick = self._pick(self.tomos, modelRun)
        self.proj.saveProtocol(pick)
        pick.makePathsAndClean()
        tomo = convert.tomogramsList(self.tomos.Tomograms)[0]
        path = os.path.join(self.proj.getTmpPath(), "picks_ab.csv")
        with open(path, "w") as handle:
            handle.write("class,x,y,z,score\nb,1,2,3,0.9\na,4,5,6,0.8\nb,7,8,9,0.7\n")
        pick._appendPicks(tomo, path)
        found = {}
        for name in ("a", "b"):
            for coord in getattr(pick, "outputCoordinates_" + name).iterItems(orderBy="id"):
                coord.setVolume(tomo)
                found.setdefault(name, []).append(
                    (coord.getPosition(BOTTOM_LEFT_CORNER), coord.getGroupId(), coord.getScore()))
        self.assertEqual(found, {"a": [((4.0, 5.0, 6.0), 1, 0.8)],
                                 "b": [((1.0, 2.0, 3.0), 2, 0.9), ((7.0, 8.0, 9.0), 2, 0.7)]})

    def test_tomograms_reach_the_core_named_by_tsid(self):
        tomo = convert.tomogramsList(self.tomos.Tomograms)[0]
        path = convert.tomogramPath(tomo, os.path.join(self.proj.getTmpPath(), "links"))
        self.assertEqual(os.path.basename(path), "%s.mrc" % tomo.getTsId())
        self.assertEqual(os.path.realpath(path), os.path.realpath(tomo.getFileName()))

    def test_class_names_come_from_the_runs_and_stay_unique(self):
        pointers = [Pointer(self.ribosome, extended="outputCoordinates"),
                    Pointer(self.ribosome, extended="outputCoordinates"),
                    Pointer(self.empty, extended="outputCoordinates")]
        self.assertEqual(convert.classNames(pointers), ["ribosome", "ribosome_2", "nothing"])
