"""The exceptions transrec raises on purpose, and the line between the user's mistakes and ours.

A ``UserError`` reports input that transrec refuses: a config value, a data file, a path, a dataset, a
checkpoint or a command-line argument. Its message names the problem and, where one exists, the fix;
the command line prints it as one line (``transrec: error: ...``) and exits with status 2. Every other
exception is a bug in transrec or in code it runs, and keeps its traceback (status 1).

The user errors of each layer live beside the code that raises them (``config.ConfigError``,
``data.errors.DataError``, ``training.checkpoint.TransferError`` and ``CheckpointError``,
``models.side_features.FeatureError``, ``data.image_store.CorruptImageError``,
``utils.packages.MissingPackageError``); they derive from ``UserError`` here and from the built-in type
they replaced (``ValueError``, ``ImportError``), so code that caught that type still catches them. The
few below fit no one layer, and likewise keep their built-in base. A run that collapses
(``training.trainer.TrainingCollapsed``) is an outcome, not an error: the command line exits with 3.
This module imports nothing from transrec, so that any module may import it.
"""

from __future__ import annotations


class TransrecError(Exception):
    """Base of transrec's own exception types: the user errors, and a collapsed training run."""


class UserError(TransrecError):
    """Input that transrec refuses; the message says what is wrong and is shown to the user as is."""


class UsageError(UserError, ValueError):
    """Command-line arguments that do not go together, or one that is missing."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a step they skipped would have made) does not exist."""


class PathExistsError(UserError, FileExistsError):
    """A folder the user asked transrec to write already exists and may not be replaced."""


class UnknownNameError(UserError, KeyError):
    """A name looked up in a registry (an encoder, a loader, a loss...) that nothing registered."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument (quotes and escapes); a user reads the message.
        return str(self.args[0]) if self.args else ""


class DownloadError(UserError, OSError):
    """Something transrec must download could not be had from any source; the message names each."""
