"""Tests of the blueprints and the dashboard."""
