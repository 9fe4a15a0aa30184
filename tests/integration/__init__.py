"""Tests of the KITTY Home Assistant integration."""
