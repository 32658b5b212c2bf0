"""The ``raystudy`` command: run a study, rebuild its report, show its status, advise what to label next,
print the study config's JSON Schema."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from raystudy.config import RANDOM_INIT, TRACKERS, ConfigError, load_config, load_yaml, schema_text
from raystudy.data.fit import fit_to_data, user_keys
from raystudy.data.loading import DataError
from raystudy.errors import NothingToRun, PretrainingUnlearned, StudyIncomplete, StudyInterrupted, StudyLockedError
from raystudy.status import format_status, is_run_folder
from raystudy.storage import CREDENTIALS_HINT, DiskFull, LocationError, as_location, is_uri, reachable, redact


def _add_run_args(p: argparse.ArgumentParser, default_preset: str) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"smoke, demo or paper (default {default_preset})")
    src.add_argument("--config", type=Path, help="a study YAML file")
    p.add_argument("--data", type=Path, help="DATA folder (<campaign>/<category>/<images>) or a manifest CSV/Parquet")
    p.add_argument(
        "--out",
        help="run location: a folder, a shared mount or a URI such as s3://bucket/runs/NAME "
        "(default runs/<study name>)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. finetune.epochs=3",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray Tune's full progress tables")
    p.add_argument(
        "--shrink-to-fit",
        action="store_true",
        help="on a cluster, shrink requests to its current nodes (a local instance always does)",
    )


def build_parser(default_preset: str = "demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raystudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume a study")
    _add_run_args(run, default_preset)
    run.add_argument(
        "--track",
        action="append",
        default=[],
        choices=TRACKERS,
        help="log the study to this tracker with its default settings (tracking.<name> in the config); repeatable",
    )
    _add_run_args(
        sub.add_parser("search", help="search hyperparameters at one train size (search: in the config)"),
        default_preset,
    )
    rep = sub.add_parser("report", help="rebuild RUN_DIR/report.html from the Parquet results")
    rep.add_argument("run_dir", help="run folder or URI (s3://...)")
    st = sub.add_parser("status", help="show done / pending / skipped / failed cells of a run")
    st.add_argument("run_dir", help="run folder or URI (s3://...)")
    adv = sub.add_parser("advise", help="rank the images of an unlabeled pool to label next, with the OA to expect")
    adv.add_argument("run_dir", help="a finished study's run folder or URI")
    adv.add_argument("--pool", type=Path, required=True, help="folder of unlabeled images (searched recursively)")
    adv.add_argument("--budget", type=int, required=True, help="how many images to label next")
    adv.add_argument(
        "--strategy",
        help="random, coreset, uncertainty, typiclust, probcover (or a registered one); default: the study's best",
    )
    adv.add_argument("--arch", help="the backbone whose cells and encoder to use (default: the study's model.arch)")
    adv.add_argument("--labeled", type=int, help="images labeled so far (default: the study's largest train size)")
    adv.add_argument("--out", type=Path, default=Path("labels.csv"), help="the ranked CSV (default labels.csv)")
    pl = sub.add_parser("plan", help="cells, resources per job, node types that hold them, images, device-hours")
    _add_run_args(pl, default_preset)
    pl.add_argument(
        "--cluster",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "cluster.yaml",
        help="cluster config (default: the repository's cluster.yaml)",
    )
    rate = pl.add_mutually_exclusive_group()
    rate.add_argument("--images-per-s", type=float, help="images/s of one fine-tuning trial")
    rate.add_argument("--calibrate", action="store_true", help="measure it: a few timed steps of the backbone here")
    pl.add_argument(
        "--pretrain-images-per-s",
        type=float,
        help="images/s of one pretraining worker (default: a third of --images-per-s)",
    )
    sub.add_parser("schema", help="print the JSON Schema of a study YAML file (studies/schema.json is its output)")
    return parser


def absolute_inits(cfg) -> None:
    """Make local initial-weight paths absolute, so every trial (another process, maybe
    another node) reads the file the driver checked; URIs and ``random`` stay as they are."""

    def fix(value):
        return value if value in (None, "", RANDOM_INIT) or is_uri(value) else str(Path(value).expanduser().resolve())

    cfg.model.baseline_init = fix(cfg.model.baseline_init)
    cfg.model.pretrain_init = {m: fix(v) for m, v in cfg.model.pretrain_init.items()}


def load_run_config(args: argparse.Namespace, default_preset: str):
    """The study config; with ``--data``, fitted to the data (returns (cfg, DataFit or None))."""

    overrides = list(args.overrides)
    if args.data is not None:
        data = args.data
        if not data.exists():  # before Ray starts or any image decodes
            raise DataError(
                f"--data {data} does not exist; give DATA folder (<campaign>/<category>/<images>) "
                "or a manifest CSV / Parquet file"
            )
        if data.suffix.lower() in (".csv", ".parquet"):
            overrides.append(f"data.manifest={data.resolve()}")
        else:
            overrides.append(f"data.root={data.resolve()}")
    cfg = load_config(
        path=args.config, preset=None if args.config else (args.preset or default_preset), overrides=overrides
    )
    absolute_inits(cfg)
    for name in getattr(args, "track", []):  # only `run` has --track
        cfg.tracking.turn_on(name)
    if args.data is None:
        return cfg, None
    return fit_to_data(cfg, user_keys(args.config, args.overrides))


def cmd_run(args: argparse.Namespace, default_preset: str) -> int:
    from raystudy.study import run_study  # deferred: start-up cost (ray, torch)

    cfg, data_fit = load_run_config(args, default_preset)
    out = as_location(args.out or Path("runs") / cfg.name)
    if "runtime_resources/working_dir_files" in out.uri:
        print(
            f"raystudy: WARNING: the run folder {out} lies in this Ray job's copy of --working-dir, which Ray "
            "deletes once unused; pass --out on shared storage, e.g. --out /mnt/shared/runs/NAME",
            file=sys.stderr,
        )
    run_study(cfg, out, verbose=args.verbose, data_fit=data_fit, shrink=args.shrink_to_fit)
    return 0


def cmd_search(args: argparse.Namespace, default_preset: str) -> int:
    from raystudy.sweep import search_study  # deferred: start-up cost (ray, torch)

    cfg, _ = load_run_config(args, default_preset)
    search_study(cfg, as_location(args.out or Path("runs") / f"{cfg.name}-search"), shrink=args.shrink_to_fit)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report  # deferred: start-up cost (plotly, pandas)
    from raystudy.tracking.setup import log_report  # deferred: start-up cost (ray)

    run = reachable(args.run_dir)
    if not (run / "results").is_dir():
        raise DataError(f"{run.uri} is not a raystudy run folder (no results/ inside)")
    print(build_report(run))
    saved = run / "config.yaml"
    logged = log_report(load_config(raw=load_yaml(saved.read_text())), run) if saved.is_file() else None
    if logged:
        print(logged)
    return 0


def cmd_plan(args: argparse.Namespace, default_preset: str) -> int:

    from raystudy import plan  # deferred: start-up cost (scikit-learn, through the grid)
    from raystudy.resources import load_node_types  # deferred: start-up cost (scikit-learn, through the grid)

    args.overrides = [*args.overrides, "model.require_init=false"]  # a plan trains nothing: no weights needed
    cfg, _ = load_run_config(args, default_preset)
    node_types = load_node_types(args.cluster)
    rate = (
        plan.calibrate(cfg) if args.calibrate else plan.throughput_from(args.images_per_s, args.pretrain_images_per_s)
    )
    print(plan.format_plan(cfg, node_types, str(args.cluster), plan.count_images(cfg), rate))
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from raystudy.advise import advise, check_advice_out, write_advice  # deferred: start-up cost (torch, plotly)

    check_advice_out(args.out)
    a = advise(args.run_dir, args.pool, args.budget, args.strategy, args.labeled, args.arch)
    out = write_advice(a, args.out)
    print(f"{len(a.paths)} images to label next ({a.strategy}: {a.why_strategy}) -> {out}")
    print(f"{a.category_set}, {a.model} ({a.arch}), {a.labeled} labeled + {len(a.paths)}: {a.expected}")
    return 0


def cmd_schema() -> int:
    """Print the JSON Schema of ``StudyConfig`` (the registered methods' ``pretrain.<method>`` sections included)."""
    print(schema_text(), end="")
    return 0


def cmd_status(args: argparse.Namespace) -> int:

    run = reachable(args.run_dir)
    if not is_run_folder(run):
        raise DataError(
            f"{run.uri} is not a raystudy run folder (no results/ inside); "
            "give the folder a study writes to (its --out, default runs/<study name>)"
        )
    print(format_status(run))
    return 0


def refuse_credentials(argv: list[str]) -> None:
    """A URI with user-info (``s3://KEY:SECRET@bucket``) anywhere on the command line is refused before
    anything records the command (see :data:`raystudy.storage.CREDENTIALS_HINT`)."""
    for arg in argv:
        if redact(arg) != arg:
            raise LocationError(f"{redact(arg)}: {CREDENTIALS_HINT}")


def main(argv: list[str] | None = None, default_preset: str = "demo") -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(default_preset).parse_args(argv)
    try:
        refuse_credentials(argv)
        if args.command == "run":
            return cmd_run(args, default_preset)
        if args.command == "search":
            return cmd_search(args, default_preset)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "plan":
            return cmd_plan(args, default_preset)
        if args.command == "advise":
            return cmd_advise(args)
        if args.command == "schema":
            return cmd_schema()
        return cmd_status(args)
    except (
        ConfigError,
        DataError,
        StudyLockedError,
        NothingToRun,
        PretrainingUnlearned,
        LocationError,
        DiskFull,
    ) as err:
        print(f"raystudy: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except StudyIncomplete as err:
        print(f"raystudy: incomplete: {redact(str(err))}", file=sys.stderr)
        return 1
    except StudyInterrupted as err:
        print(f"raystudy: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("raystudy: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
