"""Ingestion: extraction, chunking, and the pipeline that keeps the index in step with folders."""
