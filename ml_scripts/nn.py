"""Keras trainer for tabular regression (or 0/1 classification), driven entirely by the Job.

The worker calls ``run(job, report)``; every choice below comes from a job field so that a
hyperparameter sweep is nothing more than a list of jobs.

Job fields (defaults in brackets):

* ``dataPath`` -- absolute path of the CSV (the worker sets it).  Every column except the
  target must be numeric: run ``encode.py`` first on raw data.  Rows with blanks are dropped.
* ``depedentVariable`` (the seeds' spelling) or ``dependentVariable`` -- the target column.
* ``minDependentVarValue`` / ``maxDependentVarValue`` [none] -- rows whose target lies
  outside this closed range are dropped before anything else.
* ``hiddenLayers`` [one relu layer, widthModifier 1, no dropout] -- list of
  ``{activation, widthModifier, dropout}``.  Width = round(widthModifier x number of input
  features after preprocessing), ties rounded up, at least 1.  Dropout follows the layer.
* ``lastLayerActivator`` [""] -- activation of the single output unit; "" means linear.
* ``optimizer`` [adam], ``learningRate`` [0.001], ``loss`` [mse], ``batchSize`` [32]
  (capped at the number of training rows), ``epochs`` [100].
* ``l1`` / ``l2`` [0] -- L1/L2 kernel regularisation on every Dense layer, output included.
* ``patienceRate`` [0.1] -- EarlyStopping on ``val_loss`` with
  patience = max(1, round(patienceRate x epochs)); the best weights are restored at the end.
* ``slowLearningRate`` [0 = off] -- ReduceLROnPlateau on ``val_loss`` with the same
  convention as ``patienceRate``: patience = max(1, round(slowLearningRate x epochs)),
  factor 0.5 (halve the rate), min_delta 1e-4, cooldown 0, and a floor of
  min_lr = learningRate / 1000.  So the seeds' 0.01 with 3000 epochs halves the learning
  rate after 30 epochs without improvement, while early stopping waits 150.
* ``scalerType`` [standard] -- standard | minmax | robust | none, fitted on training rows.
* ``extraTreesKeepThreshd`` [0 = off] -- fit ExtraTrees (100 trees) on the scaled training
  rows and keep the features whose impurity importance is above the threshold.
* ``pcaComponents`` [-1 = off] -- PCA to this many components after feature selection.
* ``scaleTarget`` [true for a linear output with a regression loss] -- train against a
  standardised target.  Implemented as a weightless Rescaling layer after the output unit,
  so predictions, losses and saved weights stay in the target's own units, while the
  optimiser sees a well-conditioned problem (raw targets in the hundreds otherwise need
  thousands of epochs before early stopping can act).
* ``validationSplit`` [0.2] -- share of rows held out for early stopping and the metrics.
* ``crossValidateOnly`` [false] + ``crossValidationCrossingType`` [neg_mean_squared_error]
  + ``cvFolds`` [5] -- k-fold cross-validation; each fold's training part gives
  ``validationSplit`` of its rows to early stopping and the held-out fold is scored with
  ``sklearn.metrics.get_scorer(crossValidationCrossingType)``.  No final model or weights.
  Without cross-validation the same scorer is applied to the validation split.
* ``saveWeightsOnlyAtEnd`` [false] -- false: ModelCheckpoint rewrites the weights at every
  ``val_loss`` improvement; true: the (best) weights are written once after training.
  Requires ``writePath``; the file is returned in ``artifacts`` with the architecture JSON.
* ``seed`` [42] -- ``keras.utils.set_random_seed`` before each model and random_state of
  every scikit-learn step.

``report(epoch=, loss=, val_loss=)`` is called once per epoch (plus ``fold=`` and ``step=``,
an epoch count running across folds, when cross-validating); ``loss`` is the training loss.
An exception it raises (pruning) propagates and stops training.

The fields above are the pydantic ``Params`` model (``ml_scripts/_nn_params.py``): mlqueue checks a
Job against it at submit time, and the dashboard draws nn's New job form from it. Bad hyperparameters
that reach a worker anyway are refused by ``parse_config`` before any training, with
``{"status": 400, "message": ..., "field": ...}``.

Command line (seed style; the outcome is the last stdout line, exit 0 for 200 and 400):
``python ml_scripts/nn.py '<job json>'`` or ``python ml_scripts/nn.py job.json``.  Without
``dataPath``, ``dataFileName`` is resolved against the working directory; without
``writePath`` weights go to ``./nn_output``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import functools
import importlib.util
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

if __package__ in (None, "") or importlib.util.find_spec("ml_scripts") is None:
    # run as `python ml_scripts/X.py`, or loaded from its file without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_scripts import _nn_checkpoints, _nn_params  # noqa: E402 - needs the path fix above
from ml_scripts._common import (  # noqa: E402 - needs the path fix above
    JobError,
    Outcome,
    Report,
    json_safe,
    parse_json_argument,
    read_csv,
    require_path,
    run_cli,
)

Params = _nn_params.Params   # checked at submit time by mlqueue, and below before any training
LOSSES = {**_nn_params.REGRESSION_LOSSES, **_nn_params.CLASSIFICATION_LOSSES}
# What a machine needs to run this script (mlqueue routes nn Jobs only to workers that can import it).
REQUIRES = {"packages": ["tensorflow"]}
LR_FACTOR = 0.5
LR_MIN_DELTA = 1e-4
MIN_LR_FRACTION = 1e-3
EXTRA_TREES = 100
MAX_PREDICTIONS = 2000
WEIGHTS_FILE = "weights.weights.h5"
ARCHITECTURE_FILE = "model.json"


@dataclass(frozen=True)
class LayerSpec:
    """One hidden layer as the job describes it (width is relative to the input)."""

    activation: str
    width_modifier: float
    dropout: float


@dataclass(frozen=True)
class NNConfig:
    """The validated job: once built, training never has to second-guess a field."""

    data_path: Path
    write_path: Path | None
    target: str
    target_field: str
    target_min: float | None
    target_max: float | None
    hidden_layers: tuple[LayerSpec, ...]
    last_activation: str
    optimizer: str
    learning_rate: float
    loss: str
    l1: float
    l2: float
    batch_size: int
    epochs: int
    patience_rate: float
    slow_learning_rate: float
    scaler: str
    extra_trees_threshold: float
    pca_components: int
    scale_target: bool
    validation_split: float
    cross_validate_only: bool
    scoring: str
    cv_folds: int
    save_weights_at_end: bool
    seed: int

    @property
    def classification(self) -> bool:
        """A 0/1 target trained with cross-entropy; changes splits, trees and scoring."""
        return self.loss in _nn_params.CLASSIFICATION_LOSSES.values()

    @property
    def patience(self) -> int:
        """EarlyStopping patience in epochs."""
        return max(1, round(self.patience_rate * self.epochs))

    @property
    def lr_patience(self) -> int | None:
        """ReduceLROnPlateau patience in epochs, or None when switched off."""
        if self.slow_learning_rate <= 0:
            return None
        return max(1, round(self.slow_learning_rate * self.epochs))


# --------------------------------------------------------------------------- validation


def _target_field(job: Mapping[str, Any]) -> str:
    """Which spelling of the target field the job used, so errors point at it."""
    return "dependentVariable" if "dependentVariable" in job else "depedentVariable"


def _check_scorer(name: str, classification: bool) -> None:
    """Refuse scoring names sklearn does not know, or that do not fit the kind of target."""
    from sklearn.metrics import get_scorer

    field = "crossValidationCrossingType"
    try:
        scorer = get_scorer(name)
    except (ValueError, TypeError) as exc:
        raise JobError(field, f"Unknown scoring {name!r}; use a scikit-learn scoring name such as "
                       "neg_mean_squared_error, neg_mean_absolute_error or r2.") from exc
    actual = np.array([0.0, 1.0, 0.0, 1.0]) if classification else np.array([1.0, 2.0, 3.0, 4.0])
    probe = _fixed_prediction(np.array([0.2, 0.7, 0.4, 0.9]) if classification else actual + 0.1, classification)
    try:
        scorer(probe, np.zeros((4, 1)), actual)
    except (ValueError, TypeError, AttributeError) as exc:
        kind = "binary classification" if classification else "regression"
        raise JobError(field, f"Scoring {name!r} does not apply to {kind} ({exc}); pick a {kind} scoring.") from exc


def _check_header(cfg_path: Path, target: str, target_field: str, pca: int) -> None:
    """Cheap checks against the CSV header so data problems are also caught before training."""
    try:
        columns = list(pd.read_csv(cfg_path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise JobError("dataPath", f"Could not read {cfg_path.name} as CSV ({exc}).") from exc
    if target not in columns:
        shown = ", ".join(columns[:20])
        raise JobError(target_field, f"Target column {target!r} is not in {cfg_path.name}; columns are: {shown}.")
    features = len(columns) - 1
    if pca > features:
        raise JobError("pcaComponents", f"pcaComponents={pca} but the data has only {features} feature columns; "
                       f"use at most {features}, or -1 to switch PCA off.")


def parse_config(job: Mapping[str, Any], *, check_data: bool = True) -> NNConfig:
    """Validate every hyperparameter up front and return the typed configuration.

    Raises JobError (-> status 400) naming the first bad field; nothing is trained before
    this returns, so a typo costs milliseconds rather than a wasted training run.
    ``check_data=False`` skips dataPath/writePath and the CSV header, so a job can be
    checked when it is submitted, before any worker has downloaded its data.
    """
    try:
        params = Params.model_validate(dict(job))
    except ValidationError as exc:
        raise JobError(*_nn_params.first_problem(exc, dict(job))) from None
    loss = LOSSES[params.loss]
    classification = loss in _nn_params.CLASSIFICATION_LOSSES.values()
    default_scale = params.lastLayerActivator == "linear" and not classification
    cfg = NNConfig(
        data_path=Path(),
        write_path=None,
        target=params.target,
        target_field=_target_field(job),
        target_min=params.minDependentVarValue,
        target_max=params.maxDependentVarValue,
        hidden_layers=tuple(LayerSpec(layer.activation, layer.widthModifier, layer.dropout)
                            for layer in params.hiddenLayers),
        last_activation=params.lastLayerActivator,
        optimizer=params.optimizer,
        learning_rate=params.learningRate,
        loss=loss,
        l1=params.l1,
        l2=params.l2,
        batch_size=params.batchSize,
        epochs=params.epochs,
        patience_rate=params.patienceRate,
        slow_learning_rate=params.slowLearningRate,
        scaler=params.scalerType,
        extra_trees_threshold=params.extraTreesKeepThreshd,
        pca_components=params.pcaComponents,
        scale_target=default_scale if params.scaleTarget is None else params.scaleTarget,
        validation_split=params.validationSplit,
        cross_validate_only=params.crossValidateOnly,
        scoring=params.crossValidationCrossingType,
        cv_folds=params.cvFolds,
        save_weights_at_end=params.saveWeightsOnlyAtEnd,
        seed=params.seed,
    )
    _check_scorer(cfg.scoring, classification)
    if not check_data:
        return cfg
    data_path = require_path(job, "dataPath")
    write_path = None
    if not cfg.cross_validate_only:
        write_path = require_path(job, "writePath", directory=True)
    _check_header(data_path, cfg.target, cfg.target_field, cfg.pca_components)
    return dataclasses.replace(cfg, data_path=data_path, write_path=write_path)


def validate_job(job: Mapping[str, Any], *, check_data: bool = True) -> Outcome | None:
    """The 400 outcome for a bad job, or None when it can be trained (see ``parse_config``)."""
    try:
        parse_config(job, check_data=check_data)
    except JobError as exc:
        return exc.outcome()
    return None


# --------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """Numeric features and target after row filtering, plus the row bookkeeping."""

    features: np.ndarray
    target: np.ndarray
    feature_names: list[str]
    rows: dict[str, int]


@dataclass(frozen=True)
class Split:
    """Row indices: ``fit`` trains, ``stop`` drives early stopping, ``score`` is evaluated."""

    fit: np.ndarray
    stop: np.ndarray
    score: np.ndarray


def load_dataset(cfg: NNConfig) -> Dataset:
    """Read the CSV, drop out-of-range and incomplete rows, insist on numeric features."""
    frame = read_csv(cfg.data_path, "dataPath")
    loaded = len(frame)
    if not pd.api.types.is_numeric_dtype(frame[cfg.target]):
        raise JobError(cfg.target_field, f"Target column {cfg.target!r} is not numeric; pick a numeric column "
                       "or encode the data first.")
    target = pd.to_numeric(frame[cfg.target], errors="coerce")
    in_range = target.notna()
    if cfg.target_min is not None:
        in_range &= target >= cfg.target_min
    if cfg.target_max is not None:
        in_range &= target <= cfg.target_max
    frame = frame[in_range | target.isna()]
    out_of_range = loaded - len(frame)
    features = frame.drop(columns=[cfg.target])
    _require_numeric(features)
    complete = features.notna().all(axis=1) & pd.to_numeric(frame[cfg.target], errors="coerce").notna()
    frame, features = frame[complete], features[complete]
    rows = {"loaded": loaded, "outOfRange": out_of_range, "incomplete": int((~complete).sum()), "used": len(frame)}
    y = pd.to_numeric(frame[cfg.target]).to_numpy(dtype="float32").reshape(-1, 1)
    _require_enough_rows(cfg, rows)
    if cfg.classification and not np.isin(y, (0.0, 1.0)).all():
        raise JobError("loss", f"binary_crossentropy needs a 0/1 target but {cfg.target} has other values; "
                       "use a regression loss such as mse.")
    return Dataset(features.to_numpy(dtype="float32"), y, list(features.columns), rows)


def _require_numeric(features: pd.DataFrame) -> None:
    """Text columns cannot be fed to the network; point the user at encode.py."""
    bad = [name for name, dtype in features.dtypes.items() if not (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))]
    if bad:
        raise JobError("dataPath", f"Feature columns {bad[:10]} are not numeric; run encode.py on the data "
                       "first (or prefix them rem_ there to drop them).")


def _require_enough_rows(cfg: NNConfig, rows: dict[str, int]) -> None:
    """Refuse data too small to split, saying which filter removed the rows."""
    needed = max(4, 2 * cfg.cv_folds) if cfg.cross_validate_only else 4
    if rows["used"] < needed:
        raise JobError("minDependentVarValue" if rows["outOfRange"] else "dataPath",
                       f"Only {rows['used']} usable rows ({rows['outOfRange']} outside the target range, "
                       f"{rows['incomplete']} with blanks); at least {needed} are needed.")


def holdout_split(cfg: NNConfig, y: np.ndarray) -> Split:
    """Train/validation split; the validation rows both stop training and get scored."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    fit, stop = train_test_split(indices, test_size=cfg.validation_split, random_state=cfg.seed,
                                 stratify=_stratify(cfg, y, indices))
    return Split(np.sort(fit), np.sort(stop), np.sort(stop))


