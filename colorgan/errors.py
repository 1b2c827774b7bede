"""The errors a user can cause and fix. The CLI prints each as one line (exit 2, or 1 for a run
that failed); programming errors are not here and still raise with a traceback.

This module imports nothing from colorgan, so every module may import it.
"""

from __future__ import annotations

import signal


class ColorganError(Exception):
    """An error a user can cause and fix; the CLI prints it as one line."""


class ConfigError(ColorganError):
    """A bad config file, key or value."""


class DataError(ColorganError):
    """A data folder that cannot be trained on."""


class UnreadableImage(ColorganError):
    """An input file that cannot be decoded (or is refused) as an image."""


class CheckpointError(ColorganError):
    """A checkpoint that is missing, unreadable or not colorgan's."""


class WeightsError(ColorganError):
    """Pretrained weights that cannot be had."""


class MissingDependency(ColorganError):
    """An optional package that this command needs is not installed."""


class OnnxModelError(ColorganError):
    """An .onnx file that is missing, unreadable or not a colorgan export."""


class ModelFolderError(ColorganError):
    """A model folder (or Hub snapshot) that is missing files, unreadable or not colorgan's, or
    an output folder `export --model-dir` must not replace."""


class HubError(ColorganError):
    """The Hugging Face Hub cannot give (or take) a model as asked: no such repo or revision,
    not cached while offline, no network, no token."""


class EvaluateError(ColorganError):
    """An evaluation that cannot run as asked."""


class PrepareError(ColorganError):
    """Folders or settings `colorgan prepare` cannot work with."""


class DemoError(ColorganError):
    """A demo that cannot run as asked."""


class NonFiniteLoss(ColorganError):
    """A loss became NaN or infinite (the run failed: exit 1, not a usage error)."""


class WriteFailed(ColorganError):
    """A file could not be written (a full disk, a read-only folder): the run failed (exit 1);
    what was written before it is kept."""


class DoesNotFit(ColorganError):
    """A working size whose memory estimate is more than the device has free."""


class UploadRefused(ColorganError):
    """A request the server answers with a 4xx status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM arrived; a resumable checkpoint has been written. A BaseException,
    as KeyboardInterrupt is: code that catches Exception (the ONNX exporter does) must not
    swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
