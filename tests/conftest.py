import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # small CPU ops are faster single-threaded; keeps the suite quick on 2 cores
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
