"""gates.toml -> validated bounds per dataset x profile x model -> pass / fail with the figure.

Layout of a gates file::

    include = ["gates/fashion-mnist.smoke.toml"]   # calibrated tables (python -m harness calibrate)

    [default.smoke.default]              # any dataset, any model (chance-relative bounds)
    accuracy_above_chance_min = 0.2

    [fashion-mnist.smoke.baseline]       # one model: overrides the defaults key by key
    confident_errors_99_max = 60
    class_accuracy_min = { Shirt = 0.2, Trouser = 0.9 }   # per-class metrics: one bound per class
    unbounded = { cam_gini = "why it is left unbounded" }  # masks inherited bounds of a metric

    [fashion-mnist.smoke.baseline.evidence]               # what each bound was derived from
    accuracy = { n = 20, mean = 0.866, sd = 0.004, min = 0.856, max = 0.872, values = [...] }

    [fashion-mnist.smoke.augment.vs_baseline]   # relative to the run's baseline model
    confident_errors_99_max_ratio = 0.5  # candidate <= 0.5 x baseline
    accuracy_min_delta = -0.02           # candidate >= baseline - 0.02
    loss_effect = "improves"             # the change's 95% interval on the improving side
    ece_effect = { expect = "not_worse", margin = 0.01 }  # not worse by more than the margin

A model's bounds merge, key by key, later winning: ``[default.P.default]``,
``[default.P.<model>]``, ``[<dataset>.P.default]``, ``[<dataset>.P.<model>]`` (P: the profile,
``<profile>-imbalance`` for long-tailed runs). ``unbounded`` in a later table removes a
metric's inherited bounds and says why (a calibrated table leaves a metric unbounded where its
evidence cannot support a bound). Included files hold tables of their own: a table defined in
two files is an error; each included file may open with a ``[calibration]`` table describing
the runs its evidence comes from (``harness/calibrate/``).

Keys are ``<metric>_<kind>``; the metric must be in ``harness.metrics.REGISTRY`` and the kind
must point the metric's way: ``min`` / ``min_delta`` / ``min_ratio`` for higher-is-better
metrics, ``max`` / ``max_delta`` / ``max_ratio`` for lower-is-better ones (either for a
neutral metric), ``effect`` for a metric with a better side that can be compared on the same
images. A ``min`` / ``max`` bound outside the metric's range (``accuracy_min = -0.5``) can
never fail and is refused. Everything is validated when the file is loaded, before any
training: a mistake is a ``GateFileError`` naming the key, the table and the valid choices.
Every failure message names the metric, the measured value, the bound and the table it came
from, and the evidence of a calibrated bound.

Effects (``<metric>_effect``) are claims about a recipe, and a recipe's effect varies with the
training run: they are decided on the interval of the per-seed paired change across at least
``MIN_EFFECT_SEEDS`` training seeds, or, when both models are fixed checkpoints, on the paired
bootstrap interval over test images (the claim is then about those two artefacts). Otherwise
they are "undecided": shown, never passed or failed (``harness/run`` decides which applies).
"""

from .bounds import (  # noqa: F401
    _ALLOWED,
    ABSOLUTE,
    ANY_DATASET,
    ANY_MODEL,
    CALIBRATION,
    EFFECTS,
    EVIDENCE,
    EXPECTED_FAILURES,
    INCLUDE,
    KINDS,
    MIN_EFFECT_SEEDS,
    POLICY,
    RELATIVE,
    RELATIVE_TABLE,
    SEED_GATE_MODES,
    SEED_GATES,
    SEED_MARK,
    STATUSES,
    UNBOUNDED,
    Gate,
    GateFileError,
    Outcome,
    _signed,
    _source_note,
    check,
    effect_text,
    expect_failure,
    figure,
    not_applicable,
    recipe_of,
    undecided,
)
from .file import Gates, parse_key, profile_choices  # noqa: F401
