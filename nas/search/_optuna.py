"""Optuna-backed strategies: TPE (single objective, constrained), NSGA-II
(accuracy vs predicted latency, constrained), and aging evolution as an
Optuna sampler, so that evolution (and random search) too can share one
study between workers.

Each position of the architecture is one categorical parameter. With
``storage`` the study is persistent: rerunning continues it, and several
processes (on several machines, with PostgreSQL) can share it. Storage URLs
(:func:`open_storage`):

- ``sqlite:///study.db``: a file on this machine;
- ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE``: a server that
  workers on several machines share;
- ``journal:///shared/study.log``: Optuna's journal file, for a shared file
  system without a database server.

Every running trial records a heartbeat (on a database, Optuna's own; on a
journal file, :class:`HeartbeatJournalStorage`'s, written into the journal);
a worker killed mid-trial has its trial marked failed after ``3 x
heartbeat_s`` and the trial, with the parameters it had drawn, is run again
by a worker that is still alive.
Every worker stops when the study holds ``num_evaluations`` finished trials,
so the study's budget is the same whether one worker or ten run it.
"""

from __future__ import annotations

import abc
import os
import random
import re
import socket
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the hook Optuna's heartbeat machinery calls
from optuna.storages.journal._file import BaseJournalFileLock  # the lock interface the file backend takes

from nas.errors import UserInputError
from nas.search.base import (Candidate, ProgressCallback, SearchProblem, SearchResult, SearchStrategy,
                             check_positive)

#: the storage URLs :func:`open_storage` accepts, for messages
STORAGE_FORMS = ("sqlite:///study.db (a file here), postgresql+psycopg://USER@HOST:5432/DATABASE "
                 "(shared by several machines), journal:///shared/study.log (a journal file on a shared "
                 "file system)")
#: seconds between a running trial's heartbeats
HEARTBEAT_S = 10
#: the journal trial attribute holding a running trial's latest heartbeat (seconds since the epoch)
JOURNAL_HEARTBEAT_ATTR = "nas:heartbeat"
#: a killed worker's trial is retried at most this many times
MAX_RETRIES = 3
#: tries at opening a database storage (workers started together race to create a new one's tables)
_OPEN_ATTEMPTS = 3
_SQLITE_HEADER = b"SQLite format 3\x00"
_FINISHED = optuna.trial.TrialState.COMPLETE
_PENDING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def open_storage(url: str, *, heartbeat_s: int | None = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    """The Optuna storage named by ``url`` (see the module docstring), checked.

    A malformed URL, a location that cannot be written, a file that is not a
    study database, or a server that cannot be reached is a
    :class:`UserInputError` saying which and what to do.
    ``heartbeat_s``: seconds between heartbeats of a running trial; ``None``
    turns the heartbeat off.
    """
    text = str(url).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if text.lower().startswith("journal:"):
        return _journal_storage(text, text[len("journal:"):], heartbeat_s)
    if not scheme:
        looks_like_path = "/" in text or os.sep in text or Path(text).suffix in (".db", ".sqlite", ".sqlite3")
        hint = (f"for a SQLite file there, write sqlite:///{text}" if looks_like_path and " " not in text
                else "write one of the forms below")
        raise UserInputError(f"--storage {text!r} is not a storage URL; {hint}. Allowed: {STORAGE_FORMS}")
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        _check_sqlite_url(text)
    elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        text = "postgresql+psycopg://" + text.split("://", 1)[1]  # the driver this package installs
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        _check_postgresql_url(text)
    else:
        raise UserInputError(f"--storage {text!r}: unknown kind {scheme!r}. Allowed: {STORAGE_FORMS}")
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                heartbeat = {} if heartbeat_s is None else dict(
                    heartbeat_interval=int(heartbeat_s), grace_period=3 * int(heartbeat_s),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRIES))
                return optuna.storages.RDBStorage(text, engine_kwargs=engine_kwargs, **heartbeat)
        except ImportError as error:
            raise UserInputError(f"--storage {text!r} needs a database driver that is not installed ({error}); "
                                 f"pip install 'psycopg[binary]'") from None
        except Exception as error:  # SQLAlchemy's and the drivers' errors have no common base worth naming
            # Workers started together on a new database race to create its tables; the losers find them
            # made on a second look.
            if attempt + 1 == _OPEN_ATTEMPTS or not _creation_race(error):
                raise UserInputError(_unreachable_message(text, scheme, error)) from None
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _creation_race(error: Exception) -> bool:
    """Whether ``error`` is another process creating the same study tables at the same moment."""
    message = str(error).lower()
    return any(sign in message for sign in ("unique constraint", "duplicate key", "already exists",
                                            "database is locked"))


