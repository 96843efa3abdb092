from tests.support.daemon import daemon  # noqa: F401 -- fixture
