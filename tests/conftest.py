"""Shared test set-up: where the repo is, and its custom modules for Salt's loader."""

import importlib.util
import logging
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_repo_module(kind, name):
    """Import ``<repo>/_<kind>/<name>.py`` (kind: modules, states, runners, utils) as a plain
    module for unit tests; the ``configure_loader_modules`` fixture then sets its dunders."""
    module_name = f"repo_{kind}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / f"_{kind}" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def repo_utils(opts):
    """``__utils__`` for unit tests: every public function of ``<repo>/_utils/*.py``, keyed
    ``<module>.<function>`` as Salt's loader keys them, each module given ``__opts__``."""
    utils = {}
    for path in sorted((REPO_ROOT / "_utils").glob("*.py")):
        module = load_repo_module("utils", path.stem)
        module.__opts__ = opts
        module.__utils__ = utils
        for attr, value in vars(module).items():
            if callable(value) and not attr.startswith("_") and getattr(value, "__module__", None) == module.__name__:
                utils[f"{path.stem}.{attr}"] = value
    return utils


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def salt_factories_config():
    # Keep the factories' log server on loopback like everything else here.
    return {"log_server_host": "127.0.0.1"}


def pytest_sessionfinish(session, exitstatus):
    # Salt's deferred log handlers flush at interpreter exit, after pytest closed the captured
    # streams; without this each such record prints a "--- Logging error ---" traceback.
    logging.raiseExceptions = False
