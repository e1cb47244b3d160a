"""simulations/choose_ridge.py's rule: the simplest setting within one standard error of the
best (the proxy's fresh noise moves a setting's figure; the runs themselves are the
benchmark's, not a test's)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "simulations" / "choose_ridge.py"
spec = importlib.util.spec_from_file_location("choose_ridge", SCRIPT)
assert spec is not None and spec.loader is not None
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_a_gain_within_the_noise_goes_to_the_simpler_setting() -> None:
    # (accuracy, standard error, pairs, lambda, width)
    cells = [(0.881, 0.004, 1200, 100.0, 0.25), (0.879, 0.002, 400, 30.0, 0.5)]
    assert script.choose(cells, 1.0)[2:] == (400, 30.0, 0.5)


def test_a_gain_beyond_the_noise_is_taken_and_one_draw_takes_the_best() -> None:
    cells = [(0.890, 0.004, 1200, 100.0, 0.25), (0.879, 0.002, 400, 30.0, 0.5)]
    assert script.choose(cells, 1.0)[2:] == (1200, 100.0, 0.25)
    one_draw = [(0.881, 0.0, 1200, 100.0, 0.25), (0.879, 0.0, 400, 30.0, 0.5)]
    assert script.choose(one_draw, 1.0)[2:] == (1200, 100.0, 0.25)
    # ties to 0.1 point: the simpler (fewer pairs, then larger lambda, then width near 1)
    tied = [(0.8801, 0.0, 400, 30.0, 0.5), (0.8804, 0.0, 400, 30.0, 0.25)]
    assert script.choose(tied, 1.0)[2:] == (400, 30.0, 0.5)
