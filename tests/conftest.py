import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def formula_scope():
    """``register_formula`` for one test: its registrations are removed when the test ends, so
    that no test sees another's formulas."""
    import burden

    made = []

    def register(*targets, convention="convnet-burden"):
        table = burden.get_convention(convention).flops

        def wrap(formula):
            burden.register_formula(*targets, convention=convention)(formula)
            made.extend((table, target) for target in targets)
            return formula

        return wrap

    yield register
    for table, target in made:
        table.unregister(target)
