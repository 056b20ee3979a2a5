"""What etpicker's viewers share: headless plotters and the tomogram/slice form fields."""
from pwem.viewers import EmPlotter
from pyworkflow.protocol import params
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..core import io  # torch-free: MRC memory maps and coordinate files


NO_TOMOGRAM = "(none yet)"


def newPlotter(figsize, windowTitle):
    """An EmPlotter whose figure our drawing functions lay out themselves."""
    plotter = EmPlotter(figsize=figsize, windowTitle=windowTitle)
    plotter.tightLayoutOn = False  # the figures use matplotlib's constrained layout
    return plotter


def middleOrChosen(value, size):
    """A slice index typed in the form; a negative one means the middle slice."""
    return size // 2 if value is None or value < 0 else value


class EtPickerProtocolViewer(ProtocolViewer):
    """A form viewer whose figures can also be produced without a GUI.

    ``_visualize(protocol)`` returns the plotters of every display action with the
    form's default values (what tests and the demo use); the GUI form calls the same
    actions one by one through ``_getVisualizeDict``.
    """
    _environments = [DESKTOP_TKINTER]

    def _tomogramIds(self):
        """tsIds offered in the form's tomogram list (subclasses say where from)."""
        raise NotImplementedError

    def _addSliceParams(self, form):
        # The GUI selects choice 0 at once: an empty list would crash it before the
        # display action could say that the run has no output yet.
        form.addParam("tomogram", params.EnumParam, choices=self._tomogramIds() or [NO_TOMOGRAM],
                      default=0, label="Tomogram", help="Tomogram to draw (its tsId).")
        form.addParam("sliceZ", params.IntParam, default=-1, label="Z slice (voxels)",
                      help="Index of the XY slice, 0-based; -1 = the middle slice. "
                           "A few slices around it are averaged to raise the contrast.")

    def _sliceErrors(self, volume, **chosen):
        """Error views for typed slice indices outside the volume (axis name: index), so
        the GUI says so instead of failing silently in its callback."""
        sizes = dict(zip("zyx", volume.shape))
        return [self.errorMessage("%s slice %d is outside the tomogram (0-%d voxels)."
                                  % (axis.upper(), index, sizes[axis] - 1), "No such slice")
                for axis, index in chosen.items() if not 0 <= index < sizes[axis]]

    def _chosenTsId(self):
        return self._tomogramIds()[self.tomogram.get()]

    @staticmethod
    def _readVolume(path, samplingRate):
        """A volume's memory-mapped voxels. Scipion's sampling rate stands for the header's
        voxel size, as in the protocols, so odd headers do not stop a display."""
        return io.open_tomogram(path, voxel_size=samplingRate).data

    def _visualize(self, obj, **kwargs):
        self.setProtocol(obj)
        views = []
        for action in self._getVisualizeDict().values():
            views += action()
        return views
