"""Retrieval: retrievers, prompts, generators and cited answers (built on the kb foundations)."""
