"""Entry points: the `kb` CLI (and, later, the Streamlit UI). Only this package turns errors into messages."""
