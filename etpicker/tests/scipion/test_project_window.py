"""What Scipion's project window offers of etpicker: its protocols among tomo's pickers, and
its workflow template, as Scipion finds, fills and loads it into a project."""
import os

from pyworkflow import Config
from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig
from pyworkflow.object import PointerList
from pyworkflow.template import TemplateList
from pyworkflow.tests import BaseTest, setupTestProject

from etpicker import convert

# What the user is asked for (alias -> value typed in the template's form).
ANSWERS = {"tomogramsPattern": "*.mrc", "samplingRate": "13.5", "boxSize": "24",
           "maxMinutes": "30"}
# Every run of the template: its class, and where each of its inputs points (class of the
# run, output). Pyworkflow 3.11 drops a template's run labels: the runs keep their defaults,
# so the class is "tomo - import coordinates 3D" and so is the pick's output's name.
PICKED = "outputCoordinates_tomo___import_coordinates_3D"
GRAPH = {
    "ProtImportTomograms": {},
    "ProtImportCoordinates3D": {"importTomograms": [("ProtImportTomograms", "Tomograms")]},
    "EtPickerProtLabels": {"inputTomograms": [("ProtImportTomograms", "Tomograms")],
                           "inputCoordinates": [("ProtImportCoordinates3D", "outputCoordinates")]},
    "EtPickerProtTrain": {"inputTomograms": [("ProtImportTomograms", "Tomograms")],
                          "inputCoordinates": [("ProtImportCoordinates3D", "outputCoordinates")]},
    "EtPickerProtPick": {"inputTomograms": [("ProtImportTomograms", "Tomograms")],
                         "inputModel": [("EtPickerProtTrain", "outputModel")]},
    "ProtRelion5ExtractSubtomos": {"inReParticles": [("EtPickerProtPick", PICKED)]},
}


def pointed(prot, attribute):
    """``[(run label, output name)]`` that a pointer or a list of pointers names."""
    value = getattr(prot, attribute)
    pointers = list(value) if isinstance(value, PointerList) else [value]
    return [(p.getObjValue().getClassName(), p.getExtended()) for p in pointers]


class TestProjectWindow(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_protocols_sit_with_tomos_pickers(self):
        # The tree of the project window's Tomography view: tomo's sections and ours merged.
        tree = ProtocolTreeConfig.load(Config.getDomain(), Config.SCIPION_PROTOCOLS)

        def child(menu, text):
            found = [c for c in menu.childs if c.text == text]
            self.assertEqual(len(found), 1, [c.text for c in menu.childs])
            return found[0]

        picking = child(child(tree["Tomography"], "Particles"), "Picking")
        listed = [c.value for c in picking.childs]
        for name in ("EtPickerProtLabels", "EtPickerProtTrain", "EtPickerProtPick",
                     "EtPickerProtImportModel", "EtPickerProtEvaluate", "EtPickerProtAdapt"):
            self.assertIn(name, listed)

    def test_template_builds_the_whole_picking_graph(self):
        templates = TemplateList()
        templates.addPluginTemplates()  # what the project window's "import template" lists
        ours = [t for t in templates.templates if t.source == "etpicker"]
        self.assertEqual(len(ours), 1, [t.getObjId() for t in templates.templates])
        template = ours[0]
        self.assertIn("weakly supervised", template.description)

        folder = os.path.abspath(self.proj.getTmpPath("data"))
        os.makedirs(folder)
        template.replaceEnvVariables()
        template.parseContent()
        answers = dict(ANSWERS, tomogramsFolder=folder, coordinatesFolder=folder)
        self.assertEqual(sorted(p.getAlias() for p in template.getParams().values()), sorted(answers))
        for alias, value in answers.items():
            self.assertEqual(template.setParamValue(alias, value), 1)
        runs = self.proj.loadProtocols(template.createTemplateFile())

        byClass = {prot.getClassName(): prot for prot in runs.values()}
        self.assertEqual(sorted(byClass), sorted(GRAPH))
        for className, inputs in GRAPH.items():
            for attribute, targets in inputs.items():
                self.assertEqual(pointed(byClass[className], attribute), targets,
                                 "%s.%s" % (className, attribute))
        # The pick will name its output after the class, the coordinate import's label.
        train = byClass["EtPickerProtTrain"]
        label = byClass["ProtImportCoordinates3D"].getObjLabel()
        self.assertEqual(PICKED, "outputCoordinates_" + convert.safeName(label))
        # The answers reached the forms.
        self.assertEqual(byClass["ProtImportTomograms"].filesPath.get(), folder)
        self.assertAlmostEqual(byClass["ProtImportTomograms"].samplingRate.get(), 13.5)
        self.assertEqual(byClass["ProtImportCoordinates3D"].boxSize.get(), 24)
        self.assertEqual(train.maxMinutes.get(), 30)
        self.assertEqual(byClass["EtPickerProtPick"].numberOfThreads.get(), 2)
        # The runs are in the project's graph, linked from the tomograms down to RELION.
        graph = self.proj.getRunsGraph(refresh=True)
        reached, todo = set(), [graph.getNode(str(byClass["ProtImportTomograms"].getObjId()))]
        while todo:
            current = todo.pop()
            reached.add(current.run.getClassName())
            todo.extend(current.getChildren())
        self.assertEqual(reached, set(GRAPH))
