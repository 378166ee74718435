"""``cpmc_lib.report`` re-exports every table builder of its topic modules, so callers need not know them."""

import importlib
import pkgutil

import cpmc_lib as cl


def test_every_builder_of_the_topic_modules_is_exported_by_the_package():
    topics = [importlib.import_module(f"cpmc_lib.report.{m.name}") for m in pkgutil.iter_modules(cl.report.__path__)]
    assert len(topics) >= 7
    builders = {n for m in topics for n in m.__all__ if callable(getattr(m, n))}
    assert set(cl.report.__all__) == builders
    assert all(getattr(cl.report, n) is getattr(m, n) for m in topics for n in m.__all__ if n in builders)
