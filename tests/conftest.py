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
def omniglot_cache(omniglot_root, tmp_path_factory):
    """A cache with Omniglot prepared once per session (decoding the zips takes 20-40 s): the
    run's REPSIM_CACHE_DIR when set (CI sets it, so the tests that use the default cache share
    it too), else a session folder. Point REPSIM_CACHE_DIR at it, or pass it as cache_dir."""
    from repsim.data import omniglot
    cache = Path(os.environ.get("REPSIM_CACHE_DIR") or tmp_path_factory.mktemp("omniglot-cache"))
    omniglot.prepare(omniglot_root, cache, progress=False)
    return cache


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


@pytest.fixture(scope="session")
def rendered_report(tmp_path_factory):
    """One report of every analysis (tests/report_fixtures.py), rendered once per session: a full
    rendering draws 32 figure files, and the tests of text and of figures read the same one."""
    from report_fixtures import build_results
    from repsim.report import write_report
    folder = build_results(tmp_path_factory.mktemp("report") / "results")
    return folder, write_report(folder)
