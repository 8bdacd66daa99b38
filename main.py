"""Command line of score_sde: train, sample, measure likelihood or evaluate a configured experiment.

    python main.py --mode train --config vp_toy --workdir runs/toy
    python main.py --mode sample --config ve_ncsnpp --workdir runs/x --config.sampling.corrector=langevin

--config takes a name from score_sde/configs/ (see `configs.available_configs()`), one of the original's
config paths (ve/cifar10_ncsnpp_continuous), or a path to a config file; any knob
can be overridden as --config.<section>.<knob>=value. Under torchrun (any number of processes, one per GPU
or, with gloo, per CPU process) every mode splits its work across the processes:

    torchrun --nproc_per_node=8 main.py --mode train --config vp_ddpmpp_continuous --workdir runs/x
"""
import contextlib
import functools
import os
import sys

from absl import app, flags
from ml_collections import config_flags

import configs
import run_lib
from score_sde import distributed
from score_sde.controllable import TASKS
from score_sde.files import LockHeld
from score_sde.train import TrainingDiverged

# Exit statuses: 2 when the command cannot run as asked (a bad setting, a missing file, a workdir in use),
# found before any work; 1 when the run itself failed (divergence, non-finite results). Set
# SCORE_SDE_TRACEBACK=1 to see the traceback behind either.
USER_ERRORS = (ValueError, OSError, LockHeld)
# FloatingPointError: the adaptive ODE solver met a non-finite drift (a NaN network).
RUN_FAILURES = (TrainingDiverged, run_lib.NonFiniteResult, FloatingPointError)

MODES = {"train": run_lib.train, "train_classifier": run_lib.train_classifier, "sample": run_lib.sample,
         "likelihood": run_lib.likelihood,
         "eval": run_lib.evaluate, "stats": run_lib.stats,
         **{task: functools.partial(run_lib.controllable, task=task) for task in TASKS}}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment: a name in configs/ or a path to a config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory: checkpoints, samples, logs.")
flags.DEFINE_enum("mode", None, sorted(MODES), "What to run.")
flags.DEFINE_string("checkpoint", None, "modes other than train: this checkpoint (ours, or the original "
                    "implementation's) instead of the workdir's latest.")
flags.DEFINE_string("eval_folder", "eval", "eval: the folder of the workdir its results go to (as the "
                    "original's --eval_folder).")
flags.DEFINE_bool("allow_config_change", False, "train, train_classifier: resume although a knob of the "
                  "model, SDE, loss or data differs from the workdir's config.json (the old one is kept "
                  "beside it).")
flags.mark_flags_as_required(["workdir", "config", "mode"])


def resolve_config_names(argv):
    """Replace a config NAME after --config by its file path, so ml_collections can load it, and check that
    every --config.<section>.<knob> override names a knob of that config (ValueError listing the knobs)."""
    resolved = list(argv)
    path = None
    for i, arg in enumerate(resolved):
        if arg.startswith("--config="):
            path = configs.config_file(arg.split("=", 1)[1])
            resolved[i] = f"--config={path}"
        elif arg == "--config" and i + 1 < len(resolved):
            path = configs.config_file(resolved[i + 1])
            resolved[i + 1] = str(path)
    if path is not None:
        config = configs.load_config(path)
        for arg in resolved:
            if arg.startswith("--config."):
                configs.check_override(config, arg[len("--config."):].split("=", 1)[0])
    return resolved


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    training = FLAGS.mode in ("train", "train_classifier")
    if training and FLAGS.checkpoint:
        raise app.UsageError(f"--checkpoint is for sample, likelihood and eval; {FLAGS.mode} resumes by "
                             "itself")
    if not training and FLAGS.allow_config_change:
        raise app.UsageError("--allow_config_change is for train and train_classifier")
    if FLAGS.mode != "eval" and FLAGS["eval_folder"].present:
        raise app.UsageError("--eval_folder is for eval")
    distributed.init()  # a process group under torchrun; nothing in a plain run
    try:
        with one_line_errors():
            if training:
                MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir, FLAGS.allow_config_change)
            elif FLAGS.mode == "eval":
                run_lib.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.eval_folder)
            else:
                MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
    finally:
        distributed.close()


@contextlib.contextmanager
def one_line_errors():
    """User errors and run failures as one line on stderr and an exit status (see USER_ERRORS), not a
    traceback, unless SCORE_SDE_TRACEBACK is set."""
    try:
        yield
    except USER_ERRORS + RUN_FAILURES as error:
        if os.environ.get("SCORE_SDE_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1 if isinstance(error, RUN_FAILURES) else 2)


if __name__ == "__main__":
    try:
        sys.argv = resolve_config_names(sys.argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    app.run(main)
