"""Functional tests: the repo's _modules/_states through Salt's real loader (no daemons)."""

import pytest
from saltfactories.utils.functional import Loaders

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="package")
def minion_id():
    return "func-tests-minion"


@pytest.fixture(scope="module")
def state_tree(tmp_path_factory):
    return tmp_path_factory.mktemp("state-tree-base")


@pytest.fixture(scope="module")
def minion_opts(salt_factories, minion_id, state_tree):
    overrides = {
        "file_client": "local",
        "file_roots": {"base": [str(state_tree)]},
        # module_dirs=[repo] makes the loader read <repo>/_modules and <repo>/_states.
        "module_dirs": [str(REPO_ROOT)],
    }
    factory = salt_factories.salt_minion_daemon(minion_id, overrides=overrides)
    return factory.config.copy()


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts, loaded_base_name=f"{__name__}.loaded")


@pytest.fixture(autouse=True)
def reset_loaders_state(loaders):
    try:
        yield
    finally:
        loaders.reset_state()


@pytest.fixture
def modules(loaders):
    return loaders.modules


@pytest.fixture
def states(loaders):
    return loaders.states
