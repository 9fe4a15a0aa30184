"""Tests of the CAD service library."""
