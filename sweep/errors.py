"""The project's errors: one base class, one subclass per condition.

Messages are one line: what was expected, what was given, and the fix. The CLI
prints ``error: <message>`` and exits with ``exit_code``.
"""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an error's message (of the driver's own error for a SQLAlchemy one), or its type name."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0] if text else type(err).__name__


class SweepError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = 1


class ConfigError(SweepError):
    """A study file or a ``--set`` override is invalid."""

    exit_code = 2


class DataError(SweepError):
    """A dataset is missing, unreadable or malformed."""


class FactoryImportError(SweepError):
    """A factory named in the study file (``model.factory``, ``data.factory``) does not import, or lacks the attribute."""

    exit_code = 2


class FactoryTypeError(SweepError):
    """A factory is not callable, or returns the wrong kind of thing (no ``nn.Module``; not four arrays)."""

    exit_code = 2


class ModelOutputError(SweepError):
    """A model's output for a batch of N examples is not (N, classes) logits, or its forward pass fails."""

    exit_code = 2


class InvalidDataError(SweepError):
    """A data factory's arrays are unusable: mismatched lengths, labels out of range, fewer than two classes."""

    exit_code = 2


class DeviceError(SweepError):
    """The requested device does not exist on this machine."""

    exit_code = 2


class TooLargeError(SweepError):
    """A study asks for more memory than its device has (model size times population), found before allocating."""

    exit_code = 2


class StorageError(SweepError):
    """The storage URL is malformed, or the database cannot be reached or written."""


class StoreOutageError(StorageError):
    """The store stayed unreachable for longer than the outage budget (``SWEEP_STORE_OUTAGE``).

    ``what``: the outage (how long, the budget, the store's last error); ``then``: what stops and the fix, which
    depends on who met it (a worker, ``sweep run``: ``saying``).
    """

    def __init__(self, what: str, then: str = "") -> None:
        super().__init__(f"{what}; {then}" if then else what)  # one argument too: unpickling passes the message
        self.what = what

    def saying(self, then: str) -> StoreOutageError:
        """The same outage with another consequence and fix."""
        return StoreOutageError(self.what, then)


class StoreNotFoundError(StorageError):
    """A read-only command was pointed at a SQLite file that does not exist."""


class NotAStudyStoreError(StorageError):
    """A read-only command was pointed at a file or database that holds no Optuna study store."""


class EmptyStoreError(NotAStudyStoreError):
    """A read-only command was pointed at a database with no tables at all: nothing was submitted there yet."""


class StudyNotFoundError(SweepError):
    """No study of that name is in the storage."""


class NoCompleteTrialsError(SweepError):
    """The study has no complete trial to choose a lambda from."""


class NoRunSizeError(SweepError):
    """The study stored no training-set size, so its lambda cannot be carried to another run (``sweep best --for``)."""


class StudyConflictError(SweepError):
    """A study of that name exists with a different configuration."""


class UntrustedFactoryError(SweepError):
    """A stored study names a factory this worker was not told to trust (``--trust``, ``SWEEP_TRUSTED_FACTORIES``)."""

    exit_code = 2


class FactoryChangedError(StudyConflictError):
    """The source of a study's factory differs from the one the study was made with."""


class TrainingDivergedError(SweepError):
    """The loss became NaN or infinite; the trial fails, the sweep goes on."""


class ReportError(SweepError):
    """A report cannot be written: a path is not writable, or a tool for images (kaleido, Chromium) is missing."""


class TrialInterrupted(SweepError):
    """A worker was asked to stop (SIGTERM/SIGINT); its running trial fails with reason "interrupted"."""

    exit_code = 130
