"""The command line (or ``python -m nclab …``): ``student``, ``sync``, ``site``, ``release``, ``train``, ``runs``,
``grade``, ``gradebook``.

nclab student [--notebooks notebooks] [--out student] [--check]
nclab sync [--notebooks notebooks] [--config _config.yml] [--check]
nclab site student [--out _build/student-src] | nclab site check HTML_DIR
nclab release [--out _build/release] [--config _config.yml]
nclab train [--profile full] [--regime A] [--regime B] [--method NAME …] [--notebook NN …] [--notebooks notebooks]
    (or ``torchrun --nproc-per-node N -m nclab train …``: N processes, DistributedDataParallel, nclab.distributed)
nclab runs pack --out DIR [--profile full] [--notebook NN …] [--method NAME …] [--features] [--notebooks notebooks]
nclab grade SUBMISSIONS_DIR NOTEBOOK [--out scores.csv] [--timeout 120] [--total-timeout 600] [--only-exercises]
            [--retry-killed] [--unsafe] [--allow-reference] [--memory 6] [--no-warm]
nclab gradebook SCORES_CSV [--lms plain|canvas|moodle] [--out gradebook.csv] [--assignment NAME] [--id-column C]
            [--partial]
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
    _notebook_options(train, "run only the notebook numbered NN", "run only the notebook of this method")

    runs = commands.add_parser("runs", help="pack the trained runs of a profile for the students to download")
    runs.add_argument("action", choices=["pack"])
    runs.add_argument("--out", required=True, help="the pack's folder: one <sha256>.tar per run and manifest.json")
    runs.add_argument(
        "--profile", default=None, help="smoke, quick or full (default: $NCLAB_PROFILE, else quick/smoke)"
    )
    _notebook_options(
        runs, "only the runs notebook NN loads (it is run headless)", "only the runs of this method's notebook"
    )
    runs.add_argument("--features", action="store_true", help="include each run's cached features")

    site = commands.add_parser("site", help="stage the student site's source, or check a built site for solutions")
    site.add_argument("action", choices=["student", "check"])
    site.add_argument("html", nargs="?", default="_build/html", help="check: the built site (default: _build/html)")
    site.add_argument("--out", default="_build/student-src", help="student: where to stage the source")

    release = commands.add_parser("release", help="write the repository the students get: no solution, no answer")
    release.add_argument("--out", default="_build/release", help="where to write it (default: _build/release)")
    release.add_argument("--config", default="_config.yml", help="the book's config naming the students' repository")

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
    grade.add_argument(
        "--allow-reference",
        action="store_true",
        help="keep the points of an answer that reaches nclab's own implementation (still in reaches_key)",
    )
    grade.add_argument(
        "--memory",
        type=float,
        default=6,
        help="GiB one submission may hold in all: its kernel, processes, tmpfs and the grader's reading (default 6)",
    )
    grade.add_argument(
        "--no-warm",
        action="store_true",
        help="do not run the instructor's notebook once first to put the runs it trains in the cache",
    )

    gradebook = commands.add_parser(
        "gradebook", help="merge the hand points typed into a grader's CSV, and export it for Canvas or Moodle"
    )
    gradebook.add_argument("scores", help="the CSV written by nclab grade, its hand-graded *_points filled in")
    gradebook.add_argument("--lms", choices=["plain", "canvas", "moodle"], default="plain", help="(default plain)")
    gradebook.add_argument("--out", default="gradebook.csv", help="CSV to write (default gradebook.csv)")
    gradebook.add_argument("--assignment", help="the grade column's name in the LMS (default: nclab)")
    gradebook.add_argument(
        "--id-column", help="the column that carries the student id (Canvas: SIS User ID, Moodle: ID number)"
    )
    gradebook.add_argument("--partial", action="store_true", help="count an empty hand grade as 0 (and say which)")

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
            from .repository import repository, run_pack, stale_notebooks, sync_notebooks

            repo, pack = repository(args.config), run_pack(args.config)
            if args.check:
                stale = stale_notebooks(args.notebooks, repo, pack)
                if stale:
                    print(
                        f"nclab sync: {', '.join(stale)} disagree with {args.config}: run `make student`.",
                        file=sys.stderr,
                    )
                    return 1
                pack_note = f" and the run pack at {pack.url}" if pack.url else ""
                print(f"every notebook's badge and install cell follow {repo.slug}@{repo.branch}{pack_note}.")
            else:
                changed = sync_notebooks(args.notebooks, repo, pack) or ["nothing (all up to date)"]
                print(f"{repo.slug}@{repo.branch}: updated {', '.join(changed)}")
        elif args.command == "train":
            return _train(args)
        elif args.command == "runs":
            return _runs(args)
        elif args.command == "site":
            return _site(args)
        elif args.command == "release":
            return _release(args)
        elif args.command == "gradebook":
            return _gradebook(args)
        else:
            from .grading import grade as grade_all
            from .grading.cgroup import Bound

            grade_all(
                args.submissions,
                args.notebook,
                args.out,
                timeout=args.timeout,
                total_timeout=args.total_timeout,
                only_exercises=args.only_exercises,
                retry_killed=args.retry_killed,
                unsafe=args.unsafe,
                allow_reference=args.allow_reference,
                bound=Bound(memory_bytes=int(args.memory * 2**30)),
                warm=not args.no_warm,
            )
    except (ValueError, OSError, RuntimeError) as error:  # SolutionLeak is a ValueError: it names the notebook and cell
        print(f"nclab {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _release(args) -> int:
    """``nclab release``: the students' repository, from the course whose config is ``--config``, into ``--out``."""
    from pathlib import Path

    from .release import write_release
    from .repository import student_repository

    out = write_release(Path(args.config).parent, args.out, args.config)
    repo = student_repository(args.config)
    print(f"release written to {out}: push it to https://github.com/{repo.slug} (branch {repo.branch}).")
    return 0


