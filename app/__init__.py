"""Entry points: the `kb` CLI and the Streamlit UI. Only this package turns errors into messages."""
