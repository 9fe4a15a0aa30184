"""The providers that turn a CAD request into geometry."""
