"""etpicker's viewers (figures drawn by plots.py, shown through pwem's plotters)."""
from .viewer_training import EtPickerTrainingViewer
from .viewer_labels import EtPickerLabelsViewer
from .viewer_picks import EtPickerPicksViewer
from .viewer_scores import EtPickerEvaluationViewer
from .viewer_pretrain import EtPickerPretrainingViewer
from .viewer_adapt import EtPickerAdaptationViewer
