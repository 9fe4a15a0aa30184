"""Tests of the orchestrator: engine, templates, API, workers."""
