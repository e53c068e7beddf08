"""``--track mlflow[:TRACKING_URI]``: an MLflow run (``pip install 'fooling[mlflow]'``).

Per generation the metrics (step = generation, sent in batches), per checkpoint the pictures
(``log_image`` with the step, so MLflow's UI shows them on a slider), once the run's
configuration as parameters and the model's description (``model.json``), and at the end
the report's files under ``report/``.

The run's id is kept in the run folder (``mlflow.json``, one entry per tracking URI,
written atomically): a resumed run continues the same MLflow run, sending only the
generations after the last one that run holds. The file may come from someone else: only
well-formed run ids are read from it, and never a tracking URI (the server is the one
``--track`` names).

HTTP stores: unless the environment says otherwise, MLflow's client does not retry a request
and gives up on one after 10 s (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=10``, set for the process where unset): a server that is down
costs the tracker thread at most seconds, not MLflow's default minutes of back-off, and the
tracker is tried again, with what it missed, at the next checkpoint.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from fooling.encodings import UserError
from fooling.evo.store.location import StorageError, join, read_bytes, write_bytes
from fooling.fitness import close_names

from .base import MissingExtraError, TrackedRun, Tracker
from .registry import TRACKERS

try:  # optional extra: fooling[mlflow]
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
except ImportError:
    mlflow = None

__all__ = ["HTTP_DEFAULTS", "MLflowTracker", "RUN_FILE", "SCHEMES", "redacted"]

logger = logging.getLogger(__name__)

# Tracking URI schemes MLflow stores answer to (a database URI may add "+driver").
SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
# The file of the run folder that names the MLflow run of each tracking URI.
RUN_FILE = "mlflow.json"
# Largest RUN_FILE read (a few entries are a few hundred bytes).
MAX_RUN_FILE_BYTES = 65536
# The experiment runs go to unless MLFLOW_EXPERIMENT_NAME names one.
EXPERIMENT = "fooling"
# HTTP settings of MLflow's client, set for this process unless already set.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# Metrics MLflow takes in one request.
BATCH = 1000
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def redacted(uri: str) -> str:
    """``uri`` without a ``user:password@`` part (what is shown and stored)."""
    return re.sub(r"(//)[^/@\s]+@", r"\1", uri)


def _scheme(uri: str) -> str:
    if "://" not in uri and not uri.startswith("sqlite:"):
        return ""  # a plain folder: MLflow's file store
    return urlsplit(uri).scheme.lower().split("+", 1)[0]


class MLflowTracker(Tracker):
    """An MLflow run per run folder, continued on resume.

    Args:
        arg: the tracking URI (``sqlite:///FILE``, ``http://HOST:PORT``, a folder...);
            ``None``: MLflow's own default (``MLFLOW_TRACKING_URI``, else a local store).

    Raises:
        MissingExtraError: MLflow is not installed.
        UserError: a URI of a scheme MLflow has no store for (close ones suggested).
    """

    name = "mlflow"
    summary = TRACKERS["mlflow"].summary
    argument = "TRACKING_URI"

    def __init__(self, arg: str | None = None) -> None:
        if mlflow is None:
            raise MissingExtraError("--track mlflow needs MLflow: pip install 'fooling[mlflow]'")
        if arg is not None:
            scheme = _scheme(arg)
            if scheme and scheme not in SCHEMES:
                raise UserError(
                    f"--track mlflow:{redacted(arg)}: unknown tracking URI scheme {scheme!r}"
                    f"{close_names(scheme, SCHEMES)} (known: {', '.join(SCHEMES)}, or a folder)"
                )
        super().__init__(arg)
        self._client = None
        self._run_id: str | None = None
        self._metrics: list = []

    def check(self, out: str) -> None:
        """Refuse a ``sqlite:///FILE`` whose folder does not exist or that is a folder.

        Raises:
            UserError: as said (one line).
        """
        if self.arg is None or _scheme(self.arg) != "sqlite":
            return
        path = self.arg.split(":///", 1)[-1] if ":///" in self.arg else ""
        if not path or path == ":memory:":
            return
        database = Path(path)
        if database.is_dir():
            raise UserError(f"--track mlflow:{self.arg}: {database} is a folder, not a database file")
        if not database.parent.is_dir():
            raise UserError(f"--track mlflow:{self.arg}: folder {database.parent} does not exist")

    def _uri(self) -> str:
        return self.arg if self.arg is not None else mlflow.get_tracking_uri()

    def _stored_runs(self, out: str) -> dict[str, str]:
        """The run folder's ``{tracking URI: run id}``; well-formed entries only (the file is untrusted)."""
        try:
            data = read_bytes(join(out, RUN_FILE), MAX_RUN_FILE_BYTES)
        except FileNotFoundError:
            return {}
        except StorageError as error:  # too large, or not a file
            logger.warning("%s; a new MLflow run is opened", error)
            return {}
        try:
            runs = json.loads(data.decode("utf-8"))["runs"]
            if not isinstance(runs, dict):
                raise ValueError("no runs")
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("%s: ignored (%s); a new MLflow run is opened", join(out, RUN_FILE), error)
            return {}
        return {key: value for key, value in runs.items()
                if isinstance(key, str) and isinstance(value, str) and _RUN_ID.fullmatch(value)}  # fmt: skip

    def start(self, run: TrackedRun, resumed: bool) -> int:
        """Continue the run folder's MLflow run of this URI, or open one (recorded in ``mlflow.json``).

        Returns:
            The last generation the continued run holds (-1 for a new run).
        """
        for variable, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        self._client = client = MlflowClient(tracking_uri=self.arg)
        self._metrics = []
        key = redacted(self._uri())
        runs = self._stored_runs(run.out)
        existing = None
        if key in runs:
            try:
                existing = client.get_run(runs[key])
            except MlflowException as error:
                logger.warning(
                    "MLflow run %s of %s not found (%s); a new run is opened", runs[key], run.out, error
                )
            if existing is not None and existing.info.lifecycle_stage != "active":
                existing = None
        params = self._params(run)
        if existing is not None:
            self._run_id = existing.info.run_id
            client.update_run(self._run_id, status="RUNNING")
            history = client.get_metric_history(self._run_id, "fitness/median")
            missing = [Param(k, v) for k, v in params.items() if k not in existing.data.params]
            if missing:
                client.log_batch(self._run_id, params=missing)
            return max((metric.step for metric in history), default=-1)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
        created = client.create_run(experiment_id, run_name=run.name, tags={"fooling.run_folder": run.out})
        self._run_id = created.info.run_id
        # Recorded before anything else is sent: a kill from here on resumes this run.
        runs[key] = self._run_id
        write_bytes(join(run.out, RUN_FILE), (json.dumps({"runs": runs}, indent=1) + "\n").encode())
        params_list = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(params_list), 100):
            client.log_batch(self._run_id, params=params_list[start : start + 100])
        client.log_text(self._run_id, json.dumps(run.model, indent=1), "model.json")
        return -1

    @staticmethod
    def _params(run: TrackedRun) -> dict[str, str]:
        """The run's configuration and model summary as MLflow parameters (text, at most 6,000 characters)."""
        params = {key: str(value) for key, value in dataclasses.asdict(run.config).items()}
        model = run.model
        for field in ("name", "kind", "weights_hash", "input_size"):
            if field in model:
                params[f"model.{field}"] = str(model[field])
        params["model.classes"] = str(len(model.get("labels", ())))
        params["cells"] = str(len(run.class_names))
        return {key: value[:6000] for key, value in params.items()}

    def log_generation(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer the metrics of ``step`` (sent by :meth:`flush`)."""
        stamp = int(time.time() * 1000)
        self._metrics.extend(Metric(name, float(value), stamp, step) for name, value in metrics.items())

    def flush(self) -> None:
        """Send the buffered metrics, :data:`BATCH` a request (on failure they are sent again later)."""
        metrics, self._metrics = self._metrics, []
        for start in range(0, len(metrics), BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[start : start + BATCH])

    def log_checkpoint(self, step: int, images: Mapping[str, bytes]) -> None:
        """Each picture as an MLflow image of ``step`` (key ``elites``, ``class-...``)."""
        for name, png in images.items():
            picture = Image.open(io.BytesIO(png), formats=["PNG"])
            self._client.log_image(self._run_id, picture, key=name, step=step)

    def finish(self, artifacts: Mapping[str, bytes], status: str) -> None:
        """Upload the report's files under ``report/`` and end the run with ``status``."""
        if artifacts:
            with tempfile.TemporaryDirectory(prefix="fooling-mlflow-") as folder:
                for name, data in artifacts.items():
                    Path(folder, name).write_bytes(data)
                self._client.log_artifacts(self._run_id, folder, artifact_path="report")
        self._client.set_terminated(self._run_id, status=status)