def cv_splits(cfg: NNConfig, y: np.ndarray) -> list[Split]:
    """K folds; inside each training part ``validationSplit`` of the rows drive early stopping."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    maker = StratifiedKFold if cfg.classification else KFold
    splitter = maker(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    try:
        folds = list(splitter.split(np.zeros(len(y)), y.ravel()))
    except ValueError as exc:  # e.g. a class with fewer rows than folds
        raise JobError("cvFolds", f"Cannot make {cfg.cv_folds} folds from this data ({exc}); use fewer folds.") from exc
    splits = []
    for train, held_out in folds:
        fit, stop = train_test_split(train, test_size=cfg.validation_split, random_state=cfg.seed,
                                     stratify=_stratify(cfg, y, train))
        splits.append(Split(np.sort(fit), np.sort(stop), held_out))
    return splits


def _stratify(cfg: NNConfig, y: np.ndarray, indices: np.ndarray) -> np.ndarray | None:
    """Class labels to stratify on, when every class has at least two rows to share out."""
    if not cfg.classification:
        return None
    labels = y[indices].ravel()
    return labels if np.unique(labels, return_counts=True)[1].min() >= 2 else None


# ------------------------------------------------------------------------ preprocessing


@dataclass(frozen=True)
class Prepared:
    """One split after scaling, feature selection and PCA (fitted on ``fit`` rows only)."""

    fit_x: np.ndarray
    fit_y: np.ndarray
    stop_x: np.ndarray
    stop_y: np.ndarray
    score_x: np.ndarray
    score_y: np.ndarray
    feature_counts: dict[str, int]
    kept_features: list[str]


def _make_scaler(name: str) -> Any:
    """The scikit-learn scaler for ``scalerType`` (None for "none")."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    return {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}.get(name, lambda: None)()


