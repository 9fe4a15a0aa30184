"""Tests of the kittyai service library against real peers."""
