"""The adapt-model protocol in a Scipion project: a trained model + unlabelled tomograms of
another dataset -> a new model, its source data found through the model or given."""
import os
import shutil

from matplotlib.image import imread
from pyworkflow.tests import BaseTest, setupTestProject

from etpicker.core import adapt_settings, io, model_folder, simulate
from etpicker.protocols import EtPickerProtAdapt, EtPickerProtImportModel, EtPickerProtPick, EtPickerProtTrain
from etpicker.viewers import EtPickerAdaptationViewer
from scipion_helpers import import_coordinates, import_tomograms, new_protocol, output, write_importer_txt

VOXEL_SIZE = 10.0
SHAPE = (32, 64, 64)
TRAINING = dict(patch=32, epochs=2, batch=2, seed=0, diameters="90", valFraction=0.3, useGpu=False,
                shapeCheck=False)
ADAPTING = dict(maxMinutes=0.3, seed=1, useGpu=False)


class TestAdaptProtocol(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        source, target = cls.proj.getTmpPath("source"), cls.proj.getTmpPath("target")
        simulate.write_dataset(source, n_tomos=1, shape=SHAPE, snr=4.0, seed=5, voxel_size=VOXEL_SIZE,
                               log=lambda _: None)
        simulate.write_dataset(target, n_tomos=2, shape=SHAPE, snr=0.5, seed=6, voxel_size=VOXEL_SIZE,
                               log=lambda _: None)
        truth = io.read_coords(os.path.join(source, "tomo_000.csv"))
        write_importer_txt(os.path.join(source, "particle"), "tomo_000", truth.xyz)
        cls.sourceTomos = import_tomograms(cls, source, VOXEL_SIZE, "source tomograms")
        cls.targetTomos = import_tomograms(cls, target, VOXEL_SIZE, "target tomograms")
        cls.annotations = import_coordinates(cls, os.path.join(source, "particle"), cls.sourceTomos,
                                             label="particle", box_size=12)
        cls.train = new_protocol(cls, EtPickerProtTrain,
                                 {"inputTomograms": output(cls.sourceTomos, "Tomograms"),
                                  "inputCoordinates": [output(cls.annotations, "outputCoordinates")]}, **TRAINING)
        cls.launchProtocol(cls.train)
        cls.adapt = new_protocol(cls, EtPickerProtAdapt, {"inputModel": output(cls.train, "outputModel"),
                                                          "inputTomograms": output(cls.targetTomos, "Tomograms")},
                                 **ADAPTING)
        cls.adaptErrors = cls.adapt.validate()
        cls.launchProtocol(cls.adapt)

    def test_the_new_model_knows_where_it_came_from_and_picks(self):
        self.assertEqual(self.adaptErrors, [])
        model = self.adapt.outputModel
        self.assertEqual(model.getClasses(), self.train.outputModel.getClasses())
        self.assertEqual(model.missingFiles(), [])
        provenance = model_folder.read_config(model.getPath())["adaptation"]
        self.assertEqual(provenance["method"], adapt_settings.DEFAULT_METHOD)
        self.assertEqual(provenance["source_model"], os.path.abspath(self.train.outputModel.getPath()))
        self.assertEqual(sorted(os.path.basename(p) for p in provenance["target_tomograms"]),
                         ["tomo_000.mrc", "tomo_001.mrc"])
        self.assertIn(f"Method {adapt_settings.DEFAULT_METHOD}", "\n".join(self.adapt.summary()))
        pick = new_protocol(self, EtPickerProtPick, {"inputTomograms": output(self.targetTomos, "Tomograms"),
                                                     "inputModel": output(self.adapt, "outputModel")}, useGpu=False)
        self.launchProtocol(pick)
        self.assertTrue(pick.hasAttribute("outputCoordinates_particle"))

    def test_the_viewer_draws_the_adaptation_curves(self):
        views = EtPickerAdaptationViewer(project=self.proj, protocol=self.adapt)._visualize(self.adapt)
        self.assertEqual(len(views), 1)
        path = self.proj.getTmpPath("adaptation.png")
        views[0].figure.savefig(path, dpi=60)
        self.assertGreater(imread(path)[..., :3].std(), 0.05)
        self.assertIn(adapt_settings.DEFAULT_METHOD, views[0].figure.get_suptitle())

    def test_a_model_without_recorded_data_asks_for_it_and_adapts_when_given(self):
        old = self.proj.getTmpPath("old_model")
        shutil.copytree(self.train.outputModel.getPath(), old)
        config = model_folder.read_config(old)
        del config[model_folder.TRAINING_DATA_KEY]
        model_folder.write_config(old, config)
        imported = self.newProtocol(EtPickerProtImportModel, modelDir=os.path.abspath(old))
        self.launchProtocol(imported)
        inputs = {"inputModel": output(imported, "outputModel"), "inputTomograms": output(self.targetTomos, "Tomograms")}
        asking = new_protocol(self, EtPickerProtAdapt, inputs, **ADAPTING)
        self.assertTrue(any("does not record its training data" in error for error in asking.validate()))
        given = new_protocol(self, EtPickerProtAdapt,
                             dict(inputs, sourceTomograms=output(self.sourceTomos, "Tomograms"),
                                  sourceCoordinates=[output(self.annotations, "outputCoordinates")]),
                             method=2, **ADAPTING)  # spectrum
        self.assertEqual(given.validate(), [])
        self.launchProtocol(given)
        config = model_folder.read_config(given.outputModel.getPath())
        self.assertEqual(config["adaptation"]["method"], "spectrum")
        self.assertEqual([os.path.basename(p) for p in config[model_folder.TRAINING_DATA_KEY]["tomograms"]],
                         ["tomo_000.mrc"])
