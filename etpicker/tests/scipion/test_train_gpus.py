"""The train protocol trains on every GPU of its list: one process each (torch DDP)."""
from etpicker.protocols.protocol_train import EtPickerProtTrain


def test_several_gpus_train_with_one_process_each_and_one_gpu_as_before():
    assert EtPickerProtTrain(useGpu=True, gpuList="0 1 3")._gpusArg() == "--gpus 0,1,3"
    assert EtPickerProtTrain(useGpu=True, gpuList="0-2")._gpusArg() == "--gpus 0,1,2"
    assert EtPickerProtTrain(useGpu=True, gpuList="2")._gpusArg() == ""
    assert EtPickerProtTrain(useGpu=False, gpuList="0 1")._gpusArg() == ""
