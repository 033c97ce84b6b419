"""python -m vit_hf.report OUTPUT_DIR [OTHER_DIR ...] [--plot FILE]

Prints one column per run (final and best accuracy, the other metrics of its evaluation.metrics: top-5,
macro F1..., then wall time, images/s, steps, epochs, and the recipe keys whose values differ between the
runs), read from each output_dir's recipe.yaml, trainer_state.json, eval_results.json and all_results.json;
`--plot` overlays their curves.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_BAD_INPUT
from ..outputs.plots import plot_curves
from ..outputs.runs import format_comparison, load_run, run_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_hf.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="a run's training.output_dir")
    parser.add_argument("--plot", metavar="FILE", help="write the runs' curves, overlaid, to this PNG")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = [load_run(path) for path in args.output_dirs]
    for run in runs:
        if not run.found:
            print(f"error: {str(run.path)!r} holds no recipe.yaml, trainer_state.json or eval_results.json: "
                  "not a run's training.output_dir", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(format_comparison(runs))
    if args.plot:
        plot_curves(dict(zip(run_names(runs), (run.history for run in runs))), args.plot)
        print(f"curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
