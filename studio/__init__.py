"""UI support for the Streamlit app (``app.py``, ``views/``): session state, cached models,
job polling and plotly figures. The engine it drives is ``fineprune`` (which never imports
streamlit); everything that does not draw lives there or in ``studio.figures``."""
