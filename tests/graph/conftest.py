import pytest

from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism


@pytest.fixture
def dep():
    def make(model="meta-llama/Llama-2-7b-hf", gpu="A100", tp=1, pp=1):
        return Deployment(load_model(model), load_gpu(gpu), Parallelism(tp=tp, pp=pp))
    return make
