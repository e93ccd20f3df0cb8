"""Sweep files: describe a hyperparameter space once and let the farm search it.

A sweep file (YAML, or JSON which is read the same way) has these top-level keys::

    name: wine-nn                      # optional, shown by `mlqueue sweep status`
    base: {scriptName: nn.py, ...}     # the Job every trial starts from
    space:                             # what to vary: `path: spec`, applied in file order
      optimizer:     {choice: [adam, sgd, rmsprop]}
      learningRate:  {float: [1.0e-4, 0.1], log: true}
      batchSize:     {int: [16, 512], log: true}
      epochs:        {int: [10, 100], step: 10}
      momentum:      {float: [0.0, 0.99], when: {optimizer: [sgd, rmsprop]}}   # conditional
      hiddenLayers:                    # a list of variable length
        repeat: {int: [1, 4]}          #   how many elements (or a plain number)
        each:                          #   a space for every element, paths relative to it
          activation:    {choice: [relu, tanh]}
          widthModifier: {float: [0.5, 4]}
          dropout:       {float: [0, 0.5], step: 0.05}
      hiddenLayers[0].dropout: {float: [0, 0.2]}   # dotted path into the base Job's fields
      scalerType:    {value: robust}   # a fixed value (useful with `when`)
    objective: loss                    # or {field: metric, direction: maximize}
    method: tpe                        # grid | random | tpe | cmaes | qmc | gp | nsgaii
    methodOptions: {n_startup_trials: 5}   # passed to the Optuna sampler
    seed: 1
    budget: {maxTrials: 40, maxParallel: 4, maxWallSeconds: 3600}
    earlyStopping: asha                # none | median | asha | hyperband, or a mapping with options
    # {method: asha, metric: val_loss, step: epoch, minResource: auto, reductionFactor: 3, maxResource: auto}
    # minResource auto = the base Job's epochs // reductionFactor**2 (at least 1): the first rung at 1/9

Every trial is an ordinary Job: ``base`` with the sampled values written in, plus ``sweepId`` and
``trialNumber`` (and, with ASHA or Hyperband, ``pruneSteps``: the rungs where the trial waits for the
pruner's verdict, see ``mlqueue.verdicts``). Optuna names each parameter by its full path
(``hiddenLayers[2].dropout``); a ``repeat``'s element count is ``len(hiddenLayers)``. A ``when``
condition names a parameter defined above it (in the same ``each`` or an enclosing level; naming a
``repeat`` means its element count).

Everything is checked here before anything is queued, and each problem names its place in the file
(``file:line:column``): a typo should cost seconds, not a night of wasted trials. Positions come from
PyYAML's node marks, so the checks run on the composed node tree as well as on the loaded valu

The package, one module per part: ``file`` (YAML read with positions, dotted paths into a Job),
``space`` (the entries and the walk that fills in one trial), ``spec`` (the whole file checked, trial
Jobs probed), ``driver`` (the HQ loop that asks Optuna and submits trials as Jobs) and ``cli``
(``mlqueue sweep``). Callers import the names below from ``mlqueue.sweeps``; the driver is
``mlqueue.sweeps.driver``.
"""


from mlqueue.sweeps.file import MissingPath, Position, SweepError, dotted, get_path, load_text, parse_path, set_path
from mlqueue.sweeps.space import Entry, iter_entries, walk
from mlqueue.sweeps.spec import METHODS, Sweep, grid_points, parse_data, parse_file, parse_text

__all__ = ["METHODS", "Entry", "MissingPath", "Position", "Sweep", "SweepError", "dotted", "get_path", "grid_points",
           "iter_entries", "load_text", "parse_data", "parse_file", "parse_path", "parse_text", "set_path", "walk"]
