"""The pick protocol as Scipion runs it at a facility: on tomograms that stream in, over the
GPUs of its list, through a queue system, after a kill; and the train protocol after its
core is killed mid-epoch. One small model, trained once (killed and continued on the way),
serves every test."""
import json
import os
import re
import signal
import sqlite3
import time

import numpy as np
import psutil
from pwem.viewers import VISIBLE, DataViewer
from pyworkflow.object import Set
from pyworkflow.plugin import Domain
from pyworkflow.protocol import HostConfig
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject
from pyworkflow.viewer import DESKTOP_TKINTER
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import SetOfCoordinates3D, SetOfTomograms
from tomo.protocols import ProtTomoPicking

from etpicker.core import io, simulate
from etpicker.core.model_folder import CHECKPOINT_NAME, HISTORY_NAME, read_history
from etpicker.protocols import EtPickerProtPick, EtPickerProtTrain
from scipion_helpers import import_coordinates, import_tomograms, new_protocol, output, write_importer_txt

VOXEL_SIZE = 10.0
SHAPE = (32, 64, 64)
TRAIN_STEMS = ["tomo_000", "tomo_001"]
PICK_STEMS = ["tomo_002", "tomo_003"]
CLASS = "particle"
TRAINING = dict(patch=32, widths="8,16,24,32", epochs=3, batch=4, learningRate=5e-3, seed=0,
                diameters="110", valFraction=0.25, shapeCheck=False, useGpu=False)
TIMEOUT = 240  # seconds any wait below may take before the test fails

# A stand-in for SLURM: sbatch runs the job script in the background and prints a job id,
# squeue prints a line while the job runs and nothing once it is done.
SBATCH = """#!/bin/bash
id=$$
jobs="$(dirname "$0")/jobs"
mkdir -p "$jobs/$id"
echo "$1" > "$jobs/$id/script"
( bash "$1" > "$jobs/$id/out" 2>&1; echo $? > "$jobs/$id/rc" ) < /dev/null > /dev/null 2>&1 &
echo "Submitted batch job $id"
"""
SQUEUE = """#!/bin/bash
[ -f "$(dirname "$0")/jobs/$1/rc" ] || echo "$1 RUNNING"
"""
CLUSTER = """
[standin_cluster]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d --map-by node %_(COMMAND)s
NAME = STANDIN_SLURM
MANDATORY = False
SUBMIT_COMMAND = bash {queue}/sbatch.sh %_(JOB_SCRIPT)s
CHECK_COMMAND = bash {queue}/squeue.sh %_(JOB_ID)s
CANCEL_COMMAND = touch {queue}/cancelled_%_(JOB_ID)s
SUBMIT_TEMPLATE = #!/bin/bash
    #SBATCH --job-name=%_(JOB_NAME)s
    #SBATCH --mem=%_(JOB_MEMORY)sM
    #SBATCH --gres=gpu:%_(JOB_GPUS)s
    %_(JOB_COMMAND)s
QUEUES = {{"gpu": [["JOB_MEMORY", "8192", "Memory (MB)", "Memory per job"],
                   ["JOB_GPUS", "1", "GPUs per job", "GPUs each job asks for"]]}}
QUEUES_DEFAULT = {{"JOB_GPUS": "0"}}
"""


def wait_for(condition, what):
    deadline = time.time() + TIMEOUT
    while not condition():
        assert time.time() < deadline, "waited %d s for %s" % (TIMEOUT, what)
        time.sleep(0.5)