def _check_sqlite_url(text: str) -> None:
    rest = text.split("://", 1)[1]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        example = f"sqlite:///{rest}" if rest and rest != ":memory:" else "sqlite:///study.db"
        raise UserInputError(f"--storage {text!r} names no file: a SQLite URL has three slashes before a "
                             f"relative path and four before an absolute one, e.g. {example}")
    path = Path(rest[1:].split("?", 1)[0]).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"--storage {text!r}: folder {str(parent)!r} does not exist; create it or pick "
                             f"another path")
    if path.exists():
        if not path.is_file():
            raise UserInputError(f"--storage {text!r}: {str(path)!r} is not a file")
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise UserInputError(f"--storage {text!r}: {str(path)!r} is not a SQLite database; pass a new file "
                                 f"name (the study is created there) or an existing study database")
        if head:
            tables = _sqlite_tables(path)
            if tables and "studies" not in tables:
                raise UserInputError(f"--storage {text!r}: {str(path)!r} is a SQLite database of something else "
                                     f"(tables: {', '.join(sorted(tables)[:5])}), not of Optuna studies; pass "
                                     f"another file name")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise UserInputError(f"--storage {text!r}: {str(path if path.exists() else parent)!r} is not writable; "
                             f"pick another path")


def _sqlite_tables(path: Path) -> set[str]:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise UserInputError(f"--storage: {str(path)!r} cannot be read as a SQLite database ({error}); pass "
                             f"another file name") from None


def _check_postgresql_url(text: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError) as error:
        raise UserInputError(f"--storage {text!r} is malformed ({error}). Allowed: {STORAGE_FORMS}") from None
    if not parsed.database:
        raise UserInputError(f"--storage {text!r} names no database: add /DATABASE at the end, e.g. "
                             f"postgresql+psycopg://nas@localhost:5432/nas")


def _unreachable_message(text: str, scheme: str, error: Exception) -> str:
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if scheme == "sqlite":
        return f"--storage {text!r} cannot be opened as a study database ({reason}); pass another file name"
    shown = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", text)  # never print a password
    return (f"--storage {shown}: cannot reach or use the PostgreSQL database ({reason}). Start a server "
            f"(e.g. 'initdb -D DIR && pg_ctl -D DIR -o \"-p 5432\" start', then 'createdb DATABASE') or check "
            f"the host, port, user and database of the URL")


def _journal_storage(text: str, rest: str, heartbeat_s: int | None) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(rest[2:] if rest.startswith("//") else rest).expanduser()
    if not rest or not path.name:
        raise UserInputError(f"--storage {text!r} names no file; e.g. journal:///shared/study.log")
    if not path.parent.is_dir():
        raise UserInputError(f"--storage {text!r}: folder {str(path.parent)!r} does not exist; create it or pick "
                             f"another path")
    if path.exists():
        with path.open("rb") as handle:
            head = handle.read(1)
        if head and head != b"{":
            raise UserInputError(f"--storage {text!r}: {str(path)!r} is not an Optuna journal; pass a new file "
                                 f"name or an existing journal")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UserInputError(f"--storage {text!r}: {str(path)!r} is not writable; pick another path")
    try:
        backend = JournalFileBackend(str(path), lock_obj=JournalKernelLock(str(path)))
        if heartbeat_s is None:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(backend, heartbeat_s=heartbeat_s)
    except Exception as error:  # the journal raises its own and OS errors
        raise UserInputError(f"--storage {text!r} cannot be opened as an Optuna journal ({error}); pass "
                             f"another file name") from None


