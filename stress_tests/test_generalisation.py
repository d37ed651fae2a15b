"""The train-validation gap at the kept epoch (seed 001: ~40 points for the baseline)."""

import math

import pytest

pytestmark = pytest.mark.generalisation


def test_generalisation_gap(stress, gate, model_name):
    value = stress.value(model_name, "generalisation_gap")
    if math.isnan(value):
        pytest.skip(f"{model_name} has no training history (a model from the pytest_stress_model hook)")
    gate("generalisation_gap", value)
