"""Train and evaluate a deep metric learning model: ``python main.py [flags]``.

With no flags it runs the embedded default (scikit-learn's ``digits``, classes 0-4
train / 5-9 test) in well under a minute on CPU. ``python main.py --help`` lists
every flag by group. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from training.loop import Interrupted
    from utilities.errors import UserError

    try:
        import parameters
        import training

        opt = parameters.parse_args(argv)
        if opt.evaluate:
            training.evaluate_run(opt)
            return 0
        run = training.build_run(opt)
        if opt.dry_run:
            print("dry run: " + run.describe())
            return 0
        training.Trainer(run, training.default_hooks(opt)).fit()
    except UserError as err:
        # Raised in a data-loader worker, the message carries the worker's traceback: keep its last line.
        message = str(err).strip().splitlines()[-1].removeprefix("utilities.errors.UserError: ")
        print(f"main.py: error: {message}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"main.py: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("main.py: interrupted; the run folder keeps the last saved checkpoint (resume with --resume <run folder>)",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as err:  # a full disk, a folder that vanished, a read-only mount
        where = f" {err.filename}" if err.filename else ""
        print(f"main.py: error: cannot write or read{where} ({err.strerror or err}); free space or fix the path, then "
              "resume with --resume <run folder> (the last complete checkpoint and CSVs are kept)", file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
