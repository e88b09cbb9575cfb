"""Binary classification metrics on scores, with confidence intervals.

Pure functions, NumPy arrays in and out. Conventions throughout:

* `y_true` — shape (n,), 0 = benign, 1 = malignant (melanoma).
* `y_score` — shape (n,), a probability in [0, 1] or any monotone score (a logit);
  rank metrics (ROC AUC, PR AUC) only use its order.
* A case is called positive ("refer") when `y_score >= threshold`.

Ranking metrics are computed on the scores themselves, never on thresholded labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats
from sklearn import metrics as sklearn_metrics

# ---------------------------------------------------------------- validation


def check_binary_inputs(y_true, y_score, need_both_classes: bool = True):
    """Validate and return (y_true int array, y_score float array), both shape (n,)."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 1 or y_score.ndim != 1:
        raise ValueError(f"y_true and y_score must be 1-D; got shapes {y_true.shape} and {y_score.shape}")
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true has {len(y_true)} entries but y_score has {len(y_score)}")
    if len(y_true) == 0:
        raise ValueError("no samples given")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must contain only 0 and 1; found {np.unique(y_true)[:5]}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    if need_both_classes and len(np.unique(y_true)) < 2:
        raise ValueError("y_true must contain both classes for this metric")
    return y_true.astype(np.int64), y_score


# ---------------------------------------------------------------- ranking metrics


