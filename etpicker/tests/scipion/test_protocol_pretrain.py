"""The pretrain protocol in a Scipion project: unlabelled tomograms -> a pre-trained network,
its loss curve in the viewer, and the train protocol starting from it."""
import json
import os

from matplotlib.image import imread
from pyworkflow.tests import BaseTest, setupTestProject

from etpicker.core import io, simulate
from etpicker.core.model_folder import PRETRAINED_KIND, read_config, read_pretrain_history
from etpicker.objects import EtPickerPretrainedModel
from etpicker.protocols import EtPickerProtPretrain, EtPickerProtTrain
from etpicker.viewers import EtPickerPretrainingViewer
from scipion_helpers import import_coordinates, import_tomograms, new_protocol, output, write_importer_txt

VOXEL_SIZE = 10.0
SHAPE = (32, 64, 64)
NETWORK = dict(patch=16, widths="4,8,8,8")


class TestPretrainProtocol(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        data = cls.proj.getTmpPath("data")
        simulate.write_dataset(data, n_tomos=1, shape=SHAPE, seed=3, voxel_size=VOXEL_SIZE, log=lambda message: None)
        truth = io.read_coords(os.path.join(data, "tomo_000.csv"))
        write_importer_txt(os.path.join(data, "particle"), "tomo_000", truth.xyz)
        cls.tomograms = import_tomograms(cls, data, VOXEL_SIZE)
        cls.coordinates = import_coordinates(cls, os.path.join(data, "particle"), cls.tomograms, label="particle",
                                             box_size=12)
        cls.pretrain = new_protocol(cls, EtPickerProtPretrain, {"inputTomograms": output(cls.tomograms, "Tomograms")},
                                    maxMinutes=0, epochs=3, seed=1, useGpu=False, **NETWORK)
        cls.launchProtocol(cls.pretrain)

    def test_the_output_is_a_pretrained_network_whose_loss_fell(self):
        model = self.pretrain.outputPretrainedModel
        self.assertIsInstance(model, EtPickerPretrainedModel)
        self.assertEqual(model.missingFiles(), [])
        self.assertAlmostEqual(model.getVoxelSize(), VOXEL_SIZE, places=3)
        self.assertEqual(model.getObjective(), "masked")  # the default
        config = read_config(model.getPath())
        self.assertEqual((config["kind"], config["widths"], config["patch"]), (PRETRAINED_KIND, [4, 8, 8, 8], 16))
        losses = [row["loss"] for row in read_pretrain_history(model.getPath())]
        self.assertEqual(len(losses), 3)
        self.assertLess(losses[-1], losses[0])

    def test_the_viewer_draws_the_loss_curve_of_the_run_and_of_its_output(self):
        for target in (self.pretrain, self.pretrain.outputPretrainedModel):
            views = EtPickerPretrainingViewer(project=self.proj, protocol=self.pretrain)._visualize(target)
            self.assertEqual(len(views), 1)
            self.assertIn("3 epochs", views[0].figure.get_suptitle())
            path = self.proj.getTmpPath("pretraining.png")
            views[0].figure.savefig(path, dpi=60)
            self.assertGreater(imread(path)[..., :3].std(), 0.05)

    def test_train_starts_from_the_pretrained_network(self):
        train = new_protocol(self, EtPickerProtTrain,
                             {"inputTomograms": output(self.tomograms, "Tomograms"),
                              "inputCoordinates": [output(self.coordinates, "outputCoordinates")],
                              "initModel": output(self.pretrain, "outputPretrainedModel")},
                             epochs=1, batch=2, seed=0, diameters="90", valFraction=0.3, shapeCheck=False,
                             useGpu=False, patch=16)
        self.launchProtocol(train)
        with open(train.outputModel.getConfigFile()) as handle:
            config = json.load(handle)
        self.assertEqual(os.path.abspath(config["training"]["init_model"]),
                         os.path.abspath(self.pretrain.outputPretrainedModel.getPath()))
        self.assertEqual(config["widths"], [4, 8, 8, 8])  # the pre-trained network's, not the recipe's
