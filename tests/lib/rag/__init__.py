"""Tests of the knowledge service library: parsing, chunking, search and the service."""
