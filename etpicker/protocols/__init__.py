from .protocol_labels import EtPickerProtLabels
from .protocol_train import EtPickerProtTrain
from .protocol_pick import EtPickerProtPick
from .protocol_import_model import EtPickerProtImportModel
from .protocol_evaluate import EtPickerProtEvaluate
from .protocol_pretrain import EtPickerProtPretrain
from .protocol_adapt import EtPickerProtAdapt
