"""Tests of KITTY."""