def roc_curve(y_true, y_score):
    """ROC curve: (fpr, tpr, thresholds), each shape (k,), thresholds decreasing
    (scikit-learn's, every distinct score kept).

    The first point is (0, 0) at threshold +inf; each later point is the rate of cases
    with `y_score >= threshold` among negatives (fpr) and positives (tpr).
    """
    y_true, y_score = check_binary_inputs(y_true, y_score)
    return sklearn_metrics.roc_curve(y_true, y_score, drop_intermediate=False)


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve: the probability that a random melanoma scores higher
    than a random benign lesion (ties count one half), via the Mann–Whitney U statistic."""
    y_true, y_score = check_binary_inputs(y_true, y_score)
    ranks = stats.rankdata(y_score)
    n_pos = y_true.sum()
    n_neg = len(y_true) - n_pos
    return float((ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(y_true, y_score):
    """(precision, recall, thresholds) at each distinct score down to full recall,
    thresholds decreasing: from the shortest list of referrals to the first that finds
    every melanoma (scikit-learn's curve, without its closing (recall 0) point)."""
    y_true, y_score = check_binary_inputs(y_true, y_score)
    precision, recall, thresholds = sklearn_metrics.precision_recall_curve(y_true, y_score)
    return precision[:-1][::-1], recall[:-1][::-1], thresholds[::-1]


def average_precision(y_true, y_score) -> float:
    """PR AUC as average precision: sum over thresholds of (ΔRecall × Precision), the
    step-wise estimate that does not interpolate optimistically (scikit-learn's)."""
    y_true, y_score = check_binary_inputs(y_true, y_score)
    return float(sklearn_metrics.average_precision_score(y_true, y_score))


def bootstrap_ci(
    y_true, y_score, metric=roc_auc, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `metric(y_true, y_score)`.

    Resamples are stratified: SciPy's bootstrap resamples the positives and the
    negatives as two separate samples, so every resample keeps the observed class
    counts and the metric is always defined.
    """
    y_true, y_score = check_binary_inputs(y_true, y_score)
    positives, negatives = y_score[y_true == 1], y_score[y_true == 0]
    labels = np.r_[np.ones(len(positives), np.int64), np.zeros(len(negatives), np.int64)]
    # A class with one case is the same in every resample: it is held fixed, and only
    # the other class is resampled (SciPy needs two or more observations per sample).
    resampled = [len(positives) > 1, len(negatives) > 1]
    if not any(resampled):
        value = float(metric(labels, np.r_[positives, negatives]))
        return value, value

    def statistic(*samples):
        drawn = iter(samples)
        chosen = [
            next(drawn) if moving else fixed for moving, fixed in zip(resampled, (positives, negatives))
        ]
        return metric(labels, np.r_[chosen[0], chosen[1]])

    result = stats.bootstrap(
        tuple(sample for moving, sample in zip(resampled, (positives, negatives)) if moving),
        statistic,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        paired=False,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# ---------------------------------------------------------------- at a threshold


def wilson_interval(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion `successes / total` (SciPy's); (nan, nan)
    if total is 0. Unlike the normal approximation it stays inside [0, 1] and behaves at
    0% and 100%."""
    if total == 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}")
    interval = stats.binomtest(int(successes), int(total)).proportion_ci(level, method="wilson")
    return (max(0.0, float(interval.low)), min(1.0, float(interval.high)))


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold."""

    tp: int
    fp: int
    tn: int
    fn: int

    def as_matrix(self) -> np.ndarray:
        """[[tn, fp], [fn, tp]]: rows are the true class, columns the decision."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


def confusion_at(y_true, y_score, threshold: float) -> Confusion:
    """Confusion counts when cases with `y_score >= threshold` are called malignant."""
    y_true, y_score = check_binary_inputs(y_true, y_score, need_both_classes=False)
    called = y_score >= threshold
    return Confusion(
        tp=int(np.sum(called & (y_true == 1))),
        fp=int(np.sum(called & (y_true == 0))),
        tn=int(np.sum(~called & (y_true == 0))),
        fn=int(np.sum(~called & (y_true == 1))),
    )


@dataclass(frozen=True)
class Estimate:
    """A proportion with its 95% Wilson interval and the counts behind it."""

    value: float
    low: float
    high: float
    successes: int
    total: int

    @classmethod
    def of(cls, successes: int, total: int, level: float = 0.95) -> "Estimate":
        value = successes / total if total else math.nan
        return cls(value, *wilson_interval(successes, total, level), successes, total)


def threshold_metrics(y_true, y_score, threshold: float) -> dict[str, Estimate]:
    """Sensitivity, specificity, PPV, NPV, accuracy (Wilson CIs) and F1 at a threshold.

    F1 is not a simple proportion; its interval is the percentile bootstrap.
    """
    c = confusion_at(y_true, y_score, threshold)
    n = c.tp + c.fp + c.tn + c.fn
    result = {
        "sensitivity": Estimate.of(c.tp, c.tp + c.fn),
        "specificity": Estimate.of(c.tn, c.tn + c.fp),
        "ppv": Estimate.of(c.tp, c.tp + c.fp),
        "npv": Estimate.of(c.tn, c.tn + c.fn),
        "accuracy": Estimate.of(c.tp + c.tn, n),
    }
    f1 = f1_at(y_true, y_score, threshold)
    low, high = (
        bootstrap_ci(y_true, y_score, lambda y, s: f1_at(y, s, threshold), 500)
        if len(np.unique(y_true)) == 2
        else (math.nan, math.nan)
    )
    # F1 = 2·TP / (2·TP + FP + FN): those are its counts.
    result["f1"] = Estimate(f1, low, high, 2 * c.tp, 2 * c.tp + c.fp + c.fn)
    return result


def f1_at(y_true, y_score, threshold: float) -> float:
    """F1 of the malignant class at a threshold; 0 when nothing is called or present.
    From the confusion counts, not scikit-learn's `f1_score` (the tests' oracle): it runs
    500 times inside every F1 bootstrap, where `f1_score` cost ~2.5 ms a call."""
    c = confusion_at(y_true, y_score, threshold)
    denominator = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / denominator if denominator else 0.0


def per_class_report(y_true, y_score, threshold: float, class_names=("benign", "malignant")) -> list[dict]:
    """MedAL's table: precision, recall, F1 and support for each class at a threshold
    (scikit-learn's; 0 where a ratio has nothing to divide)."""
    y_true, y_score = check_binary_inputs(y_true, y_score, need_both_classes=False)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        y_true, (y_score >= threshold).astype(np.int64), labels=[0, 1], zero_division=0
    )
    return [
        {
            "class": name,
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(class_names)
    ]


# ---------------------------------------------------------------- operating points


def midway_below(threshold: float, y_score) -> float:
    """A threshold that calls the same cases as `threshold` but lies halfway to the next
    lower score, so that no case sits on it.

    A threshold equal to a case's score flips that case on float rounding noise (another
    batch size, another CPU); the midpoint leaves a margin on both sides. `threshold`
    itself when no score lies below it.
    """
    below = np.asarray(y_score, dtype=float)
    below = below[below < threshold]
    return float((threshold + below.max()) / 2) if below.size else float(threshold)


def threshold_for_sensitivity(y_true, y_score, target: float = 0.95) -> float:
    """The highest operating point whose sensitivity reaches `target`.

    Recall first: this keeps at least `target` of the melanomas above the threshold while
    referring as few benign lesions as that allows. The threshold lies midway between the
    score of the last melanoma it must catch and the next lower score (`midway_below`).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y_true, y_score = check_binary_inputs(y_true, y_score)
    positive_scores = np.sort(y_score[y_true == 1])[::-1]
    needed = math.ceil(target * len(positive_scores) - 1e-9)
    return midway_below(positive_scores[needed - 1], y_score)


def specificity_at_sensitivity(y_true, y_score, target: float) -> "Estimate":
    """Specificity (Wilson 95% CI) at the highest threshold whose sensitivity on these
    same cases reaches `target`: a point of the ROC curve, not a threshold validated
    elsewhere."""
    y_true, y_score = check_binary_inputs(y_true, y_score)
    threshold = threshold_for_sensitivity(y_true, y_score, target)
    negatives = y_score[y_true == 0]
    return Estimate.of(int(np.sum(negatives < threshold)), len(negatives))


def youden_threshold(y_true, y_score) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity − 1, midway
    below the score where J peaks (`midway_below`)."""
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    best = np.argmax(tpr[1:] - fpr[1:]) + 1  # skip the +inf point
    return midway_below(thresholds[best], y_score)


# ---------------------------------------------------------------- prevalence


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """(PPV, NPV) of a test with this sensitivity and specificity at another prevalence
    (Bayes' rule): the validation set's prevalence is not a clinic's."""
    if not 0 <= prevalence <= 1:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    true_pos = sensitivity * prevalence
    false_pos = (1 - specificity) * (1 - prevalence)
    true_neg = specificity * (1 - prevalence)
    false_neg = (1 - sensitivity) * prevalence
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos else math.nan
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg else math.nan
    return ppv, npv


@dataclass(frozen=True)
class NaturalFrequencies:
    """What happens to `patients` people at a given prevalence and operating point, in
    whole people whose parts add up: caught + missed = with_melanoma, benign_referred +
    benign_reassured = patients - with_melanoma, referred = caught + benign_referred."""

    patients: int
    with_melanoma: int
    referred: int
    melanomas_caught: int
    melanomas_missed: int
    benign_referred: int
    benign_reassured: int

    def as_dict(self) -> dict:
        return asdict(self)


def natural_frequencies(
    sensitivity: float, specificity: float, prevalence: float, patients: int | None = None
) -> NaturalFrequencies:
    """Expected counts per `patients` people (default: 1,000, or 10,000 when 1,000 would
    round an expected count between 0 and 1 to a whole person or to nobody, e.g. the 0.5
    missed melanomas of 10 at 95% sensitivity)."""
    if patients is None:
        patients = 1000
        while patients < 10_000:
            expected = _frequency_cells(sensitivity, specificity, prevalence, patients)
            if not any(0 < value < 1 for value in expected):
                break
            patients *= 10
    with_melanoma = int(round(prevalence * patients))
    without = patients - with_melanoma
    caught = int(round(sensitivity * with_melanoma)) if with_melanoma else 0
    benign_referred = int(round((1 - specificity) * without)) if without else 0
    return NaturalFrequencies(
        patients,
        with_melanoma,
        caught + benign_referred,
        caught,
        with_melanoma - caught,
        benign_referred,
        without - benign_referred,
    )


def _frequency_cells(sensitivity, specificity, prevalence, patients) -> tuple[float, ...]:
    with_melanoma = prevalence * patients
    without = patients - with_melanoma
    return (
        sensitivity * with_melanoma,
        (1 - sensitivity) * with_melanoma,
        (1 - specificity) * without,
        specificity * without,
    )


# ---------------------------------------------------------------- calibration


def sigmoid(x):
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def calibrated_probability(logits, logit_offset: float, temperature: float):
    """sigmoid((logits − logit_offset) / temperature), elementwise: a bundle's calibrated
    P(melanoma) from its raw logits."""
    return sigmoid((np.asarray(logits, dtype=np.float64) - logit_offset) / temperature)


def log_loss(y_true, y_prob) -> float:
    """Mean negative log-likelihood (nats) of binary labels under probabilities
    (scikit-learn's, which clips probabilities to machine precision)."""
    y_true, y_prob = check_binary_inputs(y_true, y_prob, need_both_classes=False)
    return float(sklearn_metrics.log_loss(y_true, y_prob, labels=[0, 1]))


def brier_score(y_true, y_prob) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    y_true, y_prob = check_binary_inputs(y_true, y_prob, need_both_classes=False)
    return float(sklearn_metrics.brier_score_loss(y_true, y_prob, pos_label=1))


def expected_calibration_error(y_true, y_prob, n_bins: int = 10) -> float:
    """ECE: the size-weighted mean |observed rate − mean probability| over equal-width
    probability bins."""
    y_true, y_prob = check_binary_inputs(y_true, y_prob, need_both_classes=False)
    bins = np.minimum((y_prob * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(y_true[in_bin].mean() - y_prob[in_bin].mean())
    return float(ece)


def fit_temperature(y_true, logits) -> float:
    """Temperature T > 0 minimising the NLL of sigmoid(logits / T) (Guo et al., 2017).

    T > 1 softens over-confident scores; it never changes their order, so ROC AUC and
    the set of achievable operating points stay the same.
    """
    y_true, logits = check_binary_inputs(y_true, logits)
    result = optimize.minimize_scalar(
        lambda log_t: log_loss(y_true, sigmoid(logits / np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))
