import warnings

import pytest

warnings.filterwarnings("ignore", message=".*pkg_resources.*")

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture
def repo():
    return REPO
