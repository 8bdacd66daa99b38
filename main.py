"""Command line of score_sde: train, sample, measure likelihood or evaluate a configured experiment.

    python main.py --mode train --config vp_toy --workdir runs/toy
    python main.py --mode sample --config ve_ncsnpp --workdir runs/x --config.sampling.corrector=langevin

--config takes a name from configs/ (see `configs.available_configs()`) or a path to a config file; any knob
can be overridden as --config.<section>.<knob>=value.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

import configs
import run_lib

MODES = {"train": run_lib.train, "sample": run_lib.sample, "likelihood": run_lib.likelihood,
         "eval": run_lib.evaluate}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment: a name in configs/ or a path to a config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory: checkpoints, samples, logs.")
flags.DEFINE_enum("mode", None, sorted(MODES), "What to run.")
flags.DEFINE_string("checkpoint", None, "sample / likelihood / eval: this checkpoint (ours, or the original "
                    "implementation's) instead of the workdir's latest.")
flags.mark_flags_as_required(["workdir", "config", "mode"])


def resolve_config_names(argv):
    """Replace a config NAME after --config by its file path, so ml_collections can load it; paths pass."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        if arg.startswith("--config="):
            resolved[i] = "--config=" + str(configs.config_file(arg.split("=", 1)[1]))
        elif arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = str(configs.config_file(resolved[i + 1]))
    return resolved


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.mode == "train":
        if FLAGS.checkpoint:
            raise app.UsageError("--checkpoint is for sample, likelihood and eval; train resumes by itself")
        run_lib.train(FLAGS.config, FLAGS.workdir)
    else:
        MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)


if __name__ == "__main__":
    try:
        sys.argv = resolve_config_names(sys.argv)
    except ValueError as error:
        sys.exit(f"error: {error}")
    app.run(main)
