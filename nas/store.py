"""The measurement store lives with the profilers whose measurements it keeps:
:mod:`nas.profilers.store`. This module re-exports it, so that
``from nas.store import MeasurementStore`` keeps working."""

from nas.profilers.store import (CLAIM_TTL_S, CSV_COLUMNS, SCHEMA_VERSION, STORE_ENV, MeasurementStore,  # noqa: F401
                                 default_store_location, default_store_path, measure_claimed, open_store,
                                 shown_location, write_csv)

__all__ = ["CLAIM_TTL_S", "CSV_COLUMNS", "SCHEMA_VERSION", "STORE_ENV", "MeasurementStore", "default_store_location",
           "default_store_path", "measure_claimed", "open_store", "shown_location", "write_csv"]