def _notebook_options(parser: argparse.ArgumentParser, notebook: str, method: str) -> None:
    """--notebook, --method and --notebooks: which of the course's notebooks a command runs (``nclab train``,
    ``nclab runs pack``); the methods are those of ``prepare.METHOD_NOTEBOOKS`` (not imported here: torch)."""
    parser.add_argument("--notebook", action="append", help=f"{notebook} (repeatable)")
    parser.add_argument(
        "--method",
        action="append",
        choices=["control", "ncfal", "spa", "design"],
        help=f"{method}: control 05, ncfal 06, spa 07, design 08 (repeatable)",
    )
    parser.add_argument("--notebooks", default="notebooks", help="folder of the notebooks (default: notebooks)")


def _gradebook(args) -> int:
    """``nclab gradebook``: hand and automatic points in one total per student, as an LMS imports them."""
    from .grading.gradebook import write_gradebook

    options = dict(lms=args.lms, assignment=args.assignment, id_column=args.id_column, partial=args.partial)
    missing = write_gradebook(args.scores, args.out, **options)
    if missing:
        print(f"WARNING: {len(missing)} empty hand grades counted as 0: {'; '.join(missing)}", file=sys.stderr)
    print(f"wrote {args.out} ({args.lms}): hand and automatic points of {args.scores}, one total per student")
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


def _runs(args) -> int:
    """``nclab runs pack``: the finished runs of a profile in the cache, or those that the chosen notebooks
    load (each run headless, loading only), written as a run pack (``nclab.train.packs``)."""
    from ..config import cache_dir, get_profile, in_cache
    from ..train import packs
    from .prepare import METHOD_NOTEBOOKS, prepare, select_notebooks

    profile = get_profile(args.profile)
    numbers = [METHOD_NOTEBOOKS[method] for method in args.method or []] + (args.notebook or [])
    if numbers:
        with packs.recording() as used:
            prepare(select_notebooks(args.notebooks, numbers), profile.name)
        run_dirs = [cache_dir() / "runs" / name for name in used]
    else:
        run_dirs, unlabelled = packs.runs_of_profile(profile.name)
        if unlabelled:
            print(
                f"note: {len(unlabelled)} run folder(s) in {in_cache(cache_dir() / 'runs')} have no run.json (trained "
                f"by an older nclab) and are left out; `nclab runs pack --notebook NN …` packs the runs that "
                f"notebooks load, old ones included."
            )
    manifest = packs.pack_runs(run_dirs, args.out, profile.name, features=args.features)
    size = sum(entry["size"] for entry in manifest["runs"].values())
    print(
        f"{args.out}: {len(manifest['runs'])} {profile.name} runs ({size / 1e9:.2f} GB) and manifest.json. Publish "
        f"every file there (e.g. `gh release create runs-{profile.name} {args.out}/*`) and set nclab.runs.url in "
        f"_config.yml to the address of those files."
    )
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

        os.environ["NCLAB_PROFILE"] = profile.name  # what each run's run.json records (nclab runs pack reads it)
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
