"""The root of caloforge's user-facing errors.

Every error that a user can cause with bad input (a file, a configuration, a command-line
argument) derives from :class:`CaloforgeError`; its message names the problem and is shown
as it is, without a traceback, by the command-line interface.
"""

from __future__ import annotations

__all__ = [
    "CaloforgeError",
    "GenerationError",
    "ConfigError",
    "CheckpointError",
    "InputFileError",
    "Interrupted",
    "OutputError",
]


class CaloforgeError(Exception):
    """Base class of errors caused by input the user can fix."""


class ConfigError(CaloforgeError, ValueError):
    """A configuration is invalid: unknown key, wrong type, bad value."""


class CheckpointError(CaloforgeError, ValueError):
    """A checkpoint is missing, corrupt, of another format version, or for another geometry."""


class GenerationError(CaloforgeError, RuntimeError):
    """A generator produced NaN/inf showers (damaged weights, diverged training)."""


class InputFileError(CaloforgeError, ValueError):
    """An input file cannot be used: missing, unreadable, a directory, not of the expected
    format, truncated or corrupt, empty, or holding invalid values.

    The message reads ``[OPTION] PATH [DATASET]: problem`` so that one line tells the user
    which file, given with which command-line option, is wrong and why.

    Args:
        problem: what is wrong, in words.
        path: the file.
        dataset: the dataset inside the file, where one is at fault.
        option: the command-line option (or argument name) the file came from.
    """

    def __init__(self, problem: str, *, path: str | None = None, dataset: str | None = None,
                 option: str | None = None):
        # "--reference ref.h5", but "--energy file:e.h5" as it was typed
        sep = "" if option and option.endswith(":") else " "
        where = sep.join(p for p in (option, None if path is None else str(path)) if p)
        if dataset is not None:
            where = f"{where} [{dataset}]" if where else f"[{dataset}]"
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem = problem
        self.path = None if path is None else str(path)
        self.dataset = dataset
        self.option = option

    def with_option(self, option: str | None) -> InputFileError:
        """The same error, its message naming the option the file came from."""
        if option is None or self.option is not None:
            return self
        return type(self)(self.problem, path=self.path, dataset=self.dataset, option=option)


class OutputError(CaloforgeError, OSError):
    """An output file cannot be written (a directory in the way, no permission, a full
    disk); the temporary file is removed and an existing file at the target is untouched."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while caloforge was writing a file.

    A subclass of :class:`KeyboardInterrupt`, so that every ``finally`` and every cleanup
    of a temporary file runs on the way out; ``exit_code`` is 128 + the signal number, as a
    shell reports a process ended by that signal.
    """

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        super().__init__(f"interrupted by {name}")
