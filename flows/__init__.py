"""Prefect flows around the DVC pipeline (orchestration only: no ML logic lives here)."""
