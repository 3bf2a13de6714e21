"""The `nli-eval` command: run, tasks. Errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Sequence

from . import __version__, interrupts
from .errors import ConfigError, NliEvalError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _shots(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 0,1,5, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("shots must be 0 or more, e.g. 0,1,5")
    return values


def _batch(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("batch size must be at least 1")
    return value


def _pairs(text: str, what: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"--{what} expects NAME=VALUE pairs separated by commas, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, like every other error
        print(f"nli-eval: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nli-eval", description="Evaluate language models on adversarial NLI.")
    parser.add_argument("--version", action="version", version=f"nli-eval {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    run = sub.add_parser("run", help="evaluate models on NLI tasks",
                         description="Evaluate one or more models (Hub ids or folders) on NLI tasks.")
    run.add_argument("models", nargs="*", metavar="MODEL", help="Hub ids, checkpoint folders, or smollm2-135m")
    run.add_argument("--models", dest="models_file", metavar="FILE", help="a file with one model per line")
    run.add_argument("--tasks", default="anli", help="comma-separated tasks or aggregates (default: anli)")
    run.add_argument("--split", help="split to evaluate, e.g. dev or test (default: the task's)")
    run.add_argument("--data-dir", help="read built-in tasks from DIR/<family>/<split>.jsonl instead of the Hub")
    run.add_argument("--data-files", help="evaluate your own file(s) (jsonl, json, csv, tsv, parquet)")
    run.add_argument("--fields", help="column map for --data-files, e.g. premise=sentence1,hypothesis=sentence2")
    run.add_argument("--labels", help="label map for --data-files, e.g. 0=entailment,1=neutral,2=contradiction")
    run.add_argument("--task-file", action="append", default=[], help="a task TOML file (repeatable)")
    run.add_argument("--template", help="prompt template: harness (default), gpt3, harness_2way, gpt3_2way, ...")
    run.add_argument("--shots", type=_shots, default=(0,), help="few-shot settings, e.g. 0,1,5 (default: 0)")
    run.add_argument("--fewshot-sampling", default="per-example", choices=("per-example", "fixed", "balanced"))
    run.add_argument("--seed", type=int, default=1234)
    run.add_argument("--limit", type=int, help="evaluate a seeded, label-stratified sample of N examples")
    run.add_argument("--backend", default="auto", choices=("auto", "causal", "classifier", "seq2seq"))
    run.add_argument("--via-transformers", action="store_true",
                     help="run a Llama or Qwen2 checkpoint through transformers even in float32 on a CPU, "
                          "where nli-eval's own forward (the same scores, 2-3 s less start-up) is the default")
    run.add_argument("--label-map", help="classifier label names, e.g. LABEL_0=entailment,LABEL_1=neutral,...")
    run.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--device-map", help="'auto' spreads a large model over the visible GPUs")
    run.add_argument("--batch-size", type=_batch, default="auto",
                     help="prompts per forward pass, or auto; on a CPU prompts are packed end to end, "
                          "as many tokens a pass as N prompts of the median length")
    run.add_argument("--max-length", type=int, help="override the model's context length")
    run.add_argument("--revision", help="model revision (branch, tag or commit) on the Hub")
    run.add_argument("--gguf-file", help="load this GGUF file of the model (needs the gguf package)")
    run.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    run.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt weights (pickle can run code)")
    run.add_argument("--output-dir", "-o", help="write results.json and samples/ here")
    run.add_argument("--cache-dir", help="resumable per-example cache (default: OUTPUT_DIR/cache)")
    run.add_argument("--no-report", action="store_true", help="skip the plots written after a sweep")
    run.add_argument("--strict", action="store_true", help="turn warnings (cut prompts, dropped rows) into errors")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    report = sub.add_parser("report", help="plots, tables and trends from results files",
                            description="Accuracy against parameter count, with chance lines, intervals and trends.")
    report.add_argument("results", nargs="+", metavar="RESULTS.json")
    report.add_argument("--out", default="report", help="output folder (default: report)")
    report.add_argument("--target", type=float, action="append", default=[],
                        help="accuracy (0-1) whose required parameter count the trend extrapolates; repeatable")

    tasks = sub.add_parser("tasks", help="list the tasks", description="List built-in tasks.")
    tasks.add_argument("--details", metavar="NAME", help="everything about one task: source, fields, labels, citation")
    tasks.add_argument("--task-file", action="append", default=[], help="also list tasks from this TOML file")
    return parser


def main(argv: Sequence[str] | None = None, owns_process: bool = False) -> int:
    """Run one command; `owns_process` when this process is the command's own (see `entry`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        with interrupts.latched():
            return _dispatch(parser, args, owns_process)
    except NliEvalError as exc:
        print(f"nli-eval: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("nli-eval: interrupted; finished examples are cached, rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, MemoryError) as exc:
        from .backends.base import is_out_of_memory
        if not is_out_of_memory(exc):
            raise
        # Scoring halves its batch on running out of memory; this is what still failed after that.
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        print(f"nli-eval: error: out of memory ({detail}); finished examples are cached; try --batch-size 1, "
              "--dtype bfloat16, a smaller --max-length, --device-map auto, or a device with more memory",
              file=sys.stderr)
        return EXIT_ERROR


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, owns_process: bool) -> int:
    if args.command == "run":
        return cmd_run(args, owns_process)
    if args.command == "tasks":
        return cmd_tasks(args)
    if args.command == "report":
        from .report import cli_report
        return cli_report(args)
    parser.print_help()
    return EXIT_ERROR


