"""Building many platforms at once (``build --all -j N``): worker processes, one shared cache.

The cache is safe to share: blobs, indexes and unpacked trees are written to temporary names
and renamed into place, so concurrent builds never see half a file, and two builds that
fetch the same package both end with the same content. Each platform's failure is caught
and reported; the others go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from builder.build import BuildOptions, build_platform, make_resolver
from builder.components.cache import Cache
from builder.errors import BuildError, RecipeError
from builder.preflight import check_files, check_packages
from builder.progress import plain_step
from builder.recipe.load import load_recipe
from builder.recipe.search import RecipePath
from builder.result import BuildResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One platform to build: its recipe file, how to build it, and the shared cache's place."""

    recipe_file: Path
    options: BuildOptions
    cache_root: Path | None
    offline: bool
    debug: bool = False
    search: RecipePath = field(default_factory=RecipePath)  # where ``extends`` by name looks


@dataclass(frozen=True)
class Outcome:
    """How one platform's build ended: a result, or an error message and exit code."""

    recipe_file: Path
    platform: str
    seconds: float
    result: BuildResult | None = None
    error: str | None = None
    exit_code: int = 0

    @property
    def failed(self) -> bool:
        """True when the platform did not build."""
        return self.result is None


def build_job(job: Job) -> Outcome:
    """Build one platform; every error becomes a failed Outcome (runs in a worker process)."""
    start = time.monotonic()
    platform = job.recipe_file.stem
    try:
        recipe, merged = load_recipe(job.recipe_file, job.search)
        platform = recipe.platform_string
        cache = Cache(job.cache_root, offline=job.offline)
        # Every check before any work (builder.preflight): files first, then packages,
        # through the resolver the build then uses (the index read once).
        if problems := check_files(recipe, merged):
            raise RecipeError(problems)
        resolver = make_resolver(recipe, job.recipe_file, job.options, cache)
        if problems := check_packages(resolver, merged):
            raise RecipeError(problems)
        result = build_platform(recipe, merged.files, job.options, cache,
                                step=plain_step, resolver=resolver)
        return Outcome(job.recipe_file, platform, time.monotonic() - start, result=result)
    except BuildError as exc:
        return Outcome(job.recipe_file, platform, time.monotonic() - start,
                       error=exc.message, exit_code=exc.exit_code)
    except Exception as exc:  # a bug must not stop the other platforms either
        detail = traceback.format_exc() if job.debug else f"{type(exc).__name__}: {exc}"
        return Outcome(job.recipe_file, platform, time.monotonic() - start,
                       error=f"internal error: {detail}", exit_code=1)


def _init_worker(level: int) -> None:
    logging.basicConfig(level=max(level, logging.INFO), format="%(message)s", force=True)
    logging.getLogger("builder").setLevel(level)  # as the CLI does: DEBUG for ours only


def build_many(jobs: list[Job], workers: int,
               done: Callable[[Outcome], None] = lambda _: None) -> list[Outcome]:
    """Build every job, ``workers`` at a time (1: in this process); outcomes in job order."""
    if workers <= 1 or len(jobs) <= 1:
        serial = []
        for job in jobs:
            serial.append(build_job(job))
            done(serial[-1])
        return serial
    level = logging.getLogger("builder").getEffectiveLevel()
    # fork: the workers inherit the loaded modules; nothing of ours runs threads at this point.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker, initargs=(level,)) as pool:
        futures: dict[Future[Outcome], int] = {pool.submit(build_job, job): i
                                               for i, job in enumerate(jobs)}
        outcomes: dict[int, Outcome] = {}
        for future in as_completed(futures):  # report each platform as it finishes
            index = futures[future]
            outcomes[index] = collect(jobs[index], future)
            done(outcomes[index])
    return [outcomes[i] for i in range(len(jobs))]


def collect(job: Job, future: Future[Outcome]) -> Outcome:
    """The worker's outcome; a worker that died (killed, out of memory) is a failure too."""
    try:
        return future.result()
    except Exception as exc:
        return Outcome(job.recipe_file, job.recipe_file.stem, 0.0,
                       error=f"the build worker died: {type(exc).__name__}: {exc}", exit_code=1)


def render_summary(outcomes: list[Outcome], wall: float) -> str:
    """The table printed after ``build --all``: one row per platform, then the totals."""
    rows = [("platform", "result", "seconds", "outputs", "size MB")]
    for o in outcomes:
        if o.result is not None:
            state = "up to date" if o.result.skipped else "built"
            size = sum(int(v.get("size", 0)) for v in o.result.outputs.values())
            rows.append((o.platform, state, f"{o.seconds:.1f}", str(len(o.result.outputs)),
                         f"{size / 1e6:.1f}"))
        else:
            rows.append((o.platform, "FAILED", f"{o.seconds:.1f}", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    failed = [o for o in outcomes if o.failed]
    lines.append(f"{len(outcomes) - len(failed)} of {len(outcomes)} platforms built "
                 f"in {wall:.1f} s" + (f"; {len(failed)} failed:" if failed else ""))
    for o in failed:
        first, *rest = (o.error or "").splitlines() or [""]
        lines.append(f"  {o.platform}: {first}")
        lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines)
