import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def omniglot_root():
    """The real Omniglot zips: ../shared/data/omniglot beside the checkout (as in CI)."""
    for candidate in (os.environ.get("REPSIM_TEST_OMNIGLOT"), REPO.parent / "shared/data/omniglot"):
        if candidate and (Path(candidate) / "images_background.zip").is_file():
            return str(candidate)
    pytest.skip("no copy of Omniglot found (set REPSIM_TEST_OMNIGLOT to the folder with the zips)")


@pytest.fixture(scope="session")
def recipe():
    """Loads a script of analyses/ as a module (analyses/ holds recipes, not a package)."""
    import importlib.util

    def load(name):
        spec = importlib.util.spec_from_file_location(name, REPO / "analyses" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run many tiny tensor ops, for which a second intra-op thread buys nothing; and on
    a busy machine torch's threads wait on each other (seen: 10x slower). One thread is steady."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
