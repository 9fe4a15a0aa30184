"""KITTY knowledge: document ingest, embeddings, hybrid search and memory."""

from kittyai.catalog import ServiceName
from kittyai.options import ServiceOptions
from kittyai.service import Service

SERVICE = Service(name=ServiceName.RAG, options_model=ServiceOptions)