def dead(process):
    """Gone, or a zombie (this machine's init does not reap orphans)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_log(prot):
    with open(prot.getStdoutLog()) as handle:
        return handle.read()


def picked_tomograms(prot):
    """tsIds in the pick run's class output as a downstream protocol reads it now, and
    whether that output is still open (None: no output yet)."""
    path = prot._getPath("coordinates_%s.sqlite" % CLASS)
    if not os.path.exists(path):
        return set(), None
    coords = SetOfCoordinates3D(filename=path)
    try:
        coords.loadAllProperties()
        found, isOpen = set(coords.getTSIds()), coords.isStreamOpen()
    except sqlite3.OperationalError:
        # The run has created the file but not yet its tables (Scipion's own readers wait
        # for the output to be registered); read again on the next poll.
        return set(), None
    finally:
        coords.close()
    return found, isOpen


class StreamingTomograms:
    """Plays a reconstruction running on the fly: keeps an import run's output open and
    appends tomograms to it one by one, as a streaming producer protocol does."""

    def __init__(self, importRun):
        self.path = importRun.Tomograms.getFileName()
        self._update(lambda tomos: None, Set.STREAM_OPEN)

    def _update(self, change, state):
        tomos = SetOfTomograms(filename=self.path)
        tomos.loadAllProperties()
        tomos.enableAppend()
        change(tomos)
        tomos.setStreamState(state)
        tomos.write()
        tomos.close()

    def add(self, mrcPath, tsId):
        def append(tomos):
            tomo = tomos.getFirstItem().clone()
            tomo.setObjId(None)
            tomo.setFileName(mrcPath)
            tomo.setTsId(tsId)
            tomos.append(tomo)
        self._update(append, Set.STREAM_OPEN)

    def close(self):
        self._update(lambda tomos: None, Set.STREAM_CLOSED)


class TestPickRuns(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.data = os.path.abspath(cls.proj.getTmpPath("data"))
        simulate.write_dataset(cls.data, n_tomos=4, shape=SHAPE, snr=4.0, seed=11,
                               voxel_size=VOXEL_SIZE, log=lambda message: None)
        for stem in TRAIN_STEMS:
            write_importer_txt(os.path.join(cls.data, CLASS), stem,
                               io.read_coords(os.path.join(cls.data, stem + ".csv")).xyz)
        cls.trainTomos = import_tomograms(cls, cls.data, VOXEL_SIZE, "training tomograms",
                                          pattern="tomo_00[01].mrc")
        cls.annotations = [output(import_coordinates(cls, os.path.join(cls.data, CLASS),
                                                     cls.trainTomos, label=CLASS, box_size=16),
                                  "outputCoordinates")]
        # The model every test picks with comes from a training whose core is killed
        # (kill -9) in its second epoch and which is then continued.
        cls.train = cls.trainRun()
        cls.killedAfter, cls.failedWhenKilled = cls.killTrainingMidEpoch(cls.train)
        cls.train.runMode.set(MODE_RESUME)  # the GUI's "Continue"
        cls.launchProtocol(cls.train)
        cls.pickTomos = import_tomograms(cls, cls.data, VOXEL_SIZE, "tomograms to pick",
                                         pattern="tomo_00[23].mrc")
        cls.reference = cls.pickRun(cls.pickTomos)  # local, one thread
        cls.launchProtocol(cls.reference)

    @classmethod
    def killTrainingMidEpoch(cls, prot):
        """Launch a training, kill -9 its core once an epoch is done; return the history
        then and whether the run failed."""
        cls.proj.launchProtocol(prot, wait=False)
        history = os.path.join(prot._modelDir(), HISTORY_NAME)
        wait_for(lambda: os.path.exists(history) and read_history(history), "the first epoch")
        cores = [p for p in psutil.Process(prot.getPid()).children(recursive=True)
                 if "etpicker.core" in " ".join(p.cmdline())]
        assert cores, "no core process found"
        for core in cores:
            core.send_signal(signal.SIGKILL)
        killedAfter = read_history(history)
        wait_for(lambda: cls.ended(prot), "the run to fail")
        return killedAfter, prot.isFailed()

    @classmethod
    def ended(cls, prot):
        cls.proj._updateProtocol(prot)
        return not prot.isActive()

    @classmethod
    def trainRun(cls, **changes):
        return new_protocol(cls, EtPickerProtTrain,
                            {"inputTomograms": output(cls.trainTomos, "Tomograms"),
                             "inputCoordinates": cls.annotations}, **dict(TRAINING, **changes))

    @classmethod
    def pickRun(cls, tomograms, **params):
        return new_protocol(cls, EtPickerProtPick,
                            {"inputTomograms": output(tomograms, "Tomograms"),
                             "inputModel": output(cls.train, "outputModel")},
                            **dict(dict(useGpu=False), **params))

    def picks(self, prot):
        """``{tsId: sorted BOTTOM_LEFT_CORNER positions}`` of the class output."""
        found = {}
        for coord in getattr(prot, "outputCoordinates_" + CLASS).iterCoordinates():
            found.setdefault(coord.getTomoId(), []).append(tuple(coord.getPosition(BOTTOM_LEFT_CORNER)))
        return {tsId: sorted(xyz) for tsId, xyz in found.items()}

    def assertSamePicksAsLocal(self, prot):
        picks, expected = self.picks(prot), self.picks(self.reference)
        self.assertEqual(sorted(picks), PICK_STEMS)
        for tsId in PICK_STEMS:
            np.testing.assert_allclose(picks[tsId], expected[tsId], atol=1e-3)

    # --------------------------- the picking family ---------------------------
    def test_reference_run_picks_every_tomogram(self):
        self.assertTrue(self.reference.isFinished())
        self.assertEqual(sorted(self.picks(self.reference)), PICK_STEMS)
        self.assertTrue(all(len(xyz) > 0 for xyz in self.picks(self.reference).values()))

    def test_pick_is_one_of_tomos_pickers_and_its_output_opens_in_tomos_viewer(self):
        self.assertTrue(issubclass(EtPickerProtPick, ProtTomoPicking))
        output_set = self.reference.outputCoordinates_particle
        # The viewer Scipion offers for the output (tomo registers SetOfCoordinates3D with
        # pwem's DataViewer and the columns it shows).
        viewers = Domain.findViewers(output_set.getClassName(), DESKTOP_TKINTER)
        self.assertIn(DataViewer, viewers)
        views = DataViewer(project=self.proj, protocol=self.reference)._visualize(output_set)
        self.assertEqual(len(views), 1)
        view = views[0]
        self.assertEqual(os.path.abspath(view._path), os.path.abspath(output_set.getFileName()))
        # Every column it shows is in our set (the score and the class included).
        shown = view.getViewParams()[VISIBLE].split()
        columns = {row[0] for row in output_set._getMapper().db.executeCommand(
            "SELECT label_property FROM Classes").fetchall()} | {"id"}
        self.assertIn("_score", shown)
        self.assertEqual([c for c in shown if c not in columns], [])

    # --------------------------- streaming -----------------------------------
    def test_streaming_input_is_picked_as_it_arrives(self):
        first = import_tomograms(self, self.data, VOXEL_SIZE, "streaming tomograms",
                                 pattern=PICK_STEMS[0] + ".mrc")
        stream = StreamingTomograms(first)
        prot = self.pickRun(first)
        self.proj.launchProtocol(prot, wait=False)
        seenOpen = {}
        for stem in PICK_STEMS[1:]:
            wait_for(lambda: picked_tomograms(prot)[0] >= set(seenOpen) | {PICK_STEMS[0]},
                     "the picks of the tomograms so far")
            found, isOpen = picked_tomograms(prot)
            seenOpen[stem] = (sorted(found), isOpen)
            stream.add(os.path.join(self.data, stem + ".mrc"), stem)
        wait_for(lambda: picked_tomograms(prot)[0] == set(PICK_STEMS), "every tomogram's picks")
        stream.close()
        wait_for(lambda: self.ended(prot), "the run to end")

        # Before the second and the third tomogram arrived, the earlier ones' picks were
        # in the (open) output, where downstream protocols read them.
        self.assertEqual(seenOpen, {stem: (PICK_STEMS[:i], True)
                                    for i, stem in enumerate(PICK_STEMS) if i})
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertTrue(prot.outputCoordinates_particle.isStreamClosed())
        self.assertSamePicksAsLocal(prot)
        log = read_log(prot)
        lines = [line for line in log.splitlines()
                 if re.search(r"Tomogram \S+ picked at|New tomograms|tomograms are", line)]
        print("\n".join(lines))  # the streaming run's log, for the record
        self.assertIn("still streaming", log)
        self.assertRegex(log, r"New tomograms in the input at [0-9:]+: %s\." % PICK_STEMS[1])

    # --------------------------- GPUs and queues -----------------------------
    def test_steps_spread_over_the_gpus_one_each(self):
        prot = self.pickRun(self.pickTomos, useGpu=True, gpuList="0 1", numberOfThreads=3)
        self.launchProtocol(prot)
        # Each tomogram's core ran on one GPU of the list (the core falls back to the CPU
        # where there is none).
        gpus = {}
        for match in re.finditer(r"CUDA_VISIBLE_DEVICES=(\S*) .*?--tomos \S*/(tomo_\d+)\.mrc",
                                 read_log(prot)):
            gpus[match.group(2)] = match.group(1)
        self.assertEqual(sorted(gpus), PICK_STEMS)
        self.assertEqual(set(gpus.values()), {"0", "1"})
        self.assertSamePicksAsLocal(prot)

    def test_queue_runs_each_tomogram_in_its_own_job(self):
        queue = os.path.abspath(self.proj.getTmpPath("queue"))
        os.makedirs(queue)
        for name, text in (("sbatch.sh", SBATCH), ("squeue.sh", SQUEUE)):
            with open(os.path.join(queue, name), "w") as handle:
                handle.write(text)
        # A hosts.conf with a cluster as second execution host, read by this run alone (the
        # configured one is shared with other test runs): the run's process reads the file
        # that $SCIPION_HOSTS names, the launch here the project's host list.
        hosts = os.path.join(queue, "hosts.conf")
        with open(os.environ["SCIPION_HOSTS"]) as configured, open(hosts, "w") as handle:
            handle.write(configured.read() + CLUSTER.format(queue=queue))
        saved = os.environ["SCIPION_HOSTS"], self.proj._hosts
        os.environ["SCIPION_HOSTS"], self.proj._hosts = hosts, HostConfig.load(hosts)
        try:
            prot = self.pickRun(self.pickTomos, numberOfThreads=2, hostName="standin_cluster")
            prot._useQueue.set(True)
            # "Use queue for jobs": the run stays here, each core command is a job
            prot.setQueueParams(["gpu", {"JOB_MEMORY": "4096", "JOB_GPUS": "1", "QUEUE_FOR_JOBS": "Y"}])
            self.launchProtocol(prot)
        finally:
            os.environ["SCIPION_HOSTS"], self.proj._hosts = saved
        self.assertNotIn("not found", read_log(prot))  # it ran on the cluster host
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        jobs = os.path.join(queue, "jobs")
        scripts = []
        for job in sorted(os.listdir(jobs)):
            with open(os.path.join(jobs, job, "rc")) as handle:
                self.assertEqual(handle.read().strip(), "0")
            with open(os.path.join(jobs, job, "script")) as handle:
                with open(handle.read().strip()) as script:
                    scripts.append(script.read())
        tomograms = sorted(re.search(r"--tomos \S*/(tomo_\d+)\.mrc", s).group(1) for s in scripts)
        self.assertEqual(tomograms, PICK_STEMS)  # one job per tomogram
        self.assertTrue(all("#SBATCH --mem=4096M" in s and "#SBATCH --gres=gpu:1" in s
                            for s in scripts), scripts[0])
        self.assertSamePicksAsLocal(prot)

    # --------------------------- runs that survive ---------------------------
    def test_pick_killed_between_tomograms_continues_with_the_missing_ones(self):
        prot = self.pickRun(self.pickTomos)
        self.proj.launchProtocol(prot, wait=False)
        wait_for(lambda: os.path.exists(prot._pickedFile(PICK_STEMS[0])), "the first tomogram")
        # The run's processes die at once (a node crash): no status reaches the project.
        process = psutil.Process(prot.getPid())
        victims = process.children(recursive=True) + [process]
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        os.waitpid(prot.getPid(), 0)  # this test launched it: reap it, as a GUI's exit would
        wait_for(lambda: all(map(dead, victims)), "the run's processes to die")
        done = [stem for stem in PICK_STEMS if os.path.exists(prot._pickedFile(stem))]
        self.assertTrue(done)
        self.assertLess(len(done), len(PICK_STEMS))

        prot.runMode.set(MODE_RESUME)  # the GUI's "Continue"
        self.launchProtocol(prot)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertSamePicksAsLocal(prot)  # every tomogram once, none twice
        continued = read_log(prot).split("RESUMING PROTOCOL")[-1]  # the log of the Continue
        for stem in PICK_STEMS:
            ran = re.search(r"--tomos \S*/%s\.mrc" % stem, continued) is not None
            self.assertEqual(ran, stem not in done, stem)

    def test_train_killed_mid_epoch_continues_from_its_checkpoint(self):
        # setUpClass killed the training's core in its second epoch, then continued it.
        self.assertTrue(self.failedWhenKilled)
        self.assertLess(len(self.killedAfter), TRAINING["epochs"])
        self.assertTrue(self.train.isFinished(), self.train.getErrorMessage())
        rows = read_history(self.train.outputModel.getHistoryFile())
        self.assertEqual([row["epoch"] for row in rows], list(range(1, TRAINING["epochs"] + 1)))
        # The epochs done before the kill were not trained again.
        self.assertEqual([row["seconds"] for row in rows[:len(self.killedAfter)]],
                         [row["seconds"] for row in self.killedAfter])
        self.assertIn("resuming", read_log(self.train))
        self.assertTrue(os.path.exists(os.path.join(self.train._modelDir(), CHECKPOINT_NAME)))
        with open(self.train.outputModel.getConfigFile()) as handle:
            self.assertEqual(json.load(handle)["classes"], [CLASS])