def entry() -> None:
    """The `nli-eval` command and `python -m nli_eval`: `main`, then a quick exit.

    Every result is written and synced before `main` returns. Tearing down torch's and transformers'
    modules afterwards takes about a second and does nothing for the user, so after the exit handlers
    have run (they remove temporary folders), the process ends at once. Distributed runs leave the
    usual way, so torch.distributed can shut down. Owning its process, a run may also exempt the
    frameworks' objects from Python's garbage collector (`modeling.import_frameworks`).
    """
    code = main(owns_process=True)
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader has gone
            pass
    os._exit(code)


def _models(args: argparse.Namespace) -> tuple[str, ...]:
    models = list(args.models)
    if args.models_file:
        try:
            with open(args.models_file, encoding="utf-8") as fh:
                models += [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ConfigError(f"--models {args.models_file}: cannot read ({exc.strerror})") from None
    if not models:
        raise ConfigError("no model given; pass a Hub id, a checkpoint folder, or smollm2-135m")
    return tuple(dict.fromkeys(models))


def cmd_run(args: argparse.Namespace, owns_process: bool = False) -> int:
    from .backends.loader import BackendOptions
    from .labels import label_from_name
    from .modeling import LoadOptions
    from .runner import RunConfig

    label_map = None
    if args.label_map:
        label_map = {k: label_from_name(v) for k, v in _pairs(args.label_map, "label-map").items()}
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    task_files = list(args.task_file)
    if args.data_files:
        from .custom import custom_task_file
        path = custom_task_file(args.data_files, _pairs(args.fields or "", "fields"),
                                _pairs(args.labels or "", "labels"))
        task_files.append(path)
        tasks = ("custom",) if args.tasks == "anli" else tasks
    elif args.fields or args.labels:
        raise ConfigError("--fields and --labels apply to --data-files")
    config = RunConfig(
        models=_models(args), tasks=tasks, shots=args.shots, split=args.split, data_dir=args.data_dir,
        template=args.template, sampling=args.fewshot_sampling, seed=args.seed, limit=args.limit,
        output_dir=args.output_dir, cache_dir=args.cache_dir, task_files=tuple(task_files),
        load=LoadOptions(dtype=args.dtype, device=args.device, device_map=args.device_map, revision=args.revision,
                         gguf_file=args.gguf_file, trust_remote_code=args.trust_remote_code,
                         allow_pickle=args.allow_pickle),
        backend=BackendOptions(kind=args.backend, batch_size=args.batch_size, max_length=args.max_length,
                               label_map=label_map, native=not args.via_transformers),
        strict=args.strict, progress=False if args.no_progress else None,
    )
    return execute(config, report=not args.no_report, owns_process=owns_process)


def execute(config: "object", report: bool = True, owns_process: bool = False) -> int:
    from .fsutil import directory_lock, remove_stale_temps
    from .runner import Runner

    runner = Runner(config, log=lambda m: print(f"nli-eval: {m}", file=sys.stderr),  # type: ignore[arg-type]
                    owns_process=owns_process)
    try:
        if config.output_dir and runner.ranks.is_main:  # type: ignore[attr-defined]
            from pathlib import Path
            out = Path(config.output_dir)  # type: ignore[attr-defined]
            # Held until the report is written too: two runs never write one output directory at once.
            with directory_lock(out):
                remove_stale_temps(out, "samples", "report")  # left by a run killed mid-write
                return _finish(runner, runner.run(), config, report)
        return _finish(runner, runner.run(), config, report)
    finally:
        runner.ranks.close()  # type: ignore[attr-defined]


def _finish(runner: "object", record: "object", config: "object", report: bool) -> int:
    from .console import results_table

    if not runner.ranks.is_main:  # type: ignore[attr-defined]
        return 0
    print(results_table(record))  # type: ignore[arg-type]
    if config.output_dir:  # type: ignore[attr-defined]
        print(f"\nresults: {os.path.join(config.output_dir, 'results.json')}")  # type: ignore[attr-defined]
        if report and len(record.models) > 1:  # type: ignore[attr-defined]
            _auto_report(config.output_dir)  # type: ignore[attr-defined]
    return 0


def _auto_report(output_dir: str) -> None:
    try:
        from .report import build_report  # the reporter is optional at this point of a sweep
    except ImportError:
        return
    path = os.path.join(output_dir, "results.json")
    out = build_report([path], os.path.join(output_dir, "report"))
    print(f"report: {out}")


def cmd_tasks(args: argparse.Namespace) -> int:
    from .console import table
    from .taskspec import catalog_with

    catalog = catalog_with(list(args.task_file))
    if args.details:
        print(describe_task(catalog, args.details))
        return 0
    rows = []
    for name in sorted(catalog.tasks):
        t = catalog.tasks[name]
        splits = ", ".join(f"{k}={t.splits[k]}" + (f" ({t.sizes[t.splits[k]]})" if t.splits[k] in t.sizes else "")
                           for k in t.splits)
        source = "generated offline" if t.generator else (t.hub.path if t.hub else "(local files)")
        rows.append([name, t.label_space.value, source, splits])
    for name in sorted(catalog.aggregates):
        a = catalog.aggregates[name]
        rows.append([name, "aggregate", "", " + ".join(a.tasks)])
    # On a terminal long split lists wrap; piped, each task stays on one line for grep and the like.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(table(["task", "labels", "source", "splits (size)"], rows, width=width))
    return 0


def describe_task(catalog: "object", name: str) -> str:
    cat = catalog  # type: ignore[assignment]
    if name in cat.aggregates:  # type: ignore[attr-defined]
        a = cat.aggregates[name]  # type: ignore[attr-defined]
        return f"{a.name}: aggregate of {', '.join(a.tasks)}\n{a.description}"
    t = cat.get(name)  # type: ignore[attr-defined]
    lines = [f"{t.name} ({t.family}, {t.label_space.value})", t.description, ""]
    if t.hub:
        hub = t.hub.path + (f" config={t.hub.name}" if t.hub.name else "") + (f" revision={t.hub.revision}" if t.hub.revision else "")
        lines.append(f"Hub: {hub}")
    lines.append("splits: " + ", ".join(f"{k} -> {v}" for k, v in t.splits.items())
                 + f" (default {t.default_split}; shots from {t.fewshot_split or 'the evaluated split'})")
    f = t.fields
    lines.append(f"fields: premise={f.premise}, hypothesis={f.hypothesis}, label={f.label}, id={f.id or '(row number)'}")
    lines.append("labels: " + (", ".join(f"{k}={v.value}" for k, v in t.labels.items()) or "by name"))
    if t.drop_labels:
        lines.append(f"dropped label values: {', '.join(t.drop_labels)}")
    if t.breakdown:
        lines.append(f"breakdown by: {', '.join(t.breakdown)}")
    if t.generator:
        lines.append(f"rows: generated offline by the project ({t.generator}); no files needed")
    else:
        lines.append(f"local files (--data-dir DIR): DIR/{t.family}/<split>.jsonl|json|parquet|csv (Hub layout)")
    for lay in t.layouts:
        lines.append(f"  or DIR/{lay.path}  [{lay.name}: premise={lay.fields.premise}, hypothesis={lay.fields.hypothesis}, "
                     f"label={lay.fields.label} ({', '.join(f'{k}={v.value}' for k, v in lay.labels.items()) or 'by name'})]")
    if t.notes:
        lines.append(f"notes: {t.notes}")
    lines.append(f"license: {t.license or 'see the source'}")
    if t.homepage:
        lines.append(f"homepage: {t.homepage}")
    if t.citation:
        lines += ["citation:", t.citation]
    lines.append(f"task file: {t.source}")
    return "\n".join(lines)