def _select_features(cfg: NNConfig, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of features whose ExtraTrees importance exceeds the threshold."""
    if cfg.extra_trees_threshold <= 0:
        return np.ones(x.shape[1], dtype=bool)
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    maker = ExtraTreesClassifier if cfg.classification else ExtraTreesRegressor
    trees = maker(n_estimators=EXTRA_TREES, random_state=cfg.seed, n_jobs=-1).fit(x, y.ravel())
    keep = trees.feature_importances_ > cfg.extra_trees_threshold
    if not keep.any():
        top = float(trees.feature_importances_.max())
        raise JobError("extraTreesKeepThreshd", f"No feature has ExtraTrees importance above "
                       f"{cfg.extra_trees_threshold}; the largest is {top:.4f}. Lower the threshold (0 = off).")
    return keep


def preprocess(cfg: NNConfig, data: Dataset, split: Split) -> Prepared:
    """Fit scaler -> ExtraTrees selection -> PCA on the ``fit`` rows and apply to all three parts."""
    parts = [data.features[split.fit], data.features[split.stop], data.features[split.score]]
    counts = {"input": parts[0].shape[1]}
    scaler = _make_scaler(cfg.scaler)
    if scaler is not None:
        scaler.fit(parts[0])
        parts = [scaler.transform(part) for part in parts]
    keep = _select_features(cfg, parts[0], data.target[split.fit])
    parts = [part[:, keep] for part in parts]
    counts["afterExtraTrees"] = int(keep.sum())
    if cfg.pca_components > 0:
        parts = _apply_pca(cfg, parts)
    counts["afterPca"] = parts[0].shape[1]
    parts = [np.ascontiguousarray(part, dtype="float32") for part in parts]
    kept = [name for name, flag in zip(data.feature_names, keep, strict=True) if flag]
    y = data.target
    return Prepared(parts[0], y[split.fit], parts[1], y[split.stop], parts[2], y[split.score], counts, kept)


def _apply_pca(cfg: NNConfig, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Project onto ``pcaComponents`` components, refusing more than the data can give."""
    from sklearn.decomposition import PCA

    available = min(parts[0].shape)
    if cfg.pca_components > available:
        raise JobError("pcaComponents", f"pcaComponents={cfg.pca_components} but only {available} are possible "
                       "after feature selection; lower it or raise extraTreesKeepThreshd less.")
    pca = PCA(n_components=cfg.pca_components, random_state=cfg.seed).fit(parts[0])
    return [pca.transform(part) for part in parts]


# -------------------------------------------------------------------------------- model


def layer_widths(cfg: NNConfig, n_features: int) -> list[int]:
    """Hidden widths: widthModifier x features, rounded half up, never below one unit."""
    return [max(1, math.floor(layer.width_modifier * n_features + 0.5)) for layer in cfg.hidden_layers]


def build_model(cfg: NNConfig, n_features: int, target: np.ndarray) -> Any:
    """Compile the Sequential network described by the job."""
    import keras

    regularizer = keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2) if cfg.l1 or cfg.l2 else None
    layers: list[Any] = [keras.Input(shape=(n_features,))]
    for spec, width in zip(cfg.hidden_layers, layer_widths(cfg, n_features), strict=True):
        layers.append(keras.layers.Dense(width, activation=spec.activation, kernel_regularizer=regularizer))
        if spec.dropout > 0:
            layers.append(keras.layers.Dropout(spec.dropout, seed=cfg.seed))
    layers.append(keras.layers.Dense(1, activation=cfg.last_activation, kernel_regularizer=regularizer))
    if cfg.scale_target:
        std = float(target.std()) or 1.0
        layers.append(keras.layers.Rescaling(scale=std, offset=float(target.mean())))
    model = keras.Sequential(layers)
    optimizer = getattr(keras.optimizers, _nn_params.OPTIMIZERS[cfg.optimizer])(learning_rate=cfg.learning_rate)
    model.compile(optimizer=optimizer, loss=cfg.loss)
    return model


