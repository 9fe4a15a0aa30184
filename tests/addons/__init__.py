"""Tests of the Home Assistant apps in addons/."""
