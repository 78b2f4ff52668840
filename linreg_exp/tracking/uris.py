"""Where runs go, as strings: the tracking URI, its masked form, and the UI's addresses.

No MLflow import here: the job process resolves and prints these without loading MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_STORE_NAME = "mlflow.db"


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """Config first, then $MLFLOW_TRACKING_URI, else an absolute sqlite file in the launch dir."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(launch_dir / DEFAULT_STORE_NAME).resolve()}"


def mask_uri(uri: str) -> str:
    """Hide a password in a URI (postgresql://user:secret@host/db -> user:***@host)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def mask_override(override: str) -> str:
    """`mlflow.tracking_uri=postgresql://u:secret@h/db` -> the same with the password hidden."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{mask_uri(value)}" if sep else override


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server's (`mlflow server`), not a store MLflow opens itself."""
    return uri.startswith(("http://", "https://"))


def ui_command(uri: str, port: int = 5000) -> str:
    """The shell command that serves this store's UI (None needed for a tracking server)."""
    if is_server(uri):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {mask_uri(uri)} --host 127.0.0.1 --port {port}"


def ui_base_url(uri: str, port: int = 5000) -> str:
    return uri.rstrip("/") if is_server(uri) else f"http://127.0.0.1:{port}"


# MLflow 3's UI opens its GenAI pages unless a link asks for Model training (it ignores the
# experiment's mlflow.experimentKind tag), or the switch it keeps in the browser says so.
MODEL_TRAINING = "?workflowType=machine_learning"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in MLflow's UI, on its Model training pages."""
    return f"{ui_base_url(uri)}/#/experiments/{experiment_id}/runs/{run_id}{MODEL_TRAINING}"


DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def store_module(uri: str) -> str | None:
    """The MLflow module that holds the store at `uri`: MLflow imports it at the store's first
    open (its SQL store's takes about 1-2 s: the ORM's models), so a helper imports it ahead,
    while it waits to be asked (helper_main.serve)."""
    if is_server(uri):
        return "mlflow.store.tracking.rest_store"
    if urlsplit(uri).scheme.split("+")[0] in DATABASE_SCHEMES:
        return "mlflow.store.tracking.sqlalchemy_store"
    return None
