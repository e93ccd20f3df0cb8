"""nn.py's hyperparameters as one pydantic model: checked when a Job is submitted, read when it trains.

Each field carries its meaning, default and range, so the same model refuses a bad Job at submit time
(``mlqueue submit``, the API, a sweep's trials), explains it at run time as a status-400 Outcome, and
draws the dashboard's New job form (menus for choices, the range beside each number, hidden layers as
rows). The spelling and defaults are the seeds' (``depedentVariable``, ``lastLayerActivator: ""``),
so the seeds' sample Job validates unchanged. Checks that need the data (the target column exists,
PCA fits the feature count) or scikit-learn's view of the target stay in ``nn.parse_config``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

ACTIVATIONS = ("relu", "leaky_relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "swish", "mish", "softplus",
               "softsign", "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "exponential", "linear")
OPTIMIZERS = {
    "sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad",
    "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam", "ftrl": "Ftrl", "lion": "Lion",
}
REGRESSION_LOSSES = {
    "mse": "mean_squared_error", "mean_squared_error": "mean_squared_error",
    "mae": "mean_absolute_error", "mean_absolute_error": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "mean_absolute_percentage_error": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "mean_squared_logarithmic_error": "mean_squared_logarithmic_error",
    "huber": "huber", "log_cosh": "log_cosh", "logcosh": "log_cosh", "poisson": "poisson",
}
CLASSIFICATION_LOSSES = {"binary_crossentropy": "binary_crossentropy"}
SCALERS = ("standard", "minmax", "robust", "none")


def _name(value: Any) -> Any:
    """Choices are case-insensitive names ("Adam" is adam); other values are left for the type check."""
    return value.strip().lower() if isinstance(value, str) else value


def _linear_when_empty(value: Any) -> Any:
    """The seeds wrote ``lastLayerActivator: ""`` for a linear output."""
    return "linear" if value in (None, "") else _name(value)


Activation = Annotated[Literal[ACTIVATIONS], BeforeValidator(_name)]  # type: ignore[valid-type]
Optimizer = Annotated[Literal[tuple(OPTIMIZERS)], BeforeValidator(_name)]  # type: ignore[valid-type]
Loss = Annotated[Literal[tuple({**REGRESSION_LOSSES, **CLASSIFICATION_LOSSES})], BeforeValidator(_name)]  # type: ignore[valid-type]
Scaler = Annotated[Literal[SCALERS], BeforeValidator(_name)]  # type: ignore[valid-type]


class Layer(BaseModel):
    """One hidden layer; its width is relative to the number of input features."""

    model_config = ConfigDict(extra="forbid")

    activation: Activation = Field("relu", description="activation function of the layer")
    widthModifier: float = Field(1.0, gt=0, le=1000, description="units = round(widthModifier × input features), "
                                                                  "at least 1")
    dropout: float = Field(0.0, ge=0, lt=1, description="share of the layer's outputs dropped while training")


class Params(BaseModel):
    """The Job fields nn.py reads (any other field passes through untouched)."""

    model_config = ConfigDict(extra="allow")

    dataFileName: str | None = Field(None, min_length=1, description="the CSV to train on, from the project's "
                                                                     "datasets (`mlqueue data push FILE`)")
    depedentVariable: str | None = Field(None, min_length=1, description="the target column (the seeds' spelling)")
    dependentVariable: str | None = Field(None, min_length=1, description="the target column (either spelling)")
    minDependentVarValue: float | None = Field(None, description="rows whose target is below this are dropped")
    maxDependentVarValue: float | None = Field(None, description="rows whose target is above this are dropped")
    hiddenLayers: list[Layer] = Field(default_factory=lambda: [Layer()], max_length=100,
                                      description="the hidden layers, input side first")
    lastLayerActivator: Annotated[Activation, BeforeValidator(_linear_when_empty)] = Field(
        "linear", description="activation of the single output unit (\"\" or linear for regression)")
    optimizer: Optimizer = Field("adam", description="Keras optimizer")
    learningRate: float = Field(0.001, gt=0, le=10, description="the optimizer's initial learning rate")
    loss: Loss = Field("mse", description="training loss; binary_crossentropy for a 0/1 target")
    l1: float = Field(0.0, ge=0, description="L1 kernel regularisation on every Dense layer")
    l2: float = Field(0.0, ge=0, description="L2 kernel regularisation on every Dense layer")
    checkpointEveryEpochs: int | None = Field(None, ge=0, description="save a checkpoint every N epochs (an "
                                              "interrupted Job resumes from it); unset: adaptive, 0: never")
    batchSize: int = Field(32, ge=1, description="rows per gradient step (capped at the training rows)")
    epochs: int = Field(100, ge=1, le=1_000_000, description="most passes over the training rows")
    patienceRate: float = Field(0.1, ge=0, le=1, description="early stopping: patience = patienceRate × epochs "
                                                             "without val_loss improving")
    slowLearningRate: float = Field(0.0, ge=0, le=1, description="halve the learning rate after "
                                                                 "slowLearningRate × epochs without improvement "
                                                                 "(0 = off)")
    scalerType: Scaler = Field("standard", description="feature scaling fitted on the training rows")
    extraTreesKeepThreshd: float = Field(0.0, ge=0, lt=1, description="keep features whose ExtraTrees importance "
                                                                      "is above this (0 = keep all)")
    pcaComponents: int = Field(-1, ge=-1, description="PCA to this many components (-1 = off)")
    scaleTarget: bool | None = Field(None, description="train on a standardised target (default: yes for a "
                                                       "linear regression output)")
    validationSplit: float = Field(0.2, gt=0, lt=1, description="share of rows held out for early stopping "
                                                                "and the metrics")
    crossValidateOnly: bool = Field(False, description="k-fold cross-validation only: no final model or weights")
    crossValidationCrossingType: str = Field("neg_mean_squared_error", min_length=1,
                                             description="scikit-learn scoring name for the metric")
    cvFolds: int = Field(5, ge=2, le=100, description="folds when cross-validating")
    saveWeightsOnlyAtEnd: bool = Field(False, description="write the best weights once at the end (else at "
                                                          "every improvement)")
    seed: int = Field(42, ge=0, description="random seed of Keras and every scikit-learn step")

    @model_validator(mode="before")
    @classmethod
    def _none_means_default(cls, data: Any) -> Any:
        """A field set to null takes its default, as hand-written seeds' Jobs expect."""
        if not isinstance(data, dict):
            return data
        keep_none = {"minDependentVarValue", "maxDependentVarValue", "scaleTarget", "lastLayerActivator"}
        return {k: v for k, v in data.items() if v is not None or k in keep_none or k not in cls.model_fields}

    @field_validator("pcaComponents")
    @classmethod
    def _pca_off_or_positive(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (off) or a positive number of components")
        return value

    @field_validator("crossValidationCrossingType")
    @classmethod
    def _known_scoring(cls, value: str) -> str:
        from sklearn.metrics import get_scorer_names

        if value not in get_scorer_names():
            raise ValueError(f"unknown scikit-learn scoring {value!r}; e.g. neg_mean_squared_error, "
                             "neg_mean_absolute_error, r2 (sklearn.metrics.get_scorer_names() lists all)")
        return value

    @model_validator(mode="after")
    def _target_and_range(self) -> Params:
        if not (self.dependentVariable or self.depedentVariable):
            raise ValueError("name the target column in 'depedentVariable' (or 'dependentVariable')")
        low, high = self.minDependentVarValue, self.maxDependentVarValue
        if low is not None and high is not None and low > high:
            raise ValueError(f"minDependentVarValue {low:g} is above maxDependentVarValue {high:g}; swap them")
        return self

    @property
    def target(self) -> str:
        return str(self.dependentVariable or self.depedentVariable)


def field_path(loc: tuple[Any, ...]) -> str:
    """A pydantic location as a Job path: ``hiddenLayers[1].dropout``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def first_problem(exc: ValidationError, job: dict[str, Any]) -> tuple[str, str]:
    """(field, message) for the first error, in nn.py's run-time words."""
    err = exc.errors()[0]
    field = field_path(tuple(err["loc"]))
    message = str(err["msg"]).removeprefix("Value error, ")
    if not field:  # a whole-Job check: name the field it is about
        field = ("minDependentVarValue" if "minDependentVarValue" in message else
                 "dependentVariable" if "dependentVariable" in job else "depedentVariable")
        return field, message[:1].upper() + message[1:] + "."
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f", got {given!r}"
    return field, f"'{field}': {message}{shown}."