def _training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Any:
    """An endlessly repeated tf.data pipeline, reshuffled every pass.

    Paired with ``steps_per_epoch`` this reuses one iterator for the whole fit, whereas
    numpy input makes Keras build a new iterator each epoch -- the dominant cost when a
    small table is trained for thousands of full-batch epochs.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if batch_size < len(x):
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)


def _loss_evaluator(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    """Compiled val-loss computation (same formula as Keras' test step, regularisation included).

    Used instead of ``validation_data`` because Keras re-creates the validation iterator
    every epoch, which costs more than the training step itself on small tables.  The
    graph is traced once up front and called as a concrete function: cheaper per call, and
    no "frequent retracing" warnings when many folds each build their own.
    """
    import tensorflow as tf

    x_t, y_t = tf.constant(x), tf.constant(y)

    @tf.function(autograph=False)  # straight-line code: nothing for AutoGraph to convert
    def evaluate() -> Any:
        return model.compute_loss(x=x_t, y=y_t, y_pred=model(x_t, training=False), training=False)

    concrete = evaluate.get_concrete_function()
    return lambda: float(concrete())


def _epoch_callbacks(model: Any, prepared: Prepared, report: Report, fold: int | None) -> list[Any]:
    """val_loss injection then reporting, both before the callbacks that read val_loss."""
    import keras

    val_loss = _loss_evaluator(model, prepared.stop_x, prepared.stop_y)

    def add_val_loss(_epoch: int, logs: dict[str, Any]) -> None:
        logs["val_loss"] = val_loss()

    def send_report(epoch: int, logs: dict[str, Any]) -> None:
        metrics = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": float(logs["val_loss"])}
        if fold is not None:
            metrics["fold"] = fold
        report(**metrics)

    return [keras.callbacks.LambdaCallback(on_epoch_end=add_val_loss),
            keras.callbacks.LambdaCallback(on_epoch_end=send_report)]


def _control_callbacks(cfg: NNConfig, weights_path: Path | None) -> list[Any]:
    """EarlyStopping, optional ReduceLROnPlateau and optional per-improvement checkpoints."""
    import keras

    callbacks: list[Any] = [keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience,
                                                          restore_best_weights=True)]
    if cfg.lr_patience is not None:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", mode="min", factor=LR_FACTOR, patience=cfg.lr_patience,
            min_delta=LR_MIN_DELTA, cooldown=0, min_lr=cfg.learning_rate * MIN_LR_FRACTION))
    if weights_path is not None and not cfg.save_weights_at_end:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(weights_path), monitor="val_loss", mode="min",
                                                         save_best_only=True, save_weights_only=True))
    return callbacks


def _predict(model: Any, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Predictions as a flat array; direct calls avoid ``predict``'s per-model retracing."""
    import keras

    parts = [keras.ops.convert_to_numpy(model(x[start:start + chunk], training=False))
             for start in range(0, len(x), chunk)]
    return np.concatenate(parts).reshape(-1) if parts else np.zeros(0, dtype="float32")


@dataclass
class FitResult:
    """What one trained split contributes to the outcome."""

    history: dict[str, list[float]]
    seconds: float
    parameter_count: int
    widths: list[int]
    score_loss: float
    predicted: np.ndarray
    actual: np.ndarray
    score: float
    feature_counts: dict[str, int]


def train_split(cfg: NNConfig, prepared: Prepared, report: Report, fold: int | None,
                weights_path: Path | None, plan: _nn_checkpoints.Plan | None = None) -> tuple[FitResult, Any]:
    """Train one model on a prepared split; return its evaluation on the score rows and the model."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    n_features = prepared.fit_x.shape[1]
    model = build_model(cfg, n_features, prepared.fit_y)
    if plan:
        plan.restore_model(model)
    batch = min(cfg.batch_size, len(prepared.fit_x))
    controls = _control_callbacks(cfg, weights_path)
    callbacks = _epoch_callbacks(model, prepared, report, fold) + controls + \
        ([plan.callback(report, controls)] if plan else [])
    started = time.perf_counter()
    history = model.fit(_training_dataset(prepared.fit_x, prepared.fit_y, batch, cfg.seed), epochs=cfg.epochs,
                        steps_per_epoch=math.ceil(len(prepared.fit_x) / batch), callbacks=callbacks,
                        shuffle=False, verbose=0, initial_epoch=plan.initial_epoch if plan else 0)
    seconds = time.perf_counter() - started
    if weights_path is not None and cfg.save_weights_at_end:
        model.save_weights(str(weights_path))
    predicted = _predict(model, prepared.score_x)
    actual = prepared.score_y.reshape(-1)
    return FitResult(
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        seconds=seconds,
        parameter_count=int(model.count_params()),
        widths=layer_widths(cfg, n_features),
        score_loss=_loss_evaluator(model, prepared.score_x, prepared.score_y)(),
        predicted=predicted,
        actual=actual,
        score=_score(cfg, predicted, actual),
        feature_counts=prepared.feature_counts,
    ), model


# ------------------------------------------------------------------------------ scoring


@functools.cache
def _adapter_classes() -> tuple[type, type]:
    """sklearn-compatible stand-ins that hand precomputed predictions to a scorer.

    ``get_scorer`` objects call ``estimator.predict``/``predict_proba``; the Keras model
    has already predicted, so the adapters just return those numbers.  Built lazily to keep
    ``import ml_scripts.nn`` free of the scikit-learn import cost.
    """
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    class FixedRegressor(RegressorMixin, BaseEstimator):
        def __init__(self, predicted: np.ndarray | None = None) -> None:
            self.predicted = predicted

        def __sklearn_is_fitted__(self) -> bool:
            return True

        def predict(self, _x: Any) -> np.ndarray:
            return self.predicted

    class FixedClassifier(ClassifierMixin, BaseEstimator):
        classes_ = np.array([0.0, 1.0])

        def __init__(self, predicted: np.ndarray | None = None) -> None:
            self.predicted = predicted

        def __sklearn_is_fitted__(self) -> bool:
            return True

        def predict(self, _x: Any) -> np.ndarray:
            return (self.predicted > 0.5).astype(float)

        def predict_proba(self, _x: Any) -> np.ndarray:
            probability = np.clip(self.predicted, 0.0, 1.0)
            return np.column_stack([1.0 - probability, probability])

        def decision_function(self, _x: Any) -> np.ndarray:
            return self.predicted

    return FixedRegressor, FixedClassifier


def _fixed_prediction(predicted: np.ndarray, classification: bool) -> Any:
    """An estimator whose predictions are ``predicted``, for feeding sklearn scorers."""
    regressor, classifier = _adapter_classes()
    return (classifier if classification else regressor)(predicted)


def _score(cfg: NNConfig, predicted: np.ndarray, actual: np.ndarray) -> float:
    """The job's scikit-learn scoring (sign convention included, e.g. neg_* <= 0)."""
    from sklearn.metrics import get_scorer

    scorer = get_scorer(cfg.scoring)
    return float(scorer(_fixed_prediction(predicted, cfg.classification), np.zeros((len(actual), 1)), actual))


def validation_metrics(cfg: NNConfig, predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Human-readable metrics in the target's units (accuracy for classification)."""
    if cfg.classification:
        return {"valAccuracy": float(((predicted > 0.5) == (actual > 0.5)).mean())}
    error = predicted - actual
    mse = float(np.mean(error**2))
    spread = float(np.sum((actual - actual.mean()) ** 2))
    return {"valMse": mse, "valRmse": math.sqrt(mse), "valMae": float(np.mean(np.abs(error))),
            "valR2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else None}


# ------------------------------------------------------------------------------ outcome


def _device() -> str:
    """"GPU" when TensorFlow sees one (training is then placed on it), else "CPU"."""
    import tensorflow as tf

    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def _versions() -> dict[str, str]:
    """Library versions, so a surprising result can be traced to an upgrade."""
    import keras
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "sklearn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__}


def _predictions(actual: np.ndarray, predicted: np.ndarray) -> dict[str, list[float]]:
    """Actual vs predicted pairs for a scatter plot, capped so the outcome stays small."""
    return {"actual": actual[:MAX_PREDICTIONS].tolist(), "predicted": predicted[:MAX_PREDICTIONS].tolist()}


def _common_outcome(cfg: NNConfig, data: Dataset, first: FitResult, device: str) -> Outcome:
    """Fields shared by the hold-out and the cross-validation outcomes."""
    return {"status": 200, "metricName": cfg.scoring, "parameterCount": first.parameter_count,
            "layerWidths": first.widths, "featureCounts": first.feature_counts, "rows": data.rows,
            "device": device, "seed": cfg.seed, "versions": _versions()}


def _holdout_outcome(cfg: NNConfig, data: Dataset, result: FitResult, device: str, kept: list[str]) -> Outcome:
    """Outcome of a single training run with weights saved to writePath."""
    val_losses = result.history["val_loss"]
    best = int(np.argmin(val_losses))
    return {
        **_common_outcome(cfg, data, result, device),
        "crossValidated": False,
        "loss": result.score_loss,
        "metric": result.score,
        "bestEpoch": best + 1,
        "trainLoss": result.history["loss"][best],
        **validation_metrics(cfg, result.predicted, result.actual),
        "epochsRun": len(val_losses),
        "stoppedEarly": len(val_losses) < cfg.epochs,
        "trainingSeconds": result.seconds,
        "keptFeatures": kept,
        "history": result.history,
        "predictions": _predictions(result.actual, result.predicted),
    }


def _cv_outcome(cfg: NNConfig, data: Dataset, results: list[FitResult], device: str) -> Outcome:
    """Outcome of k-fold cross-validation: mean score plus everything per fold."""
    scores = [result.score for result in results]
    actual = np.concatenate([result.actual for result in results])
    predicted = np.concatenate([result.predicted for result in results])
    return {
        **_common_outcome(cfg, data, results[0], device),
        "crossValidated": True,
        "loss": float(np.mean([result.score_loss for result in results])),
        "metric": float(np.mean(scores)),
        "metricStd": float(np.std(scores)),
        "foldScores": scores,
        "foldLosses": [result.score_loss for result in results],
        "foldEpochsRun": [len(result.history["loss"]) for result in results],
        "foldFeatureCounts": [result.feature_counts for result in results],
        **validation_metrics(cfg, predicted, actual),
        "epochsRun": sum(len(result.history["loss"]) for result in results),
        "trainingSeconds": sum(result.seconds for result in results),
        "predictions": _predictions(actual, predicted),
    }


def _write_architecture(model: Any, path: Path) -> None:
    """Save the model config next to the weights; weights alone cannot be reloaded."""
    path.write_text(json.dumps(json.loads(model.to_json()), indent=2))


def _run_holdout(cfg: NNConfig, data: Dataset, report: Report, device: str,
                 plan: _nn_checkpoints.Plan | None = None) -> Outcome:
    """Train once on the training split, keep the weights, score the validation split."""
    prepared = preprocess(cfg, data, holdout_split(cfg, data.target))
    weights = cfg.write_path / WEIGHTS_FILE
    architecture = cfg.write_path / ARCHITECTURE_FILE
    result, model = train_split(cfg, prepared, report, None, weights, plan)
    _write_architecture(model, architecture)
    outcome = _holdout_outcome(cfg, data, result, device, prepared.kept_features)
    outcome["rows"] = {**data.rows, "train": len(prepared.fit_x), "validation": len(prepared.stop_x)}
    outcome["artifacts"] = [{"name": WEIGHTS_FILE, "path": str(weights)},
                            {"name": ARCHITECTURE_FILE, "path": str(architecture)}]
    return outcome


def _with_step(report: Report) -> Report:
    """Add ``step``, an epoch counter running across folds, since ``epoch`` restarts per fold
    and a pruner needs a monotonic step."""
    counter = itertools.count(1)

    def stepped(**metrics: Any) -> None:
        report(**metrics, step=next(counter))

    return stepped


def _run_cv(cfg: NNConfig, data: Dataset, report: Report, device: str) -> Outcome:
    """Cross-validate; every fold is preprocessed first so data problems surface pre-training."""
    prepared = [preprocess(cfg, data, split) for split in cv_splits(cfg, data.target)]
    stepped = _with_step(report)
    results = [train_split(cfg, part, stepped, fold, None)[0] for fold, part in enumerate(prepared, start=1)]
    return _cv_outcome(cfg, data, results, device)


def run(job: dict[str, Any], report: Report) -> Outcome:
    """Worker entry point: validate, load, preprocess, train, and describe the result.

    Exceptions raised by ``report`` (pruning) propagate on purpose.
    """
    try:
        cfg = parse_config(job)
        data = load_dataset(cfg)
        import tensorflow as tf

        device = _device()
        with tf.device(f"/{device}:0"):
            if cfg.cross_validate_only:
                outcome = _run_cv(cfg, data, report, device)
            else:
                outcome = _run_holdout(cfg, data, report, device, _nn_checkpoints.Plan.from_job(job))
    except JobError as exc:
        return exc.outcome()
    return json_safe(outcome)


def job_from_argv(argv: list[str]) -> dict[str, Any]:
    """The job from the command line: inline JSON or a path to a JSON file."""
    if len(argv) != 1:
        raise JobError("argv", "Usage: nn.py '<job json>' | nn.py job.json")
    text = argv[0]
    if not text.lstrip().startswith("{") and Path(text).is_file():
        text = Path(text).read_text()
    job = parse_json_argument(text, "job")
    if not job.get("dataPath") and job.get("dataFileName"):
        job["dataPath"] = str(Path(job["dataFileName"]).resolve())
    if not job.get("writePath") and not job.get("crossValidateOnly"):
        output = Path("nn_output").resolve()
        output.mkdir(exist_ok=True)
        job["writePath"] = str(output)
    return job


if __name__ == "__main__":
    sys.exit(run_cli(run, job_from_argv, sys.argv[1:]))