class JournalKernelLock(BaseJournalFileLock):
    """The journal's write lock, held with ``flock`` on ``JOURNAL.flock``.

    Optuna's own journal locks are files that a worker creates and deletes;
    a worker killed while holding one leaves it behind and every other
    worker waits 30 s before breaking it, long enough for their running
    trials to miss their heartbeats and be failed. The kernel releases a
    ``flock`` the moment its holder dies. (On NFS, Linux maps it to a POSIX
    lock.) Every process writing the journal must use this lock, which all
    of this package's do.
    """

    def __init__(self, journal_path: str):
        self._path = journal_path + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the lock


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat its databases have.

    A running trial's worker appends its heartbeat (wall-clock seconds) to
    the journal every ``heartbeat_s`` as the trial attribute
    :data:`JOURNAL_HEARTBEAT_ATTR`; a running trial whose latest heartbeat
    (or, before the first, its start) is older than ``3 x heartbeat_s`` is
    stale: Optuna's :func:`optuna.storages.fail_stale_trials`, which every
    worker runs before each trial, marks it failed and queues a copy with
    its parameters (at most :data:`MAX_RETRIES` times). The journal orders
    the workers' writes, so when two workers find the same stale trial, only
    the first failure counts and the trial is queued once. Workers sharing a
    journal on several machines need clocks that agree to well within the
    grace period (NTP does).
    """

    def __init__(self, backend, *, heartbeat_s: int = HEARTBEAT_S, max_retry: int | None = MAX_RETRIES):
        super().__init__(backend)
        self._heartbeat_s = int(heartbeat_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._stale_trial_callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # the trial ended (or was failed as stale by another worker): nothing left to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        oldest = time.time() - 3 * self._heartbeat_s
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            # The start counts as a sign of life too: a retried trial arrives with its dead predecessor's beat.
            signs = [trial.system_attrs.get(JOURNAL_HEARTBEAT_ATTR)]
            if trial.datetime_start is not None:
                signs.append(trial.datetime_start.timestamp())  # the journal keeps it as local time
            beat = max((s for s in signs if s is not None), default=None)
            if beat is not None and beat < oldest:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_s

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback


# --------------------------------------------------------------------------- #
# Aging evolution as an Optuna sampler
# --------------------------------------------------------------------------- #
class AgingEvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution (Real et al. 2019) over a study's finished trials.

    The population is the ``population_size`` most recently finished trials
    (older ones have aged out); a new trial copies the fittest of
    ``tournament_size`` random members and changes one parameter. Until the
    population is full, trials are random. Fitness is the trial's
    ``fitness`` user attribute when set (accuracy when safely under the
    budget, negative otherwise), else its value. Randomness is drawn from
    ``(seed, trial number)``, so workers sharing a study never draw alike
    and one worker is reproducible.
    """

    def __init__(self, *, population_size: int = 64, tournament_size: int = 16, seed: int = 0):
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.seed = seed
        self._plans: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def _plan(self, study: optuna.Study, trial) -> tuple[np.random.Generator, dict[str, Any]]:
        rng = np.random.default_rng([self.seed, trial.number])
        finished = [t for t in study.get_trials(deepcopy=False, states=(_FINISHED,))]
        if len(finished) < self.population_size:
            return rng, {}
        finished.sort(key=lambda t: (t.datetime_complete or 0, t.number))
        population = finished[-self.population_size:]
        picks = rng.choice(len(population), size=min(self.tournament_size, len(population)), replace=False)
        parent = max((population[i] for i in picks), key=_fitness)
        child = dict(parent.params)
        if child:
            name = sorted(child)[int(rng.integers(len(child)))]
            choices = [c for c in parent.distributions[name].choices if c != child[name]]
            if choices:
                child[name] = choices[int(rng.integers(len(choices)))]
        return rng, child

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number not in self._plans:
            self._plans = {trial.number: self._plan(study, trial)}  # one trial at a time per worker
        rng, child = self._plans[trial.number]
        if param_name in child and child[param_name] in param_distribution.choices:
            return child[param_name]
        choices = param_distribution.choices
        return choices[int(rng.integers(len(choices)))]


def _fitness(trial) -> float:
    value = trial.user_attrs.get("fitness")
    if value is None:
        value = trial.values[0] if trial.values else float("-inf")
    return float(value)


