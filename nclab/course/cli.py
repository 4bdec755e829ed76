"""The command line: ``nclab student``, ``sync``, ``site``, ``train`` and ``grade`` (or ``python -m nclab …``).

nclab student [--notebooks notebooks] [--out student] [--check]
nclab sync [--notebooks notebooks] [--config _config.yml] [--check]
nclab site student [--out _build/student-src] | nclab site check HTML_DIR
nclab train [--profile full] [--regime A] [--regime B] [--method NAME …] [--notebook NN …] [--notebooks notebooks]
    (or ``torchrun --nproc-per-node N -m nclab train …``: N processes, DistributedDataParallel, nclab.distributed)
nclab grade SUBMISSIONS_DIR NOTEBOOK [--out scores.csv] [--timeout 120] [--total-timeout 600] [--only-exercises]
            [--retry-killed] [--unsafe]
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (non-zero on an error, with the reason on stderr)."""
    parser = argparse.ArgumentParser(prog="nclab", description="Course tools of nclab.")
    parser.add_argument("--version", action="version", version=f"nclab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    student = commands.add_parser("student", help="write the student versions of the instructor notebooks")
    student.add_argument("--notebooks", default="notebooks", help="folder of instructor notebooks (default: notebooks)")
    student.add_argument("--out", default="student", help="folder of student versions (default: student)")
    student.add_argument("--check", action="store_true", help="write nothing; fail if OUT is not up to date")

    sync = commands.add_parser(
        "sync", help="rewrite every notebook's Colab badge and install cell from the repository in _config.yml"
    )
    sync.add_argument("--notebooks", default="notebooks", help="folder of instructor notebooks (default: notebooks)")
    sync.add_argument("--config", default="_config.yml", help="the book's config naming the repository")
    sync.add_argument("--check", action="store_true", help="write nothing; fail if a notebook is out of date")

    train = commands.add_parser(
        "train", help="train (resumably) every run the notebooks need, outside the book build, then only load them"
    )
    train.add_argument(
        "--profile", default=None, help="smoke, quick or full (default: $NCLAB_PROFILE, else quick/smoke)"
    )
    train.add_argument(
        "--regime", action="append", choices=["A", "B"], help="train only this regime of notebooks 01-04 (repeatable)"
    )
    train.add_argument(
        "--method",
        action="append",
        choices=["control", "ncfal", "spa", "design"],
        help="run only the notebook of this method: control 05, ncfal 06, spa 07, design 08 (repeatable)",
    )
    train.add_argument("--notebook", action="append", help="run only the notebook numbered NN (repeatable)")
    train.add_argument("--notebooks", default="notebooks", help="folder of the notebooks (default: notebooks)")

    site = commands.add_parser("site", help="stage the student site's source, or check a built site for solutions")
    site.add_argument("action", choices=["student", "check"])
    site.add_argument("html", nargs="?", default="_build/html", help="check: the built site (default: _build/html)")
    site.add_argument("--out", default="_build/student-src", help="student: where to stage the source")

    grade = commands.add_parser("grade", help="execute and grade submitted notebooks, write a CSV")
    grade.add_argument("submissions", help="folder of submissions, one STUDENT_ID.ipynb per student")
    grade.add_argument("notebook", help="the assignment, e.g. 01_train_resnet18_cifar100.ipynb (or its path)")
    grade.add_argument("--out", default="scores.csv", help="CSV to write; the histogram goes beside it as .png")
    grade.add_argument("--timeout", type=float, default=120, help="seconds per cell before it is interrupted")
    grade.add_argument("--total-timeout", type=float, default=600, help="seconds per submission in all")
    grade.add_argument(
        "--only-exercises",
        action="store_true",
        help="run cells up to the last exercise only (faster: skips notebook 01's training)",
    )
    grade.add_argument(
        "--retry-killed",
        action="store_true",
        help="on a resumed run, grade again the submission that was running when the grader was stopped",
    )
    grade.add_argument(
        "--unsafe",
        action="store_true",
        help="grade without the sandbox (when not root): the students' code then runs as you",
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            from .student import stale_student_versions, write_student_versions

            if args.check:
                stale = stale_student_versions(args.notebooks, args.out)
                if stale:
                    print(
                        f"nclab student: {args.out}/ is out of date ({', '.join(stale)}): run `make student`.",
                        file=sys.stderr,
                    )
                    return 1
                print(f"{args.out}/ is up to date.")
            else:
                for path in write_student_versions(args.notebooks, args.out):
                    print(f"wrote {path}")
        elif args.command == "sync":
            from .repository import repository, stale_notebooks, sync_notebooks

            repo = repository(args.config)
            if args.check:
                stale = stale_notebooks(args.notebooks, repo)
                if stale:
                    print(
                        f"nclab sync: {', '.join(stale)} disagree with {args.config}: run `make student`.",
                        file=sys.stderr,
                    )
                    return 1
                print(f"every notebook's badge and install cell follow {repo.slug}@{repo.branch}.")
            else:
                changed = sync_notebooks(args.notebooks, repo) or ["nothing (all up to date)"]
                print(f"{repo.slug}@{repo.branch}: updated {', '.join(changed)}")
        elif args.command == "train":
            return _train(args)
        elif args.command == "site":
            return _site(args)
        else:
            from .grading import grade as grade_all

            grade_all(
                args.submissions,
                args.notebook,
                args.out,
                timeout=args.timeout,
                total_timeout=args.total_timeout,
                only_exercises=args.only_exercises,
                retry_killed=args.retry_killed,
                unsafe=args.unsafe,
            )
    except (ValueError, OSError, RuntimeError) as error:  # SolutionLeak is a ValueError: it names the notebook and cell
        print(f"nclab {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _site(args) -> int:
    """``nclab site student``: execute the notebooks and stage the student site; ``check``: no solution in HTML."""
    from .site import solution_leaks, stage_student_site

    if args.action == "student":
        print(f"student site staged in {stage_student_site('.', args.out)}")
        return 0
    leaks = solution_leaks(args.html)
    if leaks:
        print("nclab site check: solutions on the student site:\n  " + "\n  ".join(leaks), file=sys.stderr)
        return 1
    print(f"{args.html}: no solution block on any page.")
    return 0


def _train(args) -> int:
    """``nclab train``: the regimes asked for, trained directly; else the chosen (or all) notebooks run headless.

    Under ``torchrun`` every process runs this; the runs are trained with DistributedDataParallel (see
    ``nclab.distributed``) and only rank 0 prints."""
    from .. import distributed
    from ..config import cache_dir, describe, get_profile

    say = distributed.say
    profile = get_profile(args.profile)
    say(describe(profile) + (f" | {os.environ['WORLD_SIZE']} processes (torchrun)" if distributed.launched() else ""))
    if args.regime:
        from .. import train

        train_set, test_set = train.regime_data(profile)
        for name in dict.fromkeys(args.regime):
            run = train.load_or_train(train.regime(name, profile), train_set, test_set)
            say(f"regime {name}: {run.final['epoch']} epochs in {run.run_dir}")
        return 0
    from .prepare import METHOD_NOTEBOOKS, prepare, select_notebooks

    numbers = [METHOD_NOTEBOOKS[method] for method in args.method or []] + (args.notebook or [])
    times = prepare(select_notebooks(args.notebooks, numbers), profile.name, progress=distributed.is_main())
    for name, seconds in times:
        say(f"{name}: {seconds:.0f} s")
    say(f"every run is in {cache_dir()}: NCLAB_PROFILE={profile.name} make book now only loads them.")
    return 0
