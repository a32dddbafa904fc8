"""Parquet files between assets: typed, columnar, readable by anything (not pickles).

One file per asset and agent partition, under ``<base_dir>/<asset key path>/<partition>.parquet``;
``base_dir`` defaults to ``$DAGSTER_HOME/storage/parquet`` (``./dagster_home`` without the variable).
Files are written to a temporary name and renamed, so a crashed run never leaves half a file
where the next stage would read it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pandas as pd
from pydantic import Field


def default_parquet_dir() -> str:
    home = os.environ.get("DAGSTER_HOME") or os.path.join(os.getcwd(), "dagster_home")
    return os.path.join(home, "storage", "parquet")


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames as Parquet, one file per asset partition."""

    base_dir: str | None = Field(default=None, description="Directory for the files; default $DAGSTER_HOME/storage/parquet.")

    def _root(self) -> Path:
        return Path(self.base_dir or default_parquet_dir())

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        parts = list(context.asset_key.path)
        # Partition keys are agent ids: quoted so "a/b" or ".." can never leave the directory.
        name = quote(context.asset_partition_key, safe="") if context.has_asset_partitions else "__all__"
        if name in (".", ".."):
            name = quote(name.replace(".", "%2E"), safe="%")
        return self._root().joinpath(*parts, f"{name}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        if isinstance(obj, os.PathLike):
            # A Parquet file the asset wrote in batches (a golden dataset stage): moved into place.
            path = self._path(context)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(os.fspath(obj), path)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"ParquetIOManager stores pandas DataFrames, got {type(obj).__name__} for {context.asset_key}")
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        obj.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(f"no stored data for {context.asset_key} at {path}: materialize it first")
        wanted = getattr(context.dagster_type, "typing_type", None)
        if isinstance(wanted, type) and issubclass(wanted, os.PathLike):
            return wanted(str(path))  # a handle on the file (read in batches), not its rows
        return pd.read_parquet(path)