# --------------------------------------------------------------------------- #
# The strategies
# --------------------------------------------------------------------------- #
class OptunaSearch(SearchStrategy):
    """Base of the Optuna strategies; subclasses choose sampler and objectives.

    ``storage`` (see :func:`open_storage`) makes the study persistent and
    shareable; ``study_name`` names it there (default: derived from the space,
    device, budget, dataset and strategy, and printed, so that the same
    command resumes the same study). ``heartbeat_s``: seconds between a
    running trial's heartbeats on a database storage.
    """

    multi_objective = False

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 300,
                 storage: str | None = None, study_name: str | None = None, heartbeat_s: int = HEARTBEAT_S):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 300)
        if study_name and not storage:
            raise UserInputError("--study needs --storage (e.g. --storage sqlite:///study.db); "
                                 "an in-memory study cannot be resumed")
        if study_name is not None and not re.fullmatch(r"[A-Za-z0-9_.:+-]{1,200}", study_name):
            raise UserInputError(f"--study {study_name!r}: use letters, digits and _ . : + - (at most 200)")
        self.heartbeat_s = check_positive("heartbeat_s", heartbeat_s)
        self.storage = storage
        self.study_name = study_name
        # opened (and so checked) up front: a bad URL is reported before any work starts
        self._storage = open_storage(storage, heartbeat_s=self.heartbeat_s) if storage else None

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("shared, resumable studies (tpe, nsga2, evolution, random)")
        group.add_argument("--storage", metavar="URL",
                           help="Optuna storage making the search resumable and shareable between workers: "
                                "sqlite:///study.db, postgresql+psycopg://USER@HOST:5432/DB or "
                                "journal:///shared/study.log")
        group.add_argument("--study", dest="study_name", metavar="NAME",
                           help="study name in --storage (default: derived from space, device, budget, dataset "
                                "and strategy, and printed)")

    @abc.abstractmethod
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler this strategy searches with."""

    def default_study_name(self, problem: SearchProblem) -> str:
        """The study name used when none is given: the same command gives the same name."""
        parts = [problem.space, getattr(problem, "device", None) or "device", f"{problem.budget_ms:g}ms",
                 problem.dataset or "", self.name or type(self).__name__.lower()]
        return re.sub(r"[^A-Za-z0-9_.:+-]", "_", "-".join(p for p in parts if p))

    def _study(self, problem: SearchProblem) -> optuna.Study:
        directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        storage = self._storage
        name = self.study_name
        if storage is not None and name is None:
            name = self.default_study_name(problem)
            print(f"Optuna study {name!r} in {self.storage} (pass --study {name} to name it; rerunning the same "
                  f"command resumes it)", file=sys.stderr, flush=True)
        try:
            return optuna.create_study(storage=storage, study_name=name, sampler=self.make_sampler(),
                                       directions=directions, load_if_exists=storage is not None)
        except (ValueError, optuna.exceptions.OptunaError) as error:
            raise UserInputError(f"cannot open study {name!r} in --storage {self.storage}: {error}") from None

    def _check_reused(self, study: optuna.Study, problem: SearchProblem) -> None:
        """A study run for another space, device, budget, dataset or strategy is refused."""
        wanted = {"space": problem.space, "device": getattr(problem, "device", None), "budget_ms": problem.budget_ms,
                  "dataset": problem.dataset, "strategy": self.name}
        recorded = dict(study.user_attrs)
        if not recorded:  # studies written before their settings were recorded: read a finished trial's
            done = study.get_trials(deepcopy=False, states=(_FINISHED,))
            recorded = {k: done[0].user_attrs.get(k) for k in ("space", "budget_ms")} if done else {}
        if len(study.directions) != (2 if self.multi_objective else 1):
            recorded.setdefault("strategy", "a strategy with another number of objectives")
        clashes = [f"{key} {recorded[key]!r} (not {value!r})" for key, value in wanted.items()
                   if key in recorded and recorded[key] != value]
        if clashes:
            raise UserInputError(f"study {study.study_name!r} in {self.storage} was run with "
                                 f"{', '.join(clashes)}; pick another --study name")
        if not study.user_attrs:
            for key, value in wanted.items():
                study.set_user_attr(key, value)

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = self._study(problem)
        if self.storage:
            self._check_reused(study, problem)
        space = problem.search_space
        resumed = len(study.get_trials(deepcopy=False, states=(_FINISHED,)))
        if progress and resumed:
            progress(min(resumed, self.num_evaluations))

        worker = f"{socket.gethostname()}:{os.getpid()}"

        def objective(trial: optuna.Trial):
            trial.set_user_attr("worker", worker)  # who ran which trial, in a study shared by several
            if self.storage and self._surplus(study, trial.number):
                raise optuna.TrialPruned("the study's budget is taken by other workers' trials")
            arch = tuple(trial.suggest_categorical(f"op{i}", list(ops)) for i, ops in enumerate(space.choices))
            candidate = problem.evaluate([arch])[0]
            trial.set_user_attr("space", problem.space)
            trial.set_user_attr("budget_ms", problem.budget_ms)
            trial.set_user_attr("fitness", problem.fitness(candidate))
            # <= 0 means feasible: the interval's upper bound minus the budget
            trial.set_constraint("latency_over_budget_ms", candidate.high_ms - problem.budget_ms)
            if progress:
                progress(1)
            if self.multi_objective:
                return candidate.accuracy, candidate.predicted_ms
            return candidate.accuracy

        self._run(study, objective)
        finished = study.get_trials(deepcopy=False, states=(_FINISHED,))
        archs = [tuple(t.params[f"op{i}"] for i in range(len(space.choices))) for t in finished]
        candidates: list[Candidate] = problem.evaluate(list(dict.fromkeys(archs)))
        return SearchResult(self.name, candidates, problem.budget_ms,
                            info={"study_name": study.study_name, "storage": self.storage,
                                  "trials": len(archs), "resumed_trials": resumed})

    def _surplus(self, study: optuna.Study, number: int) -> bool:
        return beyond_budget(study, number, self.num_evaluations)

    def _run(self, study: optuna.Study, objective) -> None:
        run_until_finished(study, objective, self.num_evaluations)


def beyond_budget(study: optuna.Study, number: int, num_trials: int) -> bool:
    """Whether trial ``number`` is beyond a budget of ``num_trials``: workers that started trials at the
    same moment may have asked for more; the later ones give way (a retried trial never does)."""
    trials = study.get_trials(deepcopy=False, states=(_FINISHED, *_PENDING))
    if any(t.number == number and t.system_attrs.get("failed_trial") is not None for t in trials):
        return False  # a killed worker's trial is always run again
    return sum(t.number < number for t in trials) >= num_trials


def run_until_finished(study: optuna.Study, objective, num_trials: int) -> None:
    """Run trials of ``objective`` until the study holds ``num_trials`` finished ones.

    Several workers may share the study: each counts every worker's trials
    (an objective calls :func:`beyond_budget` to give way). When the rest are
    running elsewhere, a worker waits for them, and on a heartbeat storage
    takes over the trials of a worker that died.
    """
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    while True:
        trials = study.get_trials(deepcopy=False, states=(_FINISHED, *_PENDING))
        finished = sum(t.state == _FINISHED for t in trials)
        waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
        if finished >= num_trials:
            return
        if len(trials) >= num_trials and not waiting:
            if interval is None:
                return  # the running trials are another worker's; without a heartbeat none can be taken over
            time.sleep(min(1.0, interval / 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            continue
        try:
            study.optimize(objective, n_trials=1)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
            if not _taken_over(error):
                raise
            # this worker's heartbeat came late (a stalled machine) and another took its trial over
            print(f"nas: a trial of this worker was taken over by another ({error}); going on", file=sys.stderr)


def _taken_over(error: Exception) -> bool:
    """Whether ``error`` says the trial being run was finished (failed as stale) by another worker."""
    return (isinstance(error, optuna.exceptions.UpdateFinishedTrialError)
            or str(error).startswith("Cannot tell a"))


class TPESearch(OptunaSearch):
    """Optuna's TPE sampler with the latency constraint (interval upper bound <= budget)."""

    def make_sampler(self):
        seed = self.seed if not self.storage else None  # workers sharing a study must not draw alike
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(20, self.num_evaluations))


class NSGA2Search(OptunaSearch):
    """Optuna's NSGA-II: accuracy up, predicted latency down, constrained by the budget."""

    multi_objective = True

    def make_sampler(self):
        seed = self.seed if not self.storage else None
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, self.num_evaluations))


class OptunaEvolution(OptunaSearch):
    """Aging evolution (:class:`AgingEvolutionSampler`) on an Optuna study:
    what ``evolution`` runs when given a storage, so several workers share it."""

    def __init__(self, *, population_size: int = 64, tournament_size: int = 16, **options):
        super().__init__(**options)
        self.population_size = population_size
        self.tournament_size = tournament_size

    def make_sampler(self):
        return AgingEvolutionSampler(population_size=min(self.population_size, self.num_evaluations),
                                     tournament_size=self.tournament_size, seed=self.seed)


class OptunaRandom(OptunaSearch):
    """Uniform samples on an Optuna study: what ``random`` runs when given a storage."""

    def make_sampler(self):
        return optuna.samplers.RandomSampler(seed=None if self.storage else self.seed)
