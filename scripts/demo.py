"""etpicker's demo: a complete Scipion project on synthetic tomograms, headless.

Simulates tomograms with three particle classes, imports them and their annotations with
scipion-em-tomo's importers, then runs weak labels -> train -> pick -> evaluate -> export
(plain text through Scipion, RELION 5 STAR through the reliontomo plugin's writer), saves
the viewers' figures as PNG files and prints the F1. Each run starts a fresh project.

Usage: .venv/bin/python scripts/demo.py [--out demo_output] [--minutes 8] [--seed 0]
(``bash scripts/demo.sh`` sets up .venv first).
"""
import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scipion_headless  # noqa: E402  (configures Scipion before pyworkflow is imported)

PROJECT_NAME = "etpicker_demo"
SPLITS = {"train": 2, "validation": 1, "test": 2}  # tomograms per use
# ~100 particles per tomogram: each training epoch visits every annotated particle once.
SHAPE = (64, 128, 128)  # z, y, x voxels
VOXEL_SIZE = 10.0  # Å
TOLERANCE = 40.0  # Å: the radius of the smallest class (8 voxels across), a quarter of the largest's diameter


def parseArgs():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "demo_output"),
                        help="folder for the data, the Scipion project and the figures")
    parser.add_argument("--minutes", type=float, default=8.0,
                        help="training time budget in minutes (default 8)")
    parser.add_argument("--epochs", type=int, default=40,
                        help="most training epochs (the time budget usually stops first)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    return parser.parse_args()


def log(message):
    print("[demo %s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)


# --------------------------------------------------------------------------- data
def simulateData(dataDir, seed):
    """Tomograms and per-class annotation files laid out for Scipion's importers:
    ``<split>/tomo_NNN.mrc`` and ``coords/<class>/tomo_NNN.txt`` ("x y z" per line)."""
    from etpicker.core import io, simulate

    total = sum(SPLITS.values())
    allDir = os.path.join(dataDir, "all")
    stems = simulate.write_dataset(allDir, n_tomos=total, shape=SHAPE, seed=seed,
                                   voxel_size=VOXEL_SIZE, log=log)
    classes = list(simulate.PARTICLE_CLASSES)
    splits, start = {}, 0
    for split, count in SPLITS.items():
        splitDir = os.path.join(dataDir, split)
        os.makedirs(splitDir)
        for stem in stems[start:start + count]:
            os.symlink(os.path.join(allDir, stem + ".mrc"), os.path.join(splitDir, stem + ".mrc"))
        splits[split], start = splitDir, start + count
    for stem in stems:
        truth = io.read_coords(os.path.join(allDir, stem + ".csv"))
        for name in classes:
            classDir = os.path.join(dataDir, "coords", name)
            os.makedirs(classDir, exist_ok=True)
            rows = truth.xyz[truth.names == name]
            with open(os.path.join(classDir, stem + ".txt"), "w") as handle:
                handle.writelines("%.3f %.3f %.3f\n" % tuple(row) for row in rows)
    return splits, classes


# --------------------------------------------------------------------------- runs
class Runner:
    """Creates runs in the project, launches them and stops the demo on a failure."""

    def __init__(self, project):
        self.project = project

    def run(self, protocolClass, label, inputs=None, **params):
        """inputs: {attribute: output(...) or [output(...), ...]} links to earlier runs."""
        from etpicker.protocols.protocol_base import linkInputs

        protocol = self.project.newProtocol(protocolClass, **params)
        protocol.setObjLabel(label)  # newProtocol ignores an objLabel keyword
        linkInputs(protocol, inputs or {})
        started = time.time()
        log("running '%s' ..." % label)
        self.project.launchProtocol(protocol, wait=True)
        protocol = self.project.getProtocol(protocol.getObjId())
        if not protocol.isFinished():
            lines = protocol.getLogsLastLines(30, logFile=1) or protocol.getLogsLastLines(30)
            sys.exit("etpicker demo: run '%s' did not finish (%s). Last log lines:\n%s"
                     % (label, protocol.getStatus(), "\n".join(lines)))
        log("'%s' finished in %.0f s" % (label, time.time() - started))
        return protocol


def output(protocol, name):
    """A link to a run's output, named as the GUI names it (downstream runs need it)."""
    return protocol, name


def buildProject(runner, splits, classes, args, dataDir):
    from tomo.protocols import ProtExportCoordinates3D, ProtImportCoordinates3D, ProtImportTomograms
    from etpicker.constants import OUTPUT_MODEL
    from etpicker.protocols import (EtPickerProtEvaluate, EtPickerProtLabels,
                                    EtPickerProtPick, EtPickerProtTrain)
    from etpicker.core.simulate import PARTICLE_CLASSES

    runs = {}
    tomograms, annotations = {}, {}
    for split, folder in splits.items():
        tomograms[split] = runner.run(ProtImportTomograms, "%s tomograms" % split,
                                      filesPath=folder, filesPattern="*.mrc",
                                      samplingRate=VOXEL_SIZE)
        # One set per class, labelled with the class name (etpicker names classes so).
        annotations[split] = [
            runner.run(ProtImportCoordinates3D, name,
                       {"importTomograms": output(tomograms[split], "Tomograms")},
                       filesPath=os.path.join(dataDir, "coords", name), filesPattern="*.txt",
                       # the particle diameter, from which training derives its recipe and labels
                       boxSize=int(round(2 * PARTICLE_CLASSES[name].radius)))
            for name in classes]

    def coordinates(split):
        return [output(run, "outputCoordinates") for run in annotations[split]]

    train = {"inputTomograms": output(tomograms["train"], "Tomograms"),
             "inputCoordinates": coordinates("train")}
    runs["labels"] = runner.run(EtPickerProtLabels, "weak labels", train)
    runs["train"] = runner.run(EtPickerProtTrain, "train",
                               dict(train,
                                    valTomograms=output(tomograms["validation"], "Tomograms"),
                                    valCoordinates=coordinates("validation")),
                               epochs=args.epochs, maxMinutes=args.minutes, seed=args.seed)
    runs["pick"] = runner.run(EtPickerProtPick, "pick",
                              {"inputTomograms": output(tomograms["test"], "Tomograms"),
                               "inputModel": output(runs["train"], OUTPUT_MODEL)})
    picks = [output(runs["pick"], EtPickerProtPick._outputName(name)) for name in classes]
    runs["evaluate"] = runner.run(EtPickerProtEvaluate, "evaluate on test tomograms",
                                  {"inputPicks": picks, "inputReference": coordinates("test")},
                                  tolerance=TOLERANCE)
    runs["export"] = [runner.run(ProtExportCoordinates3D, "export %s picks (txt)" % name,
                                 {"inputCoordinates": picked}, outputFormat=0)
                      for name, picked in zip(classes, picks)]
    return runs


def exportRelion5(pickRun, classes, folder):
    """RELION 5 particles STAR files of the picks (one per class), written by the
    reliontomo plugin's own converter: what RELION's subtomogram averaging reads."""
    from reliontomo.constants import IN_PARTICLES_STAR
    from reliontomo.convert.convert50_tomo import Writer
    from etpicker import convert

    tomoDict = {t.getTsId(): t for t in convert.tomogramsList(pickRun.inputTomograms.get())}
    files = []
    for name in classes:
        classDir = os.path.join(folder, name)
        os.makedirs(classDir, exist_ok=True)
        Writer.coords2Star(getattr(pickRun, pickRun._outputName(name)), tomoDict, classDir)
        files.append(os.path.join(classDir, IN_PARTICLES_STAR))
    return files


# --------------------------------------------------------------------------- figures
def saveFigures(project, runs, figuresDir):
    """Every viewer's figures as PNG files (the viewers render headless)."""
    import matplotlib.pyplot as plt
    from pwem.viewers import EmPlotter
    from etpicker.viewers import (EtPickerEvaluationViewer, EtPickerLabelsViewer,
                                  EtPickerPicksViewer, EtPickerTrainingViewer)

    os.makedirs(figuresDir, exist_ok=True)
    jobs = [("1_training", EtPickerTrainingViewer, runs["train"], None),
            ("2_weak_labels", EtPickerLabelsViewer, runs["labels"], None),
            ("3_picks", EtPickerPicksViewer, runs["pick"], None),
            ("4_evaluation", EtPickerEvaluationViewer, runs["evaluate"], None),
            ("5_picks_vs_reference", EtPickerPicksViewer, runs["evaluate"],
             ("displayPicks",))]
    saved = []
    for prefix, viewerClass, run, only in jobs:
        viewer = viewerClass(project=project, protocol=run)
        if only:
            viewer.setProtocol(run)
            views = sum((viewer._getVisualizeDict()[name]() for name in only), [])
        else:
            views = viewer._visualize(run)
        plotters = [v for v in views if isinstance(v, EmPlotter)]
        for index, plotter in enumerate(plotters):
            suffix = "" if len(plotters) == 1 else "_%d" % (index + 1)
            path = os.path.join(figuresDir, "%s%s.png" % (prefix, suffix))
            plotter.figure.savefig(path, dpi=110)
            plt.close(plotter.figure)
            saved.append(path)
    return saved


def main():
    args = parseArgs()
    out = os.path.abspath(args.out)
    started = time.time()
    userData = scipion_headless.configure(os.path.join(out, "scipion"))
    dataDir = os.path.join(out, "data")
    shutil.rmtree(dataDir, ignore_errors=True)
    log("simulating tomograms in %s" % dataDir)
    splits, classes = simulateData(dataDir, args.seed)

    from pyworkflow.project import Manager
    manager = Manager()
    if manager.hasProject(PROJECT_NAME):
        manager.deleteProject(PROJECT_NAME)
    project = manager.createProject(PROJECT_NAME)
    os.chdir(project.getPath())  # runs are launched from the project folder
    log("Scipion project %s" % project.getPath())

    runs = buildProject(Runner(project), splits, classes, args, dataDir)
    relionFiles = exportRelion5(runs["pick"], classes, os.path.join(out, "export", "relion5"))
    figures = saveFigures(project, runs, os.path.join(out, "figures"))

    result = runs["evaluate"].result()
    print()
    print("etpicker demo finished in %.1f minutes." % ((time.time() - started) / 60))
    for name, values in result["classes"].items():
        print("  %-8s precision %.3f  recall %.3f  F1 %.3f" % (
            name, values["precision"], values["recall"], values["f1"]))
    overall = result["all"]
    print("F1 = %.3f on %d held-out tomograms (precision %.3f, recall %.3f, tolerance %g Å)"
          % (overall["f1"], SPLITS["test"], overall["precision"], overall["recall"], TOLERANCE))
    print("Scipion project: %s" % project.getPath())
    print("Figures:         %s" % os.path.join(out, "figures"))
    for path in figures:
        print("                 %s" % os.path.basename(path))
    print("Exported picks (x y z per line, one file per tomogram):")
    for run in runs["export"]:
        print("                 %s" % os.path.join(project.getPath(), run._getExportPath()))
    print("RELION 5 particles STAR files:")
    for path in relionFiles:
        print("                 %s" % path)
    print("Open the project in Scipion's GUI (a Scipion 3 install with this plugin, "
          "e.g. 'scipion3 installp -p %s --devel'):" % os.path.dirname(HERE))
    print("  SCIPION_USER_DATA=%s scipion3 project %s" % (userData, PROJECT_NAME))


if __name__ == "__main__":
    main()
